//! What a queue pair does with each kind of bad input from its peer, pinned to the exact
//! Terminate (layer, error type, code and copied headers) it sends and the completions it
//! reports, plus the exact values a valid input delivers. The peer is played by hand: FPDUs
//! are framed here and fed to one queue pair through its receive path.

mod common;

use iwarp_proto::mem::{Access, MrRef, PdId, RawMem, StagTable};
use iwarp_proto::qp::{Completion, LinkParams, Qp, QpConfig, QpEvent, QpState, RecvWqe, Sge, Startup};
use iwarp_wire::mpa::{DeframerConfig, Framer};
use iwarp_wire::terminate::{TerminateCause, TerminateLayout, TerminateMessage};
use iwarp_wire::{Msn, Opcode, Placement, QueueNumber, SegmentHeader};
use std::sync::Arc;

fn link(startup: Startup) -> LinkParams {
    LinkParams {
        crc: true,
        send_markers: false,
        recv_markers: false,
        ird: 8,
        ord: 8,
        mulpdu: iwarp_wire::mpa::mulpdu(1460, false),
        large_fpdus: false,
        rfc7306: true,
        startup,
    }
}

/// One queue pair (the responder) and the memory table it checks against.
struct Side {
    qp: Qp,
    stags: Arc<StagTable>,
    pd: PdId,
    framer: Framer,
}

impl Side {
    fn with(link: LinkParams) -> Side {
        let stags = Arc::new(StagTable::new(42));
        let pd = stags.new_pd();
        let cfg =
            QpConfig { qp_num: 2, pd, sq_depth: 64, rq_depth: 64, max_send_sge: 4, max_recv_sge: 4, max_inline: 64 };
        let mut qp = Qp::new(cfg, Arc::clone(&stags), None);
        qp.establish(link).unwrap();
        Side { qp, stags, pd, framer: Framer::new(link.crc, link.recv_markers) }
    }

    fn new() -> Side {
        Side::with(link(Startup::Responder { rtr: None, send_first: false }))
    }

    fn mr(&self, len: usize, access: Access) -> MrRef {
        self.stags.register(RawMem::alloc(len, false).unwrap(), self.pd, access, 0x10_0000).unwrap()
    }

    fn post_recv(&mut self, wr_id: u64, mr: &MrRef, len: usize) {
        let wqe = RecvWqe { wr_id, sges: vec![Sge { mr: Arc::clone(mr), offset: 0, len }].into() };
        self.qp.post_recv([wqe]).unwrap();
    }

    /// Frames `h ‖ body ‖ payload` as the peer would and feeds it to the queue pair.
    fn feed(&mut self, h: SegmentHeader, body: &[u8], payload: &[u8]) {
        let (b, n) = h.to_bytes();
        let mut ulpdu = b[..n].to_vec();
        ulpdu.extend_from_slice(body);
        let mut out = Vec::new();
        self.framer.frame_to_vec(&ulpdu, &[payload], &mut out).unwrap();
        assert_eq!(self.qp.receive_copy(&out), out.len());
    }

    fn completions(&mut self) -> Vec<Completion> {
        std::iter::from_fn(|| self.qp.poll_completion()).collect()
    }

    fn events(&mut self) -> Vec<QpEvent> {
        std::iter::from_fn(|| self.qp.poll_event()).collect()
    }

    /// Every (header, ULPDU payload) the queue pair has sent.
    fn sent(&mut self) -> Vec<(SegmentHeader, Vec<u8>)> {
        let mut wire = Vec::new();
        self.qp.transmit_copy(&mut wire, usize::MAX);
        common::deframe(DeframerConfig::default(), &wire)
    }

    /// The Terminate the queue pair sent (the last FPDU), its body, and checks that it reported
    /// the same cause as a local error and went to the error state.
    fn terminate(&mut self) -> (TerminateCause, Vec<u8>) {
        let sent = self.sent();
        let (h, body) = sent.last().expect("a Terminate").clone();
        assert_eq!(h.opcode, Opcode::Terminate);
        assert_eq!(h.placement, Placement::Untagged { qn: QueueNumber::TERMINATE, msn: Msn(1), mo: 0 });
        let m = TerminateMessage::parse(&body).unwrap();
        // Written in RFC 5040 bit order (some bodies also read as valid the Linux siw way).
        assert!(matches!(m.layout, TerminateLayout::Rfc5040 | TerminateLayout::Ambiguous), "{m:?}");
        assert_eq!(self.qp.state(), QpState::Error);
        assert!(self.events().contains(&QpEvent::LocalError(m.rfc.cause)));
        (m.rfc.cause, body)
    }
}

