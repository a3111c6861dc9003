//! Errors of the public API.

use std::net::SocketAddr;
use std::sync::Arc;

pub use iwarp_proto::cm::CmError;
pub use iwarp_proto::mem::AccessError;
/// Why a work request was refused ([`PostError::reason`]).
pub use iwarp_proto::qp::PostError as PostReason;

/// Any error of this crate's calls, for applications that handle them alike: each call
/// returns its own error type (below), and every one of them converts into this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Registering memory failed.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Deregistering memory failed.
    #[error(transparent)]
    Deregister(#[from] DeregisterError),
    /// Rekeying a memory region was refused.
    #[error(transparent)]
    Rekey(#[from] iwarp_proto::mem::RekeyError),
    /// Creating a queue pair or shared receive queue failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Listening failed.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// Connection setup failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Accepting or rejecting a connection request failed.
    #[error(transparent)]
    Accept(#[from] AcceptError),
    /// A post was refused.
    #[error(transparent)]
    Post(#[from] PostError),
    /// A range outside a memory region.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// An argument is out of range for this device or object.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the call.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Waiting timed out.
    #[error("timed out")]
    TimedOut,
}

/// Why registering memory failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The memory could not be allocated.
    #[error("cannot allocate {len} bytes: {source}")]
    NoMemory {
        /// The size asked for.
        len: usize,
        /// The system's error.
        source: Arc<std::io::Error>,
    },
    /// Every STag of the device is in use.
    #[error("no STag is free")]
    NoStag,
    /// A null pointer was given for caller-owned memory.
    #[error("null pointer")]
    NullPointer,
}

/// Why creating a queue pair or a shared receive queue failed: a request beyond the device's
/// limits ([`crate::Capabilities`]), or objects that do not belong together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// A queue deeper than the device allows.
    #[error("queue depth {requested} above the device's {max}")]
    QueueTooDeep {
        /// Work requests asked for.
        requested: usize,
        /// The device's limit.
        max: usize,
    },
    /// More scatter/gather elements per work request than the device allows.
    #[error("{requested} scatter/gather elements, the device allows {max}")]
    TooManySges {
        /// Elements asked for.
        requested: usize,
        /// The device's limit.
        max: usize,
    },
    /// More inline data than the device allows.
    #[error("{requested} bytes of inline data, the device allows {max}")]
    InlineTooLarge {
        /// Bytes asked for.
        requested: usize,
        /// The device's limit.
        max: usize,
    },
    /// The shared receive queue belongs to another protection domain.
    #[error("shared receive queue of another protection domain")]
    SrqOfAnotherPd,
}

/// Why listening failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The address is held by another socket (iWARP or plain TCP: they share one port space).
    #[error("address {0} is already in use")]
    AddrInUse(SocketAddr),
    /// Another system error (address not local, descriptors exhausted, ...).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why accepting or rejecting a connection request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The peer closed the connection before the answer.
    #[error("the peer closed the connection")]
    PeerGone,
    /// The queue pair was connected before.
    #[error("queue pair already connected")]
    QpInUse,
    /// The answer breaks the MPA rules (private data too long, ...).
    #[error("MPA: {0}")]
    Mpa(#[from] CmError),
    /// The answer could not be sent.
    #[error("cannot answer: {0}")]
    Io(Arc<std::io::Error>),
}

impl From<std::io::Error> for AcceptError {
    fn from(e: std::io::Error) -> Self {
        AcceptError::Io(Arc::new(e))
    }
}

/// Why [`MemoryRegion::deregister`](crate::MemoryRegion::deregister) could not promise that
/// the stack is done with the region's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeregisterError {
    /// System calls on the region's bytes were still under way when the wait's bound ran
    /// out (a thread of the stack held in a `readv`/`writev` for that long: a stopped
    /// process, a debugger). The region is revoked all the same: no new system call or copy
    /// starts on it, but the memory must not be freed or reused until one of these calls
    /// succeeds.
    #[error("{pinned} system calls on the region's memory still under way after {waited:?}")]
    Busy {
        /// The system calls still under way.
        pinned: u32,
        /// How long the call waited.
        waited: std::time::Duration,
    },
}

/// Why a post was refused: which work request of the posted list failed, and why. Nothing
/// of the list was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("work request {index} of the posted list refused: {reason}")]
#[non_exhaustive]
pub struct PostError {
    /// The failing request's index in the list (0 when the whole list is refused: a queue
    /// pair not ready, a receive on a queue pair that uses a shared receive queue).
    pub index: usize,
    /// Why it was refused.
    pub reason: PostReason,
}

impl PostError {
    pub(crate) fn new(index: usize, reason: PostReason) -> Self {
        PostError { index, reason }
    }
}

/// A byte range outside a memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range {offset}+{len} outside a {region_len}-byte region")]
pub struct RangeError {
    /// First byte of the range.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The region's length.
    pub region_len: usize,
}

/// Why `connect` failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing listens at the address (TCP reset).
    #[error("connection refused")]
    Refused,
    /// The peer's listener rejected the request; its private data is attached.
    #[error("rejected by the peer ({} bytes of private data)", private_data.len())]
    Rejected {
        /// The responder's private data.
        private_data: Vec<u8>,
    },
    /// No TCP connection or no MPA Reply within the timeout.
    #[error("connection setup timed out")]
    Timeout,
    /// MPA negotiation failed.
    #[error("MPA negotiation failed: {0}")]
    Mpa(#[from] CmError),
    /// The connection failed (shared, so that the error can be reported to every waiter).
    #[error("connection failed: {0}")]
    Io(Arc<std::io::Error>),
    /// The connection closed before it was established.
    #[error("connection closed during setup")]
    Closed,
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::Io(Arc::new(e))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
