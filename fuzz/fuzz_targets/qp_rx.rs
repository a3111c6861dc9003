//! The queue pair engine (`iwarp_proto::qp::Qp`) in full operation, fed an arbitrary peer byte
//! stream interleaved with arbitrary local operations, driven the way the runtime drives it.
//!
//! # Set-up
//! One `StagTable` holds eight regions ([`format::REGIONS`]): a remote-write target, a
//! remote-read source, an atomic target, two local-only buffers, a region of every right in a
//! second protection domain, one at the top of the 64-bit Tagged Offset space and a zero-length
//! one. All are carved out of one backing buffer with canary bytes around each (registered with
//! `RawMem::external`), filled with a pattern. The queue pair is established with the link
//! parameters of the input's header (CRC, RFC 7306, markers each way, initiator or responder
//! with or without RTR, IRD/ORD, MULPDU).
//!
//! # Input
//! Decoded by `format/qp_rx.rs` (shared with the seed writer). Integers are little-endian; a read
//! past the end of the input yields zeros, so every byte string is an input. Cut at 64 KiB and
//! 1024 commands.
//!
//! Header, 4 bytes: byte 0 bit 0 CRC, bit 1 RFC 7306, bit 2 markers toward us, bit 3 markers
//! from us, bits 4-5 startup (0 initiator, 1 initiator sending an RTR, 2 responder, 3 responder
//! expecting an RTR), bit 6 `send_first` of a client/server responder; byte 1 the initiator's
//! RTR (`% 3`: Send, Write, Read) or the responder's RTR types (bits 0-2: Send, Write, Read);
//! byte 2 IRD (low nibble) and ORD (high nibble); byte 3 MULPDU = 128 + 256 × byte.
//!
//! Then commands, a tag byte (`% 10`) and its arguments:
//!
//! | tag | command | arguments |
//! |---|---|---|
//! | 0 | peer bytes | `len: u16`, `read_max: u16` (each read takes at most this; 0: no limit), `len` bytes |
//! | 1 | `post_recv` | `n: u8` (`1 + n % 4` elements), each element `region: u8` (`% 8`), `offset: u16`, `len: u16` |
//! | 2 | `post_send` | `op: u8` (`% 9`) and its fields, `flags: u8`, payload (below) |
//! | 3 | `disconnect` | |
//! | 4 | clock + `handle_timeout` | `ms: u16` |
//! | 5 | `handle_transport(Eof)` | |
//! | 6 | `handle_transport(Failed)` | |
//! | 7 | socket send budget | `bytes: u16`, taken after each command (0: socket full; 0xffff: no limit) |
//! | 8 | `wake_silent_peer` | `first_ms: u16`, `count: u8` |
//! | 9 | `handle_mss` | `mss: u16` |
//!
//! Send operations and their fields: 0 Send; 1 Send with Invalidate (`stag: u32`); 2 Write
//! (`stag: u32`, `to: u64`); 3 Write with Immediate (`stag`, `to`, `imm: u64`); 4 Immediate
//! Data (`imm: u64`); 5 Read (`stag`, `to`; the sink is the first element); 6 FetchAdd (`stag`,
//! `to`, `add: u64`); 7 CompareSwap (`stag`, `to`, `compare: u64`, `swap: u64`); 8 Local
//! Invalidate (`region: u8`). Flags: bit 0 signaled, bit 1 solicited, bit 2 fence, bit 3 inline
//! payload. Payload: inline `len: u8` and that many bytes, or `n: u8` (`n % 4` elements) elements
//! as for `post_recv`. Posts an application would not make (a receive buffer or sink
//! overlapping one still outstanding) are skipped.
//!
//! Peer bytes are handed over as `crates/iwarp/src/qp.rs` `receive()` does: `poll_recv_plan()`;
//! `Scratch { max }` → up to `max` bytes to `handle_recv`; `Direct { ranges, len }` → bytes
//! copied into the ranges, `handle_placed(n)`, then up to `LOOKAHEAD` more bytes to
//! `handle_recv`. After every command the outputs are drained: `poll_transmit` + `handle_sent`
//! (within the send budget), `poll_completion`, `poll_event`.
//!
//! # Oracles
//! - No panic, whatever the peer sends (the input is cut at 64 KiB and 1024 commands; run.sh
//!   caps memory).
//! - Shadow memory: after every command, (a) every canary byte is intact, and (b) a byte of a
//!   region changed only where the peer may write: a valid region of the queue pair's domain
//!   with remote write or atomic rights, the elements of a receive still posted, the sink of a
//!   Read or atomic still outstanding. Everything else equals its last known content. A
//!   successful receive leaves its elements' bytes past `byte_len` untouched (in local-only
//!   regions). A region the peer or we invalidated stops being writable once the FPDU in
//!   progress when that was seen has ended.
//! - Every range of a `Direct` plan lies inside one of those writable areas; every transmit
//!   range into registered memory lies in a readable region (remote read right, our domain)
//!   or in the source of one of our outstanding sends (no leak of memory the peer may not read).
//! - Completions: receive completions come in posting order; a send completion names an
//!   outstanding request, and every earlier one was unsignaled; a successful Read reports the
//!   size asked for. `Flushed` comes once, in the error state, with no receive and no signaled
//!   send left outstanding; `Ready` and the queue pair's own error come at most once.
//! - A post that fails leaves the queues as they were; one that succeeds only names memory it
//!   may (valid regions of our domain, in bounds, local write for receive buffers and sinks).
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

