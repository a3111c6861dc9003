//! The connection manager behind librdmacm's functions, in safe Rust: event channels, the
//! identifiers (`rdma_cm_id`) and their states, and the one thread that turns the stack's
//! listener and queue pair events into rdma_cm events.
//!
//! An identifier is a C structure `ffi` allocated; its address is its key here, as with the
//! verbs objects in `state`. Each identifier reports to one channel. A channel is a queue of
//! events and a socket pair: one byte is written per queued event, so its descriptor (the
//! other end) is readable exactly while events wait, and `rdma_get_cm_event` follows the
//! descriptor's blocking flag as rdma-core's does (it waits, or fails with `EAGAIN`).
//!
//! The watcher thread (`iwarp-cm`) waits with epoll (through mio) on the descriptors the
//! stack offers: a listener's is readable while connection requests are queued, a queue
//! pair's while it has events. Requests become CONNECT_REQUEST events with a new identifier;
//! a queue pair's events go to the identifier that connected it (ESTABLISHED, REJECTED,
//! UNREACHABLE, CONNECT_ERROR, DISCONNECTED), and its errors also to the verbs context's
//! asynchronous queue (`ibv_get_async_event`), whether or not an identifier owns it.

// Matches use the C constants under bindgen's names.
#![allow(non_upper_case_globals)]

use crate::abi::cma::*;
use crate::abi::*;
use crate::state::{self, Addr, AsyncEvent, Errno, Res};
use iwarp::{ConnParams, ConnectError, ConnectRequest, Listener, QpEvent, QueuePair, Role};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// An event before it is handed out as a `struct rdma_cm_event`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Event {
    pub(crate) id: Addr,
    pub(crate) listen_id: Addr,
    /// `enum rdma_cm_event_type`.
    pub(crate) kind: u32,
    pub(crate) status: i32,
    pub(crate) private_data: Vec<u8>,
    pub(crate) responder_resources: u8,
    pub(crate) initiator_depth: u8,
    /// Addresses to write into the identifier's route when the event is handed out (the
    /// moment rdma-core updates them too).
    pub(crate) route: Option<(Option<SocketAddr>, Option<SocketAddr>)>,
}

/// An event channel.
pub(crate) struct Channel {
    tx: UnixStream,
    /// The end whose descriptor the application gets.
    pub(crate) rx: UnixStream,
    queue: Mutex<VecDeque<Event>>,
    queued: Condvar,
    /// Identifiers reporting to this channel.
    users: AtomicUsize,
}

impl Channel {
    pub(crate) fn new() -> Res<Channel> {
        let (tx, rx) = UnixStream::pair().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
        // The watcher must never wait for an application that does not read its channel.
        tx.set_nonblocking(true).map_err(|_| Errno(libc::EMFILE))?;
        Ok(Channel { tx, rx, queue: Mutex::new(VecDeque::new()), queued: Condvar::new(), users: AtomicUsize::new(0) })
    }

    fn push(&self, ev: Event) {
        // The byte is written under the queue's lock, as `next` takes it: the descriptor is
        // readable exactly while events wait.
        let mut q = lock(&self.queue);
        q.push_back(ev);
        let _ = (&self.tx).write(&[1]);
        drop(q);
        self.queued.notify_all();
    }

    /// Consumes one byte of the descriptor (never waiting), for an event taken or dropped.
    fn take_byte(&self) {
        let mut b = [MaybeUninit::<u8>::uninit()];
        let _ = socket2::SockRef::from(&self.rx).recv_with_flags(&mut b, libc::MSG_DONTWAIT);
    }

