//! What every handle of one device shares: its configuration and limits, the STag table,
//! the event-loop threads and the counters that name queue pairs and queues. The bottom of
//! the verbs objects: they all hold it, and it knows none of them.

use crate::error::{Error, Result};
use crate::runtime::Worker;
use iwarp_proto::mem::StagTable;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a device is set up.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Event-loop threads that drive connections (each serves many queue pairs).
    pub workers: usize,
    /// Largest send or receive queue depth.
    pub max_qp_wr: usize,
    /// Largest scatter/gather list.
    pub max_sge: usize,
    /// Largest inline payload.
    pub max_inline_data: usize,
    /// Largest IRD/ORD per queue pair.
    pub max_rd_atomic: u16,
    /// Default time to wait for MPA Requests and Replies.
    pub mpa_timeout: Duration,
    /// Seed for STag keys; random when `None`.
    pub seed: Option<u64>,
    /// After handling events, an event-loop thread keeps polling (without sleeping) this long
    /// before it blocks again. Zero (the default) never spins. A short spin (tens of
    /// microseconds) saves the cost of a cross-core wake-up for request/response traffic that
    /// the event loop serves, such as a peer's RDMA Reads, at the price of CPU time.
    pub worker_spin: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            workers: 1,
            max_qp_wr: 32768,
            max_sge: 16,
            max_inline_data: 512,
            max_rd_atomic: 128,
            mpa_timeout: Duration::from_secs(10),
            seed: None,
            worker_spin: Duration::ZERO,
        }
    }
}

/// How a [`crate::Progress::Assisted`] queue pair joins requests an application posts one at
/// a time in a loop ([`crate::Device::set_post_batching`]).
///
/// A post of one request that comes within `gap` of the previous post's return continues a
/// burst. From the fourth post of a burst on, requests are held back (queued, not yet
/// framed) until 256 KiB of them wait; then they go to the socket together, in send calls of
/// up to 128 KiB. Written one call per request, a stream of 64 KiB Writes ran at a half to
/// four fifths of the rate (BENCHMARKS.md, "Unmodified perftest on the drop-in libibverbs").
///
/// Held requests are written by whatever drives the queue pair next: its next post, an
/// empty poll of its send completion queue (an application polls when its burst has filled
/// the send queue, or to wait for a completion), [`crate::CompletionQueue::req_notify`] or
/// [`crate::CompletionQueue::drive`] on it, and, if the application does none of these, the
/// event loop after `flush_after` (at its timer's millisecond resolution). One or two
/// requests posted together, such as a Write and the Send that announces it, are never
/// held; nor are Reads and atomics (what they ask for comes back only once they are out),
/// nor requests of queue pairs whose send completion queue's empty polls do not drive them
/// (more than eight assisted queue pairs on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostBatching {
    /// Posts this close together are a burst; [`Duration::ZERO`] turns holding off. 2 µs by
    /// default: shorter than any round trip over TCP, so a ping-pong's posts (each waits for
    /// the peer's reply) are never a burst.
    pub gap: Duration,
    /// How long held requests may wait for the application before the event loop writes
    /// them. 200 µs by default.
    pub flush_after: Duration,
}

impl Default for PostBatching {
    fn default() -> Self {
        PostBatching { gap: Duration::from_micros(2), flush_after: Duration::from_micros(200) }
    }
}

/// [`PostBatching`] as the queue pairs read it at each post.
#[derive(Debug)]
pub(crate) struct Batching {
    gap_ns: AtomicU64,
    flush_ns: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Batching {
    fn new(b: PostBatching) -> Batching {
        Batching { gap_ns: AtomicU64::new(nanos(b.gap)), flush_ns: AtomicU64::new(nanos(b.flush_after)) }
    }
    pub(crate) fn set(&self, b: PostBatching) {
        self.gap_ns.store(nanos(b.gap), Ordering::Relaxed);
        self.flush_ns.store(nanos(b.flush_after), Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> PostBatching {
        PostBatching { gap: self.gap(), flush_after: self.flush_after() }
    }
    pub(crate) fn gap(&self) -> Duration {
        Duration::from_nanos(self.gap_ns.load(Ordering::Relaxed))
    }
    pub(crate) fn flush_after(&self) -> Duration {
        Duration::from_nanos(self.flush_ns.load(Ordering::Relaxed))
    }
}

/// What a device supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Queue pairs per device (bounded in practice by file descriptors).
    pub max_qp: usize,
    /// Work requests per queue.
    pub max_qp_wr: usize,
    /// Scatter/gather elements per work request.
    pub max_sge: usize,
    /// Scatter/gather elements of an RDMA Read sink (one on iWARP, RFC 5040 §5.2).
    pub max_sge_rd: usize,
    /// Entries per completion queue.
    pub max_cqe: usize,
    /// Inline payload bytes.
    pub max_inline_data: usize,
    /// Inbound Read/atomic depth per queue pair (IRD).
    pub max_qp_rd_atom: u16,
    /// Outbound Read/atomic depth per queue pair (ORD).
    pub max_qp_init_rd_atom: u16,
    /// RFC 7306 atomics and Immediate Data are implemented; whether a connection may use them is
    /// negotiated with the peer (see [`crate::QueuePair::supports_rfc7306`]).
    pub rfc7306: bool,
    /// Largest MPA private data the RFC allows (Linux siw accepts only 256).
    pub max_private_data: usize,
}

pub(crate) struct DeviceInner {
    pub(crate) cfg: DeviceConfig,
    pub(crate) stags: Arc<StagTable>,
    pub(crate) workers: Vec<Worker>,
    next_worker: AtomicUsize,
    next_qpn: AtomicU32,
    next_id: AtomicU32,
    pub(crate) batching: Batching,
}

impl std::fmt::Debug for DeviceInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInner").field("workers", &self.workers.len()).finish()
    }
}

impl DeviceInner {
    /// Starts the event-loop threads of a new device.
    pub(crate) fn start(cfg: DeviceConfig) -> Result<Arc<DeviceInner>> {
        if cfg.workers == 0 {
            return Err(Error::InvalidArgument("a device needs at least one worker".into()));
        }
        let seed = cfg.seed.unwrap_or_else(|| fastrand::u64(..));
        let workers =
            (0..cfg.workers).map(|i| Worker::spawn(i, cfg.worker_spin)).collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(DeviceInner {
            stags: Arc::new(StagTable::new(seed)),
            workers,
            next_worker: AtomicUsize::new(0),
            next_qpn: AtomicU32::new(1),
            next_id: AtomicU32::new(1),
            batching: Batching::new(PostBatching::default()),
            cfg,
        }))
    }

    /// The worker for a new connection (round robin).
    pub(crate) fn pick_worker(&self) -> &Worker {
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
    }
    pub(crate) fn next_qpn(&self) -> u32 {
        self.next_qpn.fetch_add(1, Ordering::Relaxed)
    }
    pub(crate) fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
    pub(crate) fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_qp: 1 << 20,
            max_qp_wr: self.cfg.max_qp_wr,
            max_sge: self.cfg.max_sge,
            max_sge_rd: 1,
            max_cqe: 1 << 22,
            max_inline_data: self.cfg.max_inline_data,
            max_qp_rd_atom: self.cfg.max_rd_atomic,
            max_qp_init_rd_atom: self.cfg.max_rd_atomic,
            rfc7306: true,
            max_private_data: iwarp_wire::mpa::rr::MAX_PRIVATE_DATA - iwarp_wire::mpa::rr::ENHANCED_PARAMS_LEN,
        }
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        for w in &self.workers {
            w.stop();
        }
    }
}
