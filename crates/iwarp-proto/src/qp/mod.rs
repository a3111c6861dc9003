//! The queue pair engine: one iWARP connection in full operation, without I/O.
//!
//! [`Qp`] takes work requests, turns them into FPDUs described as I/O ranges (headers and
//! trailers it wrote, payload straight from registered memory), and takes the bytes the
//! runtime reads from the socket, either into a scratch buffer or straight into the validated
//! destination it names. It produces completions and events.
//!
//! # Driving it
//!
//! The driver sees a narrow surface, in the manner of quinn-proto's connection: it starts
//! the engine with [`Qp::establish`] (and may ask it to [`Qp::disconnect`]); everything else
//! it does is an input, `handle_*`, or a question, `poll_*`. Work requests come from other
//! threads through [`Qp::posts`] and need no driver call.
//!
//! - Inputs: [`Qp::handle_sent`], [`Qp::handle_recv`], [`Qp::handle_placed`] (bytes moved),
//!   [`Qp::handle_transport`] (end of stream, failure), [`Qp::handle_timeout`],
//!   [`Qp::handle_mss`] (the TCP MSS changed).
//! - Outputs: [`Qp::poll_interest`] says what the engine wants now; after any input, drain
//!   in this order:
//!   1. [`Qp::poll_transmit`] until it reports nothing, writing the ranges and reporting with
//!      [`Qp::handle_sent`] (stop on `EAGAIN`, resume when the socket is writable);
//!   2. [`Qp::poll_completion`] until `None`, into the completion queues;
//!   3. [`Qp::poll_event`] until `None`;
//!   4. [`Interest::shutdown`]: when set, shut the socket down;
//!   5. [`Qp::poll_timeout`]: when to call [`Qp::handle_timeout`] next.
//! - One fast path: [`Qp::frame_now`] and [`Qp::sent_now`] frame a small request on an idle
//!   queue pair for the caller to write at once.
//!
//! To receive, ask [`Qp::poll_recv_plan`]: [`RecvPlan::Scratch`] means read up to that many
//! bytes into any buffer and pass them to [`Qp::handle_recv`]; [`RecvPlan::Direct`] names
//! memory ranges that the next bytes of payload belong in: read into them (a `readv` that may
//! also read on into a scratch buffer), report how many landed there with
//! [`Qp::handle_placed`], and pass whatever went to scratch to [`Qp::handle_recv`].
//!
//! # Invariants the runtime relies on
//! Every address in an [`IoRange`] stays valid until the bytes are reported sent (transmit) or
//! placed (receive), or until the next `poll_*`/`handle_*` call (receive), or until the `Qp` is
//! dropped: the engine holds the regions they point into.

mod order;
mod post;
mod reads;
mod rx;
mod sg;
mod state;
mod tx;
mod wr;

pub use post::PostQueues;
pub use rx::LOOKAHEAD;
pub use state::{IllegalTransition, QpEventKind, QpState, TRANSITIONS};
pub use tx::{NowFramed, SEND_CALL_MAX};

pub use wr::{
    Completion, Payload, PostError, Queue, RecvWqe, RemoteAddr, SendOp, SendWqe, Sge, SgeList, WcOpcode, WcStatus,
};

use crate::mem::{PdId, StagTable};
use iwarp_wire::mpa::RtrTypes;
use iwarp_wire::terminate::{TerminateCause, TerminateLayout};
use iwarp_wire::Msn;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Static limits of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpConfig {
    /// Local identifier reported with completions.
    pub qp_num: u32,
    /// Protection domain.
    pub pd: PdId,
    /// Outstanding send work requests.
    pub sq_depth: usize,
    /// Outstanding receive work requests (ignored with a shared receive queue).
    pub rq_depth: usize,
    /// Scatter/gather elements per send work request.
    pub max_send_sge: usize,
    /// Scatter/gather elements per receive work request.
    pub max_recv_sge: usize,
    /// Longest inline payload.
    pub max_inline: usize,
}

pub use iwarp_wire::mpa::RtrType;

