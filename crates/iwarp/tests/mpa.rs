//! MPA options end to end: revision 1 and 2, CRC on and off (and what that means on the wire),
//! markers in either or both directions (checked by an independent deframer), and each
//! RFC 6581 RTR type in peer-to-peer mode, with the exact RTR FPDUs and the passive side's
//! Established arriving only after the RTR.
mod common;

use common::*;
use iwarp::*;
use iwarp_wire::mpa::rr::{FrameKind, FrameRepr};
use iwarp_wire::mpa::EnhancedParams;
use iwarp_wire::terminate::{Mpa, TerminateMessage};
use iwarp_wire::{Msn, Opcode, Placement, QueueNumber, SegmentHeader, Stag, TaggedOffset};
use std::net::TcpListener;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// Send, Write and Read of `sizes` in both directions, verified.
fn exercise(p: &Pair, sizes: &[usize]) {
    let max = *sizes.iter().max().unwrap();
    let a = p.mr(max, all_access());
    let b = p.mr(max, all_access());
    let c = p.mr(max, all_access());
    let d = p.mr(max, all_access());
    for (i, &n) in sizes.iter().enumerate() {
        let seed = 10 * i as u32;
        send_and_verify(&p.client, &p.server, &a, &b, n, seed);
        write_and_verify(&p.client, &p.server, &a, &b, n, seed + 1);
        read_and_verify(&p.client, &c, &d, n, seed + 2);
        send_and_verify(&p.server, &p.client, &b, &a, n, seed + 3);
        write_and_verify(&p.server, &p.client, &d, &c, n, seed + 4);
        read_and_verify(&p.server, &b, &a, n, seed + 5);
    }
}

#[test]
fn revision_1_connections_carry_every_operation() {
    let mut cfg = PairConfig::default();
    cfg.client.mpa.revision = 1;
    cfg.client.responder_resources = 4;
    cfg.client.initiator_depth = 8;
    let p = Pair::with(cfg);
    let ci = p.client.qp.conn_info().unwrap();
    let si = p.server.qp.conn_info().unwrap();
    assert_eq!((ci.revision, si.revision), (1, 1));
    // No RFC 6581 exchange: the initiator keeps its values, the responder serves Reads up to
    // the device maximum.
    assert_eq!((ci.ird, ci.ord), (4, 8));
    assert_eq!(si.ird, 128);
    assert!(ci.crc && si.crc);
    exercise(&p, &[0, 1, 4099, 70_001, MIB + 3]);
}

#[test]
fn crc_is_off_only_when_both_sides_decline_it() {
    for (c, s) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut cfg = PairConfig::default();
        cfg.client.mpa.crc = c;
        cfg.server.mpa.crc = s;
        let p = Pair::with(cfg);
        let (ci, si) = (p.client.qp.conn_info().unwrap(), p.server.qp.conn_info().unwrap());
        assert_eq!((ci.crc, si.crc), (c || s, c || s), "client {c}, server {s}");
        exercise(&p, &[1, 7, 100_003]);
    }
}

