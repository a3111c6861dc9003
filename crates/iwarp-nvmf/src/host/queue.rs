//! One queue (admin or I/O) of an attached controller: a queue pair, its command capsules and
//! response buffers, the commands in flight by command identifier, and the thread that
//! matches completions to them.
//!
//! Data buffers are registered once and kept per queue ([`Buffers`]): a command takes an
//! idle one and rekeys it ([`iwarp::MemoryRegion::rekey`]: the same region under the next
//! STag key, as a fast registration gives), so its keyed SGL names an STag no earlier
//! command used. The target's Send with Invalidate invalidates it; a buffer whose response
//! came as a plain Send is invalidated here when the command finishes. An idle buffer is
//! therefore always invalid, and a late access with an earlier command's STag is refused.

use crate::wire::{self, Command, Sgl, Status};
use iwarp::{
    Access, CompletionQueue, ConnParams, Device, MemoryRegion, OwnedRegion, ProtectionDomain, QpCap, QpEvent, QpInit,
    QueuePair, RecvWr, SendWr, Stag, WcStatus, WorkCompletion,
};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// wr_id tags: which queue of the queue pair, and the slot or response buffer index.
const TAG_SEND: u64 = 1 << 32;
const TAG_RECV: u64 = 2 << 32;
const INDEX: u64 = 0xffff_ffff;
/// Bytes of a completion (NVMe-oF RDMA: IORCSZ 1, no in-capsule response data).
const CQE_LEN: usize = wire::CQE_LEN;

/// How a queue is set up.
#[derive(Debug, Clone)]
pub(crate) struct QueueConfig {
    /// Queue identifier (0: admin).
    pub qid: u16,
    /// Entries (hrqsize; hsqsize is one less).
    pub size: u16,
    /// The most in-capsule data a write carries (0: none).
    pub in_capsule: usize,
    /// How long the connection's setup may take.
    pub connect_timeout: Duration,
    /// Ask for MPA CRC.
    pub crc: bool,
}

/// A command's data.
#[derive(Debug)]
pub(crate) enum Data<'a> {
    /// No data.
    None,
    /// Data for the controller (a write; Connect data).
    ToController(&'a [u8]),
    /// Data from the controller, copied into the buffer ([`Queue::execute`] only).
    FromController(&'a mut [u8]),
    /// This many bytes of data from the controller, handed back in the [`Completion`].
    FromControllerLen(usize),
}

/// A command's completion as the host sees it.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The status.
    pub(crate) status: Status,
    /// Command-specific result (dwords 0 and 1).
    pub(crate) result: u64,
    /// Data the controller sent (commands with data from the controller): the buffer and
    /// the bytes of it the command named, held until the completion is dropped.
    data: Option<(Buffer, usize)>,
    pool: Option<Arc<Buffers>>,
}

impl Completion {
    /// Copies the data the controller sent into `out` (as much as both hold).
    pub(crate) fn copy_data_to(&self, out: &mut [u8]) {
        if let Some((b, len)) = &self.data {
            let n = (*len).min(out.len());
            if let Err(e) = b.read(0, &mut out[..n]) {
                tracing::error!(error = %e, "reading a data buffer");
            }
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let (Some((b, _)), Some(p)) = (self.data.take(), &self.pool) {
            p.put(b);
        }
    }
}

/// A registered data buffer.
type Buffer = OwnedRegion<Vec<u8>>;

/// Registered data buffers kept for reuse: RDMA Write sinks (data from the controller) and
/// RDMA Read sources (data to it). Each command takes one, rekeyed; idle ones are invalid.
#[derive(Debug)]
struct Buffers {
    pd: ProtectionDomain,
    sinks: Mutex<Vec<Buffer>>,
    sources: Mutex<Vec<Buffer>>,
    /// Idle buffers kept of each kind.
    max: usize,
    /// Registrations made (a measure of how well reuse works).
    registered: std::sync::atomic::AtomicU64,
}

impl Buffers {
    fn list(&self, from_controller: bool) -> &Mutex<Vec<Buffer>> {
        if from_controller {
            &self.sinks
        } else {
            &self.sources
        }
    }

