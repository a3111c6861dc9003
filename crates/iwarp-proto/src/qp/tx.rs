//! Transmit: the send queue, read/atomic responses and Terminates, segmented into FPDUs whose
//! payload is referenced in registered memory rather than copied.

use super::order::Done;
use super::reads::{OutstandingKind, Response};
use super::sg::SgCursor;
use super::{
    Completion, IoRange, Payload, PostError, PostQueues, Qp, QpEvent, QpEventKind, QpState, Queue, RtrType, SendOp,
    SendWqe, WcOpcode, WcStatus,
};
use crate::mem::{MemSlice, MrRef, Pin, RawMem, SharedView, Window};
use iwarp_wire::mpa::{Framer, Piece};
use iwarp_wire::rdmap::{AtomicRequest, ReadRequest};
use iwarp_wire::terminate::TerminateCause;
use iwarp_wire::{Msn, Opcode, SegmentHeader, Stag, TaggedOffset};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::Arc;

/// Unsent bytes framed ahead of the socket.
const TX_WINDOW: u64 = 4 << 20;
/// Pieces per batch before framing pauses (a `writev` takes at most 1024).
const MAX_PIECES: usize = 960;
/// The most bytes handed to the socket in one send call (see [`Qp::transmit_calls`]).
/// Linux holds the socket's lock for a whole `sendmsg`, and acknowledgements that arrive
/// meanwhile wait for its end, so one call of megabytes lets the pipe drain; calls of this size
/// keep it moving. Measured over a veth pair and loopback (BENCHMARKS.md, "Send calls"): 64
/// and 128 KiB beat one `writev` of the batch by 1.5-2x, 256 KiB did not.
pub const SEND_CALL_MAX: usize = 128 << 10;
/// Arena bytes per batch before framing pauses until the batch has been sent. Copied FPDUs
/// (segment-sized ones, small messages) join into few pieces, so without this bound the
/// arena of a connection that never empties its batch grows without end, and each time it
/// finally empties it is reallocated and its fresh pages faulted in again.
pub(super) const ARENA_MAX: usize = 4 << 20;
/// Batches in a row using less than a quarter of a large arena before it is shrunk.
const SMALL_BATCHES_BEFORE_SHRINK: u32 = 64;
/// FPDU payloads up to this size are copied next to their header (one piece instead of three).
const COPY_MAX: usize = 2048;
/// Arena capacity always kept across batches; a larger arena is kept while batches use it
/// (see `Batch::advance`).
const ARENA_KEEP: usize = 64 << 10;
/// Longest fixed-size RDMAP header a job carries (the Atomic Request's), from the opcode table.
const MAX_BODY: usize = iwarp_wire::rdmap::MAX_FIXED_BODY_LEN;
/// STag and TO used for our own zero-length RTR messages (Chelsio hardware treats STag 0 as
/// invalid even on zero-length segments; Linux siw uses 1 for the same reason).
const RTR_STAG: Stag = Stag(1);

/// One piece of the transmit batch.
#[derive(Debug, Clone)]
enum TxPiece {
    /// Bytes in the arena.
    Inline { start: usize, len: usize },
    /// Bytes in registered memory; the reference keeps it alive until they are sent.
    Mem { mr: MrRef, offset: usize, len: usize },
}

