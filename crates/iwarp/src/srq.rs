//! Shared receive queues.

use crate::error::{Error, PostError, Result};
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
    /// [`Error::InvalidArgument`] if a limit exceeds the device's.
    pub fn create_srq(&self, depth: usize, max_sge: usize) -> Result<SharedReceiveQueue> {
        SharedReceiveQueue::new(self, depth, max_sge)
    }
}

impl SharedReceiveQueue {
    pub(crate) fn new(pd: &ProtectionDomain, depth: usize, max_sge: usize) -> Result<Self> {
        if depth > pd.dev.cfg.max_qp_wr || max_sge > pd.dev.cfg.max_sge {
            return Err(Error::InvalidArgument("shared receive queue larger than the device allows".into()));
        }
        Ok(SharedReceiveQueue { inner: Arc::new(Srq::new(depth, max_sge)), pd: pd.id })
    }

    pub(crate) fn pd_id(&self) -> PdId {
        self.pd
    }

    /// Posts receive work requests (all or none).
    ///
    /// # Errors
    /// [`PostError`] if one is invalid or the queue would overflow.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
        self.inner.post(self.pd, wrs.iter().map(RecvWr::to_proto))
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
