//! `iwperf`: perftest-compatible iWARP benchmarks, their plain-TCP baselines, and a loopback
//! comparison of the two.
//!
//! `iwperf write_bw` (no host) is a server; `iwperf write_bw HOST` a client, as perftest's
//! `ib_write_bw -R`. Each iwperf client works against the real `ib_*` server and each
//! `ib_*` client against an iwperf server (perftest 4.5-0.17, version string "6.06"); the
//! atomic tests need RFC 7306 on both sides, so their peers are other copies of this stack
//! (iwperf, or perftest under `iwrun`).
#![forbid(unsafe_code)]

mod ctrl;
mod loopback;
mod rdma;
mod report;
mod scale;
mod tcp;

use clap::{Parser, ValueEnum};
use iwarp_tools::liveness_args::LivenessArgs;
use iwarp_tools::mpa_args::MpaArgs;
use rdma::{AtomicOp, Opts, Role, Test};
use report::{BidirJson, JsonLine};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Cmd {
    /// RDMA Write bandwidth (ib_write_bw).
    WriteBw,
    /// RDMA Read bandwidth (ib_read_bw).
    ReadBw,
    /// Send bandwidth (ib_send_bw).
    SendBw,
    /// RDMA Write latency (ib_write_lat).
    WriteLat,
    /// RDMA Read latency (ib_read_lat).
    ReadLat,
    /// Send latency (ib_send_lat).
    SendLat,
    /// RFC 7306 atomic bandwidth (ib_atomic_bw): fetch-and-add or compare-and-swap, 8 bytes.
    AtomicBw,
    /// RFC 7306 atomic latency (ib_atomic_lat).
    AtomicLat,
    /// Plain TCP bandwidth, the baseline.
    TcpBw,
    /// Plain TCP ping-pong latency, the baseline.
    TcpLat,
    /// Server and client in this process over 127.0.0.1: iWARP next to plain TCP, with ratios.
    Loopback,
    /// Thousands of queue pairs in one process pair: memory per idle QP and aggregate bandwidth.
    Scale,
    /// The server process of `scale` (started by it).
    #[value(hide = true)]
    ScaleServe,
}