#[path = "format/qp_rx.rs"]
mod format;
#[path = "format/reader.rs"]
mod reader;

use format::{Cmd, Domain, Header, LocalSge, PayloadSel, SendCmd, SendOpSel, StartupSel, REGIONS};
use iwarp_proto::mem::{Access, MrRef, RawMem, StagTable};
use iwarp_proto::qp::{
    Completion, IoRange, LinkParams, Payload, Qp, QpConfig, QpEvent, QpState, Queue, RecvPlan, RecvWqe, RemoteAddr,
    RtrType, SendOp, SendWqe, Sge, SgeList, Startup, TransportEvent, WcOpcode, WcStatus, LOOKAHEAD,
};
use iwarp_wire::mpa::RtrTypes;
use iwarp_wire::Stag;
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = REGIONS.len();
/// Rights that let the peer change a region's bytes.
const PEER_WRITES: Access = Access::REMOTE_WRITE.union(Access::REMOTE_ATOMIC);
/// Rounds of `poll_transmit` per drain. Each round hands the socket everything framed (up to
/// the budget), and the work an input can queue is bounded (16 sends of at most 3 elements,
/// 15 Read Responses of at most 4 KiB), so a drain takes a handful; more is a runaway.
const MAX_TX_ROUNDS: usize = 256;

/// A range of the backing buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    start: usize,
    len: usize,
}

impl Area {
    fn end(self) -> usize {
        self.start + self.len
    }
    fn overlaps(self, o: Area) -> bool {
        self.len > 0 && o.len > 0 && self.start < o.end() && o.start < self.end()
    }
    fn contains(self, o: Area) -> bool {
        o.start >= self.start && o.end() <= self.end()
    }
}

/// A receive we posted, with its elements (in order) and the region of each.
#[derive(Debug)]
struct PostedRecv {
    wr_id: u64,
    parts: Vec<(usize, Area)>,
}

/// A send we posted.
#[derive(Debug)]
struct PostedSend {
    wr_id: u64,
    signaled: bool,
    opcode: WcOpcode,
    /// Read/atomic sink and the bytes asked for.
    sink: Option<(Area, u64)>,
    /// Where its payload is gathered from.
    sources: Vec<Area>,
}

/// Reads an I/O range's address and length (the one place that knows its fields).
fn range_parts(r: &IoRange) -> (usize, usize) {
    (r.addr(), r.len())
}