fn send(msn: u32, mo: u32, last: bool) -> SegmentHeader {
    SegmentHeader::untagged(Opcode::Send, last, Msn(msn), mo)
}

#[test]
fn harness_delivers_a_send() {
    let mut s = Side::new();
    let dst = s.mr(16, Access::LOCAL_WRITE);
    s.post_recv(5, &dst, 16);
    s.feed(send(1, 0, true), &[], b"hello");
    let c = s.completions();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].wr_id, c[0].byte_len), (5, 5));
    assert!(s.sent().is_empty());
}

fn framed(framer: &mut Framer, h: SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let (b, n) = h.to_bytes();
    let mut out = Vec::new();
    framer.frame_to_vec(&b[..n], &[payload], &mut out).unwrap();
    out
}

fn contents(mr: &MrRef, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    assert!(mr.mem().read(off, &mut v));
    v
}

/// The ranges and length of a direct plan.
fn direct(plan: iwarp_proto::qp::RecvPlan) -> (Vec<(usize, usize)>, usize) {
    match plan {
        iwarp_proto::qp::RecvPlan::Direct { ranges, len } => {
            (ranges.iter().map(|r| (r.addr(), r.len())).collect(), len)
        }
        other => panic!("not a direct plan: {other:?}"),
    }
}

#[test]
fn a_send_segment_is_read_straight_into_the_rest_of_its_sges() {
    use iwarp_proto::qp::RecvPlan;
    let mut s = Side::new();
    let m1 = s.mr(4000, Access::LOCAL_WRITE);
    let m2 = s.mr(8000, Access::LOCAL_WRITE);
    let wqe = RecvWqe {
        wr_id: 9,
        sges: vec![
            Sge { mr: Arc::clone(&m1), offset: 100, len: 3000 },
            Sge { mr: Arc::clone(&m2), offset: 0, len: 8000 },
        ]
        .into(),
    };
    s.qp.post_recv([wqe]).unwrap();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 1) as u8).collect();
    let f1 = framed(&mut s.framer, send(1, 0, false), &payload[..1000]);
    let f2 = framed(&mut s.framer, send(1, 1000, true), &payload[1000..]);

    // The first segment arrives whole in a scratch read and is copied.
    assert_eq!(s.qp.poll_recv_plan(), RecvPlan::Scratch { max: iwarp_proto::qp::LOOKAHEAD });
    s.qp.handle_recv(&f1);
    // The second one's header: its 9000 payload bytes go into the first SGE from byte 1000 on
    // (2000 bytes left there), then 7000 bytes into the second SGE.
    s.qp.handle_recv(&f2[..20]);
    let a1 = m1.mem().ptr_at(1100) as usize;
    let a2 = m2.mem().ptr_at(0) as usize;
    assert_eq!(direct(s.qp.poll_recv_plan()), (vec![(a1, 2000), (a2, 7000)], 9000));
    // Read 2500 bytes: the first SGE fills, 500 bytes go into the second.
    assert!(m1.mem().write(1100, &payload[1000..3000]));
    assert!(m2.mem().write(0, &payload[3000..3500]));
    s.qp.handle_placed(2500);
    let a3 = m2.mem().ptr_at(500) as usize;
    assert_eq!(direct(s.qp.poll_recv_plan()), (vec![(a3, 6500)], 6500));
    assert!(m2.mem().write(500, &payload[3500..]));
    s.qp.handle_placed(6500);
    // Pad and CRC: the CRC covers the placed bytes.
    s.qp.handle_recv(&f2[20 + 9000..]);
    let c = s.completions();
    assert_eq!(c.len(), 1, "{:?}", s.events());
    assert_eq!((c[0].wr_id, c[0].byte_len, c[0].status), (9, 10_000, iwarp_proto::qp::WcStatus::Success));
    assert_eq!(contents(&m1, 100, 3000), &payload[..3000]);
    assert_eq!(contents(&m2, 0, 7000), &payload[3000..]);
    let st = s.qp.stats();
    assert_eq!((st.rx_direct_bytes, st.rx_copied_bytes), (9000, 1000));
    assert!(s.sent().is_empty());
}

