//! Terminate cases provoked by a misbehaving raw-socket peer (MPA by hand, crafted FPDUs): the
//! exact Terminate FPDU our stack sends (RFC 5040 §4.8 layout, QN 2, MSN 1, the headers Figure
//! 10 says to copy), the local error event and flushed work, and a second queue pair on the
//! same device and protection domain that keeps working. Also Terminates received from the
//! peer, in the RFC layout and in Linux siw's swapped one.
mod common;

use common::*;
use iwarp::*;
use iwarp_wire::mpa::rr::{FrameKind, FrameRepr};
use iwarp_wire::mpa::EnhancedParams;
use iwarp_wire::rdmap::{AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::{
    CopiedDdpHeader, Mpa, RemoteOperation, RemoteProtection, TaggedBuffer, TerminateMessage, TerminateRepr,
    UntaggedBuffer,
};
use iwarp_wire::{Msn, Opcode, Placement, QueueNumber, SegmentHeader, Stag, TaggedOffset};
use std::net::TcpListener;
use std::time::Duration;

/// Receives and sends the victim queue pair has outstanding when the bad FPDU arrives.
const RECVS: u64 = 3;
const SENDS: u64 = 3;

/// A stack queue pair accepted from a raw initiator, with a well-behaved pair beside it on the
/// same device and protection domain.
struct Victim {
    pd: ProtectionDomain,
    qp: End,
    raw: RawPeer,
    /// Receive buffers of 64 bytes each.
    rb: MemoryRegion,
    good: Pair,
    recvs: u64,
    /// Keeps the device's listener alive.
    _listener: Listener,
    /// The held sends' source (a region dropped while in use fails its work requests).
    _src: MemoryRegion,
}

impl Victim {
    /// Sets up the victim with `recvs` receives posted and [`SENDS`] sends held (the responder
    /// may not send before the raw peer's first FPDU).
    fn new(recvs: u64, ird: u16) -> Victim {
        Victim::build(recvs, ird, false)
    }

    /// As [`Victim::new`]; `rfc7306`: the raw peer offers RFC 7306 (the reserved Request flag
    /// bit 0x01 this stack uses for it).
    fn build(recvs: u64, ird: u16, rfc7306: bool) -> Victim {
        let dev = device();
        let pd = dev.alloc_pd();
        let good = Pair::on(&dev, &pd, PairConfig::default());
        let listener = dev.listen(any_port(), 4).unwrap();
        let qp = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
        let rb = pd.reg_mr(64 * 8, all_access()).unwrap();
        for i in 0..recvs {
            post_recv(&qp.qp, 100 + i, &rb, 64 * i as usize, 64);
        }
        let mut req = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(ird, ird), b"raw");
        req.reserved_flags = if rfc7306 { 0x01 } else { 0 };
        let mut raw = RawPeer::connect_frame(listener.local_addr(), &req);
        let req = listener.get_request(Some(WAIT)).unwrap();
        // A Send with no receive posted terminates at once, as RFC 5041 §7.2 describes (the
        // receive wait, `recv_wait.rs`, would put it off).
        let params =
            ConnParams { responder_resources: ird, initiator_depth: ird, recv_wait: None, ..ConnParams::default() };
        req.accept(&qp.qp, &params).unwrap();
        let (crc, _, _) = raw.read_reply();
        assert!(crc);
        assert_eq!(qp.qp.conn_info().unwrap().ird, ird);
        assert_eq!(qp.qp.supports_rfc7306(), rfc7306);
        let src = pd.reg_mr(64, all_access()).unwrap();
        let wrs: Vec<SendWr<'_>> = (0..SENDS).map(|i| SendWr::send(200 + i, &[src.sge(0, 8)])).collect();
        qp.qp.post_send(&wrs).unwrap();
        drop(wrs);
        Victim { pd, qp, raw, rb, good, recvs, _listener: listener, _src: src }
    }

    fn mr(&self, len: usize, access: Access) -> MemoryRegion {
        self.pd.reg_mr(len, access).unwrap()
    }

    /// Sends `bytes`, then checks the Terminate that comes back is exactly `body` for
    /// `cause`, the local error event, the flushed work (the first receive completing with
    /// `first_recv` if given), and that the good pair still works.
    fn expect_terminate(&mut self, bytes: &[u8], cause: TerminateCause, body: &[u8], first_recv: Option<WcStatus>) {
        self.raw.send(bytes);
        let (f, eof) = self.raw.read_until_eof(WAIT);
        assert!(eof, "the stack closes the connection after its Terminate");
        assert_eq!(f.len(), 1, "only the Terminate: {f:?}");
        check_terminate_fpdu(&f[0], cause, body);
        self.expect_local_error(cause, first_recv);
    }

    fn expect_local_error(&self, cause: TerminateCause, first_recv: Option<WcStatus>) {
        let e = wait_event(&self.qp.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
        match e {
            QpEvent::Error { cause: c, remote, layout } => {
                assert_eq!((c, remote, layout), (Some(cause), false, None));
            }
            _ => unreachable!(),
        }
        wait_event(&self.qp.qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
        assert_eq!(self.qp.qp.state(), QpState::Error);
        // The held sends were never framed: flushed, in order.
        let s = self.qp.send_wcs(SENDS as usize);
        let got: Vec<(u64, WcStatus)> = s.iter().map(|c| (c.wr_id, c.status)).collect();
        assert_eq!(got, (0..SENDS).map(|i| (200 + i, WcStatus::WrFlush)).collect::<Vec<_>>());
        let r = self.qp.recv_wcs(self.recvs as usize);
        for (i, c) in r.iter().enumerate() {
            assert_eq!(c.wr_id, 100 + i as u64);
            match (i, first_recv) {
                (0, Some(st)) => assert_eq!((c.status, c.cause), (st, Some(cause)), "{c:?}"),
                _ => assert_eq!(c.status, WcStatus::WrFlush, "{c:?}"),
            }
        }
        assert_eq!(
            self.qp.qp.post_send(&[SendWr::send(1, &[])]).map_err(|e| e.reason),
            Err(PostReason::InvalidState(QpState::Error))
        );
        self.check_good_pair();
    }

    /// The other queue pair of the same device and domain is unaffected.
    fn check_good_pair(&self) {
        let g = &self.good;
        let a = g.mr(70_000, all_access());
        let b = g.mr(70_000, all_access());
        write_and_verify(&g.client, &g.server, &a, &b, 70_000, 1);
        send_and_verify(&g.client, &g.server, &a, &b, 70_000, 2);
        write_and_verify(&g.server, &g.client, &b, &a, 33_333, 3);
        read_and_verify(&g.client, &a, &b, 65_536, 4);
        for qp in [&g.client.qp, &g.server.qp] {
            assert_eq!(qp.state(), QpState::Rts);
            assert!(next_non_established(qp, Duration::ZERO).is_none());
        }
    }
}

/// Checks a Terminate FPDU: untagged, QN 2, MSN 1, MO 0, L set, and the body.
fn check_terminate_fpdu(f: &RxFpdu, cause: TerminateCause, body: &[u8]) {
    assert_eq!(f.seg.opcode, Opcode::Terminate);
    assert!(f.seg.last);
    assert_eq!(f.seg.placement, Placement::Untagged { qn: QueueNumber(2), msn: Msn(1), mo: 0 });
    assert_eq!(f.ddp_header, [0x41, 0x47, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(usize::from(f.ulpdu_len), 18 + body.len());
    assert_eq!(f.payload, body, "Terminate body for {cause:?}");
    let m = TerminateMessage::parse(&f.payload).unwrap();
    assert_eq!(m.layout, TerminateLayout::Rfc5040);
    assert_eq!(m.rfc.cause, cause);
    // The copied headers are exactly the ones RFC 5040 Figure 10 (as implemented) calls for.
    let (ddp, rdmap) = cause.carries_headers();
    assert_eq!(m.rfc.ddp.is_some(), ddp && body.len() > 4);
    if m.rfc.rdmap_header.is_some() {
        assert!(rdmap);
    }
}

/// The Terminate body in RFC 5040 bit order: control word, then (D) segment length and the
/// offending DDP header, then (R) the Read Request header.
fn body(cause: TerminateCause, ddp: Option<(&[u8], u16)>, rr: Option<&[u8]>) -> Vec<u8> {
    let t = TerminateRepr {
        cause,
        ddp: ddp.map(|(header, len)| CopiedDdpHeader { segment_length: Some(len), header }),
        rdmap_header: rr,
    };
    let mut out = vec![0u8; t.buffer_len()];
    t.emit(&mut out).unwrap();
    // Spelled out once, independently of the emitter: layer/etype, code, M|D|R flags, reserved.
    let c = cause.code();
    let flags = if ddp.is_some() { 0xC0 } else { 0 } | if rr.is_some() { 0x20 } else { 0 };
    assert_eq!(out[..4], [c.layer << 4 | c.etype, c.ecode, flags, 0]);
    out
}

fn hdr(h: SegmentHeader) -> Vec<u8> {
    let (b, n) = h.to_bytes();
    b[..n].to_vec()
}

fn write_hdr(stag: Stag, to: u64) -> SegmentHeader {
    SegmentHeader::tagged(Opcode::Write, true, stag, TaggedOffset(to))
}

/// A tagged Write of `payload` to (stag, to); returns the FPDU and its DDP header bytes.
fn bad_write(v: &mut Victim, stag: Stag, to: u64, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let h = hdr(write_hdr(stag, to));
    (v.raw.raw_fpdu(&h, payload), h)
}

#[test]
fn invalid_stag_is_a_ddp_tagged_error_with_the_header_copied() {
    let mut v = Victim::new(RECVS, 8);
    let mr = v.mr(4096, all_access());
    let wrong_key = Stag::from_parts(mr.stag().index(), mr.stag().key() ^ 0x5a);
    let (fpdu, h) = bad_write(&mut v, wrong_key, mr.addr(), &[7; 8]);
    let cause = TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 22)), None), None);
    assert_eq!(mr.to_vec(0, 8).unwrap(), [0; 8], "nothing placed");
}

