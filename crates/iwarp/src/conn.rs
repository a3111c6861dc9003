//! The per-connection driver: one queue pair's engine and socket, moved forward on the event
//! loop's readiness (or by the application, for [`Progress::Poll`]) through connection setup,
//! then receive, transmit and the delivery of completions and events.
//!
//! [`Conn`] is what the event loop, the completion queues and the [`crate::QueuePair`]
//! handles share; its [`Driver`] holds the engine and the socket.

use crate::cq::{CqInner, Polled, WorkCompletion};
use crate::error::{ConnectError, PostReason};
use crate::runtime::{self, with_scratch, Entry, Ready, WorkerShared, SCRATCH_LEN};
use crate::setup::active::{Connecting, Step};
use crate::shared::DeviceInner;
use crate::sys::{self, EventFd, Xfer};
use iwarp_proto::cm::{Negotiated, Role};
use iwarp_proto::qp::{
    IoRange, LinkParams, PostQueues, Qp, QpEvent as EngineEvent, QpState, Queue, SendWqe, TransportEvent,
};
use iwarp_wire::terminate::{TerminateCause, TerminateLayout};
use mio::net::TcpStream;
use mio::Token;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Bytes one progress call reads from a connection before letting others run.
const RX_BUDGET: usize = 4 << 20;
/// Bytes written between two readings of the TCP MSS.
const MSS_RECHECK: usize = 1 << 20;
/// First wake-up of a silent responder, after this side's first FPDU; the gap then doubles.
const WAKE_FIRST: Duration = Duration::from_millis(50);
/// Wake-ups at most (50 ms to 6.4 s apart, about 12.8 s in all).
const WAKE_COUNT: u32 = 8;

/// [`Conn::kicks`]: posted sends wait to be framed.
pub(crate) const KICK_TX: u8 = 1;
/// [`Conn::kicks`]: the event loop found the socket ready while the driver was busy.
pub(crate) const KICK_RUN: u8 = 2;
/// [`Conn::kicks`]: the application disconnects.
pub(crate) const KICK_DISCONNECT: u8 = 4;

/// The posts of a burst ([`crate::PostBatching`]) before this one are written as they come;
/// from this one on they are held and joined ([`Conn::post_send`]).
const HOLD_AFTER: u32 = 3;
/// Held bytes (payload and headers, estimated) are written once they reach this: two send
/// calls of [`iwarp_proto::qp::SEND_CALL_MAX`].
const HOLD_MAX: usize = 2 * iwarp_proto::qp::SEND_CALL_MAX;

/// Who drives a queue pair's I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// The device's event-loop threads (default). Posting transmits from the caller's thread
    /// when it can; receiving happens on the event loop.
    #[default]
    Thread,
    /// The application: the queue pair moves bytes only while the application polls or waits
    /// on its completion queues or posts to it (busy polling for the lowest latency, or
    /// [`CompletionQueue::wait`](crate::CompletionQueue::wait) to sleep in the kernel). Connection setup still runs on the
    /// event loop.
    Poll,
    /// Both: the event loop drives the queue pair as with [`Thread`](Self::Thread), and an
    /// application thread that polls one of its completion queues and finds it empty also
    /// moves its bytes (receiving, transmitting, completing), so a busy-polling application
    /// is served by its own thread rather than by waking the event loop's. Meant for a few
    /// queue pairs per completion queue: a queue with more than eight of them is left to the
    /// event loop.
    Assisted,
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
    /// This queue pair took a receive from its shared receive queue that left fewer work
    /// requests there than the limit armed with
    /// [`SharedReceiveQueue::arm_limit`](crate::SharedReceiveQueue::arm_limit); the limit is
    /// disarmed (it reads 0) until armed again. It comes once, from whichever queue pair took
    /// that receive.
    SrqLimitReached,
}

/// An established connection's parameters: what the MPA exchange settled (the fields of
/// [`Negotiated`], read through this type) and the TCP MSS its FPDUs are sized from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// What the MPA exchange settled: revision, CRC, markers, IRD/ORD, RTR, RFC 7306, the
    /// peer's private data, this side's role.
    pub negotiated: Negotiated,
    /// The TCP MSS the FPDUs are sized from (it grows as a connection warms up).
    pub mss: usize,
}

impl std::ops::Deref for ConnInfo {
    type Target = Negotiated;
    fn deref(&self) -> &Negotiated {
        &self.negotiated
    }
}

/// How far connection setup has come (after it, the engine's state is the connection's).
#[derive(Debug)]
enum Setup {
    /// Neither `connect` nor `accept` yet.
    Unstarted,
    /// Active setup under way.
    Connecting(Connecting),
    /// Setup is over: established (the socket is held while the connection lasts) or failed.
    Done,
}

/// What the driver tells the queue pair's waiters.
#[derive(Debug)]
pub(crate) enum Report {
    /// The engine reported the connection usable.
    Established,
    /// Setup failed.
    Failed(ConnectError),
    /// The connection closed.
    Closed,
}

/// The outcomes the driver reported, for `connect`/`wait_established` and `next_event`.
#[derive(Debug, Default)]
struct Status {
    events: VecDeque<QpEvent>,
    established: bool,
    failed: Option<ConnectError>,
    closed: bool,
    /// Tasks waiting for setup's outcome ([`Conn::poll_connected`]), woken by every report.
    wakers: Vec<Waker>,
}