#[test]
fn a_queue_pair_that_is_not_running_reads_nothing() {
    use iwarp_proto::qp::RecvPlan;
    let stags = Arc::new(StagTable::new(1));
    let pd = stags.new_pd();
    let cfg = QpConfig { qp_num: 1, pd, sq_depth: 4, rq_depth: 4, max_send_sge: 1, max_recv_sge: 1, max_inline: 0 };
    let mut qp = Qp::new(cfg, stags, None);
    assert_eq!(qp.state(), QpState::Idle);
    assert_eq!(qp.poll_recv_plan(), RecvPlan::Stop);
}

#[test]
fn a_terminated_message_lets_go_of_its_region() {
    let mut s = Side::new();
    let m = s.mr(4096, Access::REMOTE_WRITE);
    let base = Arc::strong_count(&m);
    // The first segment of a Write is placed; the engine holds the region for the rest.
    s.feed(SegmentHeader::tagged(Opcode::Write, false, m.stag(), iwarp_wire::TaggedOffset(m.base())), &[], &[1; 100]);
    assert!(Arc::strong_count(&m) > base);
    // The next segment does not continue where the first ended: Terminate, and the region is
    // no longer referenced by the queue pair.
    s.feed(SegmentHeader::tagged(Opcode::Write, true, m.stag(), iwarp_wire::TaggedOffset(m.base() + 7)), &[], &[2; 10]);
    let (cause, _) = s.terminate();
    assert_eq!(cause, TerminateCause::TaggedBuffer(iwarp_wire::terminate::TaggedBuffer::BaseOrBounds));
    assert_eq!(Arc::strong_count(&m), base);
}

const UNSPECIFIED: TerminateCause =
    TerminateCause::RemoteOperation(iwarp_wire::terminate::RemoteOperation::Unspecified);

/// Feeds one untagged segment with `body` to a fresh responder (a receive posted) and returns
/// the Terminate cause it sends.
fn untagged_cause(op: Opcode, last: bool, msn: u32, mo: u32, body: &[u8]) -> TerminateCause {
    let mut s = Side::new();
    let dst = s.mr(64, Access::LOCAL_WRITE);
    s.post_recv(1, &dst, 64);
    s.feed(SegmentHeader::untagged(op, last, Msn(msn), mo), body, &[]);
    s.terminate().0
}

#[test]
fn fixed_size_untagged_messages_must_be_one_whole_segment() {
    let rr = iwarp_wire::rdmap::ReadRequest { size: 0, ..Default::default() }.to_bytes();
    let atomic_resp = iwarp_wire::rdmap::AtomicResponse { request_id: 1, original: 2 }.to_bytes();
    let cases: [(Opcode, &[u8]); 5] = [
        (Opcode::ImmediateData, &[0u8; 8]),
        (Opcode::ImmediateDataSe, &[0u8; 8]),
        (Opcode::ReadRequest, &rr),
        (Opcode::AtomicResponse, &atomic_resp),
        (Opcode::Terminate, &[0x00, 0x00, 0x00, 0x00]),
    ];
    for (op, body) in cases {
        // Not the last segment of its message.
        assert_eq!(untagged_cause(op, false, 1, 0, body), UNSPECIFIED, "{op:?} L=0");
        // Not at message offset 0.
        assert_eq!(untagged_cause(op, true, 1, 4, body), UNSPECIFIED, "{op:?} MO=4");
    }
}

#[test]
fn immediate_data_out_of_sequence_is_an_msn_error() {
    let cause = untagged_cause(Opcode::ImmediateData, true, 2, 0, &[0u8; 8]);
    assert_eq!(cause, TerminateCause::UntaggedBuffer(iwarp_wire::terminate::UntaggedBuffer::MsnRange));
}