/// perftest-compatible iWARP benchmarks over the host's TCP, with plain-TCP baselines.
#[derive(Debug, Parser)]
#[command(
    name = "iwperf",
    version,
    after_help = "Without HOST a test runs as the server; with HOST as the client (perftest's convention)."
)]
struct Cli {
    /// The test.
    #[arg(value_enum)]
    cmd: Cmd,
    /// The server to connect to (client role).
    host: Option<String>,
    /// Local address (IPv4 or IPv6): the server listens on it (default: any IPv4 address),
    /// the client connects from it (perftest's `--bind_source_ip`; `--bind` for short).
    #[arg(short = 'J', long = "bind_source_ip", visible_alias = "bind")]
    bind: Option<String>,
    /// TCP port for all connections.
    #[arg(short = 'p', long = "port", default_value_t = 18515)]
    port: u16,
    /// Message size (K and M suffixes accepted).
    #[arg(short = 's', long = "size")]
    size: Option<String>,
    /// Iterations per QP (at least 5).
    #[arg(short = 'n', long = "iters")]
    iters: Option<u64>,
    /// Run for this many seconds instead of counting iterations.
    #[arg(short = 'D', long = "duration")]
    duration: Option<u64>,
    /// All sizes from 2 to 2^23.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Device name to print (accepted for perftest compatibility).
    #[arg(short = 'd', long = "ib-dev", default_value = "iwarp0")]
    ib_dev: String,
    /// rdma_cm connection setup (always on; accepted for perftest compatibility).
    #[arg(short = 'R', long = "rdma_cm")]
    _rdma_cm: bool,
    /// Do not fail on CPU frequency warnings (accepted for perftest compatibility).
    #[arg(short = 'F', long = "CPU-freq")]
    _cpu_freq: bool,
    /// Report bandwidth in Gb/s instead of MB/s.
    #[arg(long = "report_gbits")]
    report_gbits: bool,
    /// Number of data QPs (bandwidth tests).
    #[arg(short = 'q', long = "qp", default_value_t = 1)]
    qp: usize,
    /// Bidirectional (bandwidth tests, tcp_bw): both sides send at once and each reports the
    /// sum of both directions, as perftest's -b. Give it to both sides.
    #[arg(short = 'b', long = "bidirectional")]
    bidir: bool,
    /// Send queue depth.
    #[arg(short = 't', long = "tx-depth")]
    tx_depth: Option<usize>,
    /// Receive queue depth (send tests).
    #[arg(short = 'r', long = "rx-depth", default_value_t = 512)]
    rx_depth: usize,
    /// Completion moderation: signal every N-th send.
    #[arg(short = 'Q', long = "cq-mod", default_value_t = 0)]
    cq_mod: usize,
    /// Atomic tests: the operation (fetch-and-add by default).
    #[arg(short = 'A', long = "atomic_type", value_enum)]
    atomic_type: Option<AtomicOp>,
    /// Outstanding reads (read and atomic tests: IRD/ORD).
    #[arg(short = 'o', long = "outs", default_value_t = 128)]
    outs: u16,
    /// Sleep on completion events instead of busy polling.
    #[arg(short = 'e', long = "events")]
    events: bool,
    /// Also print one JSON line with the result.
    #[arg(long)]
    json: bool,
    /// Server: also answer plain TCP clients on the same port (line echo).
    #[arg(long = "shared-port")]
    shared_port: bool,
    /// Microseconds the event loop keeps polling after activity before it sleeps (busy-poll
    /// mode; `-e` turns it off).
    #[arg(long = "worker-spin-us", default_value_t = 100)]
    worker_spin_us: u64,
    /// Loopback: runs per test (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Loopback: which comparisons (default: all), by test name (write_bw-b: the
    /// bidirectional row), optionally with :SIZE.
    #[arg(long, value_delimiter = ',')]
    tests: Vec<String>,
    /// Loopback: bandwidth against message size (64 B to 4 MiB) for Write, Read, Send and TCP.
    #[arg(long)]
    sweep: bool,
    /// Scale: queue-pair counts to measure.
    #[arg(long = "qps", value_delimiter = ',', default_values_t = [1usize, 100, 10000])]
    scale_qps: Vec<usize>,
    /// Scale: seconds of writing per count.
    #[arg(long = "seconds", default_value_t = 3.0)]
    seconds: f64,
    /// Scale: post every Write on its own (one doorbell each) instead of a queue pair's due
    /// turns as one list.
    #[arg(long = "one-per-post")]
    one_per_post: bool,
    #[command(flatten)]
    mpa: MpaArgs,
    #[command(flatten)]
    liveness: LivenessArgs,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!(" Invalid size {s}"))?;
    let n = n.checked_mul(mul).ok_or_else(|| format!(" Invalid size {s}"))?;
    if n == 0 || n > i32::MAX as usize {
        return Err(format!(" Size should be between 1 and {}", i32::MAX));
    }
    Ok(n)
}

/// Where a server listens: `--bind_source_ip` if given, else any IPv4 address.
fn server_addr(cli: &Cli) -> Result<SocketAddr, String> {
    match &cli.bind {
        Some(b) => resolve(b, cli.port),
        None => Ok(rdma::any_addr(cli.port)),
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port).to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| format!("Couldn't resolve {host}"))
}