#[test]
fn stag_of_another_protection_domain_is_not_associated_with_the_stream() {
    let mut v = Victim::new(RECVS, 8);
    let other_pd = v.good.dev.alloc_pd();
    let mr = other_pd.reg_mr(4096, all_access()).unwrap();
    let (fpdu, h) = bad_write(&mut v, mr.stag(), mr.addr(), &[7; 100]);
    let cause = TerminateCause::TaggedBuffer(TaggedBuffer::StagNotAssociated);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 114)), None), None);
    assert_eq!(mr.to_vec(0, 100).unwrap(), [0; 100], "nothing placed");
}

#[test]
fn write_to_a_read_only_region_is_a_remote_protection_access_error() {
    let mut v = Victim::new(RECVS, 8);
    let mr = v.mr(4096, Access::REMOTE_READ | Access::LOCAL_WRITE);
    let (fpdu, h) = bad_write(&mut v, mr.stag(), mr.addr() + 8, &[7; 8]);
    // RDMAP remote protection / access rights; a Write is not a Read Request: no R header.
    let cause = TerminateCause::RemoteProtection(RemoteProtection::AccessRights);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 22)), None), None);
    assert_eq!(mr.to_vec(8, 8).unwrap(), [0; 8], "nothing placed");
}

#[test]
fn write_outside_the_region_is_a_base_or_bounds_error() {
    for below in [false, true] {
        let mut v = Victim::new(RECVS, 8);
        let mr = v.mr(4096, all_access());
        let to = if below { mr.addr() - 1 } else { mr.addr() + 4096 - 4 };
        let (fpdu, h) = bad_write(&mut v, mr.stag(), to, &[7; 8]);
        let cause = TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds);
        v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 22)), None), None);
        assert_eq!(mr.to_vec(4088, 8).unwrap(), [0; 8], "nothing placed");
    }
}

