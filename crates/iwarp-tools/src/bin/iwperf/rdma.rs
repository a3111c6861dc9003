//! The eight perftest tests over iWARP, as client or server, speaking perftest 6.06's `-R`
//! exchange (`docs/tool-compat.md` §1-3; the atomic tests: §3, "ib_atomic_bw, ib_atomic_lat").

use crate::ctrl::{connect_retry, wait_peer_close, Ctrl, Dest};
use crate::report::{self, BwResult, LatResult, DASHES};
use clap::ValueEnum;
use iwarp::{
    Access, CompletionQueue, ConnParams, Device, DeviceConfig, MemoryRegion, MpaOptions, ProtectionDomain, QpInit,
    QueuePair, RecvWr, RemoteAddr, SendWr, Stag, WcOpcode, WcStatus, WorkCompletion,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// The tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Test {
    /// RDMA Write bandwidth.
    WriteBw,
    /// RDMA Read bandwidth.
    ReadBw,
    /// Send bandwidth.
    SendBw,
    /// RDMA Write latency.
    WriteLat,
    /// RDMA Read latency.
    ReadLat,
    /// Send latency.
    SendLat,
    /// RFC 7306 atomic bandwidth (ib_atomic_bw).
    AtomicBw,
    /// RFC 7306 atomic latency (ib_atomic_lat).
    AtomicLat,
}

/// The operation of the atomic tests (perftest's `-A`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AtomicOp {
    /// Compare-and-swap (perftest compares with 0 and swaps in 0).
    #[value(name = "CMP_AND_SWAP")]
    CmpAndSwap,
    /// Fetch-and-add of 1.
    #[default]
    #[value(name = "FETCH_AND_ADD")]
    FetchAndAdd,
}

impl AtomicOp {
    /// perftest's name for it, as printed in the title.
    pub fn name(self) -> &'static str {
        match self {
            AtomicOp::CmpAndSwap => "CMP_AND_SWAP",
            AtomicOp::FetchAndAdd => "FETCH_AND_ADD",
        }
    }
}

/// The only size perftest's atomic tests accept: one 64-bit word.
pub const ATOMIC_SIZE: usize = 8;

impl Test {
    /// perftest's name without the `ib_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Test::WriteBw => "write_bw",
            Test::ReadBw => "read_bw",
            Test::SendBw => "send_bw",
            Test::WriteLat => "write_lat",
            Test::ReadLat => "read_lat",
            Test::SendLat => "send_lat",
            Test::AtomicBw => "atomic_bw",
            Test::AtomicLat => "atomic_lat",
        }
    }
    fn title(self, bidir: bool, atomic: AtomicOp) -> String {
        let verb = match self {
            Test::WriteBw | Test::WriteLat => "RDMA_Write".to_string(),
            Test::ReadBw | Test::ReadLat => "RDMA_Read".to_string(),
            Test::SendBw | Test::SendLat => "Send".to_string(),
            Test::AtomicBw | Test::AtomicLat => format!("Atomic {}", atomic.name()),
        };
        match (self.is_bw(), bidir) {
            (true, true) => format!("{verb} Bidirectional BW Test"),
            (true, false) => format!("{verb} BW Test"),
            (false, _) => format!("{verb} Latency Test"),
        }
    }
    /// A bandwidth test.
    pub fn is_bw(self) -> bool {
        matches!(self, Test::WriteBw | Test::ReadBw | Test::SendBw | Test::AtomicBw)
    }
    /// An atomic test.
    pub fn is_atomic(self) -> bool {
        matches!(self, Test::AtomicBw | Test::AtomicLat)
    }
    /// A test whose requests need the responder's resources (IRD/ORD, "Outstand reads"):
    /// the Read and the atomic tests.
    fn uses_ird(self) -> bool {
        matches!(self, Test::ReadBw | Test::ReadLat | Test::AtomicBw | Test::AtomicLat)
    }
    fn is_send(self) -> bool {
        matches!(self, Test::SendBw | Test::SendLat)
    }
    /// Default message size.
    pub fn default_size(self) -> usize {
        if self.is_atomic() {
            ATOMIC_SIZE
        } else if self.is_bw() {
            65536
        } else {
            2
        }
    }
    /// Default iterations (only write_bw differs).
    pub fn default_iters(self) -> u64 {
        if self == Test::WriteBw {
            5000
        } else {
            1000
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The test.
    pub test: Test,
    /// Message size.
    pub size: usize,
    /// Iterations per QP.
    pub iters: u64,
    /// Timed run instead.
    pub duration: Option<u64>,
    /// All sizes 2 .. 2^23.
    pub all: bool,
    /// Data QPs.
    pub qps: usize,
    /// Outstanding send WRs.
    pub tx_depth: usize,
    /// Receives posted (send tests).
    pub rx_depth: usize,
    /// Signal every this many.
    pub cq_mod: usize,
    /// Outstanding reads (read tests).
    pub outs: u16,
    /// Gb/s columns.
    pub gbits: bool,
    /// Sleep in the kernel instead of busy polling (perftest `-e`).
    pub events: bool,
    /// Device name to print.
    pub dev_name: String,
    /// MPA options.
    pub mpa: MpaOptions,
    /// Dead-peer detection of the control and data connections.
    pub liveness: iwarp::Liveness,
    /// Print nothing (loopback runs).
    pub quiet: bool,
    /// Sleep a second after the control connection in write_bw, as perftest does, and let a
    /// write_lat server close first (both off for loopback runs, where both ends are ours).
    pub compat_sleep: bool,
    /// Server: also answer plain TCP clients on the port (line echo).
    pub shared_port: bool,
    /// Event-loop spin after activity, in microseconds (ignored with `events`).
    pub worker_spin_us: u64,
    /// Both sides post and both measure at once (perftest `-b`, bandwidth tests); each side
    /// reports the sum of its own figures and the peer's.
    pub bidir: bool,
    /// The atomic tests' operation.
    pub atomic: AtomicOp,
    /// Client: the local address to connect from (perftest `--bind_source_ip`; IPv4 or IPv6).
    pub source: Option<SocketAddr>,
}

/// Where to run.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Listen on this address.
    Server(SocketAddr),
    /// Connect to this address.
    Client(SocketAddr),
}

/// What a run measured (one entry per size).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bandwidth results: this side's own (a unidirectional server: the client's report).
    pub bw: Vec<BwResult>,
    /// Bidirectional runs: the peer's report for each entry of `bw` (none where perftest
    /// exchanges none: send_bw `-b -D`, whose own count holds both directions).
    pub remote: Vec<BwResult>,
    /// Latency results.
    pub lat: Vec<LatResult>,
    /// The data queue pairs' counters, summed, at the end of the data phase.
    pub stats: iwarp::QpStats,
}

const CREDIT_LEN: usize = 4;

struct Data {
    qps: Vec<QueuePair>,
    cq: CompletionQueue,
    buf: Vec<MemoryRegion>,
    credit: Option<MemoryRegion>,
    slot: usize,
}

