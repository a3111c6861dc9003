//! Writes the seed corpora of the engine fuzz targets, `qp_rx` and `cm_handshake`, into
//! `fuzz/seeds/<target>/` from the Linux siw captures in `testdata/captures/siw`. Run by hand
//! after adding captures or changing an input format:
//! `cargo test -p iwarp-proto --test fuzz_seeds -- --ignored write_engine_fuzz_seeds`.
//! (The codec targets' seeds come from `iwarp-wire`'s `write_fuzz_seeds`.)
//!
//! - `cm_handshake`: every captured MPA exchange, played as our responder fed the captured
//!   Request (whole and in pieces) and answering as siw did, as our initiator configured as the
//!   captured one and fed the captured Reply (alone and with the bytes after it), and as our two
//!   engines configured as the two captured ends.
//! - `qp_rx`: each direction of each connection in full operation, received by a queue pair set
//!   up as the receiving end was (CRC, peer-to-peer RTR, IRD/ORD), with the receives and Reads it
//!   needs posted before the FPDUs that use them and the FPDUs rewritten to name the target's
//!   regions (Writes land in its write region, Read Requests read its read region, Read
//!   Responses fill the sink of the Read posted for them), reframed, also with markers; and each
//!   captured stream fed as it is; plus two streams of what siw never sends (RFC 7306 messages,
//!   Writes and Reads of the other regions, a Send with Invalidate).
//!
//! Files named `regress-*` (inputs that found bugs) are kept; the rest is rewritten. It also
//! writes the targets' libFuzzer dictionaries, `fuzz/<target>.dict`.

#[path = "../../../fuzz/fuzz_targets/format/cm_handshake.rs"]
mod cm_format;
#[path = "../../../fuzz/fuzz_targets/format/qp_rx.rs"]
mod qp_format;
#[path = "../../../fuzz/fuzz_targets/format/reader.rs"]
mod reader;

use cm_format::{flag, Mode, SideCfg};
use iwarp_proto::cm::FLAG_RFC7306_OFFER;
use iwarp_proto::mem::{RawMem, StagTable};
use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, FrameKind, FrameRepr, Framer, RtrTypes};
use iwarp_wire::rdmap::ReadRequest;
use iwarp_wire::{Opcode, Placement, SegmentHeader, Stag, TaggedOffset};
use qp_format::{Cmd, Header, LocalSge, PayloadSel, SendCmd, SendOpSel, StartupSel, REGIONS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// At most this many stream bytes per `qp_rx` seed, cut at an FPDU boundary.
const STREAM_CAP: usize = 2500;
/// Receive buffers take the first half of region L, Read sinks the second.
const SINK_BASE: u16 = 4096;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pcaps_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    v
}

/// One FPDU of a captured stream: its header, payload, and where it lies in the stream.
struct Fpdu {
    header: SegmentHeader,
    payload: Vec<u8>,
    wire: std::ops::Range<usize>,
}

/// The FPDUs of `data` from `start`, up to the first error or incomplete FPDU.
fn fpdus(data: &[u8], start: usize, crc: bool, markers: bool) -> Vec<Fpdu> {
    let mut d = Deframer::new(DeframerConfig { crc, markers, max_ulpdu: u16::MAX });
    let mut out = Vec::new();
    let mut cur: Option<(SegmentHeader, Vec<u8>)> = None;
    let (mut at, mut begin) = (start, start);
    while at < data.len() {
        let Ok((n, ev)) = d.feed(&data[at..]) else { break };
        assert!(n > 0, "the deframer took no byte");
        match ev {
            Event::Header(h) => match h.segment() {
                Ok(s) => cur = Some((s, Vec::new())),
                Err(_) => break,
            },
            Event::Payload(p) => cur.as_mut().expect("a header first").1.extend_from_slice(p),
            Event::End(_) => {
                let (header, payload) = cur.take().expect("a header first");
                out.push(Fpdu { header, payload, wire: begin..at + n });
                begin = at + n;
            }
            Event::None => {}
        }
        at += n;
    }
    out
}

