//! Queue pairs: posting work, and the progress loop that moves a connection's bytes.

use crate::cq::{CompletionQueue, CqInner, Polled, WorkCompletion};
use crate::error::{ConnectError, Error, PostError, Result};
use crate::mem::ProtectionDomain;
use crate::params::ConnParams;
use crate::runtime::{self, with_scratch, Entry, Ready, WorkerShared, SCRATCH_LEN};
use crate::shared::DeviceInner;
use crate::srq::SharedReceiveQueue;
use crate::sys::{self, Xfer};
use crate::wr::{RecvWr, SendWr};
use iwarp_proto::cm::{CmError, Initiator, InitiatorOutcome, Negotiated, Role};
use iwarp_proto::qp::{IoRange, LinkParams, Qp, QpConfig, QpEvent as EngineEvent, QpState, Queue, Startup};
use iwarp_wire::terminate::{TerminateCause, TerminateLayout};
use mio::net::TcpStream;
use mio::{Interest, Token};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes one progress call reads from a connection before letting others run.
const RX_BUDGET: usize = 4 << 20;
/// Bytes written between two readings of the TCP MSS.
const MSS_RECHECK: usize = 1 << 20;
/// First wake-up of a silent responder, after this side's first FPDU; the gap then doubles.
const WAKE_FIRST: Duration = Duration::from_millis(50);
/// Wake-ups at most (50 ms to 6.4 s apart, about 12.8 s in all).
const WAKE_COUNT: u32 = 8;

/// Who drives a queue pair's I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// The device's event-loop threads (default). Posting transmits from the caller's thread
    /// when it can; receiving happens on the event loop.
    #[default]
    Thread,
    /// The application: the queue pair moves bytes only while the application polls or waits
    /// on its completion queues or posts to it (busy polling for the lowest latency, or
    /// [`CompletionQueue::wait`] to sleep in the kernel). Connection setup still runs on the
    /// event loop.
    Poll,
}

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

/// Asynchronous queue pair events (rdma_cm's connection events and verbs' async events).
#[derive(Debug)]
#[non_exhaustive]
pub enum QpEvent {
    /// The connection is established and usable in both directions.
    Established,
    /// The peer rejected the connection request.
    Rejected {
        /// The peer's private data.
        private_data: Vec<u8>,
    },
    /// Connection setup failed.
    ConnectFailed(ConnectError),
    /// The connection closed (either side disconnected); all work has been flushed.
    Disconnected,
    /// A protocol error ended the connection; all work has been flushed.
    Error {
        /// The Terminate cause, if there was one.
        cause: Option<TerminateCause>,
        /// `true` if the peer sent the Terminate, `false` if this side did.
        remote: bool,
        /// For a received Terminate, which bit layout it used.
        layout: Option<TerminateLayout>,
    },
}

/// What negotiation settled for an established connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// MPA revision.
    pub revision: u8,
    /// CRC in use.
    pub crc: bool,
    /// Markers inserted in what this side sends.
    pub send_markers: bool,
    /// Markers expected in what this side receives.
    pub recv_markers: bool,
    /// Inbound Read depth.
    pub ird: u16,
    /// Outbound Read depth.
    pub ord: u16,
    /// RFC 7306 usable.
    pub rfc7306: bool,
    /// The TCP MSS the FPDUs are sized from.
    pub mss: usize,
    /// The peer's private data.
    pub peer_private_data: Vec<u8>,
    /// Initiator or responder.
    pub role: Role,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Connecting { cm: Initiator, deadline: Instant },
    Running,
    Closed,
}

#[derive(Debug)]
enum ConnStatus {
    Idle,
    Connecting,
    Established,
    Failed(Option<ConnectError>),
    /// Closed; `true` if it had been established first.
    Closed(bool),
}

