//! The passive half of connection setup, in the style of rdma_cm: listen, then accept or
//! reject each connection request (with private data, IRD/ORD and the MPA options of RFC 5044
//! and RFC 6581); on a shared port, also tell plain TCP clients from iWARP ones.

use super::{read_frame, FrameRead};
use crate::error::{AcceptError, Error, ListenError, Result};
use crate::params::{ConnParams, MpaOptions};
use crate::qp::QueuePair;
use crate::runtime::{Entry, Ready, WorkerShared};
use crate::shared::DeviceInner;
use crate::sys::EventFd;
use iwarp_proto::cm::{ConnectRequest as CmRequest, MpaConfig, Responder};
use iwarp_wire::mpa::rr::{match_key, FrameKind, KeyMatch, KEY_LEN};
use iwarp_wire::mpa::RtrTypes;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use iwarp_proto::cm::LINUX_MAX_PRIVATE_DATA;

/// How a listener treats what connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenMode {
    /// iWARP only: every connection must start with an MPA Request.
    Iwarp,
    /// iWARP and plain TCP on one port: a connection whose first bytes are the 16-byte MPA
    /// Request key is iWARP; anything else is handed over as a [`PlainStream`].
    Shared(SharedOptions),
}

/// How a shared listener tells iWARP from plain TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedOptions {
    /// A client that has sent no byte (or only a prefix of the MPA key) after this long is
    /// plain TCP: protocols where the server speaks first send nothing.
    pub plain_after: Duration,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions { plain_after: Duration::from_millis(250) }
    }
}

/// What a shared listener accepted.
#[derive(Debug)]
pub enum Incoming {
    /// An iWARP connection request.
    Iwarp(ConnectRequest),
    /// A plain TCP connection.
    Plain(PlainStream),
}

/// A plain TCP connection accepted on a shared port. The bytes the listener read while telling
/// it from iWARP come first when reading; nothing is lost or reordered.
#[derive(Debug)]
pub struct PlainStream {
    prefix: Vec<u8>,
    pos: usize,
    stream: std::net::TcpStream,
    peer: SocketAddr,
}

impl PlainStream {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
    /// The underlying socket (in blocking mode). Bytes already read by the listener are not in
    /// it: see [`into_parts`](Self::into_parts).
    pub fn get_ref(&self) -> &std::net::TcpStream {
        &self.stream
    }
    /// The bytes read but not yet consumed, and the socket.
    pub fn into_parts(self) -> (Vec<u8>, std::net::TcpStream) {
        (self.prefix[self.pos..].to_vec(), self.stream)
    }
}

impl Read for PlainStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.pos);
            buf[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.stream.read(buf)
    }
}

impl Write for PlainStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

pub(crate) struct ListenerInner {
    dev: Arc<DeviceInner>,
    sock: Mutex<Option<TcpListener>>,
    reg: Mutex<Option<(Arc<WorkerShared>, Token)>>,
    local: SocketAddr,
    queue: Mutex<VecDeque<Incoming>>,
    cv: Condvar,
    /// Tasks waiting for something to be queued ([`Listener::poll_take`]), woken by every push
    /// and by [`Listener::close`].
    wakers: Mutex<Vec<Waker>>,
    fd: EventFd,
    mpa: Mutex<MpaOptions>,
    shared: Option<SharedOptions>,
    /// [`Listener::close`] was called: nothing more is queued.
    closed: AtomicBool,
    /// The last `accept` failed (warned once per run of failures).
    accept_failing: AtomicBool,
    /// [`Listener`] handles alive: the last one dropped closes the listener, whatever
    /// references to this the runtime holds for a moment.
    handles: AtomicUsize,
}

/// Listens for iWARP connection requests (and, on a shared port, plain TCP connections).
///
/// Clones share one listener. Dropping the last clone [closes](Self::close) it at once.
#[derive(Debug)]
pub struct Listener {
    inner: Arc<ListenerInner>,
}

impl Clone for Listener {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Listener { inner: Arc::clone(&self.inner) }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The event loop may hold the listener itself for a moment (a turn that accepts or
        // queues a request, preempted on a busy machine): the port must not wait for it.
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }
}

impl std::fmt::Debug for ListenerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerInner").field("local", &self.local).finish()
    }
}

