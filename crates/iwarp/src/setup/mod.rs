//! Connection setup: the MPA exchange (RFC 5044 §7, RFC 6581) that turns a TCP connection into
//! an iWARP one. The active half ([`active`]) connects, sends the Request and reads the Reply;
//! the passive half ([`passive`]) listens, reads the Request and lets the application accept
//! or reject it. Both read the peer's frame with [`read_frame`], and both take their deadline
//! from their role's `iwarp_proto::cm` engine.

pub(crate) mod active;
pub(crate) mod passive;

use iwarp_proto::cm::{CmError, ConnectRequest, Initiator, InitiatorOutcome, Responder};
use mio::net::TcpStream;
use std::io::{self, Read};

/// A role's MPA engine, as [`read_frame`] feeds it.
pub(crate) trait Exchange {
    /// What a whole frame from the peer yields.
    type Outcome;
    /// Takes bytes from the peer; once its frame is whole, returns what it settled and how
    /// many of `data` belonged to it.
    fn feed(&mut self, data: &[u8]) -> Result<Option<(Self::Outcome, usize)>, CmError>;
}

impl Exchange for Initiator {
    type Outcome = InitiatorOutcome;
    fn feed(&mut self, data: &[u8]) -> Result<Option<(InitiatorOutcome, usize)>, CmError> {
        self.handle_bytes(data)
    }
}

impl Exchange for Responder {
    type Outcome = ConnectRequest;
    fn feed(&mut self, data: &[u8]) -> Result<Option<(ConnectRequest, usize)>, CmError> {
        // An initiator sends nothing after its Request until the Reply (RFC 5044 §7.1.2).
        Ok(self.handle_bytes(data)?.map(|r| (r.clone(), data.len())))
    }
}

/// What reading the peer's frame came to.
#[derive(Debug)]
pub(crate) enum FrameRead<O> {
    /// Not whole yet, and the socket has nothing more for now.
    Pending,
    /// Whole: what it settled, and the bytes that followed it in the same read.
    Done(O, Vec<u8>),
    /// The peer closed the connection first.
    Closed,
    /// The peer reset the connection.
    Reset,
    /// Another socket error.
    Failed(io::Error),
    /// The frame breaks the MPA rules.
    Invalid(CmError),
}

/// Bytes one read takes (an MPA frame is at most 20 + 512 bytes of private data).
const READ_LEN: usize = 1024;

/// Reads the peer's MPA frame from `sock` into `ex`, starting with `first` (bytes read before,
/// e.g. while a shared port told iWARP from plain TCP), until the frame is whole or the socket
/// is empty. Reads no byte beyond the read that completes the frame.
pub(crate) fn read_frame<E: Exchange>(sock: &mut TcpStream, ex: &mut E, first: &[u8]) -> FrameRead<E::Outcome> {
    let mut buf = [0u8; READ_LEN];
    let mut pending_first = !first.is_empty();
    loop {
        let data: &[u8] = if pending_first {
            pending_first = false;
            first
        } else {
            match sock.read(&mut buf) {
                Ok(0) => return FrameRead::Closed,
                Ok(n) => &buf[..n],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FrameRead::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return FrameRead::Reset,
                Err(e) => return FrameRead::Failed(e),
            }
        };
        match ex.feed(data) {
            Ok(None) => {}
            Ok(Some((outcome, used))) => return FrameRead::Done(outcome, data[used.min(data.len())..].to_vec()),
            Err(e) => return FrameRead::Invalid(e),
        }
    }
}