    /// The next event: waits for one unless the descriptor was made non-blocking (then
    /// `EAGAIN` when none waits), as `rdma_get_cm_event` does.
    pub(crate) fn next(&self) -> Res<Event> {
        let nonblocking = socket2::SockRef::from(&self.rx).nonblocking().unwrap_or(false);
        let mut q = lock(&self.queue);
        loop {
            if let Some(ev) = q.pop_front() {
                self.take_byte();
                return Ok(ev);
            }
            if nonblocking {
                return Err(Errno::AGAIN);
            }
            q = self.queued.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Drops the queued events of an identifier; returns them.
    fn remove_events_of(&self, id: Addr) -> Vec<Event> {
        let mut q = lock(&self.queue);
        let (gone, keep): (Vec<Event>, Vec<Event>) = q.drain(..).partition(|e| e.id == id);
        q.extend(keep);
        for _ in &gone {
            self.take_byte();
        }
        gone
    }
}

/// Where an identifier is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Bound,
    AddrResolved,
    RouteResolved,
    Listening,
    /// A passive identifier made for a connection request, not yet answered.
    ConnectRequest,
    Connecting,
    Accepting,
    Connected,
    Disconnecting,
    Disconnected,
    /// Rejected, refused or failed: nothing more happens on it.
    Failed,
}

/// An identifier's state.
pub(crate) struct IdState {
    /// Its channel's C address.
    pub(crate) channel: Addr,
    /// A private channel made for a synchronous identifier (created with no channel).
    pub(crate) sync: bool,
    /// The application's `context` pointer, handed to identifiers made for its requests.
    pub(crate) context: usize,
    pub(crate) phase: Phase,
    pub(crate) src: Option<SocketAddr>,
    pub(crate) dst: Option<SocketAddr>,
    /// The port `rdma_bind_addr` took, held until listening or connecting uses it.
    reserved: Option<socket2::Socket>,
    listener: Option<(Listener, usize)>,
    request: Option<ConnectRequest>,
    /// The connection request's IRD and ORD (passive identifiers).
    peer_ird: u16,
    peer_ord: u16,
    /// The verbs queue pair the connection runs on.
    pub(crate) qp: Option<Addr>,
    /// Events handed out and not yet acknowledged.
    unacked: usize,
    destroyed: bool,
    /// `rdma_set_local_ece`'s vendor id and options (kept and reported; nothing on iWARP
    /// carries them).
    pub(crate) local_ece: Option<(u32, u32)>,
    /// What `rdma_create_qp` made besides the queue pair (completion queues and channels),
    /// destroyed by `rdma_destroy_qp`; and what `rdma_create_ep` keeps for `rdma_get_request`.
    pub(crate) extra: Extra,
}

/// C objects an identifier made or keeps, by address.
#[derive(Debug, Default, Clone)]
pub(crate) struct Extra {
    pub(crate) cqs: Vec<Addr>,
    pub(crate) comp_channels: Vec<Addr>,
    /// `rdma_create_ep`'s queue pair attributes for passive endpoints, applied to each
    /// request `rdma_get_request` returns.
    pub(crate) qp_init_attr: Option<QpInitCopy>,
    /// `rdma_create_ep`'s protection domain for passive endpoints.
    pub(crate) pd: Addr,
    /// `rdma_create_ep`'s private data for `rdma_connect` (from `ai_connect`).
    pub(crate) connect_data: Vec<u8>,
}

/// A copy of a `struct ibv_qp_init_attr`, its pointers kept as addresses (they are handles
/// the verbs functions look up before use).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QpInitCopy {
    pub(crate) qp_context: usize,
    pub(crate) send_cq: Addr,
    pub(crate) recv_cq: Addr,
    pub(crate) srq: Addr,
    pub(crate) cap: ibv_qp_cap,
    pub(crate) qp_type: u32,
    pub(crate) sq_sig_all: i32,
}

pub(crate) struct CmId {
    st: Mutex<IdState>,
}

impl CmId {
    pub(crate) fn state(&self) -> MutexGuard<'_, IdState> {
        lock(&self.st)
    }
}

#[derive(Default)]
struct Cm {
    channels: HashMap<Addr, Arc<Channel>>,
    ids: HashMap<Addr, Arc<CmId>>,
    /// Identifiers destroyed with events still handed out: freed at the last acknowledgement.
    zombies: HashMap<Addr, Arc<CmId>>,
    /// Handed-out events: their identifier.
    events: HashMap<Addr, Addr>,
    /// Verbs queue pairs connected by an identifier.
    qp_owner: HashMap<Addr, Addr>,
}

static CM: Mutex<Option<Cm>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn with<T>(f: impl FnOnce(&mut Cm) -> T) -> T {
    let mut g = lock(&CM);
    f(g.get_or_insert_with(Cm::default))
}

pub(crate) fn insert_channel(addr: Addr, ch: Channel) {
    with(|c| c.channels.insert(addr, Arc::new(ch)));
}

pub(crate) fn channel(addr: Addr) -> Res<Arc<Channel>> {
    if addr == 0 {
        return Err(Errno::INVAL);
    }
    with(|c| c.channels.get(&addr).cloned()).ok_or(Errno::INVAL)
}

/// Removes a channel no identifier uses (`EBUSY` otherwise); the caller frees it.
pub(crate) fn remove_channel(addr: Addr) -> Res<()> {
    with(|c| {
        let ch = c.channels.get(&addr).ok_or(Errno::INVAL)?;
        if ch.users.load(Ordering::Acquire) > 0 {
            return Err(Errno::BUSY);
        }
        c.channels.remove(&addr);
        Ok(())
    })
}

pub(crate) fn id(addr: Addr) -> Res<Arc<CmId>> {
    if addr == 0 {
        return Err(Errno::INVAL);
    }
    with(|c| c.ids.get(&addr).cloned()).ok_or(Errno::INVAL)
}

fn new_state(channel: Addr, sync: bool, context: usize) -> IdState {
    IdState {
        channel,
        sync,
        context,
        phase: Phase::Idle,
        src: None,
        dst: None,
        reserved: None,
        listener: None,
        request: None,
        peer_ird: 0,
        peer_ord: 0,
        qp: None,
        unacked: 0,
        destroyed: false,
        local_ece: None,
        extra: Extra::default(),
    }
}

/// Records a new identifier at `addr` (its C structure allocated by the caller) on the
/// channel at `channel`.
pub(crate) fn insert_id(addr: Addr, channel: Addr, sync: bool, context: usize, ps: u32) -> Res<()> {
    if ps != rdma_port_space_RDMA_PS_TCP {
        // iWARP has reliable connections only: no UD port spaces (RDMA_PS_UDP, IPOIB), and
        // RDMA_PS_IB addresses are InfiniBand's.
        return Err(Errno::NOTSUP);
    }
    let ch = channel_arc(channel)?;
    ch.users.fetch_add(1, Ordering::AcqRel);
    let id = Arc::new(CmId { st: Mutex::new(new_state(channel, sync, context)) });
    with(|c| c.ids.insert(addr, id));
    Ok(())
}

