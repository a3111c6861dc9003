//! Errors of the public API.

use std::net::SocketAddr;
use std::sync::Arc;

pub use iwarp_proto::cm::CmError;
pub use iwarp_proto::mem::AccessError;
pub use iwarp_proto::qp::PostError;

/// Errors of resource creation, listening and connection management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is held by another socket (iWARP or plain TCP: they share one port space).
    #[error("address {0} is already in use")]
    AddrInUse(SocketAddr),
    /// An argument is out of range for this device or object.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the call.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// Connection setup failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A post was refused.
    #[error(transparent)]
    Post(#[from] PostError),
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A limit of the device was reached.
    #[error("resource limit reached: {0}")]
    Exhausted(&'static str),
    /// Waiting timed out.
    #[error("timed out")]
    TimedOut,
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
