//! The NBD server against a protocol-level client written here (the handshake, every option,
//! every command and every refusal), and against the real tools when installed: `qemu-img`
//! (qemu-utils), `nbdinfo` and `nbdcopy` (libnbd-bin). Under `CI=true` a missing tool fails
//! its test; elsewhere the test prints why it skipped.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use iwarp_nvmf::block::{check_range, BlockDevice, FileDevice, MemDevice};
use iwarp_nvmf::nbd::proto::*;
use iwarp_nvmf::nbd::{ListenAddr, NbdConfig, NbdError, NbdHandle, NbdServer};

// ---------------------------------------------------------------------------------------------
// helpers

/// A fresh scratch directory for one test (socket, images), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "iwarp-nbd-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn serve(device: Arc<dyn BlockDevice>, config: NbdConfig, tag: &str) -> (NbdHandle, Scratch) {
    let dir = scratch(tag);
    let server = NbdServer::new(device, config).unwrap();
    let handle = server.listen_unix(&dir.join("nbd.sock")).unwrap();
    (handle, dir)
}

fn socket_of(handle: &NbdHandle) -> PathBuf {
    match handle.address() {
        ListenAddr::Unix(p) => p.clone(),
        other => panic!("not a Unix listener: {other}"),
    }
}

/// Deterministic pseudo-random bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An NBD client that speaks the wire protocol byte by byte.
struct Client<S: Read + Write> {
    s: S,
}

#[derive(Debug)]
struct OptReply {
    option: u32,
    kind: u32,
    data: Vec<u8>,
}

impl Client<UnixStream> {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { s }
    }

    /// Handshake with fixed newstyle and no zeroes, then `NBD_OPT_GO` on the default export.
    fn open(path: &Path) -> Self {
        let mut c = Client::connect(path);
        c.hello(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        c.go("");
        c
    }
}

impl<S: Read + Write> Client<S> {
    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.s.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.s.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.s.read_exact(&mut b).unwrap();
        u64::from_be_bytes(b)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    /// Reads the greeting, returns the handshake flags.
    fn greeting(&mut self) -> u16 {
        assert_eq!(self.u64(), NBDMAGIC);
        assert_eq!(self.u64(), IHAVEOPT);
        self.u16()
    }

    fn hello(&mut self, client_flags: u32) {
        let flags = self.greeting();
        assert_eq!(flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        self.s.write_all(&client_flags.to_be_bytes()).unwrap();
    }

    fn option_header(&mut self, option: u32, len: u32) {
        let mut m = IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        self.option_header(option, data.len() as u32);
        self.s.write_all(data).unwrap();
    }

    fn opt_reply(&mut self) -> OptReply {
        assert_eq!(self.u64(), OPTION_REPLY_MAGIC);
        let option = self.u32();
        let kind = self.u32();
        let len = self.u32() as usize;
        OptReply { option, kind, data: self.bytes(len) }
    }

    /// Sends `NBD_OPT_INFO`/`NBD_OPT_GO` and collects the replies up to the final one.
    fn info(&mut self, option: u32, name: &str, requests: &[u16]) -> (Vec<(u16, Vec<u8>)>, OptReply) {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            data.extend_from_slice(&r.to_be_bytes());
        }
        self.option(option, &data);
        let mut infos = Vec::new();
        loop {
            let r = self.opt_reply();
            assert_eq!(r.option, option);
            if r.kind != REP_INFO {
                return (infos, r);
            }
            infos.push((u16::from_be_bytes([r.data[0], r.data[1]]), r.data[2..].to_vec()));
        }
    }

    /// `NBD_OPT_GO` that must succeed; returns (size, transmission flags).
    fn go(&mut self, name: &str) -> (u64, u16) {
        let (infos, last) = self.info(OPT_GO, name, &[INFO_BLOCK_SIZE]);
        assert_eq!(last.kind, REP_ACK, "{last:?}");
        let export = infos.iter().find(|(t, _)| *t == INFO_EXPORT).expect("NBD_INFO_EXPORT").1.clone();
        assert_eq!(export.len(), 10);
        (u64::from_be_bytes(export[0..8].try_into().unwrap()), u16::from_be_bytes([export[8], export[9]]))
    }

    fn request(&mut self, flags: u16, kind: u16, handle: u64, offset: u64, len: u32) {
        let mut m = Vec::with_capacity(28);
        m.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&handle.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    /// A simple reply header: (error, handle).
    fn reply(&mut self) -> (u32, u64) {
        assert_eq!(self.u32(), SIMPLE_REPLY_MAGIC);
        let error = self.u32();
        (error, self.u64())
    }

    fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.request(0, CMD_READ, 0xabc, offset, len);
        match self.reply() {
            (0, 0xabc) => Ok(self.bytes(len as usize)),
            (e, 0xabc) => Err(e),
            (_, h) => panic!("reply for handle {h:#x}"),
        }
    }

