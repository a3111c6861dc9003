//! Work requests: what applications post to send and receive queues.

use crate::error::{PostError, PostReason};
use crate::mem::Sge;
use iwarp_proto::qp::{Payload, RecvWqe, RemoteAddr, SendOp, SendWqe};
use iwarp_wire::Stag;
use smallvec::SmallVec;
use std::cell::Cell;

/// A send work request. Build with the constructors; adjust with the flag methods.
#[derive(Debug, Clone)]
pub struct SendWr<'a> {
    wr_id: u64,
    op: SendOp,
    sges: SmallVec<[Sge<'a>; 2]>,
    inline: Option<&'a [u8]>,
    signaled: bool,
    solicited: bool,
    fence: bool,
}

impl<'a> SendWr<'a> {
    fn new(wr_id: u64, op: SendOp, sges: &[Sge<'a>]) -> Self {
        SendWr {
            wr_id,
            op,
            sges: SmallVec::from_slice(sges),
            inline: None,
            signaled: true,
            solicited: false,
            fence: false,
        }
    }
    /// Send the gathered bytes to the peer's next posted receive.
    pub fn send(wr_id: u64, sges: &[Sge<'a>]) -> Self {
        Self::new(wr_id, SendOp::Send, sges)
    }
    /// Send, then have the peer invalidate its STag `inval` once delivered.
    pub fn send_with_invalidate(wr_id: u64, sges: &[Sge<'a>], inval: Stag) -> Self {
        Self::new(wr_id, SendOp::SendWithInvalidate(inval), sges)
    }
    /// RDMA Write the gathered bytes to the peer's buffer.
    pub fn write(wr_id: u64, sges: &[Sge<'a>], remote: RemoteAddr) -> Self {
        Self::new(wr_id, SendOp::Write(remote), sges)
    }
    /// RDMA Write, then an RFC 7306 Immediate Data message carrying `imm`.
    pub fn write_with_imm(wr_id: u64, sges: &[Sge<'a>], remote: RemoteAddr, imm: u64) -> Self {
        Self::new(wr_id, SendOp::WriteWithImmediate(remote, imm), sges)
    }
    /// An RFC 7306 Immediate Data message alone (consumes a receive at the peer).
    pub fn immediate(wr_id: u64, imm: u64) -> Self {
        Self::new(wr_id, SendOp::Immediate(imm), &[])
    }
    /// RDMA Read the peer's buffer into `sink` (one element: RFC 5040 reads into one buffer).
    pub fn read(wr_id: u64, sink: Sge<'a>, remote: RemoteAddr) -> Self {
        Self::new(wr_id, SendOp::Read(remote), &[sink])
    }
    /// RFC 7306 fetch-and-add on the peer's 8-byte word; the original lands in `sink` (8 bytes).
    pub fn fetch_add(wr_id: u64, sink: Sge<'a>, remote: RemoteAddr, add: u64) -> Self {
        Self::new(wr_id, SendOp::FetchAdd { remote, add }, &[sink])
    }
    /// RFC 7306 compare-and-swap on the peer's 8-byte word; the original lands in `sink`.
    pub fn compare_swap(wr_id: u64, sink: Sge<'a>, remote: RemoteAddr, compare: u64, swap: u64) -> Self {
        Self::new(wr_id, SendOp::CompareSwap { remote, compare, swap }, &[sink])
    }
    /// Invalidate a local STag once the earlier work requests have been processed.
    pub fn local_invalidate(wr_id: u64, stag: Stag) -> Self {
        Self::new(wr_id, SendOp::LocalInvalidate(stag), &[])
    }
    /// Send `data` (copied at post time, up to the queue pair's inline limit).
    pub fn send_inline(wr_id: u64, data: &'a [u8]) -> Self {
        SendWr { inline: Some(data), ..Self::new(wr_id, SendOp::Send, &[]) }
    }
    /// RDMA Write `data` (copied at post time).
    pub fn write_inline(wr_id: u64, data: &'a [u8], remote: RemoteAddr) -> Self {
        SendWr { inline: Some(data), ..Self::new(wr_id, SendOp::Write(remote), &[]) }
    }
    /// Carry `data` (copied at post time) instead of the gathered elements: the inline form of
    /// any request with a payload (a Write with Immediate, a Send with Invalidate).
    pub fn inline_data(mut self, data: &'a [u8]) -> Self {
        self.inline = Some(data);
        self.sges.clear();
        self
    }
    /// No completion on success (errors still complete).
    pub fn unsignaled(mut self) -> Self {
        self.signaled = false;
        self
    }
    /// Completion on success (the default).
    pub fn signaled(mut self, yes: bool) -> Self {
        self.signaled = yes;
        self
    }
    /// Set the Solicited Event bit (Sends and Immediate Data).
    pub fn solicited(mut self) -> Self {
        self.solicited = true;
        self
    }
    /// Start only after every earlier Read and atomic has completed.
    pub fn fence(mut self) -> Self {
        self.fence = true;
        self
    }

    /// The work request's identifier.
    pub fn wr_id(&self) -> u64 {
        self.wr_id
    }

    /// The regions its elements name (one handle per element).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn regions(&self) -> Vec<crate::mem::MemoryRegion> {
        self.sges.iter().map(|s| s.mr.clone()).collect()
    }

    /// The same request under another identifier, signaled.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn tracked(&self, wr_id: u64) -> Self {
        SendWr { wr_id, signaled: true, ..self.clone() }
    }

    pub(crate) fn to_proto(&self) -> SendWqe {
        let payload = match self.inline {
            Some(d) => Payload::Inline(SmallVec::from_slice(d)),
            None => Payload::Sges(self.sges.iter().map(|s| s.to_proto()).collect()),
        };
        SendWqe {
            wr_id: self.wr_id,
            op: self.op,
            payload,
            signaled: self.signaled,
            solicited: self.solicited,
            fence: self.fence,
        }
    }
}

/// A receive work request.
#[derive(Debug, Clone)]
pub struct RecvWr<'a> {
    /// Identifier returned in the completion.
    pub wr_id: u64,
    /// Where an incoming Send lands.
    pub sges: SmallVec<[Sge<'a>; 2]>,
}

impl<'a> RecvWr<'a> {
    /// A receive into `sges`.
    pub fn new(wr_id: u64, sges: &[Sge<'a>]) -> Self {
        RecvWr { wr_id, sges: SmallVec::from_slice(sges) }
    }
    /// The regions its elements name (one handle per element).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn regions(&self) -> Vec<crate::mem::MemoryRegion> {
        self.sges.iter().map(|s| s.mr.clone()).collect()
    }

    pub(crate) fn to_proto(&self) -> RecvWqe {
        RecvWqe { wr_id: self.wr_id, sges: self.sges.iter().map(|s| s.to_proto()).collect() }
    }
}

/// `wrs` converted by `f`, counting in `taken` how many were taken.
pub(crate) fn counted<'w, W, T>(
    wrs: &'w [W],
    taken: &'w Cell<usize>,
    f: impl Fn(&W) -> T + 'w,
) -> impl Iterator<Item = T> + 'w {
    wrs.iter().map(move |w| {
        taken.set(taken.get() + 1);
        f(w)
    })
}

/// The error of a post that took `taken` requests: the engine fails on the last one it took
/// (none taken: the whole list was refused, reported as the first).
pub(crate) fn failed(taken: &Cell<usize>, reason: PostReason) -> PostError {
    PostError::new(taken.get().saturating_sub(1), reason)
}
