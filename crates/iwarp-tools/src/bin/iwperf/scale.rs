//! `iwperf scale`: thousands of connected queue pairs in one process pair over loopback.
//!
//! The client starts a server process (`iwperf scale_serve`), connects N queue pairs to it
//! (all on one port, which also carries a plain-TCP control line), measures the memory each
//! idle queue pair costs on both sides, then has every queue pair RDMA Write for a while and
//! reports the aggregate bandwidth and that every queue pair did work.

use crate::report::median_spread;
use iwarp::{
    Access, ConnParams, Device, DeviceConfig, Incoming, MemoryRegion, QpInit, QueuePair, RemoteAddr, SendWr,
    SharedOptions, Stag, WcStatus, WorkCompletion,
};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Queue-pair counts to measure.
    pub qps: Vec<usize>,
    /// Write size.
    pub size: usize,
    /// Seconds of writing per count.
    pub seconds: f64,
    /// JSON lines.
    pub json: bool,
    /// Rounds (the median is reported).
    pub runs: usize,
    /// Post every Write on its own (one doorbell each) instead of a queue pair's turns that
    /// come due together as one list.
    pub one_per_post: bool,
}

#[derive(Debug, Serialize)]
struct ScaleJson {
    test: &'static str,
    qps: usize,
    size: usize,
    seconds: f64,
    gbit_per_s: f64,
    gbit_spread: f64,
    tcp_gbit_per_s: f64,
    tcp_gbit_spread: f64,
    runs: usize,
    one_per_post: bool,
    /// Writes posted and `post_send` calls that posted them, all rounds.
    writes: u64,
    posts: u64,
    client_bytes_per_idle_qp: f64,
    server_bytes_per_idle_qp: f64,
    qps_that_worked: usize,
    connect_seconds: f64,
}

const TARGET_LEN: usize = 1 << 20;

/// The server process: accepts iWARP queue pairs onto one shared target region; answers
/// `stat` lines on plain TCP connections to the same port with the number of connections it
/// has accepted so far, its RSS and the bytes its plain-TCP reader has taken; and runs that
/// reader on a second port for the TCP baseline.
pub fn serve(port: u16) -> Result<(), String> {
    let _ = iwarp::util::raise_fd_limit();
    // One event loop: the client's side has one thread too.
    let dev = Device::open(DeviceConfig { workers: 1, ..DeviceConfig::default() }).map_err(|e| e.to_string())?;
    let pd = dev.alloc_pd();
    let target = pd.reg_mr(TARGET_LEN, Access::LOCAL_WRITE | Access::REMOTE_WRITE).map_err(|e| e.to_string())?;
    let cq = dev.create_cq(1 << 16).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let l = dev.listen_shared(addr, 4096, SharedOptions::default()).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(|e| e.to_string())?;
    let tcp_port = tcp.local_addr().map_err(|e| e.to_string())?.port();
    let tcp_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let tcp_bytes = std::sync::Arc::clone(&tcp_bytes);
        std::thread::spawn(move || tcp_reader(tcp, &tcp_bytes));
    }
    println!("port {} tcp {tcp_port}", l.local_addr().port());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut pdata = target.rkey().to_be_bytes().to_vec();
    pdata.extend_from_slice(&target.addr().to_be_bytes());
    let mut qps: Vec<QueuePair> = Vec::new();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        match l.get_incoming(Some(Duration::from_millis(200))) {
            Ok(Incoming::Iwarp(req)) => {
                let mut init = QpInit::new(&cq, &cq);
                init.cap.max_send_wr = 4;
                init.cap.max_recv_wr = 1;
                let qp = pd.create_qp(&init).map_err(|e| e.to_string())?;
                if req.accept(&qp, &ConnParams { private_data: pdata.clone(), ..Default::default() }).is_ok() {
                    qps.push(qp);
                    // Accepted so far, in all rounds.
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(Incoming::Plain(p)) => {
                let count = std::sync::Arc::clone(&count);
                let tcp_bytes = std::sync::Arc::clone(&tcp_bytes);
                std::thread::spawn(move || stat_line(p, &count, &tcp_bytes));
            }
            // Quiet: forget queue pairs whose peers went away (earlier counts).
            Err(iwarp::Error::TimedOut) => qps.retain(|q| q.state() == iwarp::QpState::Rts),
            Err(_) => return Ok(()),
        }
    }
}