    fn write(&mut self, flags: u16, offset: u64, data: &[u8]) -> u32 {
        self.request(flags, CMD_WRITE, 0xdef, offset, data.len() as u32);
        self.s.write_all(data).unwrap();
        let (error, handle) = self.reply();
        assert_eq!(handle, 0xdef);
        error
    }

    /// A command without payload either way; returns its error.
    fn command(&mut self, flags: u16, kind: u16, offset: u64, len: u32) -> u32 {
        self.request(flags, kind, 0x77, offset, len);
        let (error, handle) = self.reply();
        assert_eq!(handle, 0x77);
        error
    }

    fn disconnect(&mut self) {
        self.request(0, CMD_DISC, 0, 0, 0);
    }

    /// True once the server has closed the connection (end of stream or reset).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("connection neither closed nor talking: {e}"),
        }
    }
}

/// A device that records what reaches it: operations at once, flushes, and failures on demand.
#[derive(Default)]
struct Probe {
    mem: Option<MemDevice>,
    delay: Duration,
    /// Reads at this offset take `slow_delay` (other reads take `delay`).
    slow_offset: Option<u64>,
    slow_delay: Duration,
    active: AtomicUsize,
    max_active: AtomicUsize,
    flushes: AtomicUsize,
    fail: AtomicBool,
    full: AtomicBool,
    writes: AtomicU64,
}

impl Probe {
    fn new(size: usize) -> Self {
        Probe { mem: Some(MemDevice::new(size)), ..Probe::default() }
    }
    fn mem(&self) -> &MemDevice {
        self.mem.as_ref().unwrap()
    }
    fn failure(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("remote namespace unreachable"));
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

impl BlockDevice for Probe {
    fn size(&self) -> u64 {
        self.mem().size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.failure()?;
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        thread::sleep(if self.slow_offset == Some(offset) { self.slow_delay } else { self.delay });
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.mem().read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.failure()?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.mem().write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.failure()?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.failure()?;
        check_range(self.size(), offset, len)?;
        self.mem().write_zeroes(offset, len)
    }
}

// ---------------------------------------------------------------------------------------------
// handshake

#[test]
fn handshake_greets_with_fixed_newstyle_and_no_zeroes() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "greet");
    let mut c = Client::connect(&socket_of(&h));
    assert_eq!(c.greeting(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
}

#[test]
fn export_name_sends_size_and_flags_then_124_zeroes_unless_no_zeroes() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(3 << 20)), NbdConfig::default(), "expname");
    let expected = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_CAN_MULTI_CONN;
    for no_zeroes in [false, true] {
        let mut c = Client::connect(&socket_of(&h));
        c.hello(FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 });
        c.option(OPT_EXPORT_NAME, b"");
        assert_eq!(c.u64(), 3 << 20);
        assert_eq!(c.u16(), expected);
        if !no_zeroes {
            assert_eq!(c.bytes(124), vec![0u8; 124]);
        }
        // the next bytes are the reply to a read: nothing (no zeroes) came in between
        assert_eq!(c.read(0, 512).unwrap(), vec![0u8; 512]);
        c.disconnect();
        assert!(c.closed());
    }
}

#[test]
fn go_and_info_describe_the_export_and_go_enters_transmission() {
    let config = NbdConfig {
        export_name: "disk0".into(),
        description: "an attached namespace".into(),
        max_payload: 1 << 20,
        ..NbdConfig::default()
    };
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), config, "go");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    let (infos, last) = c.info(OPT_INFO, "disk0", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]);
    assert_eq!(last.kind, REP_ACK);
    let get = |t: u16| infos.iter().find(|(k, _)| *k == t).map(|(_, d)| d.clone());
    let export = get(INFO_EXPORT).unwrap();
    assert_eq!(u64::from_be_bytes(export[0..8].try_into().unwrap()), 1 << 20);
    assert_eq!(get(INFO_NAME).unwrap(), b"disk0");
    assert_eq!(get(INFO_DESCRIPTION).unwrap(), b"an attached namespace");
    let sizes = get(INFO_BLOCK_SIZE).unwrap();
    let word = |i: usize| u32::from_be_bytes(sizes[i..i + 4].try_into().unwrap());
    assert_eq!((word(0), word(4), word(8)), (1, 4096, 1 << 20));

    // after INFO the session is still in the handshake; GO by name enters transmission
    let (size, flags) = c.go("disk0");
    assert_eq!(size, 1 << 20);
    assert_eq!(flags & FLAG_HAS_FLAGS, FLAG_HAS_FLAGS);
    assert_eq!(c.write(0, 4096, b"after go"), 0);
    assert_eq!(c.read(4096, 8).unwrap(), b"after go");

    // the empty name is the default export: the same one
    let mut d = Client::connect(&socket_of(&h));
    d.hello(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    assert_eq!(d.go("").0, 1 << 20);
    assert_eq!(d.read(4096, 8).unwrap(), b"after go");
}

