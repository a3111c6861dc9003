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

use crate::report::{BwResult, LatResult};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

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
    let mut peak = 0.0f64;
    let mut window_start = start;
    let mut window_bytes = 0u64;
    while sent < iters {
        write_all(&mut s, &buf, false)?;
        sent += 1;
        window_bytes += size as u64;
        let now = Instant::now();
        let w = now.duration_since(window_start);
        if w >= Duration::from_millis(20) {
            peak = peak.max(window_bytes as f64 / w.as_secs_f64());
            window_start = now;
            window_bytes = 0;
        }
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
    Ok(BwResult::new(size, sent, elapsed, peak))
}

/// Bandwidth test, receiving side: one connection.
pub fn bw_server(mut s: TcpStream) -> io::Result<BwResult> {
    let mut hdr = [0u8; 16];
    s.read_exact(&mut hdr)?;
    let size = u64::from_be_bytes(hdr[..8].try_into().expect("8 bytes")) as usize;
    let iters = u64::from_be_bytes(hdr[8..].try_into().expect("8 bytes"));
    if size == 0 || size > (1 << 30) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad message size"));
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