pub(crate) struct QpCore {
    pub(crate) engine: Qp,
    sock: Option<TcpStream>,
    reg: Option<(Arc<WorkerShared>, Token)>,
    phase: Phase,
    ctl_out: Vec<u8>,
    iov: Vec<IoRange>,
    /// Bytes written since the MSS was last read.
    since_mss: usize,
    /// The FPDU of [`QpCore::send_now`].
    now_buf: Vec<u8>,
    /// Passive side: may send before the initiator's first FPDU.
    send_first: bool,
    /// Active side: wake a silent responder ([`ConnParams::wake_silent_responder`]).
    wake_responder: bool,
    /// The wake-up timer last handed to the worker.
    wake_timer: Option<Instant>,
    info: Option<ConnInfo>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

pub(crate) struct QpInner {
    me: std::sync::Weak<QpInner>,
    dev: Arc<DeviceInner>,
    pub(crate) qp_num: u32,
    progress: Progress,
    send_cq: Arc<CqInner>,
    recv_cq: Arc<CqInner>,
    core: Mutex<QpCore>,
    events: Mutex<VecDeque<QpEvent>>,
    events_cv: Condvar,
    /// Created on first use: most queue pairs never need a pollable descriptor, and 10,000
    /// queue pairs should not cost 10,000 more descriptors.
    events_fd: std::sync::OnceLock<sys::EventFd>,
    conn: Mutex<ConnStatus>,
    conn_cv: Condvar,
}

impl std::fmt::Debug for QpInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QpInner").field("qp_num", &self.qp_num).finish()
    }
}

/// A queue pair: one iWARP connection's send and receive queues. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueuePair {
    pub(crate) inner: Arc<QpInner>,
}

fn mulpdu_for(mss: usize, markers: bool) -> usize {
    iwarp_wire::mpa::mulpdu(mss, markers)
}

impl ProtectionDomain {
    /// Creates a queue pair in this domain.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a limit exceeds the device's.
    pub fn create_qp(&self, init: &QpInit<'_>) -> Result<QueuePair> {
        QueuePair::new(self, init)
    }
}

impl QueuePair {
    pub(crate) fn new(pd: &ProtectionDomain, init: &QpInit<'_>) -> Result<Self> {
        let dev = &pd.dev;
        let c = init.cap;
        if c.max_send_wr > dev.cfg.max_qp_wr || c.max_recv_wr > dev.cfg.max_qp_wr {
            return Err(Error::InvalidArgument(format!("queue depth above the device's {}", dev.cfg.max_qp_wr)));
        }
        if c.max_send_sge > dev.cfg.max_sge || c.max_recv_sge > dev.cfg.max_sge {
            return Err(Error::InvalidArgument(format!("more than the device's {} elements", dev.cfg.max_sge)));
        }
        if c.max_inline_data > dev.cfg.max_inline_data {
            return Err(Error::InvalidArgument(format!("inline data above the device's {}", dev.cfg.max_inline_data)));
        }
        if let Some(srq) = init.srq {
            if srq.pd_id() != pd.id {
                return Err(Error::InvalidArgument("shared receive queue of another protection domain".into()));
            }
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
        let inner = Arc::new_cyclic(|me| QpInner {
            me: me.clone(),
            dev: Arc::clone(dev),
            qp_num,
            progress: init.progress,
            send_cq: Arc::clone(&init.send_cq.inner),
            recv_cq: Arc::clone(&init.recv_cq.inner),
            core: Mutex::new(QpCore {
                engine,
                sock: None,
                reg: None,
                phase: Phase::Idle,
                ctl_out: Vec::new(),
                iov: Vec::with_capacity(64),
                since_mss: 0,
                now_buf: Vec::new(),
                send_first: false,
                wake_responder: false,
                wake_timer: None,
                info: None,
                peer: None,
                local: None,
            }),
            events: Mutex::new(VecDeque::new()),
            events_cv: Condvar::new(),
            events_fd: std::sync::OnceLock::new(),
            conn: Mutex::new(ConnStatus::Idle),
            conn_cv: Condvar::new(),
        });
        Ok(QueuePair { inner })
    }

    /// The queue pair number (local identifier, reported in completions).
    pub fn qp_num(&self) -> u32 {
        self.inner.qp_num
    }

    /// The engine state.
    pub fn state(&self) -> QpState {
        self.inner.lock().engine.state()
    }

    /// Negotiated parameters, once connected.
    pub fn conn_info(&self) -> Option<ConnInfo> {
        self.inner.lock().info.clone()
    }

    /// `true` if both ends announced RFC 7306 support (atomics and Immediate Data may be posted).
    pub fn supports_rfc7306(&self) -> bool {
        self.conn_info().is_some_and(|i| i.rfc7306)
    }

    /// The local socket address, once connected.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.lock().local
    }