/// The captured MPA exchange of a connection.
struct Exchange<'a> {
    request: FrameRepr<'a>,
    req_len: usize,
    reply: Option<(FrameRepr<'a>, usize)>,
}

fn exchange<'a>(c: &'a [u8], s: &'a [u8]) -> Option<Exchange<'a>> {
    let (request, req_len) = FrameRepr::parse(c, FrameKind::Request).ok().flatten()?;
    let reply = FrameRepr::parse(s, FrameKind::Reply).ok().flatten();
    Some(Exchange { request, req_len, reply })
}

fn rtr_flags(t: RtrTypes) -> u8 {
    (if t.send { flag::RTR_SEND } else { 0 })
        | (if t.write { flag::RTR_WRITE } else { 0 })
        | (if t.read { flag::RTR_READ } else { 0 })
}

fn rtr_bits(t: RtrTypes) -> u8 {
    u8::from(t.send) | u8::from(t.write) << 1 | u8::from(t.read) << 2
}

/// A side configured as the sender of `f` was.
fn side_like(f: &FrameRepr<'_>, timeout_ms: u16) -> SideCfg {
    let mut flags = if f.crc { flag::CRC } else { 0 } | if f.markers { flag::MARKERS } else { 0 };
    if f.reserved_flags & FLAG_RFC7306_OFFER != 0 {
        flags |= flag::RFC7306;
    }
    if let Some(p) = f.enhanced.filter(|p| p.peer_to_peer) {
        flags |= flag::P2P | rtr_flags(p.rtr);
    }
    let (ird, ord) = f.enhanced.map_or((1, 1), |p| (p.ird, p.ord));
    SideCfg {
        revision: f.revision,
        flags,
        max_rd_atomic: 128,
        ird,
        ord,
        timeout_ms,
        private_data: f.private_data.to_vec(),
    }
}

/// `cm_handshake` seeds for one captured exchange: two of six ways to play it, which two
/// rotating with `k` (the exchange's number) so that every way is seeded.
fn cm_seeds(x: &Exchange<'_>, c: &[u8], s: &[u8], k: usize, out: &mut BTreeSet<Vec<u8>>) {
    use cm_format::Cmd as C;
    let req = &c[..x.req_len];
    let Some((reply, rep_len)) = &x.reply else {
        // Our responder fed a Request nobody answered, then its timeout.
        let me = side_like(&x.request, 5000);
        out.insert(cm_format::encode(Mode::Responder, &[me], &[C::Feed(req.to_vec()), C::Timeout(5000)]));
        return;
    };
    let answer = if reply.reject {
        C::Reject(reply.private_data.to_vec())
    } else {
        let (ird, ord) = reply.enhanced.map_or((1, 1), |p| (p.ird, p.ord));
        C::Accept { ird, ord, private_data: reply.private_data.to_vec() }
    };
    // Our responder preferring what siw's Reply shows; our initiator configured as the captured one.
    let me = SideCfg { private_data: Vec::new(), ..side_like(reply, 5000) };
    let us = side_like(&x.request, 10_000);
    let rep = &s[..*rep_len];
    let after = &s[..(*rep_len + 64).min(s.len())];
    for way in [k % 6, (k + 3) % 6] {
        let seed = match way {
            // The Request whole, answered as siw did.
            0 => {
                cm_format::encode(Mode::Responder, std::slice::from_ref(&me), &[C::Feed(req.to_vec()), answer.clone()])
            }
            // The Request in 7-byte pieces, a clock tick, an empty read, then the answer.
            1 => {
                let mut cmds: Vec<C> = req.chunks(7).map(|p| C::Feed(p.to_vec())).collect();
                cmds.insert(1, C::Timeout(100));
                cmds.extend([C::Feed(Vec::new()), answer.clone()]);
                cm_format::encode(Mode::Responder, std::slice::from_ref(&me), &cmds)
            }
            // The Reply whole.
            2 => cm_format::encode(Mode::Initiator, std::slice::from_ref(&us), &[C::Feed(rep.to_vec())]),
            // The Reply and what followed it, cut after 10 bytes.
            3 => {
                let cmds = [C::Feed(after[..10].to_vec()), C::Timeout(1), C::Feed(after[10..].to_vec())];
                cm_format::encode(Mode::Initiator, std::slice::from_ref(&us), &cmds)
            }
            // Both ends ours, the bytes delivered whole.
            4 => cm_format::encode(
                Mode::Loopback,
                &[us.clone(), me.clone()],
                &[C::Deliver(0), answer.clone(), C::Deliver(0)],
            ),
            // Both ends ours, the bytes delivered in pieces.
            _ => cm_format::encode(
                Mode::Loopback,
                &[us.clone(), me.clone()],
                &[C::Deliver(5), C::Deliver(17), C::Deliver(0), answer.clone(), C::Deliver(20), C::Deliver(0)],
            ),
        };
        out.insert(seed);
    }
}

