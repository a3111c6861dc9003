//! Work requests, completions and the errors of posting them.

use crate::mem::{Access, MrRef, PdId};
use iwarp_wire::terminate::TerminateCause;
use iwarp_wire::{Opcode, Stag};
use smallvec::SmallVec;

/// A scatter/gather element: `len` bytes at `offset` of a registered region.
#[derive(Debug, Clone)]
pub struct Sge {
    /// The region; holding it keeps the memory alive until the work request completes.
    pub mr: MrRef,
    /// Offset of the first byte within the region.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Sge {
    /// Checks the element against the queue pair's domain and the right the operation needs.
    ///
    /// # Errors
    /// [`PostError::LocalProtection`] if the region is invalid, of another domain, lacks the
    /// right, or the range is outside it.
    pub fn validate(&self, pd: PdId, need: Access) -> Result<(), PostError> {
        let in_bounds = self.offset.checked_add(self.len).is_some_and(|e| e <= self.mr.len());
        if !self.mr.is_valid() || self.mr.pd() != pd || !self.mr.access().contains(need) || !in_bounds {
            return Err(PostError::LocalProtection);
        }
        Ok(())
    }
}

/// The scatter/gather list of a work request.
pub type SgeList = SmallVec<[Sge; 2]>;

/// Where an outgoing message's payload comes from.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Gathered from registered memory at transmit time (zero-copy).
    Sges(SgeList),
    /// Copied at post time (up to the queue pair's inline limit); needs no registration.
    Inline(SmallVec<[u8; 64]>),
}

impl Payload {
    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Sges(s) => s.iter().map(|s| s.len as u64).sum(),
            Payload::Inline(b) => b.len() as u64,
        }
    }
    /// `true` if there is no payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A peer's buffer, as it advertised it: STag (rkey), Tagged Offset (address) and length.
///
/// The length bounds what may be posted against it: an RDMA Write or Read longer than
/// `len` bytes, or an atomic on fewer than 8, is refused at post time
/// ([`PostError::RemoteTooShort`]) instead of ending the connection with the peer's
/// Terminate. [`RemoteAddr::UNBOUNDED`] (`u32::MAX`, the longest RDMA message) leaves the
/// check to the peer, as verbs' `remote_addr`/`rkey` pairs do.
///
/// # Byte encoding
///
/// Applications advertise buffers to each other in their own messages; [`to_bytes`] and
/// [`from_bytes`] give one fixed layout of [`ENCODED_LEN`](Self::ENCODED_LEN) = 16 bytes,
/// big-endian like the wire (RFC 5040 §4's STag and Tagged Offset fields):
///
/// | bytes | field |
/// |---|---|
/// | 0..4 | STag |
/// | 4..12 | Tagged Offset of the first byte |
/// | 12..16 | length in bytes |
///
/// ```
/// use iwarp_proto::qp::RemoteAddr;
/// use iwarp_wire::Stag;
///
/// let a = RemoteAddr::new(Stag(0x0102_0304), 0x1122_3344_5566_7788, 4096);
/// let b = a.to_bytes();
/// assert_eq!(b, [1, 2, 3, 4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0, 0x10, 0]);
/// assert_eq!(RemoteAddr::from_bytes(&b), a);
/// ```
///
/// With the `serde` feature it also serializes as a struct of the three numbers
/// (`stag`, `to`, `len`).
///
/// [`to_bytes`]: Self::to_bytes
/// [`from_bytes`]: Self::from_bytes
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteAddr {
    /// The peer's STag.
    pub stag: Stag,
    /// The Tagged Offset of the first byte.
    pub to: u64,
    /// Bytes the peer exposes from `to` on ([`RemoteAddr::UNBOUNDED`]: not known).
    pub len: u32,
}

impl RemoteAddr {
    /// The length of [`to_bytes`](Self::to_bytes)'s encoding.
    pub const ENCODED_LEN: usize = 16;
    /// A length that bounds nothing: `u32::MAX`, the longest RDMA message (RFC 5040 message
    /// lengths are 32 bits).
    pub const UNBOUNDED: u32 = u32::MAX;

    /// `len` bytes at Tagged Offset `to` of the peer's STag `stag`.
    pub const fn new(stag: Stag, to: u64, len: u32) -> Self {
        RemoteAddr { stag, to, len }
    }