#[test]
fn a_read_response_segment_inside_a_write_is_an_invalid_stag() {
    let mut s = Side::new();
    let m = s.mr(4096, Access::REMOTE_WRITE | Access::LOCAL_WRITE);
    let to = m.base();
    s.feed(SegmentHeader::tagged(Opcode::Write, false, m.stag(), iwarp_wire::TaggedOffset(to)), &[], &[1; 100]);
    // Same STag, continuing TO, but another opcode.
    s.feed(
        SegmentHeader::tagged(Opcode::ReadResponse, true, m.stag(), iwarp_wire::TaggedOffset(to + 100)),
        &[],
        &[2; 8],
    );
    let (cause, _) = s.terminate();
    assert_eq!(cause, TerminateCause::TaggedBuffer(iwarp_wire::terminate::TaggedBuffer::InvalidStag));
    assert_eq!(contents(&m, 100, 8), [0; 8], "nothing placed");
}

#[test]
fn a_read_response_longer_than_the_request_places_nothing() {
    use iwarp_proto::qp::{Payload, RemoteAddr, SendOp, SendWqe};
    let mut s = Side::with(link(Startup::Initiator { rtr: None }));
    let sink = s.mr(64, Access::LOCAL_WRITE);
    let wr = SendWqe {
        wr_id: 3,
        op: SendOp::Read(RemoteAddr::unbounded(iwarp_wire::Stag(0x1234_5600), 0x9000)),
        payload: Payload::Sges(vec![Sge { mr: Arc::clone(&sink), offset: 0, len: 8 }].into()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    s.qp.post_send([wr]).unwrap();
    let sent = s.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.opcode, Opcode::ReadRequest);
    // 16 bytes answer an 8-byte Read; the sink region has room for them.
    s.feed(
        SegmentHeader::tagged(Opcode::ReadResponse, true, sink.stag(), iwarp_wire::TaggedOffset(sink.base())),
        &[],
        &[0xEE; 16],
    );
    let (cause, _) = s.terminate();
    assert_eq!(cause, TerminateCause::TaggedBuffer(iwarp_wire::terminate::TaggedBuffer::BaseOrBounds));
    assert_eq!(contents(&sink, 0, 16), [0; 16], "nothing placed");
}

#[test]
fn a_read_rtr_must_be_at_message_offset_zero() {
    let rtr = Some(iwarp_wire::mpa::RtrTypes { send: false, write: false, read: true });
    let mut s = Side::with(link(Startup::Responder { rtr, send_first: false }));
    let rr = iwarp_wire::rdmap::ReadRequest { size: 0, ..Default::default() }.to_bytes();
    s.feed(SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 4), &rr, &[]);
    assert_eq!(s.terminate().0, UNSPECIFIED);
}

#[test]
fn a_wrong_rtr_gets_a_bare_mpa_terminate() {
    let rtr = Some(iwarp_wire::mpa::RtrTypes { send: false, write: true, read: false });
    let mut s = Side::with(link(Startup::Responder { rtr, send_first: false }));
    let dst = s.mr(64, Access::LOCAL_WRITE);
    s.post_recv(1, &dst, 64);
    s.feed(send(1, 0, true), &[], &[]);
    let (cause, body) = s.terminate();
    assert_eq!(cause, TerminateCause::Mpa(iwarp_wire::terminate::Mpa::NoMatchingRtr));
    // RFC 5040 Figure 10: an LLP error carries no copied header.
    assert_eq!(body, [0x20, 0x07, 0x00, 0x00]);
}

#[test]
fn bytes_after_a_terminate_are_left_unread_and_uncounted() {
    let mut s = Side::new();
    // A Send with no receive posted, then more bytes.
    let mut data = framed(&mut s.framer, send(1, 0, true), b"no buffer for this");
    data.extend_from_slice(&[0u8; 4096]);
    let used = s.qp.receive_copy(&data);
    assert!(used < data.len(), "{used}");
    let (cause, _) = s.terminate();
    assert_eq!(cause, TerminateCause::UntaggedBuffer(iwarp_wire::terminate::UntaggedBuffer::NoBuffer));
    assert_eq!(s.qp.stats().rx_copied_bytes, 0);
}