/// A queue pair's engine and connection, and what moving them needs.
pub(crate) struct Driver {
    pub(crate) engine: Qp,
    sock: Option<TcpStream>,
    reg: Option<(Arc<WorkerShared>, Token)>,
    setup: Setup,
    /// Passive side: the MPA Reply, sent before any FPDU.
    ctl_out: Vec<u8>,
    iov: Vec<IoRange>,
    /// Bytes written since the MSS was last read.
    since_mss: usize,
    /// Bytes handed to the socket over the connection's life (a measure of progress).
    written: u64,
    /// The FPDU of [`Driver::send_now`].
    now_buf: Vec<u8>,
    /// Passive side: may send before the initiator's first FPDU.
    send_first: bool,
    /// Align segment-sized FPDUs to TCP segments ([`crate::MpaOptions::align_fpdus`]).
    align: bool,
    /// The send calls of an aligned transmit (see [`sys::write_framed`]).
    calls: Vec<(usize, bool)>,
    /// Active side: wake a silent responder ([`crate::ConnParams::wake_silent_responder`]).
    wake_responder: bool,
    /// The wake-up timer last handed to the worker.
    wake_timer: Option<Instant>,
    /// What readers of [`Conn::info`] see (the driver keeps the MSS in it current).
    info: Arc<Mutex<Option<ConnInfo>>>,
    /// When the last single-request post returned, and how many posts in a row followed
    /// their predecessor within the device's [`crate::PostBatching::gap`].
    last_post: Option<Instant>,
    streak: u32,
    /// Bytes (estimated) of requests posted but held back from the socket ([`Conn::post_send`]).
    held: usize,
}

/// One queue pair's connection, shared by its handles, the event loop and its completion
/// queues.
pub(crate) struct Conn {
    me: Weak<Conn>,
    pub(crate) dev: Arc<DeviceInner>,
    pub(crate) qp_num: u32,
    pub(crate) progress: Progress,
    pub(crate) send_cq: Arc<CqInner>,
    pub(crate) recv_cq: Arc<CqInner>,
    /// The engine and the socket. Whoever moves the connection's bytes holds it across
    /// system calls; so nothing an application calls waits for it: posts go through
    /// [`Conn::posts`], and work for the holder is left in [`Conn::kicks`].
    driver: Mutex<Driver>,
    /// The posting side of the engine (validated, queued work requests).
    pub(crate) posts: Arc<PostQueues>,
    /// Work left for the driver's holder by threads that found it busy ([`KICK_TX`], ...).
    kicks: AtomicU8,
    /// Requests held back from the socket now ([`Conn::post_send`]), and over the queue
    /// pair's life.
    holding: AtomicUsize,
    held_total: AtomicU64,
    /// When the event loop's timer to write held requests is due, in
    /// nanoseconds of [`clock_ns`]; 0 if none is set. One at a time: each timer costs the
    /// event loop a wake-up.
    hold_timer: AtomicU64,
    /// The event loop saw the peer's end of stream (`EPOLLRDHUP`): reads go on to the end of
    /// the stream instead of stopping at a short read, for no readiness edge follows a FIN
    /// that arrived with the last bytes.
    peer_closed: AtomicBool,
    /// The worker and token this connection is registered under, to hand it the reading a
    /// busy driver could not do.
    home: Mutex<Option<(Arc<WorkerShared>, Token)>>,
    info: Arc<Mutex<Option<ConnInfo>>>,
    addrs: OnceLock<(Option<SocketAddr>, Option<SocketAddr>)>,
    status: Mutex<Status>,
    status_cv: Condvar,
    /// Created on first use: most queue pairs never need a pollable descriptor, and 10,000
    /// queue pairs should not cost 10,000 more descriptors.
    events_fd: OnceLock<EventFd>,
    /// Flushed completions of work refused after the connection ended
    /// ([`QueuePair::complete_flushed`](crate::QueuePair::complete_flushed)), delivered by the
    /// driver once the engine is in error, after the engine's own flushes.
    late_flushes: Mutex<Vec<WorkCompletion>>,
    /// The first Terminate cause that ended the connection, sent or received (sticky).
    terminated: OnceLock<Terminated>,
    /// The connection's `tracing` span (`qp`, `peer` once known): connect, establishment,
    /// teardown and errors are logged in it.
    pub(crate) span: tracing::Span,
}

/// Why a queue pair's connection was terminated ([`QueuePair::terminated`](crate::QueuePair::terminated)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminated {
    /// The Terminate's cause.
    pub cause: TerminateCause,
    /// `true` if the peer sent it, `false` if this side did (a protocol error of the peer's
    /// bytes, or a local catastrophic error).
    pub remote: bool,
}

impl std::fmt::Display for Terminated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = if self.remote { "by the peer" } else { "by this side" };
        write!(f, "terminated {by}: {}", self.cause)
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("qp_num", &self.qp_num).finish()
    }
}

