//! An NBD (Network Block Device) server: serves one [`BlockDevice`] as an export so that
//! standard tools (`qemu-img`, `nbdinfo`, `nbdcopy`, the kernel's NBD client) can read and
//! write it, over a Unix socket and/or a TCP listener.
//!
//! What it speaks, from the NBD protocol specification:
//!
//! - The fixed newstyle handshake (`NBD_FLAG_FIXED_NEWSTYLE`, `NBD_FLAG_NO_ZEROES`), with the
//!   options `NBD_OPT_EXPORT_NAME`, `NBD_OPT_ABORT`, `NBD_OPT_LIST`, `NBD_OPT_INFO` and
//!   `NBD_OPT_GO` (answering `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE` always,
//!   `NBD_INFO_NAME` and `NBD_INFO_DESCRIPTION` when asked), and `NBD_OPT_STRUCTURED_REPLY`.
//!   Every other option, TLS and metadata contexts included, is answered
//!   `NBD_REP_ERR_UNSUP`. An export name other than the configured one (or the empty
//!   default name) is answered `NBD_REP_ERR_UNKNOWN` (or, after `NBD_OPT_EXPORT_NAME`,
//!   which cannot fail, by closing).
//!   Option data is bounded: up to 16 KiB is parsed, up to 1 MiB is skipped and refused
//!   with `NBD_REP_ERR_INVALID`, and a longer length closes the connection unread.
//! - The transmission phase: `NBD_CMD_READ`, `WRITE` (with `NBD_CMD_FLAG_FUA`: a device
//!   flush before the reply), `DISC`, `FLUSH`, `TRIM` and `WRITE_ZEROES`. Trim is a hint
//!   the device has no use for: it is checked (range, read-only) and acknowledged without
//!   touching data, which the protocol allows (the client may assume nothing about trimmed
//!   contents). With structured replies a read is answered by one chunk (its data, or an
//!   error with a message; `NBD_CMD_FLAG_DF` is offered and holds by construction); every
//!   other command keeps simple replies. Requests past the end are refused with `EINVAL`
//!   (`ENOSPC` for writes and write zeroes), reads and writes longer than
//!   [`NbdConfig::max_payload`] with `EINVAL`
//!   (a refused write's payload is skipped without being kept), unknown commands and flags
//!   with `EINVAL`, writes to a read-only export with `EPERM`; device errors become `EIO`
//!   (`ENOSPC` for a full device). A request with a bad magic closes the connection.
//! - Several requests in flight per connection: a reader takes requests off the socket and
//!   hands them to [`NbdConfig::workers`] threads, which reply as they finish (out of order,
//!   matched by handle). The bytes of requests read but not yet answered are bounded by
//!   [`NbdConfig::max_in_flight`]: past it the reader stops reading, which pushes back on
//!   the client through the socket.
//!
//! ```no_run
//! use std::sync::Arc;
//! use iwarp_nvmf::block::MemDevice;
//! use iwarp_nvmf::nbd::{NbdConfig, NbdServer};
//!
//! let server = NbdServer::new(Arc::new(MemDevice::new(64 << 20)), NbdConfig::default())?;
//! let handle = server.listen_unix("/tmp/disk.sock".as_ref())?;
//! println!("qemu-img info '{}'", handle.address().uri(""));
//! // ...
//! handle.stop();
//! # Ok::<(), iwarp_nvmf::nbd::NbdError>(())
//! ```

mod handshake;
pub mod proto;
mod transmission;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::block::BlockDevice;
use handshake::{ExportInfo, Outcome};
use transmission::Limits;

