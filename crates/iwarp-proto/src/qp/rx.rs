//! Receive: FPDUs out of the stream, checked and placed where they belong.

use super::tx::{OrqKind, Response};
use super::{Completion, IoRange, Qp, QpEvent, QpEventKind, QpState, Queue, RecvPlan, RecvWqe, WcOpcode, WcStatus};
use crate::mem::{check, Access, AccessError, MrRef};
use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, FpduHeader, Need, RtrTypes};
use iwarp_wire::rdmap::{self, AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::{
    CopiedDdpHeader, Mpa, RemoteOperation, RemoteProtection, TaggedBuffer, TerminateCause, TerminateMessage,
    TerminateRepr, UntaggedBuffer,
};
use iwarp_wire::{Msn, Opcode, Placement, SegmentHeader, Stag};
use smallvec::SmallVec;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    sge: usize,
    sge_off: usize,
}

/// A tagged message in progress.
#[derive(Debug)]
struct TaggedMsg {
    opcode: Opcode,
    stag: Stag,
    next_to: u64,
    mr: Option<MrRef>,
    /// For Read Responses: where the requested range ends.
    limit: u64,
    start_to: u64,
}

#[derive(Debug)]
pub(super) struct Rx {
    pub deframer: Deframer,
    pub awaiting_rtr: Option<RtrTypes>,
    first_seen: bool,
    msn: [Msn; 4],
    header: Option<(FpduHeader, SegmentHeader)>,
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
    stopped: bool,
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
            stopped: false,
        }
    }

    /// The receive work request being filled, if any (to flush it).
    pub fn take_inflight_recv(&mut self) -> Option<RecvWqe> {
        self.untagged.take().and_then(|m| m.wqe)
    }

    /// The outstanding Reads were completed flushed (disconnect): a Read Response being
    /// placed has no sink any more. The rest of its FPDU is read and dropped; a later segment
    /// finds no Read waiting for it.
    pub fn forget_read_response(&mut self) {
        if self.tagged.as_ref().is_some_and(|m| m.opcode == Opcode::ReadResponse) {
            self.tagged = None;
        }
        if matches!(self.header, Some((_, seg)) if seg.opcode == Opcode::ReadResponse) {
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
    }
}