/// Binds and listens on `addr`: a real host socket, so iWARP and plain TCP share one port space.
pub(crate) fn bind_socket(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, ListenError> {
    let s =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    // SO_REUSEADDR lets a closed listener's port be bound again while old connections linger
    // in TIME_WAIT; it never lets two listeners share a port (that would be SO_REUSEPORT).
    s.set_reuse_address(true)?;
    if let Err(e) = s.bind(&addr.into()) {
        return Err(if e.kind() == io::ErrorKind::AddrInUse { ListenError::AddrInUse(addr) } else { e.into() });
    }
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Listener {
    pub(crate) fn bind(
        dev: &Arc<DeviceInner>,
        addr: SocketAddr,
        backlog: u32,
        mode: ListenMode,
    ) -> Result<Listener, ListenError> {
        let std_listener = bind_socket(addr, backlog)?;
        let local = std_listener.local_addr()?;
        let mut sock = TcpListener::from_std(std_listener);
        let mpa = MpaOptions { timeout: dev.cfg.mpa_timeout, ..MpaOptions::default() };
        let inner = Arc::new(ListenerInner {
            dev: Arc::clone(dev),
            sock: Mutex::new(None),
            reg: Mutex::new(None),
            local,
            queue: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            fd: EventFd::new()?,
            mpa: Mutex::new(mpa),
            shared: match mode {
                ListenMode::Iwarp => None,
                ListenMode::Shared(o) => Some(o),
            },
            closed: AtomicBool::new(false),
            accept_failing: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
        });
        let worker = Arc::clone(&dev.pick_worker().shared);
        let token =
            worker.add(Entry::Held(Arc::downgrade(&inner) as Weak<dyn Ready>), &mut sock, Interest::READABLE)?;
        *inner.sock.lock().unwrap_or_else(|e| e.into_inner()) = Some(sock);
        *inner.reg.lock().unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&worker), token));
        // Connections may have queued before registration.
        worker.schedule(token);
        Ok(Listener { inner })
    }

    /// The bound address (with the port the host chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Sets the MPA options used for connections accepted from now on (CRC preference, markers,
    /// peer-to-peer RTR types accepted, RFC 7306, Request timeout); the parameters given to
    /// [`ConnectRequest::accept`] can add to them.
    pub fn set_mpa_options(&self, opts: MpaOptions) {
        *self.inner.mpa.lock().unwrap_or_else(|e| e.into_inner()) = opts;
    }

    /// `true` if this listener also takes plain TCP connections.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// Stops listening now: when this returns the socket is closed and its port can be bound
    /// again, even while other clones of this listener live on (the event loop holds one for
    /// a moment while it queues a request; an application thread may hold another). Dropping
    /// the last clone does the same (the event loop's hold does not count). Requests queued
    /// and not yet taken are dropped, which closes their connections, and so are those still
    /// in their MPA exchange when it ends. Calling it again does nothing.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        let sock = inner.sock.lock().unwrap_or_else(|e| e.into_inner()).take();
        let reg = inner.reg.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut s) = sock {
            if let Some((w, t)) = reg {
                w.remove(t, &mut s);
            }
            drop(s);
        }
        let queued: Vec<Incoming> = inner.queue.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        inner.fd.drain();
        inner.cv.notify_all();
        inner.wake_all();
        drop(queued);
    }

    /// The next iWARP connection request, waiting up to `timeout` (`None`: forever). On a
    /// shared listener, plain connections stay queued for [`get_plain`](Self::get_plain).
    ///
    /// # Errors
    /// [`Error::TimedOut`].
    pub fn get_request(&self, timeout: Option<Duration>) -> Result<ConnectRequest> {
        match self.take(timeout, |i| matches!(i, Incoming::Iwarp(_)))? {
            Incoming::Iwarp(r) => Ok(r),
            Incoming::Plain(_) => unreachable!("filtered"),
        }
    }

    /// The next iWARP connection request, if one is queued.
    pub fn try_get_request(&self) -> Option<ConnectRequest> {
        self.get_request(Some(Duration::ZERO)).ok()
    }

    /// The next plain TCP connection (shared listeners), waiting up to `timeout`.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; [`Error::InvalidState`] on a listener that is not shared.
    pub fn get_plain(&self, timeout: Option<Duration>) -> Result<PlainStream> {
        if self.inner.shared.is_none() {
            return Err(Error::InvalidState("not a shared listener"));
        }
        match self.take(timeout, |i| matches!(i, Incoming::Plain(_)))? {
            Incoming::Plain(p) => Ok(p),
            Incoming::Iwarp(_) => unreachable!("filtered"),
        }
    }

    /// The next connection of either kind, in arrival order, waiting up to `timeout`.
    ///
    /// # Errors
    /// [`Error::TimedOut`].
    pub fn get_incoming(&self, timeout: Option<Duration>) -> Result<Incoming> {
        self.take(timeout, |_| true)
    }

    /// The next connection of either kind, if one is queued (for event loops: the listener's
    /// descriptor is readable while something is queued).
    pub fn try_get_incoming(&self) -> Option<Incoming> {
        self.get_incoming(Some(Duration::ZERO)).ok()
    }

    /// `true` once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The first queued item `want` accepts, without waiting: `Pending` registers the task to
    /// be woken when something is queued or the listener closes. A closed listener is
    /// [`Error::InvalidState`].
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, want: impl Fn(&Incoming) -> bool) -> Poll<Result<Incoming>> {
        // The waker is registered before looking, so a push between the look and the return
        // wakes it.
        {
            let mut w = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !w.iter().any(|w| w.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
        }
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = q.iter().position(&want) {
            let item = q.remove(pos).expect("position is in range");
            self.inner.fd.drain();
            if !q.is_empty() {
                self.inner.fd.notify();
            }
            return Poll::Ready(Ok(item));
        }
        if self.is_closed() {
            return Poll::Ready(Err(Error::InvalidState("listener closed")));
        }
        Poll::Pending
    }

    fn take(&self, timeout: Option<Duration>, want: impl Fn(&Incoming) -> bool) -> Result<Incoming> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(pos) = q.iter().position(&want) {
                let item = q.remove(pos).expect("position is in range");
                self.inner.fd.drain();
                if !q.is_empty() {
                    self.inner.fd.notify();
                }
                return Ok(item);
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => l,
                    _ => return Err(Error::TimedOut),
                },
                None => Duration::from_secs(3600),
            };
            q = self.inner.cv.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl AsRawFd for Listener {
    /// Readable while connection requests are queued.
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

impl AsFd for Listener {
    /// Readable while connection requests are queued (see [`AsRawFd`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl Drop for ListenerInner {
    fn drop(&mut self) {
        let reg = self.reg.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some((w, t)), Some(s)) = (reg, self.sock.get_mut().unwrap_or_else(|e| e.into_inner()).as_mut()) {
            w.remove(t, s);
        }
    }
}

