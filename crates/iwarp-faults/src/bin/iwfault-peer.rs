//! A peer of the fault harness: a server or a client of the stack that moves verified traffic
//! and reports, line by line on standard output, what happened to every work request.
//!
//! ```text
//! iwfault-peer server listen=IP:PORT [region=BYTES] [depth=N] [live=...] [mpa_timeout=MS] [backlog=N]
//!              [mpa=large|segment|unaligned]
//! iwfault-peer client connect=IP:PORT[,IP:PORT...] [mode=stream|flood] [window=N] [slot=BYTES]
//!              [maxwrite=BYTES] [maxsend=BYTES] [msgs=N] [secs=S] [hold=S] [total=BYTES]
//!              [chunk=BYTES] [pause=BYTES] [sq=N] [seed=N] [live=default|off|IDLE_S,INTERVAL_S,USER_TIMEOUT_MS]
//!              [sizes=uniform|log] [atomics=0|1] [tick=S] [mpa=large|segment|unaligned]
//! iwfault-peer storm connect=IP:PORT [count=N] [secs=S] [threads=T] [full_every=K] [silent_every=M] [watch=S]
//! iwfault-peer reset connect=IP:PORT [count=N] [msgs=M] [pause_at=K] [batch=B]
//! iwfault-peer hostile connect=IP:PORT attack=crc|window|msn|terminate|truncate|dribble [region=BYTES] [msgs=N] [wait=S]
//! iwfault-peer relay listen=IP:PORT to=IP:PORT [delay_us=N] [jitter_us=J] [buffer=BYTES]
//! iwfault-peer sink listen=IP:PORT [pings=N]
//! iwfault-peer source connect=IP:PORT [total=BYTES] [pings=N] [secs=S]
//! ```
//!
//! The server reports each connection's end (`server_conn`) with the accounting of its work
//! requests, and the Terminate cause of a protocol error (`server_terminate`).
//!
//! `storm`, `reset` and `hostile` are hand-driven initiators (MPA and FPDUs by hand over a
//! plain socket, with the wire codecs): a connection storm against a listener, connections
//! reset (`SO_LINGER` 0) with work in flight, and a peer that breaks the protocol on a live
//! connection. See their functions. `relay` is a user-space TCP relay that holds every byte
//! for a one-way delay in each direction, with a bounded buffer; `sink` and `source` measure
//! plain TCP through it.
//!
//! Stream mode (per queue pair, one thread each, all on one device): message `seq` is an RDMA
//! Write of a patterned buffer into the server's slot `seq % window`, a Send whose header names
//! it and whose payload is patterned too, and an RDMA Read of the slot back. The server checks
//! both payloads byte for byte and answers with an acknowledgement Send; the client checks the
//! Read. At most `window` messages are in flight. `hold` keeps an idle queue pair connected
//! after its messages, to watch for the peer's disappearance. `atomics=1` adds a fetch-and-add
//! and a compare-and-swap per message on two words after the server's slots (every original
//! checked against the value the earlier atomics left; every 4th compare-and-swap compares
//! with a wrong value), and at the end asks the server to check both words. `sizes=log`
//! spreads the Writes' and Sends' sizes evenly over the powers of two up to their maxima (the
//! first Write 1 byte, the second `maxwrite`). `tick=S` reports progress every S seconds.
//!
//! Flood mode (one queue pair): Writes of `chunk` bytes fill `total` bytes of the server's
//! region in order (or stop when `secs` runs out), with no flow control above the queue
//! pair's own: posts that find the send queue full are counted and retried. Then a Send asks
//! the server to check every byte written.
//!
//! Standard input: `mark` notes the time a fault was applied; detection times are measured from
//! it. `go` lets a flood that paused at `pause` bytes continue; `stop` ends stream mode's posting. Every work request is accounted for: each completion must arrive, in posting order.
#![forbid(unsafe_code)]

use iwarp::*;
use iwarp_faults::pattern;
use iwarp_wire::mpa::rr::HEADER_LEN;
use iwarp_wire::mpa::{Deframer, DeframerConfig, EnhancedParams, Event, FrameKind, FrameRepr, Framer};
use iwarp_wire::terminate::TerminateRepr;
use iwarp_wire::{Msn, Opcode, SegmentHeader, TaggedOffset};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"IWFT";
const HDR: usize = 40;
const KIND_MSG: u8 = 1;
const KIND_DONE: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_DONE_ACK: u8 = 4;
/// Asks the server to check the atomics' two words (`off`: their offset; `seq`: the
/// fetch-and-add word's expected value; `extra`: the compare-and-swap word's).
const KIND_ATOMIC_CHECK: u8 = 5;
/// The answer: `extra` is the number of words that differ (0, 1 or 2).
const KIND_ATOMIC_ACK: u8 = 6;
const WRITE_SALT: u64 = 0x5752_4954;
const SEND_SALT: u64 = 0x5345_4e44;
const FLOOD_SEED: u64 = 0xf100d;

/// A message header: kind, sequence number (or total), write length, send payload length,
/// write offset (or a result).
#[derive(Debug, Clone, Copy, Default)]
struct Hdr {
    kind: u8,
    seq: u64,
    wlen: u32,
    slen: u32,
    off: u64,
    extra: u64,
}

