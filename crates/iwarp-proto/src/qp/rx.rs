//! Receive: FPDUs out of the stream, checked and placed where they belong.

use super::reads::{OutstandingKind, Response};
use super::sg::SgCursor;
use super::{Completion, IoRange, Qp, QpEvent, QpEventKind, QpState, Queue, RecvPlan, RecvWqe, WcOpcode, WcStatus};
use crate::mem::{check, Access, AccessError, MrRef, Pin};
use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, FpduHeader, Need, RtrTypes};
use iwarp_wire::rdmap::{
    self, AtomicRequest, AtomicResponse, OpDesc, ReadRequest, Route, Routed, TaggedKind, TaggedRoute, UntaggedKind,
    UntaggedRoute,
};
use iwarp_wire::terminate::{
    CopiedDdpHeader, Mpa, RemoteOperation, RemoteProtection, TaggedBuffer, TerminateCause, TerminateMessage,
    TerminateRepr, UntaggedBuffer,
};
use iwarp_wire::{Msn, Opcode, QueueNumber, Stag};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Payload runs at least this long are read straight into their destination; shorter ones
/// are copied out of the scratch read that carries them with their neighbours. A read per FPDU
/// costs a system call, more than copying a few KiB out of a buffer that is in cache: with
/// direct reads from 512 bytes up, 1–4 KiB messages moved at 0.8–0.9× of TCP's rate (one
/// `readv` each), and at 1.3–3× with this bound (BENCHMARKS.md).
pub(crate) const DIRECT_MIN: usize = 8 << 10;
/// Where reads stop at every header anyway (recent payloads were large), the rest of a payload
/// this long or longer goes direct too: the read is made either way, and direct saves a copy.
const DIRECT_REST_MIN: usize = 512;
/// Scratch reads right before a large payload: trailer, next header and a little payload.
pub const LOOKAHEAD: usize = 64;
/// Scratch reads otherwise.
pub(crate) const SCRATCH_MAX: usize = 64 << 10;
/// A payload at least this long (one that goes direct even after a [`LOOKAHEAD`] read took a
/// little of it) marks the stream as carrying large payloads for the next 8 FPDUs: reads then
/// stop at each header, so that the payload behind it can go direct.
const LARGE_PAYLOAD: usize = DIRECT_MIN + LOOKAHEAD;
/// Longest control body kept in the engine (a Terminate with both headers).
const MAX_BODY: usize = iwarp_wire::terminate::MAX_BODY_LEN;
// Every opcode's RDMAP header fits the body buffer (the opcode table's longest).
const _: () = assert!(rdmap::MAX_BODY_LEN <= MAX_BODY);

/// Where the current FPDU's payload goes.
#[derive(Debug)]
enum Dest {
    /// Nothing (zero-length, or an RTR).
    None,
    /// Into registered memory at `offset` of `mr`.
    Place { mr: MrRef, offset: usize, left: usize },
    /// Into the current receive work request.
    Recv { left: usize },
    /// Into the control body buffer.
    Body,
}

/// An untagged message in progress on queue 0.
#[derive(Debug)]
struct UntaggedMsg {
    msn: Msn,
    /// `None` for a zero-length Send RTR, consumed internally.
    wqe: Option<RecvWqe>,
    cap: u64,
    received: u64,
    /// Where the next payload byte goes in the work request's elements.
    at: SgCursor,
}

/// An untagged message that needs a receive and found none posted, waiting for one
/// ([`Qp::set_recv_wait`]). Its header is [`Rx::header`]; nothing behind it is processed.
#[derive(Debug)]
struct Held {
    route: UntaggedRoute,
    /// The FPDU came whole ([`Deframer::feed_whole`]: its CRC checked, the deframer past it):
    /// its payload is this many bytes at the front of [`Rx::stash`]. `None`: the deframer
    /// stopped after the header, and the stash starts with the rest of the FPDU.
    whole: Option<usize>,
    /// When the wait ends in a Terminate; set by the first [`Qp::handle_timeout`].
    deadline: Option<Instant>,
}

/// A tagged message in progress.
#[derive(Debug)]
struct TaggedMsg {
    kind: TaggedKind,
    stag: Stag,
    next_to: u64,
    mr: Option<MrRef>,
    /// For Read Responses: where the requested range ends.
    limit: u64,
    start_to: u64,
}

#[derive(Debug)]
pub(super) struct Rx {
    deframer: Deframer,
    /// Responder in peer-to-peer mode: the first FPDU must be an RTR of these types.
    awaiting_rtr: Option<RtrTypes>,
    first_seen: bool,
    msn: [Msn; 4],
    header: Option<(FpduHeader, Routed)>,
    dest: Dest,
    untagged: Option<UntaggedMsg>,
    tagged: Option<TaggedMsg>,
    body: [u8; MAX_BODY],
    body_len: usize,
    /// One bit per recent FPDU (newest lowest): its payload was large. While any of the last
    /// eight was, scratch reads stay small so the next large payload can be placed directly.
    big: u8,
    /// The region of the last STag looked up.
    cache: Option<MrRef>,
    /// The regions the last [`RecvPlan::Direct`] reads into, pinned until
    /// [`Qp::handle_placed`] reports the read (see [`crate::mem::Region::pin`]).
    pins: SmallVec<[Pin; 2]>,
    /// Nothing more is processed: the stream failed or ended, or a message waits for a
    /// receive ([`Rx::held`]).
    stopped: bool,
    /// How long a message waits for a receive ([`Qp::set_recv_wait`]); `None`: not at all.
    recv_wait: Option<Duration>,
    /// The message waiting for a receive, if one does.
    held: Option<Held>,
    /// Bytes read from the stream behind the held message's header, in order, not yet
    /// processed (at most one scratch read's worth).
    stash: Vec<u8>,
}