/// Wraps `len` bytes at `offset` of `backing` as caller-owned region memory.
fn carve(backing: &RawMem, offset: usize, len: usize) -> RawMem {
    assert!(offset + len <= backing.len());
    let ptr = NonNull::new(backing.ptr_at(offset)).expect("a live block has a non-null address");
    // SAFETY: [offset, offset + len) lies inside `backing` (asserted above). `backing` is the
    // last field of `Harness`, so it is dropped (and its memory freed) after the queue pair, the
    // STag table and every region handle that could reach this memory; nothing moves it. The
    // harness itself only touches the bytes through `backing`'s copying methods, never through
    // a reference that lives across an engine call.
    unsafe { RawMem::external(ptr, len) }
}

struct Harness {
    qp: Qp,
    mrs: Vec<MrRef>,
    _table: Arc<StagTable>,
    /// Offset of each region in the backing buffer.
    offsets: [usize; N],
    /// Regions the peer may write now (see `sync_regions`).
    open: [bool; N],
    /// `rx_fpdus` when a region was first seen invalid: it may still be written until the FPDU
    /// in progress then has ended (an RDMA Write segment validated before the invalidation).
    invalid_since: [Option<u64>; N],
    recvs: VecDeque<PostedRecv>,
    sends: VecDeque<PostedSend>,
    next_wr: u64,
    now: Instant,
    budget: usize,
    ranges: Vec<IoRange>,
    ready: bool,
    local_error: bool,
    remote_terminate: bool,
    flushed: bool,
    /// The last known content of the backing buffer.
    shadow: Vec<u8>,
    /// Holds every region's bytes: declared last, so dropped last.
    backing: RawMem,
}

fn pattern(i: usize) -> u8 {
    // Never 0: a stray zero is as visible as any other byte.
    (i.wrapping_mul(167) >> 3) as u8 | 1
}

impl Harness {
    fn new(h: Header) -> Harness {
        let len = format::backing_len();
        let backing = RawMem::alloc(len, false).expect("a few dozen KiB");
        let shadow: Vec<u8> = (0..len).map(pattern).collect();
        assert!(backing.write(0, &shadow));
        let table = Arc::new(StagTable::new(format::TABLE_SEED));
        let offsets: [usize; N] = std::array::from_fn(format::region_offset);
        let (pd, _other, mrs) = format::register_all(&table, |i| carve(&backing, offsets[i], REGIONS[i].len));
        let cfg =
            QpConfig { qp_num: 7, pd, sq_depth: 16, rq_depth: 16, max_send_sge: 3, max_recv_sge: 4, max_inline: 64 };
        let mut qp = Qp::new(cfg, Arc::clone(&table), None);
        let startup = match h.startup {
            StartupSel::Initiator => Startup::Initiator { rtr: None },
            StartupSel::InitiatorRtr(t) => Startup::Initiator {
                rtr: Some(match t {
                    0 => RtrType::Send,
                    1 => RtrType::Write,
                    _ => RtrType::Read,
                }),
            },
            StartupSel::Responder { send_first } => Startup::Responder { rtr: None, send_first },
            StartupSel::ResponderRtr(t) => Startup::Responder {
                rtr: Some(RtrTypes { send: t & 1 != 0, write: t & 2 != 0, read: t & 4 != 0 }),
                send_first: false,
            },
        };
        let link = LinkParams {
            crc: h.crc,
            send_markers: h.send_markers,
            recv_markers: h.recv_markers,
            ird: u32::from(h.ird),
            ord: u32::from(h.ord),
            mulpdu: h.mulpdu_len(),
            large_fpdus: false,
            rfc7306: h.rfc7306,
            startup,
        };
        qp.establish(link).expect("a new queue pair can be established");
        let mut hs = Harness {
            qp,
            mrs,
            _table: table,
            offsets,
            open: [false; N],
            invalid_since: [None; N],
            recvs: VecDeque::new(),
            sends: VecDeque::new(),
            next_wr: 1,
            now: Instant::now(),
            budget: usize::MAX,
            ranges: Vec::new(),
            ready: false,
            local_error: false,
            remote_terminate: false,
            flushed: false,
            shadow,
            backing,
        };
        for i in 0..N {
            hs.open[i] = hs.may_be_written(i);
        }
        hs
    }