/// Framed bytes not yet handed to TCP.
#[derive(Debug, Default)]
pub(super) struct Batch {
    arena: Vec<u8>,
    pieces: Vec<TxPiece>,
    /// First piece with unsent bytes.
    first: usize,
    /// Bytes of `pieces[first]` already sent.
    first_off: usize,
    /// Stream offset after the last framed byte.
    framed: u64,
    /// Stream offset of the next byte to send.
    sent: u64,
    /// Batches in a row that used less than a quarter of the arena's capacity.
    small_batches: u32,
    /// Segment alignment (see [`Qp::align_to_segments`]): the segment size, or 0 when off.
    seg: usize,
    /// Aligned: stream offsets at which framed FPDUs end, oldest first (those not yet sent).
    ends: VecDeque<u64>,
    /// Aligned: where the next unsent byte falls in the segment grid of the send call in
    /// progress (0 once a call was taken whole: the kernel starts the next one afresh).
    seg_pos: usize,
    /// Aligned: the calls [`Qp::transmit_calls`] planned last, as their lengths and whether
    /// each ends its grid (`MSG_EOR`), for `advance` to follow the grid through.
    calls: Vec<(usize, bool)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.framed == self.sent
    }

    /// An FPDU ends at the last framed byte (recorded when aligning to segments).
    fn end_fpdu(&mut self) {
        if self.seg != 0 {
            self.ends.push_back(self.framed);
        }
    }

    /// Frames one FPDU whole into the arena with `frame` (payload copied next to its header:
    /// [`frame_copied_into`], [`frame_payload_into`]) and adds it as one piece, joined to the
    /// previous one when they touch. Returns the FPDU's length.
    fn frame_copied(
        &mut self,
        frame: impl FnOnce(&mut Vec<u8>) -> Result<usize, iwarp_wire::Error>,
    ) -> Result<usize, iwarp_wire::Error> {
        let start = self.arena.len();
        frame(&mut self.arena).inspect(|&len| self.push_inline(start, len))
    }

    /// Appends `len` bytes the framer wrote at `start` of the arena, joined to the previous
    /// piece when they touch (fewer ranges per `writev`).
    fn push_inline(&mut self, start: usize, len: usize) {
        match self.pieces.last_mut() {
            Some(TxPiece::Inline { start: s, len: l }) if *s + *l == start => *l += len,
            _ => self.pieces.push(TxPiece::Inline { start, len }),
        }
    }

    fn unsent(&self) -> u64 {
        self.framed - self.sent
    }

    /// Framing pauses: enough is waiting for the socket, or the batch's pieces or arena are
    /// at their bounds (they are reused once the batch has been sent).
    fn is_full(&self) -> bool {
        self.unsent() >= TX_WINDOW || self.pieces.len() >= MAX_PIECES || self.arena.len() >= ARENA_MAX
    }

    /// The unsent bytes as at most `max` ranges in `out`, and their total length; the regions
    /// they lie in are pinned into `pins` (one pin per run of pieces from one region). `None`
    /// if one of those regions is revoked (nothing pinned then).
    fn ranges(&self, out: &mut Vec<IoRange>, max: usize, pins: &mut SmallVec<[Pin; 4]>) -> Option<usize> {
        let mut total = 0;
        for (i, p) in self.pieces[self.first..].iter().enumerate() {
            if out.len() >= max {
                break;
            }
            let skip = if i == 0 { self.first_off } else { 0 };
            let (addr, len) = match p {
                TxPiece::Inline { start, len } => (self.arena.as_ptr().wrapping_add(*start), *len),
                TxPiece::Mem { mr, offset, len } => {
                    if len > &skip && !pins.last().is_some_and(|q| Arc::ptr_eq(q.region(), mr)) {
                        match mr.pin() {
                            Some(pin) => pins.push(pin),
                            None => {
                                pins.clear();
                                return None;
                            }
                        }
                    }
                    (mr.mem().ptr_at(*offset).cast_const(), *len)
                }
            };
            if len > skip {
                out.push(IoRange::new(addr.wrapping_add(skip), len - skip));
                total += len - skip;
            }
        }
        Some(total)
    }

    fn advance(&mut self, mut n: usize) {
        if self.seg != 0 && n > 0 {
            self.follow_grid(n);
        }
        self.sent += n as u64;
        while self.ends.front().is_some_and(|&e| e <= self.sent) {
            self.ends.pop_front();
        }
        while n > 0 && self.first < self.pieces.len() {
            let len = match &self.pieces[self.first] {
                TxPiece::Inline { len, .. } | TxPiece::Mem { len, .. } => *len,
            };
            let left = len - self.first_off;
            if n >= left {
                n -= left;
                self.first += 1;
                self.first_off = 0;
            } else {
                self.first_off += n;
                n = 0;
            }
        }
        if self.first == self.pieces.len() {
            // The arena grows until the batch empties, so its length now is what this batch
            // used. The capacity stays while batches use a quarter of it or more now and then
            // (a streaming connection reuses the same memory batch after batch instead of
            // growing it again, with a `mremap` and fresh page faults each time; `ARENA_MAX`
            // bounds it); after a run of small batches it shrinks to what the last one used.
            let (used, pieces) = (self.arena.len(), self.pieces.len());
            self.pieces.clear();
            self.arena.clear();
            self.first = 0;
            self.first_off = 0;
            let cap = self.arena.capacity();
            self.small_batches = if used < cap / 4 { self.small_batches + 1 } else { 0 };
            if cap > ARENA_KEEP && self.small_batches >= SMALL_BATCHES_BEFORE_SHRINK {
                self.arena.shrink_to(used.max(ARENA_KEEP / 4));
                self.pieces.shrink_to(pieces.max(64));
                self.small_batches = 0;
            }
        }
    }

    /// Where `n` sent bytes of the planned calls leave the segment grid: at 0 after a call
    /// taken whole with its end mark, else inside the call the kernel is still filling.
    fn follow_grid(&mut self, n: usize) {
        let (mut left, mut pos) = (n, self.seg_pos);
        for &(len, eor) in &self.calls {
            if left >= len {
                left -= len;
                pos = if eor { 0 } else { pos + len };
                if left == 0 {
                    break;
                }
            } else {
                pos += left;
                break;
            }
        }
        // Bytes beyond the plan (a transport that ignored it) leave the grid unknown: start
        // afresh, as after a marked end.
        self.seg_pos = if n > self.calls.iter().map(|c| c.0).sum::<usize>() { 0 } else { pos };
        self.calls.clear();
    }

    /// Splits the next `total` unsent bytes into send calls so that no FPDU crosses a TCP
    /// segment boundary. A call with its end marked (`MSG_EOR`) makes the kernel start the
    /// next call in a fresh segment, and within a call it cuts segments every `seg` bytes
    /// from the call's start; so a call runs on while the FPDUs fill whole segments and ends
    /// before the first one that would cross a boundary. A call that stops where the bytes
    /// offered stop inside an FPDU is left unmarked (the rest joins it later).
    fn plan_calls(&mut self, total: usize) {
        self.calls.clear();
        let seg = self.seg;
        let (mut call, mut pos) = (0usize, self.seg_pos);
        let mut at = 0usize;
        for &e in &self.ends {
            let off = (e - self.sent) as usize;
            if off > total {
                break;
            }
            let len = off - at;
            let p = pos + call;
            // RFC 5044 §4 (FPDU alignment): the FPDU must lie within one segment. A call also
            // ends (at an FPDU boundary, so on the grid) before it passes SEND_CALL_MAX.
            if call > 0 && (p / seg != (p + len - 1) / seg || call + len > SEND_CALL_MAX) {
                self.calls.push((call, true));
                (call, pos) = (0, 0);
            }
            call += len;
            at = off;
        }
        if call > 0 {
            self.calls.push((call, true));
        }
        if at < total {
            self.calls.push((total - at, false));
        }
    }

    /// Copies the bytes of every unsent piece that points into registered memory into the
    /// arena, so that nothing left to send reads memory whose requests have completed.
    fn detach(&mut self) {
        for i in self.first..self.pieces.len() {
            if let TxPiece::Mem { mr, offset, len } = &self.pieces[i] {
                let (mr, offset, len) = (MrRef::clone(mr), *offset, *len);
                let start = self.arena.len();
                self.arena.resize(start + len, 0);
                // In bounds: the range was validated when the piece was framed, and the region
                // held since. Copied whole, so that `first_off` still applies. (Zeros stay if
                // the region was deregistered meanwhile: the stream is failing then.)
                let copied = mr.mem().read(offset, &mut self.arena[start..]);
                debug_assert!(copied || mr.is_revoked());
                self.pieces[i] = TxPiece::Inline { start, len };
            }
        }
    }

    /// Copies up to `max` unsent bytes into `out` (in-memory transports; sockets use `ranges`).
    fn copy_unsent(&self, out: &mut Vec<u8>, max: usize) -> usize {
        let start = out.len();
        for (i, p) in self.pieces[self.first..].iter().enumerate() {
            let skip = if i == 0 { self.first_off } else { 0 };
            let room = max - (out.len() - start);
            if room == 0 {
                break;
            }
            match p {
                TxPiece::Inline { start, len } => {
                    let b = &self.arena[start + skip..start + len];
                    out.extend_from_slice(&b[..b.len().min(room)]);
                }
                TxPiece::Mem { mr, offset, len } => {
                    let n = (len - skip).min(room);
                    let at = out.len();
                    out.resize(at + n, 0);
                    mr.mem().read(offset + skip, &mut out[at..]);
                }
            }
        }
        out.len() - start
    }

    fn clear(&mut self) {
        self.sent = self.framed;
        self.ends.clear();
        self.calls.clear();
        self.seg_pos = 0;
        self.advance(0);
        self.pieces.clear();
        self.arena.clear();
        self.first = 0;
        self.first_off = 0;
    }
}

/// Frames one FPDU into `out` with its payload copied next to its header: `inline` when
/// `mems` is empty, else the registered ranges `mems` (validated at post time; their regions
/// are held). Returns the FPDU's length.
fn frame_copied_into(
    framer: &mut Framer,
    header: &[u8],
    inline: &[u8],
    mems: &[(&RawMem, usize, usize)],
    out: &mut Vec<u8>,
) -> Result<usize, iwarp_wire::Error> {
    match *mems {
        [] => framer.frame_to_vec(header, &[inline], out),
        // One range (the usual small Send or Write): no list of slices to build.
        [(m, off, len)] => match m.slice(off, len) {
            Some(p) => framer.frame_to_vec(header, &[p], out),
            None => Err(iwarp_wire::Error::Truncated { needed: len, available: 0 }),
        },
        _ => match mem_slices(mems) {
            Some(slices) => framer.frame_to_vec(header, &slices, out),
            None => Err(iwarp_wire::Error::Truncated { needed: mems.iter().map(|m| m.2).sum(), available: 0 }),
        },
    }
}

/// Registered ranges `(memory, offset, length)` a payload is gathered from.
type Ranges<'a> = SmallVec<[(&'a RawMem, usize, usize); 4]>;

/// The ranges as payload the framer reads by copying; `None` if one is out of bounds (ranges
/// are validated at post time, so only a bug makes it so).
fn mem_slices<'a>(mems: &[(&'a RawMem, usize, usize)]) -> Option<SmallVec<[MemSlice<'a>; 4]>> {
    mems.iter().map(|&(m, off, len)| m.slice(off, len)).collect()
}