impl Ready for ListenerInner {
    fn on_ready(self: Arc<Self>, worker: &Arc<WorkerShared>, token: Token) -> bool {
        if !self.accept_all() {
            // Readiness is edge-triggered: connections left in the kernel's queue would wait
            // for the next one to arrive. Try again shortly.
            worker.add_timer(Instant::now() + ACCEPT_RETRY, token);
        }
        false
    }
}

/// How soon a listener tries again after `accept` failed for want of resources (descriptors,
/// memory).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

impl Ready for PendingConn {
    fn on_ready(self: Arc<Self>, _: &Arc<WorkerShared>, _: Token) -> bool {
        self.read_request();
        false
    }
}

impl ListenerInner {
    /// Accepts every pending TCP connection; each starts waiting for its MPA Request. `false`
    /// if `accept` failed with connections possibly still queued (out of descriptors or
    /// memory): the caller tries again later.
    fn accept_all(self: Arc<Self>) -> bool {
        loop {
            let r = {
                let g = self.sock.lock().unwrap_or_else(|e| e.into_inner());
                match g.as_ref() {
                    Some(s) => s.accept(),
                    None => return true,
                }
            };
            match r {
                Ok((stream, peer)) => {
                    self.accept_failing.store(false, Ordering::Relaxed);
                    if let Err(e) = self.start_pending(stream, peer) {
                        tracing::warn!(error = %e, "dropping an accepted connection");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                // A connection reset while queued: the next one may be fine.
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued in the
                    // kernel until this process has the resources to take it.
                    if !self.accept_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "accept failed; retrying until it succeeds");
                    }
                    return false;
                }
            }
        }
    }

    fn start_pending(self: &Arc<Self>, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let opts = self.mpa.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cfg = MpaConfig {
            revision: 2,
            crc: opts.crc,
            markers: opts.markers,
            peer_to_peer: opts.peer_to_peer,
            rfc7306: opts.rfc7306,
            large_fpdus: opts.large_fpdus,
            max_rd_atomic: self.dev.cfg.max_rd_atomic,
            timeout: opts.timeout,
        };
        let now = Instant::now();
        let cm = Responder::new(cfg, now);
        let deadline = cm.poll_timeout();
        let sniff = self.shared.map(|o| Sniff { until: now + o.plain_after, bytes: Vec::new() });
        let sniff_until = sniff.as_ref().map(|s| s.until);
        let pending = Arc::new(PendingConn {
            listener: Arc::downgrade(self),
            peer,
            local: stream.local_addr().ok(),
            state: Mutex::new(PendingState { sock: None, reg: None, cm, queued: false, closed: false, sniff }),
        });
        let worker = Arc::clone(&self.dev.pick_worker().shared);
        // Writable too: once accepted, the same registration drives a queue pair, whose
        // transmit resumes on the writable edge after the socket buffer was full.
        let token = worker.add(
            Entry::Owned(Arc::clone(&pending) as Arc<dyn Ready>),
            &mut stream,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        {
            let mut st = pending.state.lock().unwrap_or_else(|e| e.into_inner());
            st.sock = Some(stream);
            st.reg = Some((Arc::clone(&worker), token));
        }
        if let Some(t) = deadline {
            worker.add_timer(t, token);
        }
        if let Some(t) = sniff_until {
            worker.add_timer(t, token);
        }
        worker.schedule(token);
        Ok(())
    }

    fn push(&self, r: Incoming) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::Acquire) {
            // Closed: the request is dropped (its connection closed) outside the lock.
            drop(q);
            drop(r);
            return;
        }
        q.push_back(r);
        drop(q);
        self.cv.notify_all();
        self.fd.notify();
        self.wake_all();
    }

    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