    /// The peer's socket address, once connected.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.lock().peer
    }

    /// Posts receive work requests (all or none). May be called before connecting.
    ///
    /// # Errors
    /// [`PostError`] if one is invalid or the queue would overflow.
    pub fn post_recv(&self, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
        let mut core = self.inner.lock();
        core.engine.post_recv(wrs.iter().map(RecvWr::to_proto))
    }

    /// Posts send work requests (all or none) and starts transmitting them at once: one call
    /// frames many requests and hands them to the socket in as few `writev` calls as it can.
    /// One small Send or Write (up to 2 KiB, one FPDU) on a queue pair with nothing else in
    /// flight takes a shorter path: framed and written at once, without queueing.
    ///
    /// # Errors
    /// [`PostError`] if one is invalid, needs RFC 7306 the peer lacks, or the queue would overflow.
    pub fn post_send(&self, wrs: &[SendWr<'_>]) -> Result<(), PostError> {
        let mut core = self.inner.lock();
        if let [one] = wrs {
            // One request (a ping-pong, a latency-bound application): written at once when
            // the queue pair is idle, else queued as any other.
            let w = one.to_proto();
            if core.send_now(&self.inner, &w)? {
                return Ok(());
            }
            core.engine.post_send(std::iter::once(w))?;
        } else {
            core.engine.post_send(wrs.iter().map(SendWr::to_proto))?;
        }
        core.transmit(&self.inner);
        Ok(())
    }

    /// Connects to `addr` and waits until the connection is established, rejected or failed
    /// (up to the MPA timeout of `params`).
    ///
    /// # Errors
    /// [`ConnectError`]: refused, rejected (with the peer's private data), timed out, or an
    /// MPA negotiation error.
    pub fn connect(&self, addr: SocketAddr, params: &ConnParams) -> Result<(), ConnectError> {
        self.connect_start(addr, params)?;
        self.wait_connected(params.mpa.timeout + Duration::from_secs(1))
    }

    /// Starts connecting without waiting; [`QpEvent::Established`] or a failure event follows.
    ///
    /// # Errors
    /// [`ConnectError`] if the attempt cannot start (already connected, bad private data,
    /// socket errors).
    pub fn connect_start(&self, addr: SocketAddr, params: &ConnParams) -> Result<(), ConnectError> {
        let inner = &self.inner;
        let mut core = inner.lock();
        if !matches!(core.phase, Phase::Idle) {
            return Err(ConnectError::Io(io::Error::new(io::ErrorKind::AlreadyExists, "queue pair already connected")));
        }
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if let Some(src) = params.source {
            sock.bind(&src.into())?;
        }
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(ConnectError::Refused),
            Err(e) => return Err(ConnectError::Io(e)),
        }
        let std_stream: std::net::TcpStream = sock.into();
        let mut stream = TcpStream::from_std(std_stream);
        let now = Instant::now();
        let cfg = params.mpa_config(inner.dev.cfg.max_rd_atomic);
        let (cm, request) =
            Initiator::new(cfg, params.responder_resources, params.initiator_depth, &params.private_data, now)?;
        let worker = Arc::clone(&inner.dev.pick_worker().shared);
        let token = worker.add(inner.entry(), &mut stream, Interest::READABLE | Interest::WRITABLE)?;
        let deadline = now + params.mpa.timeout;
        worker.add_timer(deadline, token);
        core.sock = Some(stream);
        core.reg = Some((worker, token));
        core.ctl_out = request;
        core.wake_responder = params.wake_silent_responder;
        core.phase = Phase::Connecting { cm, deadline };
        *inner.conn.lock().unwrap_or_else(|e| e.into_inner()) = ConnStatus::Connecting;
        Ok(())
    }

    fn wait_connected(&self, timeout: Duration) -> Result<(), ConnectError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match &mut *st {
                ConnStatus::Established => return Ok(()),
                ConnStatus::Failed(e) => return Err(e.take().unwrap_or(ConnectError::Closed)),
                // Established, then closed before the waiter looked: the connect succeeded.
                ConnStatus::Closed(true) => return Ok(()),
                ConnStatus::Closed(false) => return Err(ConnectError::Closed),
                ConnStatus::Idle | ConnStatus::Connecting => {}
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ConnectError::Timeout);
            };
            if self.inner.progress == Progress::Poll {
                // Once the MPA exchange is over a polled queue pair has no event loop: what
                // completes establishment (the peer's RTR) is read here.
                drop(st);
                self.inner.progress_manual();
                st = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
                if !matches!(*st, ConnStatus::Idle | ConnStatus::Connecting) {
                    continue;
                }
                let slice = left.min(Duration::from_millis(1));
                st = self.inner.conn_cv.wait_timeout(st, slice).unwrap_or_else(|e| e.into_inner()).0;
            } else {
                st = self.inner.conn_cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }

    /// Waits until the connection is established (the passive side after `accept`, which
    /// with peer-to-peer mode means the RTR has arrived).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn wait_established(&self, timeout: Duration) -> Result<(), ConnectError> {
        self.wait_connected(timeout)
    }

    /// Gracefully disconnects: work not yet on the wire is flushed, what is framed drains,
    /// then the TCP connection closes. [`QpEvent::Disconnected`] follows.
    pub fn disconnect(&self) {
        let mut core = self.inner.lock();
        core.engine.disconnect();
        core.run(&self.inner);
    }

    /// The next event, if any.
    pub fn poll_event(&self) -> Option<QpEvent> {
        self.inner.events.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<QpEvent> {
        let deadline = Instant::now() + timeout;
        let mut q = self.inner.events.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = q.pop_front() {
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if self.inner.progress == Progress::Poll {
                drop(q);
                self.inner.progress_manual();
                q = self.inner.events.lock().unwrap_or_else(|e| e.into_inner());
                if q.is_empty() {
                    q = self
                        .inner
                        .events_cv
                        .wait_timeout(q, left.min(Duration::from_millis(1)))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            } else {
                q = self.inner.events_cv.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }

    /// Engine counters (FPDUs, bytes placed directly or copied).
    pub fn stats(&self) -> iwarp_proto::qp::QpStats {
        self.inner.lock().engine.stats()
    }

    pub(crate) fn inner(&self) -> &Arc<QpInner> {
        &self.inner
    }
}

impl AsRawFd for QueuePair {
    /// A descriptor that is readable while events are queued.
    fn as_raw_fd(&self) -> RawFd {
        let fd = self.inner.events_fd.get_or_init(|| sys::EventFd::new().expect("eventfd"));
        // Events queued before the descriptor existed must make it readable.
        if !self.inner.events.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            fd.notify();
        }
        fd.as_raw_fd()
    }
}

impl QpInner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, QpCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket, for manual-progress waiting, and whether to wait for room to write too
    /// (framed bytes the socket did not take).
    pub(crate) fn wait_fd(&self) -> Option<(RawFd, bool)> {
        let core = self.lock();
        let write = core.engine.has_unsent();
        core.sock.as_ref().map(|s| (s.as_raw_fd(), write))
    }

    /// The event loop's handle on this queue pair (it does not keep it alive).
    pub(crate) fn entry(self: &Arc<Self>) -> Entry {
        Entry::Held(Arc::downgrade(self) as std::sync::Weak<dyn Ready>)
    }

    /// Called by the worker on readiness or a timer; returns `true` if input remains.
    fn drive_from_worker(&self) -> bool {
        let mut core = self.lock();
        if let Phase::Connecting { deadline, .. } = &core.phase {
            if Instant::now() >= *deadline {
                core.fail_connect(self, ConnectError::Timeout);
                return false;
            }
        }
        core.run(self)
    }

    /// Drives a manual-progress queue pair from an application thread (never blocks on a busy
    /// lock: another thread is already driving it).
    pub(crate) fn progress_manual(&self) {
        if let Ok(mut core) = self.core.try_lock() {
            if matches!(core.phase, Phase::Running) {
                core.run(self);
            }
        }
    }

    fn push_event(&self, ev: QpEvent) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push_back(ev);
        self.events_cv.notify_all();
        if let Some(fd) = self.events_fd.get() {
            fd.notify();
        }
    }

    fn set_conn(&self, st: ConnStatus) {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        // A failure or close after establishment does not overwrite an unread failure.
        if matches!(*c, ConnStatus::Failed(Some(_))) && !matches!(st, ConnStatus::Established) {
            return;
        }
        let st = match (st, &*c) {
            (ConnStatus::Closed(_), ConnStatus::Established | ConnStatus::Closed(true)) => ConnStatus::Closed(true),
            (st, _) => st,
        };
        *c = st;
        self.conn_cv.notify_all();
    }
}