/// With CRC off the field is sent as zero and not checked; with it on, it is the CRC32c.
#[test]
fn crc_field_on_the_wire_follows_the_negotiation() {
    for (ours, theirs) in [(false, false), (false, true), (true, false)] {
        let dev = device();
        let pd = dev.alloc_pd();
        let l = TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let raw = std::thread::spawn(move || {
            RawPeer::accept_with(&l, |_| {
                let mut r = FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(8, 8), b"");
                r.crc = theirs;
                r
            })
        });
        let end = End::new(&dev, &pd, PairConfig::default().cap, Progress::Thread);
        let params = ConnParams { mpa: MpaOptions { crc: ours, ..MpaOptions::default() }, ..ConnParams::default() };
        end.qp.connect(addr, &params).unwrap();
        let mut raw = raw.join().unwrap();
        let on = ours || theirs;
        assert_eq!(end.qp.conn_info().unwrap().crc, on);
        let src = pd.reg_mr(64, all_access()).unwrap();
        let rb = pd.reg_mr(64, all_access()).unwrap();
        src.write(0, b"hello").unwrap();
        post_recv(&end.qp, 1, &rb, 0, 64);
        end.qp.post_send(&[SendWr::send(1, &[src.sge(0, 5)])]).unwrap();
        let (f, _) = raw.read_fpdus(WAIT, |_| true);
        assert_eq!((f[0].seg.opcode, f[0].payload.as_slice()), (Opcode::Send, &b"hello"[..]));
        if on {
            // protocol-notes §1.7: Send "hello", MSN 1 → CRC 0x0CB190B9, least significant byte first.
            assert_eq!(iwarp_wire::crc::to_wire(f[0].crc), [0xb9, 0x90, 0xb1, 0x0c]);
        } else {
            assert_eq!(f[0].crc, 0, "CRC off: the field is sent as zero");
        }
        // A corrupted CRC field is ignored when CRC is off (and only then).
        let mut fpdu = raw.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], b"world");
        let n = fpdu.len();
        fpdu[n - 4..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        raw.send(&fpdu);
        if on {
            let e = wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
            assert!(matches!(e, QpEvent::Error { cause: Some(TerminateCause::Mpa(Mpa::Crc)), remote: false, .. }));
        } else {
            let r = wait_wcs(&end.rcq, 1, WAIT);
            assert_eq!((r[0].status, r[0].byte_len), (WcStatus::Success, 5));
            assert_eq!(rb.to_vec(0, 5).unwrap(), b"world");
        }
        assert_ok(&end.send_wcs(1));
    }
}

#[test]
fn markers_in_either_or_both_directions_keep_data_intact() {
    for (cm, sm) in [(true, false), (false, true), (true, true)] {
        let mut cfg = PairConfig::default();
        cfg.client.mpa.markers = cm;
        cfg.server.mpa.markers = sm;
        let p = Pair::with(cfg);
        let (ci, si) = (p.client.qp.conn_info().unwrap(), p.server.qp.conn_info().unwrap());
        // M asks the peer to insert markers toward the asker.
        assert_eq!((ci.recv_markers, ci.send_markers), (cm, sm), "client, markers {cm}/{sm}");
        assert_eq!((si.recv_markers, si.send_markers), (sm, cm), "server, markers {cm}/{sm}");
        // Sizes that cross many 512-byte marker positions, and odd ones that shift the phase.
        exercise(&p, &[1, 509, 512, 513, 4099, 65_543, MIB + 3]);
    }
}

