//! `iwnvme`: NVMe over Fabrics (RDMA transport) over iWARP.
//!
//! ```text
//! iwnvme target --listen 127.0.0.1:4420 --nqn nqn.2014-08.org.example:disk --file disk.img --size 1G
//! iwnvme target --listen 127.0.0.1 --nqn nqn.2014-08.org.example:ram --mem-size 64M
//! iwnvme connect 127.0.0.1:4420 --nqn nqn.2014-08.org.example:disk --nbd-socket /tmp/disk.sock
//! qemu-img info "nbd+unix:///?socket=/tmp/disk.sock"
//! iwnvme bench --mem-size 256M --seconds 5 --runs 3
//! iwnvme bench --file /tmp/bench.img --size 1G --json
//! ```
//!
//! Logs go to standard error when `RUST_LOG` is set (e.g. `RUST_LOG=iwarp_nvmf=debug`).
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use iwarp::{Device, DeviceConfig};
use iwarp_nvmf::block::{BlockDevice, FileDevice, MemDevice};
use iwarp_nvmf::host::{Controller, HostOptions};
use iwarp_nvmf::nbd::{NbdConfig, NbdServer};
use iwarp_nvmf::target::{CrcPolicy, Target, TargetConfig};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The NVMe-oF RDMA port.
const DEFAULT_PORT: u16 = 4420;

/// NVMe over Fabrics (RDMA transport) over iWARP.
#[derive(Debug, Parser)]
#[command(name = "iwnvme", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve a file or memory as namespace 1 of one subsystem.
    Target(TargetArgs),
    /// Attach a remote namespace and serve it to NBD clients (qemu-img, nbdcopy, nbd-client).
    Connect(ConnectArgs),
    /// Measure sequential 1 MiB and random 4 KiB reads and writes at queue depths 1 and 32
    /// through an attached namespace, next to the same workloads on the backing file or memory.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Serve this many bytes of memory from a target in this process (K, M, G suffixes).
    #[arg(short = 'm', long = "mem-size", value_parser = parse_size, conflicts_with = "file")]
    mem_size: Option<u64>,
    /// Serve this file from a target in this process (the raw baseline uses it too).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Create or resize the file to this size (bytes; K, M, G suffixes).
    #[arg(short = 's', long, requires = "file", value_parser = parse_size)]
    size: Option<u64>,
    /// Attach a running target at IP:PORT instead (raw baseline only with --file, the same
    /// backing file).
    #[arg(long)]
    connect: Option<String>,
    /// Subsystem NQN (for --connect; the in-process target uses it too).
    #[arg(short = 'n', long, default_value = "nqn.2014-08.org.example:bench")]
    nqn: String,
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Runs of every workload (medians and spreads are reported).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// I/O queues the host asks for.
    #[arg(long, default_value_t = 2)]
    queues: u16,
    /// Entries of each I/O queue.
    #[arg(long = "queue-size", default_value_t = 128)]
    queue_size: u16,
    /// The in-process target's largest transfer, as a power of two of 4 KiB (8: 1 MiB).
    #[arg(long, default_value_t = 8)]
    mdts: u8,
    /// Threads serving the in-process target's queues.
    #[arg(long = "target-threads", default_value_t = 2)]
    target_threads: usize,
    /// Seed of the random offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only these workloads (comma-separated names such as rand-read-4K-qd32).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the raw backing-file baseline.
    #[arg(long = "no-raw")]
    no_raw: bool,
    /// Do not check what reads return.
    #[arg(long = "no-verify")]
    no_verify: bool,
    /// Do not ask for MPA CRC (in-process target and host).
    #[arg(long = "no-crc")]
    no_crc: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// The target's address: IP:PORT (or IP, port 4420).
    addr: String,
    /// Subsystem NQN.
    #[arg(short = 'n', long)]
    nqn: String,
    /// Serve the namespace on this Unix socket.
    #[arg(long = "nbd-socket", conflicts_with = "nbd_listen", required_unless_present = "nbd_listen")]
    nbd_socket: Option<PathBuf>,
    /// Serve the namespace on this TCP address.
    #[arg(long = "nbd-listen")]
    nbd_listen: Option<SocketAddr>,
    /// I/O queues to ask for.
    #[arg(long, default_value_t = 4)]
    queues: u16,
    /// Entries of each I/O queue.
    #[arg(long = "queue-size", default_value_t = 128)]
    queue_size: u16,
    /// This host's NQN (a UUID-based one by default).
    #[arg(long)]
    hostnqn: Option<String>,
    /// Keep-alive timeout in seconds (Keep Alive every half of it; 0: none).
    #[arg(long = "keep-alive-tmo", default_value_t = 5)]
    keep_alive_tmo: u64,
    /// Seconds a command may take before it fails.
    #[arg(long = "io-timeout", default_value_t = 30)]
    io_timeout: u64,
    /// Do not ask for MPA CRC32c (it is still used if the target insists).
    #[arg(long = "no-crc")]
    no_crc: bool,
}