#[test]
fn a_queue_pair_that_was_never_established_ignores_input() {
    let stags = Arc::new(StagTable::new(1));
    let pd = stags.new_pd();
    let cfg = QpConfig { qp_num: 1, pd, sq_depth: 4, rq_depth: 4, max_send_sge: 1, max_recv_sge: 1, max_inline: 0 };
    let mut qp = Qp::new(cfg, stags, None);
    let mut framer = Framer::new(true, false);
    let bad = framed(&mut framer, send(7, 0, true), b"x");
    qp.handle_recv(&bad);
    assert_eq!(qp.poll_event(), None);
    assert_eq!(qp.state(), QpState::Idle);
    let mut out = Vec::new();
    qp.transmit_copy(&mut out, usize::MAX);
    assert!(out.is_empty());
}

fn sge(mr: &MrRef, offset: usize, len: usize) -> Sge {
    Sge { mr: Arc::clone(mr), offset, len }
}

#[test]
fn copied_segments_scatter_across_sges_from_where_the_last_one_ended() {
    let mut s = Side::new();
    let m = s.mr(64, Access::LOCAL_WRITE);
    assert!(m.mem().write(0, &[0x55; 64]));
    // 10 bytes at 0, an empty element, 10 bytes at 20.
    let wqe = RecvWqe { wr_id: 4, sges: vec![sge(&m, 0, 10), sge(&m, 50, 0), sge(&m, 20, 10)].into() };
    s.qp.post_recv([wqe]).unwrap();
    let p: Vec<u8> = (1..=16).collect();
    s.feed(send(1, 0, false), &[], &p[..4]);
    s.feed(send(1, 4, true), &[], &p[4..]);
    let c = s.completions();
    assert_eq!((c[0].wr_id, c[0].byte_len), (4, 16));
    let mut want = vec![0x55u8; 64];
    want[..10].copy_from_slice(&p[..10]);
    want[20..26].copy_from_slice(&p[10..]);
    assert_eq!(contents(&m, 0, 64), want);
}

#[test]
fn a_direct_plan_skips_empty_sges() {
    let mut s = Side::new();
    let m1 = s.mr(600, Access::LOCAL_WRITE);
    let m2 = s.mr(600, Access::LOCAL_WRITE);
    let wqe = RecvWqe { wr_id: 4, sges: vec![sge(&m1, 0, 600), sge(&m1, 0, 0), sge(&m2, 0, 600)].into() };
    s.qp.post_recv([wqe]).unwrap();
    let f = framed(&mut s.framer, send(1, 0, true), &[9u8; 1000]);
    s.qp.handle_recv(&f[..20]);
    let (a1, a2) = (m1.mem().ptr_at(0) as usize, m2.mem().ptr_at(0) as usize);
    assert_eq!(direct(s.qp.poll_recv_plan()), (vec![(a1, 600), (a2, 400)], 1000));
}

#[test]
fn send_with_invalidate_of_a_foreign_or_unknown_stag_names_the_right_layer() {
    use iwarp_wire::terminate::{RemoteOperation, RemoteProtection};
    for foreign in [true, false] {
        let mut s = Side::new();
        let dst = s.mr(64, Access::LOCAL_WRITE);
        s.post_recv(6, &dst, 64);
        let target = if foreign {
            let other = s.stags.new_pd();
            s.stags.register(RawMem::alloc(64, false).unwrap(), other, Access::REMOTE_WRITE, 0).unwrap().stag()
        } else {
            iwarp_wire::Stag(0x00AB_CD00)
        };
        let mut h = SegmentHeader::untagged(Opcode::SendInvalidate, true, Msn(1), 0);
        h.inval_stag = target;
        s.feed(h, &[], b"hi");
        let c = s.completions();
        assert_eq!((c[0].wr_id, c[0].status), (6, iwarp_proto::qp::WcStatus::RemoteInvalidRequest));
        let want = if foreign {
            TerminateCause::RemoteProtection(RemoteProtection::CannotInvalidate)
        } else {
            TerminateCause::RemoteOperation(RemoteOperation::CannotInvalidate)
        };
        assert_eq!(c[0].cause, Some(want));
        assert_eq!(s.terminate().0, want);
    }
}

// ---------------------------------------------------------------------------------------------
// The opcode table (iwarp_wire::rdmap::OPCODES) against the receive path: every row's claims
// hold for the engine, and a segment that disagrees with its opcode's row is refused on its
// DDP header with the RFC's Terminate and the same cause as a local error.

use iwarp_wire::rdmap::{self, Body, Consumes, Direction, OpDesc};
use iwarp_wire::terminate::{RemoteOperation, TaggedBuffer, UntaggedBuffer};
use iwarp_wire::{Stag, TaggedOffset};