fn opts(cli: &Cli, test: Test) -> Result<Opts, String> {
    let size = match &cli.size {
        Some(s) => parse_size(s)?,
        None => test.default_size(),
    };
    if cli.atomic_type.is_some() && !test.is_atomic() {
        return Err(" You are not running the atomic_lat/bw test!\n To change the atomic action type, you must run one of the atomic tests".into());
    }
    // perftest: -a sets the largest size, which an atomic test then refuses as well.
    if test.is_atomic() && (size != rdma::ATOMIC_SIZE || cli.all) {
        return Err(format!("{}\nMessage size cannot be changed for Atomic tests ", report::DASHES));
    }
    let iters = cli.iters.unwrap_or(test.default_iters());
    if iters < 5 {
        return Err(" Iteration num must be at least 5".into());
    }
    if cli.qp > 1 && !test.is_bw() {
        return Err(" Multiple QPs only available on bandwidth tests".into());
    }
    if cli.bidir && !test.is_bw() {
        return Err(" Bidirectional is only available in BW test".into());
    }
    Ok(Opts {
        test,
        size,
        iters,
        duration: cli.duration,
        all: cli.all,
        qps: cli.qp.max(1),
        tx_depth: cli.tx_depth.unwrap_or(if test.is_bw() { 128 } else { 1 }),
        rx_depth: cli.rx_depth,
        cq_mod: cli.cq_mod,
        outs: cli.outs,
        gbits: cli.report_gbits,
        events: cli.events,
        dev_name: cli.ib_dev.clone(),
        mpa: cli.mpa.options(),
        liveness: cli.liveness.liveness(),
        quiet: false,
        compat_sleep: true,
        shared_port: cli.shared_port,
        worker_spin_us: cli.worker_spin_us,
        bidir: cli.bidir,
        atomic: cli.atomic_type.unwrap_or_default(),
        source: match (&cli.host, &cli.bind) {
            (Some(_), Some(b)) => Some(resolve(b, 0)?),
            _ => None,
        },
    })
}

fn print_json(line: &JsonLine<'_>) {
    match serde_json::to_string(line) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("json: {e}"),
    }
}

fn run_rdma(cli: &Cli, test: Test) -> Result<(), String> {
    let o = opts(cli, test)?;
    let role = match &cli.host {
        Some(h) => Role::Client(resolve(h, cli.port)?),
        None => Role::Server(server_addr(cli)?),
    };
    let cpu0 = iwarp::util::cpu_time();
    let out = rdma::run(&o, role, None)?;
    let cpu = iwarp::util::cpu_time().saturating_sub(cpu0).as_secs_f64();
    if cli.json {
        let role = if cli.host.is_some() { "client" } else { "server" };
        for (i, r) in out.bw.iter().enumerate() {
            print_json(&JsonLine {
                test: test.name(),
                role,
                transport: "iwarp",
                size: r.size,
                bw: Some(r.into()),
                lat: None,
                cpu_seconds: Some(cpu),
                path: Some((&out.stats).into()),
                bidirectional: o.bidir.then(|| BidirJson::new(r, out.remote.get(i))),
            });
        }
        for r in &out.lat {
            print_json(&JsonLine {
                test: test.name(),
                role,
                transport: "iwarp",
                size: r.size,
                bw: None,
                lat: Some(*r),
                cpu_seconds: Some(cpu),
                path: Some((&out.stats).into()),
                bidirectional: None,
            });
        }
    }
    Ok(())
}

