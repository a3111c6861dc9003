//! Queue pairs: the handle applications post work to and connect with.

use crate::conn::{Conn, ConnInfo, Progress, QpEvent, Terminated, KICK_DISCONNECT};
use crate::cq::CompletionQueue;
use crate::cq::{WcOpcode, WcStatus, WorkCompletion};
use crate::error::{ConnectError, CreateError, PostError};
use crate::mem::ProtectionDomain;
use crate::params::ConnParams;
use crate::setup::active;
use crate::srq::SharedReceiveQueue;
use crate::wr::{counted, failed, RecvWr, SendWr};
use iwarp_proto::qp::{Qp, QpConfig, QpState, Queue};
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Queue sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCap {
    /// Outstanding send work requests.
    pub max_send_wr: usize,
    /// Outstanding receive work requests.
    pub max_recv_wr: usize,
    /// Elements per send work request.
    pub max_send_sge: usize,
    /// Elements per receive work request.
    pub max_recv_sge: usize,
    /// Inline payload bytes.
    pub max_inline_data: usize,
}

impl Default for QpCap {
    fn default() -> Self {
        QpCap { max_send_wr: 128, max_recv_wr: 128, max_send_sge: 4, max_recv_sge: 4, max_inline_data: 64 }
    }
}

/// How to create a queue pair.
#[derive(Debug, Clone, Copy)]
pub struct QpInit<'a> {
    /// Completion queue for send work requests.
    pub send_cq: &'a CompletionQueue,
    /// Completion queue for receive work requests.
    pub recv_cq: &'a CompletionQueue,
    /// Take receive buffers from this shared queue instead of the queue pair's own.
    pub srq: Option<&'a SharedReceiveQueue>,
    /// Queue sizes.
    pub cap: QpCap,
    /// Who drives the I/O.
    pub progress: Progress,
}

impl<'a> QpInit<'a> {
    /// Default sizes, event-loop progress, no shared receive queue.
    pub fn new(send_cq: &'a CompletionQueue, recv_cq: &'a CompletionQueue) -> Self {
        QpInit { send_cq, recv_cq, srq: None, cap: QpCap::default(), progress: Progress::Thread }
    }
}

/// A queue pair: one iWARP connection's send and receive queues. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueuePair {
    pub(crate) inner: Arc<Conn>,
}

impl ProtectionDomain {
    /// Creates a queue pair in this domain.
    ///
    /// # Errors
    /// [`CreateError`] if a limit exceeds the device's, or the shared receive queue is of
    /// another domain.
    pub fn create_qp(&self, init: &QpInit<'_>) -> Result<QueuePair, CreateError> {
        QueuePair::new(self, init)
    }
}

impl QueuePair {
    pub(crate) fn new(pd: &ProtectionDomain, init: &QpInit<'_>) -> Result<Self, CreateError> {
        let dev = &pd.dev;
        let c = init.cap;
        let max = &dev.cfg;
        for requested in [c.max_send_wr, c.max_recv_wr] {
            if requested > max.max_qp_wr {
                return Err(CreateError::QueueTooDeep { requested, max: max.max_qp_wr });
            }
        }
        for requested in [c.max_send_sge, c.max_recv_sge] {
            if requested > max.max_sge {
                return Err(CreateError::TooManySges { requested, max: max.max_sge });
            }
        }
        if c.max_inline_data > max.max_inline_data {
            return Err(CreateError::InlineTooLarge { requested: c.max_inline_data, max: max.max_inline_data });
        }
        if init.srq.is_some_and(|srq| srq.pd_id() != pd.id) {
            return Err(CreateError::SrqOfAnotherPd);
        }
        let qp_num = dev.next_qpn();
        let cfg = QpConfig {
            qp_num,
            pd: pd.id,
            sq_depth: c.max_send_wr.max(1),
            rq_depth: c.max_recv_wr,
            max_send_sge: c.max_send_sge,
            max_recv_sge: c.max_recv_sge,
            max_inline: c.max_inline_data,
        };
        let engine = Qp::new(cfg, Arc::clone(&dev.stags), init.srq.map(|s| Arc::clone(&s.inner)));
        let conn = Conn::new(
            Arc::clone(dev),
            engine,
            init.progress,
            Arc::clone(&init.send_cq.inner),
            Arc::clone(&init.recv_cq.inner),
        );
        if let Some(srq) = init.srq {
            srq.attach(&conn);
        }
        Ok(QueuePair { inner: conn })
    }

    /// The queue pair number (local identifier, reported in completions).
    pub fn qp_num(&self) -> u32 {
        self.inner.qp_num
    }