/// The STags the target's regions get.
fn region_stags() -> Vec<Stag> {
    let t = StagTable::new(qp_format::TABLE_SEED);
    let (_, _, mrs) = qp_format::register_all(&t, |i| RawMem::alloc(REGIONS[i].len, false).unwrap());
    mrs.iter().map(|m| m.stag()).collect()
}

/// How the seed feeds the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feeding {
    /// One feed per FPDU, reads as the plans allow.
    PerFpdu,
    /// The FPDUs between two posts in one feed, reads of at most 700 bytes.
    Grouped,
}

/// A `qp_rx` seed: the receiving end of `fs` as the target's queue pair set up per `h`.
fn qp_seed(h: Header, fs: &[Fpdu], stags: &[Stag], markers: bool, feeding: Feeding) -> Option<Vec<u8>> {
    let h = Header { recv_markers: markers, ..h };
    let mut framer = Framer::new(h.crc, markers);
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let read_max = if feeding == Feeding::Grouped { 700 } else { 0 };
    let flush = |cmds: &mut Vec<Cmd>, pending: &mut Vec<u8>| {
        if !pending.is_empty() {
            cmds.push(Cmd::Feed { read_max, bytes: std::mem::take(pending) });
        }
    };
    let (w, r, l) = (&REGIONS[qp_format::W], &REGIONS[qp_format::R], &REGIONS[qp_format::L]);
    // The first TO of the Write and of the Read Response in progress, as captured.
    let mut write_to: Option<u64> = None;
    let mut resp_to: Option<u64> = None;
    let mut sends = 0u16;
    for (i, f) in fs.iter().enumerate() {
        let mut hdr = f.header;
        let mut payload = f.payload.clone();
        match (hdr.opcode, hdr.placement) {
            (Opcode::Send | Opcode::SendSe | Opcode::SendInvalidate | Opcode::SendSeInvalidate, p) => {
                if let Placement::Untagged { mo: 0, msn, .. } = p {
                    // The message's length: the segments of its MSN on queue 0 (as far as the
                    // seed goes).
                    let len: usize = fs[i..]
                        .iter()
                        .filter(|g| matches!(g.header.placement, Placement::Untagged { qn, msn: m, .. } if qn.0 == 0 && m == msn))
                        .map(|g| g.payload.len())
                        .sum();
                    let len = u16::try_from(len).ok().filter(|&n| n <= SINK_BASE)?;
                    // Every other receive is two elements: L, then the last 8 bytes in S.
                    let tail = if sends % 2 == 1 { len.min(8) } else { 0 };
                    let mut sges = vec![LocalSge { region: qp_format::L as u8, offset: 0, len: len - tail }];
                    if tail > 0 {
                        sges.push(LocalSge { region: qp_format::S as u8, offset: 0, len: tail });
                    }
                    flush(&mut cmds, &mut pending);
                    cmds.push(Cmd::PostRecv { sges });
                    sends += 1;
                }
            }
            (Opcode::ReadRequest, _) => {
                let mut rr = ReadRequest::parse(&payload).ok()?;
                rr.src_stag = stags[qp_format::R];
                rr.src_to = TaggedOffset(r.base);
                rr.size = rr.size.min(r.len as u32);
                payload = rr.to_bytes().to_vec();
            }
            // A zero-length Write (an RTR) stays as it is: its STag and TO are not checked.
            (Opcode::Write, Placement::Tagged { to, .. }) if !(payload.is_empty() && hdr.last) => {
                let start = *write_to.get_or_insert(to.0);
                let off = to.0.checked_sub(start)?;
                if off + payload.len() as u64 > w.len as u64 {
                    return None;
                }
                if hdr.last {
                    write_to = None;
                }
                hdr.placement = Placement::Tagged { stag: stags[qp_format::W], to: TaggedOffset(w.base + off) };
            }
            (Opcode::ReadResponse, Placement::Tagged { stag, to }) => {
                let first = resp_to.is_none();
                let start = *resp_to.get_or_insert(to.0);
                let off = to.0.checked_sub(start)?;
                if hdr.last {
                    resp_to = None;
                }
                if first {
                    // The response's length: its segments up to the last one.
                    let len: usize = fs[i..]
                        .iter()
                        .filter(|g| g.header.opcode == Opcode::ReadResponse)
                        .scan(false, |done, g| (!std::mem::replace(done, g.header.last)).then_some(g.payload.len()))
                        .sum();
                    let len = u16::try_from(len).ok().filter(|&n| usize::from(n) <= l.len - usize::from(SINK_BASE))?;
                    flush(&mut cmds, &mut pending);
                    // Our Read of that many bytes from the peer's buffer, named as captured.
                    let sink = LocalSge { region: qp_format::L as u8, offset: SINK_BASE, len };
                    cmds.push(Cmd::PostSend(SendCmd {
                        op: SendOpSel::Read { stag: stag.0, to: to.0 },
                        signaled: true,
                        solicited: false,
                        fence: false,
                        payload: PayloadSel::Sges(if len > 0 { vec![sink] } else { vec![] }),
                    }));
                }
                let to = l.base + u64::from(SINK_BASE) + off;
                hdr.placement = Placement::Tagged { stag: stags[qp_format::L], to: TaggedOffset(to) };
            }
            _ => {}
        }
        let (b, n) = hdr.to_bytes();
        let before = pending.len();
        framer.frame_to_vec(&b[..n], &[&payload], &mut pending).ok()?;
        if feeding == Feeding::PerFpdu || pending.len() - before > 1000 {
            flush(&mut cmds, &mut pending);
        }
    }
    flush(&mut cmds, &mut pending);
    cmds.push(Cmd::Eof);
    Some(qp_format::encode(&h, &cmds))
}

