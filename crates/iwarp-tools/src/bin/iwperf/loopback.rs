//! `iwperf loopback`: server and client in one process over 127.0.0.1, each test next to the
//! same measurement over plain TCP, with the ratio.

use crate::rdma::{self, Opts, Role, Test};
use crate::report::{median_spread, BidirJson, BwResult, JsonLine, LatResult};
use crate::tcp;
use iwarp::MpaOptions;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runs per test; the median is reported.
    pub runs: usize,
    /// Comparisons to run (names as `write_bw:65536`, or test names; `write_bw-b` is the
    /// bidirectional row); empty: the defaults.
    pub tests: Vec<String>,
    /// Print JSON lines.
    pub json: bool,
    /// MPA options.
    pub mpa: MpaOptions,
    /// Override the message size.
    pub size: Option<usize>,
    /// Override the iterations.
    pub iters: Option<u64>,
    /// Bandwidth against message size, 64 B to 4 MiB, for Write, Read, Send and TCP.
    pub sweep: bool,
    /// Event-loop spin after activity, microseconds.
    pub worker_spin_us: u64,
    /// Event-driven: every waiting side sleeps (completion waits; blocking TCP reads).
    pub events: bool,
}

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// A comparison row.
#[derive(Debug, Clone, Copy)]
struct Row {
    test: Test,
    size: usize,
    iters: u64,
    /// Report messages per second (the small-message rate) instead of Gbit/s.
    rate: bool,
    /// Both directions at once (perftest `-b`, next to `tcp_bw -b`): the aggregate.
    bidir: bool,
}

impl Row {
    /// The name `--tests` selects it by (with or without `:size`), and the table's, but for
    /// the `*` of the message-rate row: `write_bw-b` for the bidirectional one.
    fn name(&self) -> String {
        if self.bidir {
            format!("{}-b", self.test.name())
        } else {
            self.test.name().to_string()
        }
    }

    fn label(&self) -> String {
        if self.rate {
            format!("{}*", self.name())
        } else {
            self.name()
        }
    }
}

fn iters_for(size: usize) -> u64 {
    // About 2 GB per run (at least 2000 messages, at most a million).
    ((2u64 << 30) / size as u64).clamp(2000, 1_000_000)
}

/// The comparisons.
fn plan(cfg: &Config) -> Vec<Row> {
    let r = |test, size, iters, rate| Row { test, size, iters, rate, bidir: false };
    let rows: Vec<Row> = if cfg.sweep {
        let sizes = [64usize, 256, 1024, 4096, 16384, 65536, 262_144, 1 << 20, 4 << 20];
        [Test::WriteBw, Test::ReadBw, Test::SendBw]
            .iter()
            .flat_map(|&t| sizes.iter().map(move |&s| r(t, s, iters_for(s).min(400_000), false)))
            .collect()
    } else {
        vec![
            r(Test::WriteBw, 64, 1_000_000, true),
            r(Test::WriteBw, 65536, 30_000, false),
            r(Test::WriteBw, 1 << 20, 3000, false),
            r(Test::ReadBw, 65536, 30_000, false),
            r(Test::ReadBw, 1 << 20, 3000, false),
            r(Test::SendBw, 65536, 30_000, false),
            Row { bidir: true, ..r(Test::WriteBw, 65536, 30_000, false) },
            r(Test::WriteLat, 8, 20_000, false),
            r(Test::ReadLat, 8, 20_000, false),
            r(Test::SendLat, 8, 20_000, false),
        ]
    };
    rows.into_iter()
        // An RDMA Write leaves no completion at its target: write_lat's receiver, and the
        // send_bw sender waiting for perftest's receive credits (RDMA Writes into its memory),
        // can only poll memory, so those two have no event-driven form.
        .filter(|x| !(cfg.events && matches!(x.test, Test::WriteLat | Test::SendBw)))
        .filter(|x| {
            cfg.tests.is_empty() || cfg.tests.iter().any(|t| *t == x.name() || *t == format!("{}:{}", x.name(), x.size))
        })
        .map(|x| Row { size: cfg.size.unwrap_or(x.size), iters: cfg.iters.unwrap_or(x.iters), ..x })
        .collect()
}