impl Data {
    /// Our buffer for QP `i`: the first half is the local source/sink, the second half the
    /// region we advertise (perftest's layout).
    fn local(&self, i: usize) -> &MemoryRegion {
        &self.buf[i]
    }
    fn advertised_offset(&self) -> usize {
        self.slot
    }
    fn dest(&self, i: usize, test: Test) -> Dest {
        let (rkey, vaddr) = if test == Test::SendBw {
            let c = self.credit.as_ref().expect("send_bw has credits");
            (c.rkey(), c.addr() + (i * CREDIT_LEN) as u64)
        } else {
            (self.buf[i].rkey(), self.buf[i].addr() + self.advertised_offset() as u64)
        };
        Dest {
            lid: 0,
            out_reads: if test.uses_ird() { 128 } else { 1 },
            qpn: self.qps[i].qp_num(),
            psn: fastrand_psn(self.qps[i].qp_num()),
            rkey,
            vaddr,
            gid: [0; 16],
        }
    }
}

fn fastrand_psn(seed: u32) -> u32 {
    // Printed only: any 24-bit value.
    (seed.wrapping_mul(2_654_435_761) ^ 0x9e37) & 0x00ff_ffff
}

fn data_qp(pd: &ProtectionDomain, cq: &CompletionQueue, o: &Opts, client: bool) -> Result<QueuePair, String> {
    let mut init = QpInit::new(cq, cq);
    // Room for the receive-credit Writes next to the Sends (send_bw -b writes both).
    init.cap.max_send_wr = o.tx_depth.max(1) + if o.bidir { 16 } else { 8 };
    init.cap.max_recv_wr = o.rx_depth.max(1) + 8;
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    init.cap.max_inline_data = 64;
    // A side that waits on the data CQ during the data phase drives its queue pair itself:
    // busy polling, or with -e by sleeping in the kernel on the socket (one wake-up per
    // message, as a blocking TCP read). A side that waits in the control channel instead
    // (the write/read servers) leaves its queue pair to the event loop.
    // Bidirectional: both sides run the data loop, and while one waits for the other's
    // report it keeps its queue pairs moving through the control channel's wait (Ctrl::drive).
    let polls = o.bidir
        || match o.test {
            Test::WriteLat | Test::SendLat | Test::SendBw => true,
            Test::ReadLat | Test::WriteBw | Test::ReadBw | Test::AtomicBw | Test::AtomicLat => client,
        };
    init.progress = if polls { iwarp::Progress::Poll } else { iwarp::Progress::Thread };
    pd.create_qp(&init).map_err(|e| format!("Couldn't create QP: {e}"))
}

fn data_params(o: &Opts) -> ConnParams {
    // IRD/ORD: the outstanding reads for read and atomic tests, 0 otherwise (perftest -R).
    let rd = if o.test.uses_ird() { o.outs } else { 0 };
    ConnParams {
        responder_resources: rd,
        initiator_depth: rd,
        mpa: o.mpa.clone(),
        liveness: o.liveness,
        // perftest's write_lat server (the MPA responder) writes first; by then several control
        // round trips have passed, so the initiator is long done with MPA.
        responder_sends_first: o.test == Test::WriteLat,
        source: o.source,
        ..Default::default()
    }
}

fn max_size(o: &Opts) -> usize {
    if o.all {
        1 << 23
    } else {
        o.size
    }
}

