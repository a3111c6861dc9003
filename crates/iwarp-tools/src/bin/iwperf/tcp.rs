//! The baseline: the same measurements over plain TCP sockets.
//!
//! `tcp_bw`: the client writes `size`-byte messages, one `write` each, as fast as the socket
//! takes them and stops its clock when the last one is taken (as an RDMA completion means
//! "handed to TCP"); the server reads them into one buffer of at least `size` bytes, as much as
//! the socket has per `read` (for large messages the shape of an RDMA Write into a registered
//! buffer, with the kernel's copy the only one; for small ones TCP at its best, many messages
//! per `read`), and acknowledges the last byte. Both ends keep TCP's defaults (Nagle on):
//! the strongest plain-TCP figure for one `write` per message. `tcp_lat`: a `size`-byte ping-pong; the reported
//! figure is half the round trip, as perftest reports write and send latency.
//!
//! `tcp_bw -b`, the baseline of perftest's `-b`: both directions at once on one connection (as
//! perftest's `-b` runs both directions over each queue pair's one connection). Each side
//! writes its messages from one thread while another reads the peer's; each times its own
//! writes as `tcp_bw`'s sender does and reports the sum of its figure and the peer's, as
//! perftest does. Each message starts with a byte that says another follows; after the last,
//! a trailer carries the sender's figures to the peer, so the same stream ends the data and
//! exchanges the results (and `-D` works as for `tcp_bw`).

use crate::report::{BwResult, LatResult};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The highest rate over 20 ms windows of a sender's writes (perftest's peak).
struct PeakMeter {
    peak: f64,
    window_start: Instant,
    window_bytes: u64,
}

impl PeakMeter {
    fn new(start: Instant) -> Self {
        PeakMeter { peak: 0.0, window_start: start, window_bytes: 0 }
    }

    /// Counts `bytes` written by `now`, closing the window once 20 ms have passed.
    fn add(&mut self, bytes: usize, now: Instant) {
        self.window_bytes += bytes as u64;
        let w = now.duration_since(self.window_start);
        if w >= Duration::from_millis(20) {
            self.peak = self.peak.max(self.window_bytes as f64 / w.as_secs_f64());
            self.window_start = now;
            self.window_bytes = 0;
        }
    }
}

/// How the latency test waits for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Spin on a non-blocking socket.
    BusyPoll,
    /// Sleep in the kernel (blocking reads).
    Block,
}

fn setup(s: &TcpStream) -> io::Result<()> {
    s.set_nodelay(true)
}