impl Conn {
    pub(crate) fn new(
        dev: Arc<DeviceInner>,
        engine: Qp,
        progress: Progress,
        send_cq: Arc<CqInner>,
        recv_cq: Arc<CqInner>,
    ) -> Arc<Conn> {
        let qp_num = engine.config().qp_num;
        let posts = Arc::clone(engine.posts());
        let info = Arc::new(Mutex::new(None));
        Arc::new_cyclic(|me| Conn {
            me: me.clone(),
            dev,
            qp_num,
            progress,
            send_cq,
            recv_cq,
            driver: Mutex::new(Driver {
                engine,
                sock: None,
                reg: None,
                setup: Setup::Unstarted,
                ctl_out: Vec::new(),
                iov: Vec::with_capacity(64),
                since_mss: 0,
                written: 0,
                now_buf: Vec::new(),
                send_first: false,
                align: false,
                calls: Vec::new(),
                wake_responder: false,
                wake_timer: None,
                info: Arc::clone(&info),
                last_post: None,
                streak: 0,
                held: 0,
            }),
            posts,
            kicks: AtomicU8::new(0),
            holding: AtomicUsize::new(0),
            held_total: AtomicU64::new(0),
            hold_timer: AtomicU64::new(0),
            peer_closed: AtomicBool::new(false),
            home: Mutex::new(None),
            info,
            addrs: OnceLock::new(),
            status: Mutex::new(Status::default()),
            status_cv: Condvar::new(),
            events_fd: OnceLock::new(),
            late_flushes: Mutex::new(Vec::new()),
            terminated: OnceLock::new(),
            span: tracing::debug_span!("qp", qp = qp_num, peer = tracing::field::Empty),
        })
    }

    /// The driver, waiting for it (for calls that may: setup, accept, diagnostics). Work
    /// others left meanwhile is done when the guard is dropped.
    pub(crate) fn lock(&self) -> DriverGuard<'_> {
        DriverGuard { conn: self, guard: Some(self.driver.lock().unwrap_or_else(|e| e.into_inner())) }
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The event loop's handle on this connection (it does not keep it alive).
    pub(crate) fn entry(self: &Arc<Self>) -> Entry {
        Entry::Held(Arc::downgrade(self) as Weak<dyn Ready>)
    }

