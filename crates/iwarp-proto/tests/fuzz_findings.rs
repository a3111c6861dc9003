//! Engine behaviours the `qp_rx` and `cm_handshake` fuzz targets found wrong, each pinned by
//! the smallest hand-written case. The inputs that found them are kept as seeds under
//! `fuzz/seeds/<target>/regress-*.bin`.

mod common;

use iwarp_proto::mem::{Access, MrRef, PdId, RawMem, StagTable};
use iwarp_proto::qp::{
    LinkParams, Payload, Qp, QpConfig, QpState, Queue, SendOp, SendWqe, Sge, Startup, WcOpcode, WcStatus,
};
use iwarp_wire::mpa::{DeframerConfig, Framer};
use iwarp_wire::{Msn, Opcode, SegmentHeader};
use std::sync::Arc;

struct Side {
    qp: Qp,
    stags: Arc<StagTable>,
    pd: PdId,
    framer: Framer,
}

impl Side {
    /// An initiator with CRC off and a MULPDU large enough for zero-copy payloads.
    fn new() -> Side {
        let stags = Arc::new(StagTable::new(9));
        let pd = stags.new_pd();
        let cfg = QpConfig { qp_num: 3, pd, sq_depth: 8, rq_depth: 8, max_send_sge: 2, max_recv_sge: 2, max_inline: 0 };
        let mut qp = Qp::new(cfg, Arc::clone(&stags), None);
        let link = LinkParams {
            crc: false,
            send_markers: false,
            recv_markers: false,
            ird: 4,
            ord: 4,
            mulpdu: 16 << 10,
            large_fpdus: false,
            rfc7306: true,
            startup: Startup::Initiator { rtr: None },
        };
        qp.establish(link).unwrap();
        Side { qp, stags, pd, framer: Framer::new(false, false) }
    }

    fn mr(&self, len: usize, fill: u8) -> MrRef {
        let m = RawMem::alloc(len, false).unwrap();
        assert!(m.write(0, &vec![fill; len]));
        self.stags.register(m, self.pd, Access::LOCAL_WRITE, 0x1000).unwrap()
    }

    fn feed(&mut self, h: SegmentHeader, payload: &[u8]) {
        let (b, n) = h.to_bytes();
        let mut out = Vec::new();
        self.framer.frame_to_vec(&b[..n], &[payload], &mut out).unwrap();
        assert_eq!(self.qp.receive_copy(&out), out.len());
    }
}

/// Every (header, payload) in `wire` (framed without CRC).
fn deframe(wire: &[u8]) -> Vec<(SegmentHeader, Vec<u8>)> {
    common::deframe(DeframerConfig { crc: false, markers: false, max_ulpdu: u16::MAX }, wire)
}