#[test]
fn send_with_an_unexpected_msn_is_an_invalid_msn_range_error() {
    let mut v = Victim::new(RECVS, 8);
    let h = hdr(SegmentHeader::untagged(Opcode::Send, true, Msn(5), 0));
    let fpdu = v.raw.raw_fpdu(&h, b"hello");
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 23)), None), None);
}

#[test]
fn send_on_an_invalid_queue_number_is_an_invalid_qn_error() {
    let mut v = Victim::new(RECVS, 8);
    let mut s = SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0);
    s.placement = Placement::Untagged { qn: QueueNumber(9), msn: Msn(1), mo: 0 };
    let h = hdr(s);
    assert_eq!(&h[6..10], &[0, 0, 0, 9]);
    let fpdu = v.raw.raw_fpdu(&h, b"hello");
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidQn);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 23)), None), None);
}

#[test]
fn send_with_no_posted_receive_is_a_no_buffer_error() {
    let mut v = Victim::new(0, 8);
    let h = hdr(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0));
    let fpdu = v.raw.raw_fpdu(&h, b"hi");
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer);
    // protocol-notes §2.5 / the engine's unit test: 12 02 C0 00, length 20, header copied.
    let b = body(cause, Some((&h, 20)), None);
    assert_eq!(&b[..6], &[0x12, 0x02, 0xC0, 0x00, 0x00, 20]);
    v.expect_terminate(&fpdu, cause, &b, None);
}

#[test]
fn send_longer_than_the_posted_receive_is_a_too_long_error_and_a_length_completion() {
    let mut v = Victim::new(RECVS, 8);
    // The first receive holds 64 bytes; this message has 100, in two segments.
    let h1 = hdr(SegmentHeader::untagged(Opcode::Send, false, Msn(1), 0));
    let h2 = hdr(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 50));
    let mut bytes = v.raw.raw_fpdu(&h1, &[1; 50]);
    bytes.extend(v.raw.raw_fpdu(&h2, &[2; 50]));
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::TooLong);
    // The second segment is the one that does not fit: its header is copied.
    v.expect_terminate(&bytes, cause, &body(cause, Some((&h2, 68)), None), Some(WcStatus::LocalLength));
    assert_eq!(v.rb.to_vec(0, 50).unwrap(), [1; 50], "the segment that fitted was placed");
}

#[test]
fn bad_crc_is_an_llp_error_with_no_headers() {
    let mut v = Victim::new(RECVS, 8);
    let mr = v.mr(4096, all_access());
    let (mut fpdu, _) = bad_write(&mut v, mr.stag(), mr.addr(), &[7; 8]);
    let n = fpdu.len();
    fpdu[n - 1] ^= 0xff;
    let cause = TerminateCause::Mpa(Mpa::Crc);
    v.expect_terminate(&fpdu, cause, &[0x20, 0x02, 0x00, 0x00], None);
}

#[test]
fn reserved_opcodes_are_unexpected_opcode_errors() {
    for (control, opcode) in [(0xC1u8, 0x4Cu8), (0x41, 0x4F)] {
        let mut v = Victim::new(RECVS, 8);
        let mr = v.mr(4096, all_access());
        let mut h = if control & 0x80 != 0 {
            hdr(write_hdr(mr.stag(), mr.addr()))
        } else {
            hdr(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0))
        };
        h[1] = opcode;
        let fpdu = v.raw.raw_fpdu(&h, &[7; 4]);
        let cause = TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode);
        let len = (h.len() + 4) as u16;
        v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, len)), None), None);
    }
}

