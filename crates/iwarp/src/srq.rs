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

    /// Arms the limit: once a queue pair takes a receive that leaves fewer than `limit` work
    /// requests queued, that queue pair reports
    /// [`QpEvent::SrqLimitReached`](crate::QpEvent::SrqLimitReached) (once) and the limit is
    /// disarmed ([`limit`](Self::limit) reads 0). Arming it again re-arms it; 0 disarms it.
    /// A limit armed while fewer are queued is reported at the next receive taken.
    ///
    /// # Errors
    /// [`CreateError::QueueTooDeep`] if `limit` exceeds the queue's depth.
    pub fn arm_limit(&self, limit: usize) -> Result<(), CreateError> {
        let depth = self.inner.depth();
        if limit > depth {
            return Err(CreateError::QueueTooDeep { requested: limit, max: depth });
        }
        self.inner.set_limit(limit);
        Ok(())
    }

    /// The armed limit, 0 if none is armed (never armed, disarmed, or reached since).
    pub fn limit(&self) -> usize {
        self.inner.limit()
    }

    /// The most work requests it holds (the depth it was created with).
    pub fn depth(&self) -> usize {
        self.inner.depth()
    }

    /// The most scatter/gather elements of a work request.
    pub fn max_sge(&self) -> usize {
        self.inner.max_sge()
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
