//! The transmission phase of one connection: a reader loop that checks each request and
//! queues it to a small pool of workers, which call the device and write the replies (in
//! completion order, matched by handle) under a lock.
//!
//! Replies are simple replies, except reads once structured replies are negotiated: then a
//! read is answered by one chunk, `NBD_REPLY_TYPE_OFFSET_DATA` with the whole range (or
//! `NBD_REPLY_TYPE_NONE` for a zero-length read), or `NBD_REPLY_TYPE_ERROR`, each flagged
//! `NBD_REPLY_FLAG_DONE`. Other commands carry no payload and keep simple replies, which the
//! protocol allows.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use super::handshake::discard;
use super::proto::*;
use super::Sock;
use crate::block::BlockDevice;

/// What each queued request costs the in-flight budget besides its payload, so that requests
/// without payload (flush, write zeroes) are bounded in number too.
const REQUEST_OVERHEAD: usize = 256;

/// The limits a connection enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub workers: usize,
    pub max_payload: u32,
    pub max_in_flight: usize,
    pub min_block: u32,
    pub read_only: bool,
    /// Structured replies were negotiated.
    pub structured: bool,
}

/// Bytes of requests read but not yet answered; the reader waits while the budget is spent.
struct Budget {
    used: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

impl Budget {
    /// Takes `n` bytes, waiting until they fit (a request larger than the whole budget runs
    /// alone).
    fn acquire(&self, n: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + n > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
    }