fn alloc_data(
    dev: &Device,
    pd: &ProtectionDomain,
    o: &Opts,
    qps: Vec<QueuePair>,
    cq: CompletionQueue,
) -> Result<Data, String> {
    let slot = max_size(o).max(4096);
    let mut access = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
    if o.test.is_atomic() {
        access |= Access::REMOTE_ATOMIC;
    }
    let mut buf = Vec::new();
    for _ in 0..qps.len() {
        let m = pd.reg_mr(2 * slot, access).map_err(|e| format!("Couldn't allocate MR: {e}"))?;
        if o.test != Test::WriteLat {
            // Random-looking contents, as perftest's rand() fill.
            let mut rng = fastrand::Rng::with_seed(0x1234);
            let v: Vec<u8> = (0..2 * slot).map(|_| rng.u8(..)).collect();
            m.write(0, &v).map_err(|e| e.to_string())?;
        }
        buf.push(m);
    }
    let credit = if o.test == Test::SendBw {
        Some(pd.reg_mr(CREDIT_LEN * qps.len(), Access::LOCAL_WRITE | Access::REMOTE_WRITE).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let _ = dev;
    Ok(Data { qps, cq, buf, credit, slot })
}

/// Runs one test in one role. `bound` receives the listening port (for loopback runs).
pub fn run(o: &Opts, role: Role, bound: Option<Sender<u16>>) -> Result<Outcome, String> {
    // Busy polling (perftest's default) extends to the event loop: after activity it keeps
    // polling briefly instead of sleeping, so a peer's Read is answered without a wake-up.
    let spin = if o.events { Duration::ZERO } else { Duration::from_micros(o.worker_spin_us) };
    let dev = Device::open(DeviceConfig { worker_spin: spin, ..DeviceConfig::default() }).map_err(|e| e.to_string())?;
    let pd = dev.alloc_pd();
    let client = matches!(role, Role::Client(_));
    let (mut ctrl, listener) = match role {
        Role::Client(addr) => (Ctrl::connect(&dev, &pd, addr, &o.mpa, o.liveness, o.source)?, None),
        Role::Server(addr) => {
            if !o.quiet {
                println!("\n************************************\n* Waiting for client to connect... *\n************************************");
            }
            let l = if o.shared_port {
                dev.listen_shared(addr, 16, iwarp::SharedOptions::default())
            } else {
                dev.listen(addr, 16)
            }
            .map_err(|e| format!(" Unable to bind: {e}"))?;
            if o.shared_port {
                iwarp_tools::shared_port::spawn_line_echo(l.clone());
            }
            l.set_mpa_options(o.mpa.clone());
            if let Some(tx) = bound {
                let _ = tx.send(l.local_addr().port());
            }
            let req = l.get_request(None).map_err(|e| e.to_string())?;
            (Ctrl::accept(&dev, &pd, req, &o.mpa, o.liveness)?, Some(l))
        }
    };
    if o.test == Test::WriteBw && o.compat_sleep {
        // perftest's ib_write_bw sleeps a second after the control connection.
        std::thread::sleep(Duration::from_secs(1));
    }
    let cycle = ctrl.preamble()?;
    // ctrl 5: zeros; then the data connections. Our listener stays open, so a fast client
    // cannot be refused.
    ctrl.exchange_dest(&Dest::default())?;
    let cq = dev.create_cq(4 * (o.tx_depth + o.rx_depth + 16) * o.qps).map_err(|e| e.to_string())?;
    let mut qps = Vec::new();
    for _ in 0..o.qps {
        let qp = data_qp(&pd, &cq, o, client)?;
        if o.test.is_send() && !client {
            // Server-side receives are posted before ctrl 10; nothing arrives before then.
        }
        qps.push(qp);
    }
    match (role, &listener) {
        (Role::Client(addr), _) => {
            for qp in &mut qps {
                *qp = connect_retry(|| data_qp(&pd, &cq, o, client), addr, &data_params(o))
                    .map_err(|e| format!("Failed to connect through RDMA CM: {e}"))?;
            }
        }
        (Role::Server(_), Some(l)) => {
            for qp in &qps {
                let req = l.get_request(Some(Duration::from_secs(60))).map_err(|e| format!("data connection: {e}"))?;
                req.accept(qp, &data_params(o)).map_err(|e| e.to_string())?;
                qp.wait_established(Duration::from_secs(30)).map_err(|e| e.to_string())?;
            }
        }
        _ => unreachable!("a server has a listener"),
    }
    ctrl.exchange_dest(&Dest::default())?;
    let data = alloc_data(&dev, &pd, o, qps, cq)?;
    let q = data.qps.len();
    let mine: Vec<Dest> = (0..q).map(|i| data.dest(i, o.test)).collect();
    let mut peer = vec![Dest::default(); q];
    // Rounds before the data phase (docs/tool-compat.md §2).
    let per_qp = |ctrl: &mut Ctrl, peer: &mut Vec<Dest>| -> Result<(), String> {
        for i in 0..q {
            peer[i] = ctrl.exchange_dest(&mine[i])?;
        }
        Ok(())
    };
    let sync = |ctrl: &mut Ctrl| ctrl.exchange_dest(&mine[0]).map(|_| ());
    match o.test {
        Test::WriteBw | Test::ReadBw | Test::AtomicBw => {
            per_qp(&mut ctrl, &mut peer)?;
            per_qp(&mut ctrl, &mut peer)?;
            sync(&mut ctrl)?;
        }
        Test::SendBw | Test::SendLat => {
            per_qp(&mut ctrl, &mut peer)?;
            sync(&mut ctrl)?;
            per_qp(&mut ctrl, &mut peer)?;
        }
        Test::WriteLat | Test::ReadLat | Test::AtomicLat => {
            sync(&mut ctrl)?;
            per_qp(&mut ctrl, &mut peer)?;
            per_qp(&mut ctrl, &mut peer)?;
        }
    }
    if !o.quiet {
        print_header(o, client, &mine, &peer);
    }
    let sizes: Vec<usize> = if o.all { (1..=23).map(|e| 1usize << e).collect() } else { vec![o.size] };
    let rx_depth = rx_depth_for(o);
    let mut out = Outcome::default();
    if o.bidir {
        bidir_phase(o, client, &mut ctrl, &data, &mine[0], &peer, &sizes, rx_depth, cycle, &mut out)?;
        // ctrl 16: the closing round.
        sync(&mut ctrl)?;
    } else {
        uni_phase(o, client, &mut ctrl, &data, &mine[0], &peer, &sizes, rx_depth, cycle, &mut out)?;
    }
    // After the closing rounds: a passive server's queue pairs are done receiving too.
    for qp in &data.qps {
        out.stats += qp.stats();
    }
    if !o.quiet {
        print_results(o, client, &out);
    }
    if !client {
        // perftest's client closes the data connections first, then the server closes the
        // control connection. Wait for the client's FIN: a server FIN that arrives while siw
        // is still finishing the client's last control Send makes siw fail that Send ("Bad wc
        // status 2" at the perftest client) although its bytes went out.
        wait_peer_close(&data.qps, Duration::from_secs(3));
    } else if o.test == Test::WriteLat && o.compat_sleep {
        // The server's last Write reached us before our last one left, but a siw server under
        // emulation may retire it a moment later, and it fails the Write ("Failed status 2")
        // if our FIN comes first. Let it finish and close first (it does so at once).
        wait_peer_close(&data.qps, Duration::from_millis(500));
    }
    for qp in &data.qps {
        qp.disconnect();
    }
    ctrl.close();
    Ok(out)
}

/// The data phase and every round after it of a unidirectional test.
#[allow(clippy::too_many_arguments)]
fn uni_phase(
    o: &Opts,
    client: bool,
    ctrl: &mut Ctrl,
    data: &Data,
    mine: &Dest,
    peer: &[Dest],
    sizes: &[usize],
    rx_depth: usize,
    cycle: usize,
    out: &mut Outcome,
) -> Result<(), String> {
    let sync = |ctrl: &mut Ctrl| ctrl.exchange_dest(mine).map(|_| ());
    // Receives go up before the last sync (send tests).
    if o.test.is_send() && (!client || o.test == Test::SendLat) {
        post_receives(data, sizes[0], rx_depth, cycle)?;
    }
    if !matches!(o.test, Test::WriteBw | Test::ReadBw | Test::AtomicBw) {
        sync(ctrl)?;
    }
    for (k, &size) in sizes.iter().enumerate() {
        if k > 0 && o.test.is_send() {
            // send tests: per size, re-post and sync before the run.
            if !client || o.test == Test::SendLat {
                post_receives(data, size, rx_depth, cycle)?;
            }
            sync(ctrl)?;
        }
        match o.test {
            Test::WriteBw | Test::ReadBw | Test::AtomicBw if client => {
                out.bw.push(bw_client(o, data, peer, size, cycle)?)
            }
            Test::WriteBw | Test::ReadBw | Test::AtomicBw => {}
            Test::SendBw if client => out.bw.push(send_bw_client(o, data, size, rx_depth, cycle)?),
            Test::SendBw => out.bw.push(send_bw_server(o, data, peer, size, rx_depth, cycle)?),
            Test::WriteLat => out.lat.push(write_lat(o, data, peer, size, client)?),
            Test::ReadLat | Test::AtomicLat if client => out.lat.push(read_lat(o, data, peer, size)?),
            Test::ReadLat | Test::AtomicLat => {}
            Test::SendLat => out.lat.push(send_lat(o, data, size, client, rx_depth, cycle)?),
        }
        if o.test.is_send() && k + 1 < sizes.len() {
            sync(ctrl)?;
        }
    }
    // Rounds after the data phase.
    match o.test {
        Test::WriteBw | Test::ReadBw | Test::AtomicBw => {
            sync(ctrl)?;
            // The client's figures count; a server sends zeros.
            let mine = out.bw.last().copied().filter(|_| client);
            let theirs = exchange_report(ctrl, mine.as_ref(), o.gbits)?;
            if !client {
                out.bw.push(theirs);
            }
            sync(ctrl)?;
        }
        Test::SendBw | Test::ReadLat | Test::SendLat | Test::AtomicLat => sync(ctrl)?,
        Test::WriteLat => {}
    }
    Ok(())
}

/// The data phase of a bidirectional test (perftest `-b`) and the rounds after it but the
/// closing one. Per size: send_bw posts its receives; one sync (ctrl 10); both sides run the
/// sending loop at once; with `-a` one more sync (write/read: perftest 4.6 and later); the
/// five report messages, both sides' real figures (send_bw `-D` exchanges none); with `-a`,
/// send_bw one more sync. Our queue pairs keep moving while we wait for the peer.
#[allow(clippy::too_many_arguments)]
fn bidir_phase(
    o: &Opts,
    client: bool,
    ctrl: &mut Ctrl,
    data: &Data,
    mine: &Dest,
    peer: &[Dest],
    sizes: &[usize],
    rx_depth: usize,
    cycle: usize,
    out: &mut Outcome,
) -> Result<(), String> {
    let sync = |ctrl: &mut Ctrl| ctrl.exchange_dest(mine).map(|_| ());
    ctrl.drive(&data.cq, o.events);
    let send = o.test == Test::SendBw;
    // What the peer's reports say it wrote into our memory (write_bw counting iterations).
    let mut peer_bytes = 0u64;
    for &size in sizes {
        if send {
            post_receives(data, size, rx_depth, cycle)?;
        }
        sync(ctrl)?;
        let r = if send {
            // Credits count from zero for every size (perftest clears its credit buffer).
            if let Some(c) = &data.credit {
                c.write(0, &vec![0u8; CREDIT_LEN * data.qps.len()]).map_err(|e| e.to_string())?;
            }
            send_bw_bidir(o, data, peer, size, rx_depth, cycle, client)?
        } else {
            bw_client(o, data, peer, size, cycle)?
        };
        if o.all && !send {
            sync(ctrl)?;
        }
        if !(send && o.duration.is_some()) {
            let theirs = exchange_report(ctrl, Some(&r), o.gbits)?;
            if o.test == Test::WriteBw && o.duration.is_none() {
                peer_bytes += theirs.iters * theirs.size as u64;
            }
            out.remote.push(theirs);
        }
        out.bw.push(r);
        if o.all && send {
            sync(ctrl)?;
        }
    }
    if peer_bytes > 0 {
        wait_placed(o, data, peer_bytes)?;
    }
    Ok(())
}

/// Waits (up to 10 s, keeping our queue pairs moving) until the peer's Writes have arrived:
/// `bytes` of payload received on the data connections. An RDMA Write completes at its sender
/// once it is handed to TCP, and the peer's report follows on another connection, so some of
/// them may still be on their way; the byte counts in `--json` then say what moved both ways.
fn wait_placed(o: &Opts, data: &Data, bytes: u64) -> Result<(), String> {
    let received = || data.qps.iter().map(|q| q.stats()).map(|s| s.rx_direct_bytes + s.rx_copied_bytes).sum::<u64>();
    let mut wc = [WorkCompletion::default(); 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = received();
        if got >= bytes {
            return Ok(());
        }
        if Instant::now() > deadline {
            eprintln!(" Warning: {got} of the {bytes} bytes the peer reported writing have arrived after 10 s");
            return Ok(());
        }
        let n = if o.events { data.cq.wait(&mut wc, Some(Duration::from_millis(1))) } else { data.cq.poll(&mut wc) };
        for c in &wc[..n] {
            check(c)?;
        }
    }
}

fn rx_depth_for(o: &Opts) -> usize {
    // perftest: RX depth clipped to the iterations, then rounded up to even, but not with -a
    // (its "odd rx_depth" workaround is for RUN_REGULAR only). With -a the receives of each size
    // must all be used: one left over would take the next size's first, larger, Send.
    let d = (o.rx_depth as u64).min(o.iters).max(1) as usize;
    if o.all {
        d
    } else {
        d + d % 2
    }
}

/// perftest's buffer slot for message `i`: small messages cycle through the buffer.
fn slot_offset(size: usize, cycle: usize, i: u64) -> usize {
    if size <= cycle / 2 {
        let slot = size.max(64);
        let n = (cycle / slot).max(1) as u64;
        (i % n) as usize * slot
    } else {
        0
    }
}

fn post_receives(data: &Data, size: usize, depth: usize, cycle: usize) -> Result<(), String> {
    for (i, qp) in data.qps.iter().enumerate() {
        let mr = data.local(i);
        let wrs: Vec<RecvWr<'_>> = (0..depth)
            .map(|k| RecvWr::new(((i as u64) << 40) | k as u64, &[mr.sge(slot_offset(size, cycle, k as u64), size)]))
            .collect();
        qp.post_recv(&wrs).map_err(|e| format!("Couldn't post receive: {e}"))?;
    }
    Ok(())
}

fn wait_cq(o: &Opts, cq: &CompletionQueue, wc: &mut [WorkCompletion]) -> usize {
    if o.events {
        cq.wait(wc, Some(Duration::from_millis(100)))
    } else {
        cq.poll(wc)
    }
}

fn check(c: &WorkCompletion) -> Result<(), String> {
    if c.status != WcStatus::Success {
        return Err(format!(" Completion with error at client/server: status {:?} (qp {})", c.status, c.qp_num));
    }
    Ok(())
}

fn qp_index(data: &Data, qp_num: u32) -> usize {
    data.qps.iter().position(|q| q.qp_num() == qp_num).unwrap_or(0)
}

/// write_bw / read_bw, posting side.
fn bw_client(o: &Opts, data: &Data, peer: &[Dest], size: usize, cycle: usize) -> Result<BwResult, String> {
    let q = data.qps.len();
    let iters = if o.duration.is_some() { u64::MAX } else { o.iters };
    let depth = o.tx_depth.max(1).min(iters.min(1 << 20) as usize);
    let cq_mod = effective_cq_mod(o, size, depth);
    let peak_on = o.duration.is_none() && o.iters <= 20_000;
    let mut posted = vec![0u64; q];
    let mut done = vec![0u64; q];
    // Per queue pair, the count up to the last signalled request: a timed run stops posting
    // at its deadline, and the requests after the last signalled one complete without a word.
    let mut signaled_to = vec![0u64; q];
    let mut tposted: Vec<Vec<Instant>> = vec![Vec::new(); q];
    let mut tdone: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); q];
    let mut wc = vec![WorkCompletion::default(); 64];
    let start = Instant::now();
    let (deadline, window) = duration_window(o, start);
    let mut idle = IdleTurns::new(o);
    let mut counted = 0u64;
    let mut stop = false;
    loop {
        for i in 0..q {
            let room = depth as u64 - (posted[i] - done[i]);
            let n = room.min(iters - posted[i]);
            if n == 0 || stop {
                continue;
            }
            let mr = data.local(i);
            let remote_base = RemoteAddr::unbounded(Stag(peer[i].rkey), peer[i].vaddr);
            let mut wrs = Vec::with_capacity(n as usize);
            for k in posted[i]..posted[i] + n {
                let off = slot_offset(size, cycle, k);
                let remote = RemoteAddr::unbounded(remote_base.stag, remote_base.to + off as u64);
                let signaled = (k + 1) % cq_mod as u64 == 0 || k + 1 == iters;
                if signaled {
                    signaled_to[i] = k + 1;
                }
                let id = ((i as u64) << 40) | k;
                let wr = match o.test {
                    Test::ReadBw => SendWr::read(id, mr.sge(off, size), remote),
                    Test::AtomicBw => atomic_wr(o.atomic, id, mr.sge(off, size), remote),
                    _ => SendWr::write(id, &[mr.sge(off, size)], remote),
                };
                wrs.push(wr.signaled(signaled));
            }
            if peak_on {
                let now = Instant::now();
                tposted[i].extend(std::iter::repeat_n(now, n as usize));
            }
            data.qps[i].post_send(&wrs).map_err(|e| format!("Couldn't post send: {e}"))?;
            posted[i] += n;
        }
        let n = wait_cq(o, &data.cq, &mut wc);
        if n == 0 && !idle.clock_due(deadline.is_some()) {
            continue;
        }
        let now = Instant::now();
        for c in &wc[..n] {
            check(c)?;
            let i = (c.wr_id >> 40) as usize;
            let k = c.wr_id & ((1 << 40) - 1);
            let newly = k + 1 - done[i];
            done[i] = k + 1;
            if peak_on {
                tdone[i].push((k, now));
            }
            if window.is_some_and(|(a, b)| now >= a && now < b) {
                counted += newly;
            }
        }
        if deadline.is_some_and(|d| now >= d) {
            stop = true;
        }
        let all_done = (0..q).all(|i| done[i] == signaled_to[i]) && (stop || (0..q).all(|i| posted[i] == iters));
        if all_done {
            break;
        }
    }
    let end = Instant::now();
    if let Some((a, b)) = window {
        return Ok(BwResult::new(size, counted, b.duration_since(a), 0.0));
    }
    let peak = if peak_on { peak_rate(size, cq_mod, &tposted, &tdone) } else { 0.0 };
    Ok(BwResult::new(size, posted.iter().sum(), end.duration_since(start), peak))
}

