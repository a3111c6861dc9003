//! The Linux siw captures in `testdata/captures/siw`, decoded with this crate's codecs: every MPA
//! Request/Reply and every FPDU parses, CRCs check where negotiated, the facts the captures'
//! README lists hold, and re-encoding every header with our encoders reproduces the captured
//! bytes exactly. Captures under `testdata/captures/perftest`, when present, get the generic
//! checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use iwarp_pcap::{Connection, Direction};
use iwarp_wire::crc;
use iwarp_wire::mpa::{Deframer, DeframerConfig, EnhancedParams, Event, FrameKind, FrameRepr, Framer, Need, RtrTypes};
use iwarp_wire::rdmap::{AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::{Mpa, TerminateCause, TerminateLayout, TerminateMessage};
use iwarp_wire::{Error, Msn, Opcode, Placement, QueueNumber, SegmentHeader, Stag, TaggedOffset};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/captures")
}

fn siw(name: &str) -> PathBuf {
    testdata().join("siw").join(name)
}

/// One FPDU found in a stream.
#[derive(Debug, Clone)]
struct Fpdu {
    dir: Direction,
    /// Frame that carried the ULPDU_Length field.
    frame: u64,
    /// Length field and DDP header as received.
    raw_header: Vec<u8>,
    header: SegmentHeader,
    payload: Vec<u8>,
    /// CRC field as received.
    crc: u32,
    /// Every byte was captured (a snap length can cut frames short).
    captured: bool,
    /// Where the FPDU lies in its direction's stream (a marker in front of it included): the
    /// bytes its CRC covers, then the CRC field.
    wire: std::ops::Range<usize>,
}

impl Fpdu {
    fn stag(&self) -> Stag {
        match self.header.placement {
            Placement::Tagged { stag, .. } => stag,
            Placement::Untagged { .. } => panic!("untagged FPDU in frame {}", self.frame),
        }
    }
    fn to(&self) -> TaggedOffset {
        match self.header.placement {
            Placement::Tagged { to, .. } => to,
            Placement::Untagged { .. } => panic!("untagged FPDU in frame {}", self.frame),
        }
    }
    fn qn_msn_mo(&self) -> (QueueNumber, Msn, u32) {
        match self.header.placement {
            Placement::Untagged { qn, msn, mo } => (qn, msn, mo),
            Placement::Tagged { .. } => panic!("tagged FPDU in frame {}", self.frame),
        }
    }
}

/// The error that stopped a direction, with what had arrived of the FPDU it hit.
#[derive(Debug, Clone)]
struct Failure {
    error: Error,
    frame: Option<u64>,
    raw_header: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// One direction in full operation.
#[derive(Debug, Default)]
struct Half {
    fpdus: Vec<Fpdu>,
    failure: Option<Failure>,
    /// Stream offset where full operation starts (after the MPA frame).
    start: usize,
    markers: bool,
}

/// A connection decoded with the codecs under test.
struct Decoded<'a> {
    conn: &'a Connection,
    request: FrameRepr<'a>,
    reply: Option<FrameRepr<'a>>,
    crc: bool,
    c2s: Half,
    s2c: Half,
    /// FPDUs whose pad bytes are not zero.
    dirty_pad: usize,
}

impl Decoded<'_> {
    fn half(&self, dir: Direction) -> &Half {
        match dir {
            Direction::ClientToServer => &self.c2s,
            Direction::ServerToClient => &self.s2c,
        }
    }

    /// Both directions' FPDUs in capture order.
    fn fpdus(&self) -> Vec<&Fpdu> {
        let mut all: Vec<&Fpdu> = self.c2s.fpdus.iter().chain(&self.s2c.fpdus).collect();
        all.sort_by_key(|f| f.frame);
        all
    }

    fn opcodes(&self) -> Vec<Opcode> {
        self.fpdus().iter().map(|f| f.header.opcode).collect()
    }

    fn ports(&self) -> (u16, u16) {
        (self.conn.client.port(), self.conn.server.port())
    }
}

/// Parses the MPA frames, then deframes each direction in the chunks TCP delivered.
/// Returns `None` for a connection that does not start with an MPA Request.
fn decode(conn: &Connection) -> Option<Decoded<'_>> {
    let c = conn.client_to_server.data();
    let s = conn.server_to_client.data();
    if !c.starts_with(b"MPA ID Req Frame") {
        return None;
    }
    let (request, req_len) = FrameRepr::parse(c, FrameKind::Request).unwrap().expect("whole MPA Request");
    let reply = FrameRepr::parse(s, FrameKind::Reply).unwrap();
    let mut d = Decoded {
        conn,
        request,
        reply: reply.map(|r| r.0),
        crc: false,
        c2s: Half { start: req_len, ..Half::default() },
        s2c: Half { start: s.len().min(reply.map_or(0, |r| r.1)), ..Half::default() },
        dirty_pad: 0,
    };
    let Some((reply, rep_len)) = reply else {
        assert!(s.is_empty(), "bytes from a server that sent no MPA Reply");
        return Some(d);
    };
    // RFC 5044 §7.1.2: bytes after the Request only once the Reply arrived; none after a reject.
    if reply.reject {
        assert_eq!((c.len(), s.len()), (req_len, rep_len), "FPDUs after a rejecting Reply");
        return Some(d);
    }
    // RFC 5044 §7.1: CRC is used if either side asked for it; markers go toward a side that asked.
    d.crc = request.crc || reply.crc;
    d.c2s = deframe(conn, C2S, req_len, d.crc, reply.markers);
    d.s2c = deframe(conn, S2C, rep_len, d.crc, request.markers);
    Some(d)
}