/// The shape of a stream: which end receives it, CRC, and its FPDUs' opcodes and lengths.
/// Captures of the same test differ only in STags, TOs and payload bytes; one seed per shape.
type Shape = (bool, bool, Vec<(Opcode, usize)>);

/// `qp_rx` seeds for both directions of one captured connection: for each new shape, the
/// rewritten stream fed an FPDU at a time, and one more way (rotating): as captured, in
/// groups with short reads, or reframed with markers.
fn qp_seeds(
    x: &Exchange<'_>,
    c: &[u8],
    s: &[u8],
    stags: &[Stag],
    shapes: &mut BTreeSet<Shape>,
    out: &mut BTreeSet<Vec<u8>>,
) {
    let Some((reply, rep_len)) = &x.reply else { return };
    if reply.reject {
        return;
    }
    let crc = x.request.crc || reply.crc;
    let p2p = reply.enhanced.filter(|p| p.peer_to_peer);
    let depth = |v: Option<u16>| v.unwrap_or(8).clamp(1, 15) as u8;
    for (to_server, data, start) in [(true, c, x.req_len), (false, s, *rep_len)] {
        if data.len() <= start {
            continue;
        }
        let fs = fpdus(data, start, crc, if to_server { reply.markers } else { x.request.markers });
        // Whole FPDUs up to the cap (the first one even if longer, unless it is huge).
        let n = fs.iter().take_while(|f| f.wire.end - start <= STREAM_CAP).count();
        let n = if n == 0 && fs.first().is_some_and(|f| f.wire.len() <= 2 * STREAM_CAP) { 1 } else { n };
        let fs = &fs[..n];
        let shape = (to_server, crc, fs.iter().map(|f| (f.header.opcode, f.payload.len())).collect());
        if !shapes.insert(shape) {
            continue;
        }
        let k = shapes.len();
        // The receiving end: the server is the MPA responder, the client the initiator.
        let (startup, ird, ord) = if to_server {
            let s = match p2p {
                Some(p) => StartupSel::ResponderRtr(rtr_bits(p.rtr)),
                None => StartupSel::Responder { send_first: false },
            };
            (s, depth(reply.enhanced.map(|p| p.ird)), depth(reply.enhanced.map(|p| p.ord)))
        } else {
            // siw's peer-to-peer initiator sends a Write RTR.
            let s = if p2p.is_some() { StartupSel::InitiatorRtr(1) } else { StartupSel::Initiator };
            (s, depth(x.request.enhanced.map(|p| p.ird)), depth(x.request.enhanced.map(|p| p.ord)))
        };
        let h = Header { crc, rfc7306: false, recv_markers: false, send_markers: false, startup, ird, ord, mulpdu: 5 };
        if let Some(seed) = qp_seed(h, fs, stags, false, Feeding::PerFpdu).filter(|_| !fs.is_empty()) {
            out.insert(seed);
        }
        let extra = match k % 3 {
            // As captured, byte for byte (a bad CRC or a cut FPDU included), up to the cap.
            0 => {
                let end = fs.last().map_or((start + STREAM_CAP).min(data.len()), |f| f.wire.end);
                Some(qp_format::encode(&h, &[Cmd::Feed { read_max: 0, bytes: data[start..end].to_vec() }]))
            }
            1 => qp_seed(h, fs, stags, false, Feeding::Grouped),
            _ => qp_seed(h, fs, stags, true, Feeding::PerFpdu),
        };
        out.extend(extra);
    }
}

