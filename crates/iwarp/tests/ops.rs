//! Every operation through the public API over loopback TCP, with the bytes verified: Send (with
//! Solicited Event, with Invalidate), RDMA Write, RDMA Read, RFC 7306 atomics and Immediate
//! Data, Local Invalidate; sizes around the MSS and MULPDU boundaries up to 16 MiB; multi-SGE
//! gather/scatter; hundreds of outstanding work requests; unsignaled runs; inline data.
mod common;

use common::*;
use iwarp::*;
use iwarp_wire::terminate::TaggedBuffer;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// The sizes every operation is run with: the fixed edges, then edges relative to the
/// connection's current MSS and MULPDU (tagged room = MULPDU − 14, untagged = MULPDU − 18).
fn sizes(end: &End) -> Vec<usize> {
    let mss = end.qp.conn_info().expect("connected").mss;
    let mulpdu = end.mulpdu();
    let mut v = vec![0, 1, 7, 4099, 1453, 1454, 1455, 32762, 32763, 65474, 65475];
    for edge in [mss, mulpdu - 14, mulpdu - 18] {
        v.extend([edge - 1, edge, edge + 1]);
    }
    v.extend([MIB, 16 * MIB]);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn send_write_and_read_of_every_size_arrive_intact_both_ways() {
    let p = Pair::new();
    let c_src = p.mr(16 * MIB, all_access());
    let c_dst = p.mr(16 * MIB, all_access());
    let s_src = p.mr(16 * MIB, all_access());
    let s_dst = p.mr(16 * MIB, all_access());
    let start = Instant::now();
    for (i, size) in sizes(&p.client).into_iter().enumerate() {
        let seed = i as u32 * 8;
        send_and_verify(&p.client, &p.server, &c_src, &s_dst, size, seed);
        write_and_verify(&p.client, &p.server, &c_src, &s_dst, size, seed + 1);
        read_and_verify(&p.client, &c_dst, &s_src, size, seed + 2);
        // The passive side sends as much as the active one.
        send_and_verify(&p.server, &p.client, &s_src, &c_dst, size, seed + 3);
        write_and_verify(&p.server, &p.client, &s_src, &c_dst, size, seed + 4);
        read_and_verify(&p.server, &s_dst, &c_src, size, seed + 5);
    }
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
}

/// FPDU counts at the segmentation edges, once the MSS has settled: a message of exactly the
/// room one FPDU has takes one FPDU, one byte more takes two. With segment-sized FPDUs (as
/// towards siw or hardware), the room follows the MSS.
#[test]
fn messages_are_segmented_exactly_at_the_mulpdu() {
    segmented_at_the_mulpdu(false);
}

/// The same between two copies of this stack that agreed to FPDUs larger than the MSS: the
/// room is the most an FPDU can carry, whatever the MSS.
#[test]
fn agreed_large_fpdus_are_segmented_at_the_largest_ulpdu() {
    segmented_at_the_mulpdu(true);
}

fn segmented_at_the_mulpdu(large: bool) {
    let mpa = MpaOptions { large_fpdus: large, ..MpaOptions::default() };
    let p = Pair::with(PairConfig { client: ConnParams { mpa, ..ConnParams::default() }, ..PairConfig::default() });
    assert_eq!(p.client.qp.conn_info().unwrap().large_fpdus, large);
    let src = p.mr(4 * MIB, all_access());
    let dst = p.mr(4 * MIB, all_access());
    // Warm up until the MSS the engine uses stops changing (Linux grows it on loopback).
    let mut last = 0;
    for i in 0..8 {
        write_and_verify(&p.client, &p.server, &src, &dst, 2 * MIB, 100 + i);
        let mss = p.client.qp.conn_info().unwrap().mss;
        if mss == last {
            break;
        }
        last = mss;
    }
    let mulpdu = p.client.mulpdu();
    let want = if large { iwarp_wire::mpa::MAX_ULPDU } else { iwarp_wire::mpa::mulpdu(last, false) };
    assert_eq!(mulpdu, want);
    // The client's FPDUs during `f`, leaving out the zero-length Writes that wake a silent
    // responder (the server never sends here, so the client may nudge it in the meantime).
    let fpdus = |f: &dyn Fn()| {
        let count = || {
            let st = p.client.qp.stats();
            st.tx_fpdus - st.wake_writes
        };
        let before = count();
        f();
        count() - before
    };
    for (room, n) in [(mulpdu - 14, 1), (mulpdu - 14 + 1, 2), (2 * (mulpdu - 14), 2), (2 * (mulpdu - 14) + 1, 3)] {
        // The Write, then the zero-length Send that makes it visible.
        let k = fpdus(&|| write_and_verify(&p.client, &p.server, &src, &dst, room, room as u32));
        assert_eq!(k, n + 1, "Write of {room} bytes with MULPDU {mulpdu}");
    }
    for (room, n) in [(mulpdu - 18, 1), (mulpdu - 18 + 1, 2), (2 * (mulpdu - 18) + 1, 3)] {
        let k = fpdus(&|| send_and_verify(&p.client, &p.server, &src, &dst, room, room as u32));
        assert_eq!(k, n, "Send of {room} bytes with MULPDU {mulpdu}");
    }
    // A Read Request is one FPDU; the server frames the response.
    let before = p.server.qp.stats().tx_fpdus;
    read_and_verify(&p.client, &dst, &src, mulpdu - 14 + 1, 5);
    assert_eq!(p.server.qp.stats().tx_fpdus - before, 2, "Read Response of MULPDU−13 bytes");
    // Large payloads were read straight into their destination.
    assert!(p.server.qp.stats().rx_direct_bytes > MIB as u64);
}

/// Regression: a queue pair accepted from a listener kept its socket registered for
/// readability only, so a large transmit from the passive side stalled once the socket buffer
/// filled (RDMA Write, Send and Read Responses of several MiB never completed).
#[test]
fn passive_side_large_transmits_do_not_stall() {
    let p = Pair::new();
    let a = p.mr(16 * MIB, all_access());
    let b = p.mr(16 * MIB, all_access());
    // The responder may send once the initiator's first FPDU has arrived.
    send_and_verify(&p.client, &p.server, &a, &b, 1, 0);
    let t = Instant::now();
    write_and_verify(&p.server, &p.client, &b, &a, 16 * MIB, 1);
    send_and_verify(&p.server, &p.client, &b, &a, 8 * MIB, 2);
    read_and_verify(&p.client, &a, &b, 16 * MIB, 3);
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
}

#[test]
fn multi_sge_gathers_on_send_and_scatters_on_receive() {
    let p = Pair::new();
    let a = p.mr(200_000, all_access());
    let b = p.mr(100_000, all_access());
    let pa = fill(&a, 0, a.len(), 1);
    let pb = fill(&b, 0, b.len(), 2);
    // Gather: pieces of two regions at odd offsets, one empty, crossing FPDU boundaries.
    let sges = [a.sge(3, 40_001), b.sge(17, 5), a.sge(100_000, 0), b.sge(50_000, 30_007), a.sge(199_990, 10)];
    let mut expect = Vec::new();
    expect.extend_from_slice(&pa[3..40_004]);
    expect.extend_from_slice(&pb[17..22]);
    expect.extend_from_slice(&pb[50_000..80_007]);
    expect.extend_from_slice(&pa[199_990..200_000]);
    // Scatter: three receive elements of uneven sizes in two regions, room to spare.
    let r1 = p.mr(70_000, all_access());
    let r2 = p.mr(70_000, all_access());
    p.server.qp.post_recv(&[RecvWr::new(11, &[r1.sge(5, 1000), r2.sge(0, 33_333), r1.sge(2000, 60_000)])]).unwrap();
    p.client.qp.post_send(&[SendWr::send(1, &sges)]).unwrap();
    assert_ok(&p.client.send_wcs(1));
    let r = p.server.recv_wcs(1);
    assert_ok(&r);
    assert_eq!((r[0].wr_id, r[0].byte_len as usize), (11, expect.len()));
    let mut got = r1.to_vec(5, 1000).unwrap();
    got.extend(r2.to_vec(0, 33_333).unwrap());
    got.extend(r1.to_vec(2000, expect.len() - 1000 - 33_333).unwrap());
    assert!(got == expect, "scattered bytes differ");

    // Gather on an RDMA Write, made visible by a Send.
    let t = p.mr(100_000, all_access());
    post_recv(&p.server.qp, 12, &t, 0, 0);
    p.client.qp.post_send(&[SendWr::write(2, &sges, t.remote(100)), SendWr::send(3, &[b.sge(0, 0)])]).unwrap();
    assert_ok(&p.client.send_wcs(2));
    assert_ok(&p.server.recv_wcs(1));
    assert_mr_eq(&t, 100, &expect, "gathered RDMA Write");
    assert_eq!(t.to_vec(0, 100).unwrap(), vec![0; 100], "nothing before the target offset");
}

#[test]
fn solicited_event_flag_reaches_the_receiver() {
    let p = Pair::new();
    let src = p.mr(64, all_access());
    let dst = p.mr(256, all_access());
    fill(&src, 0, 64, 9);
    for i in 0..4 {
        post_recv(&p.server.qp, 20 + i, &dst, i as usize * 64, 64);
    }
    p.client
        .qp
        .post_send(&[
            SendWr::send(1, &[src.sge(0, 10)]),
            SendWr::send(2, &[src.sge(0, 11)]).solicited(),
            SendWr::send(3, &[]).solicited(),
            SendWr::send(4, &[src.sge(0, 64)]),
        ])
        .unwrap();
    let s = p.client.send_wcs(4);
    assert_ok(&s);
    assert_eq!(s.iter().map(|c| c.wr_id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let r = p.server.recv_wcs(4);
    assert_ok(&r);
    let got: Vec<(u64, u32, bool)> = r.iter().map(|c| (c.wr_id, c.byte_len, c.solicited)).collect();
    assert_eq!(got, [(20, 10, false), (21, 11, true), (22, 0, true), (23, 64, false)]);
}

#[test]
fn send_with_invalidate_reports_and_invalidates_the_stag() {
    let p = Pair::new();
    let src = p.mr(64, all_access());
    let dst = p.mr(64, all_access());
    // The regions the client will have the server invalidate.
    let victim = p.mr(4096, all_access());
    let victim2 = p.mr(4096, all_access());
    let data = fill(&src, 0, 48, 3);
    post_recv(&p.server.qp, 1, &dst, 0, 64);
    post_recv(&p.server.qp, 2, &dst, 0, 64);
    assert!(victim.is_valid() && victim2.is_valid());
    p.client
        .qp
        .post_send(&[
            SendWr::send_with_invalidate(5, &[src.sge(0, 48)], victim.stag()),
            SendWr::send_with_invalidate(6, &[], victim2.stag()).solicited(),
        ])
        .unwrap();
    assert_ok(&p.client.send_wcs(2));
    let r = p.server.recv_wcs(2);
    assert_ok(&r);
    assert_eq!((r[0].wr_id, r[0].byte_len, r[0].invalidated_stag, r[0].solicited), (1, 48, Some(victim.stag()), false));
    assert_eq!((r[1].wr_id, r[1].byte_len, r[1].invalidated_stag, r[1].solicited), (2, 0, Some(victim2.stag()), true));
    assert_mr_eq(&dst, 0, &data, "Send with Invalidate payload");
    assert!(!victim.is_valid() && !victim2.is_valid(), "both regions are invalid afterwards");
    // An invalidated region can no longer be a local source either.
    assert_eq!(
        p.server.qp.post_send(&[SendWr::send(9, &[victim.sge(0, 8)])]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    // A Write into the invalidated STag is a protocol error at the server: DDP invalid STag.
    p.client.qp.post_send(&[SendWr::write(7, &[src.sge(0, 8)], victim.remote(0))]).unwrap();
    let e = wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    let QpEvent::Error { cause, remote, .. } = e else { unreachable!() };
    assert_eq!((cause, remote), (Some(TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag)), false));
    let e = wait_event(&p.client.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    let QpEvent::Error { cause, remote, layout } = e else { unreachable!() };
    assert_eq!(
        (cause, remote, layout),
        (Some(TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag)), true, Some(TerminateLayout::Rfc5040))
    );
}

#[test]
fn local_invalidate_makes_the_region_unusable() {
    let p = Pair::new();
    let local = p.mr(4096, all_access());
    let other = p.mr(4096, all_access());
    p.client.qp.post_send(&[SendWr::local_invalidate(1, local.stag())]).unwrap();
    let s = p.client.send_wcs(1);
    assert_ok(&s);
    assert_eq!((s[0].wr_id, s[0].opcode), (1, WcOpcode::LocalInvalidate));
    assert!(!local.is_valid());
    assert!(other.is_valid(), "only the named region");
    // Not a source, not a sink, not a receive buffer any more.
    assert_eq!(
        p.client.qp.post_send(&[SendWr::send(2, &[local.sge(0, 8)])]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    assert_eq!(
        p.client.qp.post_send(&[SendWr::read(3, local.sge(0, 8), other.remote(0))]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    assert_eq!(
        p.client.qp.post_recv(&[RecvWr::new(4, &[local.sge(0, 8)])]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    // Invalidating it again fails with a local protection status, in order after a good Send.
    post_recv(&p.server.qp, 10, &other, 0, 0);
    p.client.qp.post_send(&[SendWr::send(5, &[]), SendWr::local_invalidate(6, local.stag())]).unwrap();
    let s = p.client.send_wcs(2);
    assert_eq!((s[0].wr_id, s[0].status), (5, WcStatus::Success));
    assert_eq!((s[1].wr_id, s[1].status, s[1].opcode), (6, WcStatus::LocalProtection, WcOpcode::LocalInvalidate));
    assert_ok(&p.server.recv_wcs(1));
    // The connection still works.
    let d = p.mr(4096, all_access());
    write_and_verify(&p.client, &p.server, &other, &d, 4096, 3);
}

#[test]
fn atomics_fetch_add_and_compare_swap_return_the_original() {
    let p = Pair::new();
    assert!(p.client.qp.supports_rfc7306() && p.server.qp.supports_rfc7306());
    let word = p.mr(64, all_access());
    let sink = p.mr(8 * 256, all_access());
    word.write(8, &100u64.to_ne_bytes()).unwrap();
    let w = |mr: &MemoryRegion, off: usize| u64::from_ne_bytes(mr.to_vec(off, 8).unwrap().try_into().unwrap());
    p.client
        .qp
        .post_send(&[
            SendWr::fetch_add(1, sink.sge(0, 8), word.remote(8), 5),
            SendWr::compare_swap(2, sink.sge(8, 8), word.remote(8), 105, 7),
            SendWr::compare_swap(3, sink.sge(16, 8), word.remote(8), 105, 9),
            SendWr::fetch_add(4, sink.sge(24, 8), word.remote(8), u64::MAX),
        ])
        .unwrap();
    let s = p.client.send_wcs(4);
    assert_ok(&s);
    let ops: Vec<(u64, WcOpcode, u32)> = s.iter().map(|c| (c.wr_id, c.opcode, c.byte_len)).collect();
    assert_eq!(
        ops,
        [
            (1, WcOpcode::FetchAdd, 8),
            (2, WcOpcode::CompareSwap, 8),
            (3, WcOpcode::CompareSwap, 8),
            (4, WcOpcode::FetchAdd, 8)
        ]
    );
    assert_eq!([w(&sink, 0), w(&sink, 8), w(&sink, 16), w(&sink, 24)], [100, 105, 7, 7]);
    // 7 + (2^64 − 1) wraps to 6; the neighbours are untouched.
    assert_eq!((w(&word, 0), w(&word, 8), w(&word, 16)), (0, 6, 0));

    // Hundreds of fetch-adds from both sides: every original value is seen exactly once.
    word.write(8, &0u64.to_ne_bytes()).unwrap();
    let n = 200u64;
    let ssink = p.mr(8 * 256, all_access());
    let wrs: Vec<SendWr<'_>> =
        (0..n).map(|i| SendWr::fetch_add(100 + i, sink.sge(8 * i as usize, 8), word.remote(8), 1)).collect();
    // The server adds 3 at a time to a word on the client side, concurrently.
    let cword = p.mr(64, all_access());
    let swrs: Vec<SendWr<'_>> =
        (0..n).map(|i| SendWr::fetch_add(100 + i, ssink.sge(8 * i as usize, 8), cword.remote(0), 3)).collect();
    p.client.qp.post_send(&wrs).unwrap();
    p.server.qp.post_send(&swrs).unwrap();
    let s = p.client.send_wcs(n as usize);
    assert_ok(&s);
    assert!(s.iter().enumerate().all(|(i, c)| c.wr_id == 100 + i as u64), "completions in posting order");
    assert_ok(&p.server.send_wcs(n as usize));
    let mut seen: Vec<u64> = (0..n as usize).map(|i| w(&sink, 8 * i)).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    assert_eq!(w(&word, 8), n);
    let seen: Vec<u64> = (0..n as usize).map(|i| w(&ssink, 8 * i)).collect();
    assert_eq!(seen, (0..n).map(|i| 3 * i).collect::<Vec<_>>(), "one requester's atomics run in order");
    assert_eq!(w(&cword, 0), 3 * n);
}

#[test]
fn atomics_with_bad_shapes_are_refused_at_post() {
    let p = Pair::new();
    let word = p.mr(64, all_access());
    let sink = p.mr(64, all_access());
    let ro = p.mr(64, Access::REMOTE_READ);
    let qp = &p.client.qp;
    assert_eq!(
        qp.post_send(&[SendWr::fetch_add(1, sink.sge(0, 4), word.remote(0), 1)]).map_err(|e| e.reason),
        Err(PostReason::InvalidLength)
    );
    assert_eq!(
        qp.post_send(&[SendWr::fetch_add(1, sink.sge(0, 8), word.remote(4), 1)]).map_err(|e| e.reason),
        Err(PostReason::InvalidLength)
    );
    assert_eq!(
        qp.post_send(&[SendWr::compare_swap(1, ro.sge(0, 8), word.remote(0), 0, 1)]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection),
        "the sink needs local write"
    );
    // Nothing was queued: a good one completes alone.
    qp.post_send(&[SendWr::fetch_add(2, sink.sge(0, 8), word.remote(0), 1)]).unwrap();
    let s = p.client.send_wcs(1);
    assert_eq!((s[0].wr_id, s[0].status), (2, WcStatus::Success));
}

#[test]
fn immediate_data_and_write_with_immediate() {
    let p = Pair::new();
    let src = p.mr(100_000, all_access());
    let dst = p.mr(100_000, all_access());
    let rb = p.mr(64, all_access());
    for i in 0..3 {
        post_recv(&p.server.qp, 40 + i, &rb, 0, 64);
    }
    let data = fill(&src, 0, 70_001, 77);
    p.client
        .qp
        .post_send(&[
            SendWr::immediate(1, 0x0123_4567_89ab_cdef),
            SendWr::immediate(2, u64::MAX).solicited(),
            SendWr::write_with_imm(3, &[src.sge(0, 70_001)], dst.remote(0), 42),
        ])
        .unwrap();
    let s = p.client.send_wcs(3);
    assert_ok(&s);
    let ops: Vec<(u64, WcOpcode)> = s.iter().map(|c| (c.wr_id, c.opcode)).collect();
    assert_eq!(ops, [(1, WcOpcode::Immediate), (2, WcOpcode::Immediate), (3, WcOpcode::RdmaWrite)]);
    let r = p.server.recv_wcs(3);
    assert_ok(&r);
    let got: Vec<(u64, WcOpcode, Option<u64>, bool, u32)> =
        r.iter().map(|c| (c.wr_id, c.opcode, c.imm_data, c.solicited, c.byte_len)).collect();
    assert_eq!(
        got,
        [
            (40, WcOpcode::RecvImmediate, Some(0x0123_4567_89ab_cdef), false, 0),
            (41, WcOpcode::RecvImmediate, Some(u64::MAX), true, 0),
            (42, WcOpcode::RecvImmediate, Some(42), false, 0),
        ]
    );
    // The Write is complete once its Immediate Data is delivered.
    assert_mr_eq(&dst, 0, &data, "Write with Immediate");
}

/// `rfc7306: false` on either side: nothing RFC 7306 may be posted, by either side.
#[test]
fn rfc7306_disabled_on_either_side_refuses_atomics_and_immediates() {
    for (client_off, server_off) in [(true, false), (false, true)] {
        let mut cfg = PairConfig::default();
        cfg.client.mpa.rfc7306 = !client_off;
        cfg.server.mpa.rfc7306 = !server_off;
        let p = Pair::with(cfg);
        let word = p.mr(64, all_access());
        let sink = p.mr(64, all_access());
        for end in [&p.client, &p.server] {
            assert!(!end.qp.supports_rfc7306());
            assert!(!end.qp.conn_info().unwrap().rfc7306);
            let qp = &end.qp;
            for wr in [
                SendWr::fetch_add(1, sink.sge(0, 8), word.remote(0), 1),
                SendWr::compare_swap(1, sink.sge(0, 8), word.remote(0), 0, 1),
                SendWr::immediate(1, 5),
                SendWr::write_with_imm(1, &[sink.sge(0, 8)], word.remote(0), 5),
            ] {
                assert_eq!(qp.post_send(&[wr]).map_err(|e| e.reason), Err(PostReason::NotSupportedByPeer));
            }
            // A refused batch queues nothing, even its good first half.
            assert_eq!(
                qp.post_send(&[SendWr::write(2, &[sink.sge(0, 8)], word.remote(0)), SendWr::immediate(3, 5)])
                    .map_err(|e| (e.index, e.reason)),
                Err((1, PostReason::NotSupportedByPeer))
            );
            assert_no_wc(&end.scq, Duration::from_millis(50));
        }
        // Everything else works.
        let a = p.mr(4096, all_access());
        write_and_verify(&p.client, &p.server, &a, &word, 64, 1);
        read_and_verify(&p.server, &sink, &a, 64, 2);
    }
}

#[test]
fn hundreds_of_outstanding_work_requests_complete_in_order() {
    let p = Pair::new();
    let n = 600usize;
    let src = p.mr(n * 512, all_access());
    let dst = p.mr(n * 512, all_access());
    let rbuf = p.mr(n * 512, all_access());
    let sink = p.mr(n * 512, all_access());
    let data = fill(&src, 0, n * 512, 5);
    let remote = fill(&dst, 0, n * 512, 6);
    let rwrs: Vec<RecvWr<'_>> = (0..n).map(|i| RecvWr::new(i as u64, &[rbuf.sge(i * 512, 512)])).collect();
    p.server.qp.post_recv(&rwrs).unwrap();
    // Sends, Writes and Reads interleaved, all posted before any completion is polled.
    let mut wrs = Vec::new();
    for i in 0..n {
        let (off, len) = (i * 512, 1 + (i * 37) % 512);
        wrs.push(match i % 3 {
            0 => SendWr::send(i as u64, &[src.sge(off, len)]),
            1 => SendWr::write(i as u64, &[src.sge(off, 512)], dst.remote(off as u64)),
            _ => SendWr::read(i as u64, sink.sge(off, 512), dst.remote(off as u64)),
        });
    }
    for chunk in wrs.chunks(100) {
        p.client.qp.post_send(chunk).unwrap();
    }
    let s = p.client.send_wcs(n);
    assert_ok(&s);
    assert!(s.iter().enumerate().all(|(i, c)| c.wr_id == i as u64), "posting order");
    let r = p.server.recv_wcs(n / 3);
    assert_ok(&r);
    for (k, c) in r.iter().enumerate() {
        // The k-th Send consumed the k-th receive.
        let i = 3 * k;
        assert_eq!((c.wr_id, c.byte_len as usize), (k as u64, 1 + (i * 37) % 512));
        assert_eq!(rbuf.to_vec(k * 512, c.byte_len as usize).unwrap(), data[i * 512..i * 512 + c.byte_len as usize]);
    }
    for i in (0..n).filter(|i| i % 3 == 1) {
        assert_eq!(dst.to_vec(i * 512, 512).unwrap(), data[i * 512..(i + 1) * 512], "write {i}");
    }
    for i in (0..n).filter(|i| i % 3 == 2) {
        // Reads see the remote bytes: the untouched pattern (no Write targets these offsets).
        assert_eq!(sink.to_vec(i * 512, 512).unwrap(), remote[i * 512..(i + 1) * 512], "read {i}");
    }
}

#[test]
fn unsignaled_runs_complete_silently_and_free_their_slots() {
    let cap = QpCap { max_send_wr: 16, max_recv_wr: 64, max_send_sge: 2, max_recv_sge: 2, max_inline_data: 64 };
    let p = Pair::with(PairConfig { cap, ..PairConfig::default() });
    let src = p.mr(65536, all_access());
    let dst = p.mr(65536, all_access());
    fill(&src, 0, 65536, 8);
    // 40 rounds of 16: 15 unsignaled Writes and one signaled. If unsignaled requests kept their
    // slots, the second round could not be posted into a 16-deep queue.
    for round in 0..40u64 {
        let mut wrs: Vec<SendWr<'_>> = (0..15)
            .map(|i| {
                SendWr::write(round * 16 + i, &[src.sge(i as usize * 4096, 4096)], dst.remote(i * 4096)).unsignaled()
            })
            .collect();
        wrs.push(SendWr::write(round * 16 + 15, &[src.sge(0, 8)], dst.remote(65528)).signaled(true));
        p.client.qp.post_send(&wrs).unwrap();
        let s = p.client.send_wcs(1);
        assert_eq!((s[0].wr_id, s[0].status), (round * 16 + 15, WcStatus::Success), "only the signaled one");
    }
    // A full queue says so; nothing of the refused batch is queued.
    let too_many: Vec<SendWr<'_>> = (0..17).map(|i| SendWr::write(1000 + i, &[src.sge(0, 8)], dst.remote(0))).collect();
    assert_eq!(p.client.qp.post_send(&too_many).map_err(|e| e.reason), Err(PostReason::QueueFull));
    assert_no_wc(&p.client.scq, Duration::from_millis(50));
    // The Writes landed (checked after a Send).
    post_recv(&p.server.qp, 1, &dst, 0, 0);
    p.client.qp.post_send(&[SendWr::send(2, &[]).unsignaled()]).unwrap();
    assert_ok(&p.server.recv_wcs(1));
    assert_mr_eq(&dst, 0, &src.to_vec(0, 15 * 4096).unwrap(), "unsignaled Writes");
    assert_no_wc(&p.client.scq, Duration::from_millis(50));
}

#[test]
fn inline_sends_and_writes_copy_at_post_time() {
    let p = Pair::new();
    let dst = p.mr(4096, all_access());
    let rb = p.mr(4096, all_access());
    let max = 256;
    for (i, len) in [0usize, 1, 7, 64, 255, max].into_iter().enumerate() {
        let mut data = pattern(len, i as u32);
        let keep = data.clone();
        post_recv(&p.server.qp, i as u64, &rb, 0, 4096);
        p.client
            .qp
            .post_send(&[SendWr::write_inline(10, &data, dst.remote(1000)), SendWr::send_inline(11, &data).solicited()])
            .unwrap();
        // The bytes were copied when posted.
        data.iter_mut().for_each(|b| *b = !*b);
        let s = p.client.send_wcs(2);
        assert_ok(&s);
        assert_eq!((s[0].opcode, s[1].opcode), (WcOpcode::RdmaWrite, WcOpcode::Send));
        let r = p.server.recv_wcs(1);
        assert_eq!((r[0].wr_id, r[0].byte_len as usize, r[0].solicited), (i as u64, len, true));
        assert_mr_eq(&rb, 0, &keep, "inline Send");
        assert_mr_eq(&dst, 1000, &keep, "inline Write");
    }
    let big = vec![0u8; max + 1];
    assert_eq!(
        p.client.qp.post_send(&[SendWr::send_inline(1, &big)]).map_err(|e| e.reason),
        Err(PostReason::InlineTooLong)
    );
    assert_eq!(
        p.client.qp.post_send(&[SendWr::write_inline(1, &big, dst.remote(0))]).map_err(|e| e.reason),
        Err(PostReason::InlineTooLong)
    );
}

#[test]
fn receive_larger_than_the_message_reports_the_received_length() {
    let p = Pair::new();
    let src = p.mr(100_000, all_access());
    let dst = p.mr(200_000, all_access());
    let data = fill(&src, 0, 99_999, 4);
    let guard = fill(&dst, 0, 200_000, 5);
    post_recv(&p.server.qp, 1, &dst, 0, 200_000);
    p.client.qp.post_send(&[SendWr::send(1, &[src.sge(0, 99_999)])]).unwrap();
    let r = p.server.recv_wcs(1);
    assert_eq!((r[0].status, r[0].byte_len), (WcStatus::Success, 99_999));
    assert_mr_eq(&dst, 0, &data, "received bytes");
    assert_mr_eq(&dst, 99_999, &guard[99_999..], "bytes past the message are untouched");
}

#[test]
fn fenced_send_waits_for_an_earlier_read() {
    let p = Pair::new();
    let remote = p.mr(MIB, all_access());
    let sink = p.mr(MIB, all_access());
    let rb = p.mr(64, all_access());
    let data = fill(&remote, 0, MIB, 12);
    post_recv(&p.server.qp, 1, &rb, 0, 64);
    p.client
        .qp
        .post_send(&[SendWr::read(1, sink.sge(0, MIB), remote.remote(0)), SendWr::send(2, &[]).fence()])
        .unwrap();
    let s = p.client.send_wcs(2);
    assert_ok(&s);
    assert_eq!((s[0].wr_id, s[1].wr_id), (1, 2));
    assert_ok(&p.server.recv_wcs(1));
    assert_mr_eq(&sink, 0, &data, "Read before the fenced Send");
}

/// RFC 5044 §7.1.2: the responder sends no FPDU before it has received one. Work it posts
/// first waits, then goes out as soon as the initiator's first FPDU arrives.
#[test]
fn responder_work_waits_for_the_initiators_first_fpdu() {
    let p = Pair::new();
    let src = p.mr(MIB, all_access());
    let dst = p.mr(MIB, all_access());
    let rb = p.mr(64, all_access());
    let data = fill(&src, 0, MIB, 21);
    post_recv(&p.client.qp, 1, &rb, 0, 64);
    p.server.qp.post_send(&[SendWr::write(1, &[src.sge(0, MIB)], dst.remote(0)), SendWr::send(2, &[])]).unwrap();
    assert_no_wc(&p.server.scq, Duration::from_millis(200));
    assert_eq!(p.server.qp.stats().tx_fpdus, 0, "nothing sent before the initiator spoke");
    // Any FPDU from the initiator unblocks it: here a zero-length RDMA Write.
    p.client.qp.post_send(&[SendWr::write(9, &[], dst.remote(0))]).unwrap();
    assert_ok(&p.client.send_wcs(1));
    assert_ok(&p.server.send_wcs(2));
    assert_ok(&p.client.recv_wcs(1));
    assert_mr_eq(&dst, 0, &data, "the held Write");
}

/// Polls every queue in `want` in turn (which, with `Progress::Poll`, is what moves their
/// queue pairs' bytes) until each has produced its count.
fn pump(want: &[(&CompletionQueue, usize)]) -> Vec<Vec<WorkCompletion>> {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<Vec<WorkCompletion>> = vec![Vec::new(); want.len()];
    let mut buf = [WorkCompletion::default(); 16];
    while got.iter().zip(want).any(|(g, (_, n))| g.len() < *n) {
        assert!(Instant::now() < deadline, "pump timed out: {got:?}");
        for (g, (cq, _)) in got.iter_mut().zip(want) {
            let n = cq.wait(&mut buf, Some(Duration::from_millis(1)));
            g.extend_from_slice(&buf[..n]);
        }
    }
    for (g, (_, n)) in got.iter().zip(want) {
        assert_eq!(g.len(), *n, "{g:?}");
        assert_ok(g);
    }
    got
}

/// Both ends in application-driven progress: nothing moves unless the application polls, and
/// every operation and size still arrives intact when it does.
#[test]
fn poll_mode_pairs_move_every_operation_when_polled() {
    let p = Pair::with(PairConfig { progress: Progress::Poll, ..PairConfig::default() });
    let (c, s) = (&p.client, &p.server);
    let a = p.mr(16 * MIB, all_access());
    let b = p.mr(16 * MIB, all_access());
    // Unpolled, a Send does not reach the peer (its receive stays pending).
    post_recv(&s.qp, 1, &b, 0, 64);
    c.qp.post_send(&[SendWr::send(1, &[a.sge(0, 8)])]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(s.rcq.is_empty());
    pump(&[(&c.scq, 1), (&s.rcq, 1)]);
    for (i, n) in [0usize, 1, 4099, 65_537, MIB, 16 * MIB].into_iter().enumerate() {
        let seed = i as u32 * 4;
        // Send.
        let data = fill(&a, 0, n, seed);
        post_recv(&s.qp, 2, &b, 0, n);
        c.qp.post_send(&[SendWr::send(2, &[a.sge(0, n)])]).unwrap();
        let got = pump(&[(&c.scq, 1), (&s.rcq, 1)]);
        assert_eq!(got[1][0].byte_len as usize, n);
        assert_mr_eq(&b, 0, &data, "Send, polled");
        // Write (visible after an Immediate Data) from the server.
        let data = fill(&b, 0, n, seed + 1);
        post_recv(&c.qp, 3, &a, 0, 0);
        s.qp.post_send(&[SendWr::write_with_imm(3, &[b.sge(0, n)], a.remote(0), n as u64)]).unwrap();
        let got = pump(&[(&s.scq, 1), (&c.rcq, 1)]);
        assert_eq!(got[1][0].imm_data, Some(n as u64));
        assert_mr_eq(&a, 0, &data, "Write, polled");
        // Read.
        let data = fill(&b, 0, n, seed + 2);
        c.qp.post_send(&[SendWr::read(4, a.sge(0, n), b.remote(0))]).unwrap();
        // The responder's queue pair must be driven too: poll its (empty) send queue.
        pump(&[(&c.scq, 1), (&s.scq, 0)]);
        assert_mr_eq(&a, 0, &data, "Read, polled");
    }
}

/// Busy-polls (never sleeps) every queue in `want` until each has produced its count: with
/// `Progress::Assisted` the polling thread moves the bytes of the queue pairs it finds idle.
fn spin(want: &[(&CompletionQueue, usize)]) -> Vec<Vec<WorkCompletion>> {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<Vec<WorkCompletion>> = vec![Vec::new(); want.len()];
    let mut buf = [WorkCompletion::default(); 16];
    while got.iter().zip(want).any(|(g, (_, n))| g.len() < *n) {
        assert!(Instant::now() < deadline, "spin timed out: {got:?}");
        for (g, (cq, _)) in got.iter_mut().zip(want) {
            let n = cq.poll(&mut buf);
            g.extend_from_slice(&buf[..n]);
        }
    }
    for g in &got {
        assert_ok(g);
    }
    got
}

/// Assisted progress: the event loop moves the bytes when nobody polls (a Write lands in
/// memory the application only watches), and busy polling moves every operation and size
/// intact, both with the poller and the event loop contending for the same queue pair.
#[test]
fn assisted_pairs_progress_with_and_without_polling() {
    let p = Pair::with(PairConfig { progress: Progress::Assisted, ..PairConfig::default() });
    let (c, s) = (&p.client, &p.server);
    let a = p.mr(16 * MIB, all_access());
    let b = p.mr(16 * MIB, all_access());
    // Unpolled: the server's memory changes with nobody calling into the stack there.
    let data = fill(&a, 0, 4096, 7);
    c.qp.post_send(&[SendWr::write(1, &[a.sge(0, 4096)], b.remote(0))]).unwrap();
    let deadline = Instant::now() + WAIT;
    while b.to_vec(0, 4096).unwrap() != data {
        assert!(Instant::now() < deadline, "the Write never landed without polling");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_ok(&wait_wcs(&c.scq, 1, WAIT));
    for (i, n) in [0usize, 1, 4099, 65_537, MIB, 16 * MIB].into_iter().enumerate() {
        let seed = i as u32 * 4;
        let data = fill(&a, 0, n, seed);
        post_recv(&s.qp, 2, &b, 0, n);
        c.qp.post_send(&[SendWr::send(2, &[a.sge(0, n)])]).unwrap();
        let got = spin(&[(&c.scq, 1), (&s.rcq, 1)]);
        assert_eq!(got[1][0].byte_len as usize, n);
        assert_mr_eq(&b, 0, &data, "Send, assisted");
        let data = fill(&b, 0, n, seed + 1);
        post_recv(&c.qp, 3, &a, 0, 0);
        s.qp.post_send(&[SendWr::write_with_imm(3, &[b.sge(0, n)], a.remote(0), n as u64)]).unwrap();
        let got = spin(&[(&s.scq, 1), (&c.rcq, 1)]);
        assert_eq!(got[1][0].imm_data, Some(n as u64));
        assert_mr_eq(&a, 0, &data, "Write, assisted");
        // Read: only the requester polls; the responder is served by its event loop.
        let data = fill(&b, 0, n, seed + 2);
        c.qp.post_send(&[SendWr::read(4, a.sge(0, n), b.remote(0))]).unwrap();
        spin(&[(&c.scq, 1)]);
        assert_mr_eq(&a, 0, &data, "Read, assisted");
    }
}

/// Local misuse is refused at once with a specific error, and a refused batch queues nothing.
#[test]
fn post_errors_are_specific_and_queue_nothing() {
    assert!(matches!(
        Device::open(DeviceConfig { workers: 0, ..DeviceConfig::default() }),
        Err(Error::InvalidArgument(_))
    ));
    let cap = QpCap { max_send_wr: 4, max_recv_wr: 4, max_send_sge: 2, max_recv_sge: 2, max_inline_data: 16 };
    let p = Pair::with(PairConfig { cap, ..PairConfig::default() });
    let dev = &p.dev;
    let caps = dev.capabilities();
    assert_eq!((caps.max_sge_rd, caps.rfc7306), (1, true));
    let cq = dev.create_cq(4).unwrap();
    for (bad, why) in [
        (
            QpCap { max_send_wr: caps.max_qp_wr + 1, ..cap },
            CreateError::QueueTooDeep { requested: caps.max_qp_wr + 1, max: caps.max_qp_wr },
        ),
        (
            QpCap { max_recv_sge: caps.max_sge + 1, ..cap },
            CreateError::TooManySges { requested: caps.max_sge + 1, max: caps.max_sge },
        ),
        (
            QpCap { max_inline_data: caps.max_inline_data + 1, ..cap },
            CreateError::InlineTooLarge { requested: caps.max_inline_data + 1, max: caps.max_inline_data },
        ),
    ] {
        let mut init = QpInit::new(&cq, &cq);
        init.cap = bad;
        assert_eq!(p.pd.create_qp(&init).map(|_| ()), Err(why), "{bad:?}");
    }
    let other_pd = dev.alloc_pd();
    let srq = other_pd.create_srq(4, 1).unwrap();
    let mut init = QpInit::new(&cq, &cq);
    init.srq = Some(&srq);
    assert!(
        matches!(p.pd.create_qp(&init), Err(CreateError::SrqOfAnotherPd)),
        "a shared receive queue of another domain"
    );

    let mr = p.mr(4096, all_access());
    let foreign = other_pd.reg_mr(64, all_access()).unwrap();
    let no_local_write = p.mr(64, Access::REMOTE_READ);
    let (c, s) = (&p.client.qp, &p.server.qp);
    let three = [mr.sge(0, 1), mr.sge(1, 1), mr.sge(2, 1)];
    assert_eq!(c.post_send(&[SendWr::send(1, &three)]).map_err(|e| e.reason), Err(PostReason::TooManySges));
    assert_eq!(s.post_recv(&[RecvWr::new(1, &three)]).map_err(|e| e.reason), Err(PostReason::TooManySges));
    assert_eq!(
        c.post_send(&[SendWr::send(1, &[foreign.sge(0, 8)])]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    assert_eq!(
        c.post_send(&[SendWr::send(1, &[mr.sge(4090, 8)])]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    assert_eq!(
        s.post_recv(&[RecvWr::new(1, &[no_local_write.sge(0, 8)])]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    assert_eq!(
        c.post_send(&[SendWr::read(1, no_local_write.sge(0, 8), mr.remote(0))]).map_err(|e| e.reason),
        Err(PostReason::LocalProtection)
    );
    assert_eq!(c.post_send(&[SendWr::send_inline(1, &[0; 17])]).map_err(|e| e.reason), Err(PostReason::InlineTooLong));
    // Queue depth: four receives fit, a fifth does not; a batch over the limit queues nothing.
    let five: Vec<RecvWr<'_>> = (0..5).map(|i| RecvWr::new(i, &[mr.sge(0, 8)])).collect();
    assert_eq!(s.post_recv(&five).map_err(|e| (e.index, e.reason)), Err((4, PostReason::QueueFull)));
    s.post_recv(&five[..4]).unwrap();
    assert_eq!(s.post_recv(&five[4..]).map_err(|e| e.reason), Err(PostReason::QueueFull));
    // A batch with a bad last element queues nothing either.
    assert_eq!(
        c.post_send(&[SendWr::send(10, &[mr.sge(0, 8)]), SendWr::send(11, &[foreign.sge(0, 8)])])
            .map_err(|e| (e.index, e.reason)),
        Err((1, PostReason::LocalProtection)),
        "the error names the second request"
    );
    assert_no_wc(&p.client.scq, Duration::from_millis(50));
    assert!(p.server.rcq.is_empty());
    // An unconnected queue pair takes receives but no sends.
    let idle = End::new(dev, &p.pd, cap, Progress::Thread);
    idle.qp.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])]).unwrap();
    assert_eq!(
        idle.qp.post_send(&[SendWr::send(1, &[])]).map_err(|e| e.reason),
        Err(PostReason::InvalidState(QpState::Idle))
    );
    assert_eq!(idle.qp.state(), QpState::Idle);
    assert!(idle.qp.conn_info().is_none() && !idle.qp.supports_rfc7306());
    // The pair is unharmed.
    c.post_send(&[SendWr::send(20, &[mr.sge(0, 8)])]).unwrap();
    let r = p.server.recv_wcs(1);
    assert_eq!((r[0].wr_id, r[0].byte_len), (0, 8));
}

/// Fetch-adds arriving on two connections (served by different event-loop threads) on the
/// same word are atomic with respect to each other: every original value is seen once.
#[test]
fn atomics_from_two_connections_on_one_word_are_atomic() {
    let dev = device();
    let pd = dev.alloc_pd();
    let pairs = [Pair::on(&dev, &pd, PairConfig::default()), Pair::on(&dev, &pd, PairConfig::default())];
    let word = pd.reg_mr(8, all_access()).unwrap();
    let n = 300usize;
    let sinks: Vec<MemoryRegion> = (0..2).map(|_| pd.reg_mr(8 * n, all_access()).unwrap()).collect();
    let threads: Vec<_> = pairs
        .iter()
        .zip(&sinks)
        .map(|(p, sink)| {
            let (qp, scq, sink, remote) = (p.client.qp.clone(), p.client.scq.clone(), sink.clone(), word.remote(0));
            std::thread::spawn(move || {
                for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
                    let wrs: Vec<SendWr<'_>> =
                        chunk.iter().map(|&i| SendWr::fetch_add(i as u64, sink.sge(8 * i, 8), remote, 1)).collect();
                    qp.post_send(&wrs).unwrap();
                    assert_ok(&wait_wcs(&scq, chunk.len(), WAIT));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("atomics thread");
    }
    let mut seen: Vec<u64> = sinks
        .iter()
        .flat_map(|s| (0..n).map(move |i| u64::from_ne_bytes(s.to_vec(8 * i, 8).unwrap().try_into().unwrap())))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..2 * n as u64).collect::<Vec<_>>());
    assert_eq!(word.to_vec(0, 8).unwrap(), (2 * n as u64).to_ne_bytes());
}

/// Single small Writes (the idle fast path, written at once) to a peer that stops reading:
/// once its socket is full an FPDU goes out in part, the rest and every later Write wait in
/// order, and when the peer reads again all of them arrive intact and complete in order.
#[test]
fn single_small_writes_to_a_peer_that_stops_reading_wait_and_complete_in_order() {
    const LEN: usize = 2000;
    // 32 MB: more than both sockets' buffers hold.
    const K: usize = 16_000;
    let cap = QpCap { max_send_wr: K, ..PairConfig::default().cap };
    let p = Pair::with(PairConfig { server_progress: Some(Progress::Poll), cap, ..PairConfig::default() });
    let src = p.mr(K * LEN, Access::LOCAL_WRITE);
    let data = fill(&src, 0, K * LEN, 11);
    let dst = p.mr(K * LEN, all_access());
    let mut buf = [WorkCompletion::default(); 64];
    // The first FPDUs each way (a zero-length Write, then a Send back): the peer's answer
    // ends the initiator's wake-ups of a silent responder, whose zero-length Writes would
    // otherwise come between the Writes below.
    p.client.qp.post_send(&[SendWr::write(0, &[], dst.remote(0))]).unwrap();
    pump(&[(&p.client.scq, 1), (&p.server.scq, 0)]);
    post_recv(&p.client.qp, 0, &src, 0, 0);
    p.server.qp.post_send(&[SendWr::send(0, &[])]).unwrap();
    pump(&[(&p.client.rcq, 1), (&p.server.scq, 1)]);
    let mut wcs = Vec::new();
    for i in 0..K {
        let at = i * LEN;
        p.client.qp.post_send(&[SendWr::write(i as u64, &[src.sge(at, LEN)], dst.remote(at as u64))]).unwrap();
        let n = p.client.scq.poll(&mut buf);
        wcs.extend_from_slice(&buf[..n]);
    }
    assert!(wcs.len() < K, "an unread peer took all {K} Writes");
    let waiting = K - wcs.len();
    // The peer reads again (its queue pair moves when its queue is polled).
    let deadline = Instant::now() + WAIT;
    while wcs.len() < K {
        assert!(Instant::now() < deadline, "{} of {K} Writes completed", wcs.len());
        p.server.scq.poll(&mut buf);
        let n = p.client.scq.wait(&mut buf, Some(Duration::from_millis(1)));
        wcs.extend_from_slice(&buf[..n]);
    }
    assert_ok(&wcs);
    assert!(wcs.iter().map(|c| c.wr_id).eq(0..K as u64), "completions in posting order");
    // The last Write's bytes may still be on their way when its completion (sent) is seen.
    let deadline = Instant::now() + WAIT;
    let mut got = vec![0u8; K * LEN];
    loop {
        p.server.scq.poll(&mut buf);
        dst.read(0, &mut got).unwrap();
        if got == data || Instant::now() > deadline {
            break;
        }
    }
    assert!(got == data, "{waiting} Writes waited; the bytes differ");
}

/// Each call says what went wrong in its own terms: registration, creation and region access
/// errors name their cause, and every one of them converts into the crate's `Error`.
#[test]
fn registration_creation_and_range_errors_name_their_cause() {
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let pd = dev.alloc_pd();
    // SAFETY: a null pointer is refused before anything could use it.
    let null = unsafe { pd.reg_mr_external(std::ptr::null_mut(), 64, Access::LOCAL_WRITE) };
    assert!(matches!(null, Err(RegisterError::NullPointer)));
    let huge = pd.reg_mr(usize::MAX / 2, Access::LOCAL_WRITE);
    assert!(matches!(huge, Err(RegisterError::NoMemory { len, .. }) if len == usize::MAX / 2), "{huge:?}");
    let caps = dev.capabilities();
    assert_eq!(
        pd.create_srq(caps.max_qp_wr + 1, 1).map(|_| ()),
        Err(CreateError::QueueTooDeep { requested: caps.max_qp_wr + 1, max: caps.max_qp_wr })
    );
    assert_eq!(
        pd.create_srq(4, caps.max_sge + 1).map(|_| ()),
        Err(CreateError::TooManySges { requested: caps.max_sge + 1, max: caps.max_sge })
    );
    let mr = pd.reg_mr(16, Access::LOCAL_WRITE).unwrap();
    let range = RangeError { offset: 10, len: 8, region_len: 16 };
    assert_eq!(mr.write(10, &[0; 8]), Err(range));
    assert_eq!(mr.read(10, &mut [0; 8]), Err(range));
    assert_eq!(mr.to_vec(usize::MAX, 2), Err(RangeError { offset: usize::MAX, len: 2, region_len: 16 }));
    assert_eq!(range.to_string(), "range 10+8 outside a 16-byte region");
    let any: Error = range.into();
    assert!(matches!(any, Error::Range(r) if r == range));
}
