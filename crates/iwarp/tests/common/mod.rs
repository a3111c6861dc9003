//! Shared harness of the integration tests: a two-peer setup over 127.0.0.1, completion and
//! event helpers with deadlines, and a raw-socket peer that speaks MPA by hand.
#![allow(dead_code)]

use iwarp::*;
use iwarp_wire::mpa::rr::{FrameKind, FrameRepr};
use iwarp_wire::mpa::{Deframer, DeframerConfig, EnhancedParams, Event, Framer};
use iwarp_wire::SegmentHeader;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test writer when `RUST_LOG` is set.
pub fn init_log() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A device with two event-loop workers (so the two ends of a pair usually run on different
/// threads).
pub fn device() -> Device {
    Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).expect("device")
}

/// The loopback address with a port the host picks.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// One end of a connection: its queue pair and completion queues.
#[derive(Clone)]
pub struct End {
    /// The queue pair.
    pub qp: QueuePair,
    /// Its send completion queue.
    pub scq: CompletionQueue,
    /// Its receive completion queue.
    pub rcq: CompletionQueue,
}

impl End {
    /// A queue pair in `pd` with its own two completion queues.
    pub fn new(dev: &Device, pd: &ProtectionDomain, cap: QpCap, progress: Progress) -> End {
        let scq = dev.create_cq(4096).expect("cq");
        let rcq = dev.create_cq(4096).expect("cq");
        let mut init = QpInit::new(&scq, &rcq);
        init.cap = cap;
        init.progress = progress;
        let qp = pd.create_qp(&init).expect("qp");
        End { qp, scq, rcq }
    }

    /// Waits for exactly `n` send completions.
    pub fn send_wcs(&self, n: usize) -> Vec<WorkCompletion> {
        wait_wcs(&self.scq, n, WAIT)
    }

    /// Waits for exactly `n` receive completions.
    pub fn recv_wcs(&self, n: usize) -> Vec<WorkCompletion> {
        wait_wcs(&self.rcq, n, WAIT)
    }

    /// The MULPDU the queue pair frames with now (from its current MSS, no markers).
    pub fn mulpdu(&self) -> usize {
        let info = self.qp.conn_info().expect("connected");
        if info.large_fpdus {
            iwarp_wire::mpa::MAX_ULPDU
        } else {
            iwarp_wire::mpa::mulpdu(info.mss, info.send_markers)
        }
    }
}

/// What a pair is set up with.
#[derive(Clone)]
pub struct PairConfig {
    /// The initiator's parameters.
    pub client: ConnParams,
    /// The responder's `accept` parameters.
    pub server: ConnParams,
    /// Options installed on the listener before the connection arrives.
    pub listener_mpa: Option<MpaOptions>,
    /// Progress mode of both queue pairs.
    pub progress: Progress,
    /// Progress mode of the server, if different.
    pub server_progress: Option<Progress>,
    /// Queue sizes of both queue pairs.
    pub cap: QpCap,
}

impl Default for PairConfig {
    fn default() -> Self {
        PairConfig {
            client: ConnParams::default(),
            server: ConnParams::default(),
            listener_mpa: None,
            progress: Progress::Thread,
            server_progress: None,
            cap: QpCap { max_send_wr: 1024, max_recv_wr: 1024, max_send_sge: 8, max_recv_sge: 8, max_inline_data: 256 },
        }
    }
}

/// Two connected queue pairs on one device and protection domain.
pub struct Pair {
    /// The device.
    pub dev: Device,
    /// The protection domain of both ends.
    pub pd: ProtectionDomain,
    /// The active side.
    pub client: End,
    /// The passive side.
    pub server: End,
}

impl Pair {
    /// A pair with default parameters on a fresh device.
    pub fn new() -> Pair {
        Pair::with(PairConfig::default())
    }

    /// A pair with `cfg` on a fresh device.
    pub fn with(cfg: PairConfig) -> Pair {
        let dev = device();
        let pd = dev.alloc_pd();
        Pair::on(&dev, &pd, cfg)
    }

    /// A pair with `cfg` on `dev` and `pd`.
    pub fn on(dev: &Device, pd: &ProtectionDomain, cfg: PairConfig) -> Pair {
        Pair::try_on(dev, pd, cfg).expect("connect")
    }

    /// As [`Pair::on`], returning the initiator's connect error.
    pub fn try_on(dev: &Device, pd: &ProtectionDomain, cfg: PairConfig) -> Result<Pair, ConnectError> {
        Pair::try_on_with(dev, pd, cfg, |_, _| {})
    }

