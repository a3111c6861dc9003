//! System calls the standard library does not offer: socket reads and vectored I/O on raw
//! address ranges (without glibc's cancellation wrappers), an eventfd for pollable
//! notifications, `poll(2)` and raising the descriptor limit. The only module of this crate
//! with `unsafe`.
#![allow(unsafe_code)]

use iwarp_proto::qp::{IoRange, Qp, RecvPlan, TransportEvent, LOOKAHEAD, SEND_CALL_MAX};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
#[cfg(feature = "tokio")]
use std::sync::Arc;
use std::time::Duration;

/// Largest iovec count the kernel takes in one call.
pub const IOV_MAX: usize = 1024;

/// The iovecs of a `readv`: the engine's ranges, then `extra` (the scratch buffer) if not empty.
fn iovecs(ranges: &[IoRange], extra: &mut [u8]) -> smallvec::SmallVec<[libc::iovec; 8]> {
    let mut v: smallvec::SmallVec<[libc::iovec; 8]> = ranges
        .iter()
        .take(IOV_MAX - 1)
        .map(|r| libc::iovec { iov_base: r.addr() as *mut libc::c_void, iov_len: r.len() })
        .collect();
    if !extra.is_empty() {
        v.push(libc::iovec { iov_base: extra.as_mut_ptr().cast(), iov_len: extra.len() });
    }
    v
}

/// What a non-blocking transfer did. `WouldBlock` is its own case rather than an
/// [`io::Error`]: a busy-polling application meets it on almost every turn, and building,
/// classifying and dropping an error each time costs more than the rest of the turn's user
/// space.
#[derive(Debug)]
pub enum Xfer {
    /// This many bytes moved (0 on a read: the peer closed its side).
    Bytes(usize),
    /// The socket had nothing to read, or no room to write.
    WouldBlock,
    /// Any other failure.
    Failed(io::Error),
}

