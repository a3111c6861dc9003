//! An NVMe over Fabrics target (RDMA transport) serving one namespace from a [`BlockDevice`].
//!
//! One subsystem (one NQN) with one namespace (NSID 1). Each queue, the admin queue (qid 0)
//! and every I/O queue, is its own queue pair. A small pool of threads
//! ([`TargetConfig::threads`]) serves them all: each thread waits on one completion channel
//! that its queues' completion queues notify, and serves the queues that fired; a new queue
//! goes to the threads in turn. Controllers are
//! dynamic: the admin Connect asks for controller id 0xFFFF and gets a new one; I/O queue
//! Connects name it.
//!
//! What it does not do: discovery, static controllers, reservations, namespace management,
//! metadata, authentication, asynchronous events (Asynchronous Event Requests are held and
//! never completed while the controller lives).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iwarp::{Device, DeviceConfig};
//! use iwarp_nvmf::block::MemDevice;
//! use iwarp_nvmf::target::{Target, TargetConfig};
//! use std::sync::Arc;
//! let dev = Device::open(DeviceConfig::default())?;
//! let listener = dev.listen("127.0.0.1:4420".parse()?, 64)?;
//! let target = Target::new(TargetConfig::new("nqn.2014-08.org.example:disk"), Arc::new(MemDevice::new(1 << 20)));
//! let handle = target.serve(&dev, listener)?;
//! // ... later
//! handle.stop();
//! # Ok(())
//! # }
//! ```

mod ctrl;
mod queue;

use crate::block::BlockDevice;
use crate::wire::{CmReject, CmRequest, RejectStatus};
use ctrl::Subsystem;
use iwarp::{CompletionChannel, ConnParams, Device, Listener, WorkCompletion};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the target treats MPA CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrcPolicy {
    /// CRC exactly when the initiator asks for it (the target does not ask itself, so RFC
    /// 5044 §4.4 leaves the choice to the initiator), as Linux's target over siw does. The
    /// default: some peers mis-check the CRC of FPDUs that a path re-segmented (Linux siw's
    /// split-trailer bug, docs/interop.md), and a target that forced CRC on a host that did not
    /// ask for it would expose that host to it.
    #[default]
    Follow,
    /// Ask for CRC: it is on for every connection.
    Ask,
    /// Reject a connection whose initiator does not ask for CRC.
    Require,
}

/// Target settings.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The subsystem NQN hosts connect to.
    pub nqn: String,
    /// Host NQNs allowed to connect; empty: any host.
    pub hosts: Vec<String>,
    /// Serial number reported by Identify Controller.
    pub serial: String,
    /// Largest queue (entries) a host may ask for, admin or I/O (at most 1024).
    pub max_queue_entries: u16,
    /// I/O queues per controller.
    pub max_io_queues: u16,
    /// In-capsule data bytes an I/O command may carry (writes).
    pub in_capsule_data: u32,
    /// Maximum data transfer size as a power of two of 4 KiB pages (5: 128 KiB).
    pub mdts: u8,
    /// Asynchronous Event Requests held per controller, 0-based (AERL).
    pub aerl: u8,
    /// MPA CRC policy.
    pub crc: CrcPolicy,
    /// The queue threads' wake-up period (keep-alive checks, stop requests).
    pub tick: Duration,
    /// Threads serving the queues (each serves many; at least 1).
    pub threads: usize,
    /// How long a connected queue may go without a successful Fabrics Connect before it is
    /// disconnected.
    pub connect_timeout: Duration,
}