fn opts(test: Test, size: usize, iters: u64, bidir: bool, cfg: &Config) -> Opts {
    Opts {
        test,
        size,
        iters,
        duration: None,
        all: false,
        qps: 1,
        tx_depth: if test.is_bw() {
            if size <= 4096 {
                512
            } else {
                128
            }
        } else {
            1
        },
        rx_depth: 512,
        cq_mod: 0,
        outs: 128,
        gbits: false,
        events: cfg.events,
        dev_name: "iwarp0".into(),
        mpa: cfg.mpa.clone(),
        liveness: iwarp::Liveness::default(),
        quiet: true,
        compat_sleep: false,
        shared_port: false,
        atomic: rdma::AtomicOp::default(),
        worker_spin_us: cfg.worker_spin_us,
        bidir,
        source: None,
    }
}

enum Measured {
    Bw(BwResult),
    Lat(LatResult),
    /// Both directions: the client's own and the server's own.
    BiBw(BwResult, BwResult),
}

/// One run: the figure and the process CPU time it took.
struct Run {
    m: Measured,
    cpu: f64,
    /// Both ends' queue-pair counters (iWARP runs).
    stats: Option<iwarp::QpStats>,
}

fn iwarp_once(row: Row, cfg: &Config) -> Result<Run, String> {
    let o = opts(row.test, row.size, row.iters, row.bidir, cfg);
    let so = o.clone();
    let cpu0 = iwarp::util::cpu_time();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || rdma::run(&so, Role::Server(SocketAddr::from((LOCALHOST, 0))), Some(tx)));
    let port = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "loopback server did not start".to_string())?;
    let client = rdma::run(&o, Role::Client(SocketAddr::from((LOCALHOST, port))), None);
    let server = server.join().map_err(|_| "loopback server panicked".to_string())?;
    let cpu = iwarp::util::cpu_time().saturating_sub(cpu0).as_secs_f64();
    let c = client?;
    let s = server?;
    let m = if row.bidir {
        // Each side's own direction, as each measured it (perftest sums the two).
        c.bw.first().copied().zip(s.bw.first().copied()).map(|(a, b)| Measured::BiBw(a, b))
    } else if row.test == Test::SendBw {
        // The receiver's count is the one that says what arrived.
        s.bw.first().copied().map(Measured::Bw)
    } else if row.test.is_bw() {
        c.bw.first().copied().map(Measured::Bw)
    } else {
        c.lat.first().copied().map(Measured::Lat)
    };
    let mut st = c.stats;
    st += s.stats;
    Ok(Run { m: m.ok_or("no result")?, cpu, stats: Some(st) })
}

fn tcp_once(row: Row, events: bool) -> Result<Run, String> {
    let l = TcpListener::bind(SocketAddr::from((LOCALHOST, 0))).map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let bw = row.test.is_bw();
    let wait = if events { tcp::Wait::Block } else { tcp::Wait::BusyPoll };
    let cpu0 = iwarp::util::cpu_time();
    if row.bidir {
        // tcp_bw -b: both directions at once on one connection.
        let server = std::thread::spawn(move || tcp::accept_one(&l).and_then(tcp::bw_bidir_server));
        let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let amount = tcp::Amount { iters: row.iters, duration: None };
        let r = tcp::bw_bidir_client(s, row.size, amount).map_err(|e| e.to_string())?;
        server.join().map_err(|_| "tcp server panicked".to_string())?.map_err(|e| e.to_string())?;
        let cpu = iwarp::util::cpu_time().saturating_sub(cpu0).as_secs_f64();
        return Ok(Run { m: Measured::BiBw(r.mine, r.peer), cpu, stats: None });
    }
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let s = tcp::accept_one(&l)?;
        if bw {
            tcp::bw_server(s).map(|_| ())
        } else {
            tcp::lat_server(s, wait)
        }
    });
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let amount = tcp::Amount { iters: row.iters, duration: None };
    let m = if bw {
        Measured::Bw(tcp::bw_client(s, row.size, amount).map_err(|e| e.to_string())?)
    } else {
        Measured::Lat(tcp::lat_client(s, row.size, amount, wait).map_err(|e| e.to_string())?)
    };
    server.join().map_err(|_| "tcp server panicked".to_string())?.map_err(|e| e.to_string())?;
    Ok(Run { m, cpu: iwarp::util::cpu_time().saturating_sub(cpu0).as_secs_f64(), stats: None })
}