/// Found by `qp_rx` (`regress-terminate-reads-flushed-send.bin`): a Send framed but not yet
/// handed to the socket when the peer's error made the queue pair terminate completed flushed,
/// yet its FPDU stayed in the transmit batch pointing into the application's buffer, so the
/// buffer was read (and sent) after the application had it back.
#[test]
fn framed_sends_completed_by_a_terminate_no_longer_read_their_buffers() {
    let mut s = Side::new();
    let m = s.mr(4096, 0xab);
    let sge = Sge { mr: Arc::clone(&m), offset: 0, len: 4096 };
    let w = SendWqe {
        wr_id: 1,
        op: SendOp::Send,
        payload: Payload::Sges(vec![sge].into()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    s.qp.post_send([w]).unwrap();
    // Framed (one FPDU whose payload is the buffer itself), the socket takes nothing yet.
    let mut ranges = Vec::new();
    assert!(s.qp.poll_transmit(&mut ranges, 64) > 4096);
    // The peer sends with no receive posted: Terminate.
    s.feed(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), b"x");
    assert_eq!(s.qp.state(), QpState::Terminate);
    let c = s.qp.poll_completion().expect("the Send completes");
    assert_eq!((c.wr_id, c.status, c.opcode, c.queue), (1, WcStatus::WrFlush, WcOpcode::Send, Queue::Send));
    // The buffer is the application's again: it reuses it.
    assert!(m.mem().write(0, &[0xcd; 4096]));
    let mut wire = Vec::new();
    s.qp.transmit_copy(&mut wire, usize::MAX);
    let fpdus = deframe(&wire);
    assert_eq!(fpdus.len(), 2, "the framed Send, then the Terminate");
    assert_eq!(fpdus[0].0.opcode, Opcode::Send);
    assert!(fpdus[0].1.iter().all(|&b| b == 0xab), "the Send's bytes were read after its completion");
    assert_eq!(fpdus[1].0.opcode, Opcode::Terminate);
}

/// Found by `cm_handshake` (`regress-malformed-reply-leaves-deadline.bin`): a malformed Reply
/// failed the initiator but left its exchange open, so its deadline stayed pending, a later
/// timeout reported a second outcome, and every later read buffered more bytes.
#[test]
fn a_malformed_reply_ends_the_initiators_exchange() {
    use iwarp_proto::cm::{CmError, Initiator, MpaConfig};
    use std::time::{Duration, Instant};
    let now = Instant::now();
    let (mut i, _) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
    assert!(matches!(i.handle_bytes(b"HTTP/1.1 200 OK\r\n"), Err(CmError::Malformed(_))));
    assert_eq!(i.poll_timeout(), None);
    assert_eq!(i.handle_timeout(now + Duration::from_secs(60)), Ok(()));
    assert_eq!(i.handle_bytes(b"MPA ID Rep Frame"), Err(CmError::Finished));
}

/// Found by `cm_handshake` (`regress-second-answer-by-reject.bin`): after the responder had
/// accepted (or rejected, or failed on bytes following the Request), `reject` still built a
/// rejecting Reply, a second answer to one Request.
#[test]
fn a_responder_answers_a_request_once() {
    use iwarp_proto::cm::{CmError, Initiator, MpaConfig, Responder};
    use std::time::Instant;
    let now = Instant::now();
    let (_, req) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
    let answered = |answer: &dyn Fn(&mut Responder)| {
        let mut r = Responder::new(MpaConfig::default(), now);
        r.handle_bytes(&req).unwrap().unwrap();
        answer(&mut r);
        r
    };
    let mut r = answered(&|r| drop(r.accept(1, 1, &[]).unwrap()));
    assert_eq!(r.reject(&[]), Err(CmError::Finished), "reject after accept");
    let mut r = answered(&|r| drop(r.reject(b"no").unwrap()));
    assert_eq!(r.reject(&[]), Err(CmError::Finished), "reject after reject");
    assert_eq!(r.accept(1, 1, &[]).unwrap_err(), CmError::Finished, "accept after reject");
    let mut r = answered(&|r| assert_eq!(r.handle_bytes(&[0, 0x12]), Err(CmError::UnexpectedData(2))));
    assert_eq!(r.reject(&[]), Err(CmError::Finished), "reject after a failed exchange");
}

/// Found by `cm_handshake` (`regress-reply-revision-above-request.bin`): an initiator that sent
/// a revision-1 Request took a revision-2 Reply, RFC 6581 IRD/ORD block and all, and reported
/// revision 2, which it had not offered. A responder answers in the Request's revision (Linux
/// siw mirrors it); a Reply above it is one the initiator cannot interoperate with.
#[test]
fn a_reply_of_a_higher_revision_than_the_request_fails_the_initiator() {
    use iwarp_proto::cm::{CmError, Initiator, MpaConfig};
    use iwarp_wire::mpa::{EnhancedParams, FrameKind, FrameRepr};
    use std::time::Instant;
    let now = Instant::now();
    let cfg = MpaConfig { revision: 1, ..MpaConfig::default() };
    let (mut i, _) = Initiator::new(cfg, 4, 4, &[], now).unwrap();
    let reply = FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(1, 1), &[]).to_vec().unwrap();
    assert_eq!(i.handle_bytes(&reply), Err(CmError::Malformed(iwarp_wire::Error::UnsupportedRevision(2))));
    assert_eq!(i.poll_timeout(), None, "the exchange is over");
}