/// A responder (RFC 7306 on or off) with one 64-byte receive posted.
fn responder(rfc7306: bool) -> Side {
    let mut s = Side::with(LinkParams { rfc7306, ..link(Startup::Responder { rtr: None, send_first: false }) });
    let dst = s.mr(64, Access::LOCAL_WRITE);
    s.post_recv(1, &dst, 64);
    s
}

/// A last segment of `d`'s opcode on the buffer model and queue its row names.
fn header_of(d: &OpDesc) -> SegmentHeader {
    if d.model.is_tagged() {
        SegmentHeader::tagged(d.opcode, true, Stag(0x100), TaggedOffset(0))
    } else {
        SegmentHeader::untagged(d.opcode, true, Msn(1), 0)
    }
}

/// An RDMAP header of the length `d`'s row fixes (zeros), or none.
fn body_of(d: &OpDesc) -> Vec<u8> {
    vec![0; d.body.fixed_len().unwrap_or(0)]
}

/// Some ULP payload where `d`'s row carries it, or none.
fn payload_of(d: &OpDesc) -> &'static [u8] {
    if d.body == Body::Payload {
        b"payload"
    } else {
        &[]
    }
}

/// Frames `h ‖ body` and feeds only the length field and the DDP header: a check made on the
/// header terminates here, before any of the body arrives.
fn feed_header_only(s: &mut Side, h: SegmentHeader, body: &[u8]) {
    let (b, n) = h.to_bytes();
    let mut ulpdu = b[..n].to_vec();
    ulpdu.extend_from_slice(body);
    let mut out = Vec::new();
    s.framer.frame_to_vec(&ulpdu, iwarp_wire::mpa::NO_PAYLOAD, &mut out).unwrap();
    s.qp.receive_copy(&out[..2 + n]);
}

/// The Terminate for a segment refused on its header: the cause, checked to carry the DDP
/// header as it arrived (RFC 5040 Figure 10: DDP and remote operation errors copy it), and
/// that the posted receive was not used.
fn refused_on_header(s: &mut Side, h: SegmentHeader, body_len: usize) -> TerminateCause {
    let (cause, body) = s.terminate();
    let (hb, n) = h.to_bytes();
    assert_eq!(&body[4..6], &((n + body_len) as u16).to_be_bytes(), "segment length {h:?}");
    assert_eq!(&body[6..], &hb[..n], "copied header {h:?}");
    let c = s.completions();
    assert!(c.iter().all(|c| c.status == iwarp_proto::qp::WcStatus::WrFlush), "{h:?}: {c:?}");
    cause
}

const UNEXPECTED: TerminateCause = TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode);

#[test]
fn an_opcode_on_the_other_buffer_model_is_an_unexpected_opcode() {
    for d in rdmap::descriptors() {
        let mut h = header_of(d);
        h.placement = if d.model.is_tagged() {
            Placement::Untagged { qn: QueueNumber::SEND, msn: Msn(1), mo: 0 }
        } else {
            Placement::Tagged { stag: Stag(0x100), to: TaggedOffset(0) }
        };
        let mut s = responder(true);
        feed_header_only(&mut s, h, &[0; 8]);
        assert_eq!(refused_on_header(&mut s, h, 8), UNEXPECTED, "{}", d.name);
    }
}

#[test]
fn reserved_opcodes_are_unexpected_on_either_buffer_model() {
    for code in 0xC..=0xF {
        let op = Opcode::from(code);
        assert!(op.descriptor().is_none());
        for h in [
            SegmentHeader::untagged(op, true, Msn(1), 0),
            SegmentHeader::tagged(op, true, Stag(0x100), TaggedOffset(0)),
        ] {
            let mut s = responder(true);
            feed_header_only(&mut s, h, &[0; 4]);
            assert_eq!(refused_on_header(&mut s, h, 4), UNEXPECTED, "{h:?}");
        }
    }
}