/// The markers our stack inserts are where RFC 5044 §4.3 puts them (an independent deframer
/// checks every position and FPDU pointer), and the markers a peer inserts are removed.
#[test]
fn markers_on_the_wire_are_placed_and_removed_per_rfc5044() {
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let addr = listener.local_addr();
    let server = End::new(&dev, &pd, PairConfig::default().cap, Progress::Thread);
    let rb = pd.reg_mr(MIB, all_access()).unwrap();
    post_recv(&server.qp, 1, &rb, 0, MIB);
    let mut req = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(8, 8), b"");
    req.markers = true;
    let mut raw = RawPeer::connect_frame(addr, &req);
    let r = listener.get_request(Some(WAIT)).unwrap();
    assert!(r.markers());
    // The server asks for markers too.
    let params = ConnParams { mpa: MpaOptions { markers: true, ..MpaOptions::default() }, ..ConnParams::default() };
    r.accept(&server.qp, &params).unwrap();
    let (_, _, m) = raw.read_reply();
    assert!(m, "the Reply asks for markers");
    let si = server.qp.conn_info().unwrap();
    assert!(si.send_markers && si.recv_markers);
    // Raw → stack: a Send of 300 001 bytes in FPDUs with markers every 512 bytes.
    let data = pattern(300_001, 3);
    let mut bytes = Vec::new();
    let mut mo = 0;
    for chunk in data.chunks(1400) {
        let last = mo + chunk.len() == data.len();
        bytes.extend(raw.fpdu(SegmentHeader::untagged(Opcode::Send, last, Msn(1), mo as u32), &[], chunk));
        mo += chunk.len();
    }
    raw.send(&bytes);
    let r = server.recv_wcs(1);
    assert_eq!((r[0].status, r[0].byte_len as usize), (WcStatus::Success, data.len()));
    assert_mr_eq(&rb, 0, &data, "Send with markers");
    // Stack → raw: Sends and Writes of sizes that leave markers at every phase.
    let src = pd.reg_mr(MIB, all_access()).unwrap();
    let target = fill(&src, 0, MIB, 4);
    let sizes = [1usize, 2, 3, 509, 510, 511, 512, 513, 70_001, MIB];
    let wrs: Vec<SendWr<'_>> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| {
            [
                SendWr::send(2 * i as u64, &[src.sge(0, n)]),
                SendWr::write(2 * i as u64 + 1, &[src.sge(0, n)], RemoteAddr::unbounded(Stag(0x100), 0)),
            ]
        })
        .collect();
    server.qp.post_send(&wrs).unwrap();
    let want = 2 * sizes.len();
    let mut got: Vec<RxFpdu> = Vec::new();
    let mut messages = 0;
    while messages < want {
        let (f, eof) = raw.read_fpdus(WAIT, |f| f.seg.last);
        assert!(!eof && !f.is_empty(), "stream ended early");
        messages += 1;
        got.extend(f);
    }
    // Reassemble each message and compare.
    let mut at = 0;
    for &n in &sizes {
        for op in [Opcode::Send, Opcode::Write] {
            let mut msg = Vec::new();
            loop {
                let f = &got[at];
                at += 1;
                assert_eq!(f.seg.opcode, op);
                msg.extend_from_slice(&f.payload);
                if f.seg.last {
                    break;
                }
            }
            assert!(msg == target[..n], "{op:?} of {n} bytes through markers");
        }
    }
    assert_ok(&server.send_wcs(want));
}

fn p2p(t: RtrType) -> MpaOptions {
    MpaOptions { peer_to_peer: Some(RtrTypes::only(t)), ..MpaOptions::default() }
}

#[test]
fn each_rtr_type_establishes_and_consumes_no_user_receive() {
    // Each type plain, then with markers both ways and CRC off (the RTR is the first FPDU
    // after the leading marker).
    let plain = [RtrType::Write, RtrType::Read, RtrType::Send].map(|t| (t, false));
    let marked = [RtrType::Write, RtrType::Read, RtrType::Send].map(|t| (t, true));
    for (t, markers) in plain.into_iter().chain(marked) {
        let dev = device();
        let pd = dev.alloc_pd();
        let rb = pd.reg_mr(64, all_access()).unwrap();
        let mut cfg = PairConfig::default();
        cfg.client.mpa = MpaOptions { markers, crc: !markers, ..p2p(t) };
        // FPDUs are counted exactly: no zero-length Write to wake a silent responder.
        cfg.client.wake_silent_responder = false;
        cfg.server.mpa = MpaOptions { markers, crc: !markers, ..MpaOptions::default() };
        cfg.listener_mpa = Some(p2p(t));
        let p = Pair::try_on_with(&dev, &pd, cfg, |_, server| post_recv(&server.qp, 77, &rb, 0, 64)).unwrap();
        let ci = p.client.qp.conn_info().unwrap();
        assert_eq!((ci.crc, ci.send_markers, ci.recv_markers), (!markers, markers, markers));
        // The server received exactly the RTR; it answered only a Read RTR.
        let (ss, cs) = (p.server.qp.stats(), p.client.qp.stats());
        assert_eq!(ss.rx_fpdus, 1, "{t:?}");
        assert_eq!(ss.tx_fpdus, u64::from(t == RtrType::Read), "{t:?}");
        assert_eq!(cs.tx_fpdus, 1, "{t:?}");
        assert_no_wc(&p.server.rcq, Duration::from_millis(50));
        // The posted receive is still there for the first real Send.
        let src = p.mr(64, all_access());
        src.write(0, b"after the RTR").unwrap();
        p.client.qp.post_send(&[SendWr::send(1, &[src.sge(0, 13)])]).unwrap();
        assert_ok(&p.client.send_wcs(1));
        let r = p.server.recv_wcs(1);
        assert_eq!((r[0].wr_id, r[0].status, r[0].byte_len), (77, WcStatus::Success, 13), "{t:?}");
        assert_eq!(rb.to_vec(0, 13).unwrap(), b"after the RTR");
        // Both directions and Reads work afterwards (the Read RTR freed its ORD slot).
        let a = p.mr(100_000, all_access());
        let b = p.mr(100_000, all_access());
        read_and_verify(&p.client, &a, &b, 100_000, 1);
        write_and_verify(&p.server, &p.client, &b, &a, 100_000, 2);
    }
}