impl Hdr {
    fn emit(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        b[..4].copy_from_slice(MAGIC);
        b[4] = self.kind;
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..20].copy_from_slice(&self.wlen.to_be_bytes());
        b[20..24].copy_from_slice(&self.slen.to_be_bytes());
        b[24..32].copy_from_slice(&self.off.to_be_bytes());
        b[32..40].copy_from_slice(&self.extra.to_be_bytes());
        b
    }
    fn parse(b: &[u8]) -> Option<Hdr> {
        if b.len() < HDR || &b[..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(Hdr { kind: b[4], seq: u64_at(8), wlen: u32_at(16), slen: u32_at(20), off: u64_at(24), extra: u64_at(32) })
    }
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Args {
        Args(args.iter().filter_map(|a| a.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
    fn str(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn num(&self, k: &str, d: u64) -> u64 {
        self.0.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
    }
    /// `mpa=large` (default: FPDUs larger than the MSS when the peer agrees), `segment`
    /// (segment-sized FPDUs, aligned to segments, as with siw) or `unaligned` (segment-sized,
    /// handed to the socket in as few calls as possible).
    fn mpa(&self) -> MpaOptions {
        match self.str("mpa", "large").as_str() {
            "segment" => MpaOptions { large_fpdus: false, ..Default::default() },
            "unaligned" => MpaOptions { large_fpdus: false, align_fpdus: false, ..Default::default() },
            _ => MpaOptions::default(),
        }
    }

    fn liveness(&self) -> Liveness {
        match self.0.get("live").map(String::as_str) {
            None | Some("default") => Liveness::default(),
            Some("off") => Liveness::OFF,
            Some(v) => {
                let p: Vec<u64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
                let (idle, interval, ut) =
                    (p.first().copied().unwrap_or(20), p.get(1).copied().unwrap_or(5), p.get(2).copied().unwrap_or(0));
                Liveness {
                    keepalive: Some(Keepalive {
                        idle: Duration::from_secs(idle),
                        interval: Duration::from_secs(interval),
                        count: 3,
                    }),
                    user_timeout: (ut > 0).then(|| Duration::from_millis(ut)),
                }
            }
        }
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn patterned(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern(seed, &mut v);
    v
}

/// Bytes of `got` that differ from `want`.
fn mismatches(got: &[u8], want: &[u8]) -> u64 {
    got.iter().zip(want).filter(|(a, b)| a != b).count() as u64 + got.len().abs_diff(want.len()) as u64
}

fn event_name(ev: &QpEvent) -> &'static str {
    match ev {
        QpEvent::Established => "established",
        QpEvent::Disconnected => "disconnected",
        QpEvent::Error { .. } => "error",
        QpEvent::ConnectFailed(_) => "connect_failed",
        QpEvent::Rejected { .. } => "rejected",
        _ => "other",
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let role = argv.first().cloned().unwrap_or_default();
    let args = Args::parse(&argv);
    let r = match role.as_str() {
        "server" => server(&args),
        "client" => client(&args),
        "storm" => storm(&args),
        "reset" => resets(&args),
        "hostile" => hostile(&args),
        "relay" => relay(&args),
        "sink" => sink(&args),
        "source" => source(&args),
        _ => Err("usage: iwfault-peer server|client|storm|reset|hostile|relay|sink|source key=value...".into()),
    };
    if let Err(e) = r {
        say(format!("fatal {e}"));
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Server

fn server(args: &Args) -> Result<(), String> {
    let addr: SocketAddr = args.str("listen", "0.0.0.0:0").parse().map_err(|e| format!("listen: {e}"))?;
    let region = args.num("region", 16 << 20) as usize;
    let depth = args.num("depth", 32) as usize;
    let live = args.liveness();
    let cfg =
        DeviceConfig { mpa_timeout: Duration::from_millis(args.num("mpa_timeout", 10_000)), ..Default::default() };
    let dev = Device::open(cfg).map_err(|e| e.to_string())?;
    let pd = dev.alloc_pd();
    let l = dev.listen(addr, args.num("backlog", 64) as u32).map_err(|e| e.to_string())?;
    say(format!("listening port={}", l.local_addr().port()));
    let mut n = 0u32;
    loop {
        let req = match l.get_request(Some(Duration::from_secs(3600))) {
            Ok(r) => r,
            Err(e) => return Err(e.to_string()),
        };
        n += 1;
        let (dev, pd, mpa) = (dev.clone(), pd.clone(), args.mpa());
        std::thread::spawn(move || {
            if let Err(e) = serve_one(n, &dev, &pd, req, region, depth, live, &mpa) {
                say(format!("server_conn n={n} fatal={e:?}"));
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn serve_one(
    n: u32,
    dev: &Device,
    pd: &ProtectionDomain,
    req: ConnectRequest,
    region: usize,
    depth: usize,
    live: Liveness,
    mpa: &MpaOptions,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let target = pd
        .reg_mr(region, Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC)
        .map_err(|x| e(&x))?;
    let recv_len = HDR + (1 << 16);
    let rbuf = pd.reg_mr(depth * recv_len, Access::LOCAL_WRITE).map_err(|x| e(&x))?;
    let cq = dev.create_cq(4 * depth + 16).map_err(|x| e(&x))?;
    let mut init = QpInit::new(&cq, &cq);
    init.cap =
        QpCap { max_send_wr: 2 * depth + 8, max_recv_wr: depth, max_send_sge: 2, max_recv_sge: 1, max_inline_data: 64 };
    let qp = pd.create_qp(&init).map_err(|x| e(&x))?;
    let mut led = Ledger::new();
    for i in 0..depth {
        qp.post_recv(&[RecvWr::new(i as u64, &[rbuf.sge(i * recv_len, recv_len)])]).map_err(|x| e(&x))?;
        led.post_recv(i as u64);
    }
    let mut pdata = target.rkey().to_be_bytes().to_vec();
    pdata.extend_from_slice(&target.addr().to_be_bytes());
    let params = ConnParams {
        private_data: pdata,
        responder_resources: 16,
        initiator_depth: 16,
        liveness: live,
        mpa: mpa.clone(),
        ..Default::default()
    };
    req.accept(&qp, &params).map_err(|x| e(&x))?;
    say(format!("accepted n={n}"));
    let (mut msgs, mut verified, mut bad, mut next_recv) = (0u64, 0u64, 0u64, depth as u64);
    let mut ack_id = 0u64;
    let mut wcs = [WorkCompletion::default(); 64];
    let mut end = None;
    let mut refused: Option<Instant> = None;
    while end.is_none() {
        if refused.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            end = Some("post_failed");
        }
        let k = cq.wait(&mut wcs, Some(Duration::from_millis(100)));
        for c in &wcs[..k] {
            if !led.complete(c) || c.opcode != WcOpcode::Recv {
                continue;
            }
            let idx = (c.wr_id % depth as u64) as usize;
            let got = rbuf.to_vec(idx * recv_len, c.byte_len as usize).map_err(|x| e(&x))?;
            let Some(h) = Hdr::parse(&got) else {
                bad += got.len() as u64;
                continue;
            };
            let reply = match h.kind {
                KIND_MSG => {
                    msgs += 1;
                    let w = target.to_vec(h.off as usize, h.wlen as usize).map_err(|x| e(&x))?;
                    bad += mismatches(&w, &patterned(h.seq ^ WRITE_SALT, h.wlen as usize));
                    let body = &got[HDR..];
                    bad += mismatches(body, &patterned(h.seq ^ SEND_SALT, h.slen as usize));
                    verified += h.wlen as u64 + h.slen as u64;
                    Hdr { kind: KIND_ACK, seq: h.seq, ..Hdr::default() }
                }
                KIND_DONE => {
                    let total = h.seq as usize;
                    let t = Instant::now();
                    let w = target.to_vec(0, total).map_err(|x| e(&x))?;
                    let b = mismatches(&w, &patterned(FLOOD_SEED, total));
                    bad += b;
                    verified += total as u64;
                    let check_us = t.elapsed().as_micros() as u64;
                    say(format!("flood_checked n={n} bytes={total} bad={b} check_us={check_us}"));
                    // The check's time goes back in `off`: the client takes it out of its timing.
                    Hdr { kind: KIND_DONE_ACK, seq: total as u64, extra: b, off: check_us, ..Hdr::default() }
                }
                KIND_ATOMIC_CHECK => {
                    let w = target.to_vec(h.off as usize, 16).map_err(|x| e(&x))?;
                    let word = |i: usize| u64::from_ne_bytes(w[i..i + 8].try_into().unwrap_or([0; 8]));
                    let (fa, cas) = (word(0), word(8));
                    let b = (fa != h.seq) as u64 + (cas != h.extra) as u64;
                    bad += b;
                    say(format!(
                        "server_atomics n={n} fetch_add={fa} want={} compare_swap={cas} want={} bad={b}",
                        h.seq, h.extra
                    ));
                    Hdr { kind: KIND_ATOMIC_ACK, extra: b, ..Hdr::default() }
                }
                _ => {
                    bad += got.len() as u64;
                    continue;
                }
            };
            ack_id += 1;
            let hb = reply.emit();
            match qp.post_send(&[SendWr::send_inline(ack_id, &hb)]) {
                Ok(()) => led.post_send(ack_id),
                // The queue pair ended under us: its event follows.
                Err(_) => {
                    refused.get_or_insert_with(Instant::now);
                }
            }
            if qp.post_recv(&[RecvWr::new(next_recv, &[rbuf.sge(idx * recv_len, recv_len)])]).is_ok() {
                led.post_recv(next_recv);
            }
            next_recv += 1;
        }
        while let Some(ev) = qp.poll_event() {
            if matches!(ev, QpEvent::Disconnected | QpEvent::Error { .. }) {
                // The first end counts: an error is followed by `Disconnected` once the
                // socket closes.
                end.get_or_insert(event_name(&ev));
                if let QpEvent::Error { cause: Some(c), remote, .. } = ev {
                    let code = c.code();
                    say(format!(
                        "server_terminate n={n} remote={} layer={} etype={} ecode={}",
                        remote as u8, code.layer, code.etype, code.ecode
                    ));
                }
            }
        }
    }
    // Every posted request completes after the end (flushed): wait for them, up to 5 s.
    let t = Instant::now();
    while led.outstanding() > 0 && t.elapsed() < Duration::from_secs(5) {
        let k = cq.wait(&mut wcs, Some(Duration::from_millis(50)));
        for c in &wcs[..k] {
            led.complete(c);
        }
    }
    say(format!(
        "server_conn n={n} msgs={msgs} verified={verified} bad={bad} flushed={} failed={} posted={} completed={} outstanding={} in_order={} end={}",
        led.flushed,
        led.failed,
        led.posted,
        led.completed,
        led.outstanding(),
        led.in_order as u8,
        end.unwrap_or("?")
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client

/// What the client's threads share.
struct Shared {
    /// When the test applied its fault (`mark` on standard input).
    mark: Mutex<Option<Instant>>,
    /// When the first queue pair died.
    death: Mutex<Option<Instant>>,
    /// `go` on standard input: a flood paused at `pause=BYTES` continues.
    go: std::sync::atomic::AtomicBool,
    /// `stop` on standard input: stream mode posts no more messages (and ends once the last
    /// is answered).
    stop: std::sync::atomic::AtomicBool,
}

fn client(args: &Args) -> Result<(), String> {
    let shared = Arc::new(Shared {
        mark: Mutex::new(None),
        death: Mutex::new(None),
        go: Default::default(),
        stop: Default::default(),
    });
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "mark" {
                    *shared.mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    say("marked".into());
                }
                if line.trim() == "go" {
                    shared.go.store(true, std::sync::atomic::Ordering::Release);
                }
                if line.trim() == "stop" {
                    shared.stop.store(true, std::sync::atomic::Ordering::Release);
                }
            }
        });
    }
    let addrs: Vec<SocketAddr> =
        args.str("connect", "").split(',').filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    if addrs.is_empty() {
        return Err("connect=IP:PORT[,...] needed".into());
    }
    let mode = args.str("mode", "stream");
    let dev = Device::open(DeviceConfig::default()).map_err(|e| e.to_string())?;
    let pd = dev.alloc_pd();
    let window = args.num("window", 8) as usize;
    let sq = args.num("sq", 4 * window as u64 + 8) as u32;
    let live = args.liveness();
    let mut conns = Vec::new();
    for a in &addrs {
        let cq = dev.create_cq(4 * sq as usize + 64).map_err(|e| e.to_string())?;
        let mut init = QpInit::new(&cq, &cq);
        init.cap = QpCap {
            max_send_wr: sq as usize,
            max_recv_wr: window + 4,
            max_send_sge: 2,
            max_recv_sge: 1,
            max_inline_data: 64,
        };
        let qp = pd.create_qp(&init).map_err(|e| e.to_string())?;
        conns.push((qp, cq, *a));
    }
    let mut ready = Vec::new();
    for (i, (qp, cq, a)) in conns.into_iter().enumerate() {
        let recv_len = HDR + 64;
        let rbuf = pd.reg_mr((window + 4) * recv_len, Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
        for k in 0..window + 4 {
            qp.post_recv(&[RecvWr::new(k as u64, &[rbuf.sge(k * recv_len, recv_len)])]).map_err(|e| e.to_string())?;
        }
        let params = ConnParams {
            responder_resources: 16,
            initiator_depth: 16,
            liveness: live,
            mpa: args.mpa(),
            ..Default::default()
        };
        qp.connect(a, &params).map_err(|e| format!("connect {a}: {e}"))?;
        let pdata = qp.conn_info().map(|c| c.negotiated.peer_private_data).unwrap_or_default();
        let stag = Stag(u32::from_be_bytes(pdata.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])));
        let to = u64::from_be_bytes(pdata.get(4..12).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        ready.push(Conn { i, qp, cq, rbuf, recv_len, remote: RemoteAddr::unbounded(stag, to) });
    }
    say(format!("ready qps={}", ready.len()));
    let started = Instant::now();
    let mut threads = Vec::new();
    for c in ready {
        let (pd, shared) = (pd.clone(), Arc::clone(&shared));
        let mode = mode.clone();
        let cfg = Cfg {
            window,
            slot: args.num("slot", 256 << 10) as usize,
            maxwrite: args.num("maxwrite", 64 << 10) as usize,
            maxsend: (args.num("maxsend", 4096) as usize).min(1 << 16),
            msgs: args.num("msgs", u64::MAX),
            secs: Duration::from_secs(args.num("secs", 3600)),
            hold: Duration::from_secs(args.num("hold", 0)),
            total: args.num("total", 64 << 20) as usize,
            chunk: args.num("chunk", 64 << 10) as usize,
            seed: args.num("seed", 1),
            pause: args.num("pause", u64::MAX) as usize,
            log_sizes: args.str("sizes", "uniform") == "log",
            atomics: args.num("atomics", 0) != 0,
            tick: Duration::from_secs(args.num("tick", 0)),
        };
        threads.push(std::thread::spawn(move || {
            let r = if mode == "flood" { flood(&c, &pd, &cfg, &shared) } else { stream(&c, &pd, &cfg, &shared) };
            if let Err(e) = r {
                say(format!("result qp={} fatal={e:?}", c.i));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    say(format!("done secs={:.2}", started.elapsed().as_secs_f64()));
    Ok(())
}

struct Conn {
    i: usize,
    qp: QueuePair,
    cq: CompletionQueue,
    rbuf: MemoryRegion,
    recv_len: usize,
    remote: RemoteAddr,
}

struct Cfg {
    window: usize,
    slot: usize,
    maxwrite: usize,
    maxsend: usize,
    msgs: u64,
    secs: Duration,
    hold: Duration,
    total: usize,
    chunk: usize,
    seed: u64,
    pause: usize,
    /// Sizes spread evenly over the powers of two up to the maximum (1 B to `maxwrite`), the
    /// first message's Write 1 byte and the second's `maxwrite`; otherwise uniform.
    log_sizes: bool,
    /// A fetch-and-add and a compare-and-swap per message on two words after the slots.
    atomics: bool,
    /// Stream mode reports its progress (`tick`) this often (zero: never).
    tick: Duration,
}

/// The accounting of one queue pair's work requests.
#[derive(Default)]
struct Ledger {
    sq: VecDeque<u64>,
    rq: VecDeque<u64>,
    posted: u64,
    completed: u64,
    ok: u64,
    flushed: u64,
    failed: u64,
    in_order: bool,
    /// When the connection's end was first seen (failed completion or event), and the event.
    dead: Option<Instant>,
    event: &'static str,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger { in_order: true, event: "none", ..Ledger::default() }
    }
    fn post_send(&mut self, id: u64) {
        self.sq.push_back(id);
        self.posted += 1;
    }
    fn post_recv(&mut self, id: u64) {
        self.rq.push_back(id);
        self.posted += 1;
    }
    /// Accounts for a completion; `true` if it succeeded.
    fn complete(&mut self, c: &WorkCompletion) -> bool {
        let q = if c.opcode == WcOpcode::Recv { &mut self.rq } else { &mut self.sq };
        if q.pop_front() != Some(c.wr_id) {
            self.in_order = false;
        }
        self.completed += 1;
        match c.status {
            WcStatus::Success => self.ok += 1,
            WcStatus::WrFlush => self.flushed += 1,
            _ => self.failed += 1,
        }
        if c.status != WcStatus::Success && self.dead.is_none() {
            self.dead = Some(Instant::now());
        }
        c.status == WcStatus::Success
    }
    fn events(&mut self, qp: &QueuePair) {
        while let Some(ev) = qp.poll_event() {
            if matches!(ev, QpEvent::Disconnected | QpEvent::Error { .. }) {
                if self.event == "none" {
                    self.event = event_name(&ev);
                }
                self.dead.get_or_insert_with(Instant::now);
            }
        }
    }
    /// After the end: the queue pair's event follows its flushes (the driver delivers them
    /// first), so wait for it briefly.
    fn await_event(&mut self, qp: &QueuePair) {
        let t = Instant::now();
        while self.dead.is_some() && self.event == "none" && t.elapsed() < Duration::from_secs(2) {
            if let Some(ev) = qp.next_event(Duration::from_millis(50)) {
                if matches!(ev, QpEvent::Disconnected | QpEvent::Error { .. }) {
                    self.event = event_name(&ev);
                }
            }
        }
    }
    fn outstanding(&self) -> usize {
        self.sq.len() + self.rq.len()
    }
    fn line(&self, shared: &Shared) -> String {
        let mark = *shared.mark.lock().unwrap_or_else(|e| e.into_inner());
        let detect = match (mark, self.dead) {
            (Some(m), Some(d)) => format!("{}", d.saturating_duration_since(m).as_millis()),
            _ => "none".into(),
        };
        format!(
            "posted={} completed={} ok={} flushed={} failed={} outstanding={} in_order={} event={} detect_ms={detect}",
            self.posted,
            self.completed,
            self.ok,
            self.flushed,
            self.failed,
            self.outstanding(),
            self.in_order as u8,
            self.event
        )
    }
}

struct InFlight {
    seq: u64,
    wlen: usize,
    pending: u8,
    /// The originals the message's fetch-and-add and compare-and-swap must return.
    fa_want: u64,
    cas_want: u64,
}

/// The fetch-and-add operand of message `seq`: large, so that the sum wraps.
fn fa_add(seq: u64) -> u64 {
    seq.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A size from 1 to `max`: a power of two `2^k` (k uniform up to `max`'s), then uniform in
/// `2^(k-1)+1 ..= 2^k` (capped at `max`).
fn log_size(max: usize, r: usize) -> usize {
    if max <= 1 {
        return max;
    }
    let bits = (usize::BITS - max.leading_zeros()) as usize;
    let k = r % bits;
    let hi = (1usize << k).min(max);
    let lo = (1usize << k) / 2 + 1;
    if hi <= lo {
        return hi;
    }
    lo + (r / bits) % (hi - lo + 1)
}

fn stream(c: &Conn, pd: &ProtectionDomain, cfg: &Cfg, shared: &Shared) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let w = cfg.window;
    let slot = cfg.slot.max(cfg.maxwrite).max(1);
    let src = pd.reg_mr(w * slot, Access::LOCAL_WRITE).map_err(|x| e(&x))?;
    let sink = pd.reg_mr(w * slot, Access::LOCAL_WRITE).map_err(|x| e(&x))?;
    let sendbuf = pd.reg_mr(w * (HDR + cfg.maxsend), Access::LOCAL_WRITE).map_err(|x| e(&x))?;
    // The atomics' results, 16 bytes a slot; their two words follow the server's slots.
    let atom = pd.reg_mr(w * 16, Access::LOCAL_WRITE).map_err(|x| e(&x))?;
    let words = (w * slot) as u64;
    if cfg.atomics && !c.qp.supports_rfc7306() {
        return Err("atomics asked for, but RFC 7306 was not negotiated".into());
    }
    // The words' values once every atomic posted so far has run (both start at 0: the
    // server's region is zeroed), and the atomics' counts and wrong originals.
    let (mut fa_now, mut cas_now) = (0u64, 0u64);
    let (mut fas, mut cass, mut cas_swapped, mut atom_bad) = (0u64, 0u64, 0u64, 0u64);
    // The server's check of the words: asked (`Some(None)`), answered (`Some(Some(bad))`).
    let mut atom_check: Option<Option<u64>> = None;
    let (mut wmin, mut wmax, mut writes, mut reads, mut sends) = (usize::MAX, 0usize, 0u64, 0u64, 0u64);
    let mut led = Ledger::new();
    for k in 0..w as u64 + 4 {
        led.post_recv(k);
    }
    let mut next_recv = w as u64 + 4;
    let mut rng = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(c.i as u64) | 1;
    let log = cfg.log_sizes;
    let mut rand = move |max: usize| -> usize {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if max == 0 {
            0
        } else if log {
            log_size(max, (rng >> 1) as usize)
        } else {
            (rng % (max as u64 + 1)) as usize
        }
    };
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let (mut seq, mut acked, mut after_death, mut read_ok, mut read_bad, mut bytes) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    // Messages answered after the test's `mark`.
    let mut after_mark = 0u64;
    let start = Instant::now();
    let mut idle_since: Option<Instant> = None;
    let mut wcs = [WorkCompletion::default(); 64];
    let mut done_dead: Option<Instant> = None;
    let mut last_tick = Instant::now();
    loop {
        if !cfg.tick.is_zero() && last_tick.elapsed() >= cfg.tick {
            last_tick += cfg.tick;
            say(format!(
                "tick qp={} secs={:.2} acked={acked} bytes={bytes} read_ok={read_ok} bad={read_bad} atomic_bad={atom_bad} failed={}",
                c.i,
                start.elapsed().as_secs_f64(),
                led.failed + led.flushed
            ));
        }
        let posting = led.dead.is_none()
            && seq < cfg.msgs
            && start.elapsed() < cfg.secs
            && !shared.stop.load(std::sync::atomic::Ordering::Acquire);
        while posting && seq < cfg.msgs && inflight.len() < w {
            let s = (seq as usize) % w;
            let wlen = match (log, seq) {
                (true, 0) => 1.min(cfg.maxwrite),
                (true, 1) => cfg.maxwrite,
                _ => rand(cfg.maxwrite),
            };
            let slen = rand(cfg.maxsend);
            src.write(s * slot, &patterned(seq ^ WRITE_SALT, wlen)).map_err(|x| e(&x))?;
            let h = Hdr { kind: KIND_MSG, seq, wlen: wlen as u32, slen: slen as u32, off: (s * slot) as u64, extra: 0 };
            let so = s * (HDR + cfg.maxsend);
            sendbuf.write(so, &h.emit()).map_err(|x| e(&x))?;
            sendbuf.write(so + HDR, &patterned(seq ^ SEND_SALT, slen)).map_err(|x| e(&x))?;
            let remote = RemoteAddr::unbounded(c.remote.stag, c.remote.to + (s * slot) as u64);
            let mut wrs = Vec::with_capacity(5);
            let mut ids = Vec::with_capacity(5);
            if wlen > 0 {
                wrs.push(SendWr::write(seq * 8, &[src.sge(s * slot, wlen)], remote));
                ids.push(seq * 8);
            }
            wrs.push(SendWr::send(seq * 8 + 1, &[sendbuf.sge(so, HDR + slen)]));
            ids.push(seq * 8 + 1);
            if wlen > 0 {
                wrs.push(SendWr::read(seq * 8 + 2, sink.sge(s * slot, wlen), remote));
                ids.push(seq * 8 + 2);
            }
            // One requester's atomics run in the order posted: each must return the word as
            // the atomics before it left it. Every 4th compare-and-swap compares with a wrong
            // value and must leave the word alone.
            let (fa_want, cas_want) = (fa_now, cas_now);
            let (mut fa_next, mut cas_next) = (fa_now, cas_now);
            if cfg.atomics {
                let fa_at = RemoteAddr::unbounded(c.remote.stag, c.remote.to + words);
                let cas_at = RemoteAddr::unbounded(c.remote.stag, c.remote.to + words + 8);
                wrs.push(SendWr::fetch_add(seq * 8 + 3, atom.sge(s * 16, 8), fa_at, fa_add(seq)));
                ids.push(seq * 8 + 3);
                let swap = seq.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                let compare = if seq % 4 == 3 { cas_now ^ 1 } else { cas_now };
                wrs.push(SendWr::compare_swap(seq * 8 + 4, atom.sge(s * 16 + 8, 8), cas_at, compare, swap));
                ids.push(seq * 8 + 4);
                fa_next = fa_now.wrapping_add(fa_add(seq));
                if compare == cas_now {
                    cas_next = swap;
                }
            }
            match c.qp.post_send(&wrs) {
                Ok(()) => {}
                Err(x) => {
                    say(format!("post_failed qp={} seq={seq} error={x}", c.i));
                    led.dead.get_or_insert_with(Instant::now);
                    break;
                }
            }
            for id in ids {
                led.post_send(id);
            }
            inflight.push_back(InFlight {
                seq,
                wlen,
                pending: 1 + (wlen > 0) as u8 + 2 * cfg.atomics as u8,
                fa_want,
                cas_want,
            });
            if cfg.atomics {
                (fa_now, cas_now) = (fa_next, cas_next);
                fas += 1;
                cass += 1;
                cas_swapped += (cas_next != cas_want) as u64;
            }
            bytes += (wlen + slen) as u64;
            sends += 1;
            if wlen > 0 {
                writes += 1;
                reads += 1;
                wmin = wmin.min(wlen);
                wmax = wmax.max(wlen);
            }
            seq += 1;
        }
        let k = c.cq.wait(&mut wcs, Some(Duration::from_millis(5)));
        for wc in &wcs[..k] {
            if !led.complete(wc) {
                continue;
            }
            let hit = |seq: u64, inflight: &mut VecDeque<InFlight>| {
                inflight.iter_mut().find(|f| f.seq == seq).map(|f| {
                    f.pending = f.pending.saturating_sub(1);
                    (f.seq, f.wlen, f.fa_want, f.cas_want)
                })
            };
            match wc.opcode {
                WcOpcode::FetchAdd | WcOpcode::CompareSwap => {
                    if let Some((s, _, fa_want, cas_want)) = hit(wc.wr_id / 8, &mut inflight) {
                        let (off, want) = if wc.opcode == WcOpcode::FetchAdd {
                            ((s as usize % w) * 16, fa_want)
                        } else {
                            ((s as usize % w) * 16 + 8, cas_want)
                        };
                        let got = atom.to_vec(off, 8).map_err(|x| e(&x))?;
                        if u64::from_ne_bytes(got.try_into().unwrap_or([0; 8])) != want || wc.byte_len != 8 {
                            atom_bad += 1;
                        }
                    }
                }
                WcOpcode::RdmaRead => {
                    if let Some((s, wlen, _, _)) = hit(wc.wr_id / 8, &mut inflight) {
                        let got = sink.to_vec((s as usize % w) * slot, wlen).map_err(|x| e(&x))?;
                        match mismatches(&got, &patterned(s ^ WRITE_SALT, wlen)) {
                            0 => read_ok += wlen as u64,
                            b => read_bad += b,
                        }
                    }
                }
                WcOpcode::Recv => {
                    let idx = (wc.wr_id % (w as u64 + 4)) as usize;
                    let got = c.rbuf.to_vec(idx * c.recv_len, wc.byte_len as usize).map_err(|x| e(&x))?;
                    if let Some(h) = Hdr::parse(&got).filter(|h| h.kind == KIND_ATOMIC_ACK) {
                        atom_check = Some(Some(h.extra));
                    }
                    if let Some(h) = Hdr::parse(&got).filter(|h| h.kind == KIND_ACK) {
                        if hit(h.seq, &mut inflight).is_some() {
                            acked += 1;
                            let death = *shared.death.lock().unwrap_or_else(|e| e.into_inner());
                            if death.is_some_and(|d| Instant::now() > d) {
                                after_death += 1;
                            }
                            let mark = *shared.mark.lock().unwrap_or_else(|e| e.into_inner());
                            if mark.is_some_and(|m| Instant::now() > m) {
                                after_mark += 1;
                            }
                        }
                    }
                    if led.dead.is_none()
                        && c.qp
                            .post_recv(&[RecvWr::new(next_recv, &[c.rbuf.sge(idx * c.recv_len, c.recv_len)])])
                            .is_ok()
                    {
                        led.post_recv(next_recv);
                        next_recv += 1;
                    }
                }
                _ => {}
            }
            while inflight.front().is_some_and(|f| f.pending == 0) {
                inflight.pop_front();
            }
        }
        led.events(&c.qp);
        if let Some(d) = led.dead {
            let mut death = shared.death.lock().unwrap_or_else(|e| e.into_inner());
            death.get_or_insert(d);
            drop(death);
            // Every posted request must complete: wait for the flushes, up to 30 s.
            let since = *done_dead.get_or_insert_with(Instant::now);
            if led.outstanding() == 0 || since.elapsed() > Duration::from_secs(30) {
                break;
            }
            continue;
        }
        if !posting && inflight.is_empty() && cfg.atomics && atom_check.is_none() {
            // Every atomic has run: the server checks the two words' values.
            let h = Hdr { kind: KIND_ATOMIC_CHECK, seq: fa_now, off: words, extra: cas_now, ..Hdr::default() };
            let hb = h.emit();
            match c.qp.post_send(&[SendWr::send_inline(seq * 8 + 5, &hb)]) {
                Ok(()) => led.post_send(seq * 8 + 5),
                Err(_) => {
                    led.dead.get_or_insert_with(Instant::now);
                }
            }
            atom_check = Some(None);
        }
        let checked = !cfg.atomics || matches!(atom_check, Some(Some(_)));
        if !posting && inflight.is_empty() && checked {
            let t = *idle_since.get_or_insert_with(|| {
                say(format!("idle qp={} msgs={seq}", c.i));
                Instant::now()
            });
            if t.elapsed() >= cfg.hold {
                break;
            }
        }
    }
    led.await_event(&c.qp);
    let atomics = match (cfg.atomics, atom_check) {
        (false, _) => String::new(),
        (true, check) => format!(
            " fetch_adds={fas} compare_swaps={cass} swapped={cas_swapped} atomic_bad={atom_bad} words_checked={} words_bad={}",
            check.flatten().is_some() as u8,
            check.flatten().map_or("none".to_string(), |b| b.to_string())
        ),
    };
    say(format!(
        "result qp={} mode=stream msgs={seq} acked={acked} after_death={after_death} after_mark={after_mark} bytes={bytes} read_ok={read_ok} read_bad={read_bad} writes={writes} reads={reads} sends={sends} wmin={} wmax={wmax}{atomics} secs={:.2} {}",
        c.i,
        if wmin == usize::MAX { 0 } else { wmin },
        start.elapsed().as_secs_f64(),
        led.line(shared)
    ));
    Ok(())
}

fn flood(c: &Conn, pd: &ProtectionDomain, cfg: &Cfg, shared: &Shared) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let total = cfg.total;
    let chunk = cfg.chunk.max(1);
    let src = pd.reg_mr(total, Access::LOCAL_WRITE).map_err(|x| e(&x))?;
    src.write(0, &patterned(FLOOD_SEED, total)).map_err(|x| e(&x))?;
    let mut led = Ledger::new();
    for k in 0..cfg.window as u64 + 4 {
        led.post_recv(k);
    }
    let rss0 = util::resident_bytes().unwrap_or(0);
    let mut rss_max = rss0;
    let (mut off, mut id, mut qfull, mut last_sample, mut last_progress) = (0usize, 0u64, 0u64, Instant::now(), 0usize);
    let start = Instant::now();
    let mut wcs = [WorkCompletion::default(); 64];
    let mut drain = |led: &mut Ledger, wait: Option<Duration>| {
        let k = match wait {
            Some(d) => c.cq.wait(&mut wcs, Some(d)),
            None => c.cq.poll(&mut wcs),
        };
        let mut got = Vec::new();
        for wc in &wcs[..k] {
            led.complete(wc);
            got.push(*wc);
        }
        led.events(&c.qp);
        got
    };
    let mut paused = false;
    while off < total && led.dead.is_none() && start.elapsed() < cfg.secs {
        if off >= cfg.pause && !paused {
            // The test applies its fault here, then says `go`.
            paused = true;
            say(format!("paused qp={} at={off}", c.i));
            let t = Instant::now();
            while !shared.go.load(std::sync::atomic::Ordering::Acquire) && t.elapsed() < Duration::from_secs(30) {
                drain(&mut led, Some(Duration::from_millis(5)));
            }
        }
        let len = chunk.min(total - off);
        let remote = RemoteAddr::unbounded(c.remote.stag, c.remote.to + off as u64);
        match c.qp.post_send(&[SendWr::write(id, &[src.sge(off, len)], remote)]) {
            Ok(()) => {
                led.post_send(id);
                id += 1;
                off += len;
                drain(&mut led, None);
            }
            Err(PostError { reason: PostReason::QueueFull, .. }) => {
                qfull += 1;
                if qfull == 1 {
                    say(format!("queue_full qp={} at={off} outstanding={}", c.i, led.outstanding()));
                }
                drain(&mut led, Some(Duration::from_millis(2)));
            }
            Err(x) => {
                say(format!("post_failed qp={} error={x}", c.i));
                led.dead.get_or_insert_with(Instant::now);
            }
        }
        if last_sample.elapsed() >= Duration::from_millis(50) {
            last_sample = Instant::now();
            rss_max = rss_max.max(util::resident_bytes().unwrap_or(0));
        }
        if off - last_progress >= 4 << 20 {
            last_progress = off;
            say(format!("progress qp={} bytes={off} queue_full={qfull}", c.i));
        }
    }
    // Every Write completes; then the Send that asks the server to check the region.
    // After the end, the receives too: everything posted must come back flushed.
    let t = Instant::now();
    let left = |led: &Ledger| if led.dead.is_some() { led.outstanding() } else { led.sq.len() };
    while left(&led) > 0 && t.elapsed() < Duration::from_secs(60) {
        drain(&mut led, Some(Duration::from_millis(10)));
        if led.dead.is_some() && t.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    // When the last Write completed: the transfer's time, before the server's check.
    let write_secs = start.elapsed().as_secs_f64();
    // Unchecked (the connection ended first) until the server answers.
    let (mut verified, mut bad) = (0u64, None);
    // From the first Write to the server's answer to the final Send (which follows every Write
    // on the stream, so all were placed), less the server's check.
    let mut transfer_secs = 0.0;
    if led.dead.is_none() {
        // The bytes written: all of `total`, or fewer if `secs` ran out first.
        let h = Hdr { kind: KIND_DONE, seq: off as u64, ..Hdr::default() };
        let hb = h.emit();
        c.qp.post_send(&[SendWr::send_inline(id, &hb)]).map_err(|x| e(&x))?;
        led.post_send(id);
        let t = Instant::now();
        'wait: while t.elapsed() < Duration::from_secs(60) && led.dead.is_none() {
            for wc in drain(&mut led, Some(Duration::from_millis(10))) {
                if wc.opcode == WcOpcode::Recv && wc.status == WcStatus::Success {
                    let idx = (wc.wr_id % (cfg.window as u64 + 4)) as usize;
                    let got = c.rbuf.to_vec(idx * c.recv_len, wc.byte_len as usize).map_err(|x| e(&x))?;
                    if let Some(h) = Hdr::parse(&got).filter(|h| h.kind == KIND_DONE_ACK) {
                        verified = h.seq;
                        bad = Some(h.extra);
                        transfer_secs = start.elapsed().as_secs_f64() - h.off as f64 / 1e6;
                        break 'wait;
                    }
                }
            }
        }
        while !led.sq.is_empty() && t.elapsed() < Duration::from_secs(60) {
            drain(&mut led, Some(Duration::from_millis(10)));
        }
    }
    led.await_event(&c.qp);
    let rss_max = rss_max.max(util::resident_bytes().unwrap_or(0));
    // The receives still posted are the queue pair's to flush when it closes; not counted.
    let sends_left = led.sq.len();
    let bad = bad.map_or("unchecked".to_string(), |b| b.to_string());
    say(format!(
        "result qp={} mode=flood written={off} writes={id} queue_full={qfull} rss_start={rss0} rss_max={rss_max} verified={verified} bad={bad} sends_left={sends_left} write_secs={write_secs:.3} transfer_secs={transfer_secs:.3} secs={:.2} {}",
        c.i,
        start.elapsed().as_secs_f64(),
        led.line(shared)
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Hand-driven initiators: MPA by hand over a plain socket, FPDUs built with the wire codecs.

/// An initiator that speaks MPA and DDP/RDMAP by hand (no queue pair of its own): it moves the
/// stream mode's messages (a tagged Write and a Send naming it) to a server, and can send what
/// no well-behaved peer would.
struct Raw {
    sock: TcpStream,
    framer: Framer,
    deframer: Deframer,
    /// The server's region, from its private data.
    stag: Stag,
    to: u64,
    /// The next Send's MSN (queue 0 starts at 1).
    msn: u32,
    /// The FPDU being received: its opcode and payload so far.
    cur: Option<RxFpdu>,
}

/// A received FPDU: its opcode (if its header parsed) and payload.
type RxFpdu = (Option<Opcode>, Vec<u8>);

/// The MPA Request the raw initiators send: revision 2, CRC, IRD/ORD 4, no RTR.
fn mpa_request() -> Result<Vec<u8>, String> {
    FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(4, 4), b"iwfault-raw")
        .to_vec()
        .map_err(|e| format!("request: {e}"))
}

impl Raw {
    /// Connects, exchanges the MPA Request and Reply (each step waiting up to `wait`).
    fn connect(addr: SocketAddr, wait: Duration) -> Result<Raw, String> {
        let mut sock = TcpStream::connect_timeout(&addr, wait).map_err(|e| format!("connect: {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
        sock.write_all(&mpa_request()?).map_err(|e| format!("send request: {e}"))?;
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; HEADER_LEN];
        read_exact_by(&mut sock, &mut buf, deadline)?;
        let pd_len = u16::from_be_bytes([buf[18], buf[19]]) as usize;
        buf.resize(HEADER_LEN + pd_len, 0);
        read_exact_by(&mut sock, &mut buf[HEADER_LEN..], deadline)?;
        let (rep, _) =
            FrameRepr::parse(&buf, FrameKind::Reply).map_err(|e| format!("reply: {e}"))?.ok_or("reply: incomplete")?;
        if rep.reject {
            return Err("rejected".into());
        }
        let pd = rep.private_data;
        let stag = Stag(u32::from_be_bytes(pd.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])));
        let to = u64::from_be_bytes(pd.get(4..12).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        // RFC 5044 §4.4: CRC unless both sides declined it; this side asked for it.
        Ok(Raw {
            sock,
            framer: Framer::new(true, false),
            deframer: Deframer::new(DeframerConfig { crc: true, markers: false, max_ulpdu: u16::MAX }),
            stag,
            to,
            msn: 1,
            cur: None,
        })
    }

    /// One FPDU of `seg` and `payload`.
    fn fpdu(&mut self, seg: SegmentHeader, payload: &[u8]) -> Result<Vec<u8>, String> {
        let (b, n) = seg.to_bytes();
        let mut out = Vec::new();
        self.framer.frame_to_vec(&b[..n], &[payload], &mut out).map_err(|e| format!("frame: {e}"))?;
        Ok(out)
    }

    /// Message `seq` of stream mode: a tagged Write of `wlen` patterned bytes at `off` in the
    /// server's region and a Send naming it with `slen` patterned bytes.
    fn message(&mut self, seq: u64, wlen: usize, slen: usize, off: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if wlen > 0 {
            let seg = SegmentHeader::tagged(Opcode::Write, true, self.stag, TaggedOffset(self.to + off));
            out.extend(self.fpdu(seg, &patterned(seq ^ WRITE_SALT, wlen))?);
        }
        let h = Hdr { kind: KIND_MSG, seq, wlen: wlen as u32, slen: slen as u32, off, extra: 0 };
        let mut body = h.emit().to_vec();
        body.extend(patterned(seq ^ SEND_SALT, slen));
        let seg = SegmentHeader::untagged(Opcode::Send, true, Msn(self.msn), 0);
        self.msn += 1;
        out.extend(self.fpdu(seg, &body)?);
        Ok(out)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sock.write_all(bytes).map_err(|e| format!("send: {e}"))
    }

    /// Reads FPDUs until `want` have arrived, the stream ends (or is reset, or carries an FPDU
    /// that does not deframe), or `wait` passes; returns them (opcode, payload) and whether
    /// the stream ended.
    fn read_fpdus(&mut self, want: usize, wait: Duration) -> (Vec<RxFpdu>, bool) {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        while out.len() < want && Instant::now() < deadline {
            let n = match self.sock.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return (out, true),
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let Ok((used, ev)) = self.deframer.feed(rest) else { return (out, true) };
                match ev {
                    Event::Header(h) => self.cur = Some((h.segment().ok().map(|s| s.opcode), Vec::new())),
                    Event::Payload(p) => {
                        if let Some(c) = self.cur.as_mut() {
                            c.1.extend_from_slice(p);
                        }
                    }
                    Event::End(_) => out.extend(self.cur.take()),
                    Event::None => {}
                }
                if used == 0 {
                    break;
                }
                rest = &rest[used..];
            }
        }
        (out, false)
    }

    /// Reads the server's acknowledgements until `n` have arrived (or `wait` passes).
    fn acks(&mut self, n: usize, wait: Duration) -> usize {
        let (f, _) = self.read_fpdus(n, wait);
        f.iter()
            .filter(|(op, p)| *op == Some(Opcode::Send) && Hdr::parse(p).is_some_and(|h| h.kind == KIND_ACK))
            .count()
    }

    /// Closes with an RST (`SO_LINGER` 0), as the kernel does for a process that dies with
    /// bytes unread.
    fn reset(self) {
        let _ = socket2::SockRef::from(&self.sock).set_linger(Some(Duration::ZERO));
    }
}

fn read_exact_by(sock: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    while !buf.is_empty() {
        if Instant::now() >= deadline {
            return Err("timed out reading the MPA Reply".into());
        }
        match sock.read(buf) {
            Ok(0) => return Err("closed during the MPA exchange".into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("reading the MPA Reply: {e}")),
        }
    }
    Ok(())
}

fn target(args: &Args) -> Result<SocketAddr, String> {
    args.str("connect", "").parse().map_err(|e| format!("connect=IP:PORT: {e}"))
}

/// Waits for `go` on standard input (up to `wait`).
fn wait_go(wait: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "go" && tx.send(()).is_err() {
                break;
            }
        }
    });
    rx.recv_timeout(wait).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Storm

/// How a storm connection behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StormKind {
    /// TCP connect, then close at once.
    Abandon,
    /// Half an MPA Request, then close.
    Partial,
    /// Half an MPA Request, then silence (held open until the listener gives up on it).
    Silent,
    /// The whole MPA Request, then close without waiting for the Reply: the listener queues
    /// a request whose peer is gone.
    Request,
    /// TCP connect, then reset (`SO_LINGER` 0).
    Reset,
    /// The whole MPA exchange (the server accepts onto a queue pair), then close.
    Full,
}

fn storm_kind(i: u64, full_every: u64, silent_every: u64) -> StormKind {
    if silent_every > 0 && i % silent_every == silent_every / 2 {
        StormKind::Silent
    } else if full_every > 0 && i.is_multiple_of(full_every) {
        StormKind::Full
    } else {
        match i % 4 {
            1 => StormKind::Partial,
            2 => StormKind::Request,
            3 => StormKind::Reset,
            _ => StormKind::Abandon,
        }
    }
}

/// `storm connect=IP:PORT count=N secs=S threads=T full_every=K silent_every=M watch=S`:
/// `count` connections as fast as `threads` threads make them (for at most `secs`): every
/// `full_every`-th completes the MPA exchange then closes, every `silent_every`-th sends half
/// a Request then stays silent, the rest take turns closing at once, closing after half a
/// Request, closing after the whole Request (before the Reply), and resetting at once. Then watches the silent ones (up to `watch` seconds) for the listener to
/// close them.
fn storm(args: &Args) -> Result<(), String> {
    let addr = target(args)?;
    let count = args.num("count", 5000);
    let secs = Duration::from_secs(args.num("secs", 30));
    let threads = args.num("threads", 4).max(1);
    let full_every = args.num("full_every", 10);
    let silent_every = args.num("silent_every", 50);
    let watch = Duration::from_secs(args.num("watch", 10));
    let req = mpa_request()?;
    let half = req.len() / 2;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let held: Arc<Mutex<Vec<(TcpStream, Instant)>>> = Arc::default();
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..threads {
        let (next, held, req) = (Arc::clone(&next), Arc::clone(&held), req.clone());
        workers.push(std::thread::spawn(move || {
            // Per kind: made, failed.
            let mut tally: HashMap<&'static str, (u64, u64)> = HashMap::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count || start.elapsed() >= secs {
                    break;
                }
                let kind = storm_kind(i, full_every, silent_every);
                let r: Result<(), String> = (|| {
                    match kind {
                        StormKind::Full => {
                            Raw::connect(addr, Duration::from_secs(5))?;
                        }
                        _ => {
                            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                                .map_err(|e| format!("connect: {e}"))?;
                            match kind {
                                StormKind::Partial | StormKind::Silent => {
                                    s.write_all(&req[..half]).map_err(|e| format!("send: {e}"))?
                                }
                                StormKind::Request => s.write_all(&req).map_err(|e| format!("send: {e}"))?,
                                StormKind::Reset => {
                                    socket2::SockRef::from(&s)
                                        .set_linger(Some(Duration::ZERO))
                                        .map_err(|e| format!("linger: {e}"))?;
                                }
                                _ => {}
                            }
                            if kind == StormKind::Silent {
                                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                                held.lock().unwrap_or_else(|e| e.into_inner()).push((s, Instant::now()));
                            }
                        }
                    }
                    Ok(())
                })();
                let name = match kind {
                    StormKind::Abandon => "abandon",
                    StormKind::Request => "request",
                    StormKind::Reset => "reset",
                    StormKind::Partial => "partial",
                    StormKind::Silent => "silent",
                    StormKind::Full => "full",
                };
                let t = tally.entry(name).or_default();
                t.0 += 1;
                if let Err(e) = r {
                    if t.1 == 0 {
                        say(format!("storm_error kind={name} error={e}"));
                    }
                    t.1 += 1;
                }
            }
            tally
        }));
    }
    let mut total: HashMap<&'static str, (u64, u64)> = HashMap::new();
    for w in workers {
        for (k, (n, f)) in w.join().unwrap_or_default() {
            let t = total.entry(k).or_default();
            t.0 += n;
            t.1 += f;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let made: u64 = total.values().map(|t| t.0).sum();
    let failed: u64 = total.values().map(|t| t.1).sum();
    let get = |k: &str| total.get(k).copied().unwrap_or_default();
    say(format!(
        "storm connections={made} failed={failed} full={} full_failed={} partial={} request={} reset={} abandon={} silent={} secs={took:.2} rate={:.0}",
        get("full").0,
        get("full").1,
        get("partial").0,
        get("request").0,
        get("reset").0,
        get("abandon").0,
        get("silent").0,
        made as f64 / took.max(1e-9)
    ));
    // The silent ones: each must be closed by the listener (end of stream or reset).
    let mut held = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
    let n = held.len();
    let mut closed_ms: Vec<u128> = Vec::new();
    let t = Instant::now();
    while !held.is_empty() && t.elapsed() < watch {
        held.retain_mut(|(s, opened)| {
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => true,
                Ok(k) if k > 0 => true,
                _ => {
                    closed_ms.push(opened.elapsed().as_millis());
                    false
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    say(format!(
        "silent held={n} closed={} open={} min_close_ms={} max_close_ms={}",
        closed_ms.len(),
        held.len(),
        closed_ms.iter().min().copied().unwrap_or(0),
        closed_ms.iter().max().copied().unwrap_or(0)
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resets

/// `reset connect=IP:PORT count=N msgs=M pause_at=K batch=B`: `count` connections that each
/// move `msgs` messages (acknowledged), send one more and are reset (`SO_LINGER` 0): to the
/// server, a peer that died with work in flight. They die `batch` at a time: each batch is
/// held open until its last connection has moved its messages, then all of it is reset at
/// once (the last, partial batch at the end). After the `pause_at`-th connection (and its
/// batch's death, if it completed one) it waits for `go` on standard input (the test samples
/// the server there, or changes something while connections are held).
fn resets(args: &Args) -> Result<(), String> {
    let addr = target(args)?;
    let count = args.num("count", 1000);
    let msgs = args.num("msgs", 3);
    let pause_at = args.num("pause_at", u64::MAX);
    let batch = args.num("batch", 1).max(1) as usize;
    let start = Instant::now();
    let (mut acked, mut errors) = (0u64, 0u64);
    // Connections of the batch, with their last message's sequence number.
    let mut held: Vec<(Raw, u64)> = Vec::new();
    for i in 1..=count {
        let r: Result<(Raw, usize), String> = (|| {
            let mut raw = Raw::connect(addr, Duration::from_secs(5))?;
            let mut bytes = Vec::new();
            for k in 0..msgs {
                let seq = i * 1000 + k;
                bytes.extend(raw.message(
                    seq,
                    512 + (seq % 7) as usize * 512,
                    64 + (seq % 5) as usize * 200,
                    k * 4096,
                )?);
            }
            raw.send(&bytes)?;
            let got = raw.acks(msgs as usize, Duration::from_secs(5));
            Ok((raw, got))
        })();
        match r {
            Ok((raw, n)) => {
                acked += n as u64;
                held.push((raw, i * 1000 + msgs));
            }
            Err(e) => {
                if errors == 0 {
                    say(format!("reset_error n={i} error={e}"));
                }
                errors += 1;
            }
        }
        if held.len() >= batch {
            die(&mut held, msgs);
        }
        if i == pause_at {
            say(format!("paused n={i} held={}", held.len()));
            if !wait_go(Duration::from_secs(60)) {
                return Err("no go".into());
            }
        }
        if i % 100 == 0 {
            say(format!("progress n={i} acked={acked} errors={errors} secs={:.2}", start.elapsed().as_secs_f64()));
        }
    }
    die(&mut held, msgs);
    say(format!("reset_done n={count} acked={acked} errors={errors} secs={:.2}", start.elapsed().as_secs_f64()));
    Ok(())
}

/// A batch dies: one more message on each connection, then every one reset at once.
fn die(held: &mut Vec<(Raw, u64)>, msgs: u64) {
    for (raw, seq) in held.iter_mut() {
        if let Ok(last) = raw.message(*seq, 1024, 256, msgs * 4096) {
            let _ = raw.send(&last);
        }
    }
    for (raw, _) in held.drain(..) {
        raw.reset();
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile

/// `hostile connect=IP:PORT attack=crc|window|msn|terminate|truncate|dribble region=BYTES msgs=N`: `msgs` good
/// messages (acknowledged), then the attack, then reads until the connection ends (up to
/// `wait` seconds, 10 by default) and reports the Terminate the server sent (layer, error
/// type, code).
fn hostile(args: &Args) -> Result<(), String> {
    let addr = target(args)?;
    let attack = args.str("attack", "crc");
    let region = args.num("region", 16 << 20);
    let msgs = args.num("msgs", 5);
    let mut raw = Raw::connect(addr, Duration::from_secs(5))?;
    let mut bytes = Vec::new();
    for k in 0..msgs {
        bytes.extend(raw.message(k, 1000 + k as usize * 100, 300, k * 4096)?);
    }
    raw.send(&bytes)?;
    let acked = raw.acks(msgs as usize, Duration::from_secs(5));
    let bad = match attack.as_str() {
        // A Send whose CRC is wrong.
        "crc" => {
            let mut f = raw.message(msgs, 0, 100, 0)?;
            let n = f.len();
            f[n - 1] ^= 0xff;
            f
        }
        // A tagged Write that runs 4 bytes past the end of the advertised region.
        "window" => {
            let seg = SegmentHeader::tagged(Opcode::Write, true, raw.stag, TaggedOffset(raw.to + region - 4));
            raw.fpdu(seg, &[0xa5; 8])?
        }
        // A Send with an MSN ahead of the receives posted.
        "msn" => {
            let seg = SegmentHeader::untagged(Opcode::Send, true, Msn(raw.msn + 1000), 0);
            raw.fpdu(seg, &Hdr { kind: KIND_MSG, ..Hdr::default() }.emit())?
        }
        // A Terminate of our own (RDMAP, local catastrophic).
        "terminate" => {
            let t = TerminateRepr::bare(TerminateCause::RdmapCatastrophic);
            let mut body = vec![0u8; t.buffer_len()];
            t.emit(&mut body).map_err(|e| format!("terminate: {e}"))?;
            raw.fpdu(SegmentHeader::untagged(Opcode::Terminate, true, Msn(1), 0), &body)?
        }
        // Half a Send, then the end of the stream (a FIN inside an FPDU).
        "truncate" => {
            let f = raw.message(msgs, 0, 500, 0)?;
            raw.send(&f[..f.len() / 2])?;
            raw.sock.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
            Vec::new()
        }
        // Not an attack: a good message (Write and Send) one byte per segment, 1 ms apart;
        // its answer is counted, then the connection closes cleanly.
        "dribble" => {
            let m = raw.message(msgs, 1000, 300, msgs * 4096)?;
            for b in &m {
                raw.send(std::slice::from_ref(b))?;
                std::thread::sleep(Duration::from_millis(1));
            }
            let got = raw.acks(1, Duration::from_secs(5));
            say(format!("hostile attack=dribble msgs={msgs} acked={} bytes={}", acked + got, m.len()));
            return Ok(());
        }
        a => return Err(format!("unknown attack {a}")),
    };
    raw.send(&bad)?;
    let (fpdus, eof) = raw.read_fpdus(usize::MAX, Duration::from_secs(args.num("wait", 10)));
    let term = fpdus.iter().find(|(op, _)| *op == Some(Opcode::Terminate));
    let code = match term {
        Some((_, p)) if p.len() >= 2 => format!("terminate=1 layer={} etype={} ecode={}", p[0] >> 4, p[0] & 0xf, p[1]),
        _ => "terminate=0".into(),
    };
    say(format!("hostile attack={attack} msgs={msgs} acked={acked} {code} eof={}", eof as u8));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Delay relay

/// One direction of a relay: chunks read and when, at most `buffer` bytes held.
struct Line {
    q: Mutex<LineState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct LineState {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    eof: bool,
    /// Bytes carried, and the sum of the time they were held (for the mean delay).
    carried: u64,
    held_us: u64,
    n: u64,
}

/// Carries `from` to `to` with every chunk held `delay` after it was read, give or take up to
/// `jitter` (uniformly; never before an earlier chunk: the stream keeps its order); reading
/// stops while `buffer` bytes are held (the relay's window).
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, jitter: Duration, buffer: usize, tag: String) {
    let line = Arc::new(Line { q: Mutex::new(LineState::default()), cv: std::sync::Condvar::new() });
    let writer = {
        let line = Arc::clone(&line);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ tag.len() as u64;
        let mut last_due: Option<Instant> = None;
        std::thread::spawn(move || loop {
            let mut st = line.q.lock().unwrap_or_else(|e| e.into_inner());
            while st.chunks.is_empty() && !st.eof {
                st = line.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let Some((t, chunk)) = st.chunks.pop_front() else {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            };
            drop(st);
            // delay - jitter + uniform(0..=2 jitter), not before the previous chunk.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let j = jitter.as_micros() as u64;
            let hold =
                (delay + Duration::from_micros(if j > 0 { rng % (2 * j + 1) } else { 0 })).saturating_sub(jitter);
            let due = last_due.map_or(t + hold, |l| l.max(t + hold));
            last_due = Some(due);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let held = t.elapsed();
            let ok = to.write_all(&chunk).is_ok();
            let mut st = line.q.lock().unwrap_or_else(|e| e.into_inner());
            st.bytes -= chunk.len();
            st.carried += chunk.len() as u64;
            st.held_us += held.as_micros() as u64;
            st.n += 1;
            line.cv.notify_all();
            if !ok {
                st.eof = true;
                return;
            }
        })
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        {
            let mut st = line.q.lock().unwrap_or_else(|e| e.into_inner());
            while st.bytes >= buffer && !st.eof {
                st = line.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.eof {
                break;
            }
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let mut st = line.q.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            st.eof = true;
            line.cv.notify_all();
            break;
        }
        st.chunks.push_back((Instant::now(), buf[..n].to_vec()));
        st.bytes += n;
        line.cv.notify_all();
    }
    let _ = writer.join();
    let st = line.q.lock().unwrap_or_else(|e| e.into_inner());
    say(format!(
        "relayed dir={tag} bytes={} chunks={} mean_delay_us={}",
        st.carried,
        st.n,
        st.held_us.checked_div(st.n).unwrap_or(0)
    ));
}

/// `relay listen=IP:PORT to=IP:PORT delay_us=N jitter_us=J buffer=BYTES`: every connection to
/// `listen` is carried to `to`, each direction delayed by `delay_us` give or take `jitter_us`
/// (a round trip through the relay gains twice that), holding at most `buffer` bytes per
/// direction.
fn relay(args: &Args) -> Result<(), String> {
    let listen: SocketAddr = args.str("listen", "").parse().map_err(|e| format!("listen: {e}"))?;
    let to: SocketAddr = args.str("to", "").parse().map_err(|e| format!("to: {e}"))?;
    let delay = Duration::from_micros(args.num("delay_us", 500));
    let jitter = Duration::from_micros(args.num("jitter_us", 0)).min(delay);
    let buffer = args.num("buffer", 4 << 20) as usize;
    let l = std::net::TcpListener::bind(listen).map_err(|e| format!("bind: {e}"))?;
    say(format!("listening port={}", listen.port()));
    for (k, down) in l.incoming().enumerate() {
        let Ok(down) = down else { continue };
        let up = match TcpStream::connect(to) {
            Ok(u) => u,
            Err(e) => {
                say(format!("relay_error connect={e}"));
                continue;
            }
        };
        for s in [&down, &up] {
            let _ = s.set_nodelay(true);
        }
        let (d2, u2) = match (down.try_clone(), up.try_clone()) {
            (Ok(d), Ok(u)) => (d, u),
            _ => continue,
        };
        std::thread::spawn(move || pipe(down, up, delay, jitter, buffer, format!("{k}up")));
        std::thread::spawn(move || pipe(u2, d2, delay, jitter, buffer, format!("{k}down")));
    }
    Ok(())
}

/// `sink listen=IP:PORT pings=N`: for each connection, echoes its first `pings` bytes one at a
/// time, then reads to end of stream and answers with the count of bytes read (8 bytes).
fn sink(args: &Args) -> Result<(), String> {
    let listen: SocketAddr = args.str("listen", "").parse().map_err(|e| format!("listen: {e}"))?;
    let pings = args.num("pings", 0);
    let l = std::net::TcpListener::bind(listen).map_err(|e| format!("bind: {e}"))?;
    say(format!("listening port={}", listen.port()));
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut one = [0u8; 1];
            for _ in 0..pings {
                if s.read_exact(&mut one).is_err() || s.write_all(&one).is_err() {
                    return;
                }
            }
            let mut buf = vec![0u8; 256 << 10];
            let mut n = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&n.to_be_bytes());
        });
    }
    Ok(())
}

/// `source connect=IP:PORT total=BYTES pings=N secs=S`: `pings` one-byte round trips (their
/// median time is the path's round trip), then `total` bytes (or as many as it can send in `S`
/// seconds, if given), timed until the sink has counted them.
fn source(args: &Args) -> Result<(), String> {
    let addr = target(args)?;
    let total = args.num("total", 32 << 20);
    let pings = args.num("pings", 0);
    let limit = match args.num("secs", 0) {
        0 => Duration::MAX,
        s => Duration::from_secs(s),
    };
    let e = |e: std::io::Error| e.to_string();
    let mut s = TcpStream::connect(addr).map_err(e)?;
    s.set_nodelay(true).map_err(e)?;
    let mut rtts = Vec::new();
    let mut one = [0u8; 1];
    for k in 0..pings {
        let t = Instant::now();
        s.write_all(&[k as u8]).map_err(e)?;
        s.read_exact(&mut one).map_err(e)?;
        rtts.push(t.elapsed().as_micros() as u64);
    }
    rtts.sort_unstable();
    let buf = patterned(7, 256 << 10);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total && start.elapsed() < limit {
        let k = (total - sent).min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).map_err(e)?;
        sent += k as u64;
    }
    s.shutdown(std::net::Shutdown::Write).map_err(e)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).map_err(e)?;
    let secs = start.elapsed().as_secs_f64();
    say(format!(
        "source bytes={} counted={} secs={secs:.3} mb_per_s={:.1} rtt_us_min={} rtt_us_p10={} rtt_us_median={} rtt_us_p90={} rtt_us_max={}",
        sent,
        u64::from_be_bytes(count),
        sent as f64 / secs / 1e6,
        rtts.first().copied().unwrap_or(0),
        rtts.get(rtts.len() / 10).copied().unwrap_or(0),
        rtts.get(rtts.len() / 2).copied().unwrap_or(0),
        rtts.get(rtts.len() * 9 / 10).copied().unwrap_or(0),
        rtts.last().copied().unwrap_or(0)
    ));
    Ok(())
}