fn deframe(conn: &Connection, dir: Direction, start: usize, crc: bool, markers: bool) -> Half {
    let stream = conn.stream(dir);
    let data = stream.data();
    // Bytes a snap length cut off read as zeros: their CRCs cannot be checked.
    let mut d =
        Deframer::new(DeframerConfig { crc: crc && stream.uncaptured().is_empty(), markers, max_ulpdu: u16::MAX });
    let mut half = Half { start, markers, ..Half::default() };
    let mut cur: Option<(u64, Vec<u8>, Vec<u8>)> = None;
    let mut cur_start: Option<usize> = None;
    let mut wire_start: Option<usize> = None;
    // Feed in the chunks the frames carried.
    'runs: for run in stream.runs() {
        let end = (run.offset + run.len) as usize;
        let mut at = (run.offset as usize).max(start);
        while at < end {
            wire_start.get_or_insert(at);
            if cur_start.is_none() && matches!(d.need(), Need::Header(_)) {
                cur_start = Some(at);
            }
            match d.feed(&data[at..end]) {
                Ok((n, ev)) => {
                    assert!(n > 0, "no progress");
                    match ev {
                        Event::Header(h) => {
                            let frame = stream.frame_at(cur_start.unwrap() as u64).unwrap();
                            cur = Some((frame, h.as_bytes().to_vec(), Vec::new()));
                        }
                        Event::Payload(p) => cur.as_mut().unwrap().2.extend_from_slice(p),
                        Event::End(e) => {
                            let (frame, raw_header, payload) = cur.take().unwrap();
                            let header =
                                SegmentHeader::parse(&raw_header[2..]).unwrap_or_else(|e| panic!("frame {frame}: {e}"));
                            let wire = wire_start.take().unwrap()..at + n;
                            let captured = stream.is_captured(wire.start as u64..wire.end as u64);
                            half.fpdus.push(Fpdu {
                                dir,
                                frame,
                                raw_header,
                                header,
                                payload,
                                crc: e.crc,
                                captured,
                                wire,
                            });
                            cur_start = None;
                        }
                        Event::None => {}
                    }
                    at += n;
                }
                Err(error) => {
                    let (frame, raw_header, payload) = match cur.take() {
                        Some((f, h, p)) => (Some(f), Some(h), p),
                        None => (cur_start.and_then(|s| stream.frame_at(s as u64)), None, Vec::new()),
                    };
                    half.failure = Some(Failure { error, frame, raw_header, payload });
                    break 'runs;
                }
            }
        }
    }
    if half.failure.is_none() {
        assert!(d.is_idle(), "{dir:?} stream ends inside an FPDU");
    }
    half
}

/// Re-encodes every FPDU of `half` with `SegmentHeader::emit` and a `Framer` and compares with
/// the captured stream, CRC included. Returns the number of FPDUs whose captured pad is not zero
/// (siw sends stale bytes there): those match except in pad and CRC, and the captured CRC covers
/// the captured pad. A failed FPDU must differ only in its CRC.
fn assert_reencodes(d: &Decoded<'_>, dir: Direction) -> usize {
    let half = d.half(dir);
    let data = d.conn.stream(dir).data();
    let mut framer = Framer::new(d.crc, half.markers);
    let mut at = half.start;
    let mut dirty_pad = 0;
    for f in &half.fpdus {
        let (hdr, len) = f.header.to_bytes();
        assert_eq!(&hdr[..len], &f.raw_header[2..], "DDP header of frame {}", f.frame);
        let mut one = Vec::new();
        let n = framer.frame_to_vec(&hdr[..len], &[&f.payload], &mut one).unwrap();
        let captured = &data[at..at + n];
        if !f.captured {
            // Only the headers are there to compare.
            assert_eq!(&captured[..f.raw_header.len()], &one[..f.raw_header.len()], "frame {}", f.frame);
        } else if captured != &one[..] {
            // Only the pad (and so the CRC) may differ.
            let pad = iwarp_wire::mpa::pad_len(f.payload.len() + len);
            assert!(pad > 0, "frame {}: re-encoding differs", f.frame);
            assert_eq!(&captured[..n - 4 - pad], &one[..n - 4 - pad], "frame {}", f.frame);
            assert_ne!(&captured[n - 4 - pad..n - 4], &[0, 0, 0][..pad], "frame {}", f.frame);
            if d.crc {
                assert_eq!(crc::crc32c(&captured[..n - 4]), f.crc, "frame {}: CRC covers the pad", f.frame);
            } else {
                assert_eq!(&captured[n - 4..], &one[n - 4..], "frame {}", f.frame);
            }
            dirty_pad += 1;
        }
        if !d.crc {
            // siw sends zero in the CRC field when CRC is off.
            assert_eq!(f.crc, 0, "frame {}", f.frame);
        }
        at += n;
    }
    match &half.failure {
        None => assert_eq!(at, data.len(), "{dir:?}: bytes after the last FPDU"),
        Some(Failure { error: Error::Crc { received, computed }, raw_header: Some(h), payload, .. }) => {
            let mut bad = Vec::new();
            let n = framer.frame_to_vec(&h[2..], &[payload], &mut bad).unwrap();
            assert_eq!(&data[at..at + n - 4], &bad[..n - 4]);
            assert_eq!(&bad[n - 4..], &crc::to_wire(*computed));
            assert_eq!(&data[at + n - 4..at + n], &crc::to_wire(*received));
        }
        Some(other) => panic!("{dir:?}: unexpected failure {other:?}"),
    }
    dirty_pad
}