    /// Starts active setup on a connecting socket: registers it with a worker, with a timer at
    /// the initiator's deadline.
    ///
    /// # Errors
    /// [`ConnectError`] if the queue pair was connected before or the socket cannot be
    /// registered.
    pub(crate) fn start_connect(
        self: &Arc<Self>,
        mut sock: TcpStream,
        connecting: Connecting,
        wake_responder: bool,
        recv_wait: Option<Duration>,
        align: bool,
    ) -> Result<(), ConnectError> {
        let mut d = self.lock();
        if !d.is_idle() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "queue pair already connected").into());
        }
        let worker = Arc::clone(&self.dev.pick_worker().shared);
        let token = worker.add(self.entry(), &mut sock, mio::Interest::READABLE | mio::Interest::WRITABLE)?;
        if let Some(deadline) = connecting.deadline() {
            worker.add_timer(deadline, token);
        }
        d.sock = Some(sock);
        *self.home() = Some((Arc::clone(&worker), token));
        d.reg = Some((worker, token));
        d.wake_responder = wake_responder;
        d.align = align;
        d.engine.set_recv_wait(recv_wait);
        d.setup = Setup::Connecting(connecting);
        Ok(())
    }

    /// Waits until setup has an outcome: `Ok` once established (even if closed since),
    /// the failure otherwise. A queue pair driven by the application is driven here.
    pub(crate) fn wait_connected(&self, timeout: Duration) -> Result<(), ConnectError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.status();
        loop {
            if st.established {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.closed {
                return Err(ConnectError::Closed);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ConnectError::Timeout);
            };
            if self.progress == Progress::Poll {
                // Once the MPA exchange is over a polled queue pair has no event loop: what
                // completes establishment (the peer's RTR) is read here.
                drop(st);
                self.progress_manual();
                st = self.status();
                if st.established || st.failed.is_some() || st.closed {
                    continue;
                }
                st = self
                    .status_cv
                    .wait_timeout(st, left.min(Duration::from_millis(1)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            } else {
                st = self.status_cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }

    /// Setup's outcome without waiting, as [`wait_connected`](Self::wait_connected) reports
    /// it; `Pending` registers the task to be woken by the next report (established, failed,
    /// closed). A queue pair driven by the application ([`Progress::Poll`]) is given a turn.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        if self.progress == Progress::Poll {
            self.progress_manual();
        }
        let mut st = self.status();
        if st.established {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.failed {
            return Poll::Ready(Err(e.clone()));
        }
        if st.closed {
            return Poll::Ready(Err(ConnectError::Closed));
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The next event, if any.
    pub(crate) fn poll_event(&self) -> Option<QpEvent> {
        let mut st = self.status();
        let ev = st.events.pop_front();
        self.settle_events_fd(&st);
        ev
    }

    /// Resets the events descriptor once the queue is empty, so it is readable only while
    /// events are queued. (A push that races with this notifies after its push, so at worst
    /// the descriptor is readable once with nothing queued: a spurious wake-up, never a lost
    /// one.)
    fn settle_events_fd(&self, st: &Status) {
        if st.events.is_empty() {
            if let Some(fd) = self.events_fd.get() {
                fd.drain();
            }
        }
    }

    /// The next event, waiting up to `timeout`.
    pub(crate) fn next_event(&self, timeout: Duration) -> Option<QpEvent> {
        let deadline = Instant::now() + timeout;
        let mut st = self.status();
        loop {
            if let Some(e) = st.events.pop_front() {
                self.settle_events_fd(&st);
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if self.progress == Progress::Poll {
                drop(st);
                self.progress_manual();
                st = self.status();
                if st.events.is_empty() {
                    st = self
                        .status_cv
                        .wait_timeout(st, left.min(Duration::from_millis(1)))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            } else {
                st = self.status_cv.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }

    /// The events descriptor (readable while events are queued), created on first use: the
    /// creation fails only when the process or system is out of descriptors.
    pub(crate) fn events_eventfd(&self) -> std::io::Result<&EventFd> {
        let fd = match self.events_fd.get() {
            Some(fd) => fd,
            None => {
                let made = EventFd::new()?;
                // A thread that raced here first wins; `made` is then closed unused.
                self.events_fd.get_or_init(|| made)
            }
        };
        // Events queued before the descriptor existed must make it readable.
        if !self.status().events.is_empty() {
            fd.notify();
        }
        Ok(fd)
    }

    /// The socket, for manual-progress waiting, and whether to wait for room to write too
    /// (framed bytes the socket did not take). `None` while another thread drives.
    fn wait_fd(&self) -> Option<(RawFd, bool)> {
        let d = self.try_driver()?;
        let interest = d.engine.poll_interest();
        if interest.recv_wait && !interest.unsent {
            // Unread bytes wait behind a Send with no receive: the socket stays readable,
            // and only a post (or the wait's end, checked at each poll) changes anything.
            return None;
        }
        d.sock.as_ref().map(|s| (s.as_raw_fd(), interest.unsent))
    }

    /// The driver, if no other thread holds it.
    fn try_driver(&self) -> Option<MutexGuard<'_, Driver>> {
        match self.driver.try_lock() {
            Ok(d) => Some(d),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn home(&self) -> MutexGuard<'_, Option<(Arc<WorkerShared>, Token)>> {
        self.home.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues flushed completions for the driver to deliver once the engine is in error
    /// (see [`QueuePair::complete_flushed`](crate::QueuePair::complete_flushed)).
    pub(crate) fn flush_later(&self, items: impl IntoIterator<Item = WorkCompletion>) {
        self.late_flushes.lock().unwrap_or_else(|e| e.into_inner()).extend(items);
        self.kick(KICK_TX);
    }

    /// A receive was posted for this queue pair (to it or to its shared receive queue): if
    /// its engine waits for one ([`crate::ConnParams::recv_wait`]), the connection is read
    /// again. Edge-triggered readiness will not announce the bytes already queued.
    pub(crate) fn recv_posted(&self) {
        if self.posts.take_recv_waiter() {
            self.kick(KICK_RUN);
        }
    }

    /// Leaves `work` ([`KICK_TX`], [`KICK_RUN`], [`KICK_DISCONNECT`]) for the driver: done
    /// here if the driver is free, else by the thread that holds it, after its turn.
    pub(crate) fn kick(&self, work: u8) {
        self.kicks.fetch_or(work, Ordering::AcqRel);
        self.drain_kicks(false);
    }

    /// Does the work left in [`Conn::kicks`] while the driver is free. Called after every
    /// turn that held the driver, and by [`kick`](Self::kick). Reading ([`KICK_RUN`]) goes
    /// back to the event loop unless this is the event loop.
    fn drain_kicks(&self, on_worker: bool) -> bool {
        let mut more = false;
        loop {
            // Pairs with the fence in a kicker: either it sees the driver free, or this turn
            // sees its bits (the store-buffer case both fences rule out).
            fence(Ordering::SeqCst);
            if self.kicks.load(Ordering::Acquire) == 0 {
                return more;
            }
            let Some(mut d) = self.try_driver() else { return more };
            let work = self.kicks.swap(0, Ordering::AcqRel);
            if work & KICK_DISCONNECT != 0 {
                // Requests held from a burst were posted before the close: they go out first,
                // as they would have without the hold (the close flushes what is unframed).
                if d.held > 0 {
                    d.run_tx(self);
                }
                d.engine.disconnect();
            }
            // An assisted queue pair's application thread reads too: handing the reading back
            // would cost the event loop a wake-up, and while the application keeps the driver
            // busy (posting, polling), the loop would only find it busy again and hand it back.
            let assists = !on_worker && self.progress == Progress::Assisted && d.running();
            let mut hand_back = work & KICK_RUN != 0 && !on_worker;
            if work & KICK_RUN != 0 && on_worker {
                more |= d.run(self);
            } else if work & KICK_RUN != 0 && assists {
                // Input left beyond this turn's budget goes back to the event loop.
                hand_back = d.run(self);
            } else if work & (KICK_TX | KICK_DISCONNECT) != 0 || work & KICK_RUN != 0 && d.is_polled(self) {
                d.run_tx(self);
            }
            drop(d);
            if hand_back {
                if let Some((w, t)) = self.home().as_ref() {
                    w.schedule(*t);
                }
            }
        }
    }

    /// Called by the worker on readiness or a timer; returns `true` if input remains. A
    /// driver busy in another thread gets the reading handed back ([`KICK_RUN`]).
    fn drive_from_worker(&self) -> bool {
        let more = match self.try_driver() {
            Some(mut d) => d.run(self),
            None => {
                self.kicks.fetch_or(KICK_RUN, Ordering::AcqRel);
                false
            }
        };
        self.drain_kicks(true) | more
    }

    /// Drives a manual-progress queue pair from an application thread (never blocks on a busy
    /// driver: another thread is already driving it).
    pub(crate) fn progress_manual(&self) {
        if let Some(mut d) = self.try_driver() {
            if d.running() {
                d.run(self);
            }
            drop(d);
            self.drain_kicks(false);
        }
    }

    /// Drives a [`Progress::Assisted`] queue pair from an application thread that found its
    /// completion queue empty (never blocks on a busy driver). Input left beyond this turn's
    /// budget goes back to the event loop: no new edge will signal it.
    /// Returns `true` if the turn moved bytes (an FPDU received, or bytes written) or left
    /// framed bytes waiting for room in the socket: this thread's next poll has work.
    pub(crate) fn progress_assist(&self) -> bool {
        let Some(mut d) = self.try_driver() else { return false };
        let before = (d.engine.stats().rx_fpdus, d.written);
        let running = d.running();
        let more = running && d.run(self);
        // A closed connection's leftover framed bytes are no work for the poller.
        let moved = (d.engine.stats().rx_fpdus, d.written) != before || (running && d.engine.poll_interest().unsent);
        drop(d);
        if more {
            self.kicks.fetch_or(KICK_RUN, Ordering::AcqRel);
        }
        self.drain_kicks(false);
        moved
    }

    /// Posts send work requests and starts them: one small request on an idle queue pair is
    /// framed and written at once; otherwise the requests are queued and framed by this
    /// thread if the driver is free, by its holder (after its turn) if not.
    ///
    /// A [`Progress::Assisted`] queue pair whose application posts one request at a time in
    /// a loop has the later requests of the burst held back, unframed, until [`HOLD_MAX`]
    /// bytes of them are waiting, then sent together (see [`crate::PostBatching`]).
    pub(crate) fn post_send(&self, wqes: &mut dyn Iterator<Item = SendWqe>, one: bool) -> Result<(), PostReason> {
        if one {
            if let Some(mut d) = self.try_driver() {
                let r = match wqes.next() {
                    Some(w) if self.may_hold(&mut d, &w) => {
                        self.posts.post_send(std::iter::once(w)).map(|()| self.hold())
                    }
                    Some(w) => match d.send_now(self, &w) {
                        Ok(true) => Ok(()),
                        Ok(false) => self.posts.post_send(std::iter::once(w)).map(|()| d.run_tx(self)),
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                };
                if self.progress == Progress::Assisted {
                    d.last_post = Some(Instant::now());
                }
                drop(d);
                // Whatever others left while this thread held the driver.
                self.drain_kicks(false);
                return r;
            }
        }
        self.posts.post_send(wqes)?;
        self.kick(KICK_TX);
        Ok(())
    }

    /// Whether the single request `w`, posted now, is held back (see
    /// [`post_send`](Self::post_send)); counts it in the driver's held bytes if so.
    fn may_hold(&self, d: &mut Driver, w: &SendWqe) -> bool {
        if self.progress != Progress::Assisted || !d.running() || !self.send_cq.assists() {
            return false;
        }
        let gap = self.dev.batching.gap();
        if gap.is_zero() {
            return false;
        }
        let now = Instant::now();
        let quick = d.last_post.is_some_and(|t| now.saturating_duration_since(t) <= gap);
        d.streak = if quick { d.streak.saturating_add(1) } else { 0 };
        // Reads and atomics are a few bytes each, and what they ask for comes back only once
        // they are out: holding them would idle the responder.
        if w.op.awaits_response() {
            return false;
        }
        let size = wire_estimate(w);
        if d.streak < HOLD_AFTER || d.held + size >= HOLD_MAX {
            return false;
        }
        d.held += size;
        true
    }

    /// A request was held: the event loop writes it if nothing else has within
    /// [`crate::PostBatching::flush_after`].
    fn hold(&self) {
        self.holding.fetch_add(1, Ordering::AcqRel);
        self.held_total.fetch_add(1, Ordering::Relaxed);
        if self.hold_timer.load(Ordering::Acquire) != 0 {
            return;
        }
        let due = Instant::now() + self.dev.batching.flush_after();
        if self.hold_timer.compare_exchange(0, clock_ns(due).max(1), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if let Some((w, t)) = self.home().as_ref() {
                w.add_timer(due, *t);
            }
        }
    }

    /// Writes held requests now, unless another thread is driving the queue pair (it writes
    /// them when its turn ends).
    pub(crate) fn flush_held(&self) {
        if self.holding.load(Ordering::Acquire) > 0 {
            self.kick(KICK_TX);
        }
    }

    /// Requests held back now, and over the queue pair's life.
    pub(crate) fn held(&self) -> (usize, u64) {
        (self.holding.load(Ordering::Acquire), self.held_total.load(Ordering::Relaxed))
    }

    /// Negotiated parameters, once connected.
    pub(crate) fn info(&self) -> Option<ConnInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first Terminate cause that ended the connection, if one did.
    pub(crate) fn terminated(&self) -> Option<Terminated> {
        self.terminated.get().copied()
    }

    /// The local and the peer's socket address, once connected.
    pub(crate) fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.addrs.get().copied().unwrap_or((None, None))
    }

    fn push_event(&self, ev: QpEvent) {
        self.report_inner(None, Some(ev));
    }

    fn report(&self, r: Report, ev: Option<QpEvent>) {
        self.report_inner(Some(r), ev);
    }

    fn report_inner(&self, r: Option<Report>, ev: Option<QpEvent>) {
        let mut st = self.status();
        let settled = r.is_some();
        match r {
            Some(Report::Established) => st.established = true,
            Some(Report::Failed(e)) => st.failed = Some(e),
            Some(Report::Closed) => st.closed = true,
            None => {}
        }
        let notify = ev.is_some();
        if let Some(ev) = ev {
            st.events.push_back(ev);
        }
        let wakers = if settled { std::mem::take(&mut st.wakers) } else { Vec::new() };
        drop(st);
        self.status_cv.notify_all();
        for w in wakers {
            w.wake();
        }
        if notify {
            if let Some(fd) = self.events_fd.get() {
                fd.notify();
            }
        }
    }
}

/// The driver held through [`Conn::lock`]; releasing it does the work others left.
pub(crate) struct DriverGuard<'a> {
    conn: &'a Conn,
    guard: Option<MutexGuard<'a, Driver>>,
}

impl std::ops::Deref for DriverGuard<'_> {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        // Set until drop.
        self.guard.as_deref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for DriverGuard<'_> {
    fn deref_mut(&mut self) -> &mut Driver {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for DriverGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.conn.drain_kicks(false);
    }
}

impl Polled for Conn {
    fn progress(&self) -> bool {
        if self.progress == Progress::Assisted {
            self.progress_assist()
        } else {
            self.progress_manual();
            false
        }
    }
    fn wait_fd(&self) -> Option<(RawFd, bool)> {
        Conn::wait_fd(self)
    }
    fn flush_held(&self) {
        Conn::flush_held(self);
    }
}

impl Ready for Conn {
    fn on_ready(self: Arc<Self>, _: &Arc<WorkerShared>, _: Token) -> bool {
        if crate::runtime::read_closed() {
            self.peer_closed.store(true, Ordering::Release);
        }
        // The hold timer has fired (this turn writes what is held): a later hold sets another.
        // Readiness before it is due leaves it set, so holds do not set one per event.
        let due = self.hold_timer.load(Ordering::Acquire);
        if due != 0 && clock_ns(Instant::now()) >= due {
            self.hold_timer.store(0, Ordering::Release);
        }
        self.drive_from_worker()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let d = self.driver.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(d.setup, Setup::Connecting(_)) {
            if let (Some((w, t)), Some(s)) = (d.reg.take(), d.sock.as_mut()) {
                w.remove(t, s);
            }
        } else {
            // Dropping a connected queue pair closes its connection as `disconnect` does.
            d.release_socket(&self.dev);
        }
    }
}

impl Driver {
    /// Moves the connection forward: connection setup, receive, transmit, completions.
    /// Returns `true` if input remains beyond this call's budget.
    pub(crate) fn run(&mut self, qp: &Conn) -> bool {
        if let Setup::Connecting(c) = &mut self.setup {
            let step = match self.sock.as_mut() {
                Some(s) => c.advance(s, Instant::now()),
                None => return false,
            };
            match step {
                Step::Pending => return false,
                Step::Failed(e) => {
                    self.fail_connect(qp, e);
                    return false;
                }
                Step::Accepted(neg, rest) => {
                    self.setup = Setup::Done;
                    self.establish(qp, neg);
                    if !rest.is_empty() {
                        self.engine.handle_recv(&rest);
                    }
                }
            }
        }
        if !self.running() {
            return false;
        }
        let more = self.receive(qp.peer_closed.load(Ordering::Acquire));
        self.run_tx(qp);
        if self.engine.poll_interest().shutdown {
            self.close(qp);
        }
        more
    }

    /// Frames and writes what the engine has, then delivers completions and events.
    pub(crate) fn run_tx(&mut self, qp: &Conn) {
        if self.held > 0 {
            self.held = 0;
            qp.holding.store(0, Ordering::Release);
        }
        self.write_out();
        self.wake_tick();
        self.deliver(qp);
        if self.engine.poll_interest().shutdown && self.running() {
            self.close(qp);
        }
    }

    /// The idle fast path of [`QueuePair::post_send`] for one small request (see
    /// [`Qp::frame_now`]): framed into `now_buf` and written with one `write`, its completion
    /// pushed straight to the send queue's CQ. Returns `false` if the request or the queue
    /// pair does not qualify (nothing done: post it as usual).
    pub(crate) fn send_now(
        &mut self,
        qp: &Conn,
        w: &iwarp_proto::qp::SendWqe,
    ) -> std::result::Result<bool, PostReason> {
        if !self.running() || !self.ctl_out.is_empty() {
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
                tracing::debug!(parent: &qp.span, error = %e, "socket write failed");
                (0, true)
            }
        };
        self.count_written(n);
        match self.engine.sent_now(framed, &self.now_buf, n) {
            Some(c) => qp.send_cq.push(std::iter::once(c)),
            None if failed => {
                // The request is queued behind the failure and completes flushed.
                self.engine.handle_transport(TransportEvent::Failed);
                self.run_tx(qp);
            }
            None => {}
        }
        if self.engine.poll_interest().shutdown {
            // The request read from a region being deregistered, and failed the queue pair
            // (see Qp::frame_now): its flushes and events go out, the connection closes.
            self.run_tx(qp);
        }
        // As transmit does: an initiator's wake-up clock starts once its first FPDU is out.
        self.wake_tick();
        Ok(true)
    }

    /// Runs the engine's wake-up timer, if one runs: sends a due zero-length Write, and keeps
    /// a worker timer for the next one (a polled queue pair checks at every poll instead).
    fn wake_tick(&mut self) {
        if !self.engine.poll_interest().timer {
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
                // Ahead of aligned FPDUs, the MPA frame ends its segment (the first FPDU must
                // not join it).
                let r = if self.align {
                    match sys::write_marked(sock.as_raw_fd(), &self.ctl_out) {
                        Xfer::Bytes(n) => Ok(n),
                        Xfer::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
                        Xfer::Failed(e) => Err(e),
                    }
                } else {
                    sock.write(&self.ctl_out)
                };
                match r {
                    Ok(n) => {
                        self.ctl_out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.engine.handle_transport(TransportEvent::Failed),
                }
            }
            // Nothing framed and nothing to frame: the common case of a busy poll.
            let pending = self.engine.poll_interest().transmit();
            // (A socket is held here, so this is the running connection if setup is done.)
            if pending && self.ctl_out.is_empty() && matches!(self.setup, Setup::Done) {
                let fd = sock.as_raw_fd();
                loop {
                    match sys::write_framed(fd, &mut self.engine, &mut self.iov, &mut self.calls) {
                        (_, 0) => break,
                        (Xfer::Bytes(w), n) => {
                            self.count_written(w);
                            // Loop only while something is left: bytes beyond the ranges
                            // returned, or work the window held back.
                            if w < n || !self.engine.poll_interest().transmit() {
                                break;
                            }
                        }
                        (Xfer::WouldBlock, _) => break,
                        (Xfer::Failed(e), _) => {
                            tracing::debug!(error = %e, "socket write failed");
                            self.engine.handle_transport(TransportEvent::Failed);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Counts `n` bytes handed to the socket; re-reads the MSS every [`MSS_RECHECK`] bytes.
    fn count_written(&mut self, n: usize) {
        self.written += n as u64;
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
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(info) = info.as_mut() {
            if info.mss != mss {
                info.mss = mss;
                self.engine.handle_mss(mss);
            }
        }
    }

    /// Reads what the socket has, following the engine's receive plans, and stops at the first
    /// short read (the socket was empty at that moment), which saves the system call that
    /// would only return `EAGAIN`: an application polling a queue pair polls again anyway, and
    /// for the event loop Linux signals every later arrival on an edge-triggered registration
    /// (each wake-up of the socket queues the event again), so nothing is left unread.
    /// With `to_eof` (the peer's end of stream was signalled) a short read does not end the
    /// turn: the end of stream behind the last bytes gets no readiness edge of its own.
    fn receive(&mut self, to_eof: bool) -> bool {
        let Some(sock) = self.sock.as_ref() else { return false };
        let fd = sock.as_raw_fd();
        with_scratch(|scratch| sys::receive(fd, &mut self.engine, scratch, SCRATCH_LEN, RX_BUDGET, to_eof))
    }

    fn deliver(&mut self, qp: &Conn) {
        if !self.engine.poll_interest().output {
            self.deliver_late_flushes(qp);
            return;
        }
        let engine = &mut self.engine;
        if Arc::ptr_eq(&qp.send_cq, &qp.recv_cq) {
            // One queue for both (the common set-up): straight from the engine into it, under
            // one lock, in the engine's order.
            qp.send_cq.push(std::iter::from_fn(|| engine.poll_completion()));
        } else {
            // Send completions go straight in; receive completions wait for the second lock.
            let mut recv: SmallVec<[WorkCompletion; 16]> = SmallVec::new();
            qp.send_cq.push(std::iter::from_fn(|| loop {
                let c = engine.poll_completion()?;
                match c.queue {
                    Queue::Send => return Some(c),
                    Queue::Recv => recv.push(c),
                }
            }));
            // By reference: moving the array would copy all its slots.
            qp.recv_cq.push(recv.iter().copied());
        }
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                EngineEvent::Ready => qp.report(Report::Established, Some(QpEvent::Established)),
                EngineEvent::LocalError(cause) => {
                    tracing::debug!(parent: &qp.span, %cause, "terminating: protocol error");
                    let _ = qp.terminated.set(Terminated { cause, remote: false });
                    qp.push_event(QpEvent::Error { cause: Some(cause), remote: false, layout: None })
                }
                EngineEvent::RemoteTerminate { cause, layout } => {
                    tracing::debug!(parent: &qp.span, %cause, ?layout, "terminated by the peer");
                    let _ = qp.terminated.set(Terminated { cause, remote: true });
                    qp.push_event(QpEvent::Error { cause: Some(cause), remote: true, layout: Some(layout) })
                }
                EngineEvent::PeerClosed => {}
                EngineEvent::TransportError => {
                    tracing::debug!(parent: &qp.span, "connection failed (TCP error or reset)");
                    qp.push_event(QpEvent::Error { cause: None, remote: false, layout: None })
                }
                EngineEvent::Flushed => {}
            }
        }
        if self.engine.take_srq_limit_reached() {
            qp.push_event(QpEvent::SrqLimitReached);
        }
        self.deliver_late_flushes(qp);
    }

    /// Pushes the completions [`Conn::flush_later`] queued, once the engine is in error (it
    /// has then completed everything posted to it, so these follow in posting order).
    fn deliver_late_flushes(&mut self, qp: &Conn) {
        if self.engine.state() != QpState::Error {
            return;
        }
        let late = std::mem::take(&mut *qp.late_flushes.lock().unwrap_or_else(|e| e.into_inner()));
        if late.is_empty() {
            return;
        }
        qp.send_cq.push(late.iter().filter(|c| c.queue == Queue::Send).copied());
        qp.recv_cq.push(late.iter().filter(|c| c.queue == Queue::Recv).copied());
    }

    fn close(&mut self, qp: &Conn) {
        if !self.running() {
            return;
        }
        tracing::debug!(parent: &qp.span, state = ?self.engine.state(), "connection closed");
        self.release_socket(&qp.dev);
        self.deliver(qp);
        qp.report(Report::Closed, Some(QpEvent::Disconnected));
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

    /// Setup failed: the socket closes, and waiters and the event queue learn why.
    pub(crate) fn fail_connect(&mut self, qp: &Conn, err: ConnectError) {
        tracing::debug!(parent: &qp.span, error = %err, "connect failed");
        self.setup = Setup::Done;
        if let Some(mut s) = self.sock.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
            if let Some((w, t)) = self.reg.take() {
                w.remove(t, &mut s);
            }
        }
        let ev = match &err {
            ConnectError::Rejected { private_data } => QpEvent::Rejected { private_data: private_data.clone() },
            other => QpEvent::ConnectFailed(other.clone()),
        };
        qp.report(Report::Failed(err), Some(ev));
    }

    /// Full operation begins: hand the negotiated parameters to the engine.
    pub(crate) fn establish(&mut self, qp: &Conn, neg: Negotiated) {
        let mss = self.sock.as_ref().and_then(|s| socket2::SockRef::from(s).tcp_mss().ok()).unwrap_or(1460) as usize;
        let link = LinkParams::negotiated(&neg, iwarp_wire::mpa::mulpdu(mss, neg.send_markers), self.send_first);
        let initiator = neg.role == Role::Initiator;
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(ConnInfo { negotiated: neg, mss });
        if let Some(s) = &self.sock {
            let (local, peer) = (s.local_addr().ok(), s.peer_addr().ok());
            let _ = qp.addrs.set((local, peer));
            // The initiator recorded the address it connected to.
            if let (false, Some(peer)) = (initiator, peer) {
                qp.span.record("peer", tracing::field::display(peer));
            }
            tracing::debug!(parent: &qp.span, ?local, crc = link.crc, ird = link.ird, ord = link.ord, mss, "established");
        }
        let large = link.large_fpdus;
        if self.engine.establish(link).is_err() {
            return self.fail_connect(qp, ConnectError::Closed);
        }
        if self.align && !large {
            self.engine.align_to_segments(mss);
        }
        if initiator && self.wake_responder {
            self.engine.wake_silent_peer(WAKE_FIRST, WAKE_COUNT);
        }
        if qp.progress == Progress::Poll {
            // The application drives from now on.
            if let (Some((w, t)), Some(s)) = (self.reg.take(), self.sock.as_mut()) {
                w.remove(t, s);
            }
            *qp.home() = None;
            qp.send_cq.attach_polled(qp.me.clone() as std::sync::Weak<dyn Polled>);
            qp.recv_cq.attach_polled(qp.me.clone() as std::sync::Weak<dyn Polled>);
        } else if qp.progress == Progress::Assisted {
            qp.send_cq.attach_assisted(qp.me.clone() as std::sync::Weak<dyn Polled>);
            if !Arc::ptr_eq(&qp.send_cq, &qp.recv_cq) {
                qp.recv_cq.attach_assisted(qp.me.clone() as std::sync::Weak<dyn Polled>);
            }
        }
        self.run_tx(qp);
    }

    /// Align segment-sized FPDUs to TCP segments once established
    /// ([`crate::MpaOptions::align_fpdus`]); set before [`adopt`](Self::adopt).
    pub(crate) fn set_align(&mut self, on: bool) {
        self.align = on;
    }

    /// Passive side: adopt an accepted socket whose Reply is `reply`.
    pub(crate) fn adopt(
        &mut self,
        qp: &Conn,
        sock: TcpStream,
        reg: (Arc<WorkerShared>, Token),
        reply: Vec<u8>,
        neg: Negotiated,
        send_first: bool,
    ) {
        self.sock = Some(sock);
        self.send_first = send_first;
        *qp.home() = Some((Arc::clone(&reg.0), reg.1));
        self.reg = Some(reg);
        self.ctl_out = reply;
        self.setup = Setup::Done;
        self.establish(qp, neg);
    }

    /// Not yet connecting or connected (a queue pair is connected once, by `connect` or
    /// `accept`).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.setup, Setup::Unstarted)
    }

    /// Driven by the application ([`Progress::Poll`]) once established.
    fn is_polled(&self, qp: &Conn) -> bool {
        qp.progress == Progress::Poll && self.running()
    }

    /// Set up and still holding its connection.
    fn running(&self) -> bool {
        matches!(self.setup, Setup::Done) && self.sock.is_some()
    }
}

/// The bytes a request puts on the wire, roughly: its payload if it carries one (Sends and
/// Writes), plus room for headers and CRC.
fn wire_estimate(w: &SendWqe) -> usize {
    use iwarp_proto::qp::SendOp;
    let payload = match w.op {
        SendOp::Send | SendOp::SendWithInvalidate(_) | SendOp::Write(_) | SendOp::WriteWithImmediate(..) => {
            usize::try_from(w.payload.len()).unwrap_or(usize::MAX)
        }
        _ => 0,
    };
    payload.saturating_add(64)
}

/// `t` in nanoseconds since the first call (a clock that fits an atomic).
fn clock_ns(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}