/// Runs `call` (one system call) again while it is interrupted (`EINTR`), and turns its
/// result into [`Xfer`].
fn retrying(mut call: impl FnMut() -> libc::c_long) -> Xfer {
    loop {
        let r = call();
        if r >= 0 {
            return Xfer::Bytes(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => return Xfer::WouldBlock,
            _ => return Xfer::Failed(e),
        }
    }
}

// The transfers below enter the kernel through `syscall(2)` rather than glibc's `write`,
// `recv` and `readv` wrappers: those are thread-cancellation points, and switching
// asynchronous cancellation on and off around every call costs about 30 instructions a call,
// for a feature Rust programs do not use. The kernel's calls and results are the same. Every
// argument is passed as a machine word (`c_long`), as `syscall(2)` reads them.

/// `send(2)` of `len` bytes at address `addr`, with `MSG_NOSIGNAL`: a connection the peer
/// reset gives `EPIPE` instead of raising `SIGPIPE`, so the stack needs no process-wide
/// signal disposition.
///
/// # Safety
/// `addr..addr + len` must be readable memory that stays valid for the call.
unsafe fn write_at(fd: RawFd, addr: usize, len: usize) -> Xfer {
    use libc::c_long as W;
    // SAFETY: the caller guarantees the range; the kernel only reads it. sendto(2) without an
    // address is send(2).
    retrying(|| unsafe {
        libc::syscall(libc::SYS_sendto, fd as W, addr as W, len as W, libc::MSG_NOSIGNAL as W, 0 as W, 0 as W)
    })
}

/// `sendmsg(2)` of engine-provided ranges with `MSG_NOSIGNAL` (the gathering `writev` with
/// send flags; one range: `send`, whose kernel path is shorter).
///
/// # Safety
/// Every range must come from [`iwarp_proto::qp::Qp::poll_transmit`] of a queue pair that has
/// not yet been told, by [`iwarp_proto::qp::Qp::handle_sent`], that those bytes were sent:
/// the engine keeps such ranges readable (its transmit arena, or registered regions it holds
/// and has pinned, so that no deregistration completes) until then. Callers hold the queue
/// pair's transmit state across this call and the report.
unsafe fn writev(fd: RawFd, ranges: &[IoRange]) -> Xfer {
    // `IoRange` has the layout of `struct iovec` (asserted where it is defined; its size and
    // alignment again here), so the engine's ranges go to the kernel without a copy.
    const _: () = assert!(
        std::mem::size_of::<IoRange>() == std::mem::size_of::<libc::iovec>()
            && std::mem::align_of::<IoRange>() == std::mem::align_of::<libc::iovec>()
    );
    use libc::c_long as W;
    if let [one] = ranges {
        // SAFETY: the caller guarantees the range is readable for the call.
        return unsafe { write_at(fd, one.addr(), one.len()) };
    }
    let n = ranges.len().min(IOV_MAX);
    // SAFETY: msghdr is plain data; all-zero is a valid value (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The kernel reads the vector, never writes it: the `*mut` is only the C type's spelling.
    msg.msg_iov = ranges.as_ptr().cast::<libc::iovec>().cast_mut();
    msg.msg_iovlen = n as _;
    let flags = libc::MSG_NOSIGNAL;
    // SAFETY: the cast is layout-compatible (asserted above). `msg` lives across the call and
    // names at most `n` ranges, each readable for the call (the caller's contract); the kernel
    // only reads them.
    retrying(|| unsafe { libc::syscall(libc::SYS_sendmsg, fd as W, &msg as *const libc::msghdr as W, flags as W) })
}

/// `send` of `buf` (bytes the caller framed and owns) to the socket `fd` (no `SIGPIPE`).
pub fn write(fd: RawFd, buf: &[u8]) -> Xfer {
    // SAFETY: `buf` is a live buffer for the call.
    unsafe { write_at(fd, buf.as_ptr() as usize, buf.len()) }
}

/// `send` of `buf` with `MSG_EOR`: the kernel starts whatever is sent next in a new segment
/// (MPA frames ahead of segment-aligned FPDUs).
pub fn write_marked(fd: RawFd, buf: &[u8]) -> Xfer {
    use libc::c_long as W;
    let (ptr, len) = (buf.as_ptr() as W, buf.len() as W);
    let flags = (libc::MSG_NOSIGNAL | libc::MSG_EOR) as W;
    // SAFETY: `buf` is a live buffer for the call; the kernel only reads it.
    retrying(|| unsafe { libc::syscall(libc::SYS_sendto, fd as W, ptr, len, flags, 0 as W, 0 as W) })
}

/// A non-blocking read of the socket `fd` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Xfer {
    use libc::c_long as W;
    let (ptr, len) = (buf.as_mut_ptr() as W, buf.len() as W);
    // SAFETY: `buf` is a live mutable buffer; the kernel writes at most its length.
    // recvfrom(2) without an address is recv(2).
    retrying(|| unsafe {
        libc::syscall(libc::SYS_recvfrom, fd as W, ptr, len, libc::MSG_DONTWAIT as W, 0 as W, 0 as W)
    })
}

/// `readv` into engine-validated destination ranges, then into `scratch`. Returns the total
/// bytes read (the first `sum(ranges)` of them went to the ranges).
///
/// # Safety
/// Every range must come from the [`iwarp_proto::qp::RecvPlan::Direct`] the queue pair's
/// [`iwarp_proto::qp::Qp::poll_recv_plan`] returned last, and the caller must report what
/// was read with [`iwarp_proto::qp::Qp::handle_placed`] before the engine is used otherwise:
/// such ranges are validated windows of registered regions the engine holds, pinned (no
/// deregistration completes, so their owner cannot have freed them), until then. The
/// bytes the kernel writes there are registered memory, which Rust code only accesses under
/// the region's access lock (see the crate docs' memory model).
unsafe fn readv(fd: RawFd, ranges: &[IoRange], scratch: &mut [u8]) -> Xfer {
    use libc::c_long as W;
    let iov = iovecs(ranges, scratch);
    // SAFETY: the ranges are validated placement windows inside live regions (the caller's
    // contract) and `scratch` is a live mutable buffer; the kernel writes at most their lengths.
    retrying(|| unsafe { libc::syscall(libc::SYS_readv, fd as W, iov.as_ptr() as W, iov.len() as W) })
}