/// [`frame_copied_into`] for a request's payload: its inline bytes or its elements (one
/// element, the usual case, without building a list of ranges). An element in the region
/// `view` holds is read under the view's lock instead of taking the region's again.
fn frame_payload_into(
    framer: &mut Framer,
    header: &[u8],
    payload: &Payload,
    view: Option<&SharedView<'_>>,
    out: &mut Vec<u8>,
) -> Result<usize, iwarp_wire::Error> {
    match payload {
        Payload::Inline(b) => frame_copied_into(framer, header, b, &[], out),
        Payload::Sges(s) => match &s[..] {
            [one] => match view.filter(|v| std::ptr::eq(v.mem(), one.mr.mem())) {
                Some(v) => match v.slice(one.offset, one.len) {
                    Some(p) => framer.frame_to_vec(header, &[p], out),
                    None => Err(iwarp_wire::Error::Truncated { needed: one.len, available: 0 }),
                },
                None => frame_copied_into(framer, header, &[], &[(one.mr.mem(), one.offset, one.len)], out),
            },
            more => {
                let mems: Ranges<'_> = more.iter().map(|s| (s.mr.mem(), s.offset, s.len)).collect();
                frame_copied_into(framer, header, &[], &mems, out)
            }
        },
    }
}

/// A request [`Qp::frame_now`] framed for immediate writing, to report with
/// [`Qp::sent_now`].
#[derive(Debug, Clone, Copy)]
#[must_use = "report what the socket took with Qp::sent_now"]
pub struct NowFramed {
    wr_id: u64,
    opcode: WcOpcode,
    signaled: bool,
    /// The FPDU's length (0: framing failed).
    len: usize,
}

/// What a job sends.
#[derive(Debug)]
enum Kind {
    Tagged { opcode: Opcode, stag: Stag, to: u64 },
    Untagged { opcode: Opcode, inval: Stag, body: SmallVec<[u8; MAX_BODY]> },
}

#[derive(Debug)]
enum Data {
    None,
    Sges(super::SgeList),
    Inline(SmallVec<[u8; 64]>),
    Window(Window),
}

#[derive(Debug, Clone, Copy)]
enum Source {
    /// A work request: its place in the completion order, and whether it completes only when
    /// the peer answers (Read, atomics) rather than once sent.
    Wr {
        seq: u64,
        awaits_response: bool,
    },
    Response,
    Internal,
}

/// A message being segmented.
#[derive(Debug)]
struct Job {
    source: Source,
    kind: Kind,
    data: Data,
    total: u64,
    done: u64,
    /// Where the next FPDU's payload starts in `Data::Sges`.
    at: SgCursor,
    msn: Msn,
    /// An Immediate Data message to send after this one (Write with Immediate).
    imm_after: Option<u64>,
    solicited: bool,
}

#[derive(Debug)]
pub(super) struct Tx {
    framer: Framer,
    /// Largest ULPDU to send.
    mulpdu: usize,
    /// Sending is allowed (a responder waits for the first FPDU).
    allowed: bool,
    /// An RTR (or wake-up Write) to send before anything else.
    rtr: Option<RtrType>,
    /// Work requests taken from the posting side, not yet started.
    sq: VecDeque<SendWqe>,
    /// The message being segmented.
    job: Option<Job>,
    /// Responses and the send queue take turns.
    resp_turn: bool,
    /// Next MSN of each untagged queue (RFC 5041 §5.3).
    msn: [Msn; 4],
    batch: Batch,
    /// The regions the ranges last returned by [`Qp::poll_transmit`] lie in, pinned until
    /// [`Qp::handle_sent`].
    pins: SmallVec<[Pin; 4]>,
    /// Framing read from a region that was revoked meanwhile (see [`Qp::transmit_revoked`]).
    revoked: bool,
    /// A Terminate is framed: nothing follows it.
    terminated: bool,
    scratch: Vec<u8>,
    pieces: Vec<Piece>,
}

impl Tx {
    pub fn new() -> Self {
        Tx {
            framer: Framer::new(true, false),
            mulpdu: iwarp_wire::mpa::MIN_MULPDU,
            allowed: false,
            rtr: None,
            sq: VecDeque::new(),
            job: None,
            resp_turn: false,
            msn: [Msn::FIRST; 4],
            batch: Batch::default(),
            pins: SmallVec::new(),
            revoked: false,
            terminated: false,
            scratch: Vec::new(),
            pieces: Vec::new(),
        }
    }

    /// Full operation begins with the parameters MPA settled.
    pub fn establish(&mut self, link: &super::LinkParams) {
        self.framer = Framer::new(link.crc, link.send_markers);
        self.set_mulpdu(link.mulpdu);
        (self.allowed, self.rtr) = match link.startup {
            // RFC 5044 §7.1.2: the initiator may send at once (its RTR first in peer-to-peer mode).
            super::Startup::Initiator { rtr } => (true, rtr),
            // RFC 5044 §7.1.2: the responder "MUST receive and validate at least one FPDU
            // before sending any FPDU" (unless the application waived it, outside RTR mode).
            super::Startup::Responder { rtr, send_first } => (send_first && rtr.is_none(), None),
        };
    }

    /// Sets the largest ULPDU to send (clamped to what MPA allows) from the next FPDU on;
    /// returns it.
    pub fn set_mulpdu(&mut self, mulpdu: usize) -> usize {
        self.mulpdu = mulpdu.clamp(iwarp_wire::mpa::MIN_MULPDU, iwarp_wire::mpa::MAX_ULPDU);
        self.mulpdu
    }

    /// Segment alignment: FPDUs end where TCP segments of `seg` bytes do (0: off).
    pub fn set_seg(&mut self, seg: usize) {
        self.batch.seg = seg;
    }

    /// The segment size FPDUs are aligned to (0: not aligned).
    pub fn seg(&self) -> usize {
        self.batch.seg
    }

    /// Sending may start (the responder received its first FPDU).
    pub fn allow(&mut self) {
        self.allowed = true;
    }

    /// Sends a zero-length message of `rtr`'s type before anything else, unless one is due.
    pub fn queue_rtr(&mut self, rtr: RtrType) {
        self.rtr.get_or_insert(rtr);
    }

    /// `true` when every framed byte has been handed to TCP.
    pub fn is_drained(&self) -> bool {
        self.batch.is_empty()
    }

    /// Takes what other threads posted onto the send queue, in order.
    pub fn take_posted(&mut self, posts: &PostQueues) {
        posts.take_sends(&mut self.sq);
    }

    /// The MSN the next message on queue `qn` (0 to 3) takes.
    pub fn next_msn(&self, qn: usize) -> Msn {
        self.msn[qn.min(3)]
    }