/// Found by `qp_rx` (`regress-atomic-sink-of-two-elements.bin`; the consequence in
/// `regress-atomic-response-overruns-first-element.bin`): an atomic whose 8-byte sink was split
/// over several elements was accepted, and the Atomic Response's original value was then
/// written whole into the first element, past its end into memory the request never named.
#[test]
fn an_atomic_result_lands_in_exactly_one_element_of_eight_bytes() {
    use iwarp_proto::qp::{PostError, RemoteAddr};
    let mut s = Side::new();
    let m = s.mr(64, 0);
    let atomic = |sges: &[(usize, usize)]| SendWqe {
        wr_id: 7,
        op: SendOp::FetchAdd { remote: RemoteAddr::unbounded(iwarp_wire::Stag(0x100), 0), add: 1 },
        payload: Payload::Sges(sges.iter().map(|&(offset, len)| Sge { mr: Arc::clone(&m), offset, len }).collect()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    assert_eq!(s.qp.post_send([atomic(&[(0, 4), (32, 4)])]), Err(PostError::InvalidLength));
    assert_eq!(s.qp.post_send([atomic(&[(0, 8), (32, 0)])]), Err(PostError::InvalidLength));
    assert_eq!(s.qp.send_outstanding(), 0);
    assert_eq!(s.qp.post_send([atomic(&[(8, 8)])]), Ok(()));
}

/// Found by `qp_rx` (`regress-disconnect-reads-flushed-send.bin`): a disconnect while a long
/// Send was being framed (its first FPDUs framed, the rest held back by the transmit window)
/// completed the Send flushed, yet its framed FPDUs stayed in the batch pointing into the
/// application's buffer, read (and sent) after the application had it back.
#[test]
fn a_send_cut_short_by_a_disconnect_no_longer_reads_its_buffer() {
    let mut s = Side::new();
    let len = 5 << 20;
    let m = s.mr(len, 0xab);
    let w = SendWqe {
        wr_id: 1,
        op: SendOp::Send,
        payload: Payload::Sges(vec![Sge { mr: Arc::clone(&m), offset: 0, len }].into()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    s.qp.post_send([w]).unwrap();
    let mut ranges = Vec::new();
    let framed = s.qp.poll_transmit(&mut ranges, usize::MAX);
    assert!(framed > 0 && framed < len, "the transmit window holds the rest back");
    s.qp.disconnect();
    let c = s.qp.poll_completion().expect("the Send completes");
    assert_eq!((c.wr_id, c.status), (1, WcStatus::WrFlush));
    assert!(m.mem().write(0, &vec![0xcd; len]));
    let mut wire = Vec::new();
    s.qp.transmit_copy(&mut wire, usize::MAX);
    let fpdus = deframe(&wire);
    assert!(!fpdus.is_empty());
    for (h, payload) in &fpdus {
        assert_eq!((h.opcode, h.last), (Opcode::Send, false), "only the framed part of the Send goes out");
        assert!(payload.iter().all(|&b| b == 0xab), "the Send's bytes were read after its completion");
    }
}

/// Found while reducing the disconnect case above, then caught by `qp_rx` with the input kept as
/// `regress-read-response-after-disconnect.bin`: a disconnect completes an outstanding RDMA Read
/// flushed, but the queue pair, still receiving while its framed bytes drained, went on placing
/// the Read Response in progress into the sink the application had back.
#[test]
fn a_read_flushed_by_a_disconnect_takes_no_more_of_its_response() {
    use iwarp_proto::qp::RemoteAddr;
    use iwarp_wire::{Stag, TaggedOffset};
    let mut s = Side::new();
    let sink = s.mr(4096, 0x11);
    let w = SendWqe {
        wr_id: 4,
        op: SendOp::Read(RemoteAddr::unbounded(Stag(0x2200), 0x5000)),
        payload: Payload::Sges(vec![Sge { mr: Arc::clone(&sink), offset: 0, len: 4096 }].into()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    s.qp.post_send([w]).unwrap();
    let mut wire = Vec::new();
    s.qp.transmit_copy(&mut wire, usize::MAX);
    // The first segment of the response is placed.
    let at = |off: u64| TaggedOffset(sink.base() + off);
    s.feed(SegmentHeader::tagged(Opcode::ReadResponse, false, sink.stag(), at(0)), &[0x22; 1000]);
    // A Send is framed, not yet taken by the socket: the disconnect drains it, so the queue pair
    // stays in Closing and keeps receiving.
    let src = s.mr(16, 0x55);
    let send = SendWqe {
        wr_id: 5,
        op: SendOp::Send,
        payload: Payload::Sges(vec![Sge { mr: src, offset: 0, len: 16 }].into()),
        signaled: true,
        solicited: false,
        fence: false,
    };
    s.qp.post_send([send]).unwrap();
    let mut ranges = Vec::new();
    assert!(s.qp.poll_transmit(&mut ranges, 64) > 0);
    s.qp.disconnect();
    assert_eq!(s.qp.state(), QpState::Closing);
    let c = s.qp.poll_completion().expect("the Read completes");
    assert_eq!((c.wr_id, c.status), (4, WcStatus::WrFlush));
    // The application reuses its buffer; the rest of the response arrives.
    assert!(sink.mem().write(0, &[0x33; 4096]));
    let (b, n) = SegmentHeader::tagged(Opcode::ReadResponse, true, sink.stag(), at(1000)).to_bytes();
    let mut fpdu = Vec::new();
    s.framer.frame_to_vec(&b[..n], &[&[0x44; 3096]], &mut fpdu).unwrap();
    s.qp.receive_copy(&fpdu);
    let mut now = vec![0; 4096];
    assert!(sink.mem().read(0, &mut now));
    assert!(now.iter().all(|&b| b == 0x33), "the response was placed after its Read completed");
}
