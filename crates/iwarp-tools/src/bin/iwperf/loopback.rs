//! `iwperf loopback`: server and client in one process over 127.0.0.1, each test next to the
//! same measurement over plain TCP, with the ratio.

use crate::rdma::{self, Opts, Role, Test};
use crate::report::{BwResult, JsonLine, LatResult};
use crate::tcp;
use iwarp::MpaOptions;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runs per test; the median is reported.
    pub runs: usize,
    /// Comparisons to run (names as `write_bw:65536`, or test names); empty: all.
    pub tests: Vec<String>,
    /// Print JSON lines.
    pub json: bool,
    /// MPA options.
    pub mpa: MpaOptions,
    /// Override the message size.
    pub size: Option<usize>,
    /// Override the iterations.
    pub iters: Option<u64>,
}

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// The default comparisons: (test, size, iterations).
fn plan(cfg: &Config) -> Vec<(Test, usize, u64)> {
    let all = [
        (Test::WriteBw, 65536, 30_000),
        (Test::WriteBw, 1 << 20, 3000),
        (Test::ReadBw, 1 << 20, 3000),
        (Test::SendBw, 65536, 30_000),
        (Test::WriteLat, 8, 20_000),
        (Test::ReadLat, 8, 20_000),
        (Test::SendLat, 8, 20_000),
    ];
    all.iter()
        .filter(|(t, s, _)| {
            cfg.tests.is_empty() || cfg.tests.iter().any(|x| x == t.name() || *x == format!("{}:{}", t.name(), s))
        })
        .map(|&(t, s, n)| (t, cfg.size.unwrap_or(s), cfg.iters.unwrap_or(n)))
        .collect()
}

fn opts(test: Test, size: usize, iters: u64, mpa: &MpaOptions) -> Opts {
    Opts {
        test,
        size,
        iters,
        duration: None,
        all: false,
        qps: 1,
        tx_depth: if test.is_bw() { 128 } else { 1 },
        rx_depth: 512,
        cq_mod: 0,
        outs: 128,
        gbits: false,
        events: false,
        dev_name: "iwarp0".into(),
        mpa: mpa.clone(),
        quiet: true,
        compat_sleep: false,
        shared_port: false,
    }
}

enum Measured {
    Bw(BwResult),
    Lat(LatResult),
}

fn iwarp_once(test: Test, size: usize, iters: u64, mpa: &MpaOptions) -> Result<Measured, String> {
    let o = opts(test, size, iters, mpa);
    let so = o.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || rdma::run(&so, Role::Server(SocketAddr::from((LOCALHOST, 0))), Some(tx)));
    let port = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "loopback server did not start".to_string())?;
    let client = rdma::run(&o, Role::Client(SocketAddr::from((LOCALHOST, port))), None);
    let server = server.join().map_err(|_| "loopback server panicked".to_string())?;
    let c = client?;
    let s = server?;
    if test == Test::SendBw {
        // The receiver's count is the one that says what arrived.
        return s.bw.first().copied().map(Measured::Bw).ok_or_else(|| "no result".into());
    }
    if test.is_bw() {
        c.bw.first().copied().map(Measured::Bw).ok_or_else(|| "no result".into())
    } else {
        c.lat.first().copied().map(Measured::Lat).ok_or_else(|| "no result".into())
    }
}

fn tcp_once(test: Test, size: usize, iters: u64) -> Result<Measured, String> {
    let l = TcpListener::bind(SocketAddr::from((LOCALHOST, 0))).map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let bw = test.is_bw();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let s = tcp::accept_one(&l)?;
        if bw {
            tcp::bw_server(s).map(|_| ())
        } else {
            tcp::lat_server(s, tcp::Wait::BusyPoll)
        }
    });
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let amount = tcp::Amount { iters, duration: None };
    let r = if bw {
        Measured::Bw(tcp::bw_client(s, size, amount).map_err(|e| e.to_string())?)
    } else {
        Measured::Lat(tcp::lat_client(s, size, amount, tcp::Wait::BusyPoll).map_err(|e| e.to_string())?)
    };
    server.join().map_err(|_| "tcp server panicked".to_string())?.map_err(|e| e.to_string())?;
    Ok(r)
}

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = v[v.len() / 2];
    let spread = if m > 0.0 { (v[v.len() - 1] - v[0]) / m } else { 0.0 };
    (m, spread)
}

/// The figure compared: Gbit/s for bandwidth; µs for latency (half round trip, or the
/// whole round trip for reads, as perftest reports them).
fn figure(m: &Measured, test: Test, tcp: bool) -> f64 {
    match m {
        Measured::Bw(r) => r.gbits(),
        // TCP's figure is half a round trip; a Read is a whole one.
        Measured::Lat(r) if tcp && test == Test::ReadLat => 2.0 * r.t_typical,
        Measured::Lat(r) => r.t_typical,
    }
}

/// Runs the comparisons and prints the table (and JSON lines).
pub fn run(cfg: &Config) -> Result<(), String> {
    println!("iwperf loopback: this iWARP stack over the host's TCP next to plain TCP, both on 127.0.0.1");
    println!("median of {} runs each (spread = (max - min) / median); bandwidth in Gbit/s, latency in usec", cfg.runs);
    println!("latency is perftest's t_typical: half a round trip for write/send, a whole one for read");
    println!();
    println!(
        " {:<10} {:>8}   {:>10} {:>7}   {:>10} {:>7}   {:>9}",
        "test", "size", "iWARP", "spread", "TCP", "spread", "iWARP/TCP"
    );
    for (test, size, iters) in plan(cfg) {
        let mut iw = Vec::new();
        let mut tc = Vec::new();
        for _ in 0..cfg.runs {
            let m = iwarp_once(test, size, iters, &cfg.mpa)?;
            iw.push(figure(&m, test, false));
            if cfg.json {
                json(test, size, &m, "iwarp");
            }
            let t = tcp_once(test, size, iters)?;
            tc.push(figure(&t, test, true));
            if cfg.json {
                json(test, size, &t, "tcp");
            }
        }
        let (mi, si) = median(iw);
        let (mt, st) = median(tc);
        let ratio = if mt > 0.0 { mi / mt } else { 0.0 };
        println!(
            " {:<10} {:>8}   {:>10.2} {:>6.0}%   {:>10.2} {:>6.0}%   {:>9.2}",
            test.name(),
            size,
            mi,
            si * 100.0,
            mt,
            st * 100.0,
            ratio
        );
    }
    Ok(())
}

fn json(test: Test, size: usize, m: &Measured, transport: &str) {
    let line = match m {
        Measured::Bw(r) => JsonLine {
            test: test.name(),
            role: "loopback",
            transport,
            size,
            bw: Some(r.into()),
            lat: None,
            cpu_seconds: None,
        },
        Measured::Lat(r) => JsonLine {
            test: test.name(),
            role: "loopback",
            transport,
            size,
            bw: None,
            lat: Some(*r),
            cpu_seconds: None,
        },
    };
    if let Ok(s) = serde_json::to_string(&line) {
        println!("{s}");
    }
}