/// Who speaks first once MPA negotiation is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// The initiator may send at once; in peer-to-peer mode it first sends this RTR.
    Initiator {
        /// The RTR to send first, if peer-to-peer mode was negotiated.
        rtr: Option<RtrType>,
    },
    /// The responder sends nothing until the initiator's first FPDU arrives (RFC 5044 §7.1.2);
    /// in peer-to-peer mode that FPDU must be an RTR of one of these types, and is consumed.
    Responder {
        /// The RTR types allowed, if peer-to-peer mode was negotiated.
        rtr: Option<RtrTypes>,
        /// Send before the first FPDU arrives, as Linux siw does (a deliberate departure from
        /// RFC 5044 §7.1.2 for applications whose protocol has the passive side speak first
        /// and that know the initiator has finished MPA; see `docs/deviations.md`).
        send_first: bool,
    },
}

/// What MPA negotiation settled for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParams {
    /// Generate and check CRCs.
    pub crc: bool,
    /// Insert markers in what we send (the peer asked with M = 1).
    pub send_markers: bool,
    /// Expect markers in what we receive (we asked).
    pub recv_markers: bool,
    /// Inbound RDMA Read/atomic requests we accept at once.
    pub ird: u32,
    /// Outbound RDMA Read/atomic requests we may have outstanding.
    pub ord: u32,
    /// Largest ULPDU to send (from the TCP MSS, unless `large_fpdus`).
    pub mulpdu: usize,
    /// Both sides agreed to FPDUs larger than the MSS ([`crate::cm::FLAG_LARGE_FPDU_OFFER`]):
    /// `mulpdu` stays at its maximum whatever the MSS does.
    pub large_fpdus: bool,
    /// Both ends support RFC 7306 (Immediate Data, atomics).
    pub rfc7306: bool,
    /// Initiator or responder.
    pub startup: Startup,
}

impl LinkParams {
    /// The parameters of a connection whose MPA exchange settled `neg`, sending ULPDUs of at
    /// most `mulpdu` bytes (the most MPA allows if `neg` agreed to FPDUs larger than the MSS);
    /// `send_first`: a responder may send before the initiator's first FPDU (see
    /// [`Startup::Responder`]).
    pub fn negotiated(neg: &crate::cm::Negotiated, mulpdu: usize, send_first: bool) -> Self {
        let startup = match neg.role {
            crate::cm::Role::Initiator => Startup::Initiator { rtr: neg.send_rtr },
            crate::cm::Role::Responder => Startup::Responder { rtr: neg.expect_rtr, send_first },
        };
        LinkParams {
            crc: neg.crc,
            send_markers: neg.send_markers,
            recv_markers: neg.recv_markers,
            ird: u32::from(neg.ird),
            ord: u32::from(neg.ord),
            mulpdu: if neg.large_fpdus { iwarp_wire::mpa::MAX_ULPDU } else { mulpdu },
            large_fpdus: neg.large_fpdus,
            rfc7306: neg.rfc7306,
            startup,
        }
    }
}

/// A range of memory for `writev` or `readv`, as a raw address. Laid out as a C `struct
/// iovec` (address, then length), so that a slice of them can be handed to the kernel as is.
///
/// Only the engine makes them, over its own transmit arena or over validated windows of
/// regions it holds: each stays valid until the bytes are reported sent
/// ([`Qp::handle_sent`]) or placed ([`Qp::handle_placed`]). Reading the address is safe;
/// what may be done with it is the runtime's `unsafe` contract with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct IoRange {
    addr: usize,
    len: usize,
}

// The layout of `struct iovec`, which the runtime relies on to hand a slice of ranges to the
// kernel without a copy.
const _: () = assert!(
    std::mem::size_of::<IoRange>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<IoRange>() == std::mem::align_of::<libc::iovec>()
        && std::mem::offset_of!(IoRange, addr) == std::mem::offset_of!(libc::iovec, iov_base)
        && std::mem::offset_of!(IoRange, len) == std::mem::offset_of!(libc::iovec, iov_len)
);

impl IoRange {
    /// A range the engine hands out (see the type's docs for what keeps it valid).
    pub(crate) fn new(addr: *const u8, len: usize) -> Self {
        IoRange { addr: addr as usize, len }
    }