    /// Frames one FPDU of the current job into the batch; returns `true` when the job is
    /// finished. The job stays in place (it is large): only its cursor moves.
    fn frame_one(&mut self, stats: &mut super::QpStats) -> bool {
        let Some(job) = self.job.as_mut() else { return true };
        let (hdr_len, body_len) = match &job.kind {
            Kind::Tagged { .. } => (iwarp_wire::ddp::TAGGED_HEADER_LEN, 0),
            Kind::Untagged { body, .. } => (iwarp_wire::ddp::UNTAGGED_HEADER_LEN, body.len()),
        };
        let room = self.mulpdu.saturating_sub(hdr_len + body_len).max(1) as u64;
        let n = (job.total - job.done).min(room) as usize;
        let last = job.done + n as u64 == job.total;
        let header = match &job.kind {
            Kind::Tagged { opcode, stag, to } => {
                SegmentHeader::tagged(*opcode, last, *stag, TaggedOffset(to.wrapping_add(job.done)))
            }
            Kind::Untagged { opcode, inval, .. } => {
                let mut h = SegmentHeader::untagged(*opcode, last, job.msn, job.done as u32);
                h.inval_stag = *inval;
                h
            }
        };
        let (hbytes, hlen) = header.to_bytes();
        self.scratch.clear();
        self.scratch.extend_from_slice(&hbytes[..hlen]);
        if let Kind::Untagged { body, .. } = &job.kind {
            self.scratch.extend_from_slice(body);
        }
        // The payload ranges for [done, done + n).
        let mut parts: SmallVec<[(&MrRef, usize, usize); 4]> = SmallVec::new();
        let mut inline: &[u8] = &[];
        match &job.data {
            Data::None => {}
            Data::Inline(b) => {
                let s = job.done as usize;
                inline = &b[s..s + n];
            }
            Data::Window(w) => parts.push((&w.mr, w.offset + job.done as usize, n)),
            Data::Sges(sges) => {
                let mut it = job.at.pieces(sges, n);
                parts.extend((&mut it).map(|p| (p.mr, p.offset, p.len)));
                job.at = it.end();
            }
        }
        let batch = &mut self.batch;
        let framer = &mut self.framer;
        let header = &self.scratch;
        let mems: Ranges<'_> = parts.iter().map(|&(m, o, l)| (m.mem(), o, l)).collect();
        let framed = if n <= COPY_MAX || parts.is_empty() {
            // Small payload: copied next to its header, the whole FPDU one piece.
            if n > 0 && !matches!(job.data, Data::None) {
                stats.tx_copied_bytes += n as u64;
            }
            batch.frame_copied(|arena| frame_copied_into(framer, header, inline, &mems, arena))
        } else {
            stats.tx_zero_copy_bytes += n as u64;
            let pieces = &mut self.pieces;
            pieces.clear();
            let r = match mem_slices(&mems) {
                Some(slices) => framer.frame(header, &slices, &mut batch.arena, pieces),
                None => Err(iwarp_wire::Error::Truncated { needed: n, available: 0 }),
            };
            if r.is_ok() {
                for p in pieces.iter() {
                    batch.pieces.push(match *p {
                        Piece::Inline { start, len } => TxPiece::Inline { start, len },
                        Piece::Payload { index, start, len } => {
                            let (m, off, _) = parts[index];
                            TxPiece::Mem { mr: MrRef::clone(m), offset: off + start, len }
                        }
                    });
                }
            }
            r
        };
        // A region revoked while it was read from gave zeros (or is going): never sent.
        if parts.iter().any(|(m, _, _)| m.is_revoked()) {
            self.revoked = true;
        }
        match framed {
            Ok(len) => {
                batch.framed += len as u64;
                batch.end_fpdu();
                stats.tx_fpdus += 1;
            }
            Err(e) => {
                // Sizes are bounded by MULPDU and ranges by validation, so this cannot happen;
                // dropping the FPDU keeps the stream consistent.
                tracing::error!(error = %e, "framing failed");
                return true;
            }
        }
        job.done += n as u64;
        last
    }
}

impl Qp {
    /// Flushes work not yet framed (disconnect): the send queue, the current job's request,
    /// outstanding Reads/atomics and responses not started.
    pub(super) fn flush_unframed(&mut self) {
        if let Some(job) = self.tx.job.take() {
            if let Source::Wr { seq, .. } = job.source {
                self.order.finish(seq, Done::FLUSH);
                // Its first FPDUs may be framed and unsent: they are the stream's now and still
                // go out, but no longer from the buffer the request gives back.
                self.tx.batch.detach();
            }
        }
        self.irq.clear();
        while let Some(o) = self.orq.pop() {
            if let Some(seq) = o.seq {
                self.order.finish(seq, Done::FLUSH);
            }
        }
        // Requests never started complete after those already framed, which may still be
        // waiting to be handed to TCP: through the completion order, not around it.
        for w in self.tx.sq.drain(..) {
            self.order.push_done(w.wr_id, w.op.wc_opcode(), Done::FLUSH);
        }
        self.order.release(&mut self.completions);
    }

    /// Flushes everything sent or to send; the oldest outstanding Read/atomic gets the remote
    /// status when the peer's Terminate reported a remote protection or operation error. Once
    /// a Terminate is being sent (`terminated`), the framed bytes stay for it to follow,
    /// copied out of the memory of the requests just completed.
    pub(super) fn flush_tx(&mut self, remote: Option<TerminateCause>) {
        if let Some(first) = self.orq.oldest().and_then(|o| o.seq) {
            let status = match remote {
                Some(TerminateCause::RemoteProtection(_)) => Some(WcStatus::RemoteAccess),
                Some(TerminateCause::RemoteOperation(_)) => Some(WcStatus::RemoteOperation),
                _ => None,
            };
            if let Some(status) = status {
                self.order.finish(first, Done { status, byte_len: 0, cause: remote });
            }
        }
        self.order.flush_held();
        self.flush_unframed();
        self.order.flush_rest();
        self.order.release(&mut self.completions);
        if !self.tx.terminated || self.tx.batch.is_empty() {
            self.tx.batch.clear();
        } else {
            // The framed bytes stay for the Terminate to follow them, but the requests they
            // were framed from have just completed: their buffers are the application's again.
            self.tx.batch.detach();
        }
    }

    /// Frames pending work into the transmit batch and returns its unsent bytes as I/O ranges
    /// (at most `max` ranges) in `out`; the return value is their total length. Zero means
    /// nothing to send.
    ///
    /// The registered regions the ranges lie in are pinned (a deregistration waits for them)
    /// until [`handle_sent`](Self::handle_sent), which must follow every call that returned
    /// ranges, with 0 if the write failed or took nothing. A region found revoked
    /// (deregistered while a request or response still sent from it) fails the queue pair
    /// instead (see [`QpEvent::LocalError`]) and nothing is returned.
    pub fn poll_transmit(&mut self, out: &mut Vec<IoRange>, max: usize) -> usize {
        out.clear();
        self.tx.pins.clear();
        if matches!(self.state, QpState::Rts) && self.tx.allowed {
            self.fill();
        }
        if !self.tx.revoked {
            if let Some(n) = self.tx.batch.ranges(out, max, &mut self.tx.pins) {
                return n;
            }
        }
        out.clear();
        self.transmit_revoked();
        0
    }