impl Polled for QpInner {
    fn progress(&self) {
        self.progress_manual();
    }
    fn wait_fd(&self) -> Option<(RawFd, bool)> {
        QpInner::wait_fd(self)
    }
}

impl Ready for QpInner {
    fn on_ready(self: Arc<Self>, _: &Arc<WorkerShared>, _: Token) -> bool {
        self.drive_from_worker()
    }
}

impl Drop for QpInner {
    fn drop(&mut self) {
        let core = self.core.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(core.phase, Phase::Connecting { .. }) {
            if let (Some((w, t)), Some(s)) = (core.reg.take(), core.sock.as_mut()) {
                w.remove(t, s);
            }
        } else {
            // Dropping a connected queue pair closes its connection as `disconnect` does.
            core.release_socket(&self.dev);
        }
    }
}

impl QpCore {
    /// Moves the connection forward: connection setup, receive, transmit, completions.
    /// Returns `true` if input remains beyond this call's budget.
    pub(crate) fn run(&mut self, qp: &QpInner) -> bool {
        if matches!(self.phase, Phase::Connecting { .. }) {
            self.connecting(qp);
        }
        if !matches!(self.phase, Phase::Running) {
            return false;
        }
        let more = self.receive();
        self.transmit(qp);
        if self.engine.wants_shutdown() {
            self.close(qp);
        }
        more
    }