    /// Address of the first byte.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for an empty range.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How to read the next bytes of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvPlan {
    /// Read up to `max` bytes into a scratch buffer and pass them to [`Qp::handle_recv`].
    Scratch {
        /// Suggested upper bound (small right before a large payload so that it can go direct).
        max: usize,
    },
    /// The next `len` bytes are payload whose validated destination is `ranges`; read into them
    /// and report with [`Qp::handle_placed`].
    Direct {
        /// Destination ranges, in order, totalling `len`.
        ranges: SmallVec<[IoRange; 4]>,
        /// Bytes of payload due.
        len: usize,
    },
    /// Nothing should be read (the queue pair is terminating or finished).
    Stop,
    /// Nothing should be read until a receive is posted: the next message needs one and none
    /// is posted ([`Qp::set_recv_wait`]). Stop reading (TCP's flow control then holds the
    /// peer back) and ask again once [`PostQueues::take_recv_waiter`] says a receive came
    /// (or at [`Qp::poll_timeout`]); readiness of the socket will not announce bytes that are
    /// already queued.
    Wait,
}

/// What the engine wants from its driver now ([`Qp::poll_interest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Framed bytes wait for the socket: call [`Qp::poll_transmit`], and wait for the socket
    /// to be writable if it takes no more.
    pub unsent: bool,
    /// Work is queued that [`Qp::poll_transmit`] would frame (it may be held back, e.g. by
    /// the outbound read depth, until a response arrives).
    pub work: bool,
    /// [`Qp::poll_completion`] or [`Qp::poll_event`] has something, or
    /// [`Qp::take_srq_limit_reached`] would say `true`.
    pub output: bool,
    /// Shut the socket down: a disconnect or Terminate has drained, or the queue pair is in
    /// error.
    pub shutdown: bool,
    /// A timer runs: call [`Qp::handle_timeout`] after transmitting and at
    /// [`Qp::poll_timeout`].
    pub timer: bool,
    /// A Send waits for a receive to be posted ([`RecvPlan::Wait`]): the stream is not read
    /// meanwhile.
    pub recv_wait: bool,
}

impl Interest {
    /// Something to frame or send.
    pub fn transmit(&self) -> bool {
        self.unsent || self.work
    }
}

/// What happened to the byte stream under the queue pair ([`Qp::handle_transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportEvent {
    /// The peer closed its side (end of file): between FPDUs a clean close, inside one a
    /// transport error.
    Eof,
    /// The connection failed (reset, I/O error).
    Failed,
}

/// Asynchronous events of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpEvent {
    /// The queue pair is usable in both directions (the peer's first FPDU or RTR arrived).
    Ready,
    /// The peer violated the protocol (or a local fault occurred); a Terminate with this cause
    /// was sent and the queue pair is going to error.
    LocalError(TerminateCause),
    /// The peer sent a Terminate.
    RemoteTerminate {
        /// The cause, as the preferred reading gives it.
        cause: TerminateCause,
        /// Which bit layout it was written in.
        layout: TerminateLayout,
    },
    /// The peer closed its side of the stream.
    PeerClosed,
    /// The connection failed.
    TransportError,
    /// The queue pair reached the error state; every outstanding work request has completed.
    Flushed,
}

/// A shared receive queue: receive work requests any attached queue pair may consume.
#[derive(Debug)]
pub struct Srq {
    inner: Mutex<SrqInner>,
    max_sge: usize,
}

#[derive(Debug)]
struct SrqInner {
    queue: VecDeque<RecvWqe>,
    depth: usize,
    limit: Option<usize>,
    /// A queue pair found the queue empty and waits for a receive ([`Srq::take_waiter`]).
    waiter: bool,
}

impl Srq {
    /// A shared receive queue of `depth` work requests with up to `max_sge` elements each.
    pub fn new(depth: usize, max_sge: usize) -> Self {
        Srq { inner: Mutex::new(SrqInner { queue: VecDeque::new(), depth, limit: None, waiter: false }), max_sge }
    }