    /// A buffer of at least `len` bytes, valid under an STag no earlier command named: an
    /// idle one rekeyed, or a new registration.
    fn get(&self, len: usize, from_controller: bool) -> Result<Buffer, iwarp::RegisterError> {
        let idle = {
            let mut l = lock(self.list(from_controller));
            let i = l.iter().rposition(|b| b.len() >= len);
            i.map(|i| l.swap_remove(i))
        };
        if let Some(b) = idle {
            // Idle buffers are invalid (see `put`), so a rekey succeeds; if it did not, the
            // buffer is dropped (deregistered) and a fresh one registered.
            if b.rekey().is_ok() {
                return Ok(b);
            }
        }
        let access = if from_controller {
            Access::LOCAL_WRITE | Access::REMOTE_WRITE
        } else {
            Access::LOCAL_WRITE | Access::REMOTE_READ
        };
        self.registered.fetch_add(1, Ordering::Relaxed);
        // Whole pages, so that a buffer fits the next commands of about the same size.
        self.pd.reg_owned(vec![0u8; len.max(1).next_multiple_of(4096)], access)
    }

    /// Takes back a buffer whose command finished: invalidated (if the target's response did
    /// not invalidate it), then kept or, past the limit, deregistered.
    fn put(&self, b: Buffer) {
        b.invalidate();
        let kind = b.access().contains(Access::REMOTE_WRITE);
        let mut l = lock(self.list(kind));
        if l.len() < self.max {
            l.push(b);
        }
    }
}

/// Where a command's result goes: set once by the completion thread, taken by the waiter.
#[derive(Debug, Default)]
struct Cell {
    done: Mutex<Option<io::Result<Completion>>>,
    cond: Condvar,
}

impl Cell {
    fn set(&self, r: io::Result<Completion>) {
        *lock(&self.done) = Some(r);
        self.cond.notify_all();
    }
}

/// A command in flight.
#[derive(Debug)]
struct Inflight {
    cell: Arc<Cell>,
    region: Option<Buffer>,
    /// Bytes of the region the command named.
    len: usize,
    /// The STag the command's keyed SGL named.
    stag: Option<Stag>,
    from_controller: bool,
    sent: bool,
    response: Option<wire::Completion>,
    error: Option<io::Error>,
}

#[derive(Debug)]
struct State {
    slots: Vec<Option<Inflight>>,
    free: Vec<usize>,
    dead: Option<String>,
}

#[derive(Debug)]
struct Shared {
    qid: u16,
    qp: QueuePair,
    cq: CompletionQueue,
    capsules: MemoryRegion,
    capsule_len: usize,
    responses: MemoryRegion,
    in_capsule: usize,
    state: Mutex<State>,
    /// Signalled when a slot is freed or the queue dies.
    freed: Condvar,
    closing: AtomicBool,
    pool: Arc<Buffers>,
}

/// A command submitted and not yet waited for.
#[derive(Debug)]
pub(crate) struct Ticket {
    cell: Arc<Cell>,
    deadline: Instant,
    qid: u16,
    cid: u16,
    opcode: u8,
}

impl Ticket {
    /// The command's completion if it has come, without waiting (the deadline aside).
    pub(crate) fn try_take(&self) -> Option<io::Result<Completion>> {
        lock(&self.cell.done).take()
    }