/// perftest's peak: per queue pair, the best per-message time over windows from a post to a
/// signalled completion; the queue pairs' rates summed. `tposted[i][k]`: when message k of
/// queue pair i was posted; `tdone[i]`: (k, when its signalled completion came).
fn peak_rate(size: usize, cq_mod: usize, tposted: &[Vec<Instant>], tdone: &[Vec<(u64, Instant)>]) -> f64 {
    let mut peak = 0.0f64;
    for (posted, done) in tposted.iter().zip(tdone) {
        let mut best = f64::MAX;
        for (j, tj) in done {
            for (p, tp) in posted.iter().enumerate().take(*j as usize + 1).step_by(cq_mod.max(1)) {
                let t = tj.saturating_duration_since(*tp).as_secs_f64() / (*j as f64 - p as f64 + 1.0);
                if t > 0.0 && t < best {
                    best = t;
                }
            }
        }
        if best < f64::MAX {
            peak += size as f64 / best;
        }
    }
    peak
}

fn effective_cq_mod(o: &Opts, size: usize, depth: usize) -> usize {
    let m = if o.cq_mod == 0 {
        if size > 8192 && !o.all {
            1
        } else {
            100
        }
    } else {
        o.cq_mod
    };
    m.clamp(1, depth.max(1))
}