/// Hands `ranges` to the socket as the send calls `calls` plan (`(length, end)`, see
/// [`Qp::transmit_calls`]): one `sendmsg` each, with `MSG_EOR` where a call ends its
/// segment grid, so that the kernel starts the next call in a new segment. Stops at the
/// first call taken in part (its rest must join it before anything else is sent).
///
/// TCP keeps the calls' segments on the grid as long as it cuts segments only where the MSS
/// says; it cuts elsewhere at the edge of a receive window that is not a multiple of the MSS
/// (seen at the start of a connection) and when SACK options shrink the MSS, and the rest of
/// that call is then off the grid (see `docs/deviations.md`).
///
/// # Safety
/// As [`writev`]: the ranges come from the engine's `poll_transmit`, not yet reported.
unsafe fn send_calls(fd: RawFd, ranges: &[IoRange], calls: &[(usize, bool)]) -> Sent {
    use libc::c_long as W;
    let mut iov: smallvec::SmallVec<[libc::iovec; 16]> = smallvec::SmallVec::new();
    let (mut ri, mut roff) = (0usize, 0usize);
    let mut calls = calls.iter();
    run_calls(|| {
        let &(len, end) = calls.next()?;
        iov.clear();
        let mut need = len;
        while need > 0 && ri < ranges.len() {
            let r = &ranges[ri];
            let take = (r.len() - roff).min(need);
            iov.push(libc::iovec { iov_base: (r.addr() + roff) as *mut libc::c_void, iov_len: take });
            (need, roff) = (need - take, roff + take);
            if roff == r.len() {
                (ri, roff) = (ri + 1, 0);
            }
        }
        let want = len - need;
        if want == 0 {
            return None;
        }
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        let flags = libc::MSG_NOSIGNAL | if end && need == 0 { libc::MSG_EOR } else { 0 };
        // SAFETY: every iovec lies inside one of `ranges` (readable for the call, the
        // caller's contract); `msg` and `iov` live across the call; the kernel only reads.
        let x = retrying(|| unsafe {
            libc::syscall(libc::SYS_sendmsg, fd as W, &msg as *const libc::msghdr as W, flags as W)
        });
        Some((x, want))
    })
}

/// What a run of send calls did: the bytes the socket took, and the failure that ended the
/// run, if one did.
#[derive(Debug)]
struct Sent {
    bytes: usize,
    failed: Option<io::Error>,
}

/// Makes send calls with `call` (what one did and how many bytes it offered; `None`: none
/// left) until one is taken in part, would block or fails. A failure is kept even after
/// bytes went out: the kernel reports a connection's error (the `ECONNRESET` of a reset)
/// to one call only, and if this run dropped it the next read would find a plain end of
/// stream, a reset taken for a close.
fn run_calls(mut call: impl FnMut() -> Option<(Xfer, usize)>) -> Sent {
    let mut bytes = 0;
    while let Some((x, want)) = call() {
        match x {
            Xfer::Bytes(w) => {
                bytes += w;
                if w < want {
                    break;
                }
            }
            Xfer::WouldBlock => break,
            Xfer::Failed(e) => return Sent { bytes, failed: Some(e) },
        }
    }
    Sent { bytes, failed: None }
}

/// One `writev` of what `engine` has framed (at most `IOV_MAX - 1` ranges), reported back to
/// it; when that is more than [`SEND_CALL_MAX`] bytes, or the engine aligns FPDUs to
/// segments, the send calls it plans instead. Returns what the calls did and how many bytes
/// were offered (0: nothing to send, no call made); a call that failed after others went out
/// returns its failure (what went out is reported to the engine as sent).
pub(crate) fn write_framed(
    fd: RawFd,
    engine: &mut Qp,
    iov: &mut Vec<IoRange>,
    calls: &mut Vec<(usize, bool)>,
) -> (Xfer, usize) {
    let n = engine.poll_transmit(iov, IOV_MAX - 1);
    if n == 0 {
        return (Xfer::Bytes(0), 0);
    }
    let (sent, x) = if engine.is_aligned() || n > SEND_CALL_MAX {
        engine.transmit_calls(n, calls);
        // SAFETY: the ranges were just returned by this engine's poll_transmit, and the
        // engine is not used (but to plan the calls) until the result is reported below.
        match unsafe { send_calls(fd, iov, calls) } {
            // The calls before a failure went out; the failure is what the caller must see.
            Sent { bytes, failed: Some(e) } => (bytes, Xfer::Failed(e)),
            Sent { bytes: 0, failed: None } => (0, Xfer::WouldBlock),
            Sent { bytes, failed: None } => (bytes, Xfer::Bytes(bytes)),
        }
    } else {
        // SAFETY: the ranges were just returned by this engine's poll_transmit, and the engine
        // cannot be used until the result is reported below.
        match unsafe { writev(fd, iov) } {
            Xfer::Bytes(w) => (w, Xfer::Bytes(w)),
            other => (0, other),
        }
    };
    // Every outcome is reported: the report also unpins the regions the ranges lie in.
    engine.handle_sent(sent);
    (x, n)
}

