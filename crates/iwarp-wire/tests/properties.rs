//! Properties of the codecs: every representation survives emit → parse; no input makes a
//! parser panic; the deframer finds the same FPDUs however the stream is cut and however the
//! payload is taken.

use iwarp_wire::ddp::{self, Segment};
use iwarp_wire::mpa::rr::{Frame, ENHANCED_PARAMS_LEN, IRD_ORD_MAX, MAX_PRIVATE_DATA};
use iwarp_wire::mpa::{Deframer, DeframerConfig, EnhancedParams, Event, FrameKind, FrameRepr, Framer, Need, RtrTypes};
use iwarp_wire::rdmap::{self, AtomicOpcode, AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::{
    CopiedDdpHeader, TerminateCause, TerminateCode, TerminateLayout, TerminateMessage, TerminateRepr,
};
use iwarp_wire::{crc, Error, Msn, Opcode, SegmentHeader, Stag, TaggedOffset};
use proptest::prelude::*;
use std::ops::Range;

// ---------------------------------------------------------------------------------------------
// Strategies

fn kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![Just(FrameKind::Request), Just(FrameKind::Reply)]
}

fn enhanced_params() -> impl Strategy<Value = EnhancedParams> {
    (any::<bool>(), 0..=IRD_ORD_MAX, 0..=IRD_ORD_MAX, any::<(bool, bool, bool)>()).prop_map(
        |(peer_to_peer, ird, ord, (send, write, read))| EnhancedParams {
            peer_to_peer,
            ird,
            ord,
            rtr: RtrTypes { send, write, read },
        },
    )
}

/// The owned parts of a `FrameRepr`: (kind, markers, crc, reject, revision, enhanced, private data).
type FrameParts = (FrameKind, bool, bool, bool, u8, Option<EnhancedParams>, Vec<u8>);

fn frame_parts() -> impl Strategy<Value = FrameParts> {
    (kind(), any::<(bool, bool, bool)>(), prop_oneof![Just(1u8), Just(2u8)], any::<bool>())
        .prop_flat_map(|(kind, flags, revision, want_enhanced)| {
            let enhanced = revision == 2 && want_enhanced;
            let max_pd = MAX_PRIVATE_DATA - if enhanced { ENHANCED_PARAMS_LEN } else { 0 };
            let params = if enhanced { enhanced_params().prop_map(Some).boxed() } else { Just(None).boxed() };
            (Just(kind), Just(flags), Just(revision), params, prop::collection::vec(any::<u8>(), 0..=max_pd))
        })
        .prop_map(|(kind, (markers, crc, reject), revision, enhanced, pd)| {
            (kind, markers, crc, reject, revision, enhanced, pd)
        })
}

fn repr_of(p: &FrameParts) -> FrameRepr<'_> {
    FrameRepr {
        kind: p.0,
        markers: p.1,
        crc: p.2,
        reject: p.3,
        revision: p.4,
        enhanced: p.5,
        private_data: &p.6,
        reserved_flags: 0,
    }
}

/// Every assigned opcode (0 to 11) with a header of the buffer model and queue it uses.
fn segment_header() -> impl Strategy<Value = SegmentHeader> {
    (0u8..=0xB, any::<bool>(), any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(op, last, stag, to, msn, mo, inval)| {
            let opcode = Opcode::from(op);
            if opcode.tagged() == Some(true) {
                SegmentHeader::tagged(opcode, last, Stag(stag), TaggedOffset(to))
            } else {
                let mut h = SegmentHeader::untagged(opcode, last, Msn(msn), mo);
                if opcode.invalidates() {
                    h.inval_stag = Stag(inval);
                }
                h
            }
        },
    )
}

fn read_request() -> impl Strategy<Value = ReadRequest> {
    any::<(u32, u64, u32, u32, u64)>().prop_map(|(a, b, size, c, d)| ReadRequest {
        sink_stag: Stag(a),
        sink_to: TaggedOffset(b),
        size,
        src_stag: Stag(c),
        src_to: TaggedOffset(d),
    })
}

fn atomic_request() -> impl Strategy<Value = AtomicRequest> {
    (0u8..16, any::<(u32, u32, u64)>(), any::<(u64, u64, u64, u64)>()).prop_map(|(op, (id, stag, to), (a, b, c, d))| {
        AtomicRequest {
            opcode: AtomicOpcode::from(op),
            request_id: id,
            stag: Stag(stag),
            to: TaggedOffset(to),
            add_or_swap: a,
            add_or_swap_mask: b,
            compare: c,
            compare_mask: d,
        }
    })
}