    /// Waits for the command's completion, up to its deadline.
    ///
    /// # Errors
    /// [`io::ErrorKind::TimedOut`] past the deadline (the command stays in flight, holding
    /// its slot, until the controller answers or the queue fails); the queue's failure; an
    /// invalidation of the wrong STag.
    pub(crate) fn wait(self) -> io::Result<Completion> {
        let mut done = lock(&self.cell.done);
        loop {
            if let Some(r) = done.take() {
                return r;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "queue {}: command {} (opcode {:#04x}) not completed within the command timeout",
                        self.qid, self.cid, self.opcode
                    ),
                ));
            }
            done = self.cell.cond.wait_timeout(done, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// One queue of a controller.
#[derive(Debug)]
pub(crate) struct Queue {
    shared: Arc<Shared>,
    size: u16,
    depth: usize,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

impl Queue {
    /// Creates the queue pair, posts the response buffers and connects with the NVMe-oF
    /// private data for `cfg.qid`. Fabrics Connect is the caller's next step.
    pub(crate) fn connect(
        dev: &Device,
        pd: &ProtectionDomain,
        addr: SocketAddr,
        cfg: &QueueConfig,
    ) -> Result<Queue, super::HostError> {
        use super::HostError;
        let size = cfg.size.max(2);
        let depth = usize::from(size) - 1;
        let nrecv = usize::from(size);
        let capsule_len = 64 + cfg.in_capsule;
        let setup = |e: &dyn std::fmt::Display| HostError::Io(io::Error::other(format!("queue {}: {e}", cfg.qid)));
        let cq = dev.create_cq(depth + nrecv + 16).map_err(|e| setup(&e))?;
        let cap =
            QpCap { max_send_wr: depth + 4, max_recv_wr: nrecv, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 64 };
        let qp = pd.create_qp(&QpInit { cap, ..QpInit::new(&cq, &cq) }).map_err(|e| setup(&e))?;
        let capsules = pd.reg_mr(depth * capsule_len, Access::LOCAL_WRITE).map_err(|e| setup(&e))?;
        let responses = pd.reg_mr(nrecv * CQE_LEN, Access::LOCAL_WRITE).map_err(|e| setup(&e))?;
        {
            let recvs: Vec<RecvWr<'_>> =
                (0..nrecv).map(|i| RecvWr::new(TAG_RECV | i as u64, &[responses.sge(i * CQE_LEN, CQE_LEN)])).collect();
            qp.post_recv(&recvs).map_err(|e| setup(&e))?;
        }

        // NVMe-oF RDMA CM request: recfmt 0, qid, hrqsize, hsqsize (0's based).
        let pdata = wire::CmRequest { recfmt: wire::RECFMT, qid: cfg.qid, hrqsize: size, hsqsize: size - 1 }
            .to_bytes()
            .to_vec();
        let mut params =
            ConnParams { private_data: pdata, responder_resources: 16, initiator_depth: 0, ..ConnParams::default() };
        params.mpa.timeout = cfg.connect_timeout;
        params.mpa.crc = cfg.crc;
        qp.connect(addr, &params).map_err(|e| match e {
            iwarp::ConnectError::Rejected { private_data } => {
                HostError::Rejected { qid: cfg.qid, reason: reject_reason(&private_data) }
            }
            source => HostError::Transport { qid: cfg.qid, source },
        })?;
        tracing::debug!(qid = cfg.qid, size, "queue connected");

        let shared = Arc::new(Shared {
            qid: cfg.qid,
            qp,
            cq,
            capsules,
            capsule_len,
            responses,
            in_capsule: cfg.in_capsule,
            state: Mutex::new(State {
                slots: (0..depth).map(|_| None).collect(),
                free: (0..depth).rev().collect(),
                dead: None,
            }),
            freed: Condvar::new(),
            closing: AtomicBool::new(false),
            pool: Arc::new(Buffers {
                pd: pd.clone(),
                sinks: Mutex::new(Vec::new()),
                sources: Mutex::new(Vec::new()),
                max: depth.min(64),
                registered: std::sync::atomic::AtomicU64::new(0),
            }),
        });
        let s = Arc::clone(&shared);
        let reaper = std::thread::Builder::new()
            .name(format!("nvmf-hq{}", cfg.qid))
            .spawn(move || s.run())
            .map_err(HostError::Io)?;
        Ok(Queue { shared, size, depth, reaper: Mutex::new(Some(reaper)) })
    }

    /// The queue identifier.
    pub(crate) fn qid(&self) -> u16 {
        self.shared.qid
    }
    /// Entries.
    pub(crate) fn size(&self) -> u16 {
        self.size
    }
    /// Commands that may be in flight at once.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }
    /// `true` once the connection failed or was closed.
    pub(crate) fn is_dead(&self) -> bool {
        lock(&self.shared.state).dead.is_some()
    }

    /// Submits `cmd` and waits for its completion (copying data from the controller into a
    /// [`Data::FromController`] buffer).
    pub(crate) fn execute(&self, cmd: Command, data: Data<'_>, timeout: Duration) -> io::Result<Completion> {
        match data {
            Data::FromController(buf) => {
                let c = self.submit(cmd, Data::FromControllerLen(buf.len()), timeout)?.wait()?;
                c.copy_data_to(buf);
                Ok(c)
            }
            d => self.submit(cmd, d, timeout)?.wait(),
        }
    }

    /// Issues `cmd` with its data, waiting (up to `timeout`) for a free slot; the returned
    /// ticket waits for its completion until `timeout` from now.
    ///
    /// # Errors
    /// The queue failed or closed ([`io::ErrorKind::NotConnected`]), no slot came free in
    /// time ([`io::ErrorKind::TimedOut`]), or the data could not be registered or the
    /// capsule posted.
    pub(crate) fn submit(&self, mut cmd: Command, data: Data<'_>, timeout: Duration) -> io::Result<Ticket> {
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let idx = {
            let mut st = lock(&s.state);
            loop {
                if let Some(why) = &st.dead {
                    return Err(io::Error::new(io::ErrorKind::NotConnected, why.clone()));
                }
                if let Some(i) = st.free.pop() {
                    break i;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("queue {}: no command slot came free within the command timeout", s.qid),
                    ));
                }
                st = s.freed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        };
        let release = |e: io::Error| {
            lock(&s.state).free.push(idx);
            s.freed.notify_one();
            e
        };
        let cid = idx as u16;
        cmd.set_cid(cid);
        let opcode = cmd.opcode();
        let base = idx * s.capsule_len;
        let mut in_capsule = 0;
        let mut region = None;
        let mut data_len = 0;
        let mut from_controller = false;
        let buffer = |len: usize, from_controller: bool| {
            s.pool
                .get(len, from_controller)
                .map_err(|e| io::Error::other(format!("queue {}: registering a data buffer: {e}", s.qid)))
        };
        match data {
            Data::None => cmd.set_sgl(&Sgl::none()),
            // Fabrics commands (Connect) always use a keyed SGL, which every target reads.
            Data::ToController(bytes)
                if !bytes.is_empty() && bytes.len() <= s.in_capsule && opcode != wire::FABRICS_OPCODE =>
            {
                s.capsules.write(base + 64, bytes).map_err(|e| release(io::Error::other(e.to_string())))?;
                cmd.set_sgl(&Sgl::InCapsule { offset: 0, length: bytes.len() as u32 });
                in_capsule = bytes.len();
            }
            Data::ToController(bytes) => {
                let r = buffer(bytes.len(), false).map_err(release)?;
                if let Err(e) = r.write(0, bytes) {
                    s.pool.put(r);
                    return Err(release(io::Error::other(e.to_string())));
                }
                data_len = bytes.len();
                cmd.set_sgl(&Sgl::Keyed {
                    addr: r.addr(),
                    length: bytes.len() as u32,
                    key: r.rkey(),
                    invalidate: true,
                });
                region = Some(r);
            }
            Data::FromController(buf) => {
                return Err(release(io::Error::other(format!(
                    "queue {}: submit takes a length for {} bytes from the controller",
                    s.qid,
                    buf.len()
                ))))
            }
            Data::FromControllerLen(len) => {
                let r = buffer(len, true).map_err(release)?;
                data_len = len;
                cmd.set_sgl(&Sgl::Keyed { addr: r.addr(), length: len as u32, key: r.rkey(), invalidate: true });
                region = Some(r);
                from_controller = true;
            }
        }
        s.capsules.write(base, cmd.as_bytes()).map_err(|e| release(io::Error::other(e.to_string())))?;
        let cell = Arc::new(Cell::default());
        let stag = region.as_ref().map(|r| r.stag());
        {
            let mut st = lock(&s.state);
            if let Some(why) = &st.dead {
                let e = io::Error::new(io::ErrorKind::NotConnected, why.clone());
                st.free.push(idx);
                return Err(e);
            }
            st.slots[idx] = Some(Inflight {
                cell: Arc::clone(&cell),
                region,
                len: data_len,
                stag,
                from_controller,
                // The capsule's Send is unsignaled (see below): a response means it was sent.
                sent: true,
                response: None,
                error: None,
            });
        }
        // Unsignaled: the controller answers only after receiving the whole capsule, so its
        // response shows that the capsule's bytes were sent and its slot may be reused; a
        // completion per capsule would only wake the completion thread once more per command.
        // A Send that fails still completes (with its error), failing the queue.
        let wr = SendWr::send(TAG_SEND | idx as u64, &[s.capsules.sge(base, 64 + in_capsule)]).unsignaled();
        if let Err(e) = s.qp.post_send(&[wr]) {
            let mut st = lock(&s.state);
            st.slots[idx] = None;
            st.free.push(idx);
            s.freed.notify_one();
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("queue {}: posting a command: {e}", s.qid),
            ));
        }
        tracing::trace!(qid = s.qid, cid, opcode, in_capsule, "command issued");
        Ok(Ticket { cell, deadline, qid: s.qid, cid, opcode })
    }

