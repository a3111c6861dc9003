//! Shared receive queues.

use crate::conn::Conn;
use crate::error::{CreateError, PostError};
use crate::mem::ProtectionDomain;
use crate::wr::RecvWr;
use iwarp_proto::mem::PdId;
use iwarp_proto::qp::Srq;
use std::sync::{Arc, Mutex, Weak};

/// Receive work requests shared by every queue pair created with it: an incoming Send on any of
/// them takes the oldest one. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedReceiveQueue {
    pub(crate) inner: Arc<Srq>,
    pd: PdId,
    /// The queue pairs taking from it, to resume one whose Send waits for a receive.
    attached: Arc<Mutex<Vec<Weak<Conn>>>>,
}

impl ProtectionDomain {
    /// Creates a shared receive queue of `depth` work requests with up to `max_sge` elements.
    ///
    /// # Errors
    /// [`CreateError`] if a limit exceeds the device's.
    pub fn create_srq(&self, depth: usize, max_sge: usize) -> Result<SharedReceiveQueue, CreateError> {
        SharedReceiveQueue::new(self, depth, max_sge)
    }
}

impl SharedReceiveQueue {
    pub(crate) fn new(pd: &ProtectionDomain, depth: usize, max_sge: usize) -> Result<Self, CreateError> {
        let cfg = &pd.dev.cfg;
        if depth > cfg.max_qp_wr {
            return Err(CreateError::QueueTooDeep { requested: depth, max: cfg.max_qp_wr });
        }
        if max_sge > cfg.max_sge {
            return Err(CreateError::TooManySges { requested: max_sge, max: cfg.max_sge });
        }
        Ok(SharedReceiveQueue {
            inner: Arc::new(Srq::new(depth, max_sge)),
            pd: pd.id,
            attached: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// A queue pair created with this queue.
    pub(crate) fn attach(&self, conn: &Arc<Conn>) {
        let mut a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        a.retain(|c| c.strong_count() > 0);
        a.push(Arc::downgrade(conn));
    }

    pub(crate) fn pd_id(&self) -> PdId {
        self.pd
    }

    /// Posts receive work requests (all or none).
    ///
    /// Every queue pair created with this queue takes its incoming Sends from here, in the
    /// order posted; the completion goes to that queue pair's receive completion queue and
    /// names it (`qp_num`). Keep the queue stocked: iWARP has no receiver-not-ready retry, so
    /// a Send that finds it empty ends that queue pair's connection with a Terminate once
    /// [`ConnParams::recv_wait`](crate::ConnParams::recv_wait) (2 s by default) has passed
    /// (see [`QueuePair::post_recv`](crate::QueuePair::post_recv)).
    ///
    /// # Errors
    /// [`PostError`], naming the first request that is invalid or would overflow the queue.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
        let taken = std::cell::Cell::new(0);
        self.inner
            .post(self.pd, crate::wr::counted(wrs, &taken, RecvWr::to_proto))
            .map_err(|e| crate::wr::failed(&taken, e))?;
        // A queue pair whose Send waits for a receive reads again (see
        // `ConnParams::recv_wait`).
        if self.inner.take_waiter() {
            let attached: Vec<Arc<Conn>> =
                self.attached.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
            for c in attached {
                c.recv_posted();
            }
        }
        Ok(())
    }

    /// Work requests waiting.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// `true` if none waits.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}