#[test]
fn list_names_the_export_and_refuses_data() {
    let config = NbdConfig { export_name: "vol".into(), description: "remote".into(), ..NbdConfig::default() };
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), config, "list");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_LIST, b"");
    let server = c.opt_reply();
    assert_eq!((server.option, server.kind), (OPT_LIST, REP_SERVER));
    assert_eq!(&server.data[0..4], &3u32.to_be_bytes());
    assert_eq!(&server.data[4..], b"volremote");
    assert_eq!(c.opt_reply().kind, REP_ACK);
    c.option(OPT_LIST, b"x");
    assert_eq!(c.opt_reply().kind, REP_ERR_INVALID);
    assert_eq!(c.go("vol").0, 1 << 20);
}

#[test]
fn unknown_options_tls_and_metadata_contexts_are_unsupported_and_the_session_goes_on() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "unsup");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    let mut query = 0u32.to_be_bytes().to_vec();
    query.extend_from_slice(&1u32.to_be_bytes());
    query.extend_from_slice(&16u32.to_be_bytes());
    query.extend_from_slice(b"base:allocation!");
    for (option, data) in [
        (0x1234u32, &b"some data"[..]),
        (OPT_STARTTLS, b""),
        (OPT_LIST_META_CONTEXT, &query),
        (OPT_SET_META_CONTEXT, &query),
        (11, b""),
    ] {
        c.option(option, data);
        let r = c.opt_reply();
        assert_eq!((r.option, r.kind), (option, REP_ERR_UNSUP), "option {option}");
    }
    assert_eq!(c.go("").0, 1 << 20);
    assert_eq!(c.read(0, 16).unwrap(), [0u8; 16]);
}

#[test]
fn unknown_export_is_refused_by_go_and_closes_export_name() {
    let config = NbdConfig { export_name: "known".into(), ..NbdConfig::default() };
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), config, "unknown");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    for option in [OPT_INFO, OPT_GO] {
        let (infos, last) = c.info(option, "unknown", &[]);
        assert!(infos.is_empty());
        assert_eq!(last.kind, REP_ERR_UNKNOWN);
    }
    // the session goes on
    assert_eq!(c.go("known").0, 1 << 20);

    let mut d = Client::connect(&socket_of(&h));
    d.hello(FLAG_C_FIXED_NEWSTYLE);
    d.option(OPT_EXPORT_NAME, b"unknown");
    assert!(d.closed(), "NBD_OPT_EXPORT_NAME cannot fail: the server closes");
}

#[test]
fn abort_is_acknowledged_then_closed() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "abort");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_ABORT, b"");
    let r = c.opt_reply();
    assert_eq!((r.option, r.kind, r.data.len()), (OPT_ABORT, REP_ACK, 0));
    assert!(c.closed());
}

#[test]
fn malformed_go_is_invalid() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "badgo");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    // shorter than 6 bytes; name longer than the data; request count not matching
    let mut wrong_count = 0u32.to_be_bytes().to_vec();
    wrong_count.extend_from_slice(&5u16.to_be_bytes());
    wrong_count.extend_from_slice(&INFO_NAME.to_be_bytes());
    for data in [vec![0u8; 3], [&100u32.to_be_bytes()[..], &[0, 0]].concat(), wrong_count] {
        c.option(OPT_GO, &data);
        assert_eq!(c.opt_reply().kind, REP_ERR_INVALID);
    }
    assert_eq!(c.go("").0, 1 << 20);
}

#[test]
fn oversized_option_is_skipped_and_refused_and_a_huge_one_closes() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "bigopt");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    // 100 KiB: more than the server parses, read and dropped, refused; the session goes on
    c.option(OPT_GO, &vec![0x55u8; 100 << 10]);
    let r = c.opt_reply();
    assert_eq!((r.option, r.kind), (OPT_GO, REP_ERR_INVALID));
    assert_eq!(c.go("").0, 1 << 20);

    // 4 GiB announced: the server neither allocates nor reads it; it closes
    let mut d = Client::connect(&socket_of(&h));
    d.hello(FLAG_C_FIXED_NEWSTYLE);
    d.option_header(OPT_GO, u32::MAX);
    assert!(d.closed());
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout_but_an_idle_one_stays() {
    let config = NbdConfig { handshake_timeout: Some(Duration::from_millis(300)), ..NbdConfig::default() };
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), config, "timeout");
    let mut silent = Client::connect(&socket_of(&h));
    silent.greeting();
    let started = Instant::now();
    assert!(silent.closed());
    assert!(started.elapsed() < Duration::from_secs(5));

    // in transmission an idle client is not timed out
    let mut idle = Client::open(&socket_of(&h));
    thread::sleep(Duration::from_millis(700));
    assert_eq!(idle.read(0, 4).unwrap(), [0; 4]);
}

#[test]
fn unknown_client_flags_and_bad_option_magic_close() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "badflags");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE | 1 << 7);
    assert!(c.closed());

    let mut d = Client::connect(&socket_of(&h));
    d.hello(FLAG_C_FIXED_NEWSTYLE);
    d.s.write_all(&[0u8; 16]).unwrap();
    assert!(d.closed());
}

// ---------------------------------------------------------------------------------------------
// transmission