fn channel_arc(addr: Addr) -> Res<Arc<Channel>> {
    channel(addr)
}

fn push(channel: Addr, ev: Event) {
    if let Ok(ch) = channel_arc(channel) {
        ch.push(ev);
    }
}

/// The device's limit on IRD and ORD, as rdma_cm checks `rdma_conn_param` against it.
fn max_rd_atomic() -> u16 {
    state::device().map(|d| d.capabilities().max_qp_rd_atom).unwrap_or(128).min(255)
}

fn os_errno(e: &std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EINVAL))
}

/// The source address the host would use toward `dst` (no packet is sent).
fn route_source(dst: SocketAddr) -> Res<IpAddr> {
    let any = match dst {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let s = UdpSocket::bind(any).map_err(|e| os_errno(&e))?;
    s.connect(dst).map_err(|_| Errno(libc::EADDRNOTAVAIL))?;
    Ok(s.local_addr().map_err(|e| os_errno(&e))?.ip())
}

fn reserve(addr: SocketAddr) -> Res<(socket2::Socket, SocketAddr)> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
        .map_err(|e| os_errno(&e))?;
    s.set_reuse_address(true).map_err(|e| os_errno(&e))?;
    s.bind(&addr.into()).map_err(|e| os_errno(&e))?;
    let local = s.local_addr().map_err(|e| os_errno(&e))?.as_socket().ok_or(Errno::INVAL)?;
    Ok((s, local))
}

/// `rdma_bind_addr`: takes the address (port 0: the host picks one); returns it.
pub(crate) fn bind_addr(id: &CmId, addr: SocketAddr) -> Res<SocketAddr> {
    let mut st = id.state();
    if st.phase != Phase::Idle {
        return Err(Errno::INVAL);
    }
    let (sock, local) = reserve(addr)?;
    st.reserved = Some(sock);
    st.src = Some(local);
    st.phase = Phase::Bound;
    Ok(local)
}

/// `rdma_resolve_addr`: queues ADDR_RESOLVED with the source address the host would use.
pub(crate) fn resolve_addr(id_addr: Addr, id: &CmId, src: Option<SocketAddr>, dst: SocketAddr) -> Res<()> {
    let mut st = id.state();
    if !matches!(st.phase, Phase::Idle | Phase::Bound | Phase::AddrResolved) {
        return Err(Errno::INVAL);
    }
    if let Some(s) = src {
        if s.is_ipv4() != dst.is_ipv4() {
            return Err(Errno::INVAL);
        }
        if st.phase == Phase::Idle {
            let (sock, local) = reserve(s)?;
            st.reserved = Some(sock);
            st.src = Some(local);
        }
    }
    let ip = match st.src {
        Some(s) if !s.ip().is_unspecified() => s.ip(),
        _ => route_source(dst)?,
    };
    let src = SocketAddr::new(ip, st.src.map_or(0, |s| s.port()));
    st.src = Some(src);
    st.dst = Some(dst);
    st.phase = Phase::AddrResolved;
    let ev = Event {
        id: id_addr,
        kind: rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED,
        route: Some((Some(src), Some(dst))),
        ..Default::default()
    };
    push(st.channel, ev);
    Ok(())
}

/// `rdma_resolve_route`: there is no route to resolve over TCP; queues ROUTE_RESOLVED.
pub(crate) fn resolve_route(id_addr: Addr, id: &CmId) -> Res<()> {
    let mut st = id.state();
    if st.phase != Phase::AddrResolved {
        return Err(Errno::INVAL);
    }
    st.phase = Phase::RouteResolved;
    push(
        st.channel,
        Event { id: id_addr, kind: rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_RESOLVED, ..Default::default() },
    );
    Ok(())
}

/// `rdma_listen`: an unbound identifier listens on every IPv4 address, port chosen by the
/// host. Returns the address.
pub(crate) fn listen(id_addr: Addr, id: &CmId, backlog: i32) -> Res<SocketAddr> {
    let mut st = id.state();
    match st.phase {
        Phase::Bound => {}
        Phase::Idle => {
            let (sock, local) = reserve(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
            st.reserved = Some(sock);
            st.src = Some(local);
        }
        _ => return Err(Errno::INVAL),
    }
    let addr = st.src.ok_or(Errno::INVAL)?;
    let dev = state::device()?;
    let backlog = if backlog <= 0 { 1024 } else { backlog as u32 };
    // The reservation (bound, not listening, SO_REUSEADDR) normally lets the listener bind
    // beside it; if not, give the port up first.
    let l = match dev.listen(addr, backlog) {
        Ok(l) => l,
        Err(_) => {
            st.reserved = None;
            dev.listen(addr, backlog).map_err(|e| match e {
                iwarp::ListenError::AddrInUse(_) => Errno(libc::EADDRINUSE),
                iwarp::ListenError::Io(e) => os_errno(&e),
                _ => Errno::INVAL,
            })?
        }
    };
    st.reserved = None;
    let token = watch(Watch::Listener { id: id_addr, l: l.clone() })?;
    st.listener = Some((l, token));
    st.phase = Phase::Listening;
    Ok(addr)
}

/// What `rdma_connect` and `rdma_accept` were given.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnIn {
    pub(crate) private_data: Vec<u8>,
    pub(crate) responder_resources: u8,
    pub(crate) initiator_depth: u8,
}