/// `qp_rx` seeds for what the captures lack (Linux siw implements no RFC 7306, and its Writes
/// and Reads name one buffer each): Immediate Data, an inbound atomic on the atomic region, the
/// Atomic Response to our own FetchAdd, a Write at the top of the Tagged Offset space, a Read of
/// the atomic region, and a Send with Invalidate of the write region followed by a Write to it.
fn synthetic_qp_seeds(stags: &[Stag], out: &mut BTreeSet<Vec<u8>>) {
    use iwarp_wire::rdmap::{AtomicRequest, AtomicResponse};
    use iwarp_wire::Msn;
    let (a, t, w) = (&REGIONS[qp_format::A], &REGIONS[qp_format::T], &REGIONS[qp_format::W]);
    let msgs: Vec<(SegmentHeader, Vec<u8>)> = vec![
        (SegmentHeader::untagged(Opcode::ImmediateData, true, Msn(1), 0), 7u64.to_be_bytes().to_vec()),
        (
            SegmentHeader::untagged(Opcode::AtomicRequest, true, Msn(1), 0),
            AtomicRequest::fetch_add(9, stags[qp_format::A], TaggedOffset(a.base + 8), 5).to_bytes().to_vec(),
        ),
        (
            SegmentHeader::untagged(Opcode::AtomicResponse, true, Msn(1), 0),
            AtomicResponse { request_id: 0, original: 0x0102_0304_0506_0708 }.to_bytes().to_vec(),
        ),
        (SegmentHeader::tagged(Opcode::Write, true, stags[qp_format::T], TaggedOffset(t.base + 192)), vec![0x5a; 64]),
        (
            SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(2), 0),
            ReadRequest {
                sink_stag: Stag(0x4400),
                sink_to: TaggedOffset(0x9000),
                size: 32,
                src_stag: stags[qp_format::A],
                src_to: TaggedOffset(a.base),
            }
            .to_bytes()
            .to_vec(),
        ),
        (
            SegmentHeader {
                inval_stag: stags[qp_format::W],
                ..SegmentHeader::untagged(Opcode::SendInvalidate, true, Msn(2), 0)
            },
            b"bye".to_vec(),
        ),
        (SegmentHeader::tagged(Opcode::Write, true, stags[qp_format::W], TaggedOffset(w.base)), vec![0xa5; 16]),
    ];
    for crc in [false, true] {
        let h = Header {
            crc,
            rfc7306: true,
            recv_markers: false,
            send_markers: false,
            startup: StartupSel::Initiator,
            ird: 4,
            ord: 4,
            mulpdu: 5,
        };
        let recv = |offset| Cmd::PostRecv { sges: vec![LocalSge { region: qp_format::L as u8, offset, len: 64 }] };
        let mut cmds = vec![
            recv(0),
            recv(64),
            Cmd::PostSend(SendCmd {
                op: SendOpSel::FetchAdd { stag: 0x3300, to: 0x8000, add: 1 },
                signaled: true,
                solicited: false,
                fence: false,
                payload: PayloadSel::Sges(vec![LocalSge { region: qp_format::L as u8, offset: SINK_BASE, len: 8 }]),
            }),
        ];
        let mut framer = Framer::new(crc, false);
        for (hdr, body) in &msgs {
            let (b, n) = hdr.to_bytes();
            let mut bytes = Vec::new();
            framer.frame_to_vec(&b[..n], &[body], &mut bytes).unwrap();
            cmds.push(Cmd::Feed { read_max: if crc { 0 } else { 11 }, bytes });
        }
        out.insert(qp_format::encode(&h, &cmds));
    }
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_engine_fuzz_seeds() {
    let stags = region_stags();
    let mut seeds: BTreeMap<&str, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut exchanges = BTreeSet::new();
    let mut shapes = BTreeSet::new();
    for f in pcaps_in(&root().join("testdata/captures/siw")) {
        let cap = iwarp_pcap::read_file(&f).unwrap();
        for conn in &cap.connections {
            let (c, s) = (conn.client_to_server.data(), conn.server_to_client.data());
            let Some(x) = exchange(c, s) else { continue };
            // One exchange of each kind (perftest's control and test connections repeat).
            let rep_len = x.reply.as_ref().map_or(0, |r| r.1);
            if exchanges.insert((c[..x.req_len].to_vec(), s[..rep_len].to_vec())) {
                cm_seeds(&x, c, s, exchanges.len(), seeds.entry("cm_handshake").or_default());
            }
            qp_seeds(&x, c, s, &stags, &mut shapes, seeds.entry("qp_rx").or_default());
        }
    }
    synthetic_qp_seeds(&stags, seeds.entry("qp_rx").or_default());
    let mut total = 0;
    for (target, set) in &seeds {
        let dir = root().join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if !p.file_name().unwrap().to_string_lossy().starts_with("regress-") {
                std::fs::remove_file(p).unwrap();
            }
        }
        for s in set {
            let name = format!("{:08x}-{}.bin", iwarp_wire::crc::crc32c(s), s.len());
            std::fs::write(dir.join(name), s).unwrap();
            total += s.len();
        }
        eprintln!("{target}: {} seeds", set.len());
    }
    assert!(total < 1 << 20, "seeds take {total} bytes");
    write_dictionaries(&stags);
}