#[test]
fn read_write_flush_zeroes_and_trim_reach_the_device() {
    let probe = Arc::new(Probe::new(1 << 20));
    let (h, _dir) = serve(probe.clone(), NbdConfig::default(), "rw");
    let mut c = Client::open(&socket_of(&h));
    let data = pattern(64 << 10, 1);
    assert_eq!(c.write(0, 4096, &data), 0);
    assert_eq!(c.read(4096, data.len() as u32).unwrap(), data);
    let mut direct = vec![0u8; data.len()];
    probe.mem().read_at(&mut direct, 4096).unwrap();
    assert_eq!(direct, data, "the write reached the device");

    // flush, and FUA writes flush before replying
    assert_eq!(c.command(0, CMD_FLUSH, 0, 0), 0);
    assert_eq!(probe.flushes.load(Ordering::SeqCst), 1);
    assert_eq!(c.write(CMD_FLAG_FUA, 0, b"durable"), 0);
    assert_eq!(probe.flushes.load(Ordering::SeqCst), 2);

    // write zeroes (with and without NO_HOLE and FUA)
    assert_eq!(c.command(0, CMD_WRITE_ZEROES, 8192, 4096), 0);
    assert_eq!(c.command(CMD_FLAG_NO_HOLE | CMD_FLAG_FUA, CMD_WRITE_ZEROES, 16384, 1000), 0);
    assert_eq!(probe.flushes.load(Ordering::SeqCst), 3);
    let back = c.read(4096, data.len() as u32).unwrap();
    assert_eq!(&back[..4096], &data[..4096]);
    assert!(back[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(&back[8192..12288], &data[8192..12288]);
    assert!(back[12288..13288].iter().all(|&b| b == 0));
    assert_eq!(&back[13288..], &data[13288..]);

    // trim is acknowledged and touches nothing
    let writes = probe.writes.load(Ordering::SeqCst);
    assert_eq!(c.command(0, CMD_TRIM, 0, 1 << 20), 0);
    assert_eq!(probe.writes.load(Ordering::SeqCst), writes);

    // zero-length reads and writes succeed
    assert_eq!(c.read(100, 0).unwrap(), b"");
    assert_eq!(c.write(0, 100, b""), 0);
    c.disconnect();
    assert!(c.closed());
}

#[test]
fn out_of_range_requests_are_refused_and_the_connection_goes_on() {
    let size = 1u64 << 20;
    let probe = Arc::new(Probe::new(size as usize));
    let (h, _dir) = serve(probe.clone(), NbdConfig::default(), "range");
    let mut c = Client::open(&socket_of(&h));
    assert_eq!(c.read(size - 512, 1024), Err(EINVAL));
    assert_eq!(c.read(size, 1), Err(EINVAL));
    assert_eq!(c.read(u64::MAX - 10, 100), Err(EINVAL), "offset + length overflows");
    // a refused write's payload is skipped: the next request parses
    assert_eq!(c.write(0, size - 3, &[9u8; 8]), ENOSPC);
    assert_eq!(c.command(0, CMD_WRITE_ZEROES, size, 512), ENOSPC);
    assert_eq!(c.command(0, CMD_TRIM, size - 512, 513), EINVAL);
    assert_eq!(probe.writes.load(Ordering::SeqCst), 0, "nothing refused reached the device");
    let mut tail = [1u8; 3];
    probe.mem().read_at(&mut tail, size - 3).unwrap();
    assert_eq!(tail, [0, 0, 0]);
    // the last byte is in range
    assert_eq!(c.write(0, size - 1, &[7]), 0);
    assert_eq!(c.read(size - 1, 1).unwrap(), [7]);
}

#[test]
fn oversize_lengths_are_refused_without_taking_the_payload() {
    let config = NbdConfig { max_payload: 64 << 10, max_in_flight: 64 << 10, ..NbdConfig::default() };
    let probe = Arc::new(Probe::new(4 << 20));
    let (h, _dir) = serve(probe.clone(), config, "oversize");
    let mut c = Client::open(&socket_of(&h));
    assert_eq!(c.read(0, (64 << 10) + 1), Err(EINVAL));
    assert_eq!(c.write(0, 0, &pattern(128 << 10, 2)), EINVAL);
    assert_eq!(probe.writes.load(Ordering::SeqCst), 0);
    // the maximum itself is fine, and write zeroes (no payload) may exceed it
    assert_eq!(c.write(0, 0, &pattern(64 << 10, 3)), 0);
    assert_eq!(c.read(0, 64 << 10).unwrap(), pattern(64 << 10, 3));
    assert_eq!(c.command(0, CMD_WRITE_ZEROES, 0, 2 << 20), 0);
    assert_eq!(c.read(0, 16).unwrap(), [0u8; 16]);
}

#[test]
fn unknown_commands_and_flags_are_einval() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "unkcmd");
    let mut c = Client::open(&socket_of(&h));
    assert_eq!(c.command(0, 5, 0, 512), EINVAL, "NBD_CMD_CACHE is not offered");
    assert_eq!(c.command(0, 7, 0, 512), EINVAL, "NBD_CMD_BLOCK_STATUS is not offered");
    assert_eq!(c.command(0, 0x4242, 0, 0), EINVAL);
    assert_eq!(c.command(1 << 2, CMD_READ, 0, 512), EINVAL, "NBD_CMD_FLAG_DF without structured replies");
    assert_eq!(c.command(CMD_FLAG_NO_HOLE, CMD_TRIM, 0, 512), EINVAL, "NO_HOLE belongs to write zeroes");
    assert_eq!(c.write(CMD_FLAG_NO_HOLE, 0, b"abc"), EINVAL);
    assert_eq!(c.read(0, 3).unwrap(), [0, 0, 0], "the refused write wrote nothing");
}

