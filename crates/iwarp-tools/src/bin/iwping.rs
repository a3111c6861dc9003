//! `iwping`: an rping-compatible ping over iWARP.
//!
//! Speaks rping's protocol (rdma-core `librdmacm/examples/rping.c`), so `iwping -c` works
//! against `rping -s` and `rping -c` against `iwping -s`. Per ping: the client advertises its
//! source buffer in a 16-byte Send (address, rkey, size, big-endian); the server RDMA Reads it,
//! answers with a 16-byte "go ahead" Send; the client advertises its sink buffer; the server
//! RDMA Writes the data back (the string and its NUL) and sends "go ahead" again; the client
//! compares (`-V`) and prints (`-v`). With `-V` the server also checks that what it read is
//! rping's ping pattern for that ping (rping's own server ignores `-V`), so a run against
//! `rping -c -V` checks the data placed in both directions.
#![forbid(unsafe_code)]

use clap::Parser;
use iwarp::{
    Access, CompletionQueue, ConnParams, Device, DeviceConfig, MemoryRegion, Progress, QpEvent, QpInit, QueuePair,
    RecvWr, RemoteAddr, SendWr, Stag, WcOpcode, WcStatus, WorkCompletion,
};
use iwarp_tools::liveness_args::LivenessArgs;
use iwarp_tools::mpa_args::MpaArgs;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest ping (rping's RPING_BUFSIZE - 1).
const MAX_SIZE: usize = 64 * 1024 - 1;
/// Smallest ping: room for "rdma-ping-2147483647: " and its NUL, as rping computes it.
const MIN_SIZE: usize = 26;
/// rping's advertisement: be64 address, be32 rkey, be32 size.
const INFO_LEN: usize = 16;
/// rping's state number for "disconnected", which it prints when the client goes away.
const STATE_DISCONNECTED: u32 = 10;

static DEBUG: AtomicBool = AtomicBool::new(false);

macro_rules! debug_log {
    ($($t:tt)*) => {
        if DEBUG.load(Ordering::Relaxed) {
            println!($($t)*);
        }
    };
}

/// rping-compatible ping over iWARP (RDMA Read and Write of a rotating text pattern).
#[derive(Debug, Parser)]
#[command(name = "iwping", disable_version_flag = true)]
struct Cli {
    /// Server side.
    #[arg(short = 's', conflicts_with = "client")]
    server: bool,
    /// Client side.
    #[arg(short = 'c')]
    client: bool,
    /// Address (server: to bind, default any; client: to connect to).
    #[arg(short = 'a')]
    addr: Option<String>,
    /// Source address to bind to (client).
    #[arg(short = 'I')]
    source: Option<String>,
    /// Port.
    #[arg(short = 'p', default_value_t = 7174)]
    port: u16,
    /// Ping count (0: forever).
    #[arg(short = 'C', default_value_t = 0)]
    count: u64,
    /// Ping data size.
    #[arg(short = 'S', default_value_t = 64)]
    size: usize,
    /// Display ping data.
    #[arg(short = 'v')]
    verbose: bool,
    /// Validate ping data.
    #[arg(short = 'V')]
    validate: bool,
    /// Debug output.
    #[arg(short = 'd')]
    debug: bool,
    /// Persistent server: serve connections one after another, each in its own thread.
    #[arg(short = 'P')]
    persistent: bool,
    /// Accepted for rping compatibility (self-created QP); no effect.
    #[arg(short = 'q')]
    _self_qp: bool,
    /// Accepted for rping compatibility (type of service); no effect.
    #[arg(short = 't')]
    _tos: Option<u8>,
    /// Drive the queue pair from the ping thread (busy polling) instead of the event loop.
    #[arg(long = "busy-poll")]
    busy_poll: bool,
    /// Server: also answer plain TCP clients on the same port (line echo).
    #[arg(long = "shared-port")]
    shared_port: bool,
    #[command(flatten)]
    mpa: MpaArgs,
    #[command(flatten)]
    liveness: LivenessArgs,
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

struct Buffers {
    recv: MemoryRegion,
    send: MemoryRegion,
    rdma: MemoryRegion,
    start: Option<MemoryRegion>,
}

fn buffers(pd: &iwarp::ProtectionDomain, size: usize, client: bool) -> iwarp::Result<Buffers> {
    let rw = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE;
    Ok(Buffers {
        recv: pd.reg_mr(INFO_LEN, Access::LOCAL_WRITE)?,
        send: pd.reg_mr(INFO_LEN, Access::empty())?,
        rdma: pd.reg_mr(size, rw)?,
        start: if client { Some(pd.reg_mr(size, rw)?) } else { None },
    })
}

/// What the ping loop waits for.
enum Waited {
    /// A receive completed with `len` bytes.
    Recv(u32),
    /// A Read or Write completed.
    Rdma,
    /// The connection closed.
    Disconnected,
}

/// Waits for the next receive or RDMA completion (Send completions are only checked),
/// or a disconnect.
fn wait(qp: &QueuePair, cq: &CompletionQueue, b: &Buffers, who: &str) -> Result<Waited, String> {
    let mut wc = [WorkCompletion::default(); 8];
    let mut pending: Vec<WorkCompletion> = Vec::new();
    loop {
        if let Some(c) = pending.pop() {
            if c.status == WcStatus::WrFlush {
                continue;
            }
            if c.status != WcStatus::Success {
                return Err(format!("cq completion failed status {:?}", c.status));
            }
            match c.opcode {
                WcOpcode::Send => debug_log!("send completion"),
                WcOpcode::RdmaRead | WcOpcode::RdmaWrite => {
                    debug_log!("rdma {} completion", if c.opcode == WcOpcode::RdmaRead { "read" } else { "write" });
                    return Ok(Waited::Rdma);
                }
                WcOpcode::Recv => {
                    debug_log!("recv completion");
                    // rping keeps one receive posted and re-posts it after every receive.
                    qp.post_recv(&[RecvWr::new(0, &[b.recv.sge_all()])])
                        .map_err(|e| format!("post recv error: {e}"))?;
                    return Ok(Waited::Recv(c.byte_len));
                }
                other => return Err(format!("unexpected completion {other:?}")),
            }
            continue;
        }
        let n = cq.wait(&mut wc, Some(Duration::from_millis(20)));
        if n > 0 {
            // Oldest first.
            pending.extend(wc[..n].iter().rev().copied());
            continue;
        }
        while let Some(ev) = qp.poll_event() {
            match ev {
                QpEvent::Disconnected => {
                    eprintln!("{who} DISCONNECT EVENT...");
                    return Ok(Waited::Disconnected);
                }
                QpEvent::Error { cause, remote, .. } => {
                    return Err(format!(
                        "connection error: {}{}",
                        if remote { "peer sent " } else { "" },
                        cause.map_or("transport failure".to_string(), |c| c.to_string())
                    ));
                }
                _ => {}
            }
        }
    }
}

fn info(b: &Buffers) -> [u8; INFO_LEN] {
    let mut v = [0u8; INFO_LEN];
    b.recv.read(0, &mut v).expect("16-byte region");
    v
}

fn advertise(b: &Buffers, mr: &MemoryRegion, size: usize) {
    let mut v = [0u8; INFO_LEN];
    v[..8].copy_from_slice(&mr.addr().to_be_bytes());
    v[8..12].copy_from_slice(&mr.rkey().to_be_bytes());
    v[12..16].copy_from_slice(&(size as u32).to_be_bytes());
    b.send.write(0, &v).expect("16-byte region");
}

fn cstr(mr: &MemoryRegion) -> String {
    let v = mr.to_vec(0, mr.len()).unwrap_or_default();
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// The first character of ping `ping`'s pattern: 'A' for ping 0, one further per ping,
/// wrapping 'z' → 'A', as rping's client advances it.
fn ping_start(ping: u64) -> u8 {
    b'A' + (ping % u64::from(b'z' - b'A' + 1)) as u8
}

/// The server's `-V` check: `got`, the first bytes (at most `size`: the server reads no more than
/// the client advertised) of a client buffer of `size` bytes read for ping `ping`, is rping's
/// pattern for it.
fn check_ping(got: &[u8], ping: u64, size: usize) -> Result<(), String> {
    let want = ping_data(ping, ping_start(ping), size);
    match got.iter().zip(&want).position(|(a, b)| a != b) {
        Some(i) => Err(format!("data mismatch! ping {ping}, byte {i}: {:#04x}, expected {:#04x}", got[i], want[i])),
        None => Ok(()),
    }
}

/// rping's ping payload: "rdma-ping-N: " then printable characters from `start`, wrapping
/// 'z' → 'A', NUL-terminated, `size` bytes.
fn ping_data(ping: u64, start: u8, size: usize) -> Vec<u8> {
    let mut v = format!("rdma-ping-{ping}: ").into_bytes();
    v.truncate(size.saturating_sub(1));
    let mut c = start;
    while v.len() < size {
        v.push(c);
        c = if c >= b'z' { b'A' } else { c + 1 };
    }
    v[size - 1] = 0;
    v
}

fn qp_for(pd: &iwarp::ProtectionDomain, cq: &CompletionQueue, busy: bool) -> iwarp::Result<QueuePair> {
    let mut init = QpInit::new(cq, cq);
    init.cap.max_send_wr = 16;
    init.cap.max_recv_wr = 2;
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    init.progress = if busy { Progress::Poll } else { Progress::Thread };
    Ok(pd.create_qp(&init)?)
}

fn run_client(cli: &Cli, dev: &Device) -> Result<(), String> {
    let host = cli.addr.as_deref().ok_or("client needs -a addr")?;
    let addr =
        resolve(host, cli.port).ok_or_else(|| format!("getaddrinfo failed - invalid hostname or IP address {host}"))?;
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(32).map_err(|e| e.to_string())?;
    let qp = qp_for(&pd, &cq, cli.busy_poll).map_err(|e| format!("setup_qp failed: {e}"))?;
    let b = buffers(&pd, cli.size, true).map_err(|e| format!("rping_setup_buffers failed: {e}"))?;
    let start_mr = b.start.clone().expect("client buffers");
    qp.post_recv(&[RecvWr::new(0, &[b.recv.sge_all()])]).map_err(|e| format!("ibv_post_recv failed: {e}"))?;
    let mut params = ConnParams {
        responder_resources: 1,
        initiator_depth: 1,
        mpa: cli.mpa.options(),
        liveness: cli.liveness.liveness(),
        ..Default::default()
    };
    params.source = cli.source.as_deref().and_then(|s| resolve(s, 0));
    qp.connect(addr, &params).map_err(|e| format!("connect error {e}"))?;
    debug_log!("rdma_connect successful");
    let mut ping = 0u64;
    while cli.count == 0 || ping < cli.count {
        let data = ping_data(ping, ping_start(ping), cli.size);
        start_mr.write(0, &data).map_err(|e| e.to_string())?;
        advertise(&b, &start_mr, cli.size);
        qp.post_send(&[SendWr::send(ping, &[b.send.sge_all()])]).map_err(|e| format!("post send error {e}"))?;
        match wait(&qp, &cq, &b, "client")? {
            Waited::Recv(n) if n as usize == INFO_LEN => {}
            Waited::Recv(n) => return Err(format!("Received bogus data, size {n}")),
            Waited::Disconnected => return Ok(()),
            Waited::Rdma => return Err("wait for RDMA_WRITE_ADV state".into()),
        }
        advertise(&b, &b.rdma, cli.size);
        qp.post_send(&[SendWr::send(ping, &[b.send.sge_all()])]).map_err(|e| format!("post send error {e}"))?;
        match wait(&qp, &cq, &b, "client")? {
            Waited::Recv(n) if n as usize == INFO_LEN => {}
            Waited::Recv(n) => return Err(format!("Received bogus data, size {n}")),
            Waited::Disconnected => return Ok(()),
            Waited::Rdma => return Err("wait for RDMA_WRITE_COMPLETE state".into()),
        }
        if cli.validate {
            let got = b.rdma.to_vec(0, cli.size).map_err(|e| e.to_string())?;
            if got != data {
                return Err("data mismatch!".into());
            }
        }
        if cli.verbose {
            println!("ping data: {}", cstr(&b.rdma));
        }
        ping += 1;
    }
    qp.disconnect();
    // Wait for our own disconnect to complete, as rping does before it exits.
    let _ = wait(&qp, &cq, &b, "client");
    Ok(())
}

fn serve_one(cli: &Cli, dev: &Device, req: iwarp::ConnectRequest) -> Result<(), String> {
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(32).map_err(|e| e.to_string())?;
    let qp = qp_for(&pd, &cq, cli.busy_poll).map_err(|e| format!("setup_qp failed: {e}"))?;
    let b = buffers(&pd, cli.size, false).map_err(|e| format!("rping_setup_buffers failed: {e}"))?;
    qp.post_recv(&[RecvWr::new(0, &[b.recv.sge_all()])]).map_err(|e| format!("ibv_post_recv failed: {e}"))?;
    // rdma_accept(id, NULL): mirror the initiator's IRD/ORD.
    let params = ConnParams {
        responder_resources: req.ord().unwrap_or(1).max(1),
        initiator_depth: req.ird().unwrap_or(1).max(1),
        mpa: cli.mpa.options(),
        liveness: cli.liveness.liveness(),
        ..Default::default()
    };
    debug_log!("accepting client connection request");
    req.accept(&qp, &params).map_err(|e| format!("connect error {e}"))?;
    let mut wr_id = 0u64;
    let mut ping = 0u64;
    loop {
        let remote = match wait(&qp, &cq, &b, "server")? {
            Waited::Recv(n) if n as usize == INFO_LEN => parse_info(&info(&b)),
            Waited::Recv(n) => return Err(format!("Received bogus data, size {n}")),
            Waited::Disconnected => {
                eprintln!("wait for RDMA_READ_ADV state {STATE_DISCONNECTED}");
                return Ok(());
            }
            Waited::Rdma => return Err("wait for RDMA_READ_ADV state".into()),
        };
        debug_log!("server received sink adv");
        let len = (remote.2 as usize).min(b.rdma.len());
        wr_id += 1;
        qp.post_send(&[SendWr::read(wr_id, b.rdma.sge(0, len), RemoteAddr::unbounded(Stag(remote.1), remote.0))])
            .map_err(|e| format!("post send error {e}"))?;
        match wait(&qp, &cq, &b, "server")? {
            Waited::Rdma => {}
            Waited::Disconnected => return Ok(()),
            Waited::Recv(_) => return Err("wait for RDMA_READ_COMPLETE state".into()),
        }
        if cli.validate {
            check_ping(&b.rdma.to_vec(0, len).map_err(|e| e.to_string())?, ping, remote.2 as usize)?;
        }
        ping += 1;
        if cli.verbose {
            println!("server ping data: {}", cstr(&b.rdma));
        }
        wr_id += 1;
        qp.post_send(&[SendWr::send(wr_id, &[b.send.sge_all()])]).map_err(|e| format!("post send error {e}"))?;
        debug_log!("server posted go ahead");
        let remote = match wait(&qp, &cq, &b, "server")? {
            Waited::Recv(n) if n as usize == INFO_LEN => parse_info(&info(&b)),
            Waited::Recv(n) => return Err(format!("Received bogus data, size {n}")),
            Waited::Disconnected => return Ok(()),
            Waited::Rdma => return Err("wait for RDMA_WRITE_ADV state".into()),
        };
        // rping writes the string back with its NUL.
        let s = cstr(&b.rdma);
        let len = (s.len() + 1).min(b.rdma.len()).min(remote.2 as usize);
        wr_id += 1;
        qp.post_send(&[SendWr::write(wr_id, &[b.rdma.sge(0, len)], RemoteAddr::unbounded(Stag(remote.1), remote.0))])
            .map_err(|e| format!("post send error {e}"))?;
        match wait(&qp, &cq, &b, "server")? {
            Waited::Rdma => {}
            Waited::Disconnected => return Ok(()),
            Waited::Recv(_) => return Err("wait for RDMA_WRITE_COMPLETE state".into()),
        }
        wr_id += 1;
        qp.post_send(&[SendWr::send(wr_id, &[b.send.sge_all()])]).map_err(|e| format!("post send error {e}"))?;
        debug_log!("server posted go ahead");
    }
}

fn parse_info(v: &[u8; INFO_LEN]) -> (u64, u32, u32) {
    let addr = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    let rkey = u32::from_be_bytes(v[8..12].try_into().expect("4 bytes"));
    let size = u32::from_be_bytes(v[12..16].try_into().expect("4 bytes"));
    debug_log!("Received rkey {rkey:x} addr {addr:x} len {size} from peer");
    (addr, rkey, size)
}

fn run_server(cli: &Arc<Cli>, dev: &Device) -> Result<(), String> {
    let ip: IpAddr = match cli.addr.as_deref() {
        Some(h) => resolve(h, cli.port).ok_or_else(|| format!("invalid address {h}"))?.ip(),
        None => IpAddr::from([0, 0, 0, 0]),
    };
    let addr = SocketAddr::new(ip, cli.port);
    let listener =
        if cli.shared_port { dev.listen_shared(addr, 3, iwarp::SharedOptions::default()) } else { dev.listen(addr, 3) }
            .map_err(|e| format!("rdma_bind_addr: {e}"))?;
    if cli.shared_port {
        iwarp_tools::shared_port::spawn_line_echo(listener.clone());
    }
    listener.set_mpa_options(cli.mpa.options());
    debug_log!("rdma_listen");
    loop {
        let req = listener.get_request(None).map_err(|e| e.to_string())?;
        if cli.persistent {
            let dev = dev.clone();
            let cli2 = Arc::clone(cli);
            std::thread::spawn(move || {
                if let Err(e) = serve_one(&cli2, &dev, req) {
                    eprintln!("{e}");
                }
            });
        } else {
            return serve_one(cli, dev, req);
        }
    }
}

fn main() -> ExitCode {
    let cli = Arc::new(Cli::parse());
    iwarp_tools::init_tracing();
    DEBUG.store(cli.debug, Ordering::Relaxed);
    if !(cli.server || cli.client) {
        eprintln!("iwping: one of -s or -c is required");
        return ExitCode::from(22);
    }
    if cli.size < MIN_SIZE || cli.size > MAX_SIZE {
        eprintln!("Invalid size {} (valid range is {MIN_SIZE} to {})", cli.size, MAX_SIZE + 1);
        return ExitCode::from(22);
    }
    let dev = match Device::open(DeviceConfig::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("iwping: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = if cli.server { run_server(&cli, &dev) } else { run_client(&cli, &dev) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("rping {} failed: -1", if cli.server { "server" } else { "client" });
            ExitCode::from(255)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["iwping", "-c", "-a", "h", "-vVd", "-C", "3", "-S", "100", "-p", "9"]).unwrap();
        assert!(c.client && c.verbose && c.validate && c.debug);
        assert_eq!((c.count, c.size, c.port), (3, 100, 9));
    }

    #[test]
    fn ping_data_matches_rping() {
        let v = ping_data(0, b'A', 64);
        let s = std::str::from_utf8(&v[..63]).unwrap();
        assert_eq!(s, "rdma-ping-0: ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqr");
        assert_eq!(v[63], 0);
        let w = ping_data(1, b'z', 30);
        assert_eq!(&w[13..16], b"zAB");
    }

    #[test]
    fn ping_start_advances_and_wraps_as_rpings_client() {
        let mut start = b'A';
        for ping in 0..200 {
            assert_eq!(ping_start(ping), start, "ping {ping}");
            start = if start >= b'z' { b'A' } else { start + 1 };
        }
    }

    #[test]
    fn server_check_accepts_rpings_pattern_only() {
        for (ping, size) in [(0, 64), (57, 4096), (58, 65535), (1000, 26)] {
            let good = ping_data(ping, ping_start(ping), size);
            assert_eq!(check_ping(&good, ping, size), Ok(()));
            // a shorter read of the same buffer is its prefix
            assert_eq!(check_ping(&good[..size / 2], ping, size), Ok(()));
            let mut bad = good.clone();
            bad[size - 2] ^= 1;
            let e = check_ping(&bad, ping, size).unwrap_err();
            assert!(e.starts_with("data mismatch!") && e.contains(&format!("byte {}", size - 2)), "{e}");
            // the pattern of another ping is a mismatch too
            assert!(check_ping(&ping_data(ping + 1, ping_start(ping + 1), size), ping, size).is_err());
        }
    }
}