impl Rx {
    pub fn new() -> Self {
        Rx {
            deframer: Deframer::new(DeframerConfig::default()),
            awaiting_rtr: None,
            first_seen: false,
            msn: [Msn::FIRST; 4],
            header: None,
            dest: Dest::None,
            untagged: None,
            tagged: None,
            body: [0; MAX_BODY],
            body_len: 0,
            // Start with small reads: if the first FPDU is large, its payload goes direct.
            big: 1,
            cache: None,
            pins: SmallVec::new(),
            stopped: false,
            recv_wait: None,
            held: None,
            stash: Vec::new(),
        }
    }

    pub fn set_recv_wait(&mut self, wait: Option<Duration>) {
        self.recv_wait = wait;
    }

    /// A message waits for a receive.
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// When the held message's wait ends, once its clock has started.
    pub fn held_deadline(&self) -> Option<Instant> {
        self.held.as_ref().and_then(|h| h.deadline)
    }

    /// Full operation begins with the parameters MPA settled.
    pub fn establish(&mut self, link: &super::LinkParams) {
        self.deframer =
            Deframer::new(DeframerConfig { crc: link.crc, markers: link.recv_markers, max_ulpdu: u16::MAX });
        self.awaiting_rtr = match link.startup {
            super::Startup::Responder { rtr, .. } => rtr,
            super::Startup::Initiator { .. } => None,
        };
    }

    /// `true` between FPDUs (where the stream may end cleanly).
    pub fn at_fpdu_boundary(&self) -> bool {
        self.deframer.is_idle()
    }

    /// The receive work request being filled, if any (to flush it).
    pub fn take_inflight_recv(&mut self) -> Option<RecvWqe> {
        self.untagged.take().and_then(|m| m.wqe)
    }

    /// The next MSN expected on queue `qn` (RFC 5041 §5.3: every queue has its own sequence);
    /// `None` for a queue RDMAP does not use.
    fn next_msn(&self, qn: QueueNumber) -> Option<Msn> {
        usize::try_from(qn.0).ok().and_then(|i| self.msn.get(i)).copied()
    }

    /// Moves queue `qn` on to its next message.
    fn advance_msn(&mut self, qn: QueueNumber) {
        if let Some(m) = usize::try_from(qn.0).ok().and_then(|i| self.msn.get_mut(i)) {
            *m = m.next();
        }
    }

    /// The first `N` bytes of the control body, for a message whose RDMAP header is `N` bytes
    /// long. The header's length is checked against its opcode's row on the DDP header
    /// ([`rdmap::Body::fits`]), so `N` bytes were collected by the end of the FPDU; `N` fits the
    /// buffer (checked at compile time), so the copy cannot go out of bounds.
    fn body_head<const N: usize>(&self) -> [u8; N] {
        const { assert!(N <= MAX_BODY) };
        debug_assert_eq!(self.body_len, N);
        let mut out = [0; N];
        out.copy_from_slice(&self.body[..N]);
        out
    }

    /// The outstanding Reads were completed flushed (disconnect): a Read Response being
    /// placed has no sink any more. The rest of its FPDU is read and dropped; a later segment
    /// finds no Read waiting for it.
    pub fn forget_read_response(&mut self) {
        if self.tagged.as_ref().is_some_and(|m| matches!(m.kind, TaggedKind::ReadResponse)) {
            self.tagged = None;
        }
        if matches!(self.header, Some((_, seg)) if seg.desc.opcode == Opcode::ReadResponse) {
            self.dest = Dest::None;
        }
    }

    /// Drops every region reference.
    pub fn release(&mut self) {
        self.stopped = true;
        self.dest = Dest::None;
        self.tagged = None;
        self.cache = None;
        self.untagged = None;
        self.pins.clear();
        self.held = None;
        self.stash = Vec::new();
    }
}

impl Qp {
    /// How to read the next bytes from the socket. A [`RecvPlan::Direct`] pins the regions
    /// its ranges lie in (a deregistration waits for them) until the read is reported with
    /// [`handle_placed`](Self::handle_placed), which must follow it, with 0 if the read
    /// failed or took nothing. A region found revoked (deregistered since its placement was
    /// validated) ends the stream instead (see [`handle_placed`](Self::handle_placed)).
    #[must_use]
    pub fn poll_recv_plan(&mut self) -> RecvPlan {
        self.rx.pins.clear();
        if self.rx.stopped || !matches!(self.state, QpState::Rts | QpState::Closing) {
            return self.stopped_plan();
        }
        let need = self.rx.deframer.need();
        let direct_min = if self.rx.big != 0 { DIRECT_REST_MIN } else { DIRECT_MIN };
        if let Need::Payload(n) = need {
            if n >= direct_min {
                let mut ranges = SmallVec::new();
                let pins = &mut self.rx.pins;
                let mut revoked = false;
                match &self.rx.dest {
                    Dest::Place { mr, offset, left } => match mr.pin() {
                        Some(pin) => {
                            pins.push(pin);
                            let k = n.min(*left);
                            ranges.push(IoRange::new(mr.mem().ptr_at(*offset), k));
                            return RecvPlan::Direct { ranges, len: k };
                        }
                        None => revoked = true,
                    },
                    Dest::Recv { left } => {
                        let len = n.min(*left);
                        if let Some(UntaggedMsg { wqe: Some(w), at, .. }) = &self.rx.untagged {
                            let mut it = at.pieces(&w.sges, len);
                            for p in &mut it {
                                // One pin per region, however many elements lie in it.
                                if !pins.iter().any(|q| Arc::ptr_eq(q.region(), p.mr)) {
                                    match p.mr.pin() {
                                        Some(pin) => pins.push(pin),
                                        None => revoked = true,
                                    }
                                }
                                ranges.push(IoRange::new(p.mr.mem().ptr_at(p.offset), p.len));
                            }
                            if it.short() == 0 && !revoked {
                                return RecvPlan::Direct { ranges, len };
                            }
                            pins.clear();
                        }
                    }
                    Dest::None | Dest::Body => {}
                }
                if revoked {
                    self.placement_revoked();
                    return RecvPlan::Stop;
                }
            }
        }
        // Recent payloads were large: read no further than the next header and a little
        // beyond, so that the payload after it can go direct (a bulk read here would take most
        // of the next FPDU as well, and leave its rest short again, FPDU after FPDU). A rest
        // too short even for DIRECT_REST_MIN (or with nowhere to go) comes in that same read,
        // never in LOOKAHEAD-sized pieces.
        let max = match need {
            _ if self.rx.big == 0 => SCRATCH_MAX,
            Need::Payload(n) => (n + LOOKAHEAD).min(SCRATCH_MAX),
            _ => LOOKAHEAD,
        };
        RecvPlan::Scratch { max }
    }