    /// Posts receive work requests (all or none).
    ///
    /// # Errors
    /// [`PostError::QueueFull`], [`PostError::TooManySges`] or [`PostError::LocalProtection`].
    /// The failing request is the last one taken from `wqes`.
    pub fn post(&self, pd: PdId, wqes: impl IntoIterator<Item = RecvWqe>) -> Result<(), PostError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let start = g.queue.len();
        for w in wqes {
            let r = match post::validate_recv(&w, pd, self.max_sge) {
                Ok(()) if g.queue.len() >= g.depth => Err(PostError::QueueFull),
                r => r,
            };
            if let Err(e) = r {
                // Nobody took from the queue meanwhile: the lock is held throughout.
                g.queue.truncate(start);
                return Err(e);
            }
            g.queue.push_back(w);
        }
        Ok(())
    }

    /// Arms the limit event: [`Srq::take`] reports when the queue falls below `limit`; 0
    /// disarms it.
    pub fn set_limit(&self, limit: usize) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).limit = (limit > 0).then_some(limit);
    }

    /// The armed limit, 0 if none is armed (never armed, disarmed, or reached since).
    pub fn limit(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).limit.unwrap_or(0)
    }

    /// The most work requests it holds.
    pub fn depth(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).depth
    }

    /// The most scatter/gather elements of a work request.
    pub fn max_sge(&self) -> usize {
        self.max_sge
    }

    /// `true` (once) if a queue pair found this queue empty and waits for a receive since
    /// the last call: call it after posting, and if it says so, have the attached queue pairs
    /// whose [`PostQueues::take_recv_waiter`] is set read again.
    pub fn take_waiter(&self) -> bool {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()).waiter)
    }

    /// Takes the oldest work request; the flag says the armed limit was just crossed.
    pub fn take(&self) -> (Option<RecvWqe>, bool) {
        self.take_for(None)
    }

    /// [`take`](Self::take) for a queue pair that waits if the queue is empty: then this
    /// queue's waiter flag and `posts`' are raised under the queue's lock, so that a receive
    /// posted next is followed by [`take_waiter`](Self::take_waiter) and
    /// [`PostQueues::take_recv_waiter`] both saying so.
    fn take_for(&self, posts: Option<&PostQueues>) -> (Option<RecvWqe>, bool) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let w = g.queue.pop_front();
        if let (None, Some(p)) = (&w, posts) {
            g.waiter = true;
            p.set_recv_waiter();
        }
        let crossed = match g.limit {
            Some(l) if w.is_some() && g.queue.len() < l => {
                g.limit = None;
                true
            }
            _ => false,
        };
        (w, crossed)
    }

    /// Work requests queued.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).queue.len()
    }

    /// `true` if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every queued work request (when the queue is destroyed).
    pub fn drain(&self) -> Vec<RecvWqe> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).queue.drain(..).collect()
    }
}

/// Receive-queue counters and the state of one queue pair, for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QpStats {
    /// FPDUs sent.
    pub tx_fpdus: u64,
    /// FPDUs received.
    pub rx_fpdus: u64,
    /// Payload bytes read straight into their destination.
    pub rx_direct_bytes: u64,
    /// Payload bytes copied from a scratch buffer into their destination.
    pub rx_copied_bytes: u64,
    /// Payload bytes sent from registered memory without a copy.
    pub tx_zero_copy_bytes: u64,
    /// Payload bytes copied into the transmit buffer (small payloads).
    pub tx_copied_bytes: u64,
    /// Zero-length Writes sent to wake a silent responder ([`Qp::wake_silent_peer`]).
    pub wake_writes: u64,
}

/// State of [`Qp::wake_silent_peer`].
#[derive(Debug)]
struct Wake {
    gap: Duration,
    /// Unset until this side's first FPDU has gone out.
    next: Option<Instant>,
    left: u32,
}