/// The checks every capture passes: MSNs count from 1 per queue and direction; segments of one
/// message agree and their offsets advance contiguously; Read Request bodies and Terminates
/// decode and re-encode.
fn assert_generic(d: &Decoded<'_>) -> usize {
    let mut dirty_pad = 0;
    for dir in [C2S, S2C] {
        dirty_pad += assert_reencodes(d, dir);
        let half = d.half(dir);
        // Per queue: the MSN of the message being received and the next MO expected.
        let mut queues: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
        // Per tagged message in progress: (STag, next TO).
        let mut tagged: Option<(Stag, u64)> = None;
        for f in &half.fpdus {
            match f.header.placement {
                Placement::Untagged { qn, msn, mo } => {
                    let (want_msn, want_mo) = queues.get(&qn.0).copied().unwrap_or((1, 0));
                    assert_eq!((msn.0, mo), (want_msn, want_mo), "frame {} QN {}", f.frame, qn.0);
                    let next =
                        if f.header.last { (want_msn + 1, 0) } else { (want_msn, want_mo + f.payload.len() as u32) };
                    queues.insert(qn.0, next);
                    match f.header.opcode {
                        Opcode::ReadRequest => {
                            let rr = ReadRequest::parse(&f.payload).unwrap();
                            assert_eq!(rr.to_bytes(), &f.payload[..]);
                        }
                        Opcode::Terminate => {
                            TerminateMessage::parse(&f.payload).unwrap();
                        }
                        Opcode::AtomicRequest => {
                            assert_eq!(AtomicRequest::parse(&f.payload).unwrap().to_bytes(), &f.payload[..]);
                        }
                        Opcode::AtomicResponse => {
                            assert_eq!(AtomicResponse::parse(&f.payload).unwrap().to_bytes(), &f.payload[..]);
                        }
                        _ => {}
                    }
                }
                Placement::Tagged { stag, to } => {
                    if let Some((s, next)) = tagged {
                        assert_eq!((stag, to.0), (s, next), "frame {}: segment continues its message", f.frame);
                    }
                    tagged = (!f.header.last).then_some((stag, to.0 + f.payload.len() as u64));
                }
            }
        }
    }
    dirty_pad
}

fn decode_file(path: &Path) -> Vec<Decoded<'static>> {
    // Leaked so the decoded frames can borrow from the capture for the rest of the test.
    let cap = Box::leak(Box::new(iwarp_pcap::read_file(path).unwrap()));
    let mut all: Vec<Decoded<'static>> = cap.connections.iter().filter_map(decode).collect();
    for d in &mut all {
        d.dirty_pad = assert_generic(d);
    }
    all
}

fn decode_one(name: &str) -> Decoded<'static> {
    let mut all = decode_file(&siw(name));
    assert_eq!(all.len(), 1, "{name}");
    all.remove(0)
}

/// The CRC field as tshark prints it (`iwarp_mpa.crc_check`): the wire bytes read as one
/// big-endian number.
fn as_tshark_prints(crc_value: u32) -> u32 {
    u32::from_be_bytes(crc::to_wire(crc_value))
}

/// CRC is on and every FPDU was captured whole, its CRC field (as the sender computed it) the
/// CRC32c of the bytes in front of it in the capture (our CRC32c matches the RFC 3720 test
/// vectors, `crc.rs`); neither direction failed.
fn assert_all_crcs_good(d: &Decoded<'_>) {
    assert!(d.crc);
    assert!(d.c2s.failure.is_none() && d.s2c.failure.is_none());
    for f in d.fpdus() {
        assert!(f.captured, "frame {}: not captured whole, its CRC cannot be checked", f.frame);
        let data = d.conn.stream(f.dir).data();
        let (covered, field) = data[f.wire.clone()].split_at(f.wire.len() - 4);
        assert_eq!(field, crc::to_wire(f.crc), "frame {}: the CRC field as captured", f.frame);
        assert_eq!(crc::crc32c(covered), f.crc, "frame {}", f.frame);
    }
}

/// A single-segment message of one opcode with its placement.
fn untagged(f: &Fpdu, opcode: Opcode, qn: u32, msn: u32) {
    assert_eq!(f.header.opcode, opcode, "frame {}", f.frame);
    assert!(f.header.last);
    assert_eq!(f.qn_msn_mo(), (QueueNumber(qn), Msn(msn), 0), "frame {}", f.frame);
}

// ---------------------------------------------------------------------------------------------
// rping

/// rping: one iteration is Send, Read Request, Read Response, Send, Send, Write, Send.
const RPING_ROUND: [Opcode; 7] =
    [Opcode::Send, Opcode::ReadRequest, Opcode::ReadResponse, Opcode::Send, Opcode::Send, Opcode::Write, Opcode::Send];

fn rping_rounds(n: usize) -> Vec<Opcode> {
    RPING_ROUND.iter().copied().cycle().take(7 * n).collect()
}

struct RpingStags {
    read_source: u32,
    write_sink: u32,
    read_sink: u32,
}