struct PendingState {
    sock: Option<TcpStream>,
    reg: Option<(Arc<WorkerShared>, Token)>,
    cm: Responder,
    queued: bool,
    closed: bool,
    /// On a shared port: still telling iWARP from plain TCP.
    sniff: Option<Sniff>,
}

/// A shared port's look at a new connection's first bytes.
struct Sniff {
    /// Plain TCP if still undecided at this time.
    until: Instant,
    /// Bytes read so far (handed on whichever way it goes).
    bytes: Vec<u8>,
}

/// A TCP connection waiting for (or holding) its MPA Request, before the application accepts.
pub(crate) struct PendingConn {
    listener: Weak<ListenerInner>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    state: Mutex<PendingState>,
}

impl PendingState {
    fn close(&mut self) {
        self.closed = true;
        if let Some(mut s) = self.sock.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
            if let Some((w, t)) = self.reg.take() {
                w.remove(t, &mut s);
            }
        }
    }
}

/// What a shared port has seen of a new connection.
enum Sniffed {
    /// Not enough to tell yet.
    Undecided,
    /// The MPA Request key: iWARP (the bytes read so far belong to the Request).
    Iwarp(Vec<u8>),
    /// Anything else, or silence: plain TCP.
    Plain,
}

impl PendingConn {
    /// On a shared port: reads at most the 16 key bytes and decides.
    fn sniff(&self, st: &mut PendingState, now: Instant) -> Sniffed {
        let Some(sn) = st.sniff.as_mut() else { return Sniffed::Iwarp(Vec::new()) };
        let Some(sock) = st.sock.as_mut() else { return Sniffed::Undecided };
        loop {
            match match_key(&sn.bytes, FrameKind::Request) {
                KeyMatch::Full => return Sniffed::Iwarp(std::mem::take(&mut sn.bytes)),
                // A byte that differs from the key: plain TCP, even if it started like MPA.
                KeyMatch::Mismatch => return Sniffed::Plain,
                KeyMatch::Prefix => {}
            }
            let mut buf = [0u8; KEY_LEN];
            let want = KEY_LEN - sn.bytes.len();
            match sock.read(&mut buf[..want]) {
                // Closed before deciding: hand it over as plain with what it sent.
                Ok(0) => return Sniffed::Plain,
                Ok(n) => sn.bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Silence (or a stalled partial key) past the limit: a server-speaks-first
                    // protocol, plain TCP.
                    return if now >= sn.until { Sniffed::Plain } else { Sniffed::Undecided };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Sniffed::Plain,
            }
        }
    }

    /// Hands a shared port's plain connection to the application.
    fn hand_over_plain(&self, st: &mut PendingState) {
        st.closed = true;
        let bytes = st.sniff.take().map(|s| s.bytes).unwrap_or_default();
        let Some(mut sock) = st.sock.take() else { return };
        if let Some((w, t)) = st.reg.take() {
            w.remove(t, &mut sock);
        }
        let stream: std::net::TcpStream = sock.into();
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        if let Some(l) = self.listener.upgrade() {
            l.push(Incoming::Plain(PlainStream { prefix: bytes, pos: 0, stream, peer: self.peer }));
        }
    }