#[test]
fn bad_request_magic_closes_the_connection() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "badmagic");
    let mut c = Client::open(&socket_of(&h));
    assert_eq!(c.read(0, 4).unwrap(), [0; 4]);
    let mut bad = [0u8; 28];
    bad[0..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    c.s.write_all(&bad).unwrap();
    assert!(c.closed());
}

#[test]
fn device_errors_are_eio_and_a_full_device_is_enospc() {
    let probe = Arc::new(Probe::new(1 << 20));
    let (h, _dir) = serve(probe.clone(), NbdConfig::default(), "eio");
    let mut c = Client::open(&socket_of(&h));
    probe.fail.store(true, Ordering::SeqCst);
    assert_eq!(c.read(0, 4096), Err(EIO), "no data follows a failed read's reply");
    assert_eq!(c.write(0, 0, &[1u8; 4096]), EIO);
    assert_eq!(c.write(CMD_FLAG_FUA, 0, &[1u8; 4096]), EIO);
    assert_eq!(c.command(0, CMD_FLUSH, 0, 0), EIO);
    assert_eq!(c.command(0, CMD_WRITE_ZEROES, 0, 4096), EIO);
    probe.fail.store(false, Ordering::SeqCst);
    probe.full.store(true, Ordering::SeqCst);
    assert_eq!(c.write(0, 0, &[1u8; 4096]), ENOSPC);
    probe.full.store(false, Ordering::SeqCst);
    assert_eq!(c.read(0, 4).unwrap(), [0; 4], "the connection survives device errors");
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let mem = Arc::new(MemDevice::new(1 << 20));
    mem.write_at(b"kept", 0).unwrap();
    let config = NbdConfig { read_only: true, multi_conn: false, ..NbdConfig::default() };
    let (h, _dir) = serve(mem, config, "ro");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE);
    let (_, flags) = c.go("");
    assert_eq!(flags & FLAG_READ_ONLY, FLAG_READ_ONLY);
    assert_eq!(flags & FLAG_CAN_MULTI_CONN, 0, "multi-conn not advertised when turned off");
    assert_eq!(c.write(0, 0, b"lost"), EPERM);
    assert_eq!(c.command(0, CMD_TRIM, 0, 4), EPERM);
    assert_eq!(c.command(0, CMD_WRITE_ZEROES, 0, 4), EPERM);
    assert_eq!(c.command(0, CMD_FLUSH, 0, 0), 0);
    assert_eq!(c.read(0, 4).unwrap(), b"kept");
}

#[test]
fn a_slow_request_does_not_hold_up_later_ones() {
    let mut probe = Probe::new(1 << 20);
    probe.slow_offset = Some(0);
    probe.slow_delay = Duration::from_millis(400);
    let probe = Arc::new(probe);
    probe.mem().write_at(&pattern(8192, 4), 0).unwrap();
    let (h, _dir) = serve(probe, NbdConfig::default(), "order");
    let mut c = Client::open(&socket_of(&h));
    c.request(0, CMD_READ, 1, 0, 4096);
    c.request(0, CMD_READ, 2, 4096, 4096);
    let (e, first) = c.reply();
    assert_eq!((e, first), (0, 2), "the fast read is answered first");
    assert_eq!(c.bytes(4096), pattern(8192, 4)[4096..]);
    let (e, second) = c.reply();
    assert_eq!((e, second), (0, 1));
    assert_eq!(c.bytes(4096), pattern(8192, 4)[..4096]);
}

/// A structured reply chunk: (flags, type, handle, payload).
fn chunk<S: Read + Write>(c: &mut Client<S>) -> (u16, u16, u64, Vec<u8>) {
    assert_eq!(c.u32(), STRUCTURED_REPLY_MAGIC);
    let flags = c.u16();
    let kind = c.u16();
    let handle = c.u64();
    let len = c.u32() as usize;
    (flags, kind, handle, c.bytes(len))
}