impl std::ops::AddAssign for QpStats {
    /// Sums counters (of several queue pairs, or both ends of a connection).
    fn add_assign(&mut self, o: QpStats) {
        self.tx_fpdus += o.tx_fpdus;
        self.rx_fpdus += o.rx_fpdus;
        self.rx_direct_bytes += o.rx_direct_bytes;
        self.rx_copied_bytes += o.rx_copied_bytes;
        self.tx_zero_copy_bytes += o.tx_zero_copy_bytes;
        self.tx_copied_bytes += o.tx_copied_bytes;
        self.wake_writes += o.wake_writes;
    }
}

/// One iWARP connection's RDMAP/DDP/MPA engine.
#[derive(Debug)]
pub struct Qp {
    cfg: QpConfig,
    link: Option<LinkParams>,
    state: QpState,
    stags: Arc<StagTable>,
    srq: Option<Arc<Srq>>,
    tx: tx::Tx,
    rx: rx::Rx,
    /// The send queue's completion order.
    order: order::CompletionOrder,
    /// Our outstanding Reads and atomics.
    orq: reads::OutboundReads,
    /// The peer's Reads and atomics we owe responses to.
    irq: reads::InboundReads,
    /// Posted and not yet taken work requests, shared with posting threads.
    posts: Arc<PostQueues>,
    completions: VecDeque<Completion>,
    events: VecDeque<QpEvent>,
    /// A receive this queue pair took from its shared receive queue left fewer there than the
    /// armed limit ([`Qp::take_srq_limit_reached`]).
    srq_limit_reached: bool,
    stats: QpStats,
    /// Initiator: nudges for a responder that has sent nothing yet (see [`Qp::wake_silent_peer`]).
    wake: Option<Wake>,
    /// The first error's cause (sent or received).
    cause: Option<TerminateCause>,
}

impl Qp {
    /// A queue pair in [`QpState::Idle`]: receives may be posted, sends wait for
    /// [`establish`](Self::establish).
    pub fn new(cfg: QpConfig, stags: Arc<StagTable>, srq: Option<Arc<Srq>>) -> Self {
        let posts = Arc::new(PostQueues::new(cfg, srq.is_some()));
        Qp {
            cfg,
            link: None,
            state: QpState::Idle,
            stags,
            srq,
            tx: tx::Tx::new(),
            rx: rx::Rx::new(),
            order: order::CompletionOrder::new(Arc::clone(&posts)),
            orq: reads::OutboundReads::default(),
            irq: reads::InboundReads::default(),
            posts,
            completions: VecDeque::new(),
            events: VecDeque::new(),
            srq_limit_reached: false,
            stats: QpStats::default(),
            wake: None,
            cause: None,
        }
    }

    /// The posting side: other threads post work requests there while this engine is busy
    /// (see [`PostQueues`]).
    pub fn posts(&self) -> &Arc<PostQueues> {
        &self.posts
    }

    /// Moves to `state` and publishes it to the posting side.
    fn set_state(&mut self, state: QpState) {
        self.state = state;
        self.posts.publish(state, self.link.as_ref());
    }

    /// The configuration.
    pub fn config(&self) -> &QpConfig {
        &self.cfg
    }

    /// The negotiated link parameters (after `establish`).
    pub fn link(&self) -> Option<&LinkParams> {
        self.link.as_ref()
    }

    /// The state.
    pub fn state(&self) -> QpState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> QpStats {
        self.stats
    }

    /// The first error's Terminate cause, sent or received.
    pub fn error_cause(&self) -> Option<TerminateCause> {
        self.cause
    }

    /// Enters full operation with the parameters MPA negotiation settled.
    ///
    /// # Errors
    /// [`IllegalTransition`] unless the queue pair is idle.
    pub fn establish(&mut self, link: LinkParams) -> Result<(), IllegalTransition> {
        let state = self.state.on(QpEventKind::Connected)?;
        self.tx.establish(&link);
        self.rx.establish(&link);
        // RFC 5044 §7.1.2: the initiator may send at once, and the queue pair is usable; so is
        // a responder's outside peer-to-peer mode (it sends once the first FPDU arrives).
        // In peer-to-peer mode the responder is ready when the RTR arrives.
        if !matches!(link.startup, Startup::Responder { rtr: Some(_), .. }) {
            self.events.push_back(QpEvent::Ready);
        }
        self.link = Some(link);
        self.set_state(state);
        Ok(())
    }