/// The rping conversation of `rounds` 64-byte pings: sequence numbers, STags and sizes.
fn assert_rping(d: &Decoded<'_>, first: usize, rounds: usize, stags: RpingStags) {
    let all = d.fpdus();
    let all = &all[first..];
    assert_eq!(all.iter().map(|f| f.header.opcode).collect::<Vec<_>>(), rping_rounds(rounds));
    for (i, round) in all.chunks(7).enumerate() {
        let n = i as u32 + 1;
        // The client sends its buffer's address in a Send; the server reads it, then writes it back.
        assert_eq!(round[0].dir, C2S);
        untagged(round[0], Opcode::Send, 0, 2 * n - 1);
        assert_eq!(round[0].payload.len(), 16, "rping's 16-byte buffer advertisement");
        assert_eq!(round[1].dir, S2C);
        untagged(round[1], Opcode::ReadRequest, 1, n);
        let rr = ReadRequest::parse(&round[1].payload).unwrap();
        assert_eq!((rr.sink_stag, rr.src_stag, rr.size), (Stag(stags.read_sink), Stag(stags.read_source), 64));
        assert_eq!(round[2].dir, C2S);
        assert_eq!((round[2].stag(), round[2].to()), (rr.sink_stag, rr.sink_to));
        assert_eq!(round[2].payload.len(), 64);
        assert_eq!(round[3].dir, S2C);
        untagged(round[3], Opcode::Send, 0, 2 * n - 1);
        assert_eq!(round[4].dir, C2S);
        untagged(round[4], Opcode::Send, 0, 2 * n);
        assert_eq!(round[5].dir, S2C);
        assert_eq!(round[5].stag(), Stag(stags.write_sink));
        assert_eq!(round[5].payload.len(), 64);
        // The server writes back what it read.
        assert_eq!(round[5].payload, round[2].payload);
        assert_eq!(round[6].dir, S2C);
        untagged(round[6], Opcode::Send, 0, 2 * n);
    }
}

fn enhanced(ird: u16, ord: u16) -> Option<EnhancedParams> {
    Some(EnhancedParams::client_server(ird, ord))
}

#[test]
fn rping_v2_crc() {
    let d = decode_one("rping-v2-crc.pcap");
    assert_eq!(d.ports(), (49531, 7174));
    for f in [&d.request, d.reply.as_ref().unwrap()] {
        assert_eq!((f.revision, f.crc, f.markers, f.reject, f.reserved_flags), (2, true, false, false, 0));
        assert_eq!(f.enhanced, enhanced(1, 1));
        assert!(f.private_data.is_empty());
    }
    assert_all_crcs_good(&d);
    assert_rping(&d, 0, 3, RpingStags { read_source: 0x5b41_7000, write_sink: 0xd715_2e00, read_sink: 0x9998_6300 });
    // Frame numbers and CRCs as tshark shows them (frames 8, 9, 10, 13).
    let all = d.fpdus();
    let frames: Vec<u64> = all.iter().map(|f| f.frame).collect();
    assert_eq!(&frames[..7], &[8, 9, 10, 11, 12, 13, 14]);
    assert_eq!(as_tshark_prints(all[0].crc), 0x826e_4093);
    assert_eq!(as_tshark_prints(all[1].crc), 0xcc8a_b935);
    assert_eq!(as_tshark_prints(all[2].crc), 0x2070_9956);
    assert_eq!(as_tshark_prints(all[5].crc), 0x7e0a_9fe4);
    assert_eq!(all[2].to(), TaggedOffset(0x0000_5556_b734_c550));
    assert_eq!(all[5].to(), TaggedOffset(0x0000_563b_39a4_6550));
}

#[test]
fn rping_v2_nocrc() {
    let d = decode_one("rping-v2-nocrc.pcap");
    assert_eq!(d.ports(), (52147, 7174));
    for f in [&d.request, d.reply.as_ref().unwrap()] {
        assert_eq!((f.revision, f.crc, f.markers), (2, false, false));
        assert_eq!(f.enhanced, enhanced(1, 1));
    }
    assert!(!d.crc);
    assert!(d.fpdus().iter().all(|f| f.crc == 0));
    assert_rping(&d, 0, 3, RpingStags { read_source: 0xa3b2_8300, write_sink: 0x88c9_da00, read_sink: 0x0e14_a800 });
}

#[test]
fn rping_v2_crc_on_the_any_device() {
    let d = decode_one("rping-v2-crc-iface-any.pcap");
    assert_eq!(d.ports(), (42224, 7176));
    assert_eq!(d.request.enhanced, enhanced(1, 1));
    assert_all_crcs_good(&d);
    assert_eq!(d.opcodes(), rping_rounds(1));
}