    /// Aligns FPDUs to TCP segments of `mss` bytes (RFC 5044 §4, "FPDU Alignment"), for a
    /// peer that reassembles FPDUs from segments (Linux siw misreads a CRC split across two):
    /// from now on [`transmit_calls`](Self::transmit_calls) says how to cut what
    /// [`poll_transmit`](Self::poll_transmit) returns into send calls, each handed to the
    /// socket with `MSG_EOR` so that the kernel does not join it to the next. Only for
    /// segment-sized FPDUs: ignored when both ends agreed to larger ones. FPDUs already
    /// framed are aligned too; [`handle_mss`](Self::handle_mss) follows the MSS.
    pub fn align_to_segments(&mut self, mss: usize) {
        if self.link.is_some_and(|l| l.large_fpdus) || mss == 0 {
            return;
        }
        self.tx.set_seg(mss);
        // Everything still framed is whole FPDUs from here on (nothing of it was sent in a
        // grid): record where the batch ends; earlier FPDU ends inside it are unknown, so the
        // first call takes it whole.
        let b = &mut self.tx.batch;
        b.ends.clear();
        if !b.is_empty() {
            b.ends.push_back(b.framed);
        }
        b.seg_pos = 0;
    }

    /// `true` while FPDUs are aligned to segments ([`align_to_segments`](Self::align_to_segments)).
    pub fn is_aligned(&self) -> bool {
        self.tx.seg() != 0
    }

    /// How to hand the `total` bytes [`poll_transmit`](Self::poll_transmit) just returned to
    /// the socket when FPDUs are aligned to segments: one send call per `(length, end)` in
    /// `out`, in order, each marked `MSG_EOR` when `end` is set; stop at the first call the
    /// socket takes only in part, and report the sum with [`handle_sent`](Self::handle_sent)
    /// as usual. Calls are at most [`SEND_CALL_MAX`] bytes (but for a single FPDU longer than
    /// that); without alignment they are cut at that size, unmarked.
    pub fn transmit_calls(&mut self, total: usize, out: &mut Vec<(usize, bool)>) {
        out.clear();
        if self.tx.seg() == 0 {
            let mut left = total;
            while left > 0 {
                // A short rest joins the call before it rather than taking a call of its own.
                let c = if left <= SEND_CALL_MAX + SEND_CALL_MAX / 4 { left } else { SEND_CALL_MAX };
                out.push((c, false));
                left -= c;
            }
            return;
        }
        self.tx.batch.plan_calls(total);
        out.extend_from_slice(&self.tx.batch.calls);
    }

    /// Memory that framed bytes lie in, or that a message was being framed from, was
    /// deregistered: those bytes cannot be sent, and the stream cannot go on without them
    /// (other FPDUs may follow them, one may be partly sent). A local catastrophic error (RFC
    /// 5040 §7.2, RDMAP error type 0): the queue pair goes to [`QpState::Error`], everything
    /// outstanding completes flushed, nothing more is sent, and the runtime closes the
    /// connection. Deregistering memory that posted work requests still use is the
    /// application's error (as in the verbs); the stack only guarantees it never touches the
    /// memory afterwards.
    fn transmit_revoked(&mut self) {
        self.tx.revoked = false;
        self.tx.pins.clear();
        if self.state == QpState::Error {
            return;
        }
        let cause = TerminateCause::RdmapCatastrophic;
        tracing::debug!(qp = self.cfg.qp_num, %cause, "transmit from deregistered memory refused");
        self.cause.get_or_insert(cause);
        self.events.push_back(QpEvent::LocalError(cause));
        // No Terminate follows: what is framed is dropped with the rest.
        self.tx.terminated = false;
        self.enter_error(QpEventKind::TransportError, None);
    }

    /// The transmit arena's length and capacity (tests of its bounds).
    #[cfg(test)]
    pub(super) fn tx_arena(&self) -> (usize, usize) {
        (self.tx.batch.arena.len(), self.tx.batch.arena.capacity())
    }

    /// Frames pending work and moves up to `max` bytes of it into `out`, as if a socket took
    /// them: for transports that are not a socket (in-memory pipes, benchmarks, tests).
    /// Returns the byte count.
    pub fn transmit_copy(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let mut ranges = Vec::new();
        self.poll_transmit(&mut ranges, usize::MAX);
        let n = self.tx.batch.copy_unsent(out, max);
        self.handle_sent(n);
        n
    }

    /// `true` if framed bytes wait to be sent.
    pub(super) fn has_unsent(&self) -> bool {
        !self.tx.batch.is_empty()
    }

    /// `true` if work is queued that [`poll_transmit`](Self::poll_transmit) would frame.
    pub(super) fn has_work(&self) -> bool {
        self.tx.allowed
            && self.state == QpState::Rts
            && (self.tx.job.is_some()
                || self.tx.rtr.is_some()
                || !self.irq.is_idle()
                || !self.tx.sq.is_empty()
                || self.posts.has_sends())
    }

    /// Reports that the first `n` bytes of the ranges last returned were handed to TCP (0 if
    /// none were), and unpins their regions.
    pub fn handle_sent(&mut self, n: usize) {
        self.tx.pins.clear();
        if n == 0 {
            return;
        }
        self.tx.batch.advance(n);
        self.order.sent(self.tx.batch.sent);
        self.order.release(&mut self.completions);
        if self.tx.batch.is_empty() && matches!(self.state, QpState::Closing | QpState::Terminate) {
            self.finish_drain();
        }
    }

    fn fill(&mut self) {
        // Sends posted from other threads join the queue first, in their order.
        self.posts.take_sends(&mut self.tx.sq);
        loop {
            if self.tx.batch.is_full() || self.tx.revoked {
                return;
            }
            if self.tx.job.is_none() {
                if self.frame_small_wr() {
                    continue;
                }
                match self.next_job() {
                    Some(j) => self.tx.job = Some(j),
                    None => return,
                }
            }
            if self.tx.frame_one(&mut self.stats) {
                self.finish_job();
            }
        }
    }

    /// The common small message, without a job: a Send or Write at the head of the send queue
    /// whose payload is copied (at most `COPY_MAX` bytes) and fits one FPDU is framed straight
    /// from its work request. Returns `false` (nothing done) for anything else, which
    /// [`next_job`](Self::next_job) then takes in the same order.
    ///
    /// A run of such requests whose payloads lie in one region (a stream of small Writes from
    /// one buffer) is framed under one [`SharedView`] of it: the region's lock is taken once
    /// for the run instead of once per request (two atomic operations per message, a tenth of
    /// the cost of a 64-byte Write). The run ends where the batch is full, as `fill` would end it.
    fn frame_small_wr(&mut self) -> bool {
        if !self.small_wr_ready() {
            return false;
        }
        let region = self.tx.sq.front().and_then(|w| match &w.payload {
            Payload::Sges(s) if s.len() == 1 => Some(MrRef::clone(&s[0].mr)),
            _ => None,
        });
        let view = region.as_ref().map(|mr| mr.mem().view());
        let mut arena = std::mem::take(&mut self.tx.batch.arena);
        loop {
            let Some(w) = self.tx.sq.pop_front() else { break };
            let seq = self.order.push(w.wr_id, w.op.wc_opcode(), w.signaled);
            let start = arena.len();
            let len = self.frame_small(&w, view.as_ref(), &mut arena);
            // (queue_small records the piece; the bytes stay in the arena taken out here.)
            self.queue_small(seq, start, len);
            if revoked_sges(&w) {
                // Read from a region being deregistered: never sent (see transmit_revoked).
                self.tx.revoked = true;
                break;
            }
            let full = self.tx.batch.is_full();
            let same_region = |w: &SendWqe| match (&w.payload, &region) {
                (Payload::Sges(s), Some(r)) => s.len() == 1 && Arc::ptr_eq(&s[0].mr, r),
                _ => false,
            };
            if full || !self.tx.sq.front().is_some_and(same_region) || !self.small_wr_ready() {
                break;
            }
        }
        self.tx.batch.arena = arena;
        true
    }