#[test]
fn structured_replies_carry_reads_as_one_data_chunk_and_errors_as_error_chunks() {
    let probe = Arc::new(Probe::new(1 << 20));
    probe.mem().write_at(&pattern(8192, 5), 4096).unwrap();
    let (h, _dir) = serve(probe.clone(), NbdConfig::default(), "structured");
    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    let (_, flags) = c.go("");
    assert_eq!(flags & FLAG_SEND_DF, 0, "no \"don't fragment\" without structured replies");
    drop(c);

    let mut c = Client::connect(&socket_of(&h));
    c.hello(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    c.option(OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(c.opt_reply().kind, REP_ERR_INVALID, "the option takes no data");
    c.option(OPT_STRUCTURED_REPLY, b"");
    let r = c.opt_reply();
    assert_eq!((r.option, r.kind), (OPT_STRUCTURED_REPLY, REP_ACK));
    let (_, flags) = c.go("");
    assert_eq!(flags & FLAG_SEND_DF, FLAG_SEND_DF);

    // a read: one OFFSET_DATA chunk, flagged done, with the offset before the data
    c.request(CMD_FLAG_DF, CMD_READ, 11, 4096, 8192);
    let (flags, kind, handle, payload) = chunk(&mut c);
    assert_eq!((flags, kind, handle), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 11));
    assert_eq!(u64::from_be_bytes(payload[0..8].try_into().unwrap()), 4096);
    assert_eq!(&payload[8..], &pattern(8192, 5)[..]);

    // a zero-length read: a NONE chunk
    c.request(0, CMD_READ, 12, 0, 0);
    assert_eq!(chunk(&mut c), (REPLY_FLAG_DONE, REPLY_TYPE_NONE, 12, vec![]));

    // refused and failed reads: an ERROR chunk with the error and a message
    for (fail, offset, len, error) in [(false, 1 << 20, 512, EINVAL), (true, 0, 512, EIO)] {
        probe.fail.store(fail, Ordering::SeqCst);
        c.request(0, CMD_READ, 13, offset, len);
        let (flags, kind, handle, payload) = chunk(&mut c);
        assert_eq!((flags, kind, handle), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 13));
        assert_eq!(u32::from_be_bytes(payload[0..4].try_into().unwrap()), error);
        let text_len = u16::from_be_bytes([payload[4], payload[5]]) as usize;
        assert_eq!(payload.len(), 6 + text_len);
        assert!(std::str::from_utf8(&payload[6..]).is_ok());
    }
    probe.fail.store(false, Ordering::SeqCst);

    // commands without payload keep simple replies
    assert_eq!(c.write(0, 0, b"simple"), 0);
    assert_eq!(c.command(0, CMD_FLUSH, 0, 0), 0);
    assert_eq!(c.command(CMD_FLAG_DF, CMD_WRITE_ZEROES, 0, 6), EINVAL, "DF belongs to reads");
    c.disconnect();
    assert!(c.closed());
}

/// Eight 64 KiB reads sent at once to a device that takes 100 ms per read: how many reach it
/// at the same time.
fn reads_at_once(workers: usize, max_in_flight: usize) -> usize {
    let mut probe = Probe::new(1 << 20);
    probe.delay = Duration::from_millis(100);
    let probe = Arc::new(probe);
    let config = NbdConfig { workers, max_payload: 64 << 10, max_in_flight, ..NbdConfig::default() };
    let (h, _dir) = serve(probe.clone(), config, "depth");
    let mut c = Client::open(&socket_of(&h));
    for i in 0..8u64 {
        c.request(0, CMD_READ, i, i * (64 << 10), 64 << 10);
    }
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (e, handle) = c.reply();
        assert_eq!(e, 0);
        assert_eq!(c.bytes(64 << 10), vec![0u8; 64 << 10]);
        seen.push(handle);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    probe.max_active.load(Ordering::SeqCst)
}

#[test]
fn workers_give_queue_depth_and_in_flight_bytes_bound_it() {
    assert_eq!(reads_at_once(1, 64 << 20), 1, "one worker: one at a time");
    assert!(reads_at_once(8, 64 << 20) >= 4, "eight workers: several at once");
    // room for two 64 KiB requests (and their per-request charge), not three
    assert_eq!(reads_at_once(8, (128 << 10) + 1024), 2, "the in-flight bytes limit holds");
}

#[test]
fn disconnect_answers_outstanding_requests_first() {
    let mut probe = Probe::new(1 << 20);
    probe.slow_offset = Some(0);
    probe.slow_delay = Duration::from_millis(300);
    let probe = Arc::new(probe);
    probe.mem().write_at(b"last words", 0).unwrap();
    let (h, _dir) = serve(probe, NbdConfig::default(), "disc");
    let mut c = Client::open(&socket_of(&h));
    c.request(0, CMD_READ, 42, 0, 10);
    c.disconnect();
    assert_eq!(c.reply(), (0, 42));
    assert_eq!(c.bytes(10), b"last words");
    assert!(c.closed());
}