/// The responder picks among what the initiator offers (Write first), and chooses one of its
/// own when nothing offered is acceptable; with no common type the initiator fails the connect
/// with MPA error 7 (RFC 6581 §9.3).
#[test]
fn rtr_negotiation_picks_a_common_type_or_fails_with_code_7() {
    for (offer, accept, ok) in [
        (RtrTypes::ALL, RtrTypes::only(RtrType::Read), true),
        (RtrTypes::ALL, RtrTypes::only(RtrType::Send), true),
        (RtrTypes { send: true, write: false, read: true }, RtrTypes::ALL, true),
        (RtrTypes::only(RtrType::Send), RtrTypes::only(RtrType::Write), false),
    ] {
        let mut cfg = PairConfig::default();
        cfg.client.mpa.peer_to_peer = Some(offer);
        cfg.server.mpa.peer_to_peer = Some(accept);
        let dev = device();
        let pd = dev.alloc_pd();
        let r = Pair::try_on(&dev, &pd, cfg);
        match r {
            Ok(p) => {
                assert!(ok, "{offer:?} / {accept:?}");
                let a = p.mr(4096, all_access());
                let b = p.mr(4096, all_access());
                send_and_verify(&p.client, &p.server, &a, &b, 4096, 1);
                send_and_verify(&p.server, &p.client, &b, &a, 4096, 2);
            }
            Err(ConnectError::Mpa(CmError::NoMatchingRtr { terminate })) => {
                assert!(!ok, "{offer:?} / {accept:?}");
                // The Terminate FPDU the initiator sends: LLP, MPA, code 7, no headers.
                assert_eq!(&terminate[..4], &[0x00, 0x16, 0x41, 0x47]);
                assert_eq!(&terminate[20..24], &[0x20, 0x07, 0x00, 0x00]);
            }
            Err(e) => panic!("{offer:?} / {accept:?}: {e}"),
        }
    }
}