/// Reads exactly `buf.len()` bytes, spinning when `spin`.
fn read_exact(s: &mut TcpStream, buf: &mut [u8], spin: bool) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if spin && e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all(s: &mut TcpStream, buf: &[u8], spin: bool) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match s.write(&buf[at..]) {
            Ok(n) => at += n,
            Err(e) if spin && e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The message count and an optional duration bound.
#[derive(Debug, Clone, Copy)]
pub struct Amount {
    /// Messages (upper bound when `duration` is set).
    pub iters: u64,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Bandwidth test, sending side.
pub fn bw_client(mut s: TcpStream, size: usize, amount: Amount) -> io::Result<BwResult> {
    let buf = vec![0x5a_u8; size];
    // Tell the server the size and count: it needs both to read whole messages.
    let iters = if amount.duration.is_some() { u64::MAX } else { amount.iters };
    let start = Instant::now();
    let deadline = amount.duration.map(|d| start + d);
    let mut sent = 0u64;
    let mut hdr = [0u8; 16];
    hdr[..8].copy_from_slice(&(size as u64).to_be_bytes());
    hdr[8..].copy_from_slice(&iters.to_be_bytes());
    s.write_all(&hdr)?;
    let mut peak = PeakMeter::new(start);
    while sent < iters {
        write_all(&mut s, &buf, false)?;
        sent += 1;
        let now = Instant::now();
        peak.add(size, now);
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
    }
    // Like an RDMA completion, a message counts once the socket has taken it; the data still
    // in flight is at most the socket buffers, negligible against the run.
    let elapsed = start.elapsed();
    if iters == u64::MAX {
        // Duration mode: the end of the stream says "no more".
        s.shutdown(std::net::Shutdown::Write)?;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    Ok(BwResult::new(size, sent, elapsed, peak.peak))
}

/// Bandwidth test, receiving side: one connection.
pub fn bw_server(mut s: TcpStream) -> io::Result<BwResult> {
    let (size, iters, bidir) = read_header(&mut s)?;
    if bidir {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client runs tcp_bw -b: give the server -b too (both sides or neither)",
        ));
    }
    let mut buf = vec![0u8; size.max(BULK_READ)];
    let total = iters.saturating_mul(size as u64);
    let start = Instant::now();
    let mut got = 0u64;
    while got < total {
        // Never past the last message: the acknowledgement follows it.
        let want = (total - got).min(buf.len() as u64) as usize;
        match s.read(&mut buf[..want]) {
            Ok(0) if iters == u64::MAX => break,
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    s.write_all(&[1])?;
    Ok(BwResult::new(size, got / size as u64, start.elapsed(), 0.0))
}

/// Smallest read buffer of the bandwidth server: small messages are read many at a time.
const BULK_READ: usize = 256 << 10;

/// The bandwidth header's mark of a bidirectional run: the top bit of the size field.
const BIDIR: u64 = 1 << 63;
/// `tcp_bw -b`: the first byte of every message (another message follows) ...
const MORE: u8 = 1;
/// ... and of the trailer after the last one (the sender's count, seconds and peak follow).
const END: u8 = 0;
/// Trailer bytes after [`END`]: messages (u64), seconds and peak bytes per second (f64 bits),
/// big-endian.
const TRAILER: usize = 24;

/// The bandwidth header: (message size, count, bidirectional).
fn read_header(s: &mut TcpStream) -> io::Result<(usize, u64, bool)> {
    let mut hdr = [0u8; 16];
    s.read_exact(&mut hdr)?;
    let raw = u64::from_be_bytes(hdr[..8].try_into().expect("8 bytes"));
    let (size, bidir) = ((raw & !BIDIR) as usize, raw & BIDIR != 0);
    let iters = u64::from_be_bytes(hdr[8..].try_into().expect("8 bytes"));
    if size == 0 || size > (1 << 30) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad message size"));
    }
    Ok((size, iters, bidir))
}

fn header(size: usize, iters: u64, bidir: bool) -> [u8; 16] {
    let mut hdr = [0u8; 16];
    let raw = size as u64 | if bidir { BIDIR } else { 0 };
    hdr[..8].copy_from_slice(&raw.to_be_bytes());
    hdr[8..].copy_from_slice(&iters.to_be_bytes());
    hdr
}

/// A bidirectional run's figures: this side's writes and the peer's (from its trailer).
#[derive(Debug, Clone, Copy)]
pub struct Bidir {
    /// What this side wrote, timed as `tcp_bw`'s sender.
    pub mine: BwResult,
    /// What the peer wrote, as it timed it.
    pub peer: BwResult,
}

/// `tcp_bw -b`, the connecting side: proposes the size and count, then both directions.
pub fn bw_bidir_client(mut s: TcpStream, size: usize, amount: Amount) -> io::Result<Bidir> {
    let iters = if amount.duration.is_some() { u64::MAX } else { amount.iters };
    let hdr = header(size, iters, true);
    s.write_all(&hdr)?;
    // The server echoes the header: it runs -b too and both directions may start.
    let mut echo = [0u8; 16];
    s.read_exact(&mut echo)
        .map_err(|e| io::Error::new(e.kind(), format!("{e} (does the server run tcp_bw -b? both sides need -b)")))?;
    if echo != hdr {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the server did not accept the bidirectional run"));
    }
    both_ways(s, size, iters, amount.duration)
}

/// `tcp_bw -b`, the accepting side: takes the client's size and count, then both directions.
pub fn bw_bidir_server(mut s: TcpStream) -> io::Result<Bidir> {
    let (size, iters, bidir) = read_header(&mut s)?;
    if !bidir {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client runs tcp_bw without -b: give both sides -b or neither",
        ));
    }
    s.write_all(&header(size, iters, true))?;
    // A count of u64::MAX is a timed run: the client's clock decides, and this side stops
    // writing once the client's trailer has arrived.
    both_ways(s, size, iters, None)
}