/// How often the accept loop looks at its stop flag while no client connects.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Errors of the NBD server.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The configuration breaks a rule of the protocol or of the server.
    #[error("invalid NBD server configuration: {0}")]
    Config(&'static str),
    /// Binding or setting up a listener, or starting a thread, failed.
    #[error("NBD server I/O: {0}")]
    Io(#[from] io::Error),
}

/// How the export is presented and how much each connection may take on.
#[derive(Debug, Clone)]
pub struct NbdConfig {
    /// The export's name (at most 4096 bytes, no NUL). The empty name always selects it too,
    /// as the default export.
    pub export_name: String,
    /// A description for humans, shown by `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION` (empty:
    /// none).
    pub description: String,
    /// Advertise the export read-only and refuse writes, trims and write zeroes (`EPERM`).
    pub read_only: bool,
    /// Advertise `NBD_FLAG_CAN_MULTI_CONN`: the server keeps no cache of its own, so a flush
    /// on one connection covers writes completed on every connection, as long as the device's
    /// [`BlockDevice::flush`] covers all writes completed on it.
    pub multi_conn: bool,
    /// Worker threads per connection: how many requests of one client reach the device at
    /// once.
    pub workers: usize,
    /// The largest read or write payload accepted (advertised as the maximum payload size);
    /// at least 4096.
    pub max_payload: u32,
    /// Bytes of payload (plus a small charge per request) that one connection may have read
    /// but not yet answered; at least `max_payload`.
    pub max_in_flight: usize,
    /// The minimum block size advertised and enforced (offsets and lengths not multiples of
    /// it are refused with `EINVAL`): 1 for devices that accept any byte range, the device's
    /// block size for devices that cannot read-modify-write. A power of two, at most 65536.
    pub min_block_size: u32,
    /// How long a client may take over each read of the handshake (a client that connects
    /// and says nothing is dropped after this); `None`: no limit. The transmission phase has
    /// no timeout: an idle client may stay connected.
    pub handshake_timeout: Option<Duration>,
    /// How long [`NbdHandle::stop`] lets connections finish the requests they have read
    /// before it closes their sockets outright.
    pub stop_grace: Duration,
}

impl Default for NbdConfig {
    fn default() -> Self {
        NbdConfig {
            export_name: String::new(),
            description: String::new(),
            read_only: false,
            multi_conn: true,
            workers: 8,
            max_payload: 32 << 20,
            max_in_flight: 64 << 20,
            min_block_size: 1,
            handshake_timeout: Some(Duration::from_secs(30)),
            stop_grace: Duration::from_secs(5),
        }
    }
}

impl NbdConfig {
    fn validate(&self) -> Result<(), NbdError> {
        if self.export_name.len() > 4096 || self.export_name.contains('\0') {
            return Err(NbdError::Config("export name longer than 4096 bytes or containing NUL"));
        }
        if self.description.len() > 4096 || self.description.contains('\0') {
            return Err(NbdError::Config("description longer than 4096 bytes or containing NUL"));
        }
        if self.workers == 0 {
            return Err(NbdError::Config("workers must be at least 1"));
        }
        if !self.min_block_size.is_power_of_two() || self.min_block_size > 65536 {
            return Err(NbdError::Config("min_block_size must be a power of two no larger than 65536"));
        }
        if self.max_payload < 4096 || self.max_payload < self.min_block_size {
            return Err(NbdError::Config("max_payload must be at least 4096 and min_block_size"));
        }
        if self.max_in_flight < self.max_payload as usize {
            return Err(NbdError::Config("max_in_flight must be at least max_payload"));
        }
        if self.handshake_timeout == Some(Duration::ZERO) {
            return Err(NbdError::Config("handshake_timeout must not be zero (None: no limit)"));
        }
        Ok(())
    }
}

/// Where a listener waits for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// The NBD URI of `export` on this address (`nbd://host:port/export` or
    /// `nbd+unix:///export?socket=path`), as `qemu-img`, `nbdinfo` and `nbdcopy` take it.
    pub fn uri(&self, export: &str) -> String {
        match self {
            ListenAddr::Tcp(addr) => format!("nbd://{addr}/{export}"),
            ListenAddr::Unix(path) => format!("nbd+unix:///{export}?socket={}", path.display()),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A connected client socket.
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub(crate) fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(timeout),
            Sock::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Sock> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                Sock::Tcp(s)
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Sock::Unix(s)
            }
        })
    }
}

struct Shared {
    device: Arc<dyn BlockDevice>,
    config: NbdConfig,
    next_conn: AtomicU64,
}