/// libFuzzer dictionaries (`fuzz/<target>.dict`, passed by `run.sh`): values a mutation can
/// hardly guess, as they appear on the wire. For `qp_rx`, each region's STag and first and last
/// Tagged Offsets (so that a Write or Read can be aimed at any region, not only the ones the
/// seeds use); for `cm_handshake`, the MPA keys.
fn write_dictionaries(stags: &[Stag]) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
    let mut qp =
        String::from("# Written by crates/iwarp-proto/tests/fuzz_seeds.rs: the target's STags and TOs, big-endian.\n");
    for (i, r) in REGIONS.iter().enumerate() {
        let n = r.name;
        qp += &format!("stag_{n}=\"{}\"\n", hex(&stags[i].0.to_be_bytes()));
        qp += &format!("to_{n}=\"{}\"\n", hex(&r.base.to_be_bytes()));
        let last = r.base + (r.len as u64).saturating_sub(8);
        qp += &format!("to_{n}_end=\"{}\"\n", hex(&last.to_be_bytes()));
    }
    std::fs::write(root().join("fuzz/qp_rx.dict"), qp).unwrap();
    let cm = "# Written by crates/iwarp-proto/tests/fuzz_seeds.rs: the MPA keys.\n\
              req=\"MPA ID Req Frame\"\nrep=\"MPA ID Rep Frame\"\n";
    std::fs::write(root().join("fuzz/cm_handshake.dict"), cm).unwrap();
}