    /// Frames and writes what the engine has, then delivers completions and events.
    pub(crate) fn transmit(&mut self, qp: &QpInner) {
        self.write_out();
        self.wake_tick();
        self.deliver(qp);
        if self.engine.wants_shutdown() && matches!(self.phase, Phase::Running) {
            self.close(qp);
        }
    }

    /// The idle fast path of [`QueuePair::post_send`] for one small request (see
    /// [`Qp::frame_now`]): framed into `now_buf` and written with one `write`, its completion
    /// pushed straight to the send queue's CQ. Returns `false` if the request or the queue
    /// pair does not qualify (nothing done: post it as usual).
    fn send_now(&mut self, qp: &QpInner, w: &iwarp_proto::qp::SendWqe) -> std::result::Result<bool, PostError> {
        if !matches!(self.phase, Phase::Running) || !self.ctl_out.is_empty() {
            return Ok(false);
        }
        let Some(fd) = self.sock.as_ref().map(|s| s.as_raw_fd()) else { return Ok(false) };
        let Some(framed) = self.engine.frame_now(w, &mut self.now_buf)? else { return Ok(false) };
        // Nothing framed: the request failed locally (see Qp::sent_now).
        let written = if self.now_buf.is_empty() { Xfer::Bytes(0) } else { sys::write(fd, &self.now_buf) };
        let (n, failed) = match written {
            Xfer::Bytes(n) => (n, false),
            Xfer::WouldBlock => (0, false),
            Xfer::Failed(e) => {
                tracing::debug!(qp = qp.qp_num, error = %e, "socket write failed");
                (0, true)
            }
        };
        self.count_written(n);
        match self.engine.sent_now(framed, &self.now_buf, n) {
            Some(c) => qp.send_cq.push(std::iter::once(WorkCompletion::from_proto(c, qp.qp_num))),
            None if failed => {
                // The request is queued behind the failure and completes flushed.
                self.engine.handle_transport_error();
                self.transmit(qp);
            }
            None => {}
        }
        // As transmit does: an initiator's wake-up clock starts once its first FPDU is out.
        self.wake_tick();
        Ok(true)
    }