#[test]
fn rdma_read_beyond_the_ird_is_a_remote_operation_error() {
    let mut v = Victim::new(RECVS, 1);
    let src = v.mr(4096, all_access());
    fill(&src, 0, 4096, 1);
    // Four Read Requests in one write: the IRD of 1 admits one at a time.
    let mut bytes = Vec::new();
    let mut headers = Vec::new();
    let rr = ReadRequest {
        sink_stag: Stag(0x4200),
        sink_to: TaggedOffset(0),
        size: 64,
        src_stag: src.stag(),
        src_to: TaggedOffset(src.addr()),
    };
    for msn in 1..=4 {
        let h = hdr(SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(msn), 0));
        let mut full = h.clone();
        full.extend_from_slice(&rr.to_bytes());
        bytes.extend(v.raw.raw_fpdu(&full, &[]));
        headers.push(h);
    }
    v.raw.send(&bytes);
    let (f, eof) = v.raw.read_until_eof(WAIT);
    assert!(eof);
    let (last, before) = f.split_last().expect("a Terminate");
    // Responses the stack managed to send before the excess request (none when all four
    // arrive together), then the Terminate naming the first request beyond the IRD.
    assert!(before.iter().all(|r| r.seg.opcode == Opcode::ReadResponse), "{before:?}");
    let culprit = &headers[before.len() + 1];
    let cause = TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream);
    check_terminate_fpdu(last, cause, &body(cause, Some((culprit, 46)), None));
    v.expect_local_error(cause, None);
}

#[test]
fn read_request_with_a_bad_source_copies_the_read_header() {
    for (access, valid, code) in [
        (Access::REMOTE_WRITE, true, RemoteProtection::AccessRights),
        (all_access(), false, RemoteProtection::InvalidStag),
        (all_access(), true, RemoteProtection::BaseOrBounds),
    ] {
        let mut v = Victim::new(RECVS, 8);
        let src = v.mr(4096, access);
        let stag = if valid { src.stag() } else { Stag::from_parts(src.stag().index(), src.stag().key() ^ 1) };
        let size = if code == RemoteProtection::BaseOrBounds { 4097 } else { 16 };
        let rr = ReadRequest {
            sink_stag: Stag(0x4200),
            sink_to: TaggedOffset(0x1000),
            size,
            src_stag: stag,
            src_to: TaggedOffset(src.addr()),
        };
        let h = hdr(SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0));
        let mut full = h.clone();
        full.extend_from_slice(&rr.to_bytes());
        let fpdu = v.raw.raw_fpdu(&full, &[]);
        let cause = TerminateCause::RemoteProtection(code);
        let b = body(cause, Some((&h, 46)), Some(&rr.to_bytes()));
        // M, D and R: control, length, untagged header, the Read Request header.
        assert_eq!((b[2], b.len()), (0xE0, 4 + 2 + 18 + 28));
        v.expect_terminate(&fpdu, cause, &b, None);
    }
}

#[test]
fn ddp_version_other_than_1_is_an_invalid_ddp_version_error() {
    for tagged in [true, false] {
        let mut v = Victim::new(RECVS, 8);
        let mr = v.mr(4096, all_access());
        let mut h = if tagged {
            hdr(write_hdr(mr.stag(), mr.addr()))
        } else {
            hdr(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0))
        };
        h[0] = (h[0] & !0x03) | 0x02;
        let fpdu = v.raw.raw_fpdu(&h, &[7; 8]);
        let cause = if tagged {
            TerminateCause::TaggedBuffer(TaggedBuffer::InvalidDdpVersion)
        } else {
            TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidDdpVersion)
        };
        let len = (h.len() + 8) as u16;
        v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, len)), None), None);
        assert_eq!(mr.to_vec(0, 8).unwrap(), [0; 8]);
    }
}

#[test]
fn rdmap_version_0_is_an_invalid_rdmap_version_error() {
    let mut v = Victim::new(RECVS, 8);
    let mr = v.mr(4096, all_access());
    let mut h = hdr(write_hdr(mr.stag(), mr.addr()));
    h[1] &= 0x3F; // RV = 00b (RDMAC)
    let fpdu = v.raw.raw_fpdu(&h, &[7; 8]);
    let cause = TerminateCause::RemoteOperation(RemoteOperation::InvalidRdmapVersion);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 22)), None), None);
    assert_eq!(mr.to_vec(0, 8).unwrap(), [0; 8]);
}

/// The stack as initiator: a raw responder's bad Write terminates our connection, and our
/// outstanding Read (never answered) and receives are flushed.
#[test]
fn initiator_terminates_a_bad_responder_and_flushes_its_read() {
    let dev = device();
    let pd = dev.alloc_pd();
    let good = Pair::on(&dev, &pd, PairConfig::default());
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(8, 8)));
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let rb = pd.reg_mr(64, all_access()).unwrap();
    post_recv(&end.qp, 1, &rb, 0, 64);
    end.qp.connect(addr, &ConnParams::default()).unwrap();
    let mut raw = raw.join().unwrap();
    let remote = pd.reg_mr(4096, all_access()).unwrap();
    let sink = pd.reg_mr(4096, all_access()).unwrap();
    end.qp.post_send(&[SendWr::read(7, sink.sge(0, 64), RemoteAddr::unbounded(Stag(0x9900), 0))]).unwrap();
    let (f, _) = raw.read_fpdus(WAIT, |_| true);
    assert_eq!(f[0].seg.opcode, Opcode::ReadRequest);
    // Instead of a Read Response, a Write to an STag that does not exist.
    let bad = Stag::from_parts(remote.stag().index(), remote.stag().key() ^ 0xff);
    let h = hdr(write_hdr(bad, 0));
    let fpdu = raw.raw_fpdu(&h, &[1; 8]);
    raw.send(&fpdu);
    let (f, eof) = raw.read_until_eof(WAIT);
    assert!(eof);
    let cause = TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag);
    assert_eq!(f.len(), 1, "{f:?}");
    check_terminate_fpdu(&f[0], cause, &body(cause, Some((&h, 22)), None));
    let e = wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, layout: None } if c == cause));
    let s = end.send_wcs(1);
    assert_eq!((s[0].wr_id, s[0].status, s[0].opcode), (7, WcStatus::WrFlush, WcOpcode::RdmaRead));
    let r = end.recv_wcs(1);
    assert_eq!((r[0].wr_id, r[0].status), (1, WcStatus::WrFlush));
    wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
    let a = good.mr(4096, all_access());
    let b = good.mr(4096, all_access());
    write_and_verify(&good.client, &good.server, &a, &b, 4096, 1);
    send_and_verify(&good.server, &good.client, &b, &a, 4096, 2);
}