    /// Reports that `n` bytes were read into the ranges of the last [`RecvPlan::Direct`] (0
    /// if the read failed or took nothing), and unpins their regions.
    pub fn handle_placed(&mut self, n: usize) {
        self.handle_placed_pinned(n);
        self.rx.pins.clear();
    }

    /// [`handle_placed`](Self::handle_placed) with the pins still held: the CRC reads the bytes
    /// just placed.
    fn handle_placed_pinned(&mut self, n: usize) {
        if n == 0 || self.rx.stopped {
            return;
        }
        self.stats.rx_direct_bytes += n as u64;
        // Fold the placed bytes into the CRC, then advance the destination. `n` is at most the
        // plan's length (a read fills no more than its ranges), which is at most `left`.
        let dest = std::mem::replace(&mut self.rx.dest, Dest::None);
        match dest {
            Dest::Place { mr, offset, left } => {
                let took = mr.mem().slice(offset, n).map_or(0, |s| self.rx.deframer.payload_placed_in(&s));
                debug_assert_eq!(took, n);
                self.rx.dest = Dest::Place { mr, offset: offset + n, left: left - n };
            }
            Dest::Recv { left } => {
                if let Some(UntaggedMsg { wqe: Some(w), at, .. }) = self.rx.untagged.as_mut() {
                    let mut it = at.pieces(&w.sges, n);
                    for p in &mut it {
                        if let Some(b) = p.mr.mem().slice(p.offset, p.len) {
                            self.rx.deframer.payload_placed_in(&b);
                        }
                    }
                    *at = it.end();
                }
                self.rx.dest = Dest::Recv { left: left - n };
            }
            other => self.rx.dest = other,
        }
    }

    /// Consumes `data` as the socket would deliver it, following the receive plans: scratch
    /// reads through [`handle_recv`](Self::handle_recv), direct plans by writing into the
    /// named destination and [`handle_placed`](Self::handle_placed). For transports that are
    /// not a socket (in-memory pipes, benchmarks, tests). Returns the bytes consumed (fewer
    /// than `data.len()` only when the plan says stop).
    pub fn receive_copy(&mut self, data: &[u8]) -> usize {
        self.receive_copy_reads(data).0
    }

    /// [`receive_copy`](Self::receive_copy), also counting the plans followed (each a read on a
    /// socket, where a direct `readv` also takes the lookahead that here is a plan of its own).
    pub(crate) fn receive_copy_reads(&mut self, mut data: &[u8]) -> (usize, usize) {
        let total = data.len();
        let mut reads = 0;
        while !data.is_empty() {
            match self.poll_recv_plan() {
                RecvPlan::Stop | RecvPlan::Wait => break,
                RecvPlan::Scratch { max } => {
                    reads += 1;
                    let n = max.min(data.len());
                    self.handle_recv(&data[..n]);
                    data = &data[n..];
                }
                RecvPlan::Direct { len, .. } => {
                    reads += 1;
                    let n = len.min(data.len());
                    self.write_dest(&data[..n]);
                    self.handle_placed(n);
                    data = &data[n..];
                }
            }
        }
        (total - data.len(), reads)
    }

    /// Writes `p` where a direct plan points (what `readv` would do), without advancing.
    fn write_dest(&mut self, mut data: &[u8]) {
        match &self.rx.dest {
            Dest::Place { mr, offset, .. } => {
                mr.mem().write(*offset, data);
            }
            Dest::Recv { .. } => {
                if let Some(UntaggedMsg { wqe: Some(w), at, .. }) = &self.rx.untagged {
                    for p in at.pieces(&w.sges, data.len()) {
                        p.mr.mem().write(p.offset, &data[..p.len]);
                        data = &data[p.len..];
                    }
                }
            }
            Dest::None | Dest::Body => {}
        }
    }