    /// Reads the MPA Request (on a shared port, first tells iWARP from plain TCP).
    fn read_request(self: Arc<Self>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed || st.sock.is_none() {
            return;
        }
        let now = Instant::now();
        let mut first = Vec::new();
        if st.sniff.is_some() {
            match self.sniff(&mut st, now) {
                Sniffed::Undecided => return,
                Sniffed::Plain => return self.hand_over_plain(&mut st),
                Sniffed::Iwarp(bytes) => {
                    st.sniff = None;
                    first = bytes;
                }
            }
        }
        if st.queued {
            // The Request is with the application: read nothing more (what follows belongs
            // to the queue pair that accepts it), but notice the peer going away.
            let gone = match st.sock.as_ref().map(|s| s.peek(&mut [0u8; 1])) {
                Some(Ok(n)) => n == 0,
                Some(Err(e)) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
                None => true,
            };
            if gone {
                st.close();
            }
            return;
        }
        // RFC 5044 §7.1.2: the Request must come within the responder's timeout.
        if let Err(e) = st.cm.handle_timeout(now) {
            tracing::debug!(peer = %self.peer, error = %e, "MPA Request timed out");
            return st.close();
        }
        let PendingState { sock, cm, .. } = &mut *st;
        let Some(sock) = sock.as_mut() else { return };
        match read_frame(sock, cm, &first) {
            FrameRead::Pending => {}
            FrameRead::Done(req, _) => {
                st.queued = true;
                match self.listener.upgrade() {
                    Some(l) => {
                        drop(st);
                        l.push(Incoming::Iwarp(ConnectRequest { pending: Arc::clone(&self), req }));
                    }
                    None => st.close(),
                }
            }
            FrameRead::Invalid(e) => {
                // RFC 5044 §7.1.2: a badly formatted Request closes the connection.
                tracing::debug!(peer = %self.peer, error = %e, "bad MPA Request");
                st.close();
            }
            FrameRead::Closed | FrameRead::Reset | FrameRead::Failed(_) => st.close(),
        }
    }
}

/// A connection request from a peer. Accept it onto a queue pair or reject it; dropping it
/// closes the connection.
pub struct ConnectRequest {
    pending: Arc<PendingConn>,
    req: CmRequest,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest").field("peer", &self.pending.peer).field("req", &self.req).finish()
    }
}