    /// A region the peer may write: our domain, a right that allows it, still valid.
    fn may_be_written(&self, i: usize) -> bool {
        REGIONS[i].domain == Domain::Main && REGIONS[i].access.intersects(PEER_WRITES) && self.mrs[i].is_valid()
    }

    fn region_area(&self, i: usize) -> Area {
        Area { start: self.offsets[i], len: REGIONS[i].len }
    }

    /// The area an element names, if it lies inside its region.
    fn sge_area(&self, s: &LocalSge) -> Option<Area> {
        let i = usize::from(s.region);
        let end = usize::from(s.offset) + usize::from(s.len);
        (end <= REGIONS[i].len)
            .then(|| Area { start: self.offsets[i] + usize::from(s.offset), len: usize::from(s.len) })
    }

    /// Areas owned by outstanding receives and Read/atomic sinks.
    fn owned(&self) -> impl Iterator<Item = Area> + '_ {
        let recv = self.recvs.iter().flat_map(|r| r.parts.iter().map(|p| p.1));
        let sink = self.sends.iter().filter_map(|s| s.sink.map(|k| k.0));
        recv.chain(sink)
    }

    /// Everything the peer may write now, sorted and merged.
    fn writable(&self) -> Vec<Area> {
        let mut v: Vec<Area> = (0..N).filter(|&i| self.open[i]).map(|i| self.region_area(i)).collect();
        v.extend(self.owned());
        v.retain(|a| a.len > 0);
        v.sort_by_key(|a| a.start);
        let mut out: Vec<Area> = Vec::with_capacity(v.len());
        for a in v {
            match out.last_mut() {
                Some(l) if a.start <= l.end() => l.len = l.len.max(a.end() - l.start),
                _ => out.push(a),
            }
        }
        out
    }

    fn place_name(&self, at: usize) -> String {
        for (i, r) in REGIONS.iter().enumerate() {
            let a = self.region_area(i);
            if at >= a.start && at < a.end() {
                return format!("region {} (offset {})", r.name, at - a.start);
            }
        }
        format!("a canary (backing offset {at})")
    }

    /// Copies `src` where a direct receive plan's range points, as `readv` would, after
    /// checking that the range lies in memory the peer may write. The range is turned back into
    /// an offset of the backing buffer, so the copy is the backing's own bounds-checked one.
    fn place(&self, r: &IoRange, src: &[u8]) {
        let (addr, len) = range_parts(r);
        assert!(src.len() <= len);
        let base = self.backing.ptr_at(0) as usize;
        let start = addr.checked_sub(base).filter(|s| s.checked_add(len).is_some_and(|e| e <= self.backing.len()));
        let Some(start) = start else {
            panic!("direct plan range {addr:#x}+{len} lies outside the registered memory");
        };
        let area = Area { start, len };
        assert!(
            len == 0 || self.writable().iter().any(|w| w.contains(area)),
            "direct plan range {len} bytes at {} is not memory the peer may write",
            self.place_name(start)
        );
        assert!(self.backing.write(start, src));
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    fn run(&mut self, cmds: &[Cmd]) {
        self.drain();
        self.check_memory();
        for c in cmds {
            self.step(c);
            self.drain();
            self.check_memory();
        }
    }

    fn step(&mut self, c: &Cmd) {
        match c {
            Cmd::Feed { read_max, bytes } => self.feed(bytes, usize::from(*read_max)),
            Cmd::PostRecv { sges } => self.post_recv(sges),
            Cmd::PostSend(s) => self.post_send(s),
            Cmd::Disconnect => self.qp.disconnect(),
            Cmd::Timeout { ms } => {
                self.now += Duration::from_millis(u64::from(*ms));
                let _ = self.qp.handle_timeout(self.now);
            }
            Cmd::Eof => self.qp.handle_transport(TransportEvent::Eof),
            Cmd::TransportError => self.qp.handle_transport(TransportEvent::Failed),
            Cmd::TxBudget { bytes } => self.budget = if *bytes == u16::MAX { usize::MAX } else { usize::from(*bytes) },
            Cmd::Wake { first_ms, count } => {
                self.qp.wake_silent_peer(Duration::from_millis(u64::from(*first_ms)), u32::from(*count))
            }
            Cmd::SetMulpdu { mulpdu } => self.qp.handle_mss(usize::from(*mulpdu)),
        }
        self.sync();
    }

    /// The runtime's receive loop over `data`, each read taking at most `read_max` bytes.
    fn feed(&mut self, mut data: &[u8], read_max: usize) {
        let cap = if read_max == 0 { usize::MAX } else { read_max };
        while !data.is_empty() {
            match self.qp.poll_recv_plan() {
                RecvPlan::Stop | RecvPlan::Wait => break,
                RecvPlan::Scratch { max } => {
                    assert!(max > 0, "a scratch plan for no bytes");
                    let n = max.min(cap).min(data.len());
                    self.qp.handle_recv(&data[..n]);
                    data = &data[n..];
                }
                RecvPlan::Direct { ranges, len } => {
                    assert!(len > 0, "a direct plan for no bytes");
                    let total: usize = ranges.iter().map(|r| range_parts(r).1).sum();
                    assert_eq!(total, len, "direct plan ranges do not add up to its length");
                    let avail = data.len().min(cap);
                    let placed = avail.min(len);
                    let mut rest = &data[..placed];
                    for r in &ranges {
                        let k = range_parts(r).1.min(rest.len());
                        self.place(r, &rest[..k]);
                        rest = &rest[k..];
                    }
                    self.qp.handle_placed(placed);
                    data = &data[placed..];
                    // The same readv's lookahead, into scratch.
                    let la = (avail - placed).min(LOOKAHEAD);
                    if la > 0 {
                        self.qp.handle_recv(&data[..la]);
                        data = &data[la..];
                    }
                }
            }
            self.sync();
        }
    }

    fn sges(&self, v: &[LocalSge]) -> SgeList {
        v.iter()
            .map(|s| Sge {
                mr: Arc::clone(&self.mrs[usize::from(s.region)]),
                offset: usize::from(s.offset),
                len: usize::from(s.len),
            })
            .collect()
    }

    /// Checks that an element a successful post accepted names memory it may: a valid region
    /// of our domain, in bounds, with local write when the peer's data lands there.
    fn assert_post_ok(&self, s: &LocalSge, landing: bool, what: &str) {
        let i = usize::from(s.region);
        let r = &REGIONS[i];
        assert!(self.sge_area(s).is_some(), "{what}: accepted an element outside region {}", r.name);
        assert!(self.mrs[i].is_valid(), "{what}: accepted an element of invalidated region {}", r.name);
        assert_eq!(r.domain, Domain::Main, "{what}: accepted an element of another protection domain");
        if landing {
            assert!(r.access.contains(Access::LOCAL_WRITE), "{what}: accepted region {} without local write", r.name);
        }
    }

    fn post_recv(&mut self, v: &[LocalSge]) {
        // An application never lets two outstanding buffers overlap; an element outside its
        // region is left for the engine to refuse.
        let parts: Vec<(usize, Area)> =
            v.iter().filter_map(|s| self.sge_area(s).map(|a| (usize::from(s.region), a))).collect();
        if self.overlaps_owned(parts.iter().map(|p| p.1)) {
            return;
        }
        let wr_id = self.next_wr;
        self.next_wr += 1;
        let before = self.qp.recv_queued();
        match self.qp.post_recv([RecvWqe { wr_id, sges: self.sges(v) }]) {
            Ok(()) => {
                v.iter().for_each(|s| self.assert_post_ok(s, true, "post_recv"));
                assert_eq!(self.qp.recv_queued(), before + 1);
                self.recvs.push_back(PostedRecv { wr_id, parts });
            }
            Err(_) => assert_eq!(self.qp.recv_queued(), before, "a failed post_recv queued something"),
        }
    }

    fn overlaps_owned(&self, new: impl Iterator<Item = Area> + Clone) -> bool {
        let owned: Vec<Area> = self.owned().collect();
        let new: Vec<Area> = new.collect();
        new.iter().enumerate().any(|(k, a)| owned.iter().chain(&new[..k]).any(|o| a.overlaps(*o)))
    }

    fn post_send(&mut self, s: &SendCmd) {
        let remote = |stag: u32, to: u64| RemoteAddr::unbounded(Stag(stag), to);
        let op = match s.op {
            SendOpSel::Send => SendOp::Send,
            SendOpSel::SendWithInvalidate { stag } => SendOp::SendWithInvalidate(Stag(stag)),
            SendOpSel::Write { stag, to } => SendOp::Write(remote(stag, to)),
            SendOpSel::WriteWithImmediate { stag, to, imm } => SendOp::WriteWithImmediate(remote(stag, to), imm),
            SendOpSel::Immediate { imm } => SendOp::Immediate(imm),
            SendOpSel::Read { stag, to } => SendOp::Read(remote(stag, to)),
            SendOpSel::FetchAdd { stag, to, add } => SendOp::FetchAdd { remote: remote(stag, to), add },
            SendOpSel::CompareSwap { stag, to, compare, swap } => {
                SendOp::CompareSwap { remote: remote(stag, to), compare, swap }
            }
            SendOpSel::LocalInvalidate { region } => SendOp::LocalInvalidate(self.mrs[usize::from(region)].stag()),
        };
        let (payload, sink, sources) = match &s.payload {
            PayloadSel::Inline(b) => (Payload::Inline(b.iter().copied().collect()), None, Vec::new()),
            PayloadSel::Sges(v) => {
                let areas: Vec<Area> = v.iter().filter_map(|e| self.sge_area(e)).collect();
                let sink = if op.awaits_response() {
                    let first = v.first().and_then(|e| self.sge_area(e));
                    if let Some(a) = first {
                        if self.overlaps_owned(std::iter::once(a)) {
                            return;
                        }
                    }
                    first.map(|a| (a, a.len as u64))
                } else {
                    None
                };
                (Payload::Sges(self.sges(v)), sink, areas)
            }
        };
        let wr_id = self.next_wr;
        self.next_wr += 1;
        let wqe = SendWqe { wr_id, op, payload, signaled: s.signaled, solicited: s.solicited, fence: s.fence };
        let before = self.qp.send_outstanding();
        match self.qp.post_send([wqe]) {
            Ok(()) => {
                assert_eq!(self.qp.send_outstanding(), before + 1);
                if let PayloadSel::Sges(v) = &s.payload {
                    v.iter().for_each(|e| self.assert_post_ok(e, false, "post_send"));
                    // RFC 5040 §5.2 (max_sge_rd = 1) and `SendOp`'s docs: a Read lands in at
                    // most one element (none for a zero-length Read), an atomic's original value
                    // in exactly one of 8 bytes.
                    match op {
                        SendOp::Read(_) => assert!(v.len() <= 1, "a Read with {} sinks", v.len()),
                        SendOp::FetchAdd { .. } | SendOp::CompareSwap { .. } => {
                            assert!(v.len() == 1 && v[0].len == 8, "an atomic with sinks {v:?}")
                        }
                        _ => {}
                    }
                    if let (true, Some(first)) = (op.awaits_response(), v.first()) {
                        self.assert_post_ok(first, true, "post_send sink");
                    }
                }
                let opcode = match op {
                    SendOp::Send | SendOp::SendWithInvalidate(_) => WcOpcode::Send,
                    SendOp::Write(_) | SendOp::WriteWithImmediate(..) => WcOpcode::RdmaWrite,
                    SendOp::Immediate(_) => WcOpcode::Immediate,
                    SendOp::Read(_) => WcOpcode::RdmaRead,
                    SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
                    SendOp::CompareSwap { .. } => WcOpcode::CompareSwap,
                    SendOp::LocalInvalidate(_) => WcOpcode::LocalInvalidate,
                };
                self.sends.push_back(PostedSend { wr_id, signaled: s.signaled, opcode, sink, sources });
            }
            Err(_) => assert_eq!(self.qp.send_outstanding(), before, "a failed post_send queued something"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Outputs

    /// Drains transmit (within the budget), completions and events, as the runtime does.
    fn drain(&mut self) {
        let mut left = self.budget;
        for round in 0.. {
            assert!(round < MAX_TX_ROUNDS, "transmit does not run dry");
            let mut ranges = std::mem::take(&mut self.ranges);
            let total = self.qp.poll_transmit(&mut ranges, 1024);
            assert!(ranges.len() <= 1024);
            assert_eq!(ranges.iter().map(|r| range_parts(r).1).sum::<usize>(), total);
            self.check_transmit(&ranges);
            self.ranges = ranges;
            let n = total.min(left);
            if n == 0 {
                break;
            }
            left -= n;
            self.qp.handle_sent(n);
            self.sync();
        }
        self.sync();
        while let Some(ev) = self.qp.poll_event() {
            self.on_event(ev);
        }
    }

    /// Transmit ranges into registered memory lie where the peer may read or where our own
    /// outstanding sends take their payload from.
    fn check_transmit(&self, ranges: &[IoRange]) {
        let base = self.backing.ptr_at(0) as usize;
        for r in ranges {
            let (addr, len) = range_parts(r);
            let Some(start) = addr.checked_sub(base).filter(|&s| s < self.backing.len()) else { continue };
            let a = Area { start, len };
            let readable = (0..N).any(|i| {
                REGIONS[i].domain == Domain::Main
                    && REGIONS[i].access.contains(Access::REMOTE_READ)
                    && self.region_area(i).contains(a)
            });
            let ours = self.sends.iter().any(|s| s.sources.iter().any(|src| src.contains(a)));
            assert!(readable || ours, "transmit sends {len} bytes of {} that no one may read", self.place_name(start));
        }
    }

    /// After every engine call: completions, and regions that stopped being writable.
    fn sync(&mut self) {
        while let Some(c) = self.qp.poll_completion() {
            self.on_completion(c);
        }
        let fpdus = self.qp.stats().rx_fpdus;
        for i in 0..N {
            if !self.open[i] || self.may_be_written(i) {
                continue;
            }
            match self.invalid_since[i] {
                None => self.invalid_since[i] = Some(fpdus),
                Some(k) if fpdus > k || self.qp.state() == QpState::Error => {
                    self.open[i] = false;
                    self.settle(&[self.region_area(i)]);
                }
                Some(_) => {}
            }
        }
    }

    /// Takes the current content of `areas` as known.
    fn settle(&mut self, areas: &[Area]) {
        for a in areas {
            let (shadow, backing) = (&mut self.shadow, &self.backing);
            assert!(backing.read(a.start, &mut shadow[a.start..a.end()]));
        }
    }

    fn on_completion(&mut self, c: Completion) {
        match c.queue {
            Queue::Recv => {
                let Some(r) = self.recvs.pop_front() else { panic!("receive completion {c:?} with none posted") };
                assert_eq!(c.wr_id, r.wr_id, "receive completions out of posting order: {c:?}");
                assert!(matches!(c.opcode, WcOpcode::Recv | WcOpcode::RecvImmediate), "{c:?}");
                if c.status == WcStatus::Success {
                    let cap: usize = r.parts.iter().map(|p| p.1.len).sum();
                    assert!(c.byte_len as usize <= cap, "received {} bytes into {cap}", c.byte_len);
                    if c.opcode == WcOpcode::RecvImmediate {
                        assert_eq!(c.byte_len, 0, "Immediate Data carries no payload");
                    }
                    self.assert_untouched_past(&r.parts, c.byte_len as usize);
                }
                let areas: Vec<Area> = r.parts.iter().map(|p| p.1).collect();
                self.settle(&areas);
            }
            Queue::Send => {
                let Some(pos) = self.sends.iter().position(|s| s.wr_id == c.wr_id) else {
                    panic!("send completion {c:?} for no outstanding request");
                };
                // Send completions come in posting order: the requests before it are done,
                // and only unsignaled successes complete without a completion of their own.
                for s in self.sends.drain(..=pos).collect::<Vec<_>>() {
                    if s.wr_id == c.wr_id {
                        assert_eq!(s.opcode, c.opcode, "{c:?}");
                        if c.status == WcStatus::Success {
                            match (s.opcode, s.sink) {
                                (WcOpcode::RdmaRead, Some((_, size))) => {
                                    assert_eq!(u64::from(c.byte_len), size, "Read completed short: {c:?}")
                                }
                                (WcOpcode::FetchAdd | WcOpcode::CompareSwap, _) => assert_eq!(c.byte_len, 8),
                                _ => {}
                            }
                        }
                    } else {
                        assert!(!s.signaled, "signaled request {} completed without a completion", s.wr_id);
                    }
                    if let Some((a, _)) = s.sink {
                        self.settle(&[a]);
                    }
                }
            }
        }
    }

    /// After a receive of `len` bytes, its elements' bytes past `len` are as they were posted
    /// (checked in regions only we write, where the shadow holds the content at posting).
    fn assert_untouched_past(&self, parts: &[(usize, Area)], reported: usize) {
        let mut len = reported;
        for &(i, a) in parts {
            let skip = len.min(a.len);
            len -= skip;
            if REGIONS[i].access.intersects(PEER_WRITES) || skip == a.len {
                continue;
            }
            let rest = Area { start: a.start + skip, len: a.len - skip };
            let mut now = vec![0u8; rest.len];
            assert!(self.backing.read(rest.start, &mut now), "the area lies inside the backing");
            if let Some(k) = (0..rest.len).find(|&k| now[k] != self.shadow[rest.start + k]) {
                panic!("a receive changed {} past the {reported} bytes it reported", self.place_name(rest.start + k));
            }
        }
    }

    fn on_event(&mut self, ev: QpEvent) {
        match ev {
            QpEvent::Ready => {
                assert!(!self.ready, "Ready twice");
                self.ready = true;
            }
            QpEvent::LocalError(_) => {
                assert!(!self.local_error, "two local errors");
                self.local_error = true;
            }
            QpEvent::RemoteTerminate { .. } => {
                assert!(!self.remote_terminate, "two Terminates taken");
                self.remote_terminate = true;
            }
            QpEvent::Flushed => {
                assert!(!self.flushed, "flushed twice");
                self.flushed = true;
                assert_eq!(self.qp.state(), QpState::Error, "flushed outside the error state");
                assert!(self.recvs.is_empty(), "flushed with receives outstanding: {:?}", self.recvs);
                assert!(self.sends.iter().all(|s| !s.signaled), "flushed with sends outstanding: {:?}", self.sends);
                assert_eq!(self.qp.send_outstanding(), 0);
                assert_eq!(self.qp.recv_queued(), 0);
            }
            QpEvent::PeerClosed | QpEvent::TransportError => {}
        }
    }

    /// Compares the backing buffer with its last known content outside the writable areas,
    /// then takes the writable regions' content as known.
    fn check_memory(&mut self) {
        let writable = self.writable();
        let total = self.shadow.len();
        let mut now = vec![0u8; total];
        assert!(self.backing.read(0, &mut now), "the shadow is the backing's size");
        let bad = (|| {
            let mut at = 0;
            for w in writable.iter().copied().chain(std::iter::once(Area { start: total, len: 0 })) {
                if at < w.start && now[at..w.start] != self.shadow[at..w.start] {
                    let k = (at..w.start).find(|&k| now[k] != self.shadow[k]).expect("they differ");
                    return Some((k, self.shadow[k], now[k]));
                }
                at = at.max(w.end());
            }
            None
        })();
        if let Some((k, was, is)) = bad {
            panic!("peer input changed {} from {was:#04x} to {is:#04x}, memory it may not write", self.place_name(k));
        }
        let open: Vec<Area> = (0..N).filter(|&i| self.open[i]).map(|i| self.region_area(i)).collect();
        self.settle(&open);
    }
}

fuzz_target!(|data: &[u8]| {
    let (header, cmds) = format::decode(data);
    let mut h = Harness::new(header);
    h.run(&cmds);
});