/// `(stop posting at, counting window)` for `-D`: the window skips a margin of a quarter of
/// the duration at each end.
fn duration_window(o: &Opts, start: Instant) -> (Option<Instant>, Option<(Instant, Instant)>) {
    match o.duration {
        None => (None, None),
        Some(d) => {
            let margin = Duration::from_secs(d / 4);
            let total = Duration::from_secs(d);
            (Some(start + total), Some((start + margin, start + total - margin)))
        }
    }
}

/// send_bw, sending side: paced by the server's receive credits.
/// How a send_bw side paces its Sends (perftest's): at most `depth` outstanding, at most
/// `rx_depth` beyond the receives the peer reported, `iters` in all, every `cq_mod`-th and the
/// last one signalled, each from its slot of the local buffer.
struct SendPace {
    rx_depth: usize,
    depth: usize,
    iters: u64,
    cq_mod: usize,
    size: usize,
    cycle: usize,
}

impl SendPace {
    /// The Sends queue pair `i` may post now, given the peer's cumulative receive count in
    /// `credit` (little-endian, at slot `i`), `posted` and `done` so far; `signaled_to` moves
    /// to the count up to the last signalled one. Empty when none may go.
    fn credited_sends<'a>(
        &self,
        credit: &MemoryRegion,
        i: usize,
        mr: &'a MemoryRegion,
        posted: u64,
        done: u64,
        signaled_to: &mut u64,
    ) -> Result<Vec<SendWr<'a>>, String> {
        let mut c = [0u8; 4];
        credit.read(i * CREDIT_LEN, &mut c).map_err(|e| e.to_string())?;
        let by_credit = (u64::from(u32::from_le_bytes(c)) + self.rx_depth as u64).saturating_sub(posted);
        let room = (self.depth as u64 - (posted - done)).min(by_credit);
        let n = room.min(self.iters - posted);
        Ok((posted..posted + n)
            .map(|k| {
                let signaled = (k + 1) % self.cq_mod as u64 == 0 || k + 1 == self.iters;
                if signaled {
                    *signaled_to = k + 1;
                }
                SendWr::send(((i as u64) << 40) | k, &[mr.sge(slot_offset(self.size, self.cycle, k), self.size)])
                    .signaled(signaled)
            })
            .collect())
    }
}

fn send_bw_client(o: &Opts, data: &Data, size: usize, rx_depth: usize, cycle: usize) -> Result<BwResult, String> {
    let q = data.qps.len();
    let iters = if o.duration.is_some() { u64::MAX } else { o.iters };
    let depth = o.tx_depth.max(1).min(iters.min(1 << 20) as usize);
    let cq_mod = effective_cq_mod(o, size, depth);
    let credit = data.credit.as_ref().expect("send_bw credit region");
    // perftest's send_bw client measures its peak as the write and read clients do.
    let peak_on = o.duration.is_none() && o.iters <= 20_000;
    let mut posted = vec![0u64; q];
    let mut done = vec![0u64; q];
    // As in bw_client: where the last signalled Send is (a timed run stops anywhere).
    let mut signaled_to = vec![0u64; q];
    let mut tposted: Vec<Vec<Instant>> = vec![Vec::new(); q];
    let mut tdone: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); q];
    let mut wc = vec![WorkCompletion::default(); 64];
    let start = Instant::now();
    let (deadline, window) = duration_window(o, start);
    let mut idle = IdleTurns::new(o);
    let mut counted = 0u64;
    let mut stop = false;
    loop {
        for i in 0..q {
            // Past the deadline nothing more is built: building marks the last signalled
            // Send, and one never posted would be waited for forever.
            if stop {
                break;
            }
            let pace = SendPace { rx_depth, depth, iters, cq_mod, size, cycle };
            let wrs = pace.credited_sends(credit, i, data.local(i), posted[i], done[i], &mut signaled_to[i])?;
            let n = wrs.len() as u64;
            if n == 0 {
                continue;
            }
            if peak_on {
                tposted[i].extend(std::iter::repeat_n(Instant::now(), n as usize));
            }
            data.qps[i].post_send(&wrs).map_err(|e| format!("Couldn't post send: {e}"))?;
            posted[i] += n;
        }
        let n = wait_cq(o, &data.cq, &mut wc);
        if n == 0 && !idle.clock_due(deadline.is_some()) {
            continue;
        }
        let now = Instant::now();
        for c in &wc[..n] {
            check(c)?;
            if c.opcode != WcOpcode::Send {
                continue;
            }
            let i = (c.wr_id >> 40) as usize;
            let k = c.wr_id & ((1 << 40) - 1);
            let newly = k + 1 - done[i];
            done[i] = k + 1;
            if peak_on {
                tdone[i].push((k, now));
            }
            if window.is_some_and(|(a, b)| now >= a && now < b) {
                counted += newly;
            }
        }
        if deadline.is_some_and(|d| now >= d) {
            stop = true;
        }
        if (0..q).all(|i| done[i] == signaled_to[i]) && (stop || (0..q).all(|i| posted[i] == iters)) {
            break;
        }
    }
    if let Some((a, b)) = window {
        return Ok(BwResult::new(size, counted, b.duration_since(a), 0.0));
    }
    let peak = if peak_on { peak_rate(size, cq_mod, &tposted, &tdone) } else { 0.0 };
    Ok(BwResult::new(size, posted.iter().sum(), start.elapsed(), peak))
}