fn depth(v: u8, default: u16) -> Res<u16> {
    match u16::from(v) {
        255 => Ok(default),
        d if d > max_rd_atomic() => Err(Errno::INVAL),
        d => Ok(d),
    }
}

fn claim_qp(id_addr: Addr, qp: Addr) -> Res<()> {
    with(|c| match c.qp_owner.get(&qp) {
        Some(&o) if o != id_addr => Err(Errno::BUSY),
        _ => {
            c.qp_owner.insert(qp, id_addr);
            Ok(())
        }
    })
}

fn release_qp(qp: Addr) {
    with(|c| c.qp_owner.remove(&qp));
}

/// `rdma_connect` on the queue pair at `qp_addr`.
pub(crate) fn connect(id_addr: Addr, id: &CmId, qp_addr: Addr, p: Option<&ConnIn>) -> Res<()> {
    let mut st = id.state();
    if st.phase != Phase::RouteResolved {
        return Err(Errno::INVAL);
    }
    let (qp, _) = state::qp(qp_addr)?;
    let max = max_rd_atomic();
    let (ird, ord) = match p {
        Some(p) => (depth(p.responder_resources, max)?, depth(p.initiator_depth, max)?),
        None => (max, max),
    };
    let dst = st.dst.ok_or(Errno::INVAL)?;
    let mut private_data = st.extra.connect_data.clone();
    private_data.extend_from_slice(p.map_or(&[][..], |p| &p.private_data));
    let params = ConnParams {
        private_data,
        responder_resources: ird,
        initiator_depth: ord,
        source: st.src,
        ..ConnParams::default()
    };
    claim_qp(id_addr, qp_addr)?;
    // The connection binds the source itself: give up the reservation first.
    st.reserved = None;
    st.qp = Some(qp_addr);
    wait_listening(dst);
    match qp.qp.connect_start(dst, &params) {
        Ok(()) => {
            st.phase = Phase::Connecting;
            Ok(())
        }
        Err(ConnectError::Refused) => {
            st.phase = Phase::Failed;
            release_qp(qp_addr);
            let ev = Event {
                id: id_addr,
                kind: rdma_cm_event_type_RDMA_CM_EVENT_REJECTED,
                status: -libc::ECONNREFUSED,
                ..Default::default()
            };
            push(st.channel, ev);
            Ok(())
        }
        Err(e) => {
            st.qp = None;
            release_qp(qp_addr);
            Err(match e {
                ConnectError::Io(io) => os_errno(&io),
                _ => Errno::INVAL,
            })
        }
    }
}

/// How long `rdma_connect` waits for a local destination with nothing listening yet.
const LISTEN_WAIT: Duration = Duration::from_secs(1);

/// Waits, up to [`LISTEN_WAIT`], until a TCP socket of this host listens on `dst`'s port,
/// when `dst` is an address of this host (loopback, or the address the host would send
/// from toward it). The kernel's tables (`/proc/net/tcp`, `tcp6`) tell; nothing is sent.
///
/// Over a NIC, rdma_cm's address and route resolution take milliseconds; here they are
/// instant, and programs that start listening just after telling their peer to connect
/// (perftest's server creates its data listener after the handshake that lets its client
/// connect) would see their peer's request refused. A queue pair whose connection was
/// refused cannot try again, so the wait comes first; a destination that still refuses is
/// REJECTED, as before. Remote destinations are not waited for.
fn wait_listening(dst: SocketAddr) {
    let local = dst.ip().is_loopback() || route_source(dst).is_ok_and(|ip| ip == dst.ip());
    if !local {
        return;
    }
    let deadline = Instant::now() + LISTEN_WAIT;
    let mut pause = Duration::from_millis(2);
    while !listening_on(dst.port()) && Instant::now() < deadline {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `true` if a TCP socket of this host (IPv4 or IPv6) listens on `port`.
fn listening_on(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            // Fields: sl, local_address, rem_address, st (0A: LISTEN), ...
            text.lines().skip(1).any(|l| {
                let mut f = l.split_whitespace().skip(1);
                let (Some(local), Some(_), Some(st)) = (f.next(), f.next(), f.next()) else { return false };
                local.ends_with(&hex) && st == "0A"
            })
        })
    })
}