#[test]
fn rping_v2_peer_to_peer_with_write_rtr() {
    let d = decode_one("rping-v2-p2p-crc.pcap");
    assert_eq!(d.ports(), (36200, 7174));
    // Request 8001 c001: P2P, IRD 1; ORD 1 with Write and Read RTR offered.
    let req = d.request.enhanced.unwrap();
    assert_eq!(
        req,
        EnhancedParams { peer_to_peer: true, ird: 1, ord: 1, rtr: RtrTypes { send: false, write: true, read: true } }
    );
    // Reply 8001 8001: P2P, Write RTR chosen.
    let rep = d.reply.unwrap().enhanced.unwrap();
    assert_eq!(
        rep,
        EnhancedParams { peer_to_peer: true, ird: 1, ord: 1, rtr: RtrTypes { send: false, write: true, read: false } }
    );
    assert_all_crcs_good(&d);
    // The RTR: a zero-length RDMA Write to STag 1, TO 0, before anything else.
    let rtr = d.fpdus()[0];
    assert_eq!((rtr.dir, rtr.frame), (C2S, 8));
    assert_eq!(rtr.header, SegmentHeader::tagged(Opcode::Write, true, Stag(1), TaggedOffset(0)));
    assert!(rtr.payload.is_empty());
    assert_eq!(as_tshark_prints(rtr.crc), 0xebd3_4c5f);
    assert_rping(&d, 1, 3, RpingStags { read_source: 0xdd7a_1b00, write_sink: 0x692c_b200, read_sink: 0x9ba2_b600 });
}

fn assert_rev1_rping(name: &str, crc: bool) {
    let d = decode_one(name);
    for f in [&d.request, d.reply.as_ref().unwrap()] {
        assert_eq!((f.revision, f.crc, f.enhanced, f.pd_length()), (1, crc, None, 0));
    }
    assert_eq!(d.crc, crc);
    // Only the client's first Send: the server fails on its RDMA Read and closes.
    assert!(d.s2c.fpdus.is_empty());
    assert_eq!(d.c2s.fpdus.len(), 1);
    untagged(&d.c2s.fpdus[0], Opcode::Send, 0, 1);
    if crc {
        assert_all_crcs_good(&d);
    } else {
        assert_eq!(d.c2s.fpdus[0].crc, 0, "siw sends zero in the CRC field when CRC is off");
    }
}

#[test]
fn rping_v1_crc() {
    assert_rev1_rping("rping-v1-crc.pcap", true);
}

#[test]
fn rping_v1_nocrc() {
    assert_rev1_rping("rping-v1-nocrc.pcap", false);
}

// ---------------------------------------------------------------------------------------------
// perftest -R

/// The test QP's connection (the second one; the first carries perftest's own exchange).
fn perftest(name: &str, rev: u8, crc: bool, params: Option<(u16, u16)>) -> Decoded<'static> {
    let mut all = decode_file(&siw(name));
    assert_eq!(all.len(), 2, "{name}: control and test connections");
    for d in &all {
        for f in [&d.request, d.reply.as_ref().unwrap()] {
            assert_eq!((f.revision, f.crc), (rev, crc), "{name}");
            assert!(f.private_data.is_empty());
        }
        assert_eq!(d.crc, crc);
        if !crc {
            assert!(d.fpdus().iter().all(|f| f.crc == 0));
        } else {
            assert_all_crcs_good(d);
        }
    }
    // The control connection: IRD = ORD = 0 on rev 2.
    let want_control = params.map(|_| (0, 0));
    assert_eq!(all[0].request.enhanced.map(|e| (e.ird, e.ord)), want_control);
    assert_eq!(all[0].dirty_pad, 2, "{name}: the two 2-byte Sends of the control connection");
    let test = all.remove(1);
    assert_eq!(test.dirty_pad, 0);
    assert_eq!(test.request.enhanced.map(|e| (e.ird, e.ord)), params);
    assert_eq!(test.reply.unwrap().enhanced.map(|e| (e.ird, e.ord)), params);
    test
}

/// Tagged messages: groups consecutive segments up to the L flag; returns (STag, TO, bytes, segments).
fn tagged_messages(fpdus: &[&Fpdu], opcode: Opcode) -> Vec<(Stag, TaggedOffset, usize, usize)> {
    let mut out = Vec::new();
    let mut cur: Option<(Stag, TaggedOffset, usize, usize)> = None;
    for f in fpdus.iter().filter(|f| f.header.opcode == opcode) {
        let c = cur.get_or_insert((f.stag(), f.to(), 0, 0));
        c.2 += f.payload.len();
        c.3 += 1;
        if f.header.last {
            out.push(cur.take().unwrap());
        }
    }
    assert!(cur.is_none(), "unfinished {opcode:?} message");
    out
}

#[test]
fn ib_write_bw_v2_crc_4k() {
    let d = perftest("ib_write_bw-v2-crc-4k.pcap", 2, true, Some((0, 0)));
    assert_eq!(d.ports(), (39411, 18515));
    let writes = tagged_messages(&d.fpdus(), Opcode::Write);
    assert_eq!(writes, vec![(Stag(0xc2d0_8300), TaggedOffset(0x55d9_6a14_f000), 4096, 1); 5]);
}

#[test]
fn ib_write_bw_v2_nocrc_4k() {
    let d = perftest("ib_write_bw-v2-nocrc-4k.pcap", 2, false, Some((0, 0)));
    assert_eq!(d.ports(), (57994, 18515));
    let writes = tagged_messages(&d.fpdus(), Opcode::Write);
    assert_eq!(writes.len(), 5);
    assert!(writes.iter().all(|w| w.0 == Stag(0xc27d_4000) && w.2 == 4096));
}

#[test]
fn ib_write_bw_v1_nocrc_4k() {
    let d = perftest("ib_write_bw-v1-nocrc-4k.pcap", 1, false, None);
    assert_eq!(d.ports(), (44952, 18515));
    let writes = tagged_messages(&d.fpdus(), Opcode::Write);
    assert_eq!(writes.len(), 5);
    assert!(writes.iter().all(|w| w.0 == Stag(0x59cf_2800) && w.2 == 4096));
}