    /// The head of the send queue can take the small-message path now: a small request
    /// (see [`is_small`](Self::is_small)) whose regions are valid, not held back by a fence,
    /// and no RTR or response due first.
    fn small_wr_ready(&self) -> bool {
        // next_job's order: an RTR first, then responses taking turns with the send queue.
        if self.tx.rtr.is_some() || !self.irq.is_idle() {
            return false;
        }
        let Some(w) = self.tx.sq.front() else { return false };
        if !self.is_small(w) {
            return false;
        }
        let sges_valid = match &w.payload {
            Payload::Sges(s) => s.iter().all(|s| s.mr.is_valid()),
            Payload::Inline(_) => true,
        };
        // Fence: every earlier Read/atomic must have completed (verbs IBV_SEND_FENCE).
        sges_valid && (!w.fence || self.orq.is_empty())
    }

    /// The one framing of a small message (see [`is_small`](Self::is_small)), for the send
    /// queue and for [`frame_now`](Self::frame_now): header and payload framed whole onto the
    /// end of `out`, the MSN taken, the send queue's turn against responses moved on, the
    /// statistics counted. Returns the FPDU's length, or 0 if framing failed (bounded by
    /// MULPDU and validated ranges, it cannot; the request then fails locally and `out` is as
    /// it was, keeping the stream whole).
    fn frame_small(&mut self, w: &SendWqe, view: Option<&SharedView<'_>>, out: &mut Vec<u8>) -> usize {
        self.tx.resp_turn = !self.tx.resp_turn;
        let (hbytes, hlen) = self.small_header(w).to_bytes();
        let start = out.len();
        match frame_payload_into(&mut self.tx.framer, &hbytes[..hlen], &w.payload, view, out) {
            Ok(len) => {
                self.stats.tx_fpdus += 1;
                self.stats.tx_copied_bytes += w.payload.len();
                len
            }
            Err(e) => {
                tracing::error!(error = %e, "framing failed");
                out.truncate(start);
                0
            }
        }
    }

    /// Adds `len` bytes framed at `start` of the arena to the batch for request `seq`, which
    /// completes once they are handed to the LLP (RFC 5040 §5.1/§5.3); `len` 0 (framing
    /// failed) fails it instead, in its place in the completion order.
    fn queue_small(&mut self, seq: u64, start: usize, len: usize) {
        if len == 0 {
            self.order.finish(seq, Done::status(WcStatus::LocalProtection));
            self.order.release(&mut self.completions);
            return;
        }
        self.tx.batch.push_inline(start, len);
        self.tx.batch.framed += len as u64;
        self.tx.batch.end_fpdu();
        self.order.hold(seq, self.tx.batch.framed);
    }

    /// The idle fast path of posting one small request: a Send or Write of at most
    /// `COPY_MAX` bytes that fits one FPDU, on a queue pair with nothing else to send or
    /// complete (no request outstanding, nothing framed or queued, no response owed or
    /// wake-up due, no completion or event undelivered). It is validated as
    /// [`post_send`](Self::post_send) would, framed whole into `out` (cleared first) and
    /// handed back for the caller to write at once, then reported with
    /// [`sent_now`](Self::sent_now). The bytes on the wire, the MSN, the statistics and the
    /// completion are those of the general path; what is saved is the queueing around them
    /// (send queue, completion order, holds).
    ///
    /// Returns `Ok(None)` without touching anything when the request or the queue pair does
    /// not qualify: post it with `post_send` instead.
    ///
    /// # Errors
    /// As [`post_send`](Self::post_send), for a request that qualifies.
    pub fn frame_now(&mut self, w: &SendWqe, out: &mut Vec<u8>) -> Result<Option<NowFramed>, PostError> {
        let idle = self.state == QpState::Rts
            && self.tx.allowed
            && self.posts.send_outstanding() == 0
            && self.cfg.sq_depth > 0
            && self.tx.job.is_none()
            && self.tx.rtr.is_none()
            && self.irq.is_idle()
            && self.tx.batch.is_empty()
            && self.tx.batch.seg == 0
            && !self.has_output();
        // Fence: nothing is outstanding when idle, so it never holds the request back.
        if !idle || !self.is_small(w) {
            return Ok(None);
        }
        self.validate_send(w)?;
        out.clear();
        let mut fpdu_len = self.frame_small(w, None, out);
        if revoked_sges(w) {
            // Read from a region being deregistered: never sent. The request fails with a local
            // protection error (see `sent_now`), the queue pair with it (see transmit_revoked).
            out.clear();
            fpdu_len = 0;
            self.transmit_revoked();
        }
        Ok(Some(NowFramed { wr_id: w.wr_id, opcode: w.op.wc_opcode(), signaled: w.signaled, len: fpdu_len }))
    }

    /// Reports how many of the bytes [`frame_now`](Self::frame_now) framed into `fpdu` the
    /// socket took (0 if it took none or failed). All of them: the request is complete, and
    /// its completion (if signaled) is returned for the caller to deliver. Fewer: the rest
    /// is queued to be sent as any framed bytes are, and the request completes once they are.
    pub fn sent_now(&mut self, f: NowFramed, fpdu: &[u8], n: usize) -> Option<Completion> {
        let qp_num = self.cfg.qp_num;
        self.sent_now_inner(f, fpdu, n).map(|c| Completion { qp_num, ..c })
    }

    fn sent_now_inner(&mut self, f: NowFramed, fpdu: &[u8], n: usize) -> Option<Completion> {
        if f.len == 0 {
            // Framing failed (cannot happen for validated requests): a local protection error.
            return Some(Completion::new(f.wr_id, WcStatus::LocalProtection, f.opcode, Queue::Send));
        }
        if n >= f.len {
            // The stream counts the FPDU as framed and sent.
            self.tx.batch.framed += f.len as u64;
            self.tx.batch.sent += f.len as u64;
            // RFC 5040 §5.1/§5.3: a Send or Write completes at the source once handed to the LLP.
            return f.signaled.then(|| Completion::new(f.wr_id, WcStatus::Success, f.opcode, Queue::Send));
        }
        // The rest goes out as the send queue's small messages do, the request with it.
        self.tx.batch.sent += n as u64;
        self.tx.batch.framed += n as u64;
        let start = self.tx.batch.arena.len();
        self.tx.batch.arena.extend_from_slice(&fpdu[n..f.len]);
        let seq = self.order.push_admitted(f.wr_id, f.opcode, f.signaled);
        self.queue_small(seq, start, f.len - n);
        None
    }

    /// A Send or Write whose payload is copied next to its header (at most `COPY_MAX` bytes)
    /// and fits one FPDU.
    fn is_small(&self, w: &SendWqe) -> bool {
        let opcode = match w.op {
            SendOp::Send | SendOp::SendWithInvalidate(_) => send_opcode(w.op, w.solicited).0,
            SendOp::Write(_) => Opcode::Write,
            _ => return false,
        };
        let Some(hdr_len) = opcode.descriptor().map(|d| d.ddp_header_len()) else { return false };
        let n = w.payload.len();
        n <= COPY_MAX as u64 && hdr_len as u64 + n <= self.tx.mulpdu as u64
    }