/// `rdma_accept` of a connection request onto the queue pair at `qp_addr`.
pub(crate) fn accept(id_addr: Addr, id: &CmId, qp_addr: Addr, p: Option<&ConnIn>) -> Res<()> {
    let mut st = id.state();
    if st.phase != Phase::ConnectRequest {
        return Err(Errno::INVAL);
    }
    let (qp, _) = state::qp(qp_addr)?;
    let max = max_rd_atomic();
    // Without values of its own the responder mirrors the initiator, within the device's
    // limits: its ORD at most the initiator's IRD, its IRD the initiator's ORD.
    let (ird, ord) = match p {
        Some(p) => {
            (depth(p.responder_resources, st.peer_ord.min(max))?, depth(p.initiator_depth, st.peer_ird.min(max))?)
        }
        None => (st.peer_ord.min(max), st.peer_ird.min(max)),
    };
    let req = st.request.take().ok_or(Errno::INVAL)?;
    let params = ConnParams {
        private_data: p.map(|p| p.private_data.clone()).unwrap_or_default(),
        responder_resources: ird,
        initiator_depth: ord,
        // As Linux siw: the responder may send as soon as it accepted (ucmatose's and
        // perftest's servers do); this stack's initiator takes FPDUs that follow the Reply.
        responder_sends_first: true,
        ..ConnParams::default()
    };
    claim_qp(id_addr, qp_addr)?;
    st.qp = Some(qp_addr);
    match req.accept(&qp.qp, &params) {
        Ok(()) => {
            st.phase = Phase::Accepting;
            Ok(())
        }
        Err(e) => {
            st.qp = None;
            st.phase = Phase::Failed;
            release_qp(qp_addr);
            Err(match e {
                iwarp::AcceptError::PeerGone => Errno(libc::ECONNRESET),
                _ => Errno::INVAL,
            })
        }
    }
}

/// `rdma_reject`: answers the request with an MPA Reply with the R flag and `private_data`.
pub(crate) fn reject(id: &CmId, private_data: &[u8]) -> Res<()> {
    let mut st = id.state();
    if st.phase != Phase::ConnectRequest {
        return Err(Errno::INVAL);
    }
    let req = st.request.take().ok_or(Errno::INVAL)?;
    st.phase = Phase::Failed;
    req.reject(private_data).map_err(|e| match e {
        iwarp::AcceptError::Mpa(_) => Errno::INVAL,
        _ => Errno(libc::ECONNRESET),
    })
}

/// `rdma_disconnect`.
pub(crate) fn disconnect(id: &CmId) -> Res<()> {
    let mut st = id.state();
    match st.phase {
        Phase::Connected | Phase::Connecting | Phase::Accepting => {
            if let Some(Ok((qp, _))) = st.qp.map(state::qp) {
                qp.qp.disconnect();
            }
            st.phase = Phase::Disconnecting;
            Ok(())
        }
        // Already closing or closed (the peer may have disconnected first).
        Phase::Disconnecting | Phase::Disconnected => Ok(()),
        _ => Err(Errno::INVAL),
    }
}