    /// Processes bytes read from the socket into a scratch buffer. All of them are taken:
    /// bytes behind a message that waits for a receive ([`RecvPlan::Wait`]) are kept, in
    /// order, and processed once it has one.
    pub fn handle_recv(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.rx.stopped {
            // A whole FPDU in the buffer (small messages): header, payload and end at once.
            if let Some((n, h, payload, _)) = self.rx.deframer.feed_whole(data) {
                data = &data[n..];
                self.on_header(h);
                if self.rx.stopped {
                    if let Some(held) = self.rx.held.as_mut() {
                        // It waits for a receive: its payload and end come when it has one.
                        held.whole = Some(payload.len());
                        self.rx.stash.extend_from_slice(payload);
                    }
                    break;
                }
                if !payload.is_empty() {
                    self.on_payload(payload);
                }
                if !self.rx.stopped {
                    self.on_end();
                }
                continue;
            }
            match self.rx.deframer.feed(data) {
                Ok((n, ev)) => {
                    data = &data[n..];
                    match ev {
                        Event::None => {}
                        Event::Header(h) => self.on_header(h),
                        Event::Payload(p) => self.on_payload(p),
                        Event::End(_) => self.on_end(),
                    }
                }
                Err(e) => {
                    // RFC 5044 §8: framing errors carry no copied header.
                    let cause = e.terminate_cause();
                    tracing::debug!(qp = self.cfg.qp_num, error = %e, "framing error");
                    self.fail(cause, None, None);
                }
            }
        }
        if self.rx.held.is_some() {
            self.rx.stash.extend_from_slice(data);
        }
    }

    /// The plan while nothing is processed: [`RecvPlan::Wait`] while a message waits for a
    /// receive and none has come, else [`RecvPlan::Stop`]. A receive that came is taken,
    /// and the bytes kept behind the message are processed, before the plan is made.
    #[cold]
    fn stopped_plan(&mut self) -> RecvPlan {
        if self.rx.held.is_none() || !matches!(self.state, QpState::Rts | QpState::Closing) {
            return RecvPlan::Stop;
        }
        if !self.resume_held() {
            return RecvPlan::Wait;
        }
        self.poll_recv_plan()
    }

    /// A message waits for a receive: tries to take one for it again. If one is there, the
    /// message goes on as if it had found it on arrival, the bytes kept behind it are
    /// processed (another message among them may wait in turn), and it returns `true`.
    fn resume_held(&mut self) -> bool {
        let (Some(held), Some((h, r))) = (self.rx.held.take(), self.rx.header) else { return false };
        self.rx.stopped = false;
        // The same checks and the same lookup as on arrival (they passed then, and nothing
        // they depend on has changed but the receive queue).
        self.untagged_header(&h, r, held.route, h.payload_len());
        if let Some(again) = self.rx.held.as_mut() {
            // Still none: the wait goes on, with its deadline.
            again.whole = held.whole;
            again.deadline = held.deadline;
            return false;
        }
        if self.rx.stopped {
            // Failed (a receive too short for the message): the Terminate is queued.
            return true;
        }
        tracing::trace!(qp = self.cfg.qp_num, "a receive came for the waiting message");
        let stash = std::mem::take(&mut self.rx.stash);
        let mut rest = &stash[..];
        if let Some(k) = held.whole {
            let (payload, after) = rest.split_at(k.min(rest.len()));
            if !payload.is_empty() {
                self.on_payload(payload);
            }
            if !self.rx.stopped {
                self.on_end();
            }
            rest = after;
        }
        self.handle_recv(rest);
        true
    }