fn both_ways(s: TcpStream, size: usize, iters: u64, duration: Option<Duration>) -> io::Result<Bidir> {
    let w = s.try_clone()?;
    let peer_done = AtomicBool::new(false);
    // Only the side without a clock of its own (a timed run's server) follows the peer.
    let follow = iters == u64::MAX && duration.is_none();
    std::thread::scope(|sc| {
        let done = &peer_done;
        let writer = sc.spawn(move || write_side(w, size, iters, duration, follow.then_some(done)));
        let peer = read_side(&s, size);
        peer_done.store(true, Ordering::Relaxed);
        if peer.is_err() {
            // Whatever went wrong, the writer must not block on a peer that stopped reading.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let mine = writer.join().map_err(|_| io::Error::other("writer thread panicked"))?;
        // Everything the peer sent has been read (its trailer comes last), and our trailer is
        // written: the close is a FIN, never a reset.
        Ok(Bidir { mine: mine?, peer: peer? })
    })
}

/// Writes the messages (each led by [`MORE`]), then [`END`] and this side's figures; stops
/// early at the deadline, or once `peer_done` is set.
fn write_side(
    mut s: TcpStream,
    size: usize,
    iters: u64,
    duration: Option<Duration>,
    peer_done: Option<&AtomicBool>,
) -> io::Result<BwResult> {
    let mut buf = vec![0x5a_u8; size];
    buf[0] = MORE;
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let (mut sent, mut peak) = (0u64, PeakMeter::new(start));
    while sent < iters {
        write_all(&mut s, &buf, false)?;
        sent += 1;
        let now = Instant::now();
        peak.add(size, now);
        if deadline.is_some_and(|d| now >= d) || peer_done.is_some_and(|d| d.load(Ordering::Relaxed)) {
            break;
        }
    }
    let r = BwResult::new(size, sent, start.elapsed(), peak.peak);
    let mut t = [0u8; 1 + TRAILER];
    t[0] = END;
    t[1..9].copy_from_slice(&r.iters.to_be_bytes());
    t[9..17].copy_from_slice(&r.seconds.to_bits().to_be_bytes());
    t[17..25].copy_from_slice(&r.peak_bytes_per_s.to_bits().to_be_bytes());
    s.write_all(&t)?;
    Ok(r)
}

/// Reads the peer's messages up to its trailer (the last bytes it sends); returns its figures.
fn read_side(mut s: &TcpStream, size: usize) -> io::Result<BwResult> {
    let mut buf = vec![0u8; size.max(BULK_READ)];
    // Bytes of the current message still to come (0: the next byte starts one, or the trailer).
    let mut rest = 0usize;
    let mut trailer: Option<Vec<u8>> = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut p = 0;
        while p < n {
            if let Some(t) = trailer.as_mut() {
                let k = (TRAILER - t.len()).min(n - p);
                t.extend_from_slice(&buf[p..p + k]);
                p += k;
                if t.len() == TRAILER {
                    let u = |i: usize| u64::from_be_bytes(t[i..i + 8].try_into().expect("8 bytes"));
                    if p < n {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "data after the peer's trailer"));
                    }
                    let seconds = f64::from_bits(u(8));
                    return Ok(BwResult { size, iters: u(0), seconds, peak_bytes_per_s: f64::from_bits(u(16)) });
                }
            } else if rest > 0 {
                let k = rest.min(n - p);
                rest -= k;
                p += k;
            } else {
                match buf[p] {
                    MORE => rest = size,
                    END => {
                        trailer = Some(Vec::with_capacity(TRAILER));
                        p += 1;
                    }
                    b => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad message mark {b:#04x}"))),
                }
            }
        }
    }
}