/// `rdma_establish`: the connection manager moves queue pairs here, so there is nothing to
/// send; valid only for a connected identifier without a queue pair of its own (`own_qp`).
pub(crate) fn establish(id: &CmId, own_qp: bool) -> Res<()> {
    let st = id.state();
    if own_qp || !matches!(st.phase, Phase::Connected) {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// `rdma_notify`: the kernel passes a queue pair event to the connection manager only for
/// InfiniBand's CM (to start a connection whose RTU was lost); on iWARP it has nothing to do
/// and answers 0 for an identifier with a connection (made, requested or listening), else
/// `EINVAL` (no connection yet), as Linux does.
pub(crate) fn notify(id: &CmId) -> Res<()> {
    match id.state().phase {
        Phase::Idle | Phase::Bound | Phase::AddrResolved | Phase::RouteResolved => Err(Errno::INVAL),
        _ => Ok(()),
    }
}

/// `rdma_join_multicast`, `rdma_join_multicast_ex`: iWARP has no multicast (nor unreliable
/// datagrams). Linux answers `EINVAL` for an identifier that is not bound or resolved, and
/// `ENOSYS` for a device whose transport is not InfiniBand's (RoCE or IB); so does this.
pub(crate) fn join_multicast(id: &CmId) -> Res<()> {
    if !matches!(id.state().phase, Phase::Bound | Phase::AddrResolved) {
        return Err(Errno::INVAL);
    }
    refused_once("rdma_join_multicast", "iWARP has no multicast", libc::ENOSYS);
    Err(Errno(libc::ENOSYS))
}

/// Says once per process, on stderr, that a call of an unsupported feature was refused, so
/// that a program that fails there (often with a terse `perror`) tells its user why.
pub(crate) fn refused_once(call: &'static str, why: &str, errno: i32) {
    static SAID: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut said = lock(&SAID);
    if said.contains(&call) {
        return;
    }
    said.push(call);
    drop(said);
    let err = std::io::Error::from_raw_os_error(errno);
    eprintln!("librdmacm (iwarp): {call}() refused: {why} ({err})");
}

/// `rdma_migrate_id`: moves the identifier and its queued events to another channel.
pub(crate) fn migrate(id_addr: Addr, id: &CmId, to: Addr) -> Res<()> {
    let new = channel_arc(to)?;
    let mut st = id.state();
    let old = channel_arc(st.channel)?;
    for ev in old.remove_events_of(id_addr) {
        new.push(ev);
    }
    old.users.fetch_sub(1, Ordering::AcqRel);
    new.users.fetch_add(1, Ordering::AcqRel);
    st.channel = to;
    Ok(())
}

/// Unlinks a queue pair from its identifier (`rdma_destroy_qp`).
pub(crate) fn forget_qp(id: &CmId, qp: Addr) {
    let mut st = id.state();
    if st.qp == Some(qp) {
        st.qp = None;
    }
    release_qp(qp);
}

/// What `rdma_destroy_id` leaves the caller to free.
pub(crate) struct Destroyed {
    /// Free the C structure now (no event of it is handed out).
    pub(crate) free_now: bool,
    /// A private channel to free.
    pub(crate) sync_channel: Option<Addr>,
}

/// `rdma_destroy_id`: stops listening, drops an unanswered request (the peer sees the
/// connection close), disconnects a connection, drops the identifier's queued events. An
/// identifier with events handed out and not acknowledged stays allocated until the last
/// acknowledgement (rdma-core waits for them instead), so `event->id` stays valid.
pub(crate) fn destroy_id(addr: Addr) -> Res<Destroyed> {
    // A zombie until shown otherwise: an acknowledgement racing with this sees it there.
    let id = with(|c| {
        let id = c.ids.remove(&addr)?;
        c.zombies.insert(addr, Arc::clone(&id));
        Some(id)
    })
    .ok_or(Errno::INVAL)?;
    let (listener, qp, connected, channel, sync, free_now) = {
        let mut st = id.state();
        st.destroyed = true;
        st.request = None;
        st.reserved = None;
        let connected = matches!(st.phase, Phase::Connected | Phase::Connecting | Phase::Accepting);
        (st.listener.take(), st.qp.take(), connected, st.channel, st.sync, st.unacked == 0)
    };
    if let Some((l, token)) = listener {
        unwatch(token);
        // Closed now, not when the last clone goes: the watcher thread may still hold one
        // (it is handing out a request), and the stack's event loop another for a moment.
        // perftest's server binds this port again for its data listener a few control
        // messages after destroying its control listener.
        l.close();
    }
    if let Some(qp) = qp {
        if connected {
            if let Ok((q, _)) = state::qp(qp) {
                q.qp.disconnect();
            }
        }
        release_qp(qp);
    }
    if let Ok(ch) = channel_arc(channel) {
        ch.remove_events_of(addr);
        ch.users.fetch_sub(1, Ordering::AcqRel);
    }
    let free_now = free_now && with(|c| c.zombies.remove(&addr)).is_some();
    Ok(Destroyed { free_now, sync_channel: sync.then_some(channel) })
}

/// A clone of the listener of the identifier at `addr`, as the watcher thread holds one
/// while it hands out a connection request.
#[cfg(test)]
pub(crate) fn listener_of(addr: Addr) -> Option<Listener> {
    id(addr).ok()?.state().listener.as_ref().map(|(l, _)| l.clone())
}

/// Records an event handed out at `ev_addr`.
///
/// Lock order: an identifier's state before the registry (`CM`), never the other way; so
/// the registry's lock is released before the identifier's is taken here.
pub(crate) fn handed_out(ev_addr: Addr, id_addr: Addr) {
    let id = with(|c| {
        c.events.insert(ev_addr, id_addr);
        c.ids.get(&id_addr).or_else(|| c.zombies.get(&id_addr)).cloned()
    });
    if let Some(id) = id {
        id.state().unacked += 1;
    }
}

/// `rdma_ack_cm_event`: forgets the event (`EINVAL` if it is not one handed out). Returns the
/// address of a destroyed identifier whose last event this was, for the caller to free.
pub(crate) fn ack(ev_addr: Addr) -> Res<Option<Addr>> {
    let (id_addr, id) = with(|c| {
        let id_addr = c.events.remove(&ev_addr).ok_or(Errno::INVAL)?;
        Ok((id_addr, c.ids.get(&id_addr).or_else(|| c.zombies.get(&id_addr)).cloned()))
    })?;
    let Some(id) = id else { return Ok(None) };
    let last = {
        let mut st = id.state();
        st.unacked = st.unacked.saturating_sub(1);
        st.destroyed && st.unacked == 0
    };
    // Whoever takes the identifier out of the zombies frees it: this acknowledgement or its
    // destruction, never both.
    Ok((last && with(|c| c.zombies.remove(&id_addr)).is_some()).then_some(id_addr))
}

/// The source and destination ports (`rdma_get_src_port`, `rdma_get_dst_port`).
pub(crate) fn ports(id: &CmId) -> (u16, u16) {
    let st = id.state();
    (st.src.map_or(0, |a| a.port()), st.dst.map_or(0, |a| a.port()))
}

/// The identifier that connected the queue pair at `qp`, if any.
pub(crate) fn qp_owner(qp: Addr) -> Option<Addr> {
    with(|c| c.qp_owner.get(&qp).copied())
}

// ---------------------------------------------------------------------------------------------
// The watcher thread

enum Watch {
    Listener { id: Addr, l: Listener },
    Qp { qp: Addr, q: QueuePair },
}

impl Watch {
    fn fd(&self) -> std::io::Result<i32> {
        match self {
            Watch::Listener { l, .. } => Ok(l.as_raw_fd()),
            Watch::Qp { q, .. } => Ok(q.event_fd()?.as_raw_fd()),
        }
    }
}

struct Watcher {
    registry: mio::Registry,
    watches: Mutex<HashMap<usize, Arc<Watch>>>,
    next: AtomicUsize,
}

fn watcher() -> Res<&'static Watcher> {
    static W: OnceLock<Option<Watcher>> = OnceLock::new();
    W.get_or_init(|| {
        let poll = mio::Poll::new().ok()?;
        let registry = poll.registry().try_clone().ok()?;
        std::thread::Builder::new().name("iwarp-cm".into()).spawn(move || run(poll)).ok()?;
        Some(Watcher { registry, watches: Mutex::new(HashMap::new()), next: AtomicUsize::new(1) })
    })
    .as_ref()
    .ok_or(Errno(libc::EMFILE))
}

fn run(mut poll: mio::Poll) {
    let mut events = mio::Events::with_capacity(64);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let Ok(w) = watcher() else { return };
        for ev in &events {
            let watch = lock(&w.watches).get(&ev.token().0).cloned();
            match watch.as_deref() {
                Some(Watch::Listener { id, l }) => {
                    while let Some(req) = l.try_get_request() {
                        on_request(*id, req);
                    }
                }
                Some(Watch::Qp { qp, q }) => {
                    while let Some(e) = q.poll_event() {
                        on_qp_event(*qp, q, e);
                    }
                }
                None => {}
            }
        }
    }
}