#[test]
fn ib_write_bw_v2_crc_64k_segments_each_write() {
    let d = perftest("ib_write_bw-v2-crc-64k.pcap", 2, true, Some((0, 0)));
    assert_eq!(d.ports(), (52365, 18516));
    let fpdus = d.fpdus();
    let writes = tagged_messages(&fpdus, Opcode::Write);
    assert_eq!(writes.len(), 5);
    for w in &writes {
        assert_eq!((w.0, w.2), (Stag(0x8cbf_b900), 65536));
        assert!(w.3 > 1, "a 64 KiB Write is several DDP segments");
    }
    // The segment sizes siw chose: 32748 + 32748 + 40, 32748 + 32788, then 65460 + 76 three times.
    let sizes: Vec<usize> =
        fpdus.iter().filter(|f| f.header.opcode == Opcode::Write).map(|f| f.payload.len()).collect();
    assert_eq!(sizes, [32748, 32748, 40, 32748, 32788, 65460, 76, 65460, 76, 65460, 76]);
    // Every message starts at the buffer's base; assert_generic checked TO continuity.
    assert!(writes.iter().all(|w| w.1 == TaggedOffset(0x7f80_6bba_f000)));
}

#[test]
fn ib_read_bw_v2_crc_4k() {
    let d = perftest("ib_read_bw-v2-crc-4k.pcap", 2, true, Some((128, 128)));
    assert_eq!(d.ports(), (39258, 18517));
    let reqs: Vec<&Fpdu> = d.c2s.fpdus.iter().filter(|f| f.header.opcode == Opcode::ReadRequest).collect();
    assert_eq!(reqs.len(), 5);
    for (i, f) in reqs.iter().enumerate() {
        untagged(f, Opcode::ReadRequest, 1, i as u32 + 1);
        let rr = ReadRequest::parse(&f.payload).unwrap();
        assert_eq!((rr.sink_stag, rr.src_stag, rr.size), (Stag(0xc3d3_5b00), Stag(0x8dcb_7f00), 4096));
    }
    // The capture holds four Read Responses for the five requests (tshark shows the same).
    let resps = tagged_messages(&d.fpdus(), Opcode::ReadResponse);
    assert_eq!(resps.len(), 4);
    let sink_to = ReadRequest::parse(&reqs[0].payload).unwrap().sink_to;
    assert!(resps.iter().all(|r| (r.0, r.1, r.2) == (Stag(0xc3d3_5b00), sink_to, 4096)));
}

#[test]
fn ib_read_bw_v2_crc_64k_segments_each_response() {
    let d = perftest("ib_read_bw-v2-crc-64k.pcap", 2, true, Some((128, 128)));
    assert_eq!(d.ports(), (60079, 18519));
    let reqs: Vec<ReadRequest> = d
        .c2s
        .fpdus
        .iter()
        .filter(|f| f.header.opcode == Opcode::ReadRequest)
        .map(|f| ReadRequest::parse(&f.payload).unwrap())
        .collect();
    assert_eq!(reqs.len(), 5);
    assert!(reqs.iter().all(|r| (r.sink_stag, r.src_stag, r.size) == (Stag(0xaf69_a100), Stag(0x8aaa_0f00), 65536)));
    let resps = tagged_messages(&d.fpdus(), Opcode::ReadResponse);
    assert_eq!(resps.len(), 5);
    for r in &resps {
        assert_eq!((r.0, r.1, r.2), (Stag(0xaf69_a100), reqs[0].sink_to, 65536));
        assert!(r.3 > 1, "a 64 KiB Read Response is several DDP segments");
    }
    let sizes: Vec<usize> =
        d.s2c.fpdus.iter().filter(|f| f.header.opcode == Opcode::ReadResponse).map(|f| f.payload.len()).collect();
    assert_eq!(sizes, [32748, 32748, 40].repeat(5));
}

#[test]
fn ib_read_bw_v1_nocrc_4k() {
    let d = perftest("ib_read_bw-v1-nocrc-4k.pcap", 1, false, None);
    assert_eq!(d.ports(), (34556, 18515));
    let reqs: Vec<ReadRequest> = d
        .fpdus()
        .iter()
        .filter(|f| f.header.opcode == Opcode::ReadRequest)
        .map(|f| ReadRequest::parse(&f.payload).unwrap())
        .collect();
    assert_eq!(reqs.len(), 5);
    let stags = [reqs[0].sink_stag.0, reqs[0].src_stag.0];
    assert!(stags.contains(&0x088d_6c00) && stags.contains(&0x989d_fd00), "{stags:x?}");
    assert_eq!(tagged_messages(&d.fpdus(), Opcode::ReadResponse).len(), 5);
}

#[test]
fn ib_send_bw_v2_crc_4k() {
    let d = perftest("ib_send_bw-v2-crc-4k.pcap", 2, true, Some((0, 0)));
    assert_eq!(d.ports(), (33647, 18518));
    let sends: Vec<&Fpdu> = d.c2s.fpdus.iter().filter(|f| f.header.opcode == Opcode::Send).collect();
    assert_eq!(sends.len(), 5);
    for (i, f) in sends.iter().enumerate() {
        untagged(f, Opcode::Send, 0, i as u32 + 1);
        assert_eq!(f.payload.len(), 4096);
    }
    // The server's 4-byte RDMA Writes.
    let writes: Vec<&Fpdu> = d.s2c.fpdus.iter().filter(|f| f.header.opcode == Opcode::Write).collect();
    assert!(!writes.is_empty());
    assert!(writes.iter().all(|w| w.stag() == Stag(0x0fcf_8c00) && w.payload.len() == 4 && w.header.last));
}