/// Serves one block device as an NBD export. Each `listen_*`/`serve_*` call starts a listener
/// with its own [`NbdHandle`]; a server may listen on a Unix socket and TCP at once.
#[derive(Clone)]
pub struct NbdServer {
    shared: Arc<Shared>,
}

impl fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbdServer")
            .field("size", &self.shared.device.size())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl NbdServer {
    /// A server of `device` presented as `config` says.
    pub fn new(device: Arc<dyn BlockDevice>, config: NbdConfig) -> Result<Self, NbdError> {
        config.validate()?;
        Ok(NbdServer { shared: Arc::new(Shared { device, config, next_conn: AtomicU64::new(1) }) })
    }

    /// The configuration.
    pub fn config(&self) -> &NbdConfig {
        &self.shared.config
    }

    /// Binds a Unix socket at `path` (which must not exist) and serves clients on it. The
    /// socket file is removed when the handle stops.
    pub fn listen_unix(&self, path: &Path) -> Result<NbdHandle, NbdError> {
        let listener = UnixListener::bind(path)?;
        self.start(Listener::Unix(listener), ListenAddr::Unix(path.to_path_buf()), Some(path.to_path_buf()))
    }

    /// Binds a TCP listener at `addr` and serves clients on it.
    pub fn listen_tcp(&self, addr: SocketAddr) -> Result<NbdHandle, NbdError> {
        self.serve_tcp(TcpListener::bind(addr)?)
    }

    /// Serves clients on a bound Unix listener (its socket file is left in place).
    pub fn serve_unix(&self, listener: UnixListener) -> Result<NbdHandle, NbdError> {
        let path = listener.local_addr()?.as_pathname().map(Path::to_path_buf).unwrap_or_default();
        self.start(Listener::Unix(listener), ListenAddr::Unix(path), None)
    }

    /// Serves clients on a bound TCP listener.
    pub fn serve_tcp(&self, listener: TcpListener) -> Result<NbdHandle, NbdError> {
        let addr = listener.local_addr()?;
        self.start(Listener::Tcp(listener), ListenAddr::Tcp(addr), None)
    }

    fn start(&self, listener: Listener, addr: ListenAddr, remove: Option<PathBuf>) -> Result<NbdHandle, NbdError> {
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix(l) => l.set_nonblocking(true)?,
        }
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let shared = Arc::clone(&self.shared);
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&conns));
        let accept = thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(&shared, &listener, &stop2, &conns2, remove))?;
        tracing::info!(%addr, size = self.shared.device.size(), "nbd: serving");
        Ok(NbdHandle { addr, stop, conns, accept: Some(accept), grace: self.shared.config.stop_grace })
    }
}

/// The export as the handshake presents it.
fn export_info(shared: &Shared) -> ExportInfo {
    let c = &shared.config;
    let mut flags = proto::FLAG_HAS_FLAGS
        | proto::FLAG_SEND_FLUSH
        | proto::FLAG_SEND_FUA
        | proto::FLAG_SEND_TRIM
        | proto::FLAG_SEND_WRITE_ZEROES;
    if c.read_only {
        flags |= proto::FLAG_READ_ONLY;
    }
    if c.multi_conn {
        flags |= proto::FLAG_CAN_MULTI_CONN;
    }
    // a power of two, at least 4096 and the minimum, at most the maximum payload
    let mut preferred = shared.device.block_size().max(4096).max(c.min_block_size).next_power_of_two();
    while preferred > c.max_payload {
        preferred /= 2;
    }
    ExportInfo {
        name: c.export_name.clone(),
        description: c.description.clone(),
        size: shared.device.size(),
        flags,
        min_block: c.min_block_size,
        preferred_block: preferred,
        max_payload: c.max_payload,
    }
}

/// One accepted client.
struct Connection {
    control: Sock,
    thread: JoinHandle<()>,
}