/// Our initiator's RTR FPDUs, byte for byte (protocol-notes §1.3), and what follows them.
#[test]
fn initiator_sends_exactly_one_rtr_of_the_replied_type() {
    for t in [RtrType::Write, RtrType::Read, RtrType::Send] {
        let dev = device();
        let pd = dev.alloc_pd();
        let l = TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let raw = std::thread::spawn(move || {
            let params = EnhancedParams { peer_to_peer: true, ird: 4, ord: 4, rtr: RtrTypes::only(t) };
            RawPeer::accept_on(&l, params)
        });
        let end = End::new(&dev, &pd, PairConfig::default().cap, Progress::Thread);
        let mut params = ConnParams::default();
        params.mpa.peer_to_peer = Some(RtrTypes::ALL);
        end.qp.connect(addr, &params).unwrap();
        let mut raw = raw.join().unwrap();
        let req = raw.request().enhanced.expect("enhanced request");
        assert!(req.peer_to_peer && req.rtr == RtrTypes::ALL, "{req:?}");
        let src = pd.reg_mr(64, all_access()).unwrap();
        end.qp.post_send(&[SendWr::send(1, &[src.sge(0, 3)])]).unwrap();
        let (f, _) = raw.read_fpdus(WAIT, |f| f.seg.opcode == Opcode::Send && f.payload.len() == 3);
        let rtr = &f[0];
        let wire_crc = iwarp_wire::crc::to_wire(rtr.crc);
        match t {
            RtrType::Write => {
                assert_eq!(rtr.ulpdu_len, 14);
                assert_eq!(rtr.ddp_header, [0xc1, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
                assert_eq!(wire_crc, [0xeb, 0xd3, 0x4c, 0x5f]);
            }
            RtrType::Read => {
                assert_eq!(rtr.ulpdu_len, 46);
                assert_eq!(rtr.ddp_header, [0x41, 0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
                let mut body = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                body.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
                assert_eq!(rtr.payload, body);
                assert_eq!(wire_crc, [0x27, 0xdb, 0xd7, 0xe7]);
            }
            RtrType::Send => {
                assert_eq!(rtr.ulpdu_len, 18);
                assert_eq!(rtr.ddp_header, [0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
                assert_eq!(wire_crc, [0x58, 0x7b, 0xe8, 0xc4]);
            }
        }
        // Exactly one RTR, then the user's Send (after a Send RTR, with MSN 2).
        assert_eq!(f.len(), 2, "{f:?}");
        let msn = if t == RtrType::Send { 2 } else { 1 };
        assert_eq!(f[1].seg.placement, Placement::Untagged { qn: QueueNumber(0), msn: Msn(msn), mo: 0 });
        assert_ok(&end.send_wcs(1));
    }
}

/// Our responder reports Established only once the RTR arrives, sends nothing before it, and
/// answers a Read RTR with a zero-length Read Response; a wrong first FPDU is terminated with
/// MPA code 7.
#[test]
fn responder_is_established_only_after_the_rtr() {
    for (t, sent) in [
        (RtrType::Write, RtrType::Write),
        (RtrType::Read, RtrType::Read),
        (RtrType::Send, RtrType::Send),
        (RtrType::Write, RtrType::Send),
    ] {
        let dev = device();
        let pd = dev.alloc_pd();
        let listener = dev.listen(any_port(), 4).unwrap();
        listener.set_mpa_options(p2p(t));
        let server = End::new(&dev, &pd, PairConfig::default().cap, Progress::Thread);
        let rb = pd.reg_mr(64, all_access()).unwrap();
        post_recv(&server.qp, 5, &rb, 0, 64);
        let params = EnhancedParams { peer_to_peer: true, ird: 4, ord: 4, rtr: RtrTypes::ALL };
        let mut raw = RawPeer::connect_request(listener.local_addr(), params);
        let req = listener.get_request(Some(WAIT)).unwrap();
        assert_eq!(req.peer_to_peer(), Some(RtrTypes::ALL));
        req.accept(&server.qp, &ConnParams::default()).unwrap();
        let (_, enh, _) = raw.read_reply();
        let enh = enh.expect("enhanced reply");
        assert!(enh.peer_to_peer, "the responder echoes A");
        assert_eq!(enh.rtr, RtrTypes::only(t), "the responder accepts only {t:?}");
        // Not established, and silent, until the RTR.
        assert!(server.qp.next_event(Duration::from_millis(300)).is_none(), "Established before the RTR");
        assert!(server.qp.wait_established(Duration::from_millis(10)).is_err());
        let (early, _) = raw.read_fpdus(Duration::from_millis(100), |_| true);
        assert!(early.is_empty(), "the responder sent before the RTR: {early:?}");
        let rtr = match sent {
            RtrType::Write => raw.fpdu(SegmentHeader::tagged(Opcode::Write, true, Stag(1), TaggedOffset(0)), &[], &[]),
            RtrType::Send => raw.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], &[]),
            RtrType::Read => {
                let rr = iwarp_wire::rdmap::ReadRequest {
                    sink_stag: Stag(1),
                    sink_to: TaggedOffset(0),
                    size: 0,
                    src_stag: Stag(1),
                    src_to: TaggedOffset(0),
                };
                raw.fpdu(SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), &rr.to_bytes(), &[])
            }
        };
        raw.send(&rtr);
        if t != sent {
            // RFC 6581 §9.3: no matching RTR ⇒ Terminate LLP / MPA / code 7, no headers.
            let e = wait_event(&server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
            assert!(matches!(
                e,
                QpEvent::Error { cause: Some(TerminateCause::Mpa(Mpa::NoMatchingRtr)), remote: false, .. }
            ));
            let (f, eof) = raw.read_until_eof(WAIT);
            assert!(eof);
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].seg.opcode, Opcode::Terminate);
            assert_eq!(f[0].payload, [0x20, 0x07, 0x00, 0x00]);
            let m = TerminateMessage::parse(&f[0].payload).unwrap();
            assert_eq!(m.rfc.cause, TerminateCause::Mpa(Mpa::NoMatchingRtr));
            continue;
        }
        assert!(matches!(server.qp.next_event(WAIT), Some(QpEvent::Established)));
        server.qp.wait_established(WAIT).unwrap();
        if t == RtrType::Read {
            // A zero-length Read Response to the RTR's sink STag 1, TO 0.
            let (f, _) = raw.read_fpdus(WAIT, |_| true);
            assert_eq!(f[0].ulpdu_len, 14);
            assert_eq!(f[0].ddp_header, [0xc1, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(iwarp_wire::crc::to_wire(f[0].crc), [0x21, 0xa3, 0xe8, 0x3e]);
        }
        // The posted receive takes the first real Send (MSN 2 after a Send RTR).
        let msn = if t == RtrType::Send { 2 } else { 1 };
        let send = raw.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(msn), 0), &[], b"data");
        raw.send(&send);
        let r = server.recv_wcs(1);
        assert_eq!((r[0].wr_id, r[0].status, r[0].byte_len), (5, WcStatus::Success, 4), "{t:?}");
        assert_eq!(rb.to_vec(0, 4).unwrap(), b"data");
    }
}

/// Options set on the listener apply to the connections it accepts: `accept`'s own options can
/// only add to them (decline CRC, ask for markers, refuse RFC 7306, choose RTR types).
/// Regression: `accept` used to overwrite the listener's CRC, marker and RFC 7306 settings
/// with its parameters' values, so a listener's `crc: false` or `markers: true` never applied.
#[test]
fn listener_options_apply_unless_accept_adds_to_them() {
    for (listener, accept, crc, markers, rfc7306) in [
        (MpaOptions { crc: false, ..MpaOptions::default() }, MpaOptions::default(), false, false, true),
        (MpaOptions { markers: true, ..MpaOptions::default() }, MpaOptions::default(), true, true, true),
        (MpaOptions { rfc7306: false, ..MpaOptions::default() }, MpaOptions::default(), true, false, false),
        (
            MpaOptions::default(),
            MpaOptions { crc: false, markers: true, rfc7306: false, ..MpaOptions::default() },
            false,
            true,
            false,
        ),
        (MpaOptions::default(), MpaOptions::default(), true, false, true),
    ] {
        let mut cfg = PairConfig::default();
        cfg.client.mpa.crc = false;
        cfg.listener_mpa = Some(listener.clone());
        cfg.server.mpa = accept.clone();
        let p = Pair::with(cfg);
        let si = p.server.qp.conn_info().unwrap();
        assert_eq!((si.crc, si.recv_markers, si.rfc7306), (crc, markers, rfc7306), "{listener:?} / {accept:?}");
        assert_eq!(p.client.qp.conn_info().unwrap().send_markers, markers);
        exercise(&p, &[1, 4099, 70_001]);
    }
}

/// A busy-polled passive side has no event loop once accepted: `wait_established` itself must
/// read the RTR that completes a peer-to-peer accept.
#[test]
fn a_polled_passive_side_completes_a_peer_to_peer_accept() {
    for t in [RtrType::Write, RtrType::Read, RtrType::Send] {
        let mut cfg = PairConfig { server_progress: Some(Progress::Poll), ..PairConfig::default() };
        cfg.client.mpa.peer_to_peer = Some(RtrTypes::only(t));
        cfg.server.mpa.peer_to_peer = Some(RtrTypes::ALL);
        let p = Pair::with(cfg);
        // Sends both ways: the polled side makes progress while it waits for its completions.
        let a = p.mr(4096, all_access());
        let b = p.mr(4096, all_access());
        send_and_verify(&p.client, &p.server, &a, &b, 4096, 1);
        send_and_verify(&p.server, &p.client, &b, &a, 4096, 2);
    }
}

/// The FPDUs the raw responder receives in `window`, zero-length Writes (wake-ups) counted.
fn wake_ups_within(raw: &mut RawPeer, window: Duration) -> Vec<RxFpdu> {
    let (f, _) = raw.read_fpdus(window, |_| false);
    f.into_iter().filter(|f| f.seg.opcode == Opcode::Write && f.payload.is_empty()).collect()
}

/// Linux siw misses an FPDU that arrives between its MPA Reply and its socket hook-up
/// (docs/interop.md): an initiator follows its first FPDU with zero-length Writes (STag 1,
/// TO 0) at 50, 150, 350 ms... until the responder sends anything.
/// Connects a queue pair with `params` to a raw responder that never speaks, sends one 3-byte
/// Send and reads it at the raw side; returns the queue pair, the raw peer and when the Send
/// was posted.
fn send_to_a_silent_responder(dev: &Device, params: &ConnParams) -> (End, RawPeer, std::time::Instant) {
    let pd = dev.alloc_pd();
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(4, 4)));
    let end = End::new(dev, &pd, PairConfig::default().cap, Progress::Thread);
    end.qp.connect(addr, params).unwrap();
    let mut raw = raw.join().unwrap();
    let src = pd.reg_mr(64, all_access()).unwrap();
    let t0 = std::time::Instant::now();
    end.qp.post_send(&[SendWr::send(1, &[src.sge(0, 3)])]).unwrap();
    let (first, _) = raw.read_fpdus(WAIT, |f| f.seg.opcode == Opcode::Send);
    assert_eq!(first.iter().map(|f| f.payload.len()).collect::<Vec<_>>(), [3]);
    (end, raw, t0)
}