/// The plain-TCP baseline's receiving side: accepts connections and reads everything they
/// send, on one event-loop thread.
fn tcp_reader(l: std::net::TcpListener, total: &std::sync::atomic::AtomicU64) {
    use mio::net::{TcpListener as MioListener, TcpStream as MioStream};
    use mio::{Events, Interest, Poll, Token};
    use std::io::Read;
    const LISTENER: Token = Token(usize::MAX);
    let Ok(mut poll) = Poll::new() else { return };
    if l.set_nonblocking(true).is_err() {
        return;
    }
    let mut l = MioListener::from_std(l);
    if poll.registry().register(&mut l, LISTENER, Interest::READABLE).is_err() {
        return;
    }
    let mut socks: std::collections::HashMap<usize, MioStream> = std::collections::HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if poll.poll(&mut events, None).is_err() {
            return;
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut s, _)) = l.accept() {
                    if poll.registry().register(&mut s, Token(next), Interest::READABLE).is_ok() {
                        socks.insert(next, s);
                        next += 1;
                    }
                }
                continue;
            }
            let t = ev.token().0;
            let Some(s) = socks.get_mut(&t) else { continue };
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(k) => {
                        total.fetch_add(k as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if closed {
                if let Some(mut s) = socks.remove(&t) {
                    let _ = poll.registry().deregister(&mut s);
                }
            }
        }
    }
}

fn stat_line(p: iwarp::PlainStream, count: &std::sync::atomic::AtomicUsize, tcp: &std::sync::atomic::AtomicU64) {
    let Ok(mut w) = p.get_ref().try_clone() else { return };
    let mut r = BufReader::new(p);
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.trim() == "quit" {
            std::process::exit(0);
        }
        let rss = iwarp::util::resident_bytes().unwrap_or(0);
        let c = count.load(std::sync::atomic::Ordering::Relaxed);
        let t = tcp.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(w, "conns {c} rss {rss} tcp {t}");
        line.clear();
    }
}

/// The server's counters.
#[derive(Debug, Clone, Copy)]
struct Stat {
    conns: usize,
    rss: u64,
    tcp_bytes: u64,
}

fn stat(ctl: &mut (TcpStream, BufReader<TcpStream>)) -> Result<Stat, String> {
    ctl.0.write_all(b"stat\n").map_err(|e| e.to_string())?;
    let mut line = String::new();
    ctl.1.read_line(&mut line).map_err(|e| e.to_string())?;
    let f: Vec<&str> = line.split_whitespace().collect();
    match f.as_slice() {
        ["conns", c, "rss", r, "tcp", t] => Ok(Stat {
            conns: c.parse().map_err(|_| format!("bad stat line {line:?}"))?,
            rss: r.parse().map_err(|_| format!("bad stat line {line:?}"))?,
            tcp_bytes: t.parse().map_err(|_| format!("bad stat line {line:?}"))?,
        }),
        _ => Err(format!("bad stat line {line:?}")),
    }
}

