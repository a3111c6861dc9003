//! `iwperf scale`: thousands of connected queue pairs in one process pair over loopback.
//!
//! The client starts a server process (`iwperf scale_serve`), connects N queue pairs to it
//! (all on one port, which also carries a plain-TCP control line), measures the memory each
//! idle queue pair costs on both sides, then has every queue pair RDMA Write for a while and
//! reports the aggregate bandwidth and that every queue pair did work.

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
}

#[derive(Debug, Serialize)]
struct ScaleJson {
    test: &'static str,
    qps: usize,
    size: usize,
    seconds: f64,
    gbit_per_s: f64,
    client_bytes_per_idle_qp: f64,
    server_bytes_per_idle_qp: f64,
    qps_that_worked: usize,
    connect_seconds: f64,
}

const TARGET_LEN: usize = 1 << 20;

/// The server process: accepts iWARP queue pairs onto one shared target region, and answers
/// `stat` lines on plain TCP connections to the same port with its connection count and RSS.
pub fn serve(port: u16) -> Result<(), String> {
    let _ = iwarp::util::raise_fd_limit();
    let dev = Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).map_err(|e| e.to_string())?;
    let pd = dev.alloc_pd();
    let target = pd.reg_mr(TARGET_LEN, Access::LOCAL_WRITE | Access::REMOTE_WRITE).map_err(|e| e.to_string())?;
    let cq = dev.create_cq(1 << 16).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let l = dev.listen_shared(addr, 4096, SharedOptions::default()).map_err(|e| e.to_string())?;
    println!("port {}", l.local_addr().port());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut pdata = target.rkey().to_be_bytes().to_vec();
    pdata.extend_from_slice(&target.addr().to_be_bytes());
    let mut qps: Vec<QueuePair> = Vec::new();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        match l.get_incoming(Some(Duration::from_secs(600))) {
            Ok(Incoming::Iwarp(req)) => {
                let mut init = QpInit::new(&cq, &cq);
                init.cap.max_send_wr = 4;
                init.cap.max_recv_wr = 1;
                let qp = pd.create_qp(&init).map_err(|e| e.to_string())?;
                if req.accept(&qp, &ConnParams { private_data: pdata.clone(), ..Default::default() }).is_ok() {
                    qps.push(qp);
                    count.store(qps.len(), std::sync::atomic::Ordering::Relaxed);
                }
                // Forget queue pairs whose peers went away (between counts).
                if qps.len().is_multiple_of(1024) {
                    qps.retain(|q| q.state() != iwarp::QpState::Error);
                    count.store(qps.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(Incoming::Plain(p)) => {
                let count = std::sync::Arc::clone(&count);
                std::thread::spawn(move || stat_line(p, &count));
            }
            Err(_) => return Ok(()),
        }
    }
}

fn stat_line(p: iwarp::PlainStream, count: &std::sync::atomic::AtomicUsize) {
    let Ok(mut w) = p.get_ref().try_clone() else { return };
    let mut r = BufReader::new(p);
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.trim() == "quit" {
            std::process::exit(0);
        }
        let rss = iwarp::util::resident_bytes().unwrap_or(0);
        let _ = writeln!(w, "conns {} rss {rss}", count.load(std::sync::atomic::Ordering::Relaxed));
        line.clear();
    }
}

fn stat(ctl: &mut (TcpStream, BufReader<TcpStream>)) -> Result<(usize, u64), String> {
    ctl.0.write_all(b"stat\n").map_err(|e| e.to_string())?;
    let mut line = String::new();
    ctl.1.read_line(&mut line).map_err(|e| e.to_string())?;
    let f: Vec<&str> = line.split_whitespace().collect();
    match f.as_slice() {
        ["conns", c, "rss", r] => Ok((c.parse().unwrap_or(0), r.parse().unwrap_or(0))),
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
    let port: u16 = first.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).ok_or("server did not start")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = run_counts(cfg, addr);
    let _ = TcpStream::connect(addr).and_then(|mut s| s.write_all(b"quit\n"));
    let _ = child.wait();
    r
}