impl ConnectRequest {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.pending.peer
    }
    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.pending.local
    }
    /// The initiator's private data.
    pub fn private_data(&self) -> &[u8] {
        &self.req.private_data
    }
    /// The initiator's IRD (responder_resources), for revision 2.
    pub fn ird(&self) -> Option<u16> {
        self.req.ird()
    }
    /// The initiator's ORD (initiator_depth), for revision 2.
    pub fn ord(&self) -> Option<u16> {
        self.req.ord()
    }
    /// The MPA revision of the Request.
    pub fn revision(&self) -> u8 {
        self.req.revision
    }
    /// The initiator asked for CRC.
    pub fn crc(&self) -> bool {
        self.req.crc
    }
    /// The initiator asked for markers.
    pub fn markers(&self) -> bool {
        self.req.markers
    }
    /// Peer-to-peer mode with the RTR types the initiator offers.
    pub fn peer_to_peer(&self) -> Option<RtrTypes> {
        self.req.enhanced.filter(|e| e.peer_to_peer).map(|e| e.rtr)
    }
    /// The initiator offered RFC 7306.
    pub fn rfc7306(&self) -> bool {
        self.req.rfc7306
    }

    /// The initiator offered FPDUs larger than the MSS (only this stack does).
    pub fn large_fpdus(&self) -> bool {
        self.req.large_fpdus
    }

    /// Accepts onto `qp` (which must be idle; post its receives first): sends the MPA Reply
    /// with `params` (private data, IRD/ORD). The MPA options of `params` add to the
    /// listener's: CRC or RFC 7306 declined by either is declined, markers asked for by
    /// either are asked for, and RTR types given in `params` replace the listener's. The
    /// queue pair reports [`crate::QpEvent::Established`] when usable.
    ///
    /// # Errors
    /// [`AcceptError::QpInUse`] if `qp` was connected before; [`AcceptError::PeerGone`] if the
    /// peer went away; [`AcceptError::Mpa`] if the private data is too long;
    /// [`AcceptError::Io`] if the socket refuses the [`ConnParams::liveness`] settings.
    pub fn accept(self, qp: &QueuePair, params: &ConnParams) -> Result<(), AcceptError> {
        let mut st = self.pending.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed || st.sock.is_none() {
            return Err(AcceptError::PeerGone);
        }
        let conn = &qp.inner;
        let mut d = conn.lock();
        if !d.is_idle() {
            return Err(AcceptError::QpInUse);
        }
        {
            // The listener's options (already in the config) stand unless `params` adds to
            // them: either may decline CRC, RFC 7306 or large FPDUs, or ask for markers.
            let c = st.cm.config_mut();
            c.crc &= params.mpa.crc;
            c.markers |= params.mpa.markers;
            if params.mpa.peer_to_peer.is_some() {
                c.peer_to_peer = params.mpa.peer_to_peer;
            }
            c.rfc7306 &= params.mpa.rfc7306;
            c.large_fpdus &= params.mpa.large_fpdus;
        }
        // Dead-peer detection from here on (until now the MPA deadline stood for it).
        if let Some(s) = st.sock.as_ref() {
            params.liveness.apply(socket2::SockRef::from(s))?;
        }
        let (reply, neg) = st
            .cm
            .accept(params.responder_resources, params.initiator_depth, &params.private_data)
            .map_err(AcceptError::Mpa)?;
        let sock = st.sock.take().ok_or(AcceptError::PeerGone)?;
        let (worker, token) = st.reg.take().ok_or(AcceptError::PeerGone)?;
        st.closed = true;
        drop(st);
        worker.retarget(token, conn.entry());
        d.engine.set_recv_wait(params.recv_wait);
        d.set_align(params.mpa.align_fpdus);
        d.adopt(conn, sock, (worker, token), reply, neg, params.responder_sends_first);
        Ok(())
    }

    /// Rejects with `private_data`: the MPA Reply with the R flag goes out, then the connection
    /// closes gracefully. Never waits: what the socket does not take at once (it has room for
    /// a Reply on any fresh connection) is sent by the event loop, which then closes the
    /// connection after the peer's FIN, as it does for a disconnected queue pair.
    ///
    /// # Errors
    /// [`AcceptError::Mpa`] if the private data is too long; [`AcceptError::Io`] if the
    /// Reply cannot be sent (the peer went away).
    pub fn reject(self, private_data: &[u8]) -> Result<(), AcceptError> {
        let mut st = self.pending.state.lock().unwrap_or_else(|e| e.into_inner());
        let reply = st.cm.reject(private_data).map_err(AcceptError::Mpa)?;
        if st.closed {
            return Err(io::Error::from(io::ErrorKind::NotConnected).into());
        }
        let Some(mut sock) = st.sock.take() else {
            st.close();
            return Err(io::Error::from(io::ErrorKind::NotConnected).into());
        };
        st.closed = true;
        let reg = st.reg.take();
        drop(st);
        let written = loop {
            match sock.write(&reply) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match written {
            Ok(n) => {
                match reg {
                    Some((w, t)) => crate::runtime::linger_after(&w, t, sock, reply[n..].to_vec()),
                    // (The socket and its registration are set and taken together.)
                    None => {
                        let _ = sock.shutdown(std::net::Shutdown::Write);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let _ = sock.shutdown(std::net::Shutdown::Both);
                if let Some((w, t)) = reg {
                    w.remove(t, &mut sock);
                }
                Err(e.into())
            }
        }
    }
}

impl Drop for ConnectRequest {
    fn drop(&mut self) {
        let mut st = self.pending.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.closed {
            st.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Device, DeviceConfig};
    use std::net::TcpListener as PlainListener;
    use std::sync::Arc;

    #[test]
    fn dropping_the_last_handle_frees_the_port_while_the_event_loop_holds_the_listener() {
        let dev = Device::open(DeviceConfig::default()).expect("device");
        let l = dev.listen("127.0.0.1:0".parse().expect("address"), 4).expect("listen");
        let addr = l.local_addr();
        // What a turn of the event loop holds while it accepts or queues a request.
        let held = Arc::clone(&l.inner);
        let other = l.clone();
        drop(l);
        assert!(PlainListener::bind(addr).is_err(), "a clone lives: the port is still listened on");
        drop(other);
        PlainListener::bind(addr).expect("the last handle is gone: the port is free");
        assert!(held.closed.load(std::sync::atomic::Ordering::Acquire));
        drop(held);
    }
}