impl Qp {
    /// How to read the next bytes from the socket.
    #[must_use]
    pub fn poll_recv_plan(&mut self) -> RecvPlan {
        if self.rx.stopped || !matches!(self.state, QpState::Rts | QpState::Closing) {
            return RecvPlan::Stop;
        }
        let need = self.rx.deframer.need();
        let direct_min = if self.rx.big != 0 { DIRECT_REST_MIN } else { DIRECT_MIN };
        if let Need::Payload(n) = need {
            if n >= direct_min {
                let mut ranges = SmallVec::new();
                match &self.rx.dest {
                    Dest::Place { mr, offset, left } => {
                        let k = n.min(*left);
                        ranges.push(IoRange { addr: mr.mem().ptr_at(*offset) as usize, len: k });
                        return RecvPlan::Direct { ranges, len: k };
                    }
                    Dest::Recv { left } => {
                        let mut want = n.min(*left);
                        let len = want;
                        if let Some(UntaggedMsg { wqe: Some(w), sge, sge_off, .. }) = &self.rx.untagged {
                            let (mut i, mut off) = (*sge, *sge_off);
                            while want > 0 && i < w.sges.len() {
                                let s = &w.sges[i];
                                let take = (s.len - off).min(want);
                                if take > 0 {
                                    ranges
                                        .push(IoRange { addr: s.mr.mem().ptr_at(s.offset + off) as usize, len: take });
                                }
                                want -= take;
                                i += 1;
                                off = 0;
                            }
                            if want == 0 {
                                return RecvPlan::Direct { ranges, len };
                            }
                        }
                    }
                    Dest::None | Dest::Body => {}
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

    /// Reports that `n` bytes were read into the ranges of the last [`RecvPlan::Direct`].
    pub fn handle_placed(&mut self, n: usize) {
        if n == 0 || self.rx.stopped {
            return;
        }
        self.stats.rx_direct_bytes += n as u64;
        // Fold the placed bytes into the CRC, then advance the destination.
        let dest = std::mem::replace(&mut self.rx.dest, Dest::None);
        match dest {
            Dest::Place { mr, offset, left } => {
                let took = mr.mem().with_slice(offset, n, |s| self.rx.deframer.payload_placed(s)).unwrap_or(0);
                debug_assert_eq!(took, n);
                self.rx.dest = Dest::Place { mr, offset: offset + n, left: left - n };
            }
            Dest::Recv { left } => {
                let mut want = n;
                if let Some(m) = self.rx.untagged.as_mut() {
                    if let Some(w) = &m.wqe {
                        while want > 0 && m.sge < w.sges.len() {
                            let s = &w.sges[m.sge];
                            let take = (s.len - m.sge_off).min(want);
                            let d = &mut self.rx.deframer;
                            s.mr.mem().with_slice(s.offset + m.sge_off, take, |b| d.payload_placed(b));
                            want -= take;
                            m.sge_off += take;
                            if m.sge_off == s.len {
                                m.sge += 1;
                                m.sge_off = 0;
                            }
                        }
                    }
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
                RecvPlan::Stop => break,
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
    fn write_dest(&mut self, mut p: &[u8]) {
        match &self.rx.dest {
            Dest::Place { mr, offset, .. } => {
                mr.mem().write(*offset, p);
            }
            Dest::Recv { .. } => {
                if let Some(UntaggedMsg { wqe: Some(w), sge, sge_off, .. }) = &self.rx.untagged {
                    let (mut i, mut off) = (*sge, *sge_off);
                    while !p.is_empty() && i < w.sges.len() {
                        let s = &w.sges[i];
                        let take = (s.len - off).min(p.len());
                        s.mr.mem().write(s.offset + off, &p[..take]);
                        p = &p[take..];
                        i += 1;
                        off = 0;
                    }
                }
            }
            Dest::None | Dest::Body => {}
        }
    }

    /// Processes bytes read from the socket into a scratch buffer.
    pub fn handle_recv(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.rx.stopped {
            // A whole FPDU in the buffer (small messages): header, payload and end at once.
            if let Some((n, h, payload, _)) = self.rx.deframer.feed_whole(data) {
                data = &data[n..];
                self.on_header(h);
                if !payload.is_empty() && !self.rx.stopped {
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
    }

    /// Sends a Terminate for `cause` (RFC 5040 §7.1), copying the offending headers as
    /// Figure 10 says, and goes to [`QpState::Terminate`].
    fn fail(&mut self, cause: TerminateCause, hdr: Option<&FpduHeader>, rdma_hdr: Option<[u8; 28]>) {
        if self.rx.stopped || !matches!(self.state, QpState::Rts | QpState::Closing) {
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
        let seg = match h.segment() {
            Ok(s) => s,
            Err(e) => return self.fail(e.terminate_cause(), Some(&h), None),
        };
        let payload_len = h.payload_len();
        self.rx.big = (self.rx.big << 1) | u8::from(payload_len >= LARGE_PAYLOAD);
        self.rx.body_len = 0;
        self.rx.header = Some((h, seg));
        if !self.rx.first_seen {
            // RFC 5044 §7.1.2: the responder may send once it has received an FPDU.
            self.rx.first_seen = true;
            self.tx.allowed = true;
            if let Some(allowed) = self.rx.awaiting_rtr.take() {
                return self.on_rtr(allowed, &h, seg, payload_len);
            }
        }
        let rfc7306 = self.link.is_some_and(|l| l.rfc7306);
        // RFC 7306 §8: an RFC 7306 opcode the receiver has not agreed to is unexpected.
        if seg.opcode.is_rfc7306() && !rfc7306 {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), Some(&h), None);
        }
        match seg.placement {
            Placement::Tagged { stag, to } => self.tagged_header(&h, seg, stag, to.0, payload_len),
            Placement::Untagged { msn, mo, .. } => self.untagged_header(&h, seg, msn, mo, payload_len),
        }
    }

    /// RFC 6581 §9.2: the responder's first FPDU in peer-to-peer mode is the RTR.
    fn on_rtr(&mut self, allowed: RtrTypes, h: &FpduHeader, seg: SegmentHeader, payload_len: usize) {
        let ok = payload_len == 0
            && seg.last
            && match seg.opcode {
                Opcode::Write => allowed.write,
                Opcode::Send => allowed.send,
                Opcode::ReadRequest => false,
                _ => false,
            };
        let read_rtr = allowed.read && seg.opcode == Opcode::ReadRequest && seg.last;
        if !ok && !read_rtr {
            // RFC 6581 §9.3: no matching RTR ⇒ Terminate layer 2 / type 0 / code 7.
            return self.fail(TerminateCause::Mpa(Mpa::NoMatchingRtr), Some(h), None);
        }
        self.events.push_back(QpEvent::Ready);
        match seg.opcode {
            Opcode::Send => {
                // A zero-length Send RTR is consumed here, not by a posted receive.
                if let Placement::Untagged { msn, .. } = seg.placement {
                    if msn != self.rx.msn[0] {
                        return self.fail(TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange), Some(h), None);
                    }
                }
                self.rx.untagged =
                    Some(UntaggedMsg { msn: self.rx.msn[0], wqe: None, cap: 0, received: 0, sge: 0, sge_off: 0 });
                self.rx.dest = Dest::None;
            }
            Opcode::ReadRequest => {
                // A zero-length Read RTR is answered with a zero-length Read Response. It is part
                // of connection setup, so it is served even where IRD is 0.
                if let Placement::Untagged { msn, mo, .. } = seg.placement {
                    if msn != self.rx.msn[1] {
                        return self.fail(TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange), Some(h), None);
                    }
                    if mo != 0 || Some(payload_len) != seg.opcode.fixed_body_len() {
                        return self.fail(TerminateCause::RemoteOperation(RemoteOperation::Unspecified), Some(h), None);
                    }
                }
                self.rx.dest = Dest::Body;
            }
            _ => self.rx.dest = Dest::None,
        }
    }

    fn lookup(&mut self, stag: Stag) -> Option<MrRef> {
        if let Some(mr) = &self.rx.cache {
            if mr.stag() == stag {
                return Some(Arc::clone(mr));
            }
        }
        let mr = self.stags.lookup(stag);
        self.rx.cache.clone_from(&mr);
        mr
    }

    fn tagged_header(&mut self, h: &FpduHeader, seg: SegmentHeader, stag: Stag, to: u64, len: usize) {
        let tagged_fail = |t: TaggedBuffer| TerminateCause::TaggedBuffer(t);
        if let Some(msg) = &self.rx.tagged {
            // siw and RFC 5041 §5.2: later segments of a message repeat its STag, TO advancing.
            if msg.opcode != seg.opcode || msg.stag != stag {
                return self.fail(tagged_fail(TaggedBuffer::InvalidStag), Some(h), None);
            }
            if msg.next_to != to {
                return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
            }
        } else {
            match seg.opcode {
                Opcode::Write => {
                    // RFC 5041 §7.2: for a zero-length tagged segment "STag and TO MUST NOT be checked".
                    if len == 0 && seg.last {
                        self.rx.dest = Dest::None;
                        return;
                    }
                    let mr = self.lookup(stag);
                    self.rx.tagged =
                        Some(TaggedMsg { opcode: Opcode::Write, stag, next_to: to, mr, limit: u64::MAX, start_to: to });
                }
                Opcode::ReadResponse => {
                    let Some(entry) = self.tx.orq.front() else {
                        return self.fail(
                            TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode),
                            Some(h),
                            None,
                        );
                    };
                    let (sink, sink_stag, sink_to, size) = match &entry.kind {
                        OrqKind::Read { sink, sink_stag, sink_to, size } => (sink.clone(), *sink_stag, *sink_to, *size),
                        OrqKind::Atomic { .. } => {
                            return self.fail(
                                TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode),
                                Some(h),
                                None,
                            )
                        }
                    };
                    if size == 0 {
                        // RFC 5040 §5.2: a zero-length Read gets a zero-length Response; not checked.
                        if len != 0 {
                            return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
                        }
                        self.rx.dest = Dest::None;
                        self.rx.tagged = Some(TaggedMsg {
                            opcode: Opcode::ReadResponse,
                            stag,
                            next_to: to,
                            mr: None,
                            limit: to,
                            start_to: to,
                        });
                        return;
                    }
                    // siw_qp_rx.c checks the response against the request: STag, then TO.
                    if stag != sink_stag {
                        return self.fail(tagged_fail(TaggedBuffer::InvalidStag), Some(h), None);
                    }
                    if to != sink_to {
                        return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
                    }
                    self.rx.tagged = Some(TaggedMsg {
                        opcode: Opcode::ReadResponse,
                        stag,
                        next_to: to,
                        mr: sink.map(|s| s.mr),
                        limit: to + u64::from(size),
                        start_to: to,
                    });
                }
                _ => unreachable!("only Write and Read Response are tagged"),
            }
        }
        let msg = self.rx.tagged.as_ref().expect("set above");
        let need = if msg.opcode == Opcode::Write { Access::REMOTE_WRITE } else { Access::LOCAL_WRITE };
        // The one access check: valid → PD → rights → bounds (RFC 5041 §7.2, RFC 5040 §7.2).
        let window = match check(msg.mr.as_ref(), stag, self.cfg.pd, need, to, len as u64) {
            Ok(w) => w,
            Err(e) => return self.fail(e.tagged_cause(), Some(h), None),
        };
        if to + len as u64 > msg.limit {
            return self.fail(tagged_fail(TaggedBuffer::BaseOrBounds), Some(h), None);
        }
        if let Some(m) = self.rx.tagged.as_mut() {
            m.next_to = to + len as u64;
        }
        self.rx.dest = Dest::Place { mr: window.mr, offset: window.offset, left: len };
    }

    fn untagged_header(&mut self, h: &FpduHeader, seg: SegmentHeader, msn: Msn, mo: u32, len: usize) {
        let ut = |u: UntaggedBuffer| TerminateCause::UntaggedBuffer(u);
        let unspecified = TerminateCause::RemoteOperation(RemoteOperation::Unspecified);
        match seg.opcode {
            Opcode::Send | Opcode::SendInvalidate | Opcode::SendSe | Opcode::SendSeInvalidate => {
                match &self.rx.untagged {
                    None => {
                        // RFC 5041 §7.2: the first segment (MO 0) of the next message on queue 0.
                        if msn != self.rx.msn[0] {
                            return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                        }
                        if mo != 0 {
                            return self.fail(ut(UntaggedBuffer::InvalidMo), Some(h), None);
                        }
                        let Some(wqe) = self.take_recv() else {
                            // RFC 5041 §7.2: no buffer for this MSN (iWARP has no receiver-not-ready retry).
                            return self.fail(ut(UntaggedBuffer::NoBuffer), Some(h), None);
                        };
                        let cap = wqe.len();
                        self.rx.untagged =
                            Some(UntaggedMsg { msn, wqe: Some(wqe), cap, received: 0, sge: 0, sge_off: 0 });
                    }
                    Some(m) => {
                        if m.msn != msn {
                            return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                        }
                        // siw: a segment must start where the previous one ended.
                        if u64::from(mo) != m.received {
                            return self.fail(ut(UntaggedBuffer::InvalidMo), Some(h), None);
                        }
                    }
                }
                let m = self.rx.untagged.as_ref().expect("set above");
                // RFC 5041 §7.2: "DDP Message too long for available buffer".
                if m.received + len as u64 > m.cap {
                    return self.fail(ut(UntaggedBuffer::TooLong), Some(h), None);
                }
                self.rx.dest = Dest::Recv { left: len };
            }
            Opcode::ImmediateData | Opcode::ImmediateDataSe => {
                if msn != self.rx.msn[0] || self.rx.untagged.is_some() {
                    return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !seg.last || mo != 0 || len != rdmap::IMMEDIATE_DATA_LEN {
                    return self.fail(unspecified, Some(h), None);
                }
                let Some(wqe) = self.take_recv() else {
                    return self.fail(ut(UntaggedBuffer::NoBuffer), Some(h), None);
                };
                self.rx.untagged = Some(UntaggedMsg { msn, wqe: Some(wqe), cap: 0, received: 0, sge: 0, sge_off: 0 });
                self.rx.dest = Dest::Body;
            }
            Opcode::ReadRequest | Opcode::AtomicRequest => {
                // RFC 5041 §7.2: MSN must be the next one expected on queue 1.
                if msn != self.rx.msn[1] {
                    return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !seg.last || mo != 0 || Some(len) != seg.opcode.fixed_body_len() {
                    return self.fail(unspecified, Some(h), None);
                }
                let ird = self.link.map_or(0, |l| l.ird) as usize;
                // An RDMA Read beyond the IRD we announced, IRD 0 included (siw: remote
                // operation, code 7).
                if self.tx.responses_pending() >= ird {
                    return self.fail(
                        TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream),
                        Some(h),
                        None,
                    );
                }
                self.rx.dest = Dest::Body;
            }
            Opcode::AtomicResponse => {
                if msn != self.rx.msn[3] {
                    return self.fail(ut(UntaggedBuffer::MsnRange), Some(h), None);
                }
                if !seg.last || mo != 0 || len != rdmap::ATOMIC_RESPONSE_LEN {
                    return self.fail(unspecified, Some(h), None);
                }
                self.rx.dest = Dest::Body;
            }
            Opcode::Terminate => {
                if !seg.last || mo != 0 || len > MAX_BODY {
                    return self.fail(unspecified, Some(h), None);
                }
                self.rx.dest = Dest::Body;
            }
            _ => unreachable!("tagged opcodes and reserved ones are rejected by SegmentHeader::parse"),
        }
    }

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
                // The window was validated for the whole segment; write cannot fail.
                let ok = mr.mem().write(*offset, p);
                debug_assert!(ok);
                *offset += p.len();
                *left -= p.len();
            }
            Dest::Recv { left } => {
                *left -= p.len();
                if let Some(m) = self.rx.untagged.as_mut() {
                    if let Some(w) = &m.wqe {
                        while !p.is_empty() && m.sge < w.sges.len() {
                            let s = &w.sges[m.sge];
                            let take = (s.len - m.sge_off).min(p.len());
                            s.mr.mem().write(s.offset + m.sge_off, &p[..take]);
                            p = &p[take..];
                            m.sge_off += take;
                            if m.sge_off == s.len {
                                m.sge += 1;
                                m.sge_off = 0;
                            }
                        }
                    }
                }
            }
        }
    }

    fn on_end(&mut self) {
        let Some((h, seg)) = self.rx.header.take() else { return };
        let len = h.payload_len();
        self.rx.dest = Dest::None;
        match seg.opcode {
            Opcode::Write => {
                if seg.last {
                    self.rx.tagged = None;
                }
            }
            Opcode::ReadResponse => {
                if seg.last {
                    let Some(m) = self.rx.tagged.take() else { return };
                    // RFC 5040 §5.2: the response carries exactly the requested size.
                    if m.next_to != m.limit {
                        return self.fail(TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds), Some(&h), None);
                    }
                    self.complete_read((m.next_to - m.start_to) as u32);
                }
            }
            Opcode::Send | Opcode::SendInvalidate | Opcode::SendSe | Opcode::SendSeInvalidate => {
                if let Some(m) = self.rx.untagged.as_mut() {
                    m.received += len as u64;
                }
                if seg.last {
                    self.deliver_send(&h, seg);
                }
            }
            Opcode::ImmediateData | Opcode::ImmediateDataSe => {
                let imm = rdmap::parse_immediate(&self.rx.body[..self.rx.body_len]).unwrap_or(0);
                self.rx.msn[0] = self.rx.msn[0].next();
                if let Some(w) = self.rx.untagged.take().and_then(|m| m.wqe) {
                    let mut c = Completion::new(w.wr_id, WcStatus::Success, WcOpcode::RecvImmediate, Queue::Recv);
                    c.imm_data = Some(imm);
                    c.solicited = seg.opcode.solicited();
                    self.push_completion(c);
                }
            }
            Opcode::ReadRequest => self.on_read_request(&h),
            Opcode::AtomicRequest => self.on_atomic_request(&h),
            Opcode::AtomicResponse => self.on_atomic_response(&h),
            Opcode::Terminate => self.on_terminate(),
            Opcode::Unknown(_) => {}
        }
    }

    fn deliver_send(&mut self, h: &FpduHeader, seg: SegmentHeader) {
        let Some(m) = self.rx.untagged.take() else { return };
        self.rx.msn[0] = self.rx.msn[0].next();
        let Some(w) = m.wqe else { return };
        let mut c = Completion::new(w.wr_id, WcStatus::Success, WcOpcode::Recv, Queue::Recv);
        c.byte_len = m.received as u32;
        c.solicited = seg.opcode.solicited();
        if seg.opcode.invalidates() {
            // RFC 5040 §5.3: invalidate the STag after delivery, or Terminate "cannot be invalidated".
            match self.stags.invalidate(seg.inval_stag, self.cfg.pd) {
                Ok(()) => c.invalidated = Some(seg.inval_stag),
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

    fn on_read_request(&mut self, h: &FpduHeader) {
        self.rx.msn[1] = self.rx.msn[1].next();
        let body = &self.rx.body[..self.rx.body_len];
        let Ok(rr) = ReadRequest::parse(body) else {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::Unspecified), Some(h), None);
        };
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
        self.tx.responses.push_back(Response::Read { sink_stag: rr.sink_stag, sink_to: rr.sink_to.0, source });
    }

    fn on_atomic_request(&mut self, h: &FpduHeader) {
        self.rx.msn[1] = self.rx.msn[1].next();
        let Ok(req) = AtomicRequest::parse(&self.rx.body[..self.rx.body_len]) else {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::Unspecified), Some(h), None);
        };
        if !req.opcode.is_known() {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), Some(h), None);
        }
        let mr = self.lookup(req.stag);
        let w = match check(mr.as_ref(), req.stag, self.cfg.pd, Access::REMOTE_ATOMIC, req.to.0, 8) {
            Ok(w) => w,
            Err(e) => return self.fail(e.rdmap_cause(), Some(h), None),
        };
        // RFC 7306 §8.2: a misaligned target is a catastrophic error localized to the stream.
        let Some(word) = (req.to.0 % 8 == 0).then(|| w.mr.mem().atomic_u64(w.offset)).flatten() else {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream), Some(h), None);
        };
        let mut original = word.load(Ordering::Acquire);
        loop {
            let new = req.apply(original).unwrap_or(original);
            match word.compare_exchange_weak(original, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => original = now,
            }
        }
        self.tx.responses.push_back(Response::Atomic(AtomicResponse { request_id: req.request_id, original }));
    }

    fn on_atomic_response(&mut self, h: &FpduHeader) {
        self.rx.msn[3] = self.rx.msn[3].next();
        let Ok(resp) = AtomicResponse::parse(&self.rx.body[..self.rx.body_len]) else {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::Unspecified), Some(h), None);
        };
        let ok = matches!(self.tx.orq.front(), Some(o) if matches!(&o.kind, OrqKind::Atomic { request_id, .. } if *request_id == resp.request_id));
        if !ok {
            return self.fail(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), Some(h), None);
        }
        if let Some(o) = self.tx.orq.front() {
            if let OrqKind::Atomic { sink, .. } = &o.kind {
                // The original value lands in the local buffer in host byte order.
                sink.mr.mem().write(sink.offset, &resp.original.to_ne_bytes());
            }
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