#[test]
fn stop_ends_idle_clients_joins_and_removes_the_socket() {
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default(), "stop");
    let path = socket_of(&h);
    let mut idle = Client::open(&path);
    assert_eq!(idle.read(0, 1).unwrap(), [0]);
    let mut handshaking = Client::connect(&path);
    handshaking.greeting();
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.connections() < 2 {
        assert!(Instant::now() < deadline, "two connections counted");
        thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    h.stop();
    assert!(started.elapsed() < Duration::from_secs(3), "stop took {:?}", started.elapsed());
    assert!(idle.closed());
    assert!(handshaking.closed());
    assert!(!path.exists(), "the socket file is removed");
    assert!(UnixStream::connect(&path).is_err());
}

#[test]
fn tcp_on_loopback_and_unix_at_once_with_many_clients() {
    let mem = Arc::new(MemDevice::new(4 << 20));
    let server = NbdServer::new(mem.clone(), NbdConfig::default()).unwrap();
    let tcp = server.listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let dir = scratch("multi");
    let unix = server.listen_unix(&dir.join("nbd.sock")).unwrap();
    let ListenAddr::Tcp(addr) = *tcp.address() else { panic!("tcp address") };
    assert!(tcp.address().uri("").starts_with("nbd://127.0.0.1:"));
    let unix_path = socket_of(&unix);

    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            let unix_path = unix_path.clone();
            thread::spawn(move || {
                let data = pattern(256 << 10, 10 + i);
                let offset = i * (256 << 10);
                if i % 2 == 0 {
                    let s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut c = Client { s };
                    c.hello(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
                    c.go("");
                    assert_eq!(c.write(0, offset, &data), 0);
                    assert_eq!(c.read(offset, data.len() as u32).unwrap(), data);
                    c.disconnect();
                } else {
                    let mut c = Client::open(&unix_path);
                    assert_eq!(c.write(0, offset, &data), 0);
                    assert_eq!(c.read(offset, data.len() as u32).unwrap(), data);
                    c.disconnect();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    for i in 0..8u64 {
        let mut back = vec![0u8; 256 << 10];
        mem.read_at(&mut back, i * (256 << 10)).unwrap();
        assert_eq!(back, pattern(256 << 10, 10 + i));
    }
    tcp.stop();
    unix.stop();
    assert!(TcpStream::connect(addr).is_err(), "the TCP listener is closed");
}

#[test]
fn configurations_breaking_the_rules_are_refused() {
    let dev = || -> Arc<dyn BlockDevice> { Arc::new(MemDevice::new(4096)) };
    let bad = [
        NbdConfig { workers: 0, ..NbdConfig::default() },
        NbdConfig { min_block_size: 3, ..NbdConfig::default() },
        NbdConfig { min_block_size: 1 << 17, ..NbdConfig::default() },
        NbdConfig { max_payload: 1000, ..NbdConfig::default() },
        NbdConfig { max_in_flight: 1 << 20, ..NbdConfig::default() },
        NbdConfig { handshake_timeout: Some(Duration::ZERO), ..NbdConfig::default() },
        NbdConfig { export_name: "a\0b".into(), ..NbdConfig::default() },
        NbdConfig { export_name: "x".repeat(4097), ..NbdConfig::default() },
    ];
    for config in bad {
        assert!(matches!(NbdServer::new(dev(), config.clone()), Err(NbdError::Config(_))), "{config:?}");
    }
    let dir = scratch("inuse");
    let server = NbdServer::new(dev(), NbdConfig::default()).unwrap();
    let h = server.listen_unix(&dir.join("s")).unwrap();
    assert!(matches!(server.listen_unix(&dir.join("s")), Err(NbdError::Io(_))), "the path is taken");
    h.stop();
}

#[test]
fn a_listener_given_by_the_caller_is_served_and_its_socket_file_left() {
    let dir = scratch("given");
    let path = dir.join("given.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = NbdServer::new(Arc::new(MemDevice::new(1 << 20)), NbdConfig::default()).unwrap();
    let h = server.serve_unix(listener).unwrap();
    assert_eq!(h.address(), &ListenAddr::Unix(path.clone()));
    let mut c = Client::open(&path);
    assert_eq!(c.write(0, 0, b"given"), 0);
    assert_eq!(c.read(0, 5).unwrap(), b"given");
    h.stop();
    assert!(c.closed());
    assert!(path.exists(), "the caller's socket file stays");
}

#[test]
fn min_block_size_is_advertised_and_enforced() {
    let config = NbdConfig { min_block_size: 512, ..NbdConfig::default() };
    let (h, _dir) = serve(Arc::new(MemDevice::new(1 << 20)), config, "align");
    let mut c = Client::open(&socket_of(&h));
    assert_eq!(c.read(1, 512), Err(EINVAL));
    assert_eq!(c.write(0, 0, &[1u8; 100]), EINVAL);
    assert_eq!(c.write(0, 512, &[1u8; 512]), 0);
    assert_eq!(c.read(512, 512).unwrap(), vec![1u8; 512]);
}

// ---------------------------------------------------------------------------------------------
// real tools

/// The path of an installed tool, or `None` with a printed reason outside CI. Under `CI=true`
/// a missing tool fails the test: CI installs them (`.ci/run deps`).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        let msg = format!("{name} is not installed (apt-get install {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}: CI must have it");
        eprintln!("skipped: {msg}");
    }
    found
}

/// Runs a tool to completion, killed (by its own PID) after 120 s; panics on failure.
fn run(program: &Path, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} did not finish in 120 s", program.display());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn qemu_img_info_shows_the_size() {
    let Some(qemu_img) = tool("qemu-img", "qemu-utils") else { return };
    let (h, _dir) = serve(Arc::new(MemDevice::new(24 << 20)), NbdConfig::default(), "qinfo");
    let out = run(&qemu_img, &["info", "--output=json", &h.address().uri("")]);
    assert!(out.contains("\"virtual-size\": 25165824"), "{out}");
    let out = run(&qemu_img, &["info", &h.address().uri("")]);
    assert!(out.contains("25165824 bytes"), "{out}");
    // and over TCP on loopback
    let server = NbdServer::new(Arc::new(MemDevice::new(3 << 20)), NbdConfig::default()).unwrap();
    let tcp = server.listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let out = run(&qemu_img, &["info", "--output=json", &tcp.address().uri("")]);
    assert!(out.contains("\"virtual-size\": 3145728"), "{out}");
    tcp.stop();
}

#[test]
fn qemu_img_convert_writes_a_random_image_and_reads_it_back() {
    let Some(qemu_img) = tool("qemu-img", "qemu-utils") else { return };
    let size = 16usize << 20;
    let dir = scratch("qconvert");
    let image = pattern(size, 77);
    std::fs::write(dir.join("in.img"), &image).unwrap();
    let mem = Arc::new(MemDevice::new(size));
    let server = NbdServer::new(mem.clone(), NbdConfig { export_name: "disk".into(), ..NbdConfig::default() }).unwrap();
    let h = server.listen_unix(&dir.join("nbd.sock")).unwrap();
    let uri = h.address().uri("disk");
    let input = dir.join("in.img");
    let output = dir.join("out.img");
    // eight coroutines, writes out of order: several requests in flight on the connection
    run(&qemu_img, &["convert", "-n", "-m", "8", "-W", "-f", "raw", "-O", "raw", input.to_str().unwrap(), &uri]);
    let mut direct = vec![0u8; size];
    mem.read_at(&mut direct, 0).unwrap();
    assert!(direct == image, "the export holds the image");
    run(&qemu_img, &["convert", "-f", "raw", "-O", "raw", &uri, output.to_str().unwrap()]);
    assert!(std::fs::read(&output).unwrap() == image, "the image read back is the image written");
    let compare = run(&qemu_img, &["compare", "-f", "raw", "-F", "raw", input.to_str().unwrap(), &uri]);
    assert!(compare.contains("identical"), "{compare}");
    h.stop();
}

#[test]
fn nbdinfo_reports_size_and_capabilities() {
    let Some(nbdinfo) = tool("nbdinfo", "libnbd-bin") else { return };
    let config =
        NbdConfig { export_name: "vol".into(), description: "remote namespace".into(), ..NbdConfig::default() };
    let (h, _dir) = serve(Arc::new(MemDevice::new(5 << 20)), config, "nbdinfo");
    let uri = h.address().uri("vol");
    assert_eq!(run(&nbdinfo, &["--size", &uri]).trim(), (5u64 << 20).to_string());
    let out = run(&nbdinfo, &[&uri]);
    for line in ["export-size: 5242880", "can_flush: true", "can_fua: true", "can_trim: true", "can_zero: true"] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(out.contains("can_multi_conn: true"), "{out}");
    assert!(out.contains("using structured packets"), "{out}");
    assert!(out.contains("block_size_maximum: 33554432"), "{out}");
    let list = run(&nbdinfo, &["--list", &h.address().uri("")]);
    assert!(list.contains("export=\"vol\"") && list.contains("remote namespace"), "{list}");
}

#[test]
fn nbdcopy_copies_a_file_in_and_out_over_several_connections() {
    let Some(nbdcopy) = tool("nbdcopy", "libnbd-bin") else { return };
    let size = 32usize << 20;
    let dir = scratch("nbdcopy");
    let image = pattern(size, 99);
    let input = dir.join("in.img");
    std::fs::write(&input, &image).unwrap();
    // the export is a file: the path a target's namespace takes
    let backing = FileDevice::create(&dir.join("export.img"), size as u64).unwrap();
    let server = NbdServer::new(Arc::new(backing), NbdConfig::default()).unwrap();
    let handle = server.listen_unix(&dir.join("nbd.sock")).unwrap();
    let uri = handle.address().uri("");
    run(&nbdcopy, &["--connections=4", "--requests=16", "--flush", input.to_str().unwrap(), &uri]);
    assert!(std::fs::read(dir.join("export.img")).unwrap() == image, "the export file holds the image");
    let output = dir.join("out.img");
    run(&nbdcopy, &["--connections=4", &uri, output.to_str().unwrap()]);
    assert!(std::fs::read(&output).unwrap() == image, "the copy out is the image");
    handle.stop();
}