    fn release(&self, n: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= n;
        self.freed.notify_all();
    }
}

/// A request the workers carry out.
enum Job {
    Read { handle: u64, offset: u64, len: usize },
    Write { handle: u64, offset: u64, data: Vec<u8>, fua: bool },
    Flush { handle: u64 },
    Zeroes { handle: u64, offset: u64, len: u64, fua: bool },
}

/// What the reader and the workers share.
struct Conn {
    id: u64,
    device: Arc<dyn BlockDevice>,
    writer: Mutex<Sock>,
    /// A dup of the socket for shutting it down without taking the writer's lock.
    control: Sock,
    budget: Budget,
    broken: AtomicBool,
    structured: bool,
}

impl Conn {
    /// Answers a request without payload: a simple reply, or for a read with structured
    /// replies an error chunk (a success without data is a `NBD_REPLY_TYPE_NONE` chunk).
    fn reply(&self, kind: u16, handle: u64, error: u32) {
        if !(self.structured && kind == CMD_READ) {
            let mut m = vec![0u8; SIMPLE_REPLY_LEN];
            m[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
            m[4..8].copy_from_slice(&error.to_be_bytes());
            m[8..16].copy_from_slice(&handle.to_be_bytes());
            return self.send(m);
        }
        if error == 0 {
            let mut m = vec![0u8; STRUCTURED_REPLY_LEN];
            chunk_header(&mut m, REPLY_TYPE_NONE, handle, 0);
            return self.send(m);
        }
        let text = error_text(error).as_bytes();
        let mut m = vec![0u8; STRUCTURED_REPLY_LEN + 6 + text.len()];
        chunk_header(&mut m, REPLY_TYPE_ERROR, handle, 6 + text.len() as u32);
        m[20..24].copy_from_slice(&error.to_be_bytes());
        m[24..26].copy_from_slice(&(text.len() as u16).to_be_bytes());
        m[26..].copy_from_slice(text);
        self.send(m);
    }

    /// Answers a successful read of `len` bytes at `offset`: the message is built around the
    /// data, read in place after the header.
    fn read(&self, handle: u64, offset: u64, len: usize) -> io::Result<()> {
        if len == 0 {
            self.reply(CMD_READ, handle, 0);
            return Ok(());
        }
        let head = if self.structured { STRUCTURED_REPLY_LEN + 8 } else { SIMPLE_REPLY_LEN };
        let mut m = vec![0u8; head + len];
        self.device.read_at(&mut m[head..], offset)?;
        if self.structured {
            chunk_header(&mut m, REPLY_TYPE_OFFSET_DATA, handle, 8 + len as u32);
            m[20..28].copy_from_slice(&offset.to_be_bytes());
        } else {
            m[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
            m[8..16].copy_from_slice(&handle.to_be_bytes());
        }
        self.send(m);
        Ok(())
    }

    /// Writes one complete reply message. A failed write breaks the connection: the socket is
    /// shut down so the reader stops too.
    fn send(&self, message: Vec<u8>) {
        if self.broken.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let sent = w.write_all(&message).and_then(|()| w.flush());
        drop(w);
        if let Err(e) = sent {
            tracing::debug!(conn = self.id, error = %e, "nbd: reply not sent; closing");
            self.broken.store(true, Ordering::Release);
            let _ = self.control.shutdown(Shutdown::Both);
        }
    }

    fn run(&self, job: Job) {
        match job {
            Job::Read { handle, offset, len } => {
                if let Err(e) = self.read(handle, offset, len) {
                    self.reply(CMD_READ, handle, self.device_error("read", &e));
                }
                self.budget.release(len + REQUEST_OVERHEAD);
            }
            Job::Write { handle, offset, data, fua } => {
                let len = data.len();
                let done =
                    self.device.write_at(&data, offset).and_then(|()| if fua { self.device.flush() } else { Ok(()) });
                drop(data);
                match done {
                    Ok(()) => self.reply(CMD_WRITE, handle, 0),
                    Err(e) => self.reply(CMD_WRITE, handle, self.device_error("write", &e)),
                }
                self.budget.release(len + REQUEST_OVERHEAD);
            }
            Job::Flush { handle } => {
                match self.device.flush() {
                    Ok(()) => self.reply(CMD_FLUSH, handle, 0),
                    Err(e) => self.reply(CMD_FLUSH, handle, self.device_error("flush", &e)),
                }
                self.budget.release(REQUEST_OVERHEAD);
            }
            Job::Zeroes { handle, offset, len, fua } => {
                let done =
                    self.device.write_zeroes(offset, len).and_then(|()| if fua { self.device.flush() } else { Ok(()) });
                match done {
                    Ok(()) => self.reply(CMD_WRITE_ZEROES, handle, 0),
                    Err(e) => self.reply(CMD_WRITE_ZEROES, handle, self.device_error("write zeroes", &e)),
                }
                self.budget.release(REQUEST_OVERHEAD);
            }
        }
    }

    /// The NBD error for a device error: `ENOSPC` for a full device (ENOSPC, EDQUOT, EFBIG),
    /// `EIO` for everything else.
    fn device_error(&self, what: &str, e: &io::Error) -> u32 {
        tracing::warn!(conn = self.id, error = %e, "nbd: device {what} failed");
        nbd_error_of(e)
    }
}

/// Fills a structured reply chunk header (flagged done: every reply here is one chunk).
fn chunk_header(m: &mut [u8], kind: u16, handle: u64, len: u32) {
    m[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    m[4..6].copy_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
    m[6..8].copy_from_slice(&kind.to_be_bytes());
    m[8..16].copy_from_slice(&handle.to_be_bytes());
    m[16..20].copy_from_slice(&len.to_be_bytes());
}

/// The message of an error chunk.
fn error_text(error: u32) -> &'static str {
    match error {
        EINVAL => "invalid request: flags, length, alignment or range",
        EPERM => "read-only export",
        ENOSPC => "no space: past the end of the export, or the device is full",
        EIO => "the device failed",
        _ => "error",
    }
}

/// Maps a device error to an NBD error value.
pub(crate) fn nbd_error_of(e: &io::Error) -> u32 {
    const LINUX_EFBIG: i32 = 27;
    const LINUX_ENOSPC: i32 = 28;
    const LINUX_EDQUOT: i32 = 122;
    match e.raw_os_error() {
        Some(LINUX_EFBIG | LINUX_ENOSPC | LINUX_EDQUOT) => ENOSPC,
        _ => EIO,
    }
}

/// One parsed request header.
#[derive(Debug, Clone, Copy)]
struct Request {
    flags: u16,
    kind: u16,
    handle: u64,
    offset: u64,
    len: u32,
}

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// The client closed its end (or the server is stopping).
    Closed,
    /// A request with a bad magic: hard disconnect.
    BadMagic,
    /// Reading failed, or a reply could not be written.
    Broken,
}

/// Serves requests on `sock` until the client disconnects, then waits for every queued
/// request to be answered.
pub(crate) fn serve(id: u64, sock: Sock, device: Arc<dyn BlockDevice>, limits: Limits) -> io::Result<End> {
    let mut reader = sock.try_clone()?;
    let conn = Arc::new(Conn {
        id,
        device,
        control: sock.try_clone()?,
        writer: Mutex::new(sock),
        budget: Budget { used: Mutex::new(0), freed: Condvar::new(), limit: limits.max_in_flight },
        broken: AtomicBool::new(false),
        structured: limits.structured,
    });
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(limits.workers);
    for i in 0..limits.workers.max(1) {
        let conn = Arc::clone(&conn);
        let rx = Arc::clone(&rx);
        let spawned = thread::Builder::new().name(format!("nbd-{id}-w{i}")).spawn(move || loop {
            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
            match job {
                Ok(job) => conn.run(job),
                Err(mpsc::RecvError) => break,
            }
        });
        match spawned {
            Ok(w) => workers.push(w),
            Err(e) if workers.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(conn = id, error = %e, "nbd: fewer workers than configured");
                break;
            }
        }
    }