/// The figure compared: Gbit/s or million messages per second for bandwidth rows; µs for
/// latency (half a round trip, or the whole round trip for reads, as perftest reports them).
fn figure(m: &Measured, row: Row, tcp: bool) -> f64 {
    match m {
        // The aggregate, as perftest -b reports it: both directions' rates summed.
        Measured::BiBw(a, b) => a.gbits() + b.gbits(),
        Measured::Bw(r) if row.rate => r.mpps(),
        Measured::Bw(r) => r.gbits(),
        // TCP's figure is half a round trip; a Read is a whole one.
        Measured::Lat(r) if tcp && row.test == Test::ReadLat => 2.0 * r.t_typical,
        Measured::Lat(r) => r.t_typical,
    }
}

/// CPU seconds per GB moved (both ends, this process).
fn cpu_per_gb(run: &Run) -> Option<f64> {
    let bytes = |r: &BwResult| r.size as f64 * r.iters as f64;
    match &run.m {
        Measured::Bw(r) if r.iters > 0 => Some(run.cpu / (bytes(r) / 1e9)),
        Measured::BiBw(a, b) if a.iters + b.iters > 0 => Some(run.cpu / ((bytes(a) + bytes(b)) / 1e9)),
        _ => None,
    }
}

/// Runs the comparisons and prints the table (and JSON lines).
pub fn run(cfg: &Config) -> Result<(), String> {
    println!("iwperf loopback: this iWARP stack over the host's TCP next to plain TCP, both on 127.0.0.1");
    println!(
        "median of {} runs each (spread = (max - min) / median); MPA CRC {}; {}",
        cfg.runs,
        if cfg.mpa.crc { "on" } else { "off" },
        if cfg.events {
            "event-driven: waiting sides sleep (completion events; blocking TCP reads)"
        } else {
            "busy polling (both stacks)"
        }
    );
    println!("bandwidth in Gbit/s, message rate in Mmsg/s, latency in usec (perftest's t_typical: half a");
    println!("round trip for write/send, a whole one for read); CPU = CPU seconds per GB, both ends");
    println!();
    println!(
        " {:<10} {:>8}   {:>9} {:>6}   {:>9} {:>6}   {:>9}   {:>7} {:>7}",
        "test", "size", "iWARP", "spread", "TCP", "spread", "iWARP/TCP", "CPU iW", "CPU TCP"
    );
    let rows = plan(cfg);
    for &row in &rows {
        let (mut iw, mut tc, mut ci, mut ct) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            let r = iwarp_once(row, cfg)?;
            iw.push(figure(&r.m, row, false));
            ci.extend(cpu_per_gb(&r));
            if cfg.json {
                json(row, &r, "iwarp");
            }
            let t = tcp_once(row, cfg.events)?;
            tc.push(figure(&t.m, row, true));
            ct.extend(cpu_per_gb(&t));
            if cfg.json {
                json(row, &t, "tcp");
            }
        }
        let (mi, si) = median_spread(iw);
        let (mt, st) = median_spread(tc);
        let ratio = if mt > 0.0 { mi / mt } else { 0.0 };
        let cpu = |v: Vec<f64>| if v.is_empty() { "-".to_string() } else { format!("{:.3}", median_spread(v).0) };
        println!(
            " {:<10} {:>8}   {:>9.2} {:>5.0}%   {:>9.2} {:>5.0}%   {:>9.2}   {:>7} {:>7}",
            row.label(),
            row.size,
            mi,
            si * 100.0,
            mt,
            st * 100.0,
            ratio,
            cpu(ci),
            cpu(ct)
        );
    }
    let notes: Vec<&str> = [
        (rows.iter().any(|r| r.rate), " * message rate: 64-byte RDMA Writes posted in batches vs one 64-byte write() per message"),
        (
            rows.iter().any(|r| r.bidir),
            " -b: write_bw -b, both sides writing at once on their one connection, the two directions' rates\n     summed as perftest reports them; next to tcp_bw -b, both directions at once on one connection",
        ),
    ]
    .into_iter()
    .filter_map(|(on, text)| on.then_some(text))
    .collect();
    if !notes.is_empty() {
        println!();
        for n in notes {
            println!("{n}");
        }
    }
    Ok(())
}