    /// The header of a small Send or Write framed whole (its last and only FPDU); a Send
    /// takes the next MSN of its queue.
    fn small_header(&mut self, w: &SendWqe) -> SegmentHeader {
        match w.op {
            SendOp::Write(r) => SegmentHeader::tagged(Opcode::Write, true, r.stag, TaggedOffset(r.to)),
            op => {
                let (opcode, inval) = send_opcode(op, w.solicited);
                let mut h = SegmentHeader::untagged(opcode, true, self.take_msn(opcode), 0);
                h.inval_stag = inval;
                h
            }
        }
    }

    fn next_job(&mut self) -> Option<Job> {
        if let Some(rtr) = self.tx.rtr.take() {
            return Some(self.rtr_job(rtr));
        }
        loop {
            let want_resp = !self.irq.is_idle() && (self.tx.resp_turn || !self.sq_can_start());
            self.tx.resp_turn = !self.tx.resp_turn;
            if let Some(r) = want_resp.then(|| self.irq.start()).flatten() {
                return Some(self.response_job(r));
            }
            if !self.sq_can_start() {
                return None;
            }
            let wqe = self.tx.sq.pop_front()?;
            let seq = self.order.push(wqe.wr_id, wqe.op.wc_opcode(), wqe.signaled);
            // A region invalidated after posting fails the request locally.
            if let Payload::Sges(s) = &wqe.payload {
                if s.iter().any(|s| !s.mr.is_valid()) {
                    self.order.finish(seq, Done::status(WcStatus::LocalProtection));
                    self.order.release(&mut self.completions);
                    continue;
                }
            }
            if let SendOp::LocalInvalidate(stag) = wqe.op {
                let status = match self.stags.invalidate(stag, self.cfg.pd) {
                    Ok(()) => WcStatus::Success,
                    Err(_) => WcStatus::LocalProtection,
                };
                self.order.finish(seq, Done::status(status));
                self.order.release(&mut self.completions);
                continue;
            }
            return Some(self.wr_job(seq, wqe));
        }
    }

    fn sq_can_start(&self) -> bool {
        let Some(w) = self.tx.sq.front() else { return false };
        let ord = self.link.map_or(0, |l| l.ord) as usize;
        // Fence: every earlier Read/atomic must have completed (verbs IBV_SEND_FENCE).
        if w.fence && !self.orq.is_empty() {
            return false;
        }
        // RFC 5040 §5.2: never exceed the negotiated outbound read depth.
        !(w.op.awaits_response() && self.orq.len() >= ord)
    }

    /// The next MSN of the queue `opcode` travels on (RFC 5041 §5.3: one sequence per queue),
    /// the queue read from the opcode table; a tagged opcode has none and takes 0.
    fn take_msn(&mut self, opcode: Opcode) -> Msn {
        let queue = opcode.queue().and_then(|q| usize::try_from(q.0).ok());
        match queue.and_then(|i| self.tx.msn.get_mut(i)) {
            Some(m) => {
                let msn = *m;
                *m = msn.next();
                msn
            }
            None => Msn(0),
        }
    }

    fn wr_job(&mut self, seq: u64, wqe: SendWqe) -> Job {
        let total = wqe.payload.len();
        let awaits_response = wqe.op.awaits_response();
        let SendWqe { op, payload, solicited, .. } = wqe;
        // Sends and Writes take the payload over (no copy of the element list).
        let data_of = |p: Payload| match p {
            Payload::Sges(s) => Data::Sges(s),
            Payload::Inline(b) => Data::Inline(b),
        };
        let (kind, data, total, imm_after, msn) = match op {
            SendOp::Send | SendOp::SendWithInvalidate(_) => {
                let (opcode, inval) = send_opcode(op, solicited);
                let msn = self.take_msn(opcode);
                (Kind::Untagged { opcode, inval, body: SmallVec::new() }, data_of(payload), total, None, msn)
            }
            SendOp::Write(r) => {
                (Kind::Tagged { opcode: Opcode::Write, stag: r.stag, to: r.to }, data_of(payload), total, None, Msn(0))
            }
            SendOp::WriteWithImmediate(r, imm) => (
                Kind::Tagged { opcode: Opcode::Write, stag: r.stag, to: r.to },
                data_of(payload),
                total,
                Some(imm),
                Msn(0),
            ),
            SendOp::Immediate(imm) => {
                let opcode = if solicited { Opcode::ImmediateDataSe } else { Opcode::ImmediateData };
                let msn = self.take_msn(opcode);
                let body = SmallVec::from_slice(&imm.to_be_bytes());
                (Kind::Untagged { opcode, inval: Stag(0), body }, Data::None, 0, None, msn)
            }
            SendOp::Read(r) => {
                let sink = match &payload {
                    Payload::Sges(s) => s.first().cloned(),
                    Payload::Inline(_) => None,
                };
                let (sink_stag, sink_to) =
                    sink.as_ref().map_or((RTR_STAG, 0), |s| (s.mr.stag(), s.mr.base() + s.offset as u64));
                let rr = ReadRequest {
                    sink_stag,
                    sink_to: TaggedOffset(sink_to),
                    size: total as u32,
                    src_stag: r.stag,
                    src_to: TaggedOffset(r.to),
                };
                self.orq.push(Some(seq), OutstandingKind::Read { sink, sink_stag, sink_to, size: total as u32 });
                let msn = self.take_msn(Opcode::ReadRequest);
                let body = SmallVec::from_slice(&rr.to_bytes());
                (Kind::Untagged { opcode: Opcode::ReadRequest, inval: Stag(0), body }, Data::None, 0, None, msn)
            }
            SendOp::FetchAdd { remote, add } => {
                let req = AtomicRequest::fetch_add(seq as u32, remote.stag, TaggedOffset(remote.to), add);
                self.atomic_parts(seq, req, &payload)
            }
            SendOp::CompareSwap { remote, compare, swap } => {
                let to = TaggedOffset(remote.to);
                let req = AtomicRequest::compare_swap(seq as u32, remote.stag, to, compare, swap);
                self.atomic_parts(seq, req, &payload)
            }
            // next_job executes a Local Invalidate itself and never makes it a job.
            SendOp::LocalInvalidate(_) => unreachable!("executed in next_job"),
        };
        Job {
            source: Source::Wr { seq, awaits_response },
            kind,
            data,
            total,
            done: 0,
            at: SgCursor::default(),
            msn,
            imm_after,
            solicited,
        }
    }

    /// An Atomic Request's job parts: its ORQ entry (with the sink its original value lands
    /// in), its MSN on queue 1 and its body.
    fn atomic_parts(&mut self, seq: u64, req: AtomicRequest, payload: &Payload) -> (Kind, Data, u64, Option<u64>, Msn) {
        // validate_send admits an atomic only with 8 bytes of registered sink: Sges, at least
        // one of them.
        let sink = match payload {
            Payload::Sges(s) => s[0].clone(),
            Payload::Inline(_) => unreachable!("rejected at post"),
        };
        let request_id = req.request_id;
        self.orq.push(Some(seq), OutstandingKind::Atomic { sink, request_id });
        let msn = self.take_msn(Opcode::AtomicRequest);
        let body = SmallVec::from_slice(&req.to_bytes());
        (Kind::Untagged { opcode: Opcode::AtomicRequest, inval: Stag(0), body }, Data::None, 0, None, msn)
    }