    /// Closes the connection; commands in flight fail. Waits for the completion thread.
    pub(crate) fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.qp.disconnect();
        if let Some(h) = lock(&self.reaper).take() {
            let _ = h.join();
        }
        self.shared.fail_all("queue closed");
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// The completion thread: takes completions and connection events until the queue is
    /// closed (or failed and closing).
    fn run(&self) {
        let mut wcs = [WorkCompletion::default(); 32];
        let mut closing_since: Option<Instant> = None;
        loop {
            let n = self.cq.wait(&mut wcs, Some(Duration::from_millis(50)));
            for wc in &wcs[..n] {
                self.handle(wc);
            }
            while let Some(ev) = self.qp.poll_event() {
                match ev {
                    QpEvent::Disconnected => self.fail_all("connection closed"),
                    QpEvent::Error { cause, remote, .. } => {
                        let who = if remote { "by the target" } else { "locally" };
                        let why = cause.map_or_else(|| "no cause".to_string(), |c| c.to_string());
                        self.fail_all(&format!("connection terminated {who}: {why}"));
                    }
                    other => tracing::debug!(qid = self.qid, event = ?other, "queue event"),
                }
            }
            if self.closing.load(Ordering::Acquire) && n == 0 {
                let since = *closing_since.get_or_insert_with(Instant::now);
                if lock(&self.state).dead.is_some() || since.elapsed() > Duration::from_secs(2) {
                    return;
                }
            }
        }
    }