/// Latency test, the side that starts each round trip.
pub fn lat_client(mut s: TcpStream, size: usize, amount: Amount, wait: Wait) -> io::Result<LatResult> {
    setup(&s)?;
    let mut hdr = [0u8; 16];
    hdr[..8].copy_from_slice(&(size as u64).to_be_bytes());
    let iters = if amount.duration.is_some() { u64::MAX } else { amount.iters };
    hdr[8..].copy_from_slice(&iters.to_be_bytes());
    s.write_all(&hdr)?;
    let spin = wait == Wait::BusyPoll;
    s.set_nonblocking(spin)?;
    let out = vec![0x5a_u8; size];
    let mut inb = vec![0u8; size];
    let mut stamps = Vec::with_capacity(amount.iters.min(10_000_000) as usize);
    // The same clock as the RDMA latency tests (a time-stamp counter where there is one).
    let clock = quanta::Clock::new();
    let start = Instant::now();
    let deadline = amount.duration.map(|d| start + d);
    let mut n = 0u64;
    while n < iters {
        let t = clock.raw();
        write_all(&mut s, &out, spin)?;
        read_exact(&mut s, &mut inb, spin)?;
        stamps.push((t, clock.raw()));
        n += 1;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    s.set_nonblocking(false)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let samples: Vec<Duration> = stamps.iter().map(|&(a, b)| clock.delta(a, b)).collect();
    Ok(LatResult::from_round_trips(size, &samples, true))
}

/// Latency test, the echoing side.
pub fn lat_server(mut s: TcpStream, wait: Wait) -> io::Result<()> {
    setup(&s)?;
    let mut hdr = [0u8; 16];
    s.read_exact(&mut hdr)?;
    let size = u64::from_be_bytes(hdr[..8].try_into().expect("8 bytes")) as usize;
    if size == 0 || size > (1 << 30) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad message size"));
    }
    let spin = wait == Wait::BusyPoll;
    s.set_nonblocking(spin)?;
    let mut buf = vec![0u8; size];
    loop {
        match read_exact(&mut s, &mut buf, spin) {
            Ok(()) => write_all(&mut s, &buf, spin)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Accepts one connection.
pub fn accept_one(l: &TcpListener) -> io::Result<TcpStream> {
    l.accept().map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[test]
    fn bidirectional_runs_carry_both_directions_and_each_sides_figures() {
        for size in [1usize, 3, 65536, 300_000] {
            let (l, addr) = pair();
            let server = std::thread::spawn(move || accept_one(&l).and_then(bw_bidir_server));
            let amount = Amount { iters: 50, duration: None };
            let c = bw_bidir_client(TcpStream::connect(addr).unwrap(), size, amount).unwrap();
            let s = server.join().unwrap().unwrap();
            assert_eq!((c.mine.size, c.mine.iters, c.peer.size, c.peer.iters), (size, 50, size, 50));
            // Each side's own figures reach the other unchanged.
            assert_eq!((s.peer.iters, s.peer.seconds), (c.mine.iters, c.mine.seconds));
            assert_eq!((c.peer.iters, c.peer.seconds), (s.mine.iters, s.mine.seconds));
        }
    }

    #[test]
    fn a_timed_bidirectional_run_ends_on_the_clients_clock() {
        let (l, addr) = pair();
        let server = std::thread::spawn(move || accept_one(&l).and_then(bw_bidir_server));
        let amount = Amount { iters: 0, duration: Some(Duration::from_millis(200)) };
        let c = bw_bidir_client(TcpStream::connect(addr).unwrap(), 4096, amount).unwrap();
        let s = server.join().unwrap().unwrap();
        assert!(c.mine.iters > 0 && s.mine.iters > 0);
        assert_eq!(c.peer.iters, s.mine.iters);
    }

    #[test]
    fn both_sides_need_the_same_mode() {
        let (l, addr) = pair();
        let server = std::thread::spawn(move || accept_one(&l).and_then(bw_server));
        let amount = Amount { iters: 5, duration: None };
        assert!(bw_bidir_client(TcpStream::connect(addr).unwrap(), 64, amount).is_err());
        assert!(server.join().unwrap().unwrap_err().to_string().contains("-b"));
        let (l, addr) = pair();
        let server = std::thread::spawn(move || accept_one(&l).and_then(bw_bidir_server));
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&header(64, 5, false)).unwrap();
        assert!(server.join().unwrap().unwrap_err().to_string().contains("-b"));
    }
}