    /// An untagged message that needs a receive found none: it waits for one if
    /// [`Qp::set_recv_wait`] allows (in full operation only), else the Terminate of RFC 5041
    /// §7.2. Returns without failing while it waits.
    #[cold]
    fn no_recv(&mut self, h: &FpduHeader, route: UntaggedRoute) {
        if self.rx.recv_wait.is_some() && self.state == QpState::Rts {
            if self.rx.held.is_none() {
                tracing::debug!(qp = self.cfg.qp_num, msn = route.msn.0, "a Send waits for a receive");
                self.rx.held = Some(Held { route, whole: None, deadline: None });
            }
            self.rx.stopped = true;
            self.rx.dest = Dest::None;
            return;
        }
        // RFC 5041 §7.2: no buffer for this MSN (iWARP has no receiver-not-ready retry).
        self.fail(TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), Some(h), None);
    }

    /// The receive-wait clock (see [`Qp::set_recv_wait`]): starts it, or ends a wait that
    /// has run out with the Terminate it put off. Returns `true` if it queued one.
    pub(super) fn recv_wait_timeout(&mut self, now: Instant) -> bool {
        let wait = self.rx.recv_wait.unwrap_or_default();
        let Some(held) = self.rx.held.as_mut() else { return false };
        match held.deadline {
            None => {
                held.deadline = Some(now + wait);
                false
            }
            Some(t) if now >= t => {
                let hdr = self.rx.header.map(|(h, _)| h);
                tracing::debug!(qp = self.cfg.qp_num, "no receive posted in time");
                self.rx.held = None;
                self.rx.stopped = false;
                self.rx.stash = Vec::new();
                self.fail(TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), hdr.as_ref(), None);
                true
            }
            Some(_) => false,
        }
    }

    /// Sends a Terminate for `cause` (RFC 5040 §7.1), copying the offending headers as
    /// Figure 10 says, and goes to [`QpState::Terminate`].
    fn fail(&mut self, cause: TerminateCause, hdr: Option<&FpduHeader>, rdma_hdr: Option<[u8; 28]>) {
        if (self.rx.stopped && self.rx.held.is_none()) || !matches!(self.state, QpState::Rts | QpState::Closing) {
            return;
        }
        self.rx.stopped = true;
        self.events.push_back(QpEvent::LocalError(cause));
        let (with_ddp, with_rdmap) = cause.carries_headers();
        let ddp = match hdr {
            Some(h) if with_ddp => {
                Some(CopiedDdpHeader { segment_length: Some(h.ulpdu_len()), header: h.ddp_header() })
            }
            _ => None,
        };
        let rdmap_header = match &rdma_hdr {
            Some(r) if with_rdmap => Some(&r[..]),
            _ => None,
        };
        let t = TerminateRepr { cause, ddp, rdmap_header };
        let mut body = [0u8; MAX_BODY];
        let mut len = t.buffer_len();
        if t.emit(&mut body[..len]).is_err() {
            // Only a copied header of an impossible length gets here; send the bare cause.
            len = iwarp_wire::terminate::CONTROL_LEN;
            let _ = TerminateRepr::bare(cause).emit(&mut body[..len]);
        }
        // The receive being filled ends with the local status of the error.
        if let Some(w) = self.rx.take_inflight_recv() {
            let status = match cause {
                TerminateCause::UntaggedBuffer(UntaggedBuffer::TooLong) => WcStatus::LocalLength,
                // Its buffer was deregistered (`placement_revoked`).
                TerminateCause::RdmapCatastrophic => WcStatus::LocalProtection,
                _ => WcStatus::LocalQpOperation,
            };
            let mut c = Completion::new(w.wr_id, status, WcOpcode::Recv, Queue::Recv);
            c.cause = Some(cause);
            self.completions.push_back(c);
        }
        self.rx.release();
        self.enter_terminate(cause, &body[..len]);
    }

    fn on_header(&mut self, h: FpduHeader) {
        self.stats.rx_fpdus += 1;
        // RFC 5041 §7.2, RFC 5040 §7.2: the versions, then the opcode's row of the opcode table
        // (iwarp_wire::rdmap::OPCODES) against the segment's buffer model and queue.
        let r = match h.routed() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(qp = self.cfg.qp_num, error = %e, "segment header rejected");
                return self.fail(e.terminate_cause(), Some(&h), None);
            }
        };
        let payload_len = h.payload_len();
        self.rx.big = (self.rx.big << 1) | u8::from(payload_len >= LARGE_PAYLOAD);
        self.rx.body_len = 0;
        self.rx.header = Some((h, r));
        if !self.rx.first_seen {
            // RFC 5044 §7.1.2: the responder may send once it has received an FPDU.
            self.rx.first_seen = true;
            self.tx.allow();
            if let Some(allowed) = self.rx.awaiting_rtr.take() {
                return self.on_rtr(allowed, &h, r, payload_len);
            }
        }
        let rfc7306 = self.link.is_some_and(|l| l.rfc7306);
        // RFC 7306 §8: an RFC 7306 opcode the receiver has not agreed to is unexpected.
        if r.desc.rfc7306 && !rfc7306 {
            tracing::debug!(qp = self.cfg.qp_num, opcode = r.desc.name, "RFC 7306 opcode without RFC 7306");
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), Some(&h), None);
        }
        match r.route {
            Route::Tagged(t) => self.tagged_header(&h, r.last, t, payload_len),
            Route::Untagged(u) => self.untagged_header(&h, r, u, payload_len),
        }
    }

    /// RFC 6581 §9.2: the responder's first FPDU in peer-to-peer mode is the RTR.
    fn on_rtr(&mut self, allowed: RtrTypes, h: &FpduHeader, r: Routed, payload_len: usize) {
        let zero_length = payload_len == 0 && r.last;
        match (r.desc.opcode, r.route) {
            (Opcode::Write, Route::Tagged(_)) if allowed.write && zero_length => {
                self.events.push_back(QpEvent::Ready);
                self.rx.dest = Dest::None;
            }
            (Opcode::Send, Route::Untagged(u)) if allowed.send && zero_length => {
                self.events.push_back(QpEvent::Ready);
                // A zero-length Send RTR is consumed here, not by a posted receive.
                if self.rx.next_msn(u.qn) != Some(u.msn) {
                    return self.fail(TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange), Some(h), None);
                }
                self.rx.untagged =
                    Some(UntaggedMsg { msn: u.msn, wqe: None, cap: 0, received: 0, at: SgCursor::default() });
                self.rx.dest = Dest::None;
            }
            (Opcode::ReadRequest, Route::Untagged(u)) if allowed.read && r.last => {
                self.events.push_back(QpEvent::Ready);
                // A zero-length Read RTR is answered with a zero-length Read Response. It is part
                // of connection setup, so it is served even where IRD is 0.
                if self.rx.next_msn(u.qn) != Some(u.msn) {
                    return self.fail(TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !self.body_fits(h, r.desc, r.last, u.mo, payload_len) {
                    return;
                }
                self.rx.dest = Dest::Body;
            }
            // RFC 6581 §9.3: no matching RTR ⇒ Terminate layer 2 / type 0 / code 7.
            _ => self.fail(TerminateCause::Mpa(Mpa::NoMatchingRtr), Some(h), None),
        }
    }

    /// RFC 5040 §4.4 and §4.8, RFC 7306 §4.2 and §5.2: a message with an RDMAP header is one
    /// segment (the last, at MO 0) of the length its opcode's row gives. Checked on the DDP
    /// header, before any of it is collected; a mismatch is RDMAP Remote Operation
    /// "unspecified" (no RFC names a code; `docs/deviations.md`). Returns whether it fits.
    fn body_fits(&mut self, h: &FpduHeader, desc: &OpDesc, last: bool, mo: u32, len: usize) -> bool {
        if desc.body.fits(last, mo, len) {
            return true;
        }
        self.fail(TerminateCause::RemoteOperation(RemoteOperation::Unspecified), Some(h), None);
        false
    }

    fn lookup(&mut self, stag: Stag) -> Option<MrRef> {
        if let Some(mr) = &self.rx.cache {
            // (A deregistered region is never the answer: its index may be registered again.)
            if mr.stag() == stag && !mr.is_revoked() {
                return Some(Arc::clone(mr));
            }
        }
        let mr = self.stags.lookup(stag);
        self.rx.cache.clone_from(&mr);
        mr
    }

    fn tagged_header(&mut self, h: &FpduHeader, last: bool, t: TaggedRoute, len: usize) {
        let tagged_fail = |t: TaggedBuffer| TerminateCause::TaggedBuffer(t);
        let (stag, to) = (t.stag, t.to.0);
        // The message this segment belongs to: the one in progress, or a new one.
        let msg = match self.rx.tagged.take() {
            Some(msg) => msg,
            None => match t.kind {
                TaggedKind::Write => {
                    // RFC 5041 §7.2: for a zero-length tagged segment "STag and TO MUST NOT be checked".
                    if len == 0 && last {
                        self.rx.dest = Dest::None;
                        return;
                    }
                    let mr = self.lookup(stag);
                    TaggedMsg { kind: TaggedKind::Write, stag, next_to: to, mr, limit: u64::MAX, start_to: to }
                }
                TaggedKind::ReadResponse => {
                    let unexpected = TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode);
                    let Some(entry) = self.orq.oldest() else {
                        return self.fail(unexpected, Some(h), None);
                    };
                    let (sink, sink_stag, sink_to, size) = match &entry.kind {
                        OutstandingKind::Read { sink, sink_stag, sink_to, size } => {
                            (sink.clone(), *sink_stag, *sink_to, *size)
                        }
                        OutstandingKind::Atomic { .. } => return self.fail(unexpected, Some(h), None),
                    };
                    if size == 0 {
                        // RFC 5040 §5.2: a zero-length Read gets a zero-length Response; not checked.
                        if len != 0 {
                            return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
                        }
                        self.rx.dest = Dest::None;
                        self.rx.tagged = Some(TaggedMsg {
                            kind: TaggedKind::ReadResponse,
                            stag,
                            next_to: to,
                            mr: None,
                            limit: to,
                            start_to: to,
                        });
                        return;
                    }
                    // The response is expected where its Read said, as if it continued there.
                    TaggedMsg {
                        kind: TaggedKind::ReadResponse,
                        stag: sink_stag,
                        next_to: sink_to,
                        mr: sink.map(|s| s.mr),
                        limit: sink_to.saturating_add(u64::from(size)),
                        start_to: sink_to,
                    }
                }
            },
        };
        // RFC 5041 §5.2 (and siw): every segment of a tagged message repeats its STag and carries
        // the next TO; siw_qp_rx.c checks a Read Response's first segment the same way against
        // its Read (STag, then TO). One check for both. (The access check below compares the
        // STag with its region's too; comparing it here first reports a segment wrong in both
        // STag and TO as an invalid STag, in siw's order.)
        if msg.kind != t.kind || msg.stag != stag {
            return self.fail(tagged_fail(TaggedBuffer::InvalidStag), Some(h), None);
        }
        if msg.next_to != to {
            return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
        }
        let need = match msg.kind {
            TaggedKind::Write => Access::REMOTE_WRITE,
            TaggedKind::ReadResponse => Access::LOCAL_WRITE,
        };
        // A Read whose sink was deregistered while it was outstanding: this side's error, not
        // the responder's (the check below would blame its STag).
        if msg.kind == TaggedKind::ReadResponse && msg.mr.as_ref().is_some_and(|m| m.is_revoked()) {
            return self.fail(TerminateCause::RdmapCatastrophic, Some(h), None);
        }
        // The one access check: valid → PD → rights → bounds (RFC 5041 §7.2, RFC 5040 §7.2).
        let window = match check(msg.mr.as_ref(), stag, self.cfg.pd, need, to, len as u64) {
            Ok(w) => w,
            Err(e) => return self.fail(e.tagged_cause(), Some(h), None),
        };
        // `check` rejects a range that wraps, so `to + len` does not overflow.
        let end = to + len as u64;
        if end > msg.limit {
            return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
        }
        self.rx.tagged = Some(TaggedMsg { next_to: end, ..msg });
        self.rx.dest = Dest::Place { mr: window.mr, offset: window.offset, left: len };
    }

    fn untagged_header(&mut self, h: &FpduHeader, r: Routed, u: UntaggedRoute, len: usize) {
        let ut = |u: UntaggedBuffer| TerminateCause::UntaggedBuffer(u);
        let UntaggedRoute { kind, qn, msn, mo } = u;
        let last = r.last;
        match kind {
            UntaggedKind::Send => {
                let (received, cap) = match &self.rx.untagged {
                    None => {
                        // RFC 5041 §7.2: the first segment (MO 0) of the next message on its queue.
                        if self.rx.next_msn(qn) != Some(msn) {
                            return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                        }
                        if mo != 0 {
                            return self.fail(ut(UntaggedBuffer::InvalidMo), Some(h), None);
                        }
                        let Some(wqe) = self.take_recv() else {
                            // Wait for one, or RFC 5041 §7.2's "no buffer" Terminate.
                            return self.no_recv(h, u);
                        };
                        let cap = wqe.len();
                        self.rx.untagged =
                            Some(UntaggedMsg { msn, wqe: Some(wqe), cap, received: 0, at: SgCursor::default() });
                        (0, cap)
                    }
                    Some(m) => {
                        if m.msn != msn {
                            return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                        }
                        // siw: a segment must start where the previous one ended.
                        if u64::from(mo) != m.received {
                            return self.fail(ut(UntaggedBuffer::InvalidMo), Some(h), None);
                        }
                        (m.received, m.cap)
                    }
                };
                // RFC 5041 §7.2: "DDP Message too long for available buffer".
                if received + len as u64 > cap {
                    return self.fail(ut(UntaggedBuffer::TooLong), Some(h), None);
                }
                self.rx.dest = Dest::Recv { left: len };
            }
            UntaggedKind::Immediate => {
                // RFC 7306 §4.2: the next message of queue 0, not inside a Send still arriving.
                if self.rx.next_msn(qn) != Some(msn) || self.rx.untagged.is_some() {
                    return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !self.body_fits(h, r.desc, last, mo, len) {
                    return;
                }
                let Some(wqe) = self.take_recv() else {
                    return self.no_recv(h, u);
                };
                self.rx.untagged =
                    Some(UntaggedMsg { msn, wqe: Some(wqe), cap: 0, received: 0, at: SgCursor::default() });
                self.rx.dest = Dest::Body;
            }
            UntaggedKind::ReadRequest | UntaggedKind::AtomicRequest => {
                // RFC 5041 §7.2: MSN must be the next one expected on queue 1.
                if self.rx.next_msn(qn) != Some(msn) {
                    return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !self.body_fits(h, r.desc, last, mo, len) {
                    return;
                }
                let ird = self.link.map_or(0, |l| l.ird) as usize;
                // An RDMA Read beyond the IRD we announced, IRD 0 included (siw: remote
                // operation, code 7).
                if self.irq.pending() >= ird {
                    return self.fail(
                        TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream),
                        Some(h),
                        None,
                    );
                }
                self.rx.dest = Dest::Body;
            }
            UntaggedKind::AtomicResponse => {
                if self.rx.next_msn(qn) != Some(msn) {
                    return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !self.body_fits(h, r.desc, last, mo, len) {
                    return;
                }
                self.rx.dest = Dest::Body;
            }
            UntaggedKind::Terminate => {
                if !self.body_fits(h, r.desc, last, mo, len) {
                    return;
                }
                self.rx.dest = Dest::Body;
            }
        }
    }

    /// Payload bytes from a scratch read. The deframer hands out no more than the payload its
    /// header announced, which is what `left` started at (direct placements take from both), so
    /// `left` does not underflow.
    fn on_payload(&mut self, mut p: &[u8]) {
        self.stats.rx_copied_bytes += p.len() as u64;
        match &mut self.rx.dest {
            Dest::None => {}
            Dest::Body => {
                let at = self.rx.body_len;
                let n = p.len().min(MAX_BODY - at);
                self.rx.body[at..at + n].copy_from_slice(&p[..n]);
                self.rx.body_len += n;
            }
            Dest::Place { mr, offset, left } => {
                // The window was validated for the whole segment: the write fails only if the
                // region was deregistered since (its memory sealed).
                if !mr.mem().write(*offset, p) {
                    return self.placement_revoked();
                }
                *offset += p.len();
                *left -= p.len();
            }
            Dest::Recv { left } => {
                *left -= p.len();
                let mut revoked = false;
                if let Some(UntaggedMsg { wqe: Some(w), at, .. }) = self.rx.untagged.as_mut() {
                    let mut it = at.pieces(&w.sges, p.len());
                    for piece in &mut it {
                        revoked |= !piece.mr.mem().write(piece.offset, &p[..piece.len]);
                        p = &p[piece.len..];
                    }
                    *at = it.end();
                }
                if revoked {
                    self.placement_revoked();
                }
            }
        }
    }

    /// The memory the current payload goes to was deregistered after its placement was
    /// validated (a pin or a copy was refused): nothing more is placed, and the stream ends
    /// as a failed check would end it. For a peer's RDMA Write that is the Terminate of an
    /// invalid STag (what the next segment's check would send); for this side's own buffers
    /// (a receive, a Read's sink), deregistered while a work request still named them (the
    /// application's error, as in the verbs), a local catastrophic error (RFC 5040 §7.2,
    /// RDMAP error type 0), and the receive being filled completes with a local protection
    /// error.
    fn placement_revoked(&mut self) {
        let peer_write = matches!(self.rx.tagged, Some(TaggedMsg { kind: TaggedKind::Write, .. }))
            && matches!(self.rx.dest, Dest::Place { .. });
        let cause =
            if peer_write { AccessError::InvalidStag.tagged_cause() } else { TerminateCause::RdmapCatastrophic };
        tracing::debug!(qp = self.cfg.qp_num, %cause, "placement into deregistered memory refused");
        let hdr = self.rx.header.map(|(h, _)| h);
        self.fail(cause, hdr.as_ref(), None);
    }

    fn on_end(&mut self) {
        let Some((h, r)) = self.rx.header.take() else { return };
        let len = h.payload_len();
        self.rx.dest = Dest::None;
        let last = r.last;
        match r.route {
            Route::Tagged(t) => match t.kind {
                TaggedKind::Write => {
                    if last {
                        self.rx.tagged = None;
                    }
                }
                TaggedKind::ReadResponse => {
                    if last {
                        let Some(m) = self.rx.tagged.take() else { return };
                        // RFC 5040 §5.2: the response carries exactly the requested size.
                        if m.next_to != m.limit {
                            return self.fail(TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds), Some(&h), None);
                        }
                        // next_to only grows from start_to; it equals limit here.
                        self.complete_read((m.next_to - m.start_to) as u32);
                    }
                }
            },
            Route::Untagged(u) => match u.kind {
                UntaggedKind::Send => {
                    if let Some(m) = self.rx.untagged.as_mut() {
                        m.received += len as u64;
                    }
                    if last {
                        self.deliver_send(&h, &r, u.qn);
                    }
                }
                UntaggedKind::Immediate => {
                    let imm = u64::from_be_bytes(self.rx.body_head::<{ rdmap::IMMEDIATE_DATA_LEN }>());
                    self.rx.advance_msn(u.qn);
                    if let Some(w) = self.rx.untagged.take().and_then(|m| m.wqe) {
                        let mut c = Completion::new(w.wr_id, WcStatus::Success, WcOpcode::RecvImmediate, Queue::Recv);
                        c.imm_data = Some(imm);
                        c.solicited = r.desc.solicited;
                        self.push_completion(c);
                    }
                }
                UntaggedKind::ReadRequest => self.on_read_request(&h, u.qn),
                UntaggedKind::AtomicRequest => self.on_atomic_request(&h, u.qn),
                UntaggedKind::AtomicResponse => self.on_atomic_response(&h, u.qn),
                UntaggedKind::Terminate => self.on_terminate(),
            },
        }
    }

    fn deliver_send(&mut self, h: &FpduHeader, r: &Routed, qn: QueueNumber) {
        let Some(m) = self.rx.untagged.take() else { return };
        self.rx.advance_msn(qn);
        let Some(w) = m.wqe else { return };
        let mut c = Completion::new(w.wr_id, WcStatus::Success, WcOpcode::Recv, Queue::Recv);
        c.byte_len = m.received as u32;
        c.solicited = r.desc.solicited;
        if r.desc.invalidates {
            let stag = r.inval_stag;
            // RFC 5040 §5.3: invalidate the STag after delivery, or Terminate "cannot be invalidated".
            match self.stags.invalidate(stag, self.cfg.pd) {
                Ok(()) => c.invalidated_stag = Some(stag),
                Err(e) => {
                    let cause = match e {
                        AccessError::ProtectionDomain => {
                            TerminateCause::RemoteProtection(RemoteProtection::CannotInvalidate)
                        }
                        _ => TerminateCause::RemoteOperation(RemoteOperation::CannotInvalidate),
                    };
                    c.status = WcStatus::RemoteInvalidRequest;
                    c.cause = Some(cause);
                    self.push_completion(c);
                    return self.fail(cause, Some(h), None);
                }
            }
        }
        self.push_completion(c);
    }

    fn on_read_request(&mut self, h: &FpduHeader, qn: QueueNumber) {
        self.rx.advance_msn(qn);
        // The header's length was checked against the row on arrival (`body_fits`).
        let rr = ReadRequest::from_bytes(&self.rx.body_head());
        let source = if rr.size == 0 {
            // RFC 5040 §5.2: a zero-size Read's source "MUST NOT be validated".
            None
        } else {
            let mr = self.lookup(rr.src_stag);
            match check(mr.as_ref(), rr.src_stag, self.cfg.pd, Access::REMOTE_READ, rr.src_to.0, u64::from(rr.size)) {
                Ok(w) => Some(w),
                Err(e) => return self.fail(e.rdmap_cause(), Some(h), Some(rr.to_bytes())),
            }
        };
        // RFC 5040 §5.2: responses go out in the order the requests arrived.
        self.irq.push(Response::Read { sink_stag: rr.sink_stag, sink_to: rr.sink_to.0, source });
    }

    fn on_atomic_request(&mut self, h: &FpduHeader, qn: QueueNumber) {
        self.rx.advance_msn(qn);
        // The header's length was checked against the row on arrival (`body_fits`).
        let req = AtomicRequest::from_bytes(&self.rx.body_head());
        if !req.opcode.is_known() {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), Some(h), None);
        }
        let mr = self.lookup(req.stag);
        let w = match check(mr.as_ref(), req.stag, self.cfg.pd, Access::REMOTE_ATOMIC, req.to.0, 8) {
            Ok(w) => w,
            Err(e) => return self.fail(e.rdmap_cause(), Some(h), None),
        };
        // RFC 7306 §8.2: a misaligned target is a catastrophic error localized to the stream.
        let updated = req
            .to
            .0
            .is_multiple_of(8)
            .then(|| w.mr.mem().update_u64(w.offset, |original| req.apply(original).unwrap_or(original)))
            .flatten();
        let Some(original) = updated else {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream), Some(h), None);
        };
        self.irq.push(Response::Atomic(AtomicResponse { request_id: req.request_id, original }));
    }

    fn on_atomic_response(&mut self, h: &FpduHeader, qn: QueueNumber) {
        self.rx.advance_msn(qn);
        // The header's length was checked against the row on arrival (`body_fits`).
        let resp = AtomicResponse::from_bytes(&self.rx.body_head());
        let sink = match self.orq.oldest().map(|o| &o.kind) {
            Some(OutstandingKind::Atomic { sink, request_id }) if *request_id == resp.request_id => sink,
            _ => return self.fail(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), Some(h), None),
        };
        // The original value lands in the local buffer in host byte order (unless the buffer
        // was deregistered meanwhile).
        if !sink.mr.mem().write(sink.offset, &resp.original.to_ne_bytes()) {
            return self.fail(TerminateCause::RdmapCatastrophic, Some(h), None);
        }
        self.complete_atomic();
    }

    fn on_terminate(&mut self) {
        let body = &self.rx.body[..self.rx.body_len];
        let (cause, layout) = match TerminateMessage::parse(body) {
            Ok(m) => (m.preferred().cause, m.layout),
            Err(_) => (
                TerminateCause::RemoteOperation(RemoteOperation::Unspecified),
                iwarp_wire::terminate::TerminateLayout::Inconsistent,
            ),
        };
        tracing::debug!(qp = self.cfg.qp_num, %cause, ?layout, "Terminate received");
        self.cause.get_or_insert(cause);
        self.events.push_back(QpEvent::RemoteTerminate { cause, layout });
        self.rx.stopped = true;
        self.enter_error(QpEventKind::TerminateReceived, Some(cause));
    }
}
