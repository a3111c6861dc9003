//! Shared receive queues.

use crate::error::{CreateError, PostError};
use crate::mem::ProtectionDomain;
use crate::wr::RecvWr;
use iwarp_proto::mem::PdId;
use iwarp_proto::qp::Srq;
use std::sync::Arc;

/// Receive work requests shared by every queue pair created with it: an incoming Send on any of
/// them takes the oldest one. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedReceiveQueue {
    pub(crate) inner: Arc<Srq>,
    pd: PdId,
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
        Ok(SharedReceiveQueue { inner: Arc::new(Srq::new(depth, max_sge)), pd: pd.id })
    }

    pub(crate) fn pd_id(&self) -> PdId {
        self.pd
    }

    /// Posts receive work requests (all or none).
    ///
    /// # Errors
    /// [`PostError`], naming the first request that is invalid or would overflow the queue.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
        let taken = std::cell::Cell::new(0);
        self.inner
            .post(self.pd, crate::wr::counted(wrs, &taken, RecvWr::to_proto))
            .map_err(|e| crate::wr::failed(&taken, e))
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