fn run_counts(cfg: &Config, addr: SocketAddr) -> Result<(), String> {
    let mut ctl_stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    // A plain TCP line on the same port as the iWARP connections (a shared listener).
    ctl_stream.write_all(b"stat\n").map_err(|e| e.to_string())?;
    let mut ctl = (ctl_stream.try_clone().map_err(|e| e.to_string())?, BufReader::new(ctl_stream));
    let mut line = String::new();
    ctl.1.read_line(&mut line).map_err(|e| e.to_string())?;
    println!("iwperf scale: N connected queue pairs in one process pair over 127.0.0.1, {} B RDMA Writes", cfg.size);
    println!(
        " {:>7}   {:>10}   {:>12} {:>12}   {:>10}   {:>9}",
        "QPs", "connect s", "client B/QP", "server B/QP", "Gbit/s", "QPs busy"
    );
    let mut first_bw = None;
    for &n in &cfg.qps {
        let dev = Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).map_err(|e| e.to_string())?;
        let pd = dev.alloc_pd();
        let src = pd.reg_mr(cfg.size, Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
        let cq = dev.create_cq(4 * n + 1024).map_err(|e| e.to_string())?;
        let (_, srv_before) = stat(&mut ctl)?;
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
            let (c, rss) = stat(&mut ctl)?;
            srv_after = rss;
            if c >= n {
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
                let pd = q.conn_info().map(|i| i.peer_private_data).unwrap_or_default();
                let stag = Stag(u32::from_be_bytes(pd.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])));
                let to = u64::from_be_bytes(pd.get(4..12).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
                RemoteAddr { stag, to }
            })
            .collect();
        let (bytes, secs, busy) = write_all(&qps, &remotes, &src, &cq, cfg)?;
        let gbit = bytes as f64 * 8.0 / secs / 1e9;
        let first = *first_bw.get_or_insert(gbit);
        println!(
            " {:>7}   {:>10.2}   {:>12.0} {:>12.0}   {:>10.2}   {:>9}{}",
            n,
            connect_s,
            per_cli,
            per_srv,
            gbit,
            busy,
            if first > 0.0 && n != cfg.qps[0] {
                format!("   ({:.2}x the {}-QP figure)", gbit / first, cfg.qps[0])
            } else {
                String::new()
            }
        );
        if busy != n {
            return Err(format!("only {busy} of {n} queue pairs completed a Write"));
        }
        if cfg.json {
            let j = ScaleJson {
                test: "scale",
                qps: n,
                size: cfg.size,
                seconds: secs,
                gbit_per_s: gbit,
                client_bytes_per_idle_qp: per_cli,
                server_bytes_per_idle_qp: per_srv,
                qps_that_worked: busy,
                connect_seconds: connect_s,
            };
            println!("{}", serde_json::to_string(&j).map_err(|e| e.to_string())?);
        }
        for q in &qps {
            q.disconnect();
        }
        drop(qps);
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Every queue pair keeps a few Writes in flight for the configured time.
fn write_all(
    qps: &[QueuePair],
    remotes: &[RemoteAddr],
    src: &MemoryRegion,
    cq: &iwarp::CompletionQueue,
    cfg: &Config,
) -> Result<(u64, f64, usize), String> {
    let n = qps.len();
    // About the same bytes in flight whatever the count.
    let depth = (128 / n).max(1);
    let mut outstanding = vec![0usize; n];
    let mut done = vec![0u64; n];
    let index: std::collections::HashMap<u32, usize> = qps.iter().enumerate().map(|(i, q)| (q.qp_num(), i)).collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cfg.seconds);
    let mut wc = vec![WorkCompletion::default(); 1024];
    let mut bytes = 0u64;
    let mut posting = true;
    loop {
        if posting {
            for i in 0..n {
                while outstanding[i] < depth {
                    qps[i]
                        .post_send(&[SendWr::write(i as u64, &[src.sge_all()], remotes[i])])
                        .map_err(|e| format!("post on QP {i}: {e}"))?;
                    outstanding[i] += 1;
                }
            }
        }
        let got = cq.wait(&mut wc, Some(Duration::from_millis(10)));
        for c in &wc[..got] {
            if c.status != WcStatus::Success {
                return Err(format!("completion error {:?} on QP {}", c.status, c.qp_num));
            }
            let i = index.get(&c.qp_num).copied().unwrap_or(c.wr_id as usize);
            outstanding[i] -= 1;
            done[i] += 1;
            if posting {
                bytes += cfg.size as u64;
            }
        }
        if posting && Instant::now() >= end {
            posting = false;
        }
        if !posting && outstanding.iter().all(|&o| o == 0) {
            break;
        }
    }
    let secs = end.duration_since(start).as_secs_f64();
    Ok((bytes, secs, done.iter().filter(|&&d| d > 0).count()))
}