/// send_bw, receiving side: counts receives, re-posts, and writes credits.
fn send_bw_server(
    o: &Opts,
    data: &Data,
    peer: &[Dest],
    size: usize,
    rx_depth: usize,
    cycle: usize,
) -> Result<BwResult, String> {
    let q = data.qps.len();
    let iters = if o.duration.is_some() { u64::MAX } else { o.iters };
    let credit_cnt = (rx_depth / 3).max(1) as u64;
    let mut got = vec![0u64; q];
    let mut reposted = vec![rx_depth as u64; q];
    let mut wc = vec![WorkCompletion::default(); 64];
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut idle_since = Instant::now();
    let mut wr = 1u64 << 62;
    loop {
        let n = wait_cq(o, &data.cq, &mut wc);
        if n > 0 {
            idle_since = Instant::now();
        }
        for c in &wc[..n] {
            check(c)?;
            if c.opcode != WcOpcode::Recv {
                continue;
            }
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            let i = qp_index(data, c.qp_num);
            got[i] += 1;
            if reposted[i] < iters {
                let k = reposted[i];
                let mr = data.local(i);
                data.qps[i]
                    .post_recv(&[RecvWr::new(((i as u64) << 40) | k, &[mr.sge(slot_offset(size, cycle, k), size)])])
                    .map_err(|e| format!("Couldn't post receive: {e}"))?;
                reposted[i] += 1;
            }
            if got[i].is_multiple_of(credit_cnt) {
                // perftest's iWARP flow control: the cumulative count, little-endian, into the
                // client's credit slot for this QP.
                let v = (got[i] as u32).to_le_bytes();
                wr += 1;
                data.qps[i]
                    .post_send(&[SendWr::write_inline(
                        wr,
                        &v,
                        RemoteAddr::unbounded(Stag(peer[i].rkey), peer[i].vaddr),
                    )
                    .unsignaled()])
                    .map_err(|e| format!("Couldn't post credit write: {e}"))?;
            }
        }
        if (0..q).all(|i| got[i] >= iters) {
            break;
        }
        if o.duration.is_some() && first.is_some() && idle_since.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    let total: u64 = got.iter().sum();
    Ok(BwResult::new(size, total, first.map_or(Duration::ZERO, |f| last.duration_since(f)), 0.0))
}

/// send_bw `-b`: both sides at once, each one the sender (paced by the peer's receive credits)
/// and the receiver (re-posting, and writing credits into the peer's memory, as
/// [`send_bw_server`]). As perftest's `run_iter_bi`: the server sends only once the client's
/// first Send has arrived; the run ends when all our Sends have completed and all the peer's
/// have arrived; the figure is our Sends, first post to last completion. With `-D` it counts
/// our Sends and the peer's, both, inside the window (perftest exchanges no report then).
fn send_bw_bidir(
    o: &Opts,
    data: &Data,
    peer: &[Dest],
    size: usize,
    rx_depth: usize,
    cycle: usize,
    client: bool,
) -> Result<BwResult, String> {
    let q = data.qps.len();
    let iters = if o.duration.is_some() { u64::MAX } else { o.iters };
    let depth = o.tx_depth.max(1).min(iters.min(1 << 20) as usize);
    let cq_mod = effective_cq_mod(o, size, depth);
    let credit = data.credit.as_ref().expect("send_bw credit region");
    let credit_cnt = (rx_depth / 3).max(1) as u64;
    let peak_on = o.duration.is_none() && o.iters <= 20_000;
    let (mut posted, mut done, mut got) = (vec![0u64; q], vec![0u64; q], vec![0u64; q]);
    // Per queue pair, the count up to the last signalled Send: a timed run stops posting at
    // its deadline, and the Sends after the last signalled one complete without a word.
    let mut signaled_to = vec![0u64; q];
    let mut reposted = vec![rx_depth as u64; q];
    // Credits owed to the peer, per queue pair, in order (a full send queue defers them).
    let mut owed: Vec<std::collections::VecDeque<u32>> = vec![Default::default(); q];
    let mut tposted: Vec<Vec<Instant>> = vec![Vec::new(); q];
    let mut tdone: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); q];
    let mut wc = vec![WorkCompletion::default(); 64];
    let mut credit_wr = 1u64 << 62;
    // perftest: the server does not send before the client's first Send has arrived.
    let mut sending = client;
    let mut first_post: Option<Instant> = None;
    let mut last_done = Instant::now();
    // A timed run starts its clock when this side starts sending (the server: at the first
    // receive, as perftest's).
    let (mut deadline, mut window) = if sending { duration_window(o, Instant::now()) } else { (None, None) };
    let mut idle = IdleTurns::new(o);
    let mut counted = 0u64;
    let mut stop = false;
    loop {
        for i in 0..q {
            if !sending || stop {
                break;
            }
            let pace = SendPace { rx_depth, depth, iters, cq_mod, size, cycle };
            let wrs = pace.credited_sends(credit, i, data.local(i), posted[i], done[i], &mut signaled_to[i])?;
            let n = wrs.len() as u64;
            if n == 0 {
                continue;
            }
            let now = Instant::now();
            first_post.get_or_insert(now);
            if peak_on {
                tposted[i].extend(std::iter::repeat_n(now, n as usize));
            }
            data.qps[i].post_send(&wrs).map_err(|e| format!("Couldn't post send: {e}"))?;
            posted[i] += n;
        }
        let n = wait_cq(o, &data.cq, &mut wc);
        if n == 0 && !idle.clock_due(deadline.is_some()) && owed.iter().all(|w| w.is_empty()) {
            continue;
        }
        let now = Instant::now();
        let in_window = window.is_some_and(|(a, b)| now >= a && now < b);
        for c in &wc[..n] {
            check(c)?;
            match c.opcode {
                WcOpcode::Recv => {
                    if !sending {
                        sending = true;
                        (deadline, window) = duration_window(o, now);
                    }
                    let i = qp_index(data, c.qp_num);
                    got[i] += 1;
                    if in_window {
                        counted += 1;
                    }
                    if reposted[i] < iters {
                        let k = reposted[i];
                        let mr = data.local(i);
                        data.qps[i]
                            .post_recv(&[RecvWr::new(
                                ((i as u64) << 40) | k,
                                &[mr.sge(slot_offset(size, cycle, k), size)],
                            )])
                            .map_err(|e| format!("Couldn't post receive: {e}"))?;
                        reposted[i] += 1;
                    }
                    if got[i].is_multiple_of(credit_cnt) {
                        owed[i].push_back(got[i] as u32);
                    }
                }
                WcOpcode::Send => {
                    let i = (c.wr_id >> 40) as usize;
                    let k = c.wr_id & ((1 << 40) - 1);
                    if in_window {
                        counted += k + 1 - done[i];
                    }
                    done[i] = k + 1;
                    last_done = now;
                    if peak_on {
                        tdone[i].push((k, now));
                    }
                }
                _ => {}
            }
        }
        // The credits, as iWARP flow control (docs/tool-compat.md §3): the cumulative count,
        // little-endian, into the peer's credit slot for this queue pair.
        for i in 0..q {
            while let Some(&v) = owed[i].front() {
                credit_wr += 1;
                let remote = RemoteAddr::unbounded(Stag(peer[i].rkey), peer[i].vaddr);
                match data.qps[i].post_send(&[SendWr::write_inline(credit_wr, &v.to_le_bytes(), remote).unsignaled()]) {
                    Ok(()) => {
                        owed[i].pop_front();
                    }
                    Err(iwarp::PostError { reason: iwarp::PostReason::QueueFull, .. }) => break,
                    Err(e) => return Err(format!("Couldn't post credit write: {e}")),
                }
            }
        }
        if deadline.is_some_and(|d| now >= d) {
            stop = true;
        }
        let sent = (0..q).all(|i| done[i] == signaled_to[i]) && (stop || (0..q).all(|i| posted[i] == iters));
        let heard = stop || (0..q).all(|i| got[i] >= iters);
        if sent && heard && owed.iter().all(|w| w.is_empty()) {
            break;
        }
    }
    if let Some((a, b)) = window {
        return Ok(BwResult::new(size, counted, b.duration_since(a), 0.0));
    }
    let peak = if peak_on { peak_rate(size, cq_mod, &tposted, &tdone) } else { 0.0 };
    let took = first_post.map_or(Duration::ZERO, |f| last_done.saturating_duration_since(f));
    Ok(BwResult::new(size, posted.iter().sum(), took, peak))
}