#[test]
fn an_untagged_opcode_on_another_queue_is_an_invalid_queue_number() {
    for d in rdmap::descriptors() {
        let Some(own) = d.model.queue() else { continue };
        for qn in (0..=4).filter(|&q| q != own.0) {
            let mut h = header_of(d);
            h.placement = Placement::Untagged { qn: QueueNumber(qn), msn: Msn(1), mo: 0 };
            let mut s = responder(true);
            feed_header_only(&mut s, h, &[0; 8]);
            let cause = refused_on_header(&mut s, h, 8);
            assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidQn), "{} on {qn}", d.name);
        }
    }
}

#[test]
fn rfc7306_opcodes_are_unexpected_on_their_header_unless_agreed() {
    let rows: Vec<_> = rdmap::descriptors().filter(|d| d.rfc7306).collect();
    assert_eq!(rows.len(), 4);
    for d in rows {
        let h = header_of(d);
        let len = d.body.fixed_len().unwrap();
        let mut s = responder(false);
        feed_header_only(&mut s, h, &vec![0; len]);
        assert_eq!(refused_on_header(&mut s, h, len), UNEXPECTED, "{}", d.name);
    }
    // Agreed: the same Immediate Data is delivered.
    let mut s = responder(true);
    s.feed(SegmentHeader::untagged(Opcode::ImmediateDataSe, true, Msn(1), 0), &7u64.to_be_bytes(), &[]);
    let c = s.completions();
    assert_eq!((c[0].wr_id, c[0].imm_data, c[0].solicited), (1, Some(7), true));
}

#[test]
fn a_fixed_size_rdmap_header_of_another_length_is_refused_on_the_ddp_header() {
    for d in rdmap::descriptors() {
        let Body::Fixed(len) = d.body else { continue };
        for n in [len - 1, len + 1] {
            let h = header_of(d);
            let mut s = responder(true);
            feed_header_only(&mut s, h, &vec![0; n]);
            assert_eq!(refused_on_header(&mut s, h, n), UNSPECIFIED, "{} with {n} bytes", d.name);
        }
    }
    // The Terminate's header is bounded instead.
    let h = SegmentHeader::untagged(Opcode::Terminate, true, Msn(1), 0);
    let n = rdmap::MAX_BODY_LEN + 1;
    let mut s = responder(true);
    feed_header_only(&mut s, h, &vec![0; n]);
    assert_eq!(refused_on_header(&mut s, h, n), UNSPECIFIED);
}

#[test]
fn every_opcode_that_takes_a_receive_finds_none_posted() {
    for d in rdmap::descriptors().filter(|d| d.consumes == Consumes::ReceiveWqe) {
        let mut s = Side::new();
        s.feed(header_of(d), &body_of(d), payload_of(d));
        let (cause, _) = s.terminate();
        assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), "{}", d.name);
    }
}

#[test]
fn every_response_with_nothing_outstanding_is_an_unexpected_opcode() {
    let rows: Vec<_> = rdmap::descriptors().filter(|d| d.direction == Direction::Response).collect();
    assert_eq!(rows.len(), 2);
    for d in rows {
        let mut s = responder(true);
        s.feed(header_of(d), &body_of(d), payload_of(d));
        assert_eq!(s.terminate().0, UNEXPECTED, "{}", d.name);
    }
}

