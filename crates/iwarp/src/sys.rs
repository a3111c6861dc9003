//! System calls the standard library does not offer: socket reads and vectored I/O on raw
//! address ranges (without glibc's cancellation wrappers), an eventfd for pollable
//! notifications, `poll(2)` and raising the descriptor limit. The only module of this crate
//! with `unsafe`.
#![allow(unsafe_code)]

use iwarp_proto::qp::IoRange;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Largest iovec count the kernel takes in one call.
pub const IOV_MAX: usize = 1024;

/// The iovecs of a `readv`: the engine's ranges, then `extra` (the scratch buffer) if not empty.
fn iovecs(ranges: &[IoRange], extra: &mut [u8]) -> smallvec::SmallVec<[libc::iovec; 8]> {
    let mut v: smallvec::SmallVec<[libc::iovec; 8]> = ranges
        .iter()
        .take(IOV_MAX - 1)
        .map(|r| libc::iovec { iov_base: r.addr as *mut libc::c_void, iov_len: r.len })
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

/// `write(2)` of `len` bytes at address `addr`.
///
/// # Safety
/// `addr..addr + len` must be readable memory that stays valid for the call.
unsafe fn write_at(fd: RawFd, addr: usize, len: usize) -> Xfer {
    use libc::c_long as W;
    // SAFETY: the caller guarantees the range; SIGPIPE is ignored process-wide by the runtime
    // at start-up, so a closed peer gives EPIPE.
    retrying(|| unsafe { libc::syscall(libc::SYS_write, fd as W, addr as W, len as W) })
}

/// `writev` of engine-provided ranges (one range: `write`, whose kernel path is shorter).
///
/// The ranges come from [`iwarp_proto::qp::Qp::poll_transmit`], whose contract is that every
/// address stays valid until the bytes are reported sent; the caller holds the queue pair's
/// lock across this call and the report.
pub fn writev(fd: RawFd, ranges: &[IoRange]) -> Xfer {
    // `IoRange` is `repr(C)` { address: usize, length: usize }, the layout of `struct iovec`
    // (checked here at compile time), so the engine's ranges go to the kernel without a copy.
    const _: () = assert!(
        std::mem::size_of::<IoRange>() == std::mem::size_of::<libc::iovec>()
            && std::mem::align_of::<IoRange>() == std::mem::align_of::<libc::iovec>()
            && std::mem::offset_of!(IoRange, addr) == std::mem::offset_of!(libc::iovec, iov_base)
            && std::mem::offset_of!(IoRange, len) == std::mem::offset_of!(libc::iovec, iov_len)
    );
    use libc::c_long as W;
    if let [one] = ranges {
        // SAFETY: as below, for the one range.
        return unsafe { write_at(fd, one.addr, one.len) };
    }
    let n = ranges.len().min(IOV_MAX);
    // SAFETY: the cast is layout-compatible (asserted above). Each range names memory the
    // engine keeps alive (see above) or the engine's own transmit arena; the kernel only reads
    // it, at most `n` ranges.
    retrying(|| unsafe { libc::syscall(libc::SYS_writev, fd as W, ranges.as_ptr() as W, n as W) })
}

/// `write` of `buf` (bytes the caller framed and owns) to the socket `fd`.
pub fn write(fd: RawFd, buf: &[u8]) -> Xfer {
    // SAFETY: `buf` is a live buffer for the call.
    unsafe { write_at(fd, buf.as_ptr() as usize, buf.len()) }
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
/// The ranges come from [`iwarp_proto::qp::Qp::poll_recv_plan`]: validated windows of
/// regions the engine holds until [`iwarp_proto::qp::Qp::handle_placed`] is called, which the
/// caller does under the same lock right after this returns.
pub fn readv(fd: RawFd, ranges: &[IoRange], scratch: &mut [u8]) -> Xfer {
    use libc::c_long as W;
    let iov = iovecs(ranges, scratch);
    // SAFETY: the ranges are validated placement windows inside live regions (see above) and
    // `scratch` is a live mutable buffer; the kernel writes at most their lengths.
    retrying(|| unsafe { libc::syscall(libc::SYS_readv, fd as W, iov.as_ptr() as W, iov.len() as W) })
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

/// Makes writes to a closed socket return `EPIPE` instead of killing the process.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
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

/// The CPU's time-stamp counter (x86_64 `rdtsc`), for [`crate::util::TickClock`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn cycles() -> u64 {
    // SAFETY: `rdtsc` reads a counter; it has no memory effects and every x86_64 CPU has it
    // (a kernel that forbids it in user mode would stop the process with a signal, not UB).
    unsafe { core::arch::x86_64::_rdtsc() }
}
