//! Shared receive queues.

use crate::error::{Error, PostError, Result};
use crate::mem::ProtectionDomain;
use crate::qp::RecvWr;
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