/// Reads what the socket `fd` has into `engine`, following its receive plans, until the
/// socket is empty or `budget` bytes have been read; returns `true` in the second case (input
/// remains). `scratch` takes header and copied bytes (`scratch_max` per read, plus the
/// engine's [`LOOKAHEAD`] after directly placed payload).
///
/// It stops at the first short read (the socket was empty at that moment), which saves the
/// system call that would only return `EAGAIN`: an application polling a queue pair polls
/// again anyway, and for the event loop Linux signals every later arrival on an
/// edge-triggered registration, so nothing is left unread. Except the end of stream: a FIN
/// that arrived with the last bytes (before the read) gets no edge of its own, so once the
/// event loop has seen the peer's end (`to_eof`), reads go on until it is read.
pub(crate) fn receive(
    fd: RawFd,
    engine: &mut Qp,
    scratch: &mut [u8],
    scratch_max: usize,
    budget: usize,
    to_eof: bool,
) -> bool {
    let mut budget = budget;
    loop {
        let r = match engine.poll_recv_plan() {
            // A Send waits for a receive: the stream stays unread (posting one resumes it).
            RecvPlan::Stop | RecvPlan::Wait => return false,
            RecvPlan::Scratch { max } => {
                let max = max.min(scratch_max).min(scratch.len());
                match read(fd, &mut scratch[..max]) {
                    Xfer::Bytes(0) => {
                        engine.handle_transport(TransportEvent::Eof);
                        return false;
                    }
                    Xfer::Bytes(n) => {
                        engine.handle_recv(&scratch[..n]);
                        if n < max && !to_eof {
                            return false;
                        }
                        n
                    }
                    Xfer::WouldBlock => return false,
                    Xfer::Failed(e) => {
                        tracing::debug!(error = %e, "socket read failed");
                        engine.handle_transport(TransportEvent::Failed);
                        return false;
                    }
                }
            }
            RecvPlan::Direct { ranges, len } => {
                let la = LOOKAHEAD.min(scratch.len());
                // SAFETY: the ranges are the plan this engine just returned, and what was read
                // is reported to it (handle_placed) before anything else uses it.
                let x = unsafe { readv(fd, &ranges, &mut scratch[..la]) };
                // Every outcome is reported: the report also unpins the regions read into.
                engine.handle_placed(match x {
                    Xfer::Bytes(n) => n.min(len),
                    Xfer::WouldBlock | Xfer::Failed(_) => 0,
                });
                match x {
                    Xfer::Bytes(0) => {
                        engine.handle_transport(TransportEvent::Eof);
                        return false;
                    }
                    Xfer::Bytes(n) => {
                        if n > len {
                            engine.handle_recv(&scratch[..n - len]);
                        }
                        if n < len + la && !to_eof {
                            return false;
                        }
                        n
                    }
                    Xfer::WouldBlock => return false,
                    Xfer::Failed(e) => {
                        tracing::debug!(error = %e, "socket read failed");
                        engine.handle_transport(TransportEvent::Failed);
                        return false;
                    }
                }
            }
        };
        budget = budget.saturating_sub(r);
        if budget == 0 {
            return true;
        }
    }
}