fn json(row: Row, r: &Run, transport: &str) {
    let (bw, lat, bidirectional) = match &r.m {
        Measured::Bw(b) => (Some(b.into()), None, None),
        Measured::Lat(l) => (None, Some(*l), None),
        Measured::BiBw(a, b) => (Some(a.into()), None, Some(BidirJson::new(a, Some(b)))),
    };
    let line = JsonLine {
        test: row.test.name(),
        role: "loopback",
        transport,
        size: row.size,
        bw,
        lat,
        cpu_seconds: Some(r.cpu),
        path: r.stats.as_ref().map(Into::into),
        bidirectional,
    };
    if let Ok(s) = serde_json::to_string(&line) {
        println!("{s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tests: &[&str]) -> Config {
        Config {
            runs: 1,
            tests: tests.iter().map(|t| t.to_string()).collect(),
            json: false,
            mpa: MpaOptions::default(),
            size: None,
            iters: None,
            sweep: false,
            worker_spin_us: 0,
            events: false,
        }
    }

    #[test]
    fn the_bidirectional_row_is_one_more_row_of_its_own_name() {
        let all = plan(&cfg(&[]));
        let bidir: Vec<&Row> = all.iter().filter(|r| r.bidir).collect();
        assert_eq!(bidir.len(), 1);
        assert_eq!((bidir[0].test, bidir[0].size, bidir[0].label()), (Test::WriteBw, 65536, "write_bw-b".to_string()));
        // The unidirectional rows stay as they were: write_bw selects them, not the -b row.
        let uni = plan(&cfg(&["write_bw"]));
        assert_eq!(
            uni.iter().map(|r| (r.size, r.bidir)).collect::<Vec<_>>(),
            [(64, false), (65536, false), (1 << 20, false)]
        );
        assert_eq!(all.len(), 10);
        for name in ["write_bw-b", "write_bw-b:65536"] {
            let p = plan(&cfg(&[name]));
            assert!(p.len() == 1 && p[0].bidir, "{name}");
        }
        assert!(plan(&Config { sweep: true, ..cfg(&[]) }).iter().all(|r| !r.bidir));
    }

    #[test]
    fn the_bidirectional_figure_is_both_directions_summed() {
        let row = plan(&cfg(&["write_bw-b"]))[0];
        let a = BwResult { size: 65536, iters: 1000, seconds: 0.01, peak_bytes_per_s: 0.0 };
        let b = BwResult { size: 65536, iters: 1000, seconds: 0.02, peak_bytes_per_s: 0.0 };
        let m = Measured::BiBw(a, b);
        assert!((figure(&m, row, false) - (a.gbits() + b.gbits())).abs() < 1e-9);
        let run = Run { m, cpu: 0.5, stats: None };
        assert!((cpu_per_gb(&run).unwrap() - 0.5 / (2.0 * 65536.0 * 1000.0 / 1e9)).abs() < 1e-9);
    }
}