    /// The engine state.
    pub fn state(&self) -> QpState {
        self.inner.posts.state()
    }

    /// Negotiated parameters, once connected.
    pub fn conn_info(&self) -> Option<ConnInfo> {
        self.inner.info()
    }

    /// `true` if both ends announced RFC 7306 support (atomics and Immediate Data may be posted).
    pub fn supports_rfc7306(&self) -> bool {
        self.conn_info().is_some_and(|i| i.rfc7306)
    }

    /// Why the connection was terminated, once a Terminate ended it: the first cause, sent
    /// or received (sticky). A failed work request's completion carries the cause too
    /// ([`WorkCompletion::cause`], shown by its `Display`); this answers for the queue pair
    /// when the completion does not (a flushed request, a failure seen later). `None` while
    /// the connection is up, and after a close or a transport failure without a Terminate.
    pub fn terminated(&self) -> Option<Terminated> {
        self.inner.terminated()
    }

    /// The local socket address, once connected.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.addrs().0
    }

    /// The peer's socket address, once connected.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.addrs().1
    }

    /// Posts receive work requests (all or none). May be called before connecting.
    ///
    /// Each receive takes one incoming Send (or Immediate Data) message, in the order posted;
    /// nothing goes on the wire. Its completion on the receive completion queue gives the
    /// message's length; a message longer than the receive's scatter list fails the receive
    /// (`WcStatus::LocalLength`) and ends the connection.
    ///
    /// **Post before the peer sends.** iWARP has no receiver-not-ready retry: a Send that
    /// arrives with no receive posted (here, or on the queue pair's shared receive queue) ends
    /// the connection with a Terminate (DDP untagged buffer error, "no buffer available",
    /// RFC 5041 §7.2). This stack first holds such a Send for up to
    /// [`ConnParams::recv_wait`](crate::ConnParams::recv_wait) (2 s by default), reading
    /// nothing behind it, so a receive posted in that time still takes it; after that, or with
    /// the wait off, the connection terminates and every outstanding work request completes
    /// flushed. Post receives before `connect`/`accept` when the peer may send first.
    ///
    /// # Errors
    /// [`PostError`], naming the first request that is invalid or would overflow the queue.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
        let taken = Cell::new(0);
        self.inner.posts.post_recv(counted(wrs, &taken, RecvWr::to_proto)).map_err(|e| failed(&taken, e))?;
        self.inner.recv_posted();
        Ok(())
    }

    /// Posts send work requests (all or none) and starts transmitting them at once: one call
    /// frames many requests and hands them to the socket in as few `writev` calls as it can.
    /// One small Send or Write (up to 2 KiB, one FPDU) on a queue pair with nothing else in
    /// flight takes a shorter path: framed and written at once, without queueing. Posting
    /// never waits for the thread that moves the connection's bytes: if that thread is busy
    /// (reading a burst from the peer), the requests are queued and it frames them after its
    /// turn.
    ///
    /// On the wire: a Send becomes untagged DDP segments (RDMAP Send) that consume one of the
    /// peer's posted receives; a Write, tagged segments placed straight into the peer's region
    /// named by a [`RemoteAddr`](crate::RemoteAddr) (no event at the peer); a Read, one Read
    /// Request answered by the peer's Read Responses; atomics and Immediate Data, RFC 7306
    /// messages. The regions a request names stay held by the queue pair until it completes.
    /// Sends and Writes complete once handed to TCP, Reads and atomics once their response
    /// has been placed.
    ///
    /// A Send needs a receive posted at the peer: iWARP has no receiver-not-ready retry, so
    /// a Send that finds none ends the connection (after the peer's
    /// [`ConnParams::recv_wait`](crate::ConnParams::recv_wait), 2 s by default), and this
    /// side sees its outstanding requests complete with an error status and a Terminate
    /// ([`QueuePair::terminated`]). Failures after a request was accepted are completions
    /// with a status, never `Err`.
    ///
    /// # Errors
    /// [`PostError`], naming the first request that is invalid, needs RFC 7306 the peer
    /// lacks, is longer than its [`RemoteAddr`](crate::RemoteAddr), or would overflow the
    /// queue.
    pub fn post_send(&self, wrs: &[SendWr<'_>]) -> Result<(), PostError> {
        let taken = Cell::new(0);
        let r = self.inner.post_send(&mut counted(wrs, &taken, SendWr::to_proto), wrs.len() == 1);
        r.map_err(|e| failed(&taken, e))
    }

    /// Connects to `addr` and waits until the connection is established, rejected or failed
    /// (up to the MPA timeout of `params`).
    ///
    /// # Errors
    /// [`ConnectError`]: refused, rejected (with the peer's private data), timed out, or an
    /// MPA negotiation error.
    pub fn connect(&self, addr: SocketAddr, params: &ConnParams) -> Result<(), ConnectError> {
        self.connect_start(addr, params)?;
        self.inner.wait_connected(params.mpa.timeout + Duration::from_secs(1))
    }

    /// Starts connecting without waiting; [`QpEvent::Established`] or a failure event follows.
    ///
    /// # Errors
    /// [`ConnectError`] if the attempt cannot start (already connected, bad private data,
    /// socket errors).
    pub fn connect_start(&self, addr: SocketAddr, params: &ConnParams) -> Result<(), ConnectError> {
        if !self.inner.lock().is_idle() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "queue pair already connected").into());
        }
        self.inner.span.record("peer", tracing::field::display(addr));
        tracing::debug!(parent: &self.inner.span, source = ?params.source, "connecting");
        let (sock, connecting) = active::start(addr, params, self.inner.dev.cfg.max_rd_atomic, Instant::now())
            .inspect_err(|e| tracing::debug!(parent: &self.inner.span, error = %e, "connect failed"))?;
        self.inner.start_connect(
            sock,
            connecting,
            params.wake_silent_responder,
            params.recv_wait,
            params.mpa.align_fpdus,
        )
    }

    /// Waits until the connection is established (the passive side after `accept`, which
    /// with peer-to-peer mode means the RTR has arrived).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn wait_established(&self, timeout: Duration) -> Result<(), ConnectError> {
        self.inner.wait_connected(timeout)
    }

    /// Gracefully disconnects: work not yet on the wire is flushed, what is framed drains,
    /// then the TCP connection closes. [`QpEvent::Disconnected`] follows.
    pub fn disconnect(&self) {
        self.inner.kick(KICK_DISCONNECT);
    }

    /// Completes work requests with [`WcStatus::WrFlush`] on this queue pair's completion
    /// queues without posting them: `(wr_id, opcode)` pairs, the receive queue's for
    /// [`WcOpcode::Recv`] and [`WcOpcode::RecvImmediate`], the send queue's otherwise.
    ///
    /// For a verbs layer that answers a post to a queue pair whose connection has ended as
    /// providers do (Linux siw completes work posted in its ERROR state at once, flushed)
    /// rather than with [`PostReason::InvalidState`](crate::PostReason::InvalidState). They are delivered once the queue pair is
    /// in [`QpState::Error`], after its own flushed work, so each queue's completions stay in
    /// posting order; and like every completion they wake waiters and fire an armed
    /// notification on the queue's channel (a flush fires a solicited-only arming too).
    pub fn complete_flushed(&self, wrs: impl IntoIterator<Item = (u64, WcOpcode)>) {
        let qp_num = self.inner.qp_num;
        self.inner.flush_later(wrs.into_iter().map(|(wr_id, opcode)| {
            let queue = match opcode {
                WcOpcode::Recv | WcOpcode::RecvImmediate => Queue::Recv,
                _ => Queue::Send,
            };
            WorkCompletion { wr_id, status: WcStatus::WrFlush, opcode, qp_num, queue, ..WorkCompletion::default() }
        }));
    }

    /// The next event, if any.
    pub fn poll_event(&self) -> Option<QpEvent> {
        self.inner.poll_event()
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<QpEvent> {
        self.inner.next_event(timeout)
    }

    /// A descriptor that is readable while events are queued ([`poll_event`](Self::poll_event)
    /// returns `Some`), for an event loop of the application's own (epoll, mio, an async
    /// runtime). Taking the last queued event makes it unreadable again.
    ///
    /// The descriptor is made on first use, so a process with thousands of queue pairs pays
    /// for it only on the queue pairs it watches. That is why this is a method that can fail
    /// (when the process or system has no descriptor left) and the queue pair does not
    /// implement `AsFd`.
    pub fn event_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        Ok(std::os::fd::AsFd::as_fd(self.inner.events_eventfd()?))
    }

    /// Requests this queue pair holds back now from a burst of posts, and has held over its
    /// life (see [`PostBatching`](crate::PostBatching)). A diagnostic; never waits.
    pub fn held_posts(&self) -> (usize, u64) {
        self.inner.held()
    }

    /// Engine counters (FPDUs, bytes placed directly or copied). A diagnostic: it waits for
    /// the thread moving the connection's bytes to finish its current turn.
    pub fn stats(&self) -> iwarp_proto::qp::QpStats {
        self.inner.lock().engine.stats()
    }
}