    /// A buffer whose length is not known (verbs' `remote_addr` and `rkey`): only the peer
    /// checks the bounds.
    pub const fn unbounded(stag: Stag, to: u64) -> Self {
        RemoteAddr { stag, to, len: Self::UNBOUNDED }
    }

    /// The part of this buffer from `offset` on, or `None` if `offset` is beyond its end.
    pub fn offset_by(self, offset: u32) -> Option<Self> {
        let len = self.len.checked_sub(offset)?;
        Some(RemoteAddr { stag: self.stag, to: self.to.wrapping_add(u64::from(offset)), len })
    }

    /// The 16-byte encoding (see the type's docs): STag, Tagged Offset, length, big-endian.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..4].copy_from_slice(&self.stag.0.to_be_bytes());
        b[4..12].copy_from_slice(&self.to.to_be_bytes());
        b[12..16].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Decodes [`to_bytes`](Self::to_bytes)'s encoding. Every 16 bytes decode (any value is
    /// a possible STag, offset and length); take them from a longer message with
    /// `buf[..16].try_into()`.
    pub fn from_bytes(b: &[u8; Self::ENCODED_LEN]) -> Self {
        let word = |r: core::ops::Range<usize>| -> u64 { b[r].iter().fold(0, |acc, &x| (acc << 8) | u64::from(x)) };
        RemoteAddr { stag: Stag(word(0..4) as u32), to: word(4..12), len: word(12..16) as u32 }
    }
}

#[cfg(feature = "serde")]
mod remote_serde {
    use super::RemoteAddr;
    use iwarp_wire::Stag;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The serialized form: the three numbers.
    #[derive(Serialize, Deserialize)]
    #[serde(rename = "RemoteAddr")]
    struct Repr {
        stag: u32,
        to: u64,
        len: u32,
    }

    impl Serialize for RemoteAddr {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Repr { stag: self.stag.0, to: self.to, len: self.len }.serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for RemoteAddr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let r = Repr::deserialize(d)?;
            Ok(RemoteAddr::new(Stag(r.stag), r.to, r.len))
        }
    }
}

/// The operation of a send-queue work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// Send (RFC 5040 §5.3); with `solicited`, Send with Solicited Event.
    Send,
    /// Send with Invalidate of the peer's STag (RFC 5040 §5.3).
    SendWithInvalidate(Stag),
    /// RDMA Write (RFC 5040 §5.1).
    Write(RemoteAddr),
    /// RDMA Write followed by an RFC 7306 Immediate Data message carrying `imm`.
    WriteWithImmediate(RemoteAddr, u64),
    /// RFC 7306 Immediate Data alone.
    Immediate(u64),
    /// RDMA Read into the local payload (one element) from the peer's buffer (RFC 5040 §5.2).
    Read(RemoteAddr),
    /// RFC 7306 fetch-and-add of `add` at the peer's 8-byte word; the original value lands in
    /// the local payload (one 8-byte element).
    FetchAdd {
        /// The peer's word.
        remote: RemoteAddr,
        /// The addend.
        add: u64,
    },
    /// RFC 7306 compare-and-swap at the peer's 8-byte word; the original value lands in the
    /// local payload.
    CompareSwap {
        /// The peer's word.
        remote: RemoteAddr,
        /// Swap if the word equals this.
        compare: u64,
        /// The new value.
        swap: u64,
    },
    /// Invalidate a local STag once every earlier work request has been processed.
    LocalInvalidate(Stag),
}

impl SendOp {
    /// `true` for operations that wait for a response (Read and atomics).
    pub fn awaits_response(self) -> bool {
        matches!(self, SendOp::Read(_) | SendOp::FetchAdd { .. } | SendOp::CompareSwap { .. })
    }
    /// `true` for RFC 7306 operations: those that send an opcode the opcode table marks so.
    pub fn is_rfc7306(self) -> bool {
        self.opcodes().iter().any(|o| o.is_rfc7306())
    }

    /// The RDMAP opcodes this operation sends (without their Solicited Event variants).
    fn opcodes(self) -> &'static [Opcode] {
        match self {
            SendOp::Send => &[Opcode::Send],
            SendOp::SendWithInvalidate(_) => &[Opcode::SendInvalidate],
            SendOp::Write(_) => &[Opcode::Write],
            // RFC 7306 §4: a Write followed by Immediate Data.
            SendOp::WriteWithImmediate(..) => &[Opcode::Write, Opcode::ImmediateData],
            SendOp::Immediate(_) => &[Opcode::ImmediateData],
            SendOp::Read(_) => &[Opcode::ReadRequest],
            SendOp::FetchAdd { .. } | SendOp::CompareSwap { .. } => &[Opcode::AtomicRequest],
            SendOp::LocalInvalidate(_) => &[],
        }
    }
}