fn run_tcp(cli: &Cli, lat: bool) -> Result<(), String> {
    let size = match &cli.size {
        Some(s) => parse_size(s)?,
        None if lat => 2,
        None => 65536,
    };
    let iters = cli.iters.unwrap_or(if lat { 1000 } else { 5000 });
    let amount = tcp::Amount { iters, duration: cli.duration.map(Duration::from_secs) };
    let wait = if cli.events { tcp::Wait::Block } else { tcp::Wait::BusyPoll };
    let name = if lat { "tcp_lat" } else { "tcp_bw" };
    let gbits = cli.report_gbits;
    if cli.bidir {
        if lat {
            return Err(" Bidirectional is only available in BW test".into());
        }
        return run_tcp_bidir(cli, size, amount);
    }
    match &cli.host {
        None => {
            let l = TcpListener::bind(server_addr(cli)?).map_err(|e| format!("bind: {e}"))?;
            println!("\n************************************\n* Waiting for client to connect... *\n************************************");
            let s = tcp::accept_one(&l).map_err(|e| e.to_string())?;
            if lat {
                tcp::lat_server(s, wait).map_err(|e| e.to_string())?;
            } else {
                let r = tcp::bw_server(s).map_err(|e| e.to_string())?;
                println!("{}\n{}\n{}", report::bw_header(gbits), report::bw_line(&r, gbits), report::DASHES);
                if cli.json {
                    print_json(&JsonLine {
                        test: name,
                        role: "server",
                        transport: "tcp",
                        size: r.size,
                        bw: Some((&r).into()),
                        lat: None,
                        cpu_seconds: None,
                        path: None,
                        bidirectional: None,
                    });
                }
            }
        }
        Some(h) => {
            let s = TcpStream::connect(resolve(h, cli.port)?).map_err(|e| format!("connect: {e}"))?;
            if lat {
                let r = tcp::lat_client(s, size, amount, wait).map_err(|e| e.to_string())?;
                println!("{}\n{}\n{}", report::LAT_HEADER, report::lat_line(&r), report::DASHES);
                if cli.json {
                    print_json(&JsonLine {
                        test: name,
                        role: "client",
                        transport: "tcp",
                        size,
                        bw: None,
                        lat: Some(r),
                        cpu_seconds: None,
                        path: None,
                        bidirectional: None,
                    });
                }
            } else {
                let r = tcp::bw_client(s, size, amount).map_err(|e| e.to_string())?;
                println!("{}\n{}\n{}", report::bw_header(gbits), report::bw_line(&r, gbits), report::DASHES);
                if cli.json {
                    print_json(&JsonLine {
                        test: name,
                        role: "client",
                        transport: "tcp",
                        size,
                        bw: Some((&r).into()),
                        lat: None,
                        cpu_seconds: None,
                        path: None,
                        bidirectional: None,
                    });
                }
            }
        }
    }
    Ok(())
}