    /// As [`Pair::try_on`], calling `before` with (client, server) once both queue pairs exist
    /// and before anything connects (to post receives in advance).
    pub fn try_on_with(
        dev: &Device,
        pd: &ProtectionDomain,
        cfg: PairConfig,
        before: impl FnOnce(&End, &End),
    ) -> Result<Pair, ConnectError> {
        init_log();
        let listener = dev.listen(any_port(), 16).expect("listen");
        if let Some(m) = &cfg.listener_mpa {
            listener.set_mpa_options(m.clone());
        }
        let addr = listener.local_addr();
        let server = End::new(dev, pd, cfg.cap, cfg.server_progress.unwrap_or(cfg.progress));
        let client = End::new(dev, pd, cfg.cap, cfg.progress);
        before(&client, &server);
        let sqp = server.qp.clone();
        let sparams = cfg.server.clone();
        let t = std::thread::spawn(move || -> Result<(), Error> {
            let req = listener.get_request(Some(WAIT))?;
            Ok(req.accept(&sqp, &sparams)?)
        });
        let r = client.qp.connect(addr, &cfg.client);
        let accepted = t.join().expect("accept thread");
        r?;
        accepted.expect("accept");
        server.qp.wait_established(WAIT)?;
        Ok(Pair { dev: dev.clone(), pd: pd.clone(), client, server })
    }

    /// A region in the pair's domain.
    pub fn mr(&self, len: usize, access: Access) -> MemoryRegion {
        self.pd.reg_mr(len, access).expect("reg_mr")
    }
}

/// Every access right.
pub fn all_access() -> Access {
    Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE | Access::REMOTE_ATOMIC
}

/// Deterministic, position- and seed-dependent bytes (never a short period).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) ^ (i as u8)
        })
        .collect()
}

/// Fills `mr` at `offset` with [`pattern`] and returns the bytes.
pub fn fill(mr: &MemoryRegion, offset: usize, len: usize, seed: u32) -> Vec<u8> {
    let p = pattern(len, seed);
    mr.write(offset, &p).expect("write");
    p
}

/// Asserts that `mr` holds `expect` at `offset`, naming the first differing byte.
pub fn assert_mr_eq(mr: &MemoryRegion, offset: usize, expect: &[u8], what: &str) {
    let got = mr.to_vec(offset, expect.len()).expect("read");
    if got != expect {
        let i = got.iter().zip(expect).position(|(a, b)| a != b).unwrap_or(0);
        panic!("{what}: {} bytes differ, first at {i} ({:#04x} != {:#04x})", expect.len(), got[i], expect[i]);
    }
}

/// Waits until `cq` has produced exactly `n` completions (fails on more, or on timeout).
pub fn wait_wcs(cq: &CompletionQueue, n: usize, timeout: Duration) -> Vec<WorkCompletion> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    let mut buf = [WorkCompletion::default(); 64];
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out with {} of {n} completions: {out:?}", out.len());
        let k = cq.wait(&mut buf, Some(left.min(Duration::from_millis(200))));
        out.extend_from_slice(&buf[..k]);
    }
    assert_eq!(out.len(), n, "more completions than expected: {out:?}");
    out
}

/// Asserts that no completion arrives on `cq` within `d`.
pub fn assert_no_wc(cq: &CompletionQueue, d: Duration) {
    let mut buf = [WorkCompletion::default(); 8];
    let n = cq.wait(&mut buf, Some(d));
    assert_eq!(n, 0, "unexpected completions: {:?}", &buf[..n]);
}

/// Asserts every completion succeeded.
pub fn assert_ok(wcs: &[WorkCompletion]) {
    for c in wcs {
        assert_eq!(c.status, WcStatus::Success, "{c:?}");
    }
}

/// The next event that is not `Established`.
pub fn next_non_established(qp: &QueuePair, timeout: Duration) -> Option<QpEvent> {
    let deadline = Instant::now() + timeout;
    // A queue pair reports `Established` once; a few spare rounds, never an endless loop.
    for _ in 0..16 {
        let left = deadline.saturating_duration_since(Instant::now());
        match qp.next_event(left)? {
            QpEvent::Established => continue,
            e => return Some(e),
        }
    }
    panic!("`Established` reported again and again");
}