/// RFC 5041 §5.2: every segment of a tagged message repeats its STag with the TO advancing,
/// and a Read Response starts at the sink its Read named. One check covers both: a wrong STag
/// is an invalid STag, a wrong TO a base-or-bounds error, and nothing is placed.
#[test]
fn a_tagged_segment_must_carry_the_stag_and_to_its_message_expects() {
    use iwarp_proto::qp::{Payload, RemoteAddr, SendOp, SendWqe};
    let invalid_stag = TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag);
    let bounds = TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds);
    // (first segment: STag and TO offsets from the sink; second segment, if any; cause)
    type Seg = (u32, u64);
    let cases: [(Seg, Option<Seg>, TerminateCause); 6] = [
        ((0x100, 0), None, invalid_stag),
        ((0, 8), None, bounds),
        ((0, 0), Some((0x100, 8)), invalid_stag),
        ((0, 0), Some((0, 9)), bounds),
        // Both wrong: the STag is reported (siw's order: STag, then TO).
        ((0x100, 8), None, invalid_stag),
        ((0, 0), Some((0x100, 9)), invalid_stag),
    ];
    for (i, (first, second, want)) in cases.into_iter().enumerate() {
        let mut s = Side::with(link(Startup::Initiator { rtr: None }));
        let sink = s.mr(64, Access::LOCAL_WRITE);
        let wr = SendWqe {
            wr_id: 3,
            op: SendOp::Read(RemoteAddr::unbounded(Stag(0x1234_5600), 0x9000)),
            payload: Payload::Sges(vec![Sge { mr: Arc::clone(&sink), offset: 0, len: 16 }].into()),
            signaled: true,
            solicited: false,
            fence: false,
        };
        s.qp.post_send([wr]).unwrap();
        assert_eq!(s.sent().len(), 1);
        let at = |(stag_delta, to_delta): Seg, last| {
            SegmentHeader::tagged(
                Opcode::ReadResponse,
                last,
                Stag(sink.stag().0 ^ stag_delta),
                TaggedOffset(sink.base() + to_delta),
            )
        };
        s.feed(at(first, second.is_none()), &[], &[0xEE; 8]);
        if let Some(second) = second {
            s.feed(at(second, true), &[], &[0xDD; 8]);
        }
        assert_eq!(s.terminate().0, want, "case {i}");
        let placed = if second.is_some() { [0xEE; 8] } else { [0; 8] };
        assert_eq!(contents(&sink, 0, 16), [placed, [0; 8]].concat(), "case {i}");
    }
    // A Write continued under another STag.
    let mut s = Side::new();
    let m = s.mr(64, Access::REMOTE_WRITE);
    s.feed(SegmentHeader::tagged(Opcode::Write, false, m.stag(), TaggedOffset(m.base())), &[], &[1; 8]);
    s.feed(
        SegmentHeader::tagged(Opcode::Write, true, Stag(m.stag().0 ^ 0x100), TaggedOffset(m.base() + 8)),
        &[],
        &[2; 8],
    );
    assert_eq!(s.terminate().0, invalid_stag);
    assert_eq!(contents(&m, 0, 16), [[1; 8], [0; 8]].concat());
}

/// RFC 5040 §5.2: a Read Response carries exactly the bytes its Read asked for; one that ends
/// (L set) short of them is a tagged base-or-bounds error found at its end, and the Read does
/// not complete successfully.
#[test]
fn a_read_response_shorter_than_its_read_is_a_bounds_error() {
    use iwarp_proto::qp::{Payload, RemoteAddr, SendOp, SendWqe, WcStatus};
    let mut s = Side::with(link(Startup::Initiator { rtr: None }));
    let sink = s.mr(64, Access::LOCAL_WRITE);
    let wr = SendWqe {
        wr_id: 3,
        op: SendOp::Read(RemoteAddr::unbounded(Stag(0x1234_5600), 0x9000)),
        payload: Payload::Sges(vec![Sge { mr: Arc::clone(&sink), offset: 0, len: 16 }].into()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    s.qp.post_send([wr]).unwrap();
    assert_eq!(s.sent().len(), 1);
    s.feed(SegmentHeader::tagged(Opcode::ReadResponse, true, sink.stag(), TaggedOffset(sink.base())), &[], &[7; 8]);
    assert_eq!(s.terminate().0, TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds));
    let c = s.completions();
    assert!(c.iter().all(|c| c.wr_id != 3 || c.status != WcStatus::Success), "{c:?}");
}

/// RFC 6581 §9.2: a Send RTR is a zero-length last Send; one with payload, or not the last
/// segment of its message, matches no RTR (MPA code 7, no headers).
#[test]
fn a_send_rtr_with_payload_or_more_segments_matches_no_rtr() {
    let rtr = Some(iwarp_wire::mpa::RtrTypes { send: true, write: false, read: false });
    for (last, payload) in [(true, &b"x"[..]), (false, &[][..])] {
        let mut s = Side::with(link(Startup::Responder { rtr, send_first: false }));
        let dst = s.mr(64, Access::LOCAL_WRITE);
        s.post_recv(1, &dst, 64);
        s.feed(send(1, 0, last), &[], payload);
        let (cause, body) = s.terminate();
        assert_eq!(cause, TerminateCause::Mpa(iwarp_wire::terminate::Mpa::NoMatchingRtr), "L={last}");
        assert_eq!(body, [0x20, 0x07, 0x00, 0x00]);
    }
}