/// Owned parts of a `TerminateRepr`: cause, copied DDP header (segment length, header), RDMA header.
type TerminateParts = (TerminateCause, Option<(Option<u16>, Vec<u8>)>, Option<Vec<u8>>);

fn terminate_parts() -> impl Strategy<Value = TerminateParts> {
    let cause = (0u8..16, 0u8..16, any::<u8>())
        .prop_map(|(layer, etype, ecode)| TerminateCause::from_code(TerminateCode { layer, etype, ecode }));
    // A copied header's own T bit decides its length: 14 bytes tagged, 18 untagged.
    let copied = (any::<bool>(), prop::collection::vec(any::<u8>(), 18), prop::option::of(any::<u16>())).prop_map(
        |(tagged, mut bytes, seg_len)| {
            if tagged {
                bytes.truncate(ddp::TAGGED_HEADER_LEN);
                bytes[0] |= ddp::flags::TAGGED;
            } else {
                bytes[0] &= !ddp::flags::TAGGED;
            }
            (seg_len, bytes)
        },
    );
    (cause, prop::option::of(copied), prop::option::of(prop::collection::vec(any::<u8>(), rdmap::READ_REQUEST_LEN)))
}

fn terminate_of(p: &TerminateParts) -> TerminateRepr<'_> {
    TerminateRepr {
        cause: p.0,
        ddp: p.1.as_ref().map(|(segment_length, header)| CopiedDdpHeader { segment_length: *segment_length, header }),
        rdmap_header: p.2.as_deref(),
    }
}

// ---------------------------------------------------------------------------------------------
// parse(emit(x)) == x