/// What to do about MPA CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CrcArg {
    /// CRC exactly when the initiator asks for it (the target does not ask).
    #[value(alias = "off")]
    Follow,
    /// Ask for CRC: on for every connection.
    Ask,
    /// Reject initiators that do not ask for CRC.
    Require,
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Address to listen on: IP or IP:PORT (port 4420 by default).
    #[arg(short = 'l', long, default_value = "127.0.0.1")]
    listen: String,
    /// Subsystem NQN.
    #[arg(short = 'n', long)]
    nqn: String,
    /// Serve this file (or block device).
    #[arg(short = 'f', long, conflicts_with = "mem_size", required_unless_present = "mem_size")]
    file: Option<PathBuf>,
    /// Create or resize the file to this size (bytes; K, M, G suffixes).
    #[arg(short = 's', long, requires = "file", value_parser = parse_size)]
    size: Option<u64>,
    /// Serve this many bytes of memory (K, M, G suffixes).
    #[arg(short = 'm', long = "mem-size", value_parser = parse_size)]
    mem_size: Option<u64>,
    /// Allow only this host NQN (repeat for more); any host by default.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Largest queue (entries) a host may open.
    #[arg(long = "queue-size", default_value_t = 128)]
    queue_size: u16,
    /// I/O queues per controller.
    #[arg(long = "io-queues", default_value_t = 8)]
    io_queues: u16,
    /// Threads serving the queues (each serves many).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// MPA CRC: follow the initiator (the default), ask for it, or require it.
    #[arg(long, value_enum, default_value_t = CrcArg::Follow)]
    crc: CrcArg,
    /// Do not ask for CRC32c: CRC exactly when the initiator asks (as `--crc follow`, the default).
    #[arg(long = "no-crc", conflicts_with = "crc")]
    no_crc: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?} (bytes, or with a K, M, G or T suffix)"))
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| format!("not an address: {s:?} (IP or IP:PORT)"))
}

fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn target(a: TargetArgs) -> Result<(), Box<dyn std::error::Error>> {
    let addr = parse_listen(&a.listen)?;
    let device: Arc<dyn BlockDevice> = match (&a.file, a.mem_size) {
        (Some(path), _) => match a.size {
            Some(size) => Arc::new(FileDevice::create(path, size)?),
            None => Arc::new(FileDevice::open(path)?),
        },
        (None, Some(size)) => Arc::new(MemDevice::new(usize::try_from(size)?)),
        (None, None) => return Err("give --file or --mem-size".into()),
    };
    let size = device.size();
    if size < u64::from(device.block_size()) {
        return Err(format!("the device has {size} bytes: less than one block").into());
    }
    let mut config = TargetConfig::new(&a.nqn);
    config.hosts = a.hosts;
    config.max_queue_entries = a.queue_size;
    config.max_io_queues = a.io_queues;
    config.threads = a.threads.max(1);
    config.crc = match if a.no_crc { CrcArg::Follow } else { a.crc } {
        CrcArg::Follow => CrcPolicy::Follow,
        CrcArg::Ask => CrcPolicy::Ask,
        CrcArg::Require => CrcPolicy::Require,
    };
    let dev = Device::open(DeviceConfig::default())?;
    let listener = dev.listen(addr, 128)?;
    let bound = listener.local_addr();
    let _handle = Target::new(config, device).serve(&dev, listener)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "iwnvme: listening on {bound} nqn {} size {size}", a.nqn)?;
    out.flush()?;
    drop(out);
    // Serve until killed (the handle stops the target only when dropped).
    loop {
        std::thread::park();
    }
}