/// The client: runs every count and prints the table.
pub fn run(cfg: &Config) -> Result<(), String> {
    let _ = iwarp::util::raise_fd_limit();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["scale_serve", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the server process: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no server stdout")?);
    let mut first = String::new();
    out.read_line(&mut first).map_err(|e| e.to_string())?;
    // "port P tcp T"
    let words: Vec<&str> = first.split_whitespace().collect();
    let (port, tcp_port): (u16, u16) = match words.as_slice() {
        ["port", p, "tcp", t] => (p.parse().map_err(|_| "bad port")?, t.parse().map_err(|_| "bad port")?),
        _ => return Err(format!("server did not start ({first:?})")),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = run_counts(cfg, addr, SocketAddr::from(([127, 0, 0, 1], tcp_port)));
    let _ = TcpStream::connect(addr).and_then(|mut s| s.write_all(b"quit\n"));
    let _ = child.wait();
    r
}

/// One measurement of one count.
#[derive(Debug, Clone, Copy)]
struct Sample {
    connect_s: f64,
    per_cli: f64,
    per_srv: f64,
    gbit: f64,
    busy: usize,
    secs: f64,
    writes: u64,
    posts: u64,
    /// The same count of plain TCP connections.
    tcp_gbit: f64,
}

fn run_counts(cfg: &Config, addr: SocketAddr, tcp_addr: SocketAddr) -> Result<(), String> {
    let mut ctl_stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    // A plain TCP line on the same port as the iWARP connections (a shared listener).
    ctl_stream.write_all(b"stat\n").map_err(|e| e.to_string())?;
    let mut ctl = (ctl_stream.try_clone().map_err(|e| e.to_string())?, BufReader::new(ctl_stream));
    let mut line = String::new();
    ctl.1.read_line(&mut line).map_err(|e| e.to_string())?;
    // Rounds interleave the counts, so that a slow spell of this shared machine hits them alike.
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cfg.qps.len()];
    for round in 0..cfg.runs {
        for (k, &n) in cfg.qps.iter().enumerate() {
            let mut s = measure(cfg, addr, &mut ctl, n)?;
            s.tcp_gbit = tcp_scale(n, cfg, tcp_addr, &mut ctl)?;
            eprintln!("round {}: {n} QPs: {:.2} Gbit/s, {} busy; TCP {:.2}", round + 1, s.gbit, s.busy, s.tcp_gbit);
            if s.busy != n {
                return Err(format!("only {} of {n} queue pairs completed a Write", s.busy));
            }
            samples[k].push(s);
        }
    }
    println!("iwperf scale: N connected queue pairs in one process pair over 127.0.0.1, {} B RDMA Writes", cfg.size);
    println!(
        "{} Writes in flight in all, queue pairs taking turns, {}; median of {} rounds (spread = (max - min) / median)",
        IN_FLIGHT,
        if cfg.one_per_post { "one Write per post" } else { "a queue pair's due turns posted as one list" },
        cfg.runs
    );
    println!(
        "TCP: N connections in turn, a turn = one write of what one queue pair has in flight ({} / N messages, at least 1)",
        IN_FLIGHT
    );
    println!("memory: resident bytes per idle queue pair, first round (user space; socket buffers are the kernel's)");
    println!(
        " {:>7}   {:>9}   {:>11} {:>11}   {:>8} {:>6}  {:>8}   {:>8} {:>6}  {:>8}",
        "QPs", "connect s", "client B/QP", "server B/QP", "iWARP", "spread", "vs 1st", "TCP", "spread", "vs 1st"
    );
    let mut first = None;
    let mut first_tcp = None;
    for (k, &n) in cfg.qps.iter().enumerate() {
        let v = &samples[k];
        let (gbit, spread) = median_spread(v.iter().map(|s| s.gbit).collect());
        let (connect_s, _) = median_spread(v.iter().map(|s| s.connect_s).collect());
        // Freed memory is not returned to the system: only the first round's growth counts.
        let (per_cli, per_srv) = (v[0].per_cli, v[0].per_srv);
        let busy = v.iter().map(|s| s.busy).min().unwrap_or(0);
        let (tcp, tcp_spread) = median_spread(v.iter().map(|s| s.tcp_gbit).collect());
        let base = *first.get_or_insert(gbit);
        let tcp_base = *first_tcp.get_or_insert(tcp);
        let rel = |x: f64, b: f64| if b > 0.0 { x / b } else { 0.0 };
        println!(
            " {:>7}   {:>9.2}   {:>11.0} {:>11.0}   {:>8.2} {:>5.0}%  {:>7.2}x   {:>8.2} {:>5.0}%  {:>7.2}x",
            n,
            connect_s,
            per_cli,
            per_srv,
            gbit,
            spread * 100.0,
            rel(gbit, base),
            tcp,
            tcp_spread * 100.0,
            rel(tcp, tcp_base)
        );
        if busy != n {
            return Err(format!("only {busy} of {n} queue pairs completed a Write in every round"));
        }
        if cfg.json {
            let j = ScaleJson {
                test: "scale",
                qps: n,
                size: cfg.size,
                seconds: v.iter().map(|s| s.secs).sum::<f64>() / v.len() as f64,
                gbit_per_s: gbit,
                gbit_spread: spread,
                tcp_gbit_per_s: tcp,
                tcp_gbit_spread: tcp_spread,
                runs: v.len(),
                one_per_post: cfg.one_per_post,
                writes: v.iter().map(|s| s.writes).sum(),
                posts: v.iter().map(|s| s.posts).sum(),
                client_bytes_per_idle_qp: per_cli,
                server_bytes_per_idle_qp: per_srv,
                qps_that_worked: busy,
                connect_seconds: connect_s,
            };
            println!("{}", serde_json::to_string(&j).map_err(|e| e.to_string())?);
        }
    }
    Ok(())
}

/// Connects `n` queue pairs, measures their idle memory on both sides, has them write, and
/// disconnects them.
fn measure(
    cfg: &Config,
    addr: SocketAddr,
    ctl: &mut (TcpStream, BufReader<TcpStream>),
    n: usize,
) -> Result<Sample, String> {
    let dev = Device::open(DeviceConfig { workers: 1, ..DeviceConfig::default() }).map_err(|e| e.to_string())?;
    let pd = dev.alloc_pd();
    let src = pd.reg_mr(cfg.size, Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
    let cq = dev.create_cq(4 * n + 1024).map_err(|e| e.to_string())?;
    let Stat { conns: before_conns, rss: srv_before, .. } = stat(ctl)?;
    let cli_before = iwarp::util::resident_bytes().unwrap_or(0);
    let t0 = Instant::now();
    let mut qps = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(512) {
        let lo = chunk * 512;
        let hi = (lo + 512).min(n);
        for _ in lo..hi {
            let mut init = QpInit::new(&cq, &cq);
            init.cap.max_send_wr = 256;
            init.cap.max_recv_wr = 1;
            let qp = pd.create_qp(&init).map_err(|e| e.to_string())?;
            qp.connect_start(addr, &ConnParams::default()).map_err(|e| format!("connect: {e}"))?;
            qps.push(qp);
        }
        for qp in &qps[lo..hi] {
            qp.wait_established(Duration::from_secs(60)).map_err(|e| format!("connect: {e}"))?;
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    // Let the server finish accepting, then measure idle memory on both sides.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut srv_after = srv_before;
    while Instant::now() < deadline {
        let st = stat(ctl)?;
        srv_after = st.rss;
        if st.conns >= before_conns + n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cli_after = iwarp::util::resident_bytes().unwrap_or(0);
    let per_cli = cli_after.saturating_sub(cli_before) as f64 / n as f64;
    let per_srv = srv_after.saturating_sub(srv_before) as f64 / n as f64;
    let remotes: Vec<RemoteAddr> = qps
        .iter()
        .map(|q| {
            let pd = q.conn_info().map(|i| i.negotiated.peer_private_data).unwrap_or_default();
            let stag = Stag(u32::from_be_bytes(pd.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])));
            let to = u64::from_be_bytes(pd.get(4..12).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
            RemoteAddr::unbounded(stag, to)
        })
        .collect();
    let w = write_all(&qps, &remotes, &src, &cq, cfg)?;
    for q in &qps {
        q.disconnect();
    }
    drop(qps);
    // Let both sides close before the next count.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Sample {
        connect_s,
        per_cli,
        per_srv,
        gbit: w.bytes as f64 * 8.0 / w.secs / 1e9,
        busy: w.busy,
        secs: w.secs,
        writes: w.writes,
        posts: w.posts,
        tcp_gbit: 0.0,
    })
}

/// What the writing phase did.
struct Written {
    /// Bytes of the Writes that completed before the end.
    bytes: u64,
    secs: f64,
    /// Queue pairs with at least one completed Write.
    busy: usize,
    /// Writes posted, and the `post_send` calls that posted them.
    writes: u64,
    posts: u64,
}

/// Writes in flight across all queue pairs, whatever their count (8 MiB of 64 KiB Writes).
const IN_FLIGHT: usize = 128;

/// The queue pairs take turns: at most [`IN_FLIGHT`] Writes are outstanding in all, a queue
/// pair whose Write completed goes to the back of the line, so with 10,000 queue pairs every
/// one of them works in turn while the bytes in flight stay those of the 1-QP run (this
/// measures the stack's cost per connection, not the kernel's memory for 10,000 full socket
/// buffers). The turns that come due together are posted with one `post_send` per queue pair
/// (a list, one doorbell, as `iwperf loopback` and an application with several requests ready
/// post them): up to 128 Writes on a single queue pair, one each at 100 or 10,000.
/// `one_per_post` posts every Write on its own.
fn write_all(
    qps: &[QueuePair],
    remotes: &[RemoteAddr],
    src: &MemoryRegion,
    cq: &iwarp::CompletionQueue,
    cfg: &Config,
) -> Result<Written, String> {
    let n = qps.len();
    let per_qp = (IN_FLIGHT / n).max(1);
    let mut line: std::collections::VecDeque<usize> = (0..per_qp).flat_map(|_| 0..n).collect();
    let mut in_flight = 0usize;
    let mut done = vec![0u64; n];
    let index: std::collections::HashMap<u32, usize> = qps.iter().enumerate().map(|(i, q)| (q.qp_num(), i)).collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cfg.seconds);
    let mut wc = vec![WorkCompletion::default(); 1024];
    let mut bytes = 0u64;
    let mut posting = true;
    let mut due: Vec<usize> = Vec::with_capacity(IN_FLIGHT);
    let mut wrs: Vec<SendWr<'_>> = Vec::with_capacity(IN_FLIGHT);
    let (mut writes, mut posts) = (0u64, 0u64);
    loop {
        let k = if posting { (IN_FLIGHT - in_flight).min(line.len()) } else { 0 };
        due.clear();
        due.extend(line.drain(..k));
        if !cfg.one_per_post && per_qp > 1 {
            // Gather each queue pair's turns (a queue pair has more than one only below
            // IN_FLIGHT queue pairs). Every due turn is posted in this pass, so their order
            // within it does not matter.
            due.sort_unstable();
        }
        for turns in due.chunk_by(|a, b| a == b && !cfg.one_per_post) {
            let i = turns[0];
            wrs.clear();
            wrs.extend(turns.iter().map(|_| SendWr::write(i as u64, &[src.sge_all()], remotes[i])));
            qps[i].post_send(&wrs).map_err(|e| format!("post on QP {i}: {e}"))?;
            in_flight += turns.len();
            writes += turns.len() as u64;
            posts += 1;
        }
        let got = cq.wait(&mut wc, Some(Duration::from_millis(10)));
        for c in &wc[..got] {
            if c.status != WcStatus::Success {
                return Err(format!("completion error {:?} on QP {}", c.status, c.qp_num));
            }
            let i = index.get(&c.qp_num).copied().unwrap_or(c.wr_id as usize);
            in_flight -= 1;
            done[i] += 1;
            line.push_back(i);
            if posting {
                bytes += cfg.size as u64;
            }
        }
        if posting && Instant::now() >= end {
            posting = false;
        }
        if !posting && in_flight == 0 {
            break;
        }
    }
    let secs = end.duration_since(start).as_secs_f64();
    Ok(Written { bytes, secs, busy: done.iter().filter(|&&d| d > 0).count(), writes, posts })
}

/// The same shape over plain TCP: `n` connections to the server process's reader, this
/// thread writing to them in turn. A connection's turn hands the socket what the RDMA side has
/// in flight on one queue pair, `IN_FLIGHT / n` messages of `size` bytes (at least one), in
/// one `write_all`: one 64 KiB `write` at 100 or 10,000 connections, 8 MiB at once on a single
/// one, as the stack's transmit batches queued Writes. A message counts once the socket has
/// taken it, as an RDMA completion does. Returns Gbit/s once the reader has taken every byte.
fn tcp_scale(
    n: usize,
    cfg: &Config,
    addr: SocketAddr,
    ctl: &mut (TcpStream, BufReader<TcpStream>),
) -> Result<f64, String> {
    let before = stat(ctl)?.tcp_bytes;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let c = TcpStream::connect(addr).map_err(|e| format!("tcp connect: {e}"))?;
        conns.push(c);
    }
    let msg = vec![0x5a_u8; cfg.size * (IN_FLIGHT / n).max(1)];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cfg.seconds);
    let mut sent = 0u64;
    'outer: loop {
        for c in conns.iter_mut() {
            c.write_all(&msg).map_err(|e| e.to_string())?;
            sent += msg.len() as u64;
            if Instant::now() >= end {
                break 'outer;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = stat(ctl)?.tcp_bytes - before;
        if got == sent {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("tcp scale: {sent} bytes written, {got} read"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the closed connections go before the next count.
    std::thread::sleep(Duration::from_millis(300));
    Ok(sent as f64 * 8.0 / secs / 1e9)
}