impl TargetConfig {
    /// Defaults for subsystem `nqn`: any host, queues up to 128 entries, 8 I/O queues, 4 KiB
    /// in-capsule data, 128 KiB transfers.
    pub fn new(nqn: &str) -> Self {
        TargetConfig {
            nqn: nqn.to_owned(),
            hosts: Vec::new(),
            serial: "iwarp-nvmf-0001".to_owned(),
            max_queue_entries: 128,
            max_io_queues: 8,
            in_capsule_data: 4096,
            mdts: 5,
            aerl: 3,
            crc: CrcPolicy::Follow,
            tick: Duration::from_millis(20),
            threads: 2,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The largest transfer in bytes (MDTS).
    pub fn max_transfer(&self) -> usize {
        4096usize << self.mdts.min(12)
    }
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The configuration is not usable.
    #[error("bad configuration: {0}")]
    Config(&'static str),
}

/// An NVMe over Fabrics target: one subsystem with one namespace.
#[derive(Clone)]
pub struct Target {
    sub: Arc<Subsystem>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("nqn", &self.sub.config.nqn).finish()
    }
}

impl Target {
    /// A target serving `device` as namespace 1 of subsystem `config.nqn`.
    pub fn new(config: TargetConfig, device: Arc<dyn BlockDevice>) -> Self {
        Target { sub: Arc::new(Subsystem::new(config, device)) }
    }

    /// Serves connections from `listener` (made by `dev`) on a thread of its own until the
    /// handle is stopped or dropped.
    ///
    /// # Errors
    /// [`TargetError::Config`] for an unusable configuration, [`TargetError::Thread`] if the
    /// accepting thread cannot start.
    pub fn serve(&self, dev: &Device, listener: Listener) -> Result<TargetHandle, TargetError> {
        let c = &self.sub.config;
        if c.max_queue_entries < 2 || c.max_queue_entries > 1024 {
            return Err(TargetError::Config("max_queue_entries must be 2..=1024"));
        }
        if c.mdts > 12 || c.mdts == 0 {
            return Err(TargetError::Config("mdts must be 1..=12"));
        }
        if self.sub.device.block_size() < 512 || !self.sub.device.block_size().is_power_of_two() {
            return Err(TargetError::Config("the device's block size must be a power of two, at least 512"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for i in 0..c.threads.max(1) {
            let channel =
                dev.create_comp_channel().map_err(|e| TargetError::Thread(std::io::Error::other(e.to_string())))?;
            let (tx, rx) = mpsc::channel();
            let (ch, st, tick) = (channel.clone(), Arc::clone(&stop), c.tick);
            let t = std::thread::Builder::new()
                .name(format!("nvmf-t{i}"))
                .spawn(move || serve_queues(&rx, &ch, &st, tick))?;
            threads.lock().unwrap_or_else(|e| e.into_inner()).push(t);
            workers.push(Worker { channel, queues: tx });
        }
        let addr = listener.local_addr();
        let (sub, dev, st) = (Arc::clone(&self.sub), dev.clone(), Arc::clone(&stop));
        let acceptor = std::thread::Builder::new()
            .name("nvmf-accept".into())
            .spawn(move || accept_loop(sub, dev, listener, st, workers))?;
        Ok(TargetHandle { stop, acceptor: Some(acceptor), threads, addr })
    }

    /// Controllers that are live now.
    pub fn controllers(&self) -> usize {
        self.sub.controller_count()
    }
}

/// A running target; stopping it (or dropping the handle) disconnects every queue.
#[derive(Debug)]
pub struct TargetHandle {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    addr: SocketAddr,
}

impl TargetHandle {
    /// The address the target listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, disconnects every queue and waits for the threads to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for TargetHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the target needs to know of a connection request, checked before accepting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueRequest {
    pub qid: u16,
    /// Entries of the host's submission queue (hsqsize + 1).
    pub entries: u16,
    /// The ORD this side can use (the initiator's IRD, capped).
    pub ord: u16,
}

/// Checks a connection request's private data and IRD: the queue it asks for, or the reject
/// status to answer with.
pub(crate) fn check_request(
    sub: &Subsystem,
    private_data: &[u8],
    ird: Option<u16>,
) -> Result<QueueRequest, RejectStatus> {
    let req = CmRequest::parse(private_data).map_err(|e| e.reject_status())?;
    let c = &sub.config;
    // NVMe-oF RDMA binding: HSQSIZE is 0-based; a queue has at least two entries.
    if req.hsqsize == 0 || u32::from(req.hsqsize) + 1 > u32::from(c.max_queue_entries) {
        return Err(RejectStatus::InvalidHsqsize);
    }
    if req.hrqsize == 0 {
        return Err(RejectStatus::InvalidHrqsize);
    }
    // An I/O queue needs a controller to belong to, and a qid within the limit.
    if req.qid > c.max_io_queues || (req.qid != 0 && sub.controller_count() == 0) {
        return Err(RejectStatus::InvalidQid);
    }
    // The target issues RDMA Reads (Connect data, host writes): the initiator must take some.
    let ord = match ird {
        Some(0) => return Err(RejectStatus::InvalidIrd),
        Some(n) => n.min(16),
        None => 16,
    };
    Ok(QueueRequest { qid: req.qid, entries: req.hsqsize + 1, ord })
}

/// A queue-serving thread, as the acceptor sees it.
struct Worker {
    /// The channel its queues' completion queues notify.
    channel: CompletionChannel,
    /// Where new queues go.
    queues: mpsc::Sender<queue::Queue>,
}

/// A queue-serving thread: serves the queues whose completion queues notify `channel`, checks
/// them every `tick`, tears down those that end; until `stop` (or until the acceptor is gone
/// and no queue is left).
fn serve_queues(new: &mpsc::Receiver<queue::Queue>, channel: &CompletionChannel, stop: &AtomicBool, tick: Duration) {
    let mut queues: HashMap<u32, queue::Queue> = HashMap::new();
    let mut closing: Vec<(queue::Queue, Instant)> = Vec::new();
    let mut wcs = [WorkCompletion::default(); 32];
    let mut next_tick = Instant::now() + tick;
    let mut acceptor_gone = false;
    loop {
        loop {
            match new.try_recv() {
                Ok(mut q) => {
                    // Anything that arrived before it was here (its notification may have gone).
                    q.service(&mut wcs);
                    queues.insert(q.cq_id(), q);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    acceptor_gone = true;
                    break;
                }
            }
        }
        if stop.load(Ordering::Acquire) {
            closing.extend(queues.drain().map(|(_, mut q)| {
                q.start_teardown();
                (q, Instant::now())
            }));
            while !closing.is_empty() {
                closing.retain_mut(|(q, since)| !q.settled(*since, &mut wcs));
                std::thread::sleep(Duration::from_millis(5));
            }
            return;
        }
        if acceptor_gone && queues.is_empty() && closing.is_empty() {
            return;
        }
        let wait = next_tick.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if let Some(first) = channel.get_event(Some(wait)) {
            let mut id = Some(first);
            while let Some(i) = id {
                if let Some(q) = queues.get_mut(&i) {
                    q.service(&mut wcs);
                }
                id = channel.pop_event();
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + tick;
            for q in queues.values_mut() {
                q.service(&mut wcs);
                q.housekeeping();
            }
            closing.retain_mut(|(q, since)| !q.settled(*since, &mut wcs));
        }
        let ended: Vec<u32> = queues.iter().filter(|(_, q)| q.is_closing()).map(|(&id, _)| id).collect();
        for id in ended {
            if let Some(mut q) = queues.remove(&id) {
                q.start_teardown();
                closing.push((q, now));
            }
        }
    }
}

fn accept_loop(sub: Arc<Subsystem>, dev: Device, listener: Listener, stop: Arc<AtomicBool>, workers: Vec<Worker>) {
    let mut next = 0usize;
    while !stop.load(Ordering::Acquire) {
        let req = match listener.get_request(Some(sub.config.tick.max(Duration::from_millis(10)))) {
            Ok(r) => r,
            Err(iwarp::Error::TimedOut) => continue,
            Err(e) => {
                if listener.is_closed() {
                    tracing::warn!("listener closed: {e}");
                    break;
                }
                tracing::debug!("connection request failed: {e}");
                continue;
            }
        };
        let peer = req.peer_addr();
        if sub.config.crc == CrcPolicy::Require && !req.crc() {
            tracing::info!(%peer, "rejecting a connection without CRC");
            let _ = req.reject(&[]);
            continue;
        }
        let q = match check_request(&sub, req.private_data(), req.ird()) {
            Ok(q) => q,
            Err(status) => {
                tracing::info!(%peer, ?status, "rejecting a connection request");
                let _ = req.reject(&CmReject::new(status).to_bytes());
                continue;
            }
        };
        let mut params = ConnParams { initiator_depth: q.ord, ..ConnParams::default() };
        // Not asking leaves CRC on exactly when the initiator asked.
        params.mpa.crc = sub.config.crc != CrcPolicy::Follow;
        let worker = &workers[next % workers.len()];
        next = next.wrapping_add(1);
        match queue::Queue::create(&sub, &dev, q, &worker.channel) {
            Ok(queue) => {
                let params = ConnParams { private_data: queue.accept_data().to_vec(), ..params };
                if let Err(e) = req.accept(queue.qp(), &params) {
                    tracing::info!(%peer, "accept failed: {e}");
                    continue;
                }
                tracing::debug!(%peer, qid = q.qid, entries = q.entries, "queue accepted");
                if worker.queues.send(queue).is_err() {
                    tracing::warn!(%peer, "the queue threads are gone");
                }
            }
            Err(e) => {
                tracing::warn!(%peer, "cannot create a queue: {e}");
                let _ = req.reject(&CmReject::new(RejectStatus::NoResources).to_bytes());
            }
        }
    }
    listener.close();
}