fn watch(w: Watch) -> Res<usize> {
    let wt = watcher()?;
    let token = wt.next.fetch_add(1, Ordering::Relaxed);
    let fd = w.fd().map_err(|e| os_errno(&e))?;
    lock(&wt.watches).insert(token, Arc::new(w));
    // Edge-triggered: each notification of the stack's descriptors is a new edge, and every
    // wake-up takes all that is queued.
    if let Err(e) = wt.registry.register(&mut mio::unix::SourceFd(&fd), mio::Token(token), mio::Interest::READABLE) {
        lock(&wt.watches).remove(&token);
        return Err(os_errno(&e));
    }
    Ok(token)
}

fn unwatch(token: usize) {
    let Ok(wt) = watcher() else { return };
    if let Some(w) = lock(&wt.watches).remove(&token) {
        if let Ok(fd) = w.fd() {
            let _ = wt.registry.deregister(&mut mio::unix::SourceFd(&fd));
        }
    }
}

static QP_WATCHES: Mutex<Option<HashMap<Addr, usize>>> = Mutex::new(None);

/// Watches a verbs queue pair's events (from its creation to its destruction).
pub(crate) fn watch_qp(addr: Addr, q: QueuePair) {
    if let Ok(token) = watch(Watch::Qp { qp: addr, q }) {
        lock(&QP_WATCHES).get_or_insert_with(HashMap::new).insert(addr, token);
    }
}

/// Stops watching a destroyed queue pair.
pub(crate) fn unwatch_qp(addr: Addr) {
    let token = lock(&QP_WATCHES).as_mut().and_then(|m| m.remove(&addr));
    if let Some(t) = token {
        unwatch(t);
    }
    release_qp(addr);
}

/// A connection request on a listening identifier: a new identifier for it, and
/// CONNECT_REQUEST on the listener's channel (the identifiers of a synchronous listener's
/// requests get private channels of their own, as rdma-core's do).
fn on_request(listen_addr: Addr, req: ConnectRequest) {
    let Ok(listener) = id(listen_addr) else { return };
    let (channel, sync, context) = {
        let st = listener.state();
        if st.phase != Phase::Listening {
            return;
        }
        (st.channel, st.sync, st.context)
    };
    let child_channel = if sync {
        match Channel::new() {
            Ok(ch) => {
                let c = crate::ffi::cm::new_channel_struct(&ch);
                insert_channel(c, ch);
                c
            }
            Err(_) => return,
        }
    } else {
        channel
    };
    let Ok(child) = crate::ffi::cm::new_id_struct(child_channel, context, rdma_port_space_RDMA_PS_TCP) else { return };
    if insert_id(child, child_channel, sync, context, rdma_port_space_RDMA_PS_TCP).is_err() {
        return;
    }
    let Ok(cid) = id(child) else { return };
    let (ird, ord) = (req.ird().unwrap_or(0), req.ord().unwrap_or(0));
    let src = req.local_addr();
    let dst = Some(req.peer_addr());
    let private_data = req.private_data().to_vec();
    {
        let mut st = cid.state();
        st.phase = Phase::ConnectRequest;
        st.src = src;
        st.dst = dst;
        st.peer_ird = ird;
        st.peer_ord = ord;
        st.request = Some(req);
    }
    let ev = Event {
        id: child,
        listen_id: listen_addr,
        kind: rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST,
        private_data,
        // As the kernel's iWARP connection manager reports a request: the initiator's IRD
        // bounds this side's ORD (initiator_depth), its ORD this side's IRD.
        initiator_depth: u8::try_from(ird).unwrap_or(u8::MAX),
        responder_resources: u8::try_from(ord).unwrap_or(u8::MAX),
        route: Some((src, dst)),
        ..Default::default()
    };
    // The request is the listener's event; the new identifier reports to its own channel
    // from then on.
    push(channel, ev);
}