/// A Terminate from the peer ends our queue pair with `remote: true` and the cause as the
/// self-consistent reading gives it: RFC layout, or Linux siw's (Layer in the low nibble,
/// M/D/R in the low bits).
#[test]
fn received_terminates_are_read_in_either_layout() {
    let siw_hdr: Vec<u8> = hdr(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0));
    let mut siw_with_headers = vec![0x21u8, 0x02, 0x03, 0x00, 0x00, 0x12];
    siw_with_headers.extend_from_slice(&siw_hdr);
    let rfc_with_headers = body(TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), Some((&siw_hdr, 18)), None);
    for (b, cause, layout) in [
        (vec![0x20u8, 0x02, 0x00, 0x00], TerminateCause::Mpa(Mpa::Crc), TerminateLayout::Rfc5040),
        (vec![0x02u8, 0x02, 0x00, 0x00], TerminateCause::Mpa(Mpa::Crc), TerminateLayout::LinuxSiw),
        (rfc_with_headers, TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), TerminateLayout::Rfc5040),
        (siw_with_headers, TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), TerminateLayout::LinuxSiw),
    ] {
        let mut v = Victim::new(RECVS, 8);
        let t = v.raw.fpdu(SegmentHeader::untagged(Opcode::Terminate, true, Msn(1), 0), &b, &[]);
        v.raw.send(&t);
        let e = wait_event(&v.qp.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
        match e {
            QpEvent::Error { cause: c, remote, layout: l } => {
                assert_eq!((c, remote, l), (Some(cause), true, Some(layout)), "{b:02x?}");
            }
            _ => unreachable!(),
        }
        wait_event(&v.qp.qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
        // Our side sends nothing back (no Terminate for a Terminate) and closes.
        let (f, eof) = v.raw.read_until_eof(WAIT);
        assert!(eof && f.is_empty(), "{f:?}");
        let s = v.qp.send_wcs(SENDS as usize);
        assert!(s.iter().all(|c| c.status == WcStatus::WrFlush));
        let r = v.qp.recv_wcs(RECVS as usize);
        assert!(r.iter().all(|c| c.status == WcStatus::WrFlush));
        v.check_good_pair();
    }
}

/// A remote-protection Terminate naming our Read completes that Read with a remote access
/// status and the cause; the rest is flushed.
#[test]
fn terminate_for_our_read_completes_it_with_remote_access() {
    let dev = device();
    let pd = dev.alloc_pd();
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(8, 8)));
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    end.qp.connect(addr, &ConnParams::default()).unwrap();
    let mut raw = raw.join().unwrap();
    let sink = pd.reg_mr(4096, all_access()).unwrap();
    let src = pd.reg_mr(64, all_access()).unwrap();
    let remote = RemoteAddr::unbounded(Stag(0x7700), 0x1000);
    end.qp
        .post_send(&[
            SendWr::read(1, sink.sge(0, 128), remote),
            SendWr::send(2, &[src.sge(0, 8)]),
            SendWr::read(3, sink.sge(128, 8), remote),
        ])
        .unwrap();
    let (f, _) = raw.read_fpdus(WAIT, |f| f.seg.opcode == Opcode::ReadRequest);
    let rr = &f[0];
    let cause = TerminateCause::RemoteProtection(RemoteProtection::InvalidStag);
    let b = body(cause, Some((&rr.ddp_header, rr.ulpdu_len)), Some(&rr.payload));
    let t = raw.fpdu(SegmentHeader::untagged(Opcode::Terminate, true, Msn(1), 0), &b, &[]);
    raw.send(&t);
    let e = wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(
        matches!(e, QpEvent::Error { cause: Some(c), remote: true, layout: Some(TerminateLayout::Rfc5040) } if c == cause)
    );
    let s = end.send_wcs(3);
    assert_eq!((s[0].wr_id, s[0].status, s[0].cause), (1, WcStatus::RemoteAccess, Some(cause)));
    // The Send was handed to TCP before the Terminate arrived; the second Read was not answered.
    assert_eq!((s[1].wr_id, s[1].status), (2, WcStatus::Success));
    assert_eq!((s[2].wr_id, s[2].status), (3, WcStatus::WrFlush));
}