fn connect(a: ConnectArgs) -> Result<(), Box<dyn std::error::Error>> {
    let addr = parse_listen(&a.addr)?;
    let mut opts = HostOptions {
        io_queues: a.queues.max(1),
        queue_size: a.queue_size,
        kato: std::time::Duration::from_secs(a.keep_alive_tmo),
        command_timeout: std::time::Duration::from_secs(a.io_timeout.max(1)),
        crc: !a.no_crc,
        ..HostOptions::default()
    };
    if let Some(h) = a.hostnqn {
        opts.hostnqn = h;
    }
    let ctrl = Controller::connect(addr, &a.nqn, &opts)?;
    let ns = ctrl.namespace();
    let (nsid, size, block_size) = (ns.info().nsid, ns.size(), ns.block_size());
    // Clients that honour the block size send whole blocks (no read-modify-write here).
    let config = NbdConfig { min_block_size: block_size, ..NbdConfig::default() };
    let server = NbdServer::new(Arc::new(ns), config)?;
    let handle = match (&a.nbd_socket, a.nbd_listen) {
        (Some(path), _) => server.listen_unix(path)?,
        (None, Some(tcp)) => server.listen_tcp(tcp)?,
        (None, None) => return Err("give --nbd-socket or --nbd-listen".into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "iwnvme: namespace {nsid} of {}, {size} bytes, served on {}", a.nqn, handle.address())?;
    out.flush()?;
    drop(out);
    // Serve until killed (the target sees the connections close). The handles live as long.
    let _serving = (handle, ctrl);
    loop {
        std::thread::park();
    }
}

fn bench(a: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    use iwarp_nvmf::bench::{self, Row, RunConfig, Workload};
    let backing: Option<Arc<dyn BlockDevice>> = match (&a.file, a.mem_size) {
        (Some(path), _) => Some(match a.size {
            Some(size) => Arc::new(FileDevice::create(path, size)?),
            None => Arc::new(FileDevice::open(path)?),
        }),
        (None, Some(size)) => Some(Arc::new(MemDevice::new(usize::try_from(size)?))),
        (None, None) if a.connect.is_some() => None,
        (None, None) => Some(Arc::new(MemDevice::new(256 << 20))),
    };
    let dev = Device::open(DeviceConfig::default())?;
    // A target in this process unless --connect names one.
    let (addr, _target) = match &a.connect {
        Some(c) => (parse_listen(c)?, None),
        None => {
            let Some(device) = backing.clone() else { return Err("give --file or --mem-size".into()) };
            let mut config = TargetConfig::new(&a.nqn);
            config.mdts = a.mdts;
            config.threads = a.target_threads.max(1);
            config.max_queue_entries = a.queue_size.max(32);
            // The target follows the host on CRC (its default); the host asks unless --no-crc.
            let listener = dev.listen("127.0.0.1:0".parse()?, 128)?;
            let handle = Target::new(config, device).serve(&dev, listener)?;
            (handle.local_addr(), Some(handle))
        }
    };
    let opts =
        HostOptions { io_queues: a.queues.max(1), queue_size: a.queue_size, crc: !a.no_crc, ..HostOptions::default() };
    let ctrl = Controller::connect(addr, &a.nqn, &opts)?;
    let ns: Arc<dyn BlockDevice> = Arc::new(ctrl.namespace());
    let raw = if a.no_raw { None } else { backing };
    let cfg = RunConfig { duration: std::time::Duration::from_secs_f64(a.seconds), seed: a.seed, verify: !a.no_verify };
    let workloads: Vec<Workload> =
        Workload::standard().into_iter().filter(|w| a.only.is_empty() || a.only.contains(&w.name())).collect();
    if workloads.is_empty() {
        return Err("no workload selected".into());
    }
    let reads = workloads.iter().any(|w| w.op == bench::Op::Read);
    if reads && !a.no_verify {
        // Reads check the stamps every write leaves: write them all once.
        bench::prefill(ns.as_ref())?;
    }
    let mut rows = Vec::new();
    for w in &workloads {
        let mut nvmf = Vec::new();
        let mut base = Vec::new();
        for _ in 0..a.runs.max(1) {
            // Alternate, so that drift in the machine's load hits both alike.
            if let Some(r) = &raw {
                base.push(bench::run(r, w, &cfg).map_err(|e| format!("{} on the raw device: {e}", w.name()))?);
            }
            nvmf.push(bench::run(&ns, w, &cfg).map_err(|e| format!("{} over NVMe-oF: {e}", w.name()))?);
            if !a.json {
                eprint!(".");
            }
        }
        rows.push(Row::new(*w, "nvmf", nvmf));
        if raw.is_some() {
            rows.push(Row::new(*w, "raw", base));
        }
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let doc = serde_json::json!({
            "seconds": a.seconds,
            "runs": a.runs.max(1),
            "queues": a.queues,
            "queue_size": a.queue_size,
            "device_size": ns.size(),
            "backing": match (&a.file, a.mem_size, &a.connect) {
                (Some(p), _, _) => format!("file {}", p.display()),
                (None, Some(_), _) | (None, None, None) => "memory".to_string(),
                (None, None, Some(_)) => "remote".to_string(),
            },
            "loadavg": load.trim(),
            "rows": rows,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        eprintln!();
        write!(out, "{}", bench::table(&rows))?;
    }
    drop(out);
    ctrl.disconnect()?;
    Ok(())
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Target(a) => target(a),
        Cmd::Connect(a) => connect(a),
        Cmd::Bench(a) => bench(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iwnvme: {e}");
            ExitCode::FAILURE
        }
    }
}