#[test]
fn a_silent_responder_gets_zero_length_writes_until_it_speaks() {
    let dev = device();
    let (end, mut raw, t0) = send_to_a_silent_responder(&dev, &ConnParams::default());
    // The Send's completion does not wait for the peer.
    assert_ok(&end.send_wcs(1));
    let woke = wake_ups_within(&mut raw, Duration::from_millis(250));
    assert_eq!(woke.len(), 2, "wake-ups at about 50 and 150 ms: {woke:?}");
    for w in &woke {
        assert_eq!(w.ddp_header, [0xc1, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], "tagged, last, STag 1, TO 0");
    }
    assert!(t0.elapsed() >= Duration::from_millis(150));
    // The responder speaks (a zero-length Write of its own): no more wake-ups.
    let speak = raw.fpdu(SegmentHeader::tagged(Opcode::Write, true, Stag(1), TaggedOffset(0)), &[], &[]);
    raw.send(&speak);
    assert!(wake_ups_within(&mut raw, Duration::from_millis(600)).is_empty());
    assert_eq!(end.qp.stats().wake_writes, 2);
    assert_eq!(end.qp.state(), QpState::Rts);
    assert_no_wc(&end.rcq, Duration::from_millis(10));
}

#[test]
fn wake_ups_can_be_turned_off() {
    let dev = device();
    let params = ConnParams { wake_silent_responder: false, ..ConnParams::default() };
    let (_end, mut raw, _) = send_to_a_silent_responder(&dev, &params);
    assert!(wake_ups_within(&mut raw, Duration::from_millis(300)).is_empty());
}