/// `tcp_bw -b`: both directions at once on one connection; each side prints the sum.
fn run_tcp_bidir(cli: &Cli, size: usize, amount: tcp::Amount) -> Result<(), String> {
    let gbits = cli.report_gbits;
    let (role, r) = match &cli.host {
        None => {
            let l = TcpListener::bind(server_addr(cli)?).map_err(|e| format!("bind: {e}"))?;
            println!("\n************************************\n* Waiting for client to connect... *\n************************************");
            let s = tcp::accept_one(&l).map_err(|e| e.to_string())?;
            ("server", tcp::bw_bidir_server(s).map_err(|e| e.to_string())?)
        }
        Some(h) => {
            let s = TcpStream::connect(resolve(h, cli.port)?).map_err(|e| format!("connect: {e}"))?;
            ("client", tcp::bw_bidir_client(s, size, amount).map_err(|e| e.to_string())?)
        }
    };
    println!("{}\n{}\n{}", report::bw_header(gbits), report::bidir_line(&r.mine, Some(&r.peer), gbits), report::DASHES);
    if cli.json {
        print_json(&JsonLine {
            test: "tcp_bw",
            role,
            transport: "tcp",
            size: r.mine.size,
            bw: Some((&r.mine).into()),
            lat: None,
            cpu_seconds: None,
            path: None,
            bidirectional: Some(BidirJson::new(&r.mine, Some(&r.peer))),
        });
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    iwarp_tools::init_tracing();
    let _ = iwarp::util::raise_fd_limit();
    let r = match cli.cmd {
        Cmd::WriteBw => run_rdma(&cli, Test::WriteBw),
        Cmd::ReadBw => run_rdma(&cli, Test::ReadBw),
        Cmd::SendBw => run_rdma(&cli, Test::SendBw),
        Cmd::WriteLat => run_rdma(&cli, Test::WriteLat),
        Cmd::ReadLat => run_rdma(&cli, Test::ReadLat),
        Cmd::SendLat => run_rdma(&cli, Test::SendLat),
        Cmd::AtomicBw => run_rdma(&cli, Test::AtomicBw),
        Cmd::AtomicLat => run_rdma(&cli, Test::AtomicLat),
        Cmd::TcpBw => run_tcp(&cli, false),
        Cmd::TcpLat => run_tcp(&cli, true),
        Cmd::Scale => scale::run(&scale::Config {
            qps: cli.scale_qps.clone(),
            size: cli.size.as_deref().map(parse_size).transpose().unwrap_or(None).unwrap_or(65536),
            seconds: cli.seconds,
            json: cli.json,
            runs: cli.runs.max(1),
            one_per_post: cli.one_per_post,
        }),
        Cmd::ScaleServe => scale::serve(cli.port),
        Cmd::Loopback => loopback::run(&loopback::Config {
            runs: cli.runs.max(1),
            tests: cli.tests.clone(),
            json: cli.json,
            mpa: cli.mpa.options(),
            size: cli.size.as_deref().map(parse_size).transpose().unwrap_or(None),
            iters: cli.iters,
            sweep: cli.sweep,
            worker_spin_us: cli.worker_spin_us,
            events: cli.events,
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent_and_takes_perftest_flags() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "iwperf",
            "write_bw",
            "-R",
            "-F",
            "-d",
            "siw0",
            "-p",
            "18515",
            "-s",
            "64K",
            "-n",
            "100",
            "-q",
            "2",
            "--report_gbits",
            "10.0.0.1",
        ])
        .unwrap();
        assert_eq!(c.cmd, Cmd::WriteBw);
        assert_eq!(c.host.as_deref(), Some("10.0.0.1"));
        assert_eq!(parse_size(c.size.as_deref().unwrap()), Ok(65536));
        assert_eq!((c.iters, c.qp, c.report_gbits, c.bidir), (Some(100), 2, true, false));
        let b = Cli::try_parse_from(["iwperf", "send_bw", "-b", "127.0.0.1"]).unwrap();
        assert!(b.bidir && opts(&b, Test::SendBw).unwrap().bidir);
        let l = Cli::try_parse_from(["iwperf", "write_lat", "--bidirectional"]).unwrap();
        assert_eq!(opts(&l, Test::WriteLat).unwrap_err(), " Bidirectional is only available in BW test");
        assert!(parse_size("0").is_err());
        // The atomic tests: fetch-and-add of 8 bytes by default, -A as perftest spells it,
        // no other size, and -A only for them.
        let a = Cli::try_parse_from(["iwperf", "atomic_bw", "-R"]).unwrap();
        let o = opts(&a, Test::AtomicBw).unwrap();
        assert_eq!((o.size, o.iters, o.atomic, o.tx_depth), (8, 1000, AtomicOp::FetchAndAdd, 128));
        let a = Cli::try_parse_from(["iwperf", "atomic_lat", "-A", "CMP_AND_SWAP", "-s", "8"]).unwrap();
        let o = opts(&a, Test::AtomicLat).unwrap();
        assert_eq!((o.size, o.atomic, o.tx_depth), (8, AtomicOp::CmpAndSwap, 1));
        let a = Cli::try_parse_from(["iwperf", "atomic_bw", "-s", "16"]).unwrap();
        assert!(opts(&a, Test::AtomicBw).unwrap_err().ends_with("Message size cannot be changed for Atomic tests "));
        let a = Cli::try_parse_from(["iwperf", "atomic_bw", "-a"]).unwrap();
        assert!(opts(&a, Test::AtomicBw).is_err());
        assert!(Cli::try_parse_from(["iwperf", "atomic_bw", "-A", "SWAP"]).is_err());
        let w = Cli::try_parse_from(["iwperf", "write_bw", "-A", "FETCH_AND_ADD"]).unwrap();
        assert!(opts(&w, Test::WriteBw).unwrap_err().starts_with(" You are not running the atomic_lat/bw test!"));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
    }
}