// ---------------------------------------------------------------------------------------------
// Host probes

#[test]
fn host_probe_mpa_negotiations() {
    let all = decode_file(&siw("host-probe-mpa.pcap"));
    let by_port = |p: u16| all.iter().find(|d| d.conn.server.port() == p).unwrap_or_else(|| panic!("port {p}"));
    assert_eq!(all.len(), 5);

    // 7174: rev 2, IRD/ORD 8/8 both ways, no CRC.
    let d = by_port(7174);
    assert_eq!(d.request.enhanced, enhanced(8, 8));
    assert_eq!(d.reply.unwrap().enhanced, enhanced(8, 8));
    assert!(!d.crc && d.fpdus().is_empty());

    // 7175: rev 1 without private data, answered in rev 1.
    let d = by_port(7175);
    let rep = d.reply.unwrap();
    assert_eq!((d.request.revision, d.request.pd_length(), rep.revision, rep.pd_length()), (1, 0, 1, 0));

    // 7176: C and P2P with Write RTR; the reply echoes 8001 8001; our RTR Write (STag 0) goes through.
    let d = by_port(7176);
    let p2p_write =
        EnhancedParams { peer_to_peer: true, ird: 1, ord: 1, rtr: RtrTypes { send: false, write: true, read: false } };
    assert_eq!((d.request.crc, d.request.enhanced), (true, Some(p2p_write)));
    assert_eq!(d.reply.unwrap().enhanced, Some(p2p_write));
    assert_all_crcs_good(d);
    let rtr = d.fpdus();
    assert_eq!(rtr.len(), 1);
    assert_eq!(rtr[0].header, SegmentHeader::tagged(Opcode::Write, true, Stag(0), TaggedOffset(0)));
    assert_eq!(as_tshark_prints(rtr[0].crc), 0xa305_72ab);

    // 7177: markers requested: rejected, with IRD/ORD 0/0 in the reply.
    let d = by_port(7177);
    assert!(d.request.markers);
    let rep = d.reply.unwrap();
    assert!(rep.reject);
    assert_eq!(rep.enhanced, enhanced(0, 0));

    // 7178: P2P with Read RTR: a zero-length Read Request, answered by a zero-length Read Response.
    let d = by_port(7178);
    // Request and reply 8001 4001: P2P, IRD 1; ORD 1 with Read RTR.
    let p2p_read =
        EnhancedParams { peer_to_peer: true, ird: 1, ord: 1, rtr: RtrTypes { send: false, write: false, read: true } };
    assert_eq!(d.request.enhanced, Some(p2p_read));
    assert_eq!(d.reply.unwrap().enhanced, Some(p2p_read));
    assert_all_crcs_good(d);
    let f = d.fpdus();
    assert_eq!(f.len(), 2);
    untagged(f[0], Opcode::ReadRequest, 1, 1);
    let rr = ReadRequest::parse(&f[0].payload).unwrap();
    assert_eq!(rr, ReadRequest::default());
    assert_eq!(f[1].dir, S2C);
    assert_eq!(f[1].header, SegmentHeader::tagged(Opcode::ReadResponse, true, Stag(0), TaggedOffset(0)));
    assert!(f[1].payload.is_empty());
}

#[test]
fn host_probe_bad_crc_gets_a_siw_terminate() {
    let all = decode_file(&siw("host-probe-bad-crc-terminate.pcap"));
    assert_eq!(all.len(), 2);
    let d = &all[0];
    assert_eq!(d.conn.server.port(), 7176);
    assert!(d.request.crc && d.crc);
    // The probe's RTR Write carries a wrong CRC: the deframer refuses it.
    let fail = d.c2s.failure.as_ref().expect("CRC error");
    let Error::Crc { received, computed } = fail.error else { panic!("{:?}", fail.error) };
    assert_eq!(fail.frame, Some(8));
    assert_ne!(received, computed);
    assert_eq!(as_tshark_prints(received), 0x5cfa_8d54);
    assert_eq!(fail.error.terminate_cause(), TerminateCause::Mpa(Mpa::Crc));
    assert!(d.c2s.fpdus.is_empty());
    // siw answers with a Terminate on QN 2, MSN 1, in its own bit layout: 02 02 00 00.
    assert_eq!(d.s2c.fpdus.len(), 1);
    let t = &d.s2c.fpdus[0];
    assert_eq!(t.frame, 9);
    untagged(t, Opcode::Terminate, 2, 1);
    assert_eq!(t.payload, [0x02, 0x02, 0x00, 0x00]);
    let m = TerminateMessage::parse(&t.payload).unwrap();
    assert_eq!(m.layout, TerminateLayout::LinuxSiw);
    assert_eq!(m.preferred().cause, TerminateCause::Mpa(Mpa::Crc));
    assert!(m.preferred().ddp.is_none() && m.preferred().rdmap_header.is_none());
    assert_eq!(d.conn.server_to_client.fin_frame(), Some(10));
    // The second probe (port 7177) got no reply at all.
    assert_eq!(all[1].conn.server.port(), 7177);
    assert!(all[1].reply.is_none());
}