    /// Runs the engine's wake-up timer, if one runs: sends a due zero-length Write, and keeps
    /// a worker timer for the next one (a polled queue pair checks at every poll instead).
    fn wake_tick(&mut self) {
        if !self.engine.wake_pending() {
            return;
        }
        if self.engine.handle_timeout(Instant::now()) {
            self.write_out();
        }
        if let (Some(t), Some((w, token))) = (self.engine.poll_timeout(), self.reg.as_ref()) {
            if self.wake_timer != Some(t) {
                w.add_timer(t, *token);
                self.wake_timer = Some(t);
            }
        }
    }

    /// Hands framed bytes to the socket until it is full or nothing is left.
    fn write_out(&mut self) {
        if let Some(sock) = self.sock.as_mut() {
            if !self.ctl_out.is_empty() {
                match sock.write(&self.ctl_out) {
                    Ok(n) => {
                        self.ctl_out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.engine.handle_transport_error(),
                }
            }
            // Nothing framed and nothing to frame: the common case of a busy poll.
            let pending = self.engine.has_unsent() || self.engine.has_work();
            if pending && self.ctl_out.is_empty() && matches!(self.phase, Phase::Running) {
                let fd = sock.as_raw_fd();
                loop {
                    match sys::write_framed(fd, &mut self.engine, &mut self.iov) {
                        (_, 0) => break,
                        (Xfer::Bytes(w), n) => {
                            self.count_written(w);
                            // Loop only while something is left: bytes beyond the ranges
                            // returned, or work the window held back.
                            if w < n || !(self.engine.has_unsent() || self.engine.has_work()) {
                                break;
                            }
                        }
                        (Xfer::WouldBlock, _) => break,
                        (Xfer::Failed(e), _) => {
                            tracing::debug!(error = %e, "socket write failed");
                            self.engine.handle_transport_error();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Counts `n` bytes handed to the socket; re-reads the MSS every [`MSS_RECHECK`] bytes.
    fn count_written(&mut self, n: usize) {
        self.since_mss += n;
        if self.since_mss >= MSS_RECHECK {
            self.since_mss = 0;
            self.refresh_mss();
        }
    }

    /// Re-reads the TCP MSS: FPDUs follow it (RFC 5044 §5.1), and it grows as a connection
    /// warms up.
    fn refresh_mss(&mut self) {
        let Some(s) = self.sock.as_ref() else { return };
        let Ok(mss) = socket2::SockRef::from(s).tcp_mss() else { return };
        let mss = mss as usize;
        if let Some(info) = self.info.as_mut() {
            if info.mss != mss {
                info.mss = mss;
                self.engine.set_mulpdu(mulpdu_for(mss, info.send_markers));
            }
        }
    }

    /// Reads what the socket has, following the engine's receive plans, and stops at the first
    /// short read (the socket was empty at that moment), which saves the system call that
    /// would only return `EAGAIN`: an application polling a queue pair polls again anyway, and
    /// for the event loop Linux signals every later arrival on an edge-triggered registration
    /// (each wake-up of the socket queues the event again), so nothing is left unread.
    fn receive(&mut self) -> bool {
        let Some(sock) = self.sock.as_ref() else { return false };
        let fd = sock.as_raw_fd();
        with_scratch(|scratch| sys::receive(fd, &mut self.engine, scratch, SCRATCH_LEN, RX_BUDGET))
    }

    fn deliver(&mut self, qp: &QpInner) {
        if !self.engine.has_output() {
            return;
        }
        let qp_num = qp.qp_num;
        let engine = &mut self.engine;
        if Arc::ptr_eq(&qp.send_cq, &qp.recv_cq) {
            // One queue for both (the common set-up): straight from the engine into it, under
            // one lock, in the engine's order.
            qp.send_cq
                .push(std::iter::from_fn(|| engine.poll_completion().map(|c| WorkCompletion::from_proto(c, qp_num))));
        } else {
            // Send completions go straight in; receive completions wait for the second lock.
            let mut recv: SmallVec<[WorkCompletion; 16]> = SmallVec::new();
            qp.send_cq.push(std::iter::from_fn(|| loop {
                let c = engine.poll_completion()?;
                let wc = WorkCompletion::from_proto(c, qp_num);
                match c.queue {
                    Queue::Send => return Some(wc),
                    Queue::Recv => recv.push(wc),
                }
            }));
            // By reference: moving the array would copy all its slots.
            qp.recv_cq.push(recv.iter().copied());
        }
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                EngineEvent::Ready => {
                    qp.set_conn(ConnStatus::Established);
                    qp.push_event(QpEvent::Established);
                }
                EngineEvent::LocalError(cause) => {
                    qp.push_event(QpEvent::Error { cause: Some(cause), remote: false, layout: None })
                }
                EngineEvent::RemoteTerminate { cause, layout } => {
                    qp.push_event(QpEvent::Error { cause: Some(cause), remote: true, layout: Some(layout) })
                }
                EngineEvent::PeerClosed => {}
                EngineEvent::TransportError => {
                    qp.push_event(QpEvent::Error { cause: None, remote: false, layout: None })
                }
                EngineEvent::Flushed => {}
            }
        }
    }

    fn close(&mut self, qp: &QpInner) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.phase = Phase::Closed;
        self.release_socket(&qp.dev);
        self.deliver(qp);
        qp.set_conn(ConnStatus::Closed(false));
        qp.push_event(QpEvent::Disconnected);
    }

    /// Closes the TCP connection gracefully: our FIN follows what is queued, and the worker
    /// drains the socket until the peer's FIN, so that the close never turns into a reset.
    fn release_socket(&mut self, dev: &DeviceInner) {
        if let Some(mut s) = self.sock.take() {
            let _ = s.flush();
            let _ = s.shutdown(std::net::Shutdown::Write);
            match self.reg.take() {
                Some((w, t)) => runtime::linger(&w, Some(t), s),
                None => runtime::linger(&dev.pick_worker().shared, None, s),
            }
        }
    }

    fn fail_connect(&mut self, qp: &QpInner, err: ConnectError) {
        tracing::debug!(qp = qp.qp_num, error = %err, "connect failed");
        self.phase = Phase::Closed;
        if let Some(mut s) = self.sock.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
            if let Some((w, t)) = self.reg.take() {
                w.remove(t, &mut s);
            }
        }
        let ev = match &err {
            ConnectError::Rejected { private_data } => QpEvent::Rejected { private_data: private_data.clone() },
            other => QpEvent::ConnectFailed(match other {
                ConnectError::Refused => ConnectError::Refused,
                ConnectError::Timeout => ConnectError::Timeout,
                ConnectError::Closed => ConnectError::Closed,
                ConnectError::Mpa(m) => ConnectError::Mpa(m.clone()),
                ConnectError::Io(e) => ConnectError::Io(io::Error::new(e.kind(), e.to_string())),
                ConnectError::Rejected { private_data } => {
                    ConnectError::Rejected { private_data: private_data.clone() }
                }
            }),
        };
        qp.set_conn(ConnStatus::Failed(Some(err)));
        qp.push_event(ev);
    }

    /// Active side: finish the TCP connect, send the Request, take the Reply.
    fn connecting(&mut self, qp: &QpInner) {
        let Some(sock) = self.sock.as_mut() else { return };
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                let err = if e.kind() == io::ErrorKind::ConnectionRefused {
                    ConnectError::Refused
                } else {
                    ConnectError::Io(e)
                };
                return self.fail_connect(qp, err);
            }
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(a) => self.peer = Some(a),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return self.fail_connect(qp, ConnectError::Io(e)),
        }
        self.local = sock.local_addr().ok();
        if !self.ctl_out.is_empty() {
            match sock.write(&self.ctl_out) {
                Ok(n) => {
                    self.ctl_out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.fail_connect(qp, ConnectError::Io(e)),
            }
            if !self.ctl_out.is_empty() {
                return;
            }
        }
        // Read the Reply. Bytes after it (none from a compliant responder) go to the engine.
        let mut buf = [0u8; 1024];
        loop {
            let n = match sock.read(&mut buf) {
                Ok(0) => return self.fail_connect(qp, ConnectError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return self.fail_connect(qp, ConnectError::Refused)
                }
                Err(e) => return self.fail_connect(qp, ConnectError::Io(e)),
            };
            let Phase::Connecting { cm, .. } = &mut self.phase else { return };
            match cm.handle_bytes(&buf[..n]) {
                Ok(None) => continue,
                Ok(Some((InitiatorOutcome::Rejected { private_data }, _))) => {
                    return self.fail_connect(qp, ConnectError::Rejected { private_data })
                }
                Ok(Some((InitiatorOutcome::Accepted(neg), used))) => {
                    let leftover = buf[used..n].to_vec();
                    self.establish(qp, neg);
                    if !leftover.is_empty() {
                        self.engine.handle_recv(&leftover);
                    }
                    return;
                }
                Err(e) => {
                    if let CmError::InsufficientIrd { terminate, .. } | CmError::NoMatchingRtr { terminate } = &e {
                        let _ = sock.write(terminate);
                    }
                    return self.fail_connect(qp, ConnectError::Mpa(e));
                }
            }
        }
    }

    /// Full operation begins: hand the negotiated parameters to the engine.
    pub(crate) fn establish(&mut self, qp: &QpInner, neg: Negotiated) {
        let mss = self.sock.as_ref().and_then(|s| socket2::SockRef::from(s).tcp_mss().ok()).unwrap_or(1460) as usize;
        let startup = match neg.role {
            Role::Initiator => Startup::Initiator { rtr: neg.send_rtr },
            Role::Responder => Startup::Responder { rtr: neg.expect_rtr, send_first: self.send_first },
        };
        let link = LinkParams {
            crc: neg.crc,
            send_markers: neg.send_markers,
            recv_markers: neg.recv_markers,
            ird: u32::from(neg.ird),
            ord: u32::from(neg.ord),
            mulpdu: mulpdu_for(mss, neg.send_markers),
            rfc7306: neg.rfc7306,
            startup,
        };
        self.info = Some(ConnInfo {
            revision: neg.revision,
            crc: neg.crc,
            send_markers: neg.send_markers,
            recv_markers: neg.recv_markers,
            ird: neg.ird,
            ord: neg.ord,
            rfc7306: neg.rfc7306,
            mss,
            peer_private_data: neg.peer_private_data,
            role: neg.role,
        });
        if let Some(s) = &self.sock {
            self.peer = s.peer_addr().ok();
            self.local = s.local_addr().ok();
        }
        if self.engine.establish(link).is_err() {
            return self.fail_connect(qp, ConnectError::Closed);
        }
        if neg.role == Role::Initiator && self.wake_responder {
            self.engine.wake_silent_peer(WAKE_FIRST, WAKE_COUNT);
        }
        self.phase = Phase::Running;
        if qp.progress == Progress::Poll {
            // The application drives from now on.
            if let (Some((w, t)), Some(s)) = (self.reg.take(), self.sock.as_mut()) {
                w.remove(t, s);
            }
            qp.send_cq.attach_polled(qp.me.clone() as std::sync::Weak<dyn Polled>);
            qp.recv_cq.attach_polled(qp.me.clone() as std::sync::Weak<dyn Polled>);
        }
        self.transmit(qp);
    }

    /// Passive side: adopt an accepted socket whose Reply is `reply`.
    pub(crate) fn adopt(
        &mut self,
        qp: &QpInner,
        sock: TcpStream,
        reg: (Arc<WorkerShared>, Token),
        reply: Vec<u8>,
        neg: Negotiated,
        send_first: bool,
    ) {
        self.sock = Some(sock);
        self.send_first = send_first;
        self.reg = Some(reg);
        self.ctl_out = reply;
        *qp.conn.lock().unwrap_or_else(|e| e.into_inner()) = ConnStatus::Connecting;
        self.establish(qp, neg);
    }

    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle)
    }
}