/// Waits for an event matching `f`, skipping others; panics with what was seen on timeout.
pub fn wait_event(qp: &QueuePair, timeout: Duration, f: impl Fn(&QpEvent) -> bool) -> QpEvent {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Queued events come back even after the deadline: bound their number too.
        assert!(seen.len() < 1000, "no matching event in 1000; saw {:?}", &seen[..10]);
        match qp.next_event(left) {
            Some(e) if f(&e) => return e,
            Some(e) => seen.push(format!("{e:?}")),
            None => panic!("no matching event; saw {seen:?}"),
        }
    }
}

/// Posts a receive of `len` bytes at `offset` of `mr`.
pub fn post_recv(qp: &QueuePair, wr_id: u64, mr: &MemoryRegion, offset: usize, len: usize) {
    qp.post_recv(&[RecvWr::new(wr_id, &[mr.sge(offset, len)])]).expect("post_recv");
}

/// An RDMA Write of `len` bytes from `src` to `dst` (at offset 0 of both), made visible by a
/// following zero-length Send the peer receives (RFC 5040 "no peeking": a Write is complete
/// at the target once a later Send is delivered). Verifies the bytes and the completions.
pub fn write_and_verify(from: &End, to: &End, src: &MemoryRegion, dst: &MemoryRegion, len: usize, seed: u32) {
    let data = fill(src, 0, len, seed);
    post_recv(&to.qp, 9_000 + u64::from(seed), dst, 0, 0);
    from.qp
        .post_send(&[SendWr::write(1, &[src.sge(0, len)], dst.remote(0)), SendWr::send(2, &[])])
        .expect("post write");
    let s = from.send_wcs(2);
    assert_ok(&s);
    assert_eq!((s[0].wr_id, s[0].opcode, s[1].wr_id, s[1].opcode), (1, WcOpcode::RdmaWrite, 2, WcOpcode::Send));
    let r = to.recv_wcs(1);
    assert_ok(&r);
    assert_eq!((r[0].wr_id, r[0].byte_len), (9_000 + u64::from(seed), 0));
    assert_mr_eq(dst, 0, &data, &format!("RDMA Write of {len} bytes"));
}

/// A Send of `len` bytes from `src` into a receive of `dst`, verified.
pub fn send_and_verify(from: &End, to: &End, src: &MemoryRegion, dst: &MemoryRegion, len: usize, seed: u32) {
    let data = fill(src, 0, len, seed);
    post_recv(&to.qp, 7, dst, 0, dst.len());
    from.qp.post_send(&[SendWr::send(3, &[src.sge(0, len)])]).expect("post send");
    let s = from.send_wcs(1);
    assert_ok(&s);
    let r = to.recv_wcs(1);
    assert_ok(&r);
    assert_eq!((r[0].wr_id, r[0].opcode, r[0].byte_len as usize), (7, WcOpcode::Recv, len));
    assert_mr_eq(dst, 0, &data, &format!("Send of {len} bytes"));
}

/// An RDMA Read of `len` bytes of `remote` (filled here) into `sink`, verified.
pub fn read_and_verify(by: &End, sink: &MemoryRegion, remote: &MemoryRegion, len: usize, seed: u32) {
    let data = fill(remote, 0, len, seed);
    by.qp.post_send(&[SendWr::read(4, sink.sge(0, len), remote.remote(0))]).expect("post read");
    let s = by.send_wcs(1);
    assert_ok(&s);
    assert_eq!((s[0].wr_id, s[0].opcode, s[0].byte_len as usize), (4, WcOpcode::RdmaRead, len));
    assert_mr_eq(sink, 0, &data, &format!("RDMA Read of {len} bytes"));
}

// ------------------------------------------------------------------------------------------
// The raw peer.

/// A misbehaving (or merely hand-driven) peer on a plain TCP socket: MPA by hand, FPDUs built
/// with the wire codecs.
pub struct RawPeer {
    /// The socket.
    pub sock: TcpStream,
    /// Frames what the raw peer sends.
    pub framer: Framer,
    /// Deframes what the stack sends.
    pub deframer: Deframer,
    /// The CRC setting of the connection.
    pub peer_crc: bool,
    /// Received bytes not yet deframed.
    pending: Vec<u8>,
    /// This side asked for markers (M in its Request).
    asked_markers: bool,
    /// The Request received (raw responder).
    request: Vec<u8>,
    /// The FPDU being received.
    cur: Option<RxFpdu>,
}

