//! The active half of connection setup: a non-blocking TCP connect, the MPA Request, and the
//! Reply read with [`super::read_frame`]. The queue pair's driver runs it on readiness until
//! it settles; its deadline is the initiator engine's.

use super::{read_frame, FrameRead};
use crate::error::ConnectError;
use crate::params::ConnParams;
use iwarp_proto::cm::{CmError, Initiator, InitiatorOutcome, Negotiated};
use mio::net::TcpStream;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// An active connection setup in progress.
#[derive(Debug)]
pub(crate) struct Connecting {
    cm: Initiator,
    /// What is left to send of the Request.
    request: Vec<u8>,
}

/// Where an active setup stands.
#[derive(Debug)]
pub(crate) enum Step {
    /// Waiting for the TCP connect, room to send, or the Reply.
    Pending,
    /// The peer accepted: the negotiated parameters and bytes that followed the Reply.
    Accepted(Negotiated, Vec<u8>),
    /// Refused, rejected, timed out or failed.
    Failed(ConnectError),
}

/// Starts connecting a non-blocking socket to `addr` and builds the Request.
///
/// # Errors
/// [`ConnectError`] if the socket cannot be made or bound, the host refuses at once, or the
/// parameters are invalid (private data too long).
pub(crate) fn start(
    addr: SocketAddr,
    params: &ConnParams,
    max_rd_atomic: u16,
    now: Instant,
) -> Result<(TcpStream, Connecting), ConnectError> {
    let sock =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    params.liveness.apply(socket2::SockRef::from(&sock))?;
    if let Some(src) = params.source {
        sock.bind(&src.into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(ConnectError::Refused),
        Err(e) => return Err(ConnectError::from(e)),
    }
    let cfg = params.mpa_config(max_rd_atomic);
    let (cm, request) =
        Initiator::new(cfg, params.responder_resources, params.initiator_depth, &params.private_data, now)?;
    let std_stream: std::net::TcpStream = sock.into();
    Ok((TcpStream::from_std(std_stream), Connecting { cm, request }))
}

impl Connecting {
    /// When the Reply is due (the initiator engine's deadline).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.cm.poll_timeout()
    }

    /// Moves the setup on: checks the deadline, finishes the TCP connect, sends the Request,
    /// reads the Reply.
    pub(crate) fn advance(&mut self, sock: &mut TcpStream, now: Instant) -> Step {
        if self.cm.handle_timeout(now).is_err() {
            return Step::Failed(ConnectError::Timeout);
        }
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                return Step::Failed(if e.kind() == io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::from(e)
                })
            }
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(_) => {}
            // The TCP handshake is still under way.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Pending,
            Err(e) => return Step::Failed(ConnectError::from(e)),
        }
        if !self.request.is_empty() {
            match sock.write(&self.request) {
                Ok(n) => {
                    self.request.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) => return Step::Failed(ConnectError::from(e)),
            }
            if !self.request.is_empty() {
                return Step::Pending;
            }
        }
        // The Reply. Bytes after it (none from a compliant responder) go to the engine.
        match read_frame(sock, &mut self.cm, &[]) {
            FrameRead::Pending => Step::Pending,
            FrameRead::Done(InitiatorOutcome::Accepted(neg), rest) => Step::Accepted(neg, rest),
            FrameRead::Done(InitiatorOutcome::Rejected { private_data }, _) => {
                Step::Failed(ConnectError::Rejected { private_data })
            }
            FrameRead::Closed => Step::Failed(ConnectError::Closed),
            FrameRead::Reset => Step::Failed(ConnectError::Refused),
            FrameRead::Failed(e) => Step::Failed(ConnectError::from(e)),
            FrameRead::Invalid(e) => {
                // RFC 6581 §4.3 / §9.1: a responder we cannot work with is told with a Terminate.
                if let CmError::InsufficientIrd { terminate, .. } | CmError::NoMatchingRtr { terminate } = &e {
                    let _ = sock.write(terminate);
                }
                Step::Failed(ConnectError::Mpa(e))
            }
        }
    }
}