/// RFC 5040 §5.3 / §7.2: a Send with Invalidate naming an STag of another protection domain
/// (Remote Protection) or one that does not exist (Remote Operation) "cannot be invalidated";
/// the message is still delivered, its receive completing with a remote-invalid status.
#[test]
fn send_with_invalidate_of_a_foreign_or_unknown_stag_cannot_be_invalidated() {
    for foreign in [true, false] {
        let mut v = Victim::new(RECVS, 8);
        let other_pd = v.good.dev.alloc_pd();
        let theirs = other_pd.reg_mr(64, all_access()).unwrap();
        let mine = v.mr(64, all_access());
        let stag = if foreign { theirs.stag() } else { Stag::from_parts(mine.stag().index(), mine.stag().key() ^ 3) };
        let mut s = SegmentHeader::untagged(Opcode::SendInvalidate, true, Msn(1), 0);
        s.inval_stag = stag;
        let h = hdr(s);
        assert_eq!(&h[2..6], &stag.0.to_be_bytes());
        let fpdu = v.raw.raw_fpdu(&h, b"bye");
        let cause = if foreign {
            TerminateCause::RemoteProtection(RemoteProtection::CannotInvalidate)
        } else {
            TerminateCause::RemoteOperation(RemoteOperation::CannotInvalidate)
        };
        v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 21)), None), Some(WcStatus::RemoteInvalidRequest));
        assert!(theirs.is_valid() && mine.is_valid(), "nothing was invalidated");
        assert_eq!(v.rb.to_vec(0, 3).unwrap(), b"bye", "the message itself was delivered");
    }
}

/// RFC 7306 requests from the peer are checked like Reads: rights, then alignment.
#[test]
fn bad_atomic_requests_terminate() {
    // Misaligned: a catastrophic error localized to the stream (RFC 7306 §8.2).
    let mut v = Victim::build(RECVS, 8, true);
    let word = v.mr(64, all_access());
    word.write(8, &5u64.to_ne_bytes()).unwrap();
    let h = hdr(SegmentHeader::untagged(Opcode::AtomicRequest, true, Msn(1), 0));
    let mut full = h.clone();
    full.extend_from_slice(&AtomicRequest::fetch_add(7, word.stag(), TaggedOffset(word.addr() + 12), 1).to_bytes());
    let fpdu = v.raw.raw_fpdu(&full, &[]);
    let cause = TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 70)), None), None);
    assert_eq!(word.to_vec(8, 8).unwrap(), 5u64.to_ne_bytes(), "not modified");
    // No remote-atomic right: remote protection, DDP header copied (no Read header to copy).
    let mut v = Victim::build(RECVS, 8, true);
    let word = v.mr(64, Access::REMOTE_READ | Access::REMOTE_WRITE | Access::LOCAL_WRITE);
    let mut full = h.clone();
    full.extend_from_slice(&AtomicRequest::compare_swap(8, word.stag(), TaggedOffset(word.addr()), 0, 1).to_bytes());
    let fpdu = v.raw.raw_fpdu(&full, &[]);
    let cause = TerminateCause::RemoteProtection(RemoteProtection::AccessRights);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 70)), None), None);
    assert_eq!(word.to_vec(0, 8).unwrap(), [0; 8], "not modified");
    // RFC 7306 not negotiated (the raw peer did not offer it): an unexpected opcode.
    let mut v = Victim::build(RECVS, 8, false);
    let h = hdr(SegmentHeader::untagged(Opcode::ImmediateData, true, Msn(1), 0));
    let fpdu = v.raw.raw_fpdu(&h, &42u64.to_be_bytes());
    let cause = TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode);
    v.expect_terminate(&fpdu, cause, &body(cause, Some((&h, 26)), None), None);
}

/// Well-formed requests from the raw peer get well-formed answers: an Atomic Response on queue
/// 3 echoing the request identifier with the original value; zero-length tagged segments and
/// zero-length Reads whose STags are not checked (RFC 5041 §7.2, RFC 5040 §5.2).
#[test]
fn raw_peer_requests_get_exact_answers_and_zero_length_stags_are_not_checked() {
    let mut v = Victim::build(RECVS, 8, true);
    let word = v.mr(64, all_access());
    word.write(16, &40u64.to_ne_bytes()).unwrap();
    let mut bytes = Vec::new();
    // A zero-length Write and a zero-length Read with STags nobody registered.
    bytes.extend(v.raw.fpdu(
        SegmentHeader::tagged(Opcode::Write, true, Stag(0xdead_be00), TaggedOffset(u64::MAX)),
        &[],
        &[],
    ));
    let rr = ReadRequest {
        sink_stag: Stag(0x1234_5601),
        sink_to: TaggedOffset(0x77),
        size: 0,
        src_stag: Stag(0xdead_be00),
        src_to: TaggedOffset(9),
    };
    bytes.extend(v.raw.fpdu(SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), &rr.to_bytes(), &[]));
    let fa = AtomicRequest::fetch_add(0xabcd, word.stag(), TaggedOffset(word.addr() + 16), 2);
    bytes.extend(v.raw.fpdu(SegmentHeader::untagged(Opcode::AtomicRequest, true, Msn(2), 0), &fa.to_bytes(), &[]));
    bytes.extend(v.raw.fpdu(
        SegmentHeader::untagged(Opcode::ImmediateDataSe, true, Msn(1), 0),
        &[],
        &0x55u64.to_be_bytes(),
    ));
    v.raw.send(&bytes);
    let (f, _) = v.raw.read_fpdus(WAIT, |f| f.seg.opcode == Opcode::AtomicResponse);
    let f: Vec<&RxFpdu> = f.iter().filter(|f| f.seg.opcode != Opcode::Send).collect();
    assert_eq!(f.len(), 2, "{f:?}");
    // The zero-length Read Response goes to the sink the request named.
    assert_eq!(f[0].seg, SegmentHeader::tagged(Opcode::ReadResponse, true, Stag(0x1234_5601), TaggedOffset(0x77)));
    assert!(f[0].payload.is_empty());
    assert_eq!(f[1].seg.placement, Placement::Untagged { qn: QueueNumber(3), msn: Msn(1), mo: 0 });
    assert_eq!(AtomicResponse::parse(&f[1].payload).unwrap(), AtomicResponse { request_id: 0xabcd, original: 40 });
    assert_eq!(word.to_vec(16, 8).unwrap(), 42u64.to_ne_bytes());
    let r = v.qp.recv_wcs(1);
    assert_eq!(
        (r[0].wr_id, r[0].opcode, r[0].imm_data, r[0].solicited),
        (100, WcOpcode::RecvImmediate, Some(0x55), true)
    );
    assert!(next_non_established(&v.qp.qp, Duration::from_millis(50)).is_none(), "no error");
    assert_eq!(v.qp.qp.state(), QpState::Rts);
    // The held Sends went out once the raw peer had spoken.
    assert_ok(&v.qp.send_wcs(SENDS as usize));
}