/// A decoded FPDU the stack sent.
#[derive(Debug, Clone)]
pub struct RxFpdu {
    /// ULPDU_Length.
    pub ulpdu_len: u16,
    /// The DDP header bytes as sent.
    pub ddp_header: Vec<u8>,
    /// The parsed header.
    pub seg: SegmentHeader,
    /// The payload (for a Terminate, its body).
    pub payload: Vec<u8>,
    /// The CRC field as received.
    pub crc: u32,
}

impl RawPeer {
    fn wrap(sock: TcpStream, crc: bool) -> RawPeer {
        sock.set_nodelay(true).expect("nodelay");
        sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        RawPeer {
            sock,
            framer: Framer::new(crc, false),
            deframer: Deframer::new(DeframerConfig { crc, markers: false, max_ulpdu: u16::MAX }),
            peer_crc: crc,
            pending: Vec::new(),
            cur: None,
            asked_markers: false,
            request: Vec::new(),
        }
    }

    /// Connects to a listener and sends a revision-2 enhanced MPA Request (CRC on) with the
    /// given IRD/ORD and RTR offer; does not wait for the Reply.
    pub fn connect_request(addr: SocketAddr, params: EnhancedParams) -> RawPeer {
        RawPeer::connect_frame(addr, &FrameRepr::enhanced(FrameKind::Request, params, b"raw"))
    }

    /// Connects to a listener and sends `req`; does not wait for the Reply.
    pub fn connect_frame(addr: SocketAddr, req: &FrameRepr<'_>) -> RawPeer {
        let sock = TcpStream::connect(addr).expect("raw connect");
        let mut p = RawPeer::wrap(sock, req.crc);
        p.asked_markers = req.markers;
        p.sock.write_all(&req.to_vec().expect("request")).expect("send request");
        p
    }

    /// Reads the MPA Reply (failing after [`WAIT`]) and sets up framing as it negotiated;
    /// returns the Reply's (C flag, RFC 6581 parameters, M flag).
    pub fn read_reply(&mut self) -> (bool, Option<EnhancedParams>, bool) {
        let buf = self.read_mpa_frame(FrameKind::Reply);
        let (r, used) = FrameRepr::parse(&buf, FrameKind::Reply).expect("reply").expect("whole reply");
        assert_eq!(used, buf.len());
        assert!(!r.reject, "rejected");
        // RFC 5044 §4.4: CRC unless both sides declined it.
        let crc = r.crc || self.peer_crc;
        self.framer = Framer::new(crc, r.markers);
        self.deframer = Deframer::new(DeframerConfig { crc, markers: self.asked_markers, max_ulpdu: u16::MAX });
        self.peer_crc = crc;
        (r.crc, r.enhanced, r.markers)
    }

    /// Accepts one connection on `l`, reads the MPA Request and answers with an accepting
    /// revision-2 Reply with CRC on and the given parameters.
    pub fn accept_on(l: &TcpListener, params: EnhancedParams) -> RawPeer {
        RawPeer::accept_with(l, |_| FrameRepr::enhanced(FrameKind::Reply, params, b""))
    }

    /// Accepts one connection on `l`, reads the MPA Request and answers with the Reply
    /// `reply` builds from it; framing follows what the two frames negotiated.
    pub fn accept_with(l: &TcpListener, reply: impl FnOnce(&FrameRepr<'_>) -> FrameRepr<'static>) -> RawPeer {
        l.set_nonblocking(false).expect("blocking");
        let (sock, _) = l.accept().expect("raw accept");
        let mut p = RawPeer::wrap(sock, true);
        let buf = p.read_mpa_frame(FrameKind::Request);
        let (req, used) = FrameRepr::parse(&buf, FrameKind::Request).expect("request").expect("whole request");
        assert_eq!(used, buf.len());
        let rep = reply(&req);
        p.sock.write_all(&rep.to_vec().expect("reply")).expect("send reply");
        let crc = req.crc || rep.crc;
        p.framer = Framer::new(crc, req.markers);
        p.deframer = Deframer::new(DeframerConfig { crc, markers: rep.markers, max_ulpdu: u16::MAX });
        p.peer_crc = crc;
        p.request = buf;
        p
    }

    /// The MPA Request bytes the stack sent (raw responder only).
    pub fn request(&self) -> FrameRepr<'_> {
        FrameRepr::parse(&self.request, FrameKind::Request).expect("request").expect("whole").0
    }