/// How long a test waits for one completion or one Write of the peer.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Turns of a busy loop that found nothing, so that such a loop reads the clock only now and
/// then: where the clock source is not the TSC (an emulated guest's HPET, as under QEMU TCG)
/// every clock read is a system call and a device access, slower than the turn itself.
/// With `-e` a turn sleeps in the kernel first, so the clock is read on every one.
struct IdleTurns {
    turns: u32,
    every: u32,
    since: Option<Instant>,
}

impl IdleTurns {
    /// Turns between clock reads while busy polling.
    const CLOCK_EVERY: u32 = 1024;

    fn new(o: &Opts) -> IdleTurns {
        IdleTurns { turns: 0, every: if o.events { 1 } else { Self::CLOCK_EVERY }, since: None }
    }

    /// Counts an idle turn; `true` when a loop that needs the time (`timed`) should read it.
    fn clock_due(&mut self, timed: bool) -> bool {
        self.turns = self.turns.wrapping_add(1);
        timed && self.turns.is_multiple_of(self.every)
    }

    /// Counts a turn; `true` once `limit` has passed since the first clock read (which comes
    /// after [`Self::CLOCK_EVERY`] busy turns: a wait that ends sooner never reads the clock).
    fn expired(&mut self, limit: Duration) -> bool {
        if !self.clock_due(true) {
            return false;
        }
        let now = Instant::now();
        now > *self.since.get_or_insert(now) + limit
    }
}

fn wait_byte(o: &Opts, data: &Data, mr: &MemoryRegion, at: usize, want: u8) -> Result<(), String> {
    let mut b = [0u8; 1];
    let mut wc = [WorkCompletion::default(); 4];
    let mut idle = IdleTurns::new(o);
    loop {
        mr.read(at, &mut b).map_err(|e| e.to_string())?;
        if b[0] == want {
            return Ok(());
        }
        // Drive manual-progress queue pairs (and catch errors) while spinning.
        let n = data.cq.poll(&mut wc);
        for c in &wc[..n] {
            check(c)?;
        }
        if o.events {
            std::thread::yield_now();
        }
        if idle.expired(WAIT_LIMIT) {
            return Err("timed out waiting for the peer's Write".into());
        }
    }
}

fn wait_one(o: &Opts, data: &Data, want: WcOpcode) -> Result<(), String> {
    let mut wc = [WorkCompletion::default(); 1];
    let mut idle = IdleTurns::new(o);
    loop {
        if wait_cq(o, &data.cq, &mut wc) == 1 {
            check(&wc[0])?;
            if wc[0].opcode == want {
                return Ok(());
            }
        }
        if idle.expired(WAIT_LIMIT) {
            return Err(format!("timed out waiting for a {want:?} completion"));
        }
    }
}

/// write_lat: ping-pong of Writes, detected by polling the last byte; the server writes first.
fn write_lat(o: &Opts, data: &Data, peer: &[Dest], size: usize, client: bool) -> Result<LatResult, String> {
    let mr = data.local(0);
    let qp = &data.qps[0];
    let remote = RemoteAddr::unbounded(Stag(peer[0].rkey), peer[0].vaddr);
    let poll_at = data.advertised_offset() + size - 1;
    let iters = o.iters;
    let mut stamps = Vec::with_capacity(iters as usize);
    let (mut scnt, mut rcnt) = (0u64, 0u64);
    let clock = quanta::Clock::new();
    let start = Instant::now();
    let deadline = o.duration.map(|d| start + Duration::from_secs(d));
    while scnt < iters || rcnt < iters {
        if rcnt < iters && (client || scnt >= 1) {
            rcnt += 1;
            wait_byte(o, data, mr, poll_at, rcnt as u8)?;
        }
        if scnt < iters {
            scnt += 1;
            mr.write(size - 1, &[scnt as u8]).map_err(|e| e.to_string())?;
            stamps.push(clock.raw());
            qp.post_send(&[SendWr::write(scnt, &[mr.sge(0, size)], remote)]).map_err(|e| e.to_string())?;
            wait_one(o, data, WcOpcode::RdmaWrite)?;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && scnt == rcnt {
            break;
        }
    }
    Ok(lat_from_stamps(size, iters, &clock, &stamps, true))
}

/// perftest's samples: differences of consecutive post times; it prints the iteration count.
/// The stamps are time-stamp-counter ticks, as perftest's `get_cycles()`: reading `Instant`
/// costs a system call where the clock source is an emulated device (about 1 µs in the interop
/// VM), which would be counted in every sample.
fn lat_from_stamps(size: usize, iters: u64, clock: &quanta::Clock, stamps: &[u64], halve: bool) -> LatResult {
    let deltas: Vec<Duration> = stamps.windows(2).map(|w| clock.delta(w[0], w[1])).collect();
    LatResult { iters, ..LatResult::from_round_trips(size, &deltas, halve) }
}

/// perftest's atomic request: fetch-and-add of 1, or compare-and-swap of 0 with 0 (its
/// `compare_add` and `swap` are left at zero); the original word lands in `sink`.
fn atomic_wr<'a>(op: AtomicOp, id: u64, sink: iwarp::Sge<'a>, remote: RemoteAddr) -> SendWr<'a> {
    match op {
        AtomicOp::FetchAndAdd => SendWr::fetch_add(id, sink, remote, 1),
        AtomicOp::CmpAndSwap => SendWr::compare_swap(id, sink, remote, 0, 0),
    }
}