/// The formats round-trip, so that seeds mean what the writer meant.
#[test]
fn seed_formats_read_back() {
    use qp_format::Cmd as Q;
    let h = Header {
        crc: true,
        rfc7306: true,
        recv_markers: false,
        send_markers: true,
        startup: StartupSel::ResponderRtr(5),
        ird: 3,
        ord: 9,
        mulpdu: 7,
    };
    let cmds = vec![
        Q::Feed { read_max: 7, bytes: vec![1, 2, 3] },
        Q::PostRecv { sges: vec![LocalSge { region: 3, offset: 9, len: 300 }] },
        Q::PostSend(SendCmd {
            op: SendOpSel::CompareSwap { stag: 5, to: 8, compare: 1, swap: 2 },
            signaled: true,
            solicited: false,
            fence: true,
            payload: PayloadSel::Inline(vec![4; 9]),
        }),
        Q::PostSend(SendCmd {
            op: SendOpSel::LocalInvalidate { region: 2 },
            signaled: false,
            solicited: true,
            fence: false,
            payload: PayloadSel::Sges(vec![LocalSge { region: 1, offset: 0, len: 1 }; 3]),
        }),
        Q::Disconnect,
        Q::Timeout { ms: 300 },
        Q::Eof,
        Q::TransportError,
        Q::TxBudget { bytes: 12 },
        Q::Wake { first_ms: 5, count: 2 },
        Q::SetMulpdu { mulpdu: 999 },
    ];
    assert_eq!(qp_format::decode(&qp_format::encode(&h, &cmds)), (h, cmds));
    use cm_format::Cmd as C;
    let side =
        SideCfg { revision: 2, flags: 0x5a, max_rd_atomic: 3, ird: 4, ord: 5, timeout_ms: 6, private_data: vec![7; 8] };
    let cmds = vec![
        C::Feed(vec![1, 2]),
        C::Timeout(3),
        C::Accept { ird: 1, ord: 2, private_data: vec![3] },
        C::Reject(vec![]),
        C::Deliver(9),
        C::Prefs(0x11),
    ];
    let sides = vec![side.clone(), side];
    assert_eq!(cm_format::decode(&cm_format::encode(Mode::Loopback, &sides, &cmds)), (Mode::Loopback, sides, cmds));
}