    /// Reads exactly one MPA frame of `kind` (header, then its private data).
    fn read_mpa_frame(&mut self, kind: FrameKind) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; iwarp_wire::mpa::rr::HEADER_LEN];
        self.read_exact_by(&mut buf, deadline);
        let pd_len = u16::from_be_bytes([buf[18], buf[19]]) as usize;
        let mut pd = vec![0u8; pd_len];
        self.read_exact_by(&mut pd, deadline);
        buf.extend_from_slice(&pd);
        assert!(FrameRepr::parse(&buf, kind).is_ok(), "not an MPA {kind:?}: {buf:02x?}");
        buf
    }

    fn read_exact_by(&mut self, mut buf: &mut [u8], deadline: Instant) {
        while !buf.is_empty() {
            assert!(Instant::now() < deadline, "raw peer: timed out reading");
            match self.sock.read(buf) {
                Ok(0) => panic!("raw peer: connection closed"),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("raw peer: {e}"),
            }
        }
    }

    /// One FPDU: `h`, then `body` (fixed-size RDMAP header), then `payload`.
    pub fn fpdu(&mut self, h: SegmentHeader, body: &[u8], payload: &[u8]) -> Vec<u8> {
        let (b, n) = h.to_bytes();
        let mut hdr = b[..n].to_vec();
        hdr.extend_from_slice(body);
        self.raw_fpdu(&hdr, payload)
    }

    /// One FPDU whose DDP header bytes are given as is (to send malformed headers).
    pub fn raw_fpdu(&mut self, header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.framer.frame_to_vec(header, &[payload], &mut out).expect("frame");
        out
    }

    /// Writes bytes to the stack.
    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("raw send");
    }

    /// Reads FPDUs until end of stream (or `timeout`); returns them and whether EOF was seen.
    pub fn read_until_eof(&mut self, timeout: Duration) -> (Vec<RxFpdu>, bool) {
        self.read_fpdus(timeout, |_| false)
    }

    /// Reads FPDUs until `stop` says so for one of them, EOF, or `timeout`.
    pub fn read_fpdus(&mut self, timeout: Duration, stop: impl Fn(&RxFpdu) -> bool) -> (Vec<RxFpdu>, bool) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        if self.feed(&pending, &mut out, &stop) {
            return (out, false);
        }
        let mut buf = vec![0u8; 64 << 10];
        while Instant::now() < deadline {
            let n = match self.sock.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
                Err(e) => panic!("raw peer: {e}"),
            };
            if self.feed(&buf[..n], &mut out, &stop) {
                return (out, false);
            }
        }
        (out, false)
    }

    /// Deframes `bytes` into `out`; returns `true` (keeping the rest) once `stop` matched.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<RxFpdu>, stop: &impl Fn(&RxFpdu) -> bool) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (used, ev) = self.deframer.feed(rest).expect("the stack sends well-formed FPDUs");
            assert!(used > 0, "no progress");
            match ev {
                Event::Header(h) => {
                    self.cur = Some(RxFpdu {
                        ulpdu_len: h.ulpdu_len(),
                        ddp_header: h.ddp_header().to_vec(),
                        seg: h.segment().expect("valid header"),
                        payload: Vec::new(),
                        crc: 0,
                    })
                }
                Event::Payload(p) => self.cur.as_mut().expect("header first").payload.extend_from_slice(p),
                Event::End(end) => {
                    let mut f = self.cur.take().expect("header first");
                    f.crc = end.crc;
                    let done = stop(&f);
                    out.push(f);
                    if done {
                        self.pending = rest[used..].to_vec();
                        return true;
                    }
                }
                Event::None => {}
            }
            rest = &rest[used..];
        }
        false
    }
}

/// Lowers this process's descriptor limit to 512 (cheap to fill) and opens `/dev/null` until
/// no descriptor is left (EMFILE checked). Returns the files holding them and the old limit
/// for [`restore_descriptors`]. Only for a test binary of its own: the limit is per process.
pub fn exhaust_descriptors() -> (Vec<std::fs::File>, libc::rlimit) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read a live rlimit struct.
    unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0) };
    let low = libc::rlimit { rlim_cur: 512.min(old.rlim_max), rlim_max: old.rlim_max };
    // SAFETY: as above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0) };
    let mut fillers = Vec::new();
    let exhausted = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => break e,
        }
        assert!(fillers.len() <= 512, "the limit did not apply");
    };
    assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE));
    (fillers, old)
}

/// Restores the limit [`exhaust_descriptors`] lowered.
pub fn restore_descriptors(old: libc::rlimit) {
    // SAFETY: reads a live rlimit struct.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0) };
}