/// Read Responses are checked against the Read they answer (siw does the same): another STag,
/// another TO, fewer bytes than asked for, or more (RFC 5040 §5.2) terminate the connection. A
/// longer one is refused on its header: nothing of it is placed, past the sink least of all.
#[test]
fn read_responses_that_do_not_match_the_read_terminate() {
    for case in 0..4 {
        let dev = device();
        let pd = dev.alloc_pd();
        let l = TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(8, 8)));
        let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
        end.qp.connect(addr, &ConnParams::default()).unwrap();
        let mut raw = raw.join().unwrap();
        let sink = pd.reg_mr(4096, all_access()).unwrap();
        end.qp.post_send(&[SendWr::read(1, sink.sge(64, 100), RemoteAddr::unbounded(Stag(0x5500), 0))]).unwrap();
        let (f, _) = raw.read_fpdus(WAIT, |_| true);
        let rr = ReadRequest::parse(&f[0].payload).unwrap();
        assert_eq!((rr.sink_stag, rr.sink_to.0, rr.size), (sink.stag(), sink.addr() + 64, 100));
        let (stag, to, len, cause) = match case {
            0 => (Stag(rr.sink_stag.0 ^ 0x100), rr.sink_to.0, 100, TaggedBuffer::InvalidStag),
            1 => (rr.sink_stag, rr.sink_to.0 + 4, 100, TaggedBuffer::BaseOrBounds),
            2 => (rr.sink_stag, rr.sink_to.0, 99, TaggedBuffer::BaseOrBounds),
            _ => (rr.sink_stag, rr.sink_to.0, 200, TaggedBuffer::BaseOrBounds),
        };
        let h = hdr(SegmentHeader::tagged(Opcode::ReadResponse, true, stag, TaggedOffset(to)));
        let fpdu = raw.raw_fpdu(&h, &vec![9; len]);
        raw.send(&fpdu);
        let (f, eof) = raw.read_until_eof(WAIT);
        assert!(eof);
        let cause = TerminateCause::TaggedBuffer(cause);
        assert_eq!(f.len(), 1, "{f:?}");
        check_terminate_fpdu(&f[0], cause, &body(cause, Some((&h, 14 + len as u16)), None));
        let s = end.send_wcs(1);
        assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::WrFlush), "case {case}");
        let e = wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
        assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, .. } if c == cause));
        if case == 3 {
            assert_eq!(sink.to_vec(0, 4096).unwrap(), [0; 4096], "the sink (64..164) and what follows it");
        }
    }
}

/// Between two stacks: a Read of an STag the peer does not have, and a Send the peer has no
/// receive for, end the connection with the peer's Terminate, seen on both sides.
#[test]
fn stack_to_stack_protocol_errors_are_reported_on_both_sides() {
    let p = Pair::new();
    let sink = p.mr(4096, all_access());
    let bogus = RemoteAddr::unbounded(Stag::from_parts(sink.stag().index(), sink.stag().key() ^ 9), sink.addr());
    p.client.qp.post_send(&[SendWr::read(1, sink.sge(0, 64), bogus), SendWr::send(2, &[])]).unwrap();
    let cause = TerminateCause::RemoteProtection(RemoteProtection::InvalidStag);
    let s = p.client.send_wcs(2);
    assert_eq!((s[0].wr_id, s[0].status, s[0].cause), (1, WcStatus::RemoteAccess, Some(cause)));
    assert_eq!(s[1].wr_id, 2);
    let e = wait_event(&p.client.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(
        matches!(e, QpEvent::Error { cause: Some(c), remote: true, layout: Some(TerminateLayout::Rfc5040) } if c == cause)
    );
    let e = wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, layout: None } if c == cause));
    // The completion shows its status and the cause it carries; each queue pair keeps its own.
    assert_eq!(
        s[0].to_string(),
        "work request 1 (RDMA read): remote access error: terminated: RDMAP remote protection: invalid STag (layer 0, etype 1, code 0x00)"
    );
    assert_eq!(p.client.qp.terminated(), Some(Terminated { cause, remote: true }));
    assert_eq!(p.server.qp.terminated(), Some(Terminated { cause, remote: false }));
    assert_eq!(WcStatus::RemoteAccess.to_string(), "remote access error");

    // Without the receive wait (with it, the same follows after the wait: `recv_wait.rs`).
    let server = ConnParams { recv_wait: None, ..ConnParams::default() };
    let p = Pair::with(PairConfig { server, ..PairConfig::default() });
    let src = p.mr(64, all_access());
    p.client.qp.post_send(&[SendWr::send(1, &[src.sge(0, 8)])]).unwrap();
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer);
    let e = wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, .. } if c == cause));
    let e = wait_event(&p.client.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: true, .. } if c == cause));
    // The Send had been handed to TCP: a successful completion (RFC 5040 §5.3).
    let s = p.client.send_wcs(1);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::Success));
    for qp in [&p.client.qp, &p.server.qp] {
        wait_event(qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
        assert!(matches!(
            qp.post_send(&[SendWr::send(3, &[])]).map_err(|e| e.reason),
            Err(PostReason::InvalidState(QpState::Error))
        ));
    }
}