/// A non-blocking `eventfd`: a counter other threads bump to wake a poller, and whose
/// descriptor applications can put in their own epoll.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new counter at zero.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor this process owns.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds one, making the descriptor readable.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) already signals.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter; returns `true` if it was signalled.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        r == 8
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for EventFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Registers an eventfd with the current tokio runtime's reactor, for readability.
///
/// # Errors
/// If there is no runtime, or the registration fails (the descriptor is registered already).
///
/// # Panics
/// If the current runtime was built without I/O (tokio panics).
#[cfg(feature = "tokio")]
pub fn async_eventfd(fd: Arc<EventFd>) -> io::Result<tokio::io::unix::AsyncFd<Arc<EventFd>>> {
    tokio::runtime::Handle::try_current().map_err(|e| io::Error::other(e.to_string()))?;
    // SAFETY: the descriptor is the `OwnedFd` inside the `EventFd`, which stays open while any
    // clone of the `Arc` lives, and the `AsyncFd` owns one for its whole life; an `EventFd`
    // never replaces its descriptor, so `as_raw_fd` always returns the same one.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Waits until one of `fds` is readable (or has an error), or `timeout` passes.
pub fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<usize> {
    let pfds: Vec<(RawFd, bool)> = fds.iter().map(|&fd| (fd, false)).collect();
    poll_fds(&pfds, timeout)
}

/// Waits until one of `fds` is readable, or writable where its flag asks for that too (or has
/// an error), or `timeout` passes.
pub fn poll_fds(fds: &[(RawFd, bool)], timeout: Option<Duration>) -> io::Result<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, write)| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP | if write { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: pfds is a live array of the given length.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Raises the limit on open descriptors as far as allowed: the hard limit too when the process
/// may (up to 2^20), else the soft limit to the hard one. 10,000 connections need 10,000
/// descriptors per process. Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into a live struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // A privileged process may raise the hard limit too (up to the kernel's nr_open).
    let want: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(rl.rlim_max)
        .min(1 << 20);
    if want > rl.rlim_max {
        let raised = libc::rlimit { rlim_cur: want, rlim_max: want };
        // SAFETY: setrlimit reads a live struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(want);
        }
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: setrlimit reads a live struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(rl.rlim_cur)
}

/// Resident set size of this process in bytes (from /proc/self/statm).
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct; zeroed is a valid rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    // SAFETY: initialised by zeroed() and getrusage.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`run_calls`] over scripted call results, each offering 100 bytes.
    fn script(results: Vec<Xfer>) -> (Sent, usize) {
        let mut results = results.into_iter();
        let mut made = 0;
        let sent = run_calls(|| {
            let x = results.next()?;
            made += 1;
            Some((x, 100))
        });
        (sent, made)
    }

    #[test]
    fn a_failure_after_calls_went_out_is_kept_with_their_bytes() {
        let reset = || Xfer::Failed(io::Error::from_raw_os_error(libc::ECONNRESET));
        let (sent, made) = script(vec![Xfer::Bytes(100), reset(), Xfer::Bytes(100)]);
        assert_eq!((sent.bytes, made), (100, 2), "{sent:?}");
        assert_eq!(sent.failed.and_then(|e| e.raw_os_error()), Some(libc::ECONNRESET));
        // A failure on the first call: no bytes, the failure.
        let (sent, made) = script(vec![reset(), Xfer::Bytes(100)]);
        assert_eq!((sent.bytes, made), (0, 1));
        assert!(sent.failed.is_some());
    }

    #[test]
    fn calls_stop_at_a_short_call_or_a_full_socket_without_failing() {
        let (sent, made) = script(vec![Xfer::Bytes(100), Xfer::Bytes(40), Xfer::Bytes(100)]);
        assert_eq!((sent.bytes, made, sent.failed.is_none()), (140, 2, true));
        let (sent, made) = script(vec![Xfer::Bytes(100), Xfer::WouldBlock, Xfer::Bytes(100)]);
        assert_eq!((sent.bytes, made, sent.failed.is_none()), (100, 2, true));
        let (sent, made) = script(vec![Xfer::Bytes(100), Xfer::Bytes(100)]);
        assert_eq!((sent.bytes, made, sent.failed.is_none()), (200, 2, true));
    }
}