/// A send-queue work request, as the engine holds it.
#[derive(Debug, Clone)]
pub struct SendWqe {
    /// The application's identifier, returned in the completion.
    pub wr_id: u64,
    /// The operation.
    pub op: SendOp,
    /// Local data (source of Sends and Writes, sink of Reads and atomics).
    pub payload: Payload,
    /// Produce a completion on success (errors always complete).
    pub signaled: bool,
    /// Set the Solicited Event bit (Send, Immediate Data).
    pub solicited: bool,
    /// Wait for every earlier Read and atomic to complete before starting.
    pub fence: bool,
}

/// A receive work request.
#[derive(Debug, Clone)]
pub struct RecvWqe {
    /// The application's identifier.
    pub wr_id: u64,
    /// Where an incoming Send's payload goes.
    pub sges: SgeList,
}

impl RecvWqe {
    /// Total buffer length.
    pub fn len(&self) -> u64 {
        self.sges.iter().map(|s| s.len as u64).sum()
    }
    /// `true` for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a post was refused; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// The queue holds as many outstanding work requests as its depth.
    #[error("queue full")]
    QueueFull,
    /// More scatter/gather elements than the queue pair allows.
    #[error("too many scatter/gather elements")]
    TooManySges,
    /// Inline data longer than the queue pair's inline limit.
    #[error("inline data longer than the inline limit")]
    InlineTooLong,
    /// A local element is invalid, of another protection domain, lacks the needed right
    /// (local write for receive buffers and Read/atomic sinks), or is out of the region.
    #[error("local protection error in a scatter/gather element")]
    LocalProtection,
    /// The operation needs RFC 7306 support and the peer did not announce it.
    #[error("operation not supported by the peer (RFC 7306 not negotiated)")]
    NotSupportedByPeer,
    /// A message longer than 2^32 - 1 bytes, or a Read/atomic sink of the wrong shape.
    #[error("invalid length or element count for this operation")]
    InvalidLength,
    /// Not connected, or already in error.
    #[error("queue pair is not in a state that accepts work ({0:?})")]
    InvalidState(super::QpState),
    /// The queue pair uses a shared receive queue: post there.
    #[error("queue pair uses a shared receive queue")]
    UsesSrq,
    /// An RDMA Write or Read longer than the [`RemoteAddr`]'s length, or an atomic on a
    /// remote buffer shorter than 8 bytes: the peer would end the connection for it.
    #[error("longer than the remote buffer")]
    RemoteTooShort,
    /// The connection negotiated an outbound read depth (ORD) of 0: no RDMA Read or atomic
    /// may be issued on it (ask for one with `initiator_depth` when connecting or accepting).
    #[error("RDMA Read or atomic on a connection whose negotiated ORD is 0")]
    NoReadCredits,
}

/// Completion status (the verbs `ibv_wc_status` values that apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WcStatus {
    /// Success.
    Success,
    /// The incoming message was longer than the receive buffer.
    LocalLength,
    /// A local protocol error ended the queue pair.
    LocalQpOperation,
    /// A local buffer failed the protection check.
    LocalProtection,
    /// Flushed: the queue pair went to error before the request completed.
    WrFlush,
    /// The peer rejected an invalidation.
    RemoteInvalidRequest,
    /// The peer reported an access error (Terminate, remote protection).
    RemoteAccess,
    /// The peer reported an operation error (Terminate, remote operation).
    RemoteOperation,
    /// The connection failed.
    Fatal,
}

/// What a completed work request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WcOpcode {
    /// A Send (any variant).
    Send,
    /// An RDMA Write (with or without immediate).
    RdmaWrite,
    /// An RDMA Read.
    RdmaRead,
    /// Compare-and-swap.
    CompareSwap,
    /// Fetch-and-add.
    FetchAdd,
    /// Local invalidate.
    LocalInvalidate,
    /// Immediate Data alone.
    Immediate,
    /// A received Send.
    Recv,
    /// A received Immediate Data message.
    RecvImmediate,
}