proptest! {
    #[test]
    fn frame_repr_round_trips(parts in frame_parts()) {
        let repr = repr_of(&parts);
        let bytes = repr.to_vec().unwrap();
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        let (parsed, used) = FrameRepr::parse(&bytes, repr.kind).unwrap().unwrap();
        prop_assert_eq!(parsed, repr);
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(FrameRepr::parse_exact(&bytes, repr.kind).unwrap(), repr);
        // Every proper prefix is "incomplete", never an error.
        for n in 0..bytes.len() {
            prop_assert_eq!(FrameRepr::parse(&bytes[..n], repr.kind), Ok(None));
        }
        // The other key is refused.
        let other = if repr.kind == FrameKind::Request { FrameKind::Reply } else { FrameKind::Request };
        prop_assert_eq!(FrameRepr::parse(&bytes, other), Err(Error::BadKey { expected: other }));
    }

    #[test]
    fn segment_header_round_trips(h in segment_header()) {
        let (bytes, len) = h.to_bytes();
        prop_assert_eq!(len, h.header_len());
        prop_assert_eq!(SegmentHeader::parse(&bytes[..len]).unwrap(), h);
        // Bytes after the header are ignored.
        prop_assert_eq!(SegmentHeader::parse(&bytes).unwrap(), h);
        prop_assert!(SegmentHeader::parse(&bytes[..len - 1]).is_err());
    }

    #[test]
    fn read_request_round_trips(r in read_request()) {
        prop_assert_eq!(ReadRequest::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn atomic_request_round_trips(r in atomic_request()) {
        prop_assert_eq!(AtomicRequest::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn atomic_response_round_trips(request_id in any::<u32>(), original in any::<u64>()) {
        let r = AtomicResponse { request_id, original };
        prop_assert_eq!(AtomicResponse::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn terminate_round_trips(parts in terminate_parts()) {
        let t = terminate_of(&parts);
        let mut body = vec![0u8; t.buffer_len()];
        t.emit(&mut body).unwrap();
        let m = TerminateMessage::parse(&body).unwrap();
        prop_assert_eq!(m.rfc, t);
        if t.cause.is_known() {
            // What we emit is always self-consistent in RFC order.
            prop_assert!(matches!(m.layout, TerminateLayout::Rfc5040 | TerminateLayout::Ambiguous));
            prop_assert_eq!(*m.preferred(), t);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing arbitrary bytes never panics

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for kind in [FrameKind::Request, FrameKind::Reply] {
            let _ = FrameRepr::parse(&bytes, kind);
            let _ = FrameRepr::parse_exact(&bytes, kind);
        }
        if let Ok(f) = Frame::new_checked(&bytes[..]) {
            let _ = (f.key(), f.kind(), f.flags(), f.revision(), f.pd_length(), f.private_data());
        }
        let _ = SegmentHeader::parse(&bytes);
        if let Ok(s) = Segment::new_checked(&bytes[..]) {
            let _ = (s.control(), s.rsvd_ulp(), s.placement(), s.payload(), s.version(), s.last());
            if !s.tagged() {
                let _ = s.rsvd_ulp_ext();
            }
        }
        if let Ok(m) = TerminateMessage::parse(&bytes) {
            let _ = m.preferred().cause.to_string();
        }
        let _ = ReadRequest::parse(&bytes);
        let _ = AtomicRequest::parse(&bytes);
        let _ = AtomicResponse::parse(&bytes);
        let _ = rdmap::parse_immediate(&bytes);
    }

    #[test]
    fn short_prefixes_of_valid_headers_do_not_panic(h in segment_header(), cut in 0usize..18) {
        let (bytes, len) = h.to_bytes();
        let _ = SegmentHeader::parse(&bytes[..cut.min(len)]);
    }

    #[test]
    fn terminate_bodies_of_every_length_do_not_panic(
        head in any::<[u8; 4]>(),
        rest in prop::collection::vec(any::<u8>(), 0..60),
    ) {
        let mut body = head.to_vec();
        body.extend_from_slice(&rest);
        for n in 0..=body.len() {
            if let Ok(m) = TerminateMessage::parse(&body[..n]) {
                let _ = (m.layout, m.rfc, m.siw);
            }
        }
    }

    #[test]
    fn deframer_never_panics_on_arbitrary_streams(
        stream in prop::collection::vec(any::<u8>(), 0..4000),
        crc in any::<bool>(),
        markers in any::<bool>(),
        max_ulpdu in any::<u16>(),
        chunks in prop::collection::vec(1usize..700, 1..20),
        placed in prop::collection::vec(any::<bool>(), 1..20),
    ) {
        let mut d = Deframer::new(DeframerConfig { crc, markers, max_ulpdu });
        drive_arbitrary(&mut d, &stream, &chunks, &placed);
    }

    #[test]
    fn deframer_never_panics_on_mutated_valid_streams(
        fpdus in fpdu_list(6, 600),
        cfg in any::<(bool, bool)>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        chunks in prop::collection::vec(1usize..300, 1..20),
        placed in prop::collection::vec(any::<bool>(), 1..20),
    ) {
        let (mut stream, _, _) = frame_all(&fpdus, cfg.0, cfg.1);
        for (at, x) in flips {
            let i = at.index(stream.len());
            stream[i] ^= x;
        }
        let mut d = Deframer::new(DeframerConfig { crc: cfg.0, markers: cfg.1, max_ulpdu: u16::MAX });
        drive_arbitrary(&mut d, &stream, &chunks, &placed);
    }
}

/// Feeds `stream` in `chunks`-sized pieces, taking payload with `payload_placed` where `placed`
/// says so, and checks the deframer's bookkeeping until it errs or the stream ends.
fn drive_arbitrary(d: &mut Deframer, stream: &[u8], chunks: &[usize], placed: &[bool]) {
    let mut at = 0;
    let mut step = 0;
    let mut payload_left: Option<usize> = None;
    while at < stream.len() {
        let end = (at + chunks[step % chunks.len()]).min(stream.len());
        let use_placed = placed[step % placed.len()];
        step += 1;
        while at < end {
            let need = d.need();
            assert!(!need.is_empty());
            if use_placed {
                if let Need::Payload(n) = need {
                    let k = d.payload_placed(&stream[at..end]);
                    assert_eq!(k, n.min(end - at));
                    if let Some(left) = payload_left.as_mut() {
                        *left -= k;
                    }
                    at += k;
                    assert_eq!(d.stream_offset(), at as u64);
                    continue;
                }
            }
            match d.feed(&stream[at..end]) {
                Ok((n, ev)) => {
                    // A header may be taken whole although `need` announced only its first bytes.
                    let most = match need {
                        Need::Header(k) => k.max(iwarp_wire::mpa::MAX_HEADER_LEN),
                        other => other.len(),
                    };
                    assert!(n > 0 && n <= most.min(end - at));
                    match ev {
                        Event::Header(h) => {
                            assert!(usize::from(h.ulpdu_len()) >= h.ddp_header().len());
                            payload_left = Some(h.payload_len());
                        }
                        Event::Payload(p) => {
                            assert_eq!(p, &stream[at..at + n]);
                            if let Some(left) = payload_left.as_mut() {
                                *left -= p.len();
                            }
                        }
                        Event::End(_) => {
                            assert_eq!(payload_left.take(), Some(0));
                            assert!(d.is_idle());
                        }
                        Event::None => {}
                    }
                    at += n;
                    assert_eq!(d.stream_offset(), at as u64);
                }
                Err(e) => {
                    // Sticky: the same error from now on, and no payload is taken.
                    assert_eq!(d.feed(&[0, 1, 2]), Err(e));
                    assert_eq!(d.payload_placed(&[0; 8]), 0);
                    assert_eq!(d.error(), Some(e));
                    let _ = e.terminate_cause();
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The split-stream property

/// One FPDU to frame: its header and payload.
type Fpdu = (SegmentHeader, Vec<u8>);

fn fpdu_list(max_count: usize, max_payload: usize) -> impl Strategy<Value = Vec<Fpdu>> {
    prop::collection::vec(
        (segment_header(), 0..=max_payload, any::<u8>()).prop_map(|(h, len, seed)| {
            let payload: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i * 31 % 251) as u8)).collect();
            (h, payload)
        }),
        1..=max_count,
    )
}

/// Frames `fpdus` into one stream; returns it with each FPDU's (length field ‖ DDP header).
/// Frames `fpdus` into one stream; returns it, each FPDU's length field and DDP header, and
/// where each FPDU lies in the stream (a marker in front of it included).
fn frame_all(fpdus: &[Fpdu], crc: bool, markers: bool) -> (Vec<u8>, Vec<Vec<u8>>, Vec<Range<usize>>) {
    let mut f = Framer::new(crc, markers);
    let mut stream = Vec::new();
    let mut headers = Vec::new();
    let mut spans = Vec::new();
    for (h, payload) in fpdus {
        let (hdr, len) = h.to_bytes();
        let ulpdu_len = (len + payload.len()) as u16;
        let mut raw = ulpdu_len.to_be_bytes().to_vec();
        raw.extend_from_slice(&hdr[..len]);
        headers.push(raw);
        let before = f.stream_offset();
        let predicted = f.next_fpdu_len(len + payload.len());
        let n = f.frame_to_vec(&hdr[..len], &[payload], &mut stream).unwrap();
        assert_eq!(n, predicted);
        assert_eq!(f.stream_offset(), before + n as u64);
        spans.push(stream.len() - n..stream.len());
    }
    (stream, headers, spans)
}

/// What the deframer yields per FPDU: raw header, parsed header, payload, CRC field.
type Found = (Vec<u8>, SegmentHeader, Vec<u8>, u32);

/// How payload is taken from the deframer.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Everything through `feed`.
    Feed,
    /// Payload read "into its destination" and reported with `payload_placed`.
    Placed,
    /// Alternating per payload run.
    Mixed,
    /// Whole FPDUs through `feed_whole` where it takes them, the rest through `feed`.
    Whole,
}

/// Why a stream did not deframe.
#[derive(Debug, PartialEq)]
enum Fail {
    /// The deframer (or the header parser) refused it.
    Error(Error),
    /// The stream ends inside an FPDU.
    Incomplete,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Error(e)
    }
}

fn deframe(cfg: DeframerConfig, stream: &[u8], cuts: &[usize], mode: Mode) -> Result<Vec<Found>, Fail> {
    let mut d = Deframer::new(cfg);
    let mut out = Vec::new();
    let mut cur: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut at = 0;
    let mut toggle = false;
    for end in bounds {
        while at < end {
            toggle = !toggle;
            let place = match mode {
                Mode::Feed => false,
                Mode::Placed => true,
                Mode::Mixed => toggle,
                Mode::Whole => {
                    if let Some((n, h, p, e)) = d.feed_whole(&stream[at..end]) {
                        out.push((h.as_bytes().to_vec(), SegmentHeader::parse(h.ddp_header())?, p.to_vec(), e.crc));
                        at += n;
                        continue;
                    }
                    false
                }
            };
            if let (true, Need::Payload(n)) = (place, d.need()) {
                // Simulates a read straight into the destination buffer.
                let k = n.min(end - at);
                assert!(k > 0, "no progress");
                let dest = &mut cur.as_mut().unwrap().1;
                let start = dest.len();
                dest.extend_from_slice(&stream[at..at + k]);
                assert_eq!(d.payload_placed(&dest[start..]), k);
                at += k;
                continue;
            }
            let (n, ev) = d.feed(&stream[at..end])?;
            assert!(n > 0, "no progress");
            match ev {
                Event::Header(h) => cur = Some((h.as_bytes().to_vec(), Vec::new())),
                Event::Payload(p) => cur.as_mut().unwrap().1.extend_from_slice(p),
                Event::End(e) => {
                    let (raw, payload) = cur.take().unwrap();
                    let h = SegmentHeader::parse(&raw[2..])?;
                    out.push((raw, h, payload, e.crc));
                }
                Event::None => {}
            }
            at += n;
        }
    }
    assert_eq!(d.stream_offset(), stream.len() as u64);
    if !d.is_idle() {
        return Err(Fail::Incomplete);
    }
    Ok(out)
}

fn check_found(found: &[Found], fpdus: &[Fpdu], headers: &[Vec<u8>], stream: &[u8], spans: &[Range<usize>], crc: bool) {
    assert_eq!(found.len(), fpdus.len());
    for (((f, (h, payload)), raw), span) in found.iter().zip(fpdus).zip(headers).zip(spans) {
        assert_eq!(&f.0, raw);
        assert_eq!(&f.1, h);
        assert_eq!(&f.2, payload);
        if crc {
            // The CRC field holds the CRC32c of what precedes it (length, ULPDU, pad, markers),
            // and the deframer reports the field as it is in the stream.
            let (covered, field) = stream[span.clone()].split_at(span.len() - 4);
            assert_eq!(crc::crc32c(covered), f.3);
            assert_eq!(field, crc::to_wire(f.3));
        } else {
            assert_eq!(f.3, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn deframer_output_does_not_depend_on_how_the_stream_is_cut(
        fpdus in fpdu_list(12, 3000),
        crc in any::<bool>(),
        markers in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (stream, headers, spans) = frame_all(&fpdus, crc, markers);
        let cfg = DeframerConfig { crc, markers, max_ulpdu: u16::MAX };
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        let whole = deframe(cfg, &stream, &[], Mode::Feed).unwrap();
        check_found(&whole, &fpdus, &headers, &stream, &spans, crc);
        for mode in [Mode::Feed, Mode::Placed, Mode::Mixed] {
            let cut = deframe(cfg, &stream, &cuts, mode).unwrap();
            prop_assert_eq!(&cut, &whole);
        }
        // Byte by byte.
        let every: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(&deframe(cfg, &stream, &every, Mode::Placed).unwrap(), &whole);
    }

    #[test]
    fn every_single_split_point_of_a_small_stream_gives_the_same_fpdus(
        fpdus in fpdu_list(4, 120),
        crc in any::<bool>(),
        markers in any::<bool>(),
    ) {
        let (stream, headers, spans) = frame_all(&fpdus, crc, markers);
        let cfg = DeframerConfig { crc, markers, max_ulpdu: u16::MAX };
        let whole = deframe(cfg, &stream, &[], Mode::Feed).unwrap();
        check_found(&whole, &fpdus, &headers, &stream, &spans, crc);
        for k in 0..=stream.len() {
            for mode in [Mode::Feed, Mode::Placed, Mode::Mixed, Mode::Whole] {
                prop_assert_eq!(&deframe(cfg, &stream, &[k], mode).unwrap(), &whole, "split at {} {:?}", k, mode);
            }
        }
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_crc(
        fpdus in fpdu_list(4, 400),
        markers in any::<bool>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (mut stream, _, _) = frame_all(&fpdus, true, markers);
        let i = at.index(stream.len());
        stream[i] ^= 1 << bit;
        let cfg = DeframerConfig { crc: true, markers, max_ulpdu: u16::MAX };
        for mode in [Mode::Feed, Mode::Whole] {
            match deframe(cfg, &stream, &[], mode) {
                // A flipped length or header bit may also be caught earlier, as another error,
                // or make the stream end inside an FPDU.
                Err(_) => {}
                Ok(found) => prop_assert!(false, "corruption at {} not detected: {} FPDUs", i, found.len()),
            }
        }
    }
}

#[test]
fn crc_of_a_framed_fpdu_covers_everything_before_it() {
    // Ties the property tests' "CRC on" case to the residue: the CRC over an FPDU, its CRC field
    // included, is the CRC32c residue.
    let h = SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0);
    let (hdr, len) = h.to_bytes();
    let mut out = Vec::new();
    Framer::new(true, false).frame_to_vec(&hdr[..len], &[b"hello"], &mut out).unwrap();
    assert_eq!(crc::crc32c(&out), crc::RESIDUE);
}