/// `enum ibv_event_type` of a queue pair error, from the Terminate's layer and error type:
/// protection and tagged-buffer errors (a bad STag, rights, bounds) are access errors;
/// operation and untagged-buffer errors (an unexpected opcode, no buffer, a bad MSN or MO)
/// are invalid requests; catastrophic, MPA and transport failures are fatal.
fn qp_error_event(cause: Option<iwarp::TerminateCause>) -> u32 {
    use iwarp::TerminateCause as C;
    match cause {
        Some(C::RemoteProtection(_) | C::TaggedBuffer(_)) => ibv_event_type_IBV_EVENT_QP_ACCESS_ERR,
        Some(C::RemoteOperation(_) | C::UntaggedBuffer(_)) => ibv_event_type_IBV_EVENT_QP_REQ_ERR,
        _ => ibv_event_type_IBV_EVENT_QP_FATAL,
    }
}

fn on_qp_event(qp_addr: Addr, q: &QueuePair, ev: QpEvent) {
    // Errors and the shared receive queue's events are the verbs' asynchronous events,
    // whoever connected the queue pair.
    if let Ok((qp, ctx)) = state::qp(qp_addr) {
        let post = |event_type, element| {
            let _ = crate::verbs::post_async_event(ctx, AsyncEvent { event_type, element });
        };
        match &ev {
            QpEvent::Error { cause, .. } => post(qp_error_event(*cause), qp_addr),
            QpEvent::SrqLimitReached => {
                if let Some(srq) = qp.srq {
                    post(ibv_event_type_IBV_EVENT_SRQ_LIMIT_REACHED, srq);
                }
                return;
            }
            _ => {}
        }
        // The queue pair is in error and its work flushed: it takes no more receives from
        // its shared receive queue (once, whether it ended with an error or a disconnect).
        if matches!(ev, QpEvent::Error { .. } | QpEvent::Disconnected)
            && qp.srq.is_some()
            && !qp.last_wqe.swap(true, Ordering::AcqRel)
        {
            post(ibv_event_type_IBV_EVENT_QP_LAST_WQE_REACHED, qp_addr);
        }
    }
    let Some(id_addr) = qp_owner(qp_addr) else { return };
    let Ok(id) = id(id_addr) else { return };
    let mut st = id.state();
    let mut e = Event { id: id_addr, ..Default::default() };
    match ev {
        QpEvent::Established => {
            if !matches!(st.phase, Phase::Connecting | Phase::Accepting) {
                return;
            }
            st.phase = Phase::Connected;
            let info = q.conn_info();
            e.kind = rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED;
            if let Some(i) = &info {
                // What this side may use: its ORD (at most the peer's IRD) and its IRD.
                e.initiator_depth = u8::try_from(i.ord).unwrap_or(u8::MAX);
                e.responder_resources = u8::try_from(i.ird).unwrap_or(u8::MAX);
                if i.role == Role::Initiator {
                    e.private_data = i.peer_private_data.clone();
                }
            }
            if let (Some(l), Some(p)) = (q.local_addr(), q.peer_addr()) {
                st.src = Some(l);
                st.dst = Some(p);
                e.route = Some((Some(l), Some(p)));
            }
        }
        QpEvent::Rejected { private_data } => {
            st.phase = Phase::Failed;
            e.kind = rdma_cm_event_type_RDMA_CM_EVENT_REJECTED;
            e.status = -libc::ECONNREFUSED;
            e.private_data = private_data;
        }
        QpEvent::ConnectFailed(err) => {
            st.phase = Phase::Failed;
            (e.kind, e.status) = match err {
                ConnectError::Refused => (rdma_cm_event_type_RDMA_CM_EVENT_REJECTED, -libc::ECONNREFUSED),
                ConnectError::Rejected { private_data } => {
                    e.private_data = private_data;
                    (rdma_cm_event_type_RDMA_CM_EVENT_REJECTED, -libc::ECONNREFUSED)
                }
                ConnectError::Timeout => (rdma_cm_event_type_RDMA_CM_EVENT_UNREACHABLE, -libc::ETIMEDOUT),
                ConnectError::Io(io) => {
                    (rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR, -io.raw_os_error().unwrap_or(libc::ECONNRESET))
                }
                _ => (rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR, -libc::ECONNRESET),
            };
        }
        QpEvent::Disconnected | QpEvent::Error { .. } => {
            match st.phase {
                Phase::Connected | Phase::Disconnecting => {}
                // Closed before it was established: setup failed.
                Phase::Connecting | Phase::Accepting => {
                    st.phase = Phase::Failed;
                    e.kind = rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR;
                    e.status = -libc::ECONNRESET;
                    push(st.channel, e);
                    return;
                }
                _ => return,
            }
            st.phase = Phase::Disconnected;
            e.kind = rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED;
        }
        _ => return,
    }
    push(st.channel, e);
}