impl core::fmt::Display for WcStatus {
    /// The words of rdma-core's `ibv_wc_status_str()` for the same status.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WcStatus::Success => "success",
            WcStatus::LocalLength => "local length error",
            WcStatus::LocalQpOperation => "local QP operation error",
            WcStatus::LocalProtection => "local protection error",
            WcStatus::WrFlush => "Work Request Flushed Error",
            WcStatus::RemoteInvalidRequest => "remote invalid request error",
            WcStatus::RemoteAccess => "remote access error",
            WcStatus::RemoteOperation => "remote operation error",
            WcStatus::Fatal => "fatal error",
        })
    }
}

impl core::fmt::Display for WcOpcode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WcOpcode::Send => "send",
            WcOpcode::RdmaWrite => "RDMA write",
            WcOpcode::RdmaRead => "RDMA read",
            WcOpcode::CompareSwap => "compare and swap",
            WcOpcode::FetchAdd => "fetch and add",
            WcOpcode::LocalInvalidate => "local invalidate",
            WcOpcode::Immediate => "immediate data",
            WcOpcode::Recv => "receive",
            WcOpcode::RecvImmediate => "receive immediate data",
        })
    }
}

/// Which completion queue a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// The send queue's.
    Send,
    /// The receive queue's.
    Recv,
}

/// A work completion: what the engine reports, and (as `iwarp::WorkCompletion`) what a
/// completion queue hands to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The work request's identifier.
    pub wr_id: u64,
    /// Outcome.
    pub status: WcStatus,
    /// What the work request did.
    pub opcode: WcOpcode,
    /// Bytes received (receives) or read (RDMA Reads); 0 otherwise.
    pub byte_len: u32,
    /// Immediate data of a received RFC 7306 Immediate Data message.
    pub imm_data: Option<u64>,
    /// The local STag a peer's Send with Invalidate invalidated.
    pub invalidated_stag: Option<Stag>,
    /// The received message carried the Solicited Event flag.
    pub solicited: bool,
    /// The queue pair's number.
    pub qp_num: u32,
    /// The send or the receive queue's completion.
    pub queue: Queue,
    /// For errors: the Terminate cause sent or received, if any.
    pub cause: Option<TerminateCause>,
}

impl core::fmt::Display for Completion {
    /// `work request <wr_id> (<opcode>): <status>`, then the Terminate cause sent or received
    /// when the completion carries one (`: terminated: <cause>`).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "work request {} ({}): {}", self.wr_id, self.opcode, self.status)?;
        if let Some(cause) = &self.cause {
            write!(f, ": terminated: {cause}")?;
        }
        Ok(())
    }
}

impl Default for Completion {
    /// A successful Send's completion of work request 0 (a slot to poll into).
    fn default() -> Self {
        Completion::new(0, WcStatus::Success, WcOpcode::Send, Queue::Send)
    }
}

impl Completion {
    pub(crate) fn new(wr_id: u64, status: WcStatus, opcode: WcOpcode, queue: Queue) -> Self {
        Completion {
            wr_id,
            status,
            opcode,
            byte_len: 0,
            imm_data: None,
            invalidated_stag: None,
            solicited: false,
            qp_num: 0,
            queue,
            cause: None,
        }
    }
}

impl SendOp {
    pub(crate) fn wc_opcode(self) -> WcOpcode {
        match self {
            SendOp::Send | SendOp::SendWithInvalidate(_) => WcOpcode::Send,
            SendOp::Write(_) | SendOp::WriteWithImmediate(..) => WcOpcode::RdmaWrite,
            SendOp::Immediate(_) => WcOpcode::Immediate,
            SendOp::Read(_) => WcOpcode::RdmaRead,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
            SendOp::CompareSwap { .. } => WcOpcode::CompareSwap,
            SendOp::LocalInvalidate(_) => WcOpcode::LocalInvalidate,
        }
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn statuses_read_as_rdma_core_prints_them() {
        assert_eq!(WcStatus::Success.to_string(), "success");
        assert_eq!(WcStatus::WrFlush.to_string(), "Work Request Flushed Error");
        assert_eq!(WcStatus::RemoteAccess.to_string(), "remote access error");
        assert_eq!(WcOpcode::RdmaRead.to_string(), "RDMA read");
        assert_eq!(crate::qp::QpState::Rts.to_string(), "ready to send");
    }
}