    let end = read_requests(&conn, &mut reader, &tx, limits);
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    let _ = conn.control.shutdown(Shutdown::Both);
    Ok(if conn.broken.load(Ordering::Acquire) { End::Broken } else { end })
}

/// The reader loop.
fn read_requests(conn: &Conn, reader: &mut Sock, tx: &mpsc::Sender<Job>, limits: Limits) -> End {
    loop {
        let mut head = [0u8; REQUEST_LEN];
        if let Err(e) = reader.read_exact(&mut head) {
            return if e.kind() == io::ErrorKind::UnexpectedEof { End::Closed } else { End::Broken };
        }
        if u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) != REQUEST_MAGIC {
            tracing::warn!(conn = conn.id, "nbd: request with a bad magic; closing");
            return End::BadMagic;
        }
        let req = Request {
            flags: u16::from_be_bytes([head[4], head[5]]),
            kind: u16::from_be_bytes([head[6], head[7]]),
            handle: u64::from_be_bytes(head[8..16].try_into().expect("8 bytes")),
            offset: u64::from_be_bytes(head[16..24].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(head[24..28].try_into().expect("4 bytes")),
        };
        tracing::trace!(conn = conn.id, ?req, "nbd request");
        if req.kind == CMD_DISC {
            return End::Disconnect;
        }
        let refused = check(conn.device.size(), &req, limits);
        if req.kind == CMD_WRITE {
            if let Err(error) = refused {
                // The payload follows whatever the answer: skip it without keeping it.
                if discard(reader, u64::from(req.len)).is_err() {
                    return End::Broken;
                }
                conn.reply(req.kind, req.handle, error);
                continue;
            }
            let len = req.len as usize;
            conn.budget.acquire(len + REQUEST_OVERHEAD);
            let mut data = vec![0u8; len];
            if reader.read_exact(&mut data).is_err() {
                conn.budget.release(len + REQUEST_OVERHEAD);
                return End::Broken;
            }
            let fua = req.flags & CMD_FLAG_FUA != 0;
            if tx.send(Job::Write { handle: req.handle, offset: req.offset, data, fua }).is_err() {
                return End::Broken;
            }
            continue;
        }
        if let Err(error) = refused {
            conn.reply(req.kind, req.handle, error);
            continue;
        }
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let job = match req.kind {
            CMD_READ => {
                conn.budget.acquire(req.len as usize + REQUEST_OVERHEAD);
                Job::Read { handle: req.handle, offset: req.offset, len: req.len as usize }
            }
            CMD_FLUSH => {
                conn.budget.acquire(REQUEST_OVERHEAD);
                Job::Flush { handle: req.handle }
            }
            CMD_WRITE_ZEROES => {
                conn.budget.acquire(REQUEST_OVERHEAD);
                Job::Zeroes { handle: req.handle, offset: req.offset, len: u64::from(req.len), fua }
            }
            CMD_TRIM => {
                // Trim is a hint that the data is no longer needed; the device has no discard,
                // so it is checked and acknowledged without touching anything.
                conn.reply(CMD_TRIM, req.handle, 0);
                continue;
            }
            _ => unreachable!("check refuses unknown commands"),
        };
        if tx.send(job).is_err() {
            return End::Broken;
        }
    }
}

/// The error a request is refused with before it reaches the device, if any.
fn check(size: u64, req: &Request, limits: Limits) -> Result<(), u32> {
    let allowed_flags = match req.kind {
        // a read is always one content chunk: "don't fragment" holds by construction
        CMD_READ if limits.structured => CMD_FLAG_FUA | CMD_FLAG_DF,
        CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        _ => return Err(EINVAL),
    };
    if req.flags & !allowed_flags != 0 {
        return Err(EINVAL);
    }
    if req.kind == CMD_FLUSH {
        return Ok(());
    }
    let writes = matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && limits.read_only {
        return Err(EPERM);
    }
    if matches!(req.kind, CMD_READ | CMD_WRITE) && req.len > limits.max_payload {
        return Err(EINVAL);
    }
    let min = u64::from(limits.min_block.max(1));
    if !req.offset.is_multiple_of(min) || !u64::from(req.len).is_multiple_of(min) {
        return Err(EINVAL);
    }
    match req.offset.checked_add(u64::from(req.len)) {
        Some(end) if end <= size => Ok(()),
        // past the end: writes are out of space, reads and trims invalid
        _ if matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES) => Err(ENOSPC),
        _ => Err(EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        workers: 1,
        max_payload: 4096,
        max_in_flight: 1 << 20,
        min_block: 1,
        read_only: false,
        structured: false,
    };

    fn req(kind: u16, flags: u16, offset: u64, len: u32) -> Request {
        Request { flags, kind, handle: 0, offset, len }
    }

    #[test]
    fn checks_commands_flags_lengths_and_ranges() {
        assert_eq!(check(8192, &req(CMD_READ, 0, 0, 4096), LIMITS), Ok(()));
        assert_eq!(check(8192, &req(CMD_WRITE, CMD_FLAG_FUA, 4096, 4096), LIMITS), Ok(()));
        assert_eq!(check(8192, &req(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 8192), LIMITS), Ok(()));
        assert_eq!(check(8192, &req(CMD_FLUSH, CMD_FLAG_FUA, 0, 0), LIMITS), Ok(()));
        // unknown command, unknown or misplaced flags
        assert_eq!(check(8192, &req(99, 0, 0, 0), LIMITS), Err(EINVAL));
        assert_eq!(check(8192, &req(CMD_READ, 1 << 7, 0, 512), LIMITS), Err(EINVAL));
        assert_eq!(check(8192, &req(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 512), LIMITS), Err(EINVAL));
        // "don't fragment" only on reads, only with structured replies
        assert_eq!(check(8192, &req(CMD_READ, CMD_FLAG_DF, 0, 512), LIMITS), Err(EINVAL));
        let structured = Limits { structured: true, ..LIMITS };
        assert_eq!(check(8192, &req(CMD_READ, CMD_FLAG_DF, 0, 512), structured), Ok(()));
        assert_eq!(check(8192, &req(CMD_WRITE, CMD_FLAG_DF, 0, 512), structured), Err(EINVAL));
        // payload above the maximum (write zeroes has none)
        assert_eq!(check(1 << 30, &req(CMD_READ, 0, 0, 4097), LIMITS), Err(EINVAL));
        assert_eq!(check(1 << 30, &req(CMD_WRITE, 0, 0, 4097), LIMITS), Err(EINVAL));
        assert_eq!(check(1 << 30, &req(CMD_WRITE_ZEROES, 0, 0, 1 << 20), LIMITS), Ok(()));
        // past the end, and offsets that overflow
        assert_eq!(check(8192, &req(CMD_READ, 0, 8192, 1), LIMITS), Err(EINVAL));
        assert_eq!(check(8192, &req(CMD_TRIM, 0, 4096, 4097), LIMITS), Err(EINVAL));
        assert_eq!(check(8192, &req(CMD_WRITE, 0, 8191, 2), LIMITS), Err(ENOSPC));
        assert_eq!(check(8192, &req(CMD_WRITE_ZEROES, 0, u64::MAX, 1), LIMITS), Err(ENOSPC));
        assert_eq!(check(8192, &req(CMD_READ, 0, u64::MAX - 1, 4), LIMITS), Err(EINVAL));
        // read-only, alignment
        let ro = Limits { read_only: true, ..LIMITS };
        assert_eq!(check(8192, &req(CMD_WRITE, 0, 0, 512), ro), Err(EPERM));
        assert_eq!(check(8192, &req(CMD_TRIM, 0, 0, 512), ro), Err(EPERM));
        assert_eq!(check(8192, &req(CMD_READ, 0, 0, 512), ro), Ok(()));
        let aligned = Limits { min_block: 512, ..LIMITS };
        assert_eq!(check(8192, &req(CMD_READ, 0, 512, 1024), aligned), Ok(()));
        assert_eq!(check(8192, &req(CMD_READ, 0, 1, 512), aligned), Err(EINVAL));
        assert_eq!(check(8192, &req(CMD_WRITE, 0, 0, 100), aligned), Err(EINVAL));
    }

    #[test]
    fn device_errors_map_to_enospc_or_eio() {
        assert_eq!(nbd_error_of(&io::Error::from_raw_os_error(28)), ENOSPC);
        assert_eq!(nbd_error_of(&io::Error::from_raw_os_error(122)), ENOSPC);
        assert_eq!(nbd_error_of(&io::Error::from_raw_os_error(5)), EIO);
        assert_eq!(nbd_error_of(&io::Error::other("remote namespace gone")), EIO);
    }

    #[test]
    fn budget_lets_a_request_larger_than_the_limit_run_alone() {
        let budget = Arc::new(Budget { used: Mutex::new(0), freed: Condvar::new(), limit: 100 });
        budget.acquire(500);
        let b = Arc::clone(&budget);
        let waiter = thread::spawn(move || {
            b.acquire(10);
            b.release(10);
        });
        thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a second request waits while the budget is spent");
        budget.release(500);
        waiter.join().unwrap();
        assert_eq!(*budget.used.lock().unwrap(), 0);
    }
}