// ---------------------------------------------------------------------------------------------
// Every capture

fn pcaps_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_siw_capture_decodes_and_reencodes() {
    let files = pcaps_in(&testdata().join("siw"));
    assert_eq!(files.len(), 16);
    let mut fpdus = 0;
    for f in &files {
        let all = decode_file(f);
        assert!(!all.is_empty(), "{f:?}");
        // perftest's control connection sends two 2-byte messages whose pad siw fills with stale
        // bytes (RFC 5044 §4.1 wants zeros); nothing else differs from our encoding.
        let dirty: usize = all.iter().map(|d| d.dirty_pad).sum();
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(dirty, if name.starts_with("ib_") { 2 } else { 0 }, "{name}");
        fpdus += all.iter().map(|d| d.fpdus().len()).sum::<usize>();
    }
    assert!(fpdus > 300, "{fpdus}");
}

#[test]
fn perftest_captures_when_present() {
    // Added by the perftest interop runs; generic checks only.
    let files = pcaps_in(&testdata().join("perftest"));
    if files.is_empty() {
        // Said, not silent; and CI, which has the repository's captures, must check them.
        assert!(std::env::var_os("CI").is_none(), "no captures in testdata/captures/perftest");
        // straight to stderr: the harness captures eprintln! of a passing test
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "no captures in testdata/captures/perftest: nothing checked");
    }
    for f in files {
        let all = decode_file(&f);
        assert!(!all.is_empty(), "{f:?}: no MPA connection");
        for d in all {
            assert!(d.c2s.failure.is_none() && d.s2c.failure.is_none(), "{f:?}");
            if d.crc {
                assert_all_crcs_good(&d);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds

/// Writes the fuzz targets' seed corpora into `fuzz/seeds/<target>/` from these captures, plus
/// marker-framed streams the captures lack. Run by hand after adding captures:
/// `cargo test -p iwarp-wire --test captures -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    use std::collections::BTreeSet;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let mut seeds: BTreeMap<&str, BTreeSet<Vec<u8>>> = BTreeMap::new();
    // At most this many stream bytes per deframer seed, cut at an FPDU boundary.
    const STREAM_CAP: usize = 6000;
    for f in pcaps_in(&testdata().join("siw")) {
        for d in decode_file(&f) {
            let c = d.conn.client_to_server.data();
            let s = d.conn.server_to_client.data();
            seeds.entry("mpa_rr").or_default().insert(c[..d.c2s.start].to_vec());
            if let Some(r) = d.reply {
                seeds.entry("mpa_rr").or_default().insert(s[..r.buffer_len()].to_vec());
            }
            for dir in [C2S, S2C] {
                let half = d.half(dir);
                let data = d.conn.stream(dir).data();
                let mut end = half.start;
                for f in &half.fpdus {
                    let next = end
                        + iwarp_wire::mpa::fpdu_len(usize::from(u16::from_be_bytes([
                            f.raw_header[0],
                            f.raw_header[1],
                        ])));
                    if next - half.start > STREAM_CAP && end > half.start {
                        break;
                    }
                    end = next;
                    // The ULPDU, payload cut to 64 bytes (bodies that matter are shorter).
                    let mut ulpdu = f.raw_header[2..].to_vec();
                    ulpdu.extend_from_slice(&f.payload[..f.payload.len().min(64)]);
                    seeds.entry("ddp_rdmap").or_default().insert(ulpdu);
                }
                if end > half.start {
                    let cfg = u8::from(d.crc) | if half.markers { 2 } else { 0 };
                    for (extra, sizes) in [(0u8, [255u8; 4]), (4, [0, 6, 29, 200])] {
                        let mut seed = vec![cfg | extra];
                        seed.extend_from_slice(&sizes);
                        seed.extend_from_slice(&data[half.start..end]);
                        seeds.entry("fpdu_deframe").or_default().insert(seed);
                    }
                }
            }
        }
    }
    // Marker-framed streams (CRC on and off): a Send, a Write across a marker, a Read Request.
    for crc in [false, true] {
        let mut framer = Framer::new(crc, true);
        let mut stream = Vec::new();
        let rr = ReadRequest { sink_stag: Stag(0x100), sink_to: TaggedOffset(0x1000), size: 64, ..Default::default() };
        let msgs: [(SegmentHeader, Vec<u8>); 3] = [
            (SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"hello".to_vec()),
            (SegmentHeader::tagged(Opcode::Write, true, Stag(0x200), TaggedOffset(0)), vec![7; 1200]),
            (SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), rr.to_bytes().to_vec()),
        ];
        for (h, p) in &msgs {
            let (b, n) = h.to_bytes();
            framer.frame_to_vec(&b[..n], &[p], &mut stream).unwrap();
        }
        let mut seed = vec![u8::from(crc) | 2, 255, 255, 255, 255];
        seed.extend_from_slice(&stream);
        seeds.entry("fpdu_deframe").or_default().insert(seed);
    }
    let mut total = 0;
    for (target, set) in &seeds {
        let dir = root.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for s in set {
            std::fs::write(dir.join(format!("{:08x}-{}.bin", crc::crc32c(s), s.len())), s).unwrap();
            total += s.len();
        }
    }
    assert!(total < 2 << 20, "seeds take {total} bytes");
}