    /// Initiator: while the responder has sent no FPDU, send a zero-length RDMA Write (STag 1,
    /// TO 0) `first` after this side's first FPDU went out, then at doubling intervals, at most
    /// `count` times; the first FPDU received ends it. Drive it with
    /// [`poll_timeout`](Self::poll_timeout) and [`handle_timeout`](Self::handle_timeout).
    ///
    /// Linux siw, as the MPA responder, sends its Reply before it starts watching the socket
    /// for data: an FPDU that arrives in that gap (the RTR, or the initiator's first message)
    /// stays unread until more bytes arrive, and a protocol whose responder waits for that
    /// message never starts. A zero-length Write is such a byte: its STag and TO must not be
    /// checked (RFC 5041 §7.2), it completes nothing, and siw ignores it once it reads it.
    pub fn wake_silent_peer(&mut self, first: Duration, count: u32) {
        self.wake = (count > 0).then_some(Wake { gap: first, next: None, left: count });
    }

    /// How long an untagged message that needs a receive (Send, Send with Invalidate or
    /// Solicited Event, Immediate Data) waits for one when none is posted; `None` or zero
    /// (the default) terminates at once, as RFC 5041 §7.2 describes.
    ///
    /// iWARP has no receiver-not-ready retry, but a receiver need not read the stream at any
    /// pace: while it waits, the engine reads nothing from that message's FPDU on
    /// ([`RecvPlan::Wait`]), so TCP's flow control holds the peer back, and it goes on when a
    /// receive is posted (to the queue pair or to its shared receive queue). Tagged messages
    /// behind the waiting one wait too (the stream is one byte sequence). If none is posted
    /// within `wait` (counted from the first [`handle_timeout`](Self::handle_timeout) after
    /// the wait began, which [`Interest::timer`] asks for), the connection ends as it would
    /// have at once: a Terminate of DDP untagged buffer "no buffer available" (1/2/0x02). A
    /// local behaviour: nothing on the wire changes.
    pub fn set_recv_wait(&mut self, wait: Option<Duration>) {
        self.rx.set_recv_wait(wait.filter(|w| !w.is_zero()));
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.rx.held_deadline();
        let wake = self.wake.as_ref().and_then(|w| {
            if self.stats.rx_fpdus > 0 || self.state != QpState::Rts {
                return None;
            }
            w.next
        });
        match (held, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: queues a due wake-up (see [`wake_silent_peer`](Self::wake_silent_peer)), or
    /// the Terminate of a message that waited for a receive in vain (see
    /// [`set_recv_wait`](Self::set_recv_wait)); returns `true` if it did, so that there is
    /// something to transmit.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let expired = self.recv_wait_timeout(now);
        self.wake_timeout(now) || expired
    }

    /// The wake-up timer of [`wake_silent_peer`](Self::wake_silent_peer).
    fn wake_timeout(&mut self, now: Instant) -> bool {
        let Some(w) = self.wake.as_mut() else { return false };
        if self.stats.rx_fpdus > 0 || self.state != QpState::Rts || w.left == 0 {
            self.wake = None;
            return false;
        }
        match w.next {
            // The clock starts when this side's first FPDU has been handed to TCP.
            None if self.stats.tx_fpdus > 0 && self.tx.is_drained() => w.next = Some(now + w.gap),
            None => {}
            Some(t) if now >= t => {
                // Between messages, like an RTR; nothing is queued behind it.
                self.tx.queue_rtr(RtrType::Write);
                self.stats.wake_writes += 1;
                w.left -= 1;
                w.gap *= 2;
                w.next = Some(now + w.gap);
                return true;
            }
            Some(_) => {}
        }
        false
    }

    /// The TCP MSS is now `mss` (Linux starts a loopback connection at half its final MSS):
    /// FPDUs follow it from the next one on (RFC 5044 §5.1, with room for markers if sent),
    /// unless both sides agreed to FPDUs larger than the MSS.
    pub fn handle_mss(&mut self, mss: usize) {
        if self.link.is_some_and(|l| l.large_fpdus) {
            return;
        }
        let markers = self.link.is_some_and(|l| l.send_markers);
        let mulpdu = self.tx.set_mulpdu(iwarp_wire::mpa::mulpdu(mss, markers));
        if self.tx.seg() != 0 {
            self.tx.set_seg(mss);
        }
        if let Some(l) = self.link.as_mut() {
            l.mulpdu = mulpdu;
        }
    }

    /// Posts receive work requests (all or none).
    ///
    /// # Errors
    /// [`PostError`] if any is invalid or the queue would overflow.
    pub fn post_recv(&mut self, wqes: impl IntoIterator<Item = RecvWqe>) -> Result<(), PostError> {
        self.posts.post_recv(wqes)
    }

    /// Receive work requests posted and not yet consumed.
    pub fn recv_queued(&self) -> usize {
        self.posts.recv_queued()
    }

    /// Posts send work requests (all or none). They go out in order; call
    /// [`poll_transmit`](Self::poll_transmit) to frame them.
    ///
    /// # Errors
    /// [`PostError`] if any is invalid, needs RFC 7306 the peer lacks, or the queue would
    /// overflow.
    pub fn post_send(&mut self, wqes: impl IntoIterator<Item = SendWqe>) -> Result<(), PostError> {
        self.posts.post_send(wqes)
    }

    /// The checks of [`post_send`](Self::post_send) for one request, against this engine's
    /// own state.
    fn validate_send(&self, w: &SendWqe) -> Result<(), PostError> {
        let gate = post::Gate {
            state: self.state,
            rfc7306: self.link.is_some_and(|l| l.rfc7306),
            ord: self.link.map_or(0, |l| l.ord),
        };
        post::validate_send(&self.cfg, gate, w)
    }

    /// Send work requests posted and not yet completed.
    pub fn send_outstanding(&self) -> usize {
        self.posts.send_outstanding()
    }

    /// The next completion, in the order the verbs guarantee (send completions in posting
    /// order; receive completions in arrival order).
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<Completion> {
        let qp_num = self.cfg.qp_num;
        self.completions.pop_front().map(|c| Completion { qp_num, ..c })
    }

    /// `true` if [`poll_completion`](Self::poll_completion) or [`poll_event`](Self::poll_event)
    /// has something, or [`take_srq_limit_reached`](Self::take_srq_limit_reached) would say so.
    fn has_output(&self) -> bool {
        !self.completions.is_empty() || !self.events.is_empty() || self.srq_limit_reached
    }

    /// What the engine wants from its driver now (see [`Interest`]).
    #[must_use]
    pub fn poll_interest(&self) -> Interest {
        Interest {
            unsent: self.has_unsent(),
            work: self.has_work(),
            output: self.has_output(),
            shutdown: self.wants_shutdown(),
            timer: self.wake.is_some() || self.rx.is_held(),
            recv_wait: self.rx.is_held(),
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<QpEvent> {
        self.events.pop_front()
    }

    /// `true` (once) if a receive this queue pair took from its shared receive queue left
    /// fewer work requests there than the limit armed with [`Srq::set_limit`] (which that
    /// disarmed) since the last call.
    #[must_use]
    pub fn take_srq_limit_reached(&mut self) -> bool {
        std::mem::take(&mut self.srq_limit_reached)
    }

    /// `true` once the socket should be shut down: a disconnect or Terminate has drained, or
    /// the queue pair is in error.
    fn wants_shutdown(&self) -> bool {
        self.state == QpState::Error
    }

    /// Starts a graceful disconnect: no new work is accepted, work not yet framed is flushed,
    /// what is framed drains, then the stream closes. A queue pair that was never connected
    /// goes straight to [`QpState::Error`] and flushes everything posted, receives included.
    pub fn disconnect(&mut self) {
        match self.state.on(QpEventKind::Disconnect) {
            Ok(QpState::Error) => {
                // Never connected (Idle): nothing is framed or on the wire, so everything
                // posted (receives too) completes flushed now, as the verbs require of a
                // queue pair moved to the error state.
                self.set_state(QpState::Error);
                self.flush_all(None);
            }
            Ok(s) => {
                self.set_state(s);
                // Sends posted before the close are flushed with the rest.
                self.tx.take_posted(&self.posts);
                self.flush_unframed();
                // The Reads just flushed take no more of their responses.
                self.rx.forget_read_response();
                if self.tx.is_drained() {
                    self.finish_drain();
                }
            }
            Err(_) => {
                tracing::debug!(qp = self.cfg.qp_num, state = ?self.state, "disconnect in a state that does not need one");
            }
        }
    }

    /// The byte stream ended or failed (see [`TransportEvent`]).
    pub fn handle_transport(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Eof => self.on_eof(),
            TransportEvent::Failed => self.on_transport_error(),
        }
    }

    /// The peer closed the stream (end of file). Between FPDUs this is a clean close; inside
    /// one it is a transport error.
    fn on_eof(&mut self) {
        let clean = self.rx.at_fpdu_boundary();
        if matches!(self.state, QpState::Error) {
            return;
        }
        if self.state == QpState::Terminate {
            // Our Terminate may not have gone out; nothing more to say.
            self.enter_error(QpEventKind::TransportError, None);
            return;
        }
        if clean {
            self.events.push_back(QpEvent::PeerClosed);
            self.enter_error(QpEventKind::PeerClosed, None);
        } else {
            self.events.push_back(QpEvent::TransportError);
            self.enter_error(QpEventKind::TransportError, None);
        }
    }

    /// The connection failed (reset, I/O error).
    fn on_transport_error(&mut self) {
        if self.state == QpState::Error {
            return;
        }
        self.events.push_back(QpEvent::TransportError);
        self.enter_error(QpEventKind::TransportError, None);
    }

    /// Moves to error through `event` and flushes everything outstanding.
    fn enter_error(&mut self, event: QpEventKind, remote: Option<TerminateCause>) {
        match self.state.on(event) {
            Ok(s) => self.set_state(s),
            Err(e) => {
                tracing::debug!(qp = self.cfg.qp_num, error = %e, "forcing error state");
                self.set_state(QpState::Error);
            }
        }
        if self.state == QpState::Error {
            self.flush_all(remote);
        }
    }

    /// Completes every outstanding work request with a flush status (the first outstanding
    /// Read/atomic gets the remote status when a Terminate named one).
    fn flush_all(&mut self, remote: Option<TerminateCause>) {
        // The state is published: no post gets in after these.
        self.tx.take_posted(&self.posts);
        self.flush_tx(remote);
        if let Some(w) = self.rx.take_inflight_recv() {
            self.completions.push_back(Completion::new(w.wr_id, WcStatus::WrFlush, WcOpcode::Recv, Queue::Recv));
        }
        for w in self.posts.drain_recvs() {
            self.completions.push_back(Completion::new(w.wr_id, WcStatus::WrFlush, WcOpcode::Recv, Queue::Recv));
        }
        self.rx.release();
        self.events.push_back(QpEvent::Flushed);
    }

    fn finish_drain(&mut self) {
        if let Ok(s) = self.state.on(QpEventKind::Drained) {
            self.set_state(s);
            self.flush_all(None);
        }
    }

    /// Takes a receive work request for an incoming message.
    fn take_recv(&mut self) -> Option<RecvWqe> {
        match &self.srq {
            Some(srq) => {
                let (w, crossed) = srq.take_for(Some(&self.posts));
                if crossed {
                    tracing::debug!(qp = self.cfg.qp_num, "shared receive queue below its limit");
                    self.srq_limit_reached = true;
                }
                w
            }
            None => self.posts.next_recv(),
        }
    }

    /// RX: the engine reports a completed receive.
    fn push_completion(&mut self, c: Completion) {
        self.completions.push_back(c);
    }

    /// Access to the STag table the engine checks against.
    pub fn stag_table(&self) -> &Arc<StagTable> {
        &self.stags
    }

    /// The MSN this side will use for its next message on queue `qn` (0 to 3).
    pub fn next_tx_msn(&self, qn: usize) -> Msn {
        self.tx.next_msn(qn)
    }
}

#[cfg(test)]
mod tests;