    fn response_job(&mut self, r: Response) -> Job {
        match r {
            Response::Read { sink_stag, sink_to, source } => {
                let total = source.as_ref().map_or(0, |w| w.len as u64);
                let data = source.map_or(Data::None, Data::Window);
                Job {
                    source: Source::Response,
                    kind: Kind::Tagged { opcode: Opcode::ReadResponse, stag: sink_stag, to: sink_to },
                    data,
                    total,
                    done: 0,
                    at: SgCursor::default(),
                    msn: Msn(0),
                    imm_after: None,
                    solicited: false,
                }
            }
            Response::Atomic(resp) => {
                let msn = self.take_msn(Opcode::AtomicResponse);
                Job {
                    source: Source::Response,
                    kind: Kind::Untagged {
                        opcode: Opcode::AtomicResponse,
                        inval: Stag(0),
                        body: SmallVec::from_slice(&resp.to_bytes()),
                    },
                    data: Data::None,
                    total: 0,
                    done: 0,
                    at: SgCursor::default(),
                    msn,
                    imm_after: None,
                    solicited: false,
                }
            }
        }
    }

    fn rtr_job(&mut self, rtr: RtrType) -> Job {
        let (kind, msn) = match rtr {
            // RFC 6581 §9.2: a zero-length RDMA Write (STag and TO are not checked).
            RtrType::Write => (Kind::Tagged { opcode: Opcode::Write, stag: RTR_STAG, to: 0 }, Msn(0)),
            RtrType::Send => {
                let msn = self.take_msn(Opcode::Send);
                (Kind::Untagged { opcode: Opcode::Send, inval: Stag(0), body: SmallVec::new() }, msn)
            }
            RtrType::Read => {
                let rr = ReadRequest {
                    sink_stag: RTR_STAG,
                    sink_to: TaggedOffset(0),
                    size: 0,
                    src_stag: RTR_STAG,
                    src_to: TaggedOffset(0),
                };
                self.orq.push(None, OutstandingKind::Read { sink: None, sink_stag: RTR_STAG, sink_to: 0, size: 0 });
                let msn = self.take_msn(Opcode::ReadRequest);
                let body = SmallVec::from_slice(&rr.to_bytes());
                (Kind::Untagged { opcode: Opcode::ReadRequest, inval: Stag(0), body }, msn)
            }
        };
        Job {
            source: Source::Internal,
            kind,
            data: Data::None,
            total: 0,
            done: 0,
            at: SgCursor::default(),
            msn,
            imm_after: None,
            solicited: false,
        }
    }

    /// The current job is fully framed: what it completes with, and what follows it. (The
    /// job is dropped in place: it is large, and moving it out costs a copy.)
    fn finish_job(&mut self) {
        let Some(job) = self.tx.job.as_ref() else { return };
        let (source, imm_after, solicited) = (job.source, job.imm_after, job.solicited);
        self.tx.job = None;
        let end = self.tx.batch.framed;
        match source {
            Source::Wr { seq, awaits_response } => {
                if let Some(imm) = imm_after {
                    // RFC 7306 §4: Write with Immediate = the Write, then an Immediate Data message.
                    let opcode = if solicited { Opcode::ImmediateDataSe } else { Opcode::ImmediateData };
                    let msn = self.take_msn(opcode);
                    self.tx.job = Some(Job {
                        source: Source::Wr { seq, awaits_response },
                        kind: Kind::Untagged { opcode, inval: Stag(0), body: SmallVec::from_slice(&imm.to_be_bytes()) },
                        data: Data::None,
                        total: 0,
                        done: 0,
                        at: SgCursor::default(),
                        msn,
                        imm_after: None,
                        solicited: false,
                    });
                    return;
                }
                if !awaits_response {
                    self.order.hold(seq, end);
                }
            }
            Source::Response => self.irq.answered(),
            Source::Internal => {}
        }
    }

    /// RX: a Read Response finished; completes the oldest Read.
    pub(super) fn complete_read(&mut self, byte_len: u32) {
        if let Some(seq) = self.orq.pop().and_then(|o| o.seq) {
            self.order.finish(seq, Done { status: WcStatus::Success, byte_len, cause: None });
            self.order.release(&mut self.completions);
        }
    }

    /// RX: an Atomic Response arrived for the oldest atomic.
    pub(super) fn complete_atomic(&mut self) {
        if let Some(seq) = self.orq.pop().and_then(|o| o.seq) {
            self.order.finish(seq, Done { status: WcStatus::Success, byte_len: 8, cause: None });
            self.order.release(&mut self.completions);
        }
    }

    /// Frames a Terminate (RFC 5040 §4.8) after whatever is already framed; nothing else will
    /// be framed after it.
    pub(super) fn queue_terminate(&mut self, body: &[u8]) {
        let msn = self.take_msn(Opcode::Terminate);
        let h = SegmentHeader::untagged(Opcode::Terminate, true, msn, 0);
        let (hb, hl) = h.to_bytes();
        let mut ulpdu: SmallVec<[u8; 96]> = SmallVec::from_slice(&hb[..hl]);
        ulpdu.extend_from_slice(body);
        let mut pieces = std::mem::take(&mut self.tx.pieces);
        pieces.clear();
        match self.tx.framer.frame(&ulpdu, iwarp_wire::mpa::NO_PAYLOAD, &mut self.tx.batch.arena, &mut pieces) {
            Ok(len) => {
                self.tx.batch.framed += len as u64;
                self.tx.batch.end_fpdu();
                for p in &pieces {
                    if let Piece::Inline { start, len } = *p {
                        self.tx.batch.pieces.push(TxPiece::Inline { start, len });
                    }
                }
                self.stats.tx_fpdus += 1;
            }
            Err(e) => tracing::error!(error = %e, "framing the Terminate failed"),
        }
        self.tx.pieces = pieces;
        self.tx.terminated = true;
    }

    /// Moves to [`QpState::Terminate`]: flush work, frame the Terminate.
    pub(super) fn enter_terminate(&mut self, cause: TerminateCause, body: &[u8]) {
        if let Ok(s) = self.state.on(QpEventKind::ProtocolError) {
            self.set_state(s);
        } else {
            return;
        }
        self.cause.get_or_insert(cause);
        // Keep framed bytes (and their memory) so the Terminate follows them.
        self.tx.terminated = true;
        self.posts.take_sends(&mut self.tx.sq);
        self.flush_tx(None);
        self.queue_terminate(body);
        // The responder may not have been allowed to send yet; a Terminate always may.
        self.tx.allowed = true;
    }
}

/// `true` if a region `w` gathers from was revoked (deregistered).
fn revoked_sges(w: &SendWqe) -> bool {
    matches!(&w.payload, Payload::Sges(s) if s.iter().any(|s| s.mr.is_revoked()))
}

/// The RDMAP opcode of a Send work request, and the STag it invalidates (RFC 5040 §4.3).
fn send_opcode(op: SendOp, solicited: bool) -> (Opcode, Stag) {
    match (op, solicited) {
        (SendOp::SendWithInvalidate(s), false) => (Opcode::SendInvalidate, s),
        (SendOp::SendWithInvalidate(s), true) => (Opcode::SendSeInvalidate, s),
        (_, false) => (Opcode::Send, Stag(0)),
        (_, true) => (Opcode::SendSe, Stag(0)),
    }
}