    fn handle(&self, wc: &WorkCompletion) {
        let idx = (wc.wr_id & INDEX) as usize;
        if wc.status != WcStatus::Success {
            if lock(&self.state).dead.is_none() {
                // Flushed work means the connection ended (closed or terminated); anything
                // else is the transport's own error.
                let why = match (wc.status, self.qp.terminated()) {
                    (WcStatus::WrFlush, Some(t)) => format!("connection terminated: {}", t.cause),
                    (WcStatus::WrFlush, None) => "connection closed".to_string(),
                    _ => format!("transport error: {wc}"),
                };
                self.fail_all(&why);
            }
            return;
        }
        let mut finished = Vec::new();
        if wc.wr_id & TAG_SEND != 0 {
            let mut st = lock(&self.state);
            if let Some(f) = st.slots.get_mut(idx).and_then(Option::as_mut) {
                f.sent = true;
            }
            take_finished(&mut st, idx, &mut finished);
        } else if wc.wr_id & TAG_RECV != 0 {
            let mut raw = [0u8; CQE_LEN];
            if wc.byte_len as usize != CQE_LEN || self.responses.read(idx * CQE_LEN, &mut raw).is_err() {
                self.fail_all(&format!("a response of {} bytes, {CQE_LEN} expected", wc.byte_len));
                return;
            }
            let Ok(cqe) = wire::Completion::parse(&raw) else { return };
            let slot = usize::from(cqe.cid);
            {
                let mut st = lock(&self.state);
                match st.slots.get_mut(slot).and_then(Option::as_mut) {
                    Some(f) if f.response.is_none() => {
                        // NVMe-oF RDMA: a response may invalidate the host's STag, which must be
                        // the one the command named.
                        if let Some(inv) = wc.invalidated_stag {
                            if f.stag != Some(inv) {
                                f.error = Some(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!(
                                        "queue {}: response to command {} invalidated STag {:#010x}, the command's was {}",
                                        self.qid,
                                        cqe.cid,
                                        inv.0,
                                        f.stag.map_or_else(|| "none".into(), |s| format!("{:#010x}", s.0)),
                                    ),
                                ));
                            }
                        }
                        f.response = Some(cqe);
                        take_finished(&mut st, slot, &mut finished);
                    }
                    _ => tracing::warn!(qid = self.qid, cid = cqe.cid, "response to a command not in flight"),
                }
            }
            // The buffer is free again: post it for the next response.
            if !self.closing.load(Ordering::Acquire) {
                let wr = RecvWr::new(TAG_RECV | idx as u64, &[self.responses.sge(idx * CQE_LEN, CQE_LEN)]);
                if let Err(e) = self.qp.post_recv(&[wr]) {
                    self.fail_all(&format!("re-posting a response buffer: {e}"));
                }
            }
        }
        if !finished.is_empty() {
            self.freed.notify_all();
        }
        for f in finished {
            self.finish(f);
        }
    }

    /// Hands a finished command's result to its waiter.
    fn finish(&self, f: Inflight) {
        let data = match (f.region, f.from_controller) {
            (Some(r), true) if f.error.is_none() => Some((r, f.len)),
            (Some(r), _) => {
                self.pool.put(r);
                None
            }
            (None, _) => None,
        };
        let r = match (f.error, f.response) {
            (Some(e), _) => Err(e),
            (None, Some(cqe)) => {
                Ok(Completion { status: cqe.status(), result: cqe.result, data, pool: Some(Arc::clone(&self.pool)) })
            }
            (None, None) => Err(io::Error::other("command finished without a response")),
        };
        f.cell.set(r);
    }

    /// Marks the queue failed and fails every command in flight.
    fn fail_all(&self, why: &str) {
        let inflight: Vec<Inflight> = {
            let mut st = lock(&self.state);
            if st.dead.is_none() {
                tracing::debug!(qid = self.qid, why, "queue failed");
                st.dead = Some(format!("queue {}: {why}", self.qid));
            }
            let taken: Vec<(usize, Inflight)> =
                st.slots.iter_mut().enumerate().filter_map(|(i, s)| s.take().map(|f| (i, f))).collect();
            let mut out = Vec::new();
            for (i, f) in taken {
                st.free.push(i);
                out.push(f);
            }
            out
        };
        self.freed.notify_all();
        let why = format!("queue {}: {why}", self.qid);
        for f in inflight {
            f.cell.set(Err(io::Error::new(io::ErrorKind::NotConnected, why.clone())));
            drop(f.region);
        }
    }
}

/// Moves the command in `idx` to `out` if its capsule was sent and its response arrived.
fn take_finished(st: &mut State, idx: usize, out: &mut Vec<Inflight>) {
    let done = st.slots.get(idx).and_then(Option::as_ref).is_some_and(|f| f.sent && f.response.is_some());
    if done {
        if let Some(f) = st.slots[idx].take() {
            st.free.push(idx);
            out.push(f);
        }
    }
}

/// The NVMe-oF RDMA CM reject's status, named.
fn reject_reason(pd: &[u8]) -> String {
    match wire::CmReject::parse(pd) {
        Ok(r) => format!("{:?} ({})", r.status, u16::from(r.status)),
        Err(_) => format!("{} bytes of private data", pd.len()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