/// A later segment of a multi-segment Write that does not continue where the previous one
/// ended is a bounds error naming that segment; the segment before it was placed.
#[test]
fn a_write_segment_out_of_sequence_terminates_after_the_good_ones() {
    let mut v = Victim::new(RECVS, 8);
    let mr = v.mr(64 << 10, all_access());
    let first = pattern(8000, 1);
    let mut bytes =
        v.raw.fpdu(SegmentHeader::tagged(Opcode::Write, false, mr.stag(), TaggedOffset(mr.addr())), &[], &first);
    // The second segment skips ahead by 8 bytes.
    let h = hdr(SegmentHeader::tagged(Opcode::Write, true, mr.stag(), TaggedOffset(mr.addr() + 8008)));
    bytes.extend(v.raw.raw_fpdu(&h, &[5; 4000]));
    let cause = TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds);
    v.expect_terminate(&bytes, cause, &body(cause, Some((&h, 4014)), None), None);
    assert_mr_eq(&mr, 0, &first, "the first segment");
    assert_eq!(mr.to_vec(8000, 8008).unwrap(), vec![0; 8008], "nothing of the second");
}

/// The peer's stream ending inside an FPDU is a transport error (no Terminate cause); ending
/// between FPDUs is a clean close. Both flush everything and report `Disconnected`.
#[test]
fn end_of_stream_inside_or_between_fpdus() {
    for inside in [true, false] {
        let mut v = Victim::new(RECVS, 8);
        let mut s = v.raw.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], b"complete");
        if inside {
            let half = v.raw.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(2), 0), &[], b"cut short");
            s.extend_from_slice(&half[..half.len() / 2]);
        }
        v.raw.send(&s);
        v.raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let r = v.qp.recv_wcs(RECVS as usize);
        assert_eq!((r[0].wr_id, r[0].status, r[0].byte_len), (100, WcStatus::Success, 8));
        assert!(r[1..].iter().all(|c| c.status == WcStatus::WrFlush), "{r:?}");
        let e = next_non_established(&v.qp.qp, WAIT).expect("an event");
        if inside {
            assert!(matches!(e, QpEvent::Error { cause: None, remote: false, layout: None }), "{e:?}");
            wait_event(&v.qp.qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
        } else {
            assert!(matches!(e, QpEvent::Disconnected), "{e:?}");
        }
        // The held Sends had been released by the first FPDU; what the stack sent is readable.
        let s = v.qp.send_wcs(SENDS as usize);
        assert!(s.iter().all(|c| matches!(c.status, WcStatus::Success | WcStatus::WrFlush)), "{s:?}");
        let (_, eof) = v.raw.read_until_eof(WAIT);
        assert!(eof);
        v.check_good_pair();
    }
}

/// With markers in both directions and CRC off, a Terminate is framed like any FPDU: markers
/// where RFC 5044 §4.3 puts them (the raw peer's deframer checks), a zero CRC field.
#[test]
fn terminate_is_framed_with_markers_and_without_crc_when_negotiated() {
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let mut req = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(8, 8), b"");
    req.markers = true;
    req.crc = false;
    let mut raw = RawPeer::connect_frame(listener.local_addr(), &req);
    let params =
        ConnParams { mpa: MpaOptions { markers: true, crc: false, ..MpaOptions::default() }, ..ConnParams::default() };
    listener.get_request(Some(WAIT)).unwrap().accept(&end.qp, &params).unwrap();
    let (crc, _, markers) = raw.read_reply();
    assert!(!crc && markers);
    let mr = pd.reg_mr(64 << 10, all_access()).unwrap();
    // A good 3000-byte Write (crossing several markers), then one past the end.
    let mut bytes = raw.fpdu(write_hdr(mr.stag(), mr.addr()), &[], &pattern(3000, 5));
    let h = hdr(write_hdr(mr.stag(), mr.addr() + (64 << 10) - 10));
    bytes.extend(raw.raw_fpdu(&h, &[1; 700]));
    raw.send(&bytes);
    let (f, eof) = raw.read_until_eof(WAIT);
    assert!(eof);
    assert_eq!(f.len(), 1, "{f:?}");
    let cause = TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds);
    check_terminate_fpdu(&f[0], cause, &body(cause, Some((&h, 714)), None));
    assert_eq!(f[0].crc, 0, "CRC off: zero field");
    assert_mr_eq(&mr, 0, &pattern(3000, 5), "the good Write, through markers");
    let e = wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, .. } if c == cause));
}