/// read_lat and atomic_lat, client: one Read (atomic) at a time.
fn read_lat(o: &Opts, data: &Data, peer: &[Dest], size: usize) -> Result<LatResult, String> {
    let mr = data.local(0);
    let qp = &data.qps[0];
    let remote = RemoteAddr::unbounded(Stag(peer[0].rkey), peer[0].vaddr);
    let mut stamps = Vec::with_capacity(o.iters as usize + 1);
    let clock = quanta::Clock::new();
    let start = Instant::now();
    let deadline = o.duration.map(|d| start + Duration::from_secs(d));
    for k in 0..o.iters {
        stamps.push(clock.raw());
        let (wr, done) = match (o.test, o.atomic) {
            (Test::AtomicLat, AtomicOp::FetchAndAdd) => {
                (atomic_wr(o.atomic, k, mr.sge(0, size), remote), WcOpcode::FetchAdd)
            }
            (Test::AtomicLat, AtomicOp::CmpAndSwap) => {
                (atomic_wr(o.atomic, k, mr.sge(0, size), remote), WcOpcode::CompareSwap)
            }
            _ => (SendWr::read(k, mr.sge(0, size), remote), WcOpcode::RdmaRead),
        };
        qp.post_send(&[wr]).map_err(|e| e.to_string())?;
        wait_one(o, data, done)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let n = stamps.len() as u64;
    stamps.push(clock.raw());
    Ok(lat_from_stamps(size, n, &clock, &stamps, false))
}

/// send_lat: ping-pong of Sends; the client sends first.
fn send_lat(
    o: &Opts,
    data: &Data,
    size: usize,
    client: bool,
    rx_depth: usize,
    cycle: usize,
) -> Result<LatResult, String> {
    let mr = data.local(0);
    let qp = &data.qps[0];
    let iters = o.iters;
    let mut posted_recv = rx_depth as u64;
    let mut stamps = Vec::with_capacity(iters as usize);
    let (mut scnt, mut rcnt) = (0u64, 0u64);
    let clock = quanta::Clock::new();
    let start = Instant::now();
    let deadline = o.duration.map(|d| start + Duration::from_secs(d));
    while scnt < iters || rcnt < iters {
        if rcnt < iters && (!client || scnt >= 1) {
            wait_one(o, data, WcOpcode::Recv)?;
            rcnt += 1;
            if posted_recv < iters {
                qp.post_recv(&[RecvWr::new(posted_recv, &[mr.sge(slot_offset(size, cycle, posted_recv), size)])])
                    .map_err(|e| e.to_string())?;
                posted_recv += 1;
            }
        }
        if scnt < iters {
            stamps.push(clock.raw());
            qp.post_send(&[SendWr::send(scnt, &[mr.sge(data.advertised_offset(), size)])])
                .map_err(|e| e.to_string())?;
            scnt += 1;
            wait_one(o, data, WcOpcode::Send)?;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && scnt == rcnt {
            break;
        }
    }
    Ok(lat_from_stamps(size, scnt, &clock, &stamps, true))
}

/// The five report messages (bw tests): this side's figures, or zeros (`None`: a
/// unidirectional server, whose figures nobody reads); returns the peer's.
fn exchange_report(ctrl: &mut Ctrl, mine: Option<&BwResult>, gbits: bool) -> Result<BwResult, String> {
    let (size, iters, peak, avg, rate) = match mine {
        Some(r) => (
            r.size as u64,
            r.iters,
            report::bw_unit(r.peak_bytes_per_s, gbits),
            report::bw_unit(r.bytes_per_s(), gbits),
            r.mpps(),
        ),
        _ => (0, 0, 0.0, 0.0, 0.0),
    };
    let s = ctrl.exchange(&size.to_be_bytes())?;
    let i = ctrl.exchange(&iters.to_be_bytes())?;
    let p = ctrl.exchange(&peak.to_bits().to_be_bytes())?;
    let a = ctrl.exchange(&avg.to_bits().to_be_bytes())?;
    let m = ctrl.exchange(&rate.to_bits().to_be_bytes())?;
    let u = |v: &[u8]| v.get(..8).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    let f = |v: &[u8]| f64::from_bits(u(v));
    let (size, iters, peak, avg, rate) = (u(&s) as usize, u(&i), f(&p), f(&a), f(&m));
    // Rebuild a result from the peer's figures (in its unit) for printing.
    let to_bytes = |x: f64| if gbits { x * 1e9 / 8.0 } else { x * 1_048_576.0 };
    let seconds = if avg > 0.0 { size as f64 * iters as f64 / to_bytes(avg) } else { 0.0 };
    let _ = rate;
    Ok(BwResult { size, iters, seconds, peak_bytes_per_s: to_bytes(peak) })
}

fn print_header(o: &Opts, client: bool, mine: &[Dest], peer: &[Dest]) {
    println!("{DASHES}");
    println!("                    {}", o.test.title(o.bidir, o.atomic));
    println!(" Dual-port       : OFF\t\tDevice         : {}", o.dev_name);
    println!(" Number of qps   : {}\t\tTransport type : IW", o.qps);
    println!(" Connection type : RC\t\tUsing SRQ      : OFF");
    println!(" PCIe relax order: {}", if o.test == Test::WriteLat { "OFF" } else { "ON" });
    println!(" ibv_wr* API     : OFF");
    if client || o.bidir {
        println!(" TX depth        : {}", o.tx_depth.min(o.iters as usize).max(1));
    }
    if o.test.is_send() && (!client || o.bidir) && o.test.is_bw() {
        println!(" RX depth        : {}", rx_depth_for(o));
    }
    if o.test.is_bw() {
        println!(" CQ Moderation   : {}", effective_cq_mod(o, o.size, o.tx_depth.min(o.iters as usize).max(1)));
    }
    println!(" Mtu             : 1024[B]");
    println!(" Link type       : Ethernet");
    println!(" GID index       : 0");
    if o.test.uses_ird() {
        println!(" Outstand reads  : {}", o.outs);
    } else {
        println!(" Max inline data : 0[B]");
    }
    println!(" rdma_cm QPs\t : ON");
    println!(" Data ex. method : rdma_cm");
    println!("{DASHES}");
    for d in mine {
        println!("{}", d.describe("local"));
    }
    for d in peer {
        println!("{}", d.describe("remote"));
    }
    println!("{DASHES}");
}

fn print_results(o: &Opts, client: bool, out: &Outcome) {
    if o.bidir {
        // Each line: this side's size and count, both sides' figures summed (perftest -b).
        println!("{}", report::bw_header(o.gbits));
        for (i, r) in out.bw.iter().enumerate() {
            println!("{}", report::bidir_line(r, out.remote.get(i), o.gbits));
        }
    } else if o.test.is_bw() {
        println!("{}", report::bw_header(o.gbits));
        for r in &out.bw {
            println!("{}", report::bw_line(r, o.gbits));
        }
    } else if matches!(o.test, Test::ReadLat | Test::AtomicLat) && !client {
        // perftest's read_lat and atomic_lat servers print no table: the dash line after the
        // address blocks is their last line.
        return;
    } else if o.duration.is_some() {
        println!("{}", report::LAT_DUR_HEADER);
        for r in &out.lat {
            println!("{}", report::lat_dur_line(r.size, r.iters, r.t_avg));
        }
    } else {
        println!("{}", report::LAT_HEADER);
        for r in &out.lat {
            println!("{}", report::lat_line(r));
        }
    }
    println!("{DASHES}");
}

/// The address a server binds when given none (IPv4's any address, as perftest's).
pub fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)
}