fn accept_loop(
    shared: &Arc<Shared>,
    listener: &Listener,
    stop: &AtomicBool,
    conns: &Mutex<Vec<Connection>>,
    remove: Option<PathBuf>,
) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok(sock) => {
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                let control = match sock.try_clone() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "nbd: cannot duplicate a client socket; dropping it");
                        continue;
                    }
                };
                let shared = Arc::clone(shared);
                let spawned =
                    thread::Builder::new().name(format!("nbd-{id}")).spawn(move || serve_client(&shared, id, sock));
                match spawned {
                    Ok(thread) => {
                        let mut list = conns.lock().unwrap_or_else(|e| e.into_inner());
                        reap(&mut list);
                        list.push(Connection { control, thread });
                    }
                    Err(e) => tracing::warn!(error = %e, "nbd: cannot start a client thread; dropping the client"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                reap(&mut conns.lock().unwrap_or_else(|e| e.into_inner()));
                thread::sleep(ACCEPT_POLL);
            }
            Err(e) => {
                // e.g. out of descriptors: wait for clients to leave
                tracing::warn!(error = %e, "nbd: accept failed");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
    if let Some(path) = remove {
        let _ = std::fs::remove_file(path);
    }
}

/// Joins the threads of clients that have left.
fn reap(list: &mut Vec<Connection>) {
    let mut i = 0;
    while i < list.len() {
        if list[i].thread.is_finished() {
            let _ = list.swap_remove(i).thread.join();
        } else {
            i += 1;
        }
    }
}

fn serve_client(shared: &Arc<Shared>, id: u64, sock: Sock) {
    tracing::debug!(conn = id, "nbd: client connected");
    let mut hs = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(conn = id, error = %e, "nbd: cannot duplicate the client socket");
            return;
        }
    };
    let export = export_info(shared);
    let timeout = shared.config.handshake_timeout;
    if let Err(e) = sock.set_read_timeout(timeout) {
        tracing::warn!(conn = id, error = %e, "nbd: cannot set the handshake timeout");
    }
    let structured = match handshake::negotiate(&mut hs, &export) {
        Ok(Outcome::Transmission { structured }) => structured,
        Ok(Outcome::Close(why)) => {
            tracing::debug!(conn = id, why, "nbd: handshake ended");
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        Err(e) => {
            tracing::debug!(conn = id, error = %e, "nbd: handshake failed");
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
    };
    drop(hs);
    if timeout.is_some() {
        if let Err(e) = sock.set_read_timeout(None) {
            tracing::warn!(conn = id, error = %e, "nbd: cannot clear the handshake timeout");
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
    }
    let c = &shared.config;
    let limits = Limits {
        workers: c.workers,
        max_payload: c.max_payload,
        max_in_flight: c.max_in_flight,
        min_block: c.min_block_size,
        read_only: c.read_only,
        structured,
    };
    match transmission::serve(id, sock, Arc::clone(&shared.device), limits) {
        Ok(end) => tracing::debug!(conn = id, ?end, "nbd: client left"),
        Err(e) => tracing::warn!(conn = id, error = %e, "nbd: cannot serve the client"),
    }
}

/// A running listener: stopping it (or dropping it) closes the listener, ends its client
/// connections and joins their threads.
#[derive(Debug)]
pub struct NbdHandle {
    addr: ListenAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Connection>>>,
    accept: Option<JoinHandle<()>>,
    grace: Duration,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("finished", &self.thread.is_finished()).finish_non_exhaustive()
    }
}

impl NbdHandle {
    /// Where clients connect.
    pub fn address(&self) -> &ListenAddr {
        &self.addr
    }

    /// Clients connected now (handshaking or transferring).
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|c| !c.thread.is_finished()).count()
    }

    /// Stops accepting clients and closes the listener (removing a socket file it created),
    /// then ends every connection: each stops reading requests and answers those it has read,
    /// for up to [`NbdConfig::stop_grace`]; sockets still open after that are closed outright.
    /// Returns once every thread of this listener has ended (a device call that never returns
    /// keeps its connection, and so this, waiting).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        self.stop.store(true, Ordering::Release);
        let _ = accept.join();
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for c in &conns {
            let _ = c.control.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline && conns.iter().any(|c| !c.thread.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        for c in conns {
            if !c.thread.is_finished() {
                let _ = c.control.shutdown(Shutdown::Both);
            }
            let _ = c.thread.join();
        }
        tracing::info!(addr = %self.addr, "nbd: stopped");
    }
}

impl Drop for NbdHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
