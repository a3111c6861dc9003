//! Connection-manager paths over loopback TCP: reject with private data, refused and timed-out
//! connects, silent or stalled initiators dropped by the listener, private data limits and
//! round trips, `ConnectRequest` accessors, IRD/ORD negotiation (RFC 6581 §9.1), and
//! disconnecting in the middle of a transfer.
mod common;

use common::*;
use iwarp::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Connects a fresh client to a fresh listener whose first request `on_request` handles
/// (with the server queue pair to accept onto); returns both ends, the connect result and
/// what `on_request` returned.
fn handshake<R: Send + 'static>(
    client_params: ConnParams,
    on_request: impl FnOnce(ConnectRequest, &QueuePair) -> R + Send + 'static,
) -> (Device, End, End, Result<(), ConnectError>, R) {
    init_log();
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 16).unwrap();
    let addr = listener.local_addr();
    let server = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let client = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let sqp = server.qp.clone();
    let t = std::thread::spawn(move || {
        let req = listener.get_request(Some(WAIT)).expect("request");
        on_request(req, &sqp)
    });
    let r = client.qp.connect(addr, &client_params);
    let out = t.join().expect("server thread");
    (dev, client, server, r, out)
}

#[test]
fn reject_delivers_the_private_data_to_the_initiator() {
    for pd in [Vec::new(), b"no room at the inn".to_vec(), pattern(508, 1)] {
        let sent = pd.clone();
        let (_dev, client, _server, r, rejected) = handshake(ConnParams::default(), move |req, _| req.reject(&sent));
        rejected.expect("reject");
        match r {
            Err(ConnectError::Rejected { private_data }) => assert_eq!(private_data, pd),
            other => panic!("expected a rejection, got {other:?}"),
        }
        match client.qp.next_event(WAIT) {
            Some(QpEvent::Rejected { private_data }) => assert_eq!(private_data, pd),
            other => panic!("expected a Rejected event, got {other:?}"),
        }
        assert!(client.qp.conn_info().is_none());
        assert!(matches!(
            client.qp.post_send(&[SendWr::send(1, &[])]).map_err(|e| e.reason),
            Err(PostReason::InvalidState(_))
        ));
    }
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let port = TcpListener::bind(any_port()).unwrap().local_addr().unwrap();
    // The listener is dropped: nothing listens there now.
    let dev = device();
    let pd = dev.alloc_pd();
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let t = Instant::now();
    let r = end.qp.connect(port, &ConnParams::default());
    assert!(matches!(r, Err(ConnectError::Refused)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "a refusal is immediate: {:?}", t.elapsed());
    assert!(end.qp.conn_info().is_none());
}

#[test]
fn a_silent_responder_times_out() {
    // Accepts at the TCP level (the backlog) and never answers the MPA Request.
    let silent = TcpListener::bind(any_port()).unwrap();
    let addr = silent.local_addr().unwrap();
    let dev = device();
    let pd = dev.alloc_pd();
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let params = ConnParams {
        mpa: MpaOptions { timeout: Duration::from_millis(300), ..MpaOptions::default() },
        ..ConnParams::default()
    };
    let t = Instant::now();
    let r = end.qp.connect(addr, &params);
    let took = t.elapsed();
    assert!(matches!(r, Err(ConnectError::Timeout)), "{r:?}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    assert!(matches!(end.qp.next_event(WAIT), Some(QpEvent::ConnectFailed(ConnectError::Timeout))));
    // The Request did go out: the silent peer can read it.
    let (mut s, _) = silent.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut key = [0u8; 16];
    s.read_exact(&mut key).unwrap();
    assert_eq!(&key, b"MPA ID Req Frame");
}

/// A client that connects and says nothing, one that stops after the 16-byte key, and one that
/// sends garbage are all dropped by the listener (after its MPA timeout, or at once for
/// garbage) and never become a `ConnectRequest`; a good client afterwards is served.
#[test]
fn stalled_initiators_are_dropped_and_never_seen_by_the_application() {
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 16).unwrap();
    listener.set_mpa_options(MpaOptions { timeout: Duration::from_millis(300), ..MpaOptions::default() });
    let addr = listener.local_addr();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut key_only = TcpStream::connect(addr).unwrap();
    key_only.write_all(b"MPA ID Req Frame").unwrap();
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let t = Instant::now();
    for (name, s) in [("garbage", &mut garbage), ("silent", &mut silent), ("key only", &mut key_only)] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{name}: expected the listener to close, got {other:?}"),
        }
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    assert!(matches!(listener.get_request(Some(Duration::from_millis(100))), Err(Error::TimedOut)));
    assert!(listener.try_get_request().is_none());
    // A well-behaved client is served.
    let server = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let client = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let sqp = server.qp.clone();
    let l2 = listener.clone();
    let th = std::thread::spawn(move || l2.get_request(Some(WAIT)).unwrap().accept(&sqp, &ConnParams::default()));
    client.qp.connect(addr, &ConnParams::default()).unwrap();
    th.join().unwrap().unwrap();
    let a = pd.reg_mr(4096, all_access()).unwrap();
    let b = pd.reg_mr(4096, all_access()).unwrap();
    send_and_verify(&client, &server, &a, &b, 4096, 1);
}

#[test]
fn private_data_round_trips_both_ways_up_to_508_bytes() {
    for n in [0usize, 1, 255, 256, 507, 508] {
        let cpd = pattern(n, 1);
        let spd = pattern(508 - n, 2);
        let (c2, s2) = (cpd.clone(), spd.clone());
        let params = ConnParams { private_data: cpd.clone(), ..ConnParams::default() };
        let (_dev, client, server, r, _) = handshake(params, move |req, qp| {
            assert_eq!(req.private_data(), c2);
            req.accept(qp, &ConnParams { private_data: s2, ..ConnParams::default() }).unwrap();
        });
        r.unwrap();
        assert_eq!(client.qp.conn_info().unwrap().peer_private_data, spd, "{n}");
        assert_eq!(server.qp.conn_info().unwrap().peer_private_data, cpd, "{n}");
    }
}

#[test]
fn private_data_over_508_bytes_is_refused_locally() {
    let dev = device();
    assert_eq!(dev.capabilities().max_private_data, 508);
    assert_eq!(LINUX_MAX_PRIVATE_DATA, 256);
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let params = ConnParams { private_data: vec![0; 509], ..ConnParams::default() };
    let r = end.qp.connect(listener.local_addr(), &params);
    match &r {
        Err(e @ ConnectError::Mpa(CmError::PrivateDataTooLong(509))) => {
            assert!(e.to_string().contains("512"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing reached the listener.
    assert!(listener.get_request(Some(Duration::from_millis(100))).is_err());
    // The queue pair is still usable for a good connect.
    let sqp = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let q = sqp.qp.clone();
    let l = listener.clone();
    let t = std::thread::spawn(move || {
        let req = l.get_request(Some(WAIT)).unwrap();
        let too_long = ConnParams { private_data: vec![0; 509], ..ConnParams::default() };
        // Accept refuses it too, before sending anything.
        req.accept(&q, &too_long)
    });
    let r = end.qp.connect(listener.local_addr(), &ConnParams::default());
    let accepted = t.join().unwrap();
    assert!(matches!(accepted, Err(AcceptError::Mpa(CmError::PrivateDataTooLong(509)))), "{accepted:?}");
    // The refused request was dropped, which closed the connection.
    assert!(matches!(r, Err(ConnectError::Closed)), "{r:?}");
    let (_dev, _c, _s, r, rejected) = handshake(ConnParams::default(), |req, _| req.reject(&[0; 509]));
    assert!(matches!(rejected, Err(AcceptError::Mpa(CmError::PrivateDataTooLong(509)))));
    assert!(matches!(r, Err(ConnectError::Closed)), "{r:?}");
}

#[test]
fn connect_request_accessors_describe_the_initiator() {
    let params = ConnParams {
        private_data: b"hello".to_vec(),
        responder_resources: 3,
        initiator_depth: 5,
        mpa: MpaOptions { crc: false, markers: true, rfc7306: false, ..MpaOptions::default() },
        ..ConnParams::default()
    };
    let (_dev, client, _server, r, seen) = handshake(params, |req, qp| {
        let seen = (
            req.peer_addr(),
            req.local_addr(),
            req.private_data().to_vec(),
            req.ird(),
            req.ord(),
            req.revision(),
            req.crc(),
            req.markers(),
            req.peer_to_peer(),
            req.rfc7306(),
        );
        req.accept(qp, &ConnParams::default()).unwrap();
        seen
    });
    r.unwrap();
    let (peer, local, pd, ird, ord, rev, crc, markers, p2p, rfc7306) = seen;
    assert_eq!(Some(peer), client.qp.local_addr());
    assert_eq!(local, client.qp.peer_addr());
    assert_eq!(pd, b"hello");
    assert_eq!((ird, ord, rev), (Some(3), Some(5), 2));
    assert_eq!((crc, markers, p2p, rfc7306), (false, true, None, false));

    // Revision 1: no IRD/ORD in the Request; peer-to-peer and RFC 7306 offers are visible.
    let params = ConnParams { mpa: MpaOptions { revision: 1, ..MpaOptions::default() }, ..ConnParams::default() };
    let (_dev, _c, _s, r, seen) = handshake(params, |req, qp| {
        let s = (req.revision(), req.ird(), req.ord(), req.crc(), req.markers(), req.rfc7306());
        req.accept(qp, &ConnParams::default()).unwrap();
        s
    });
    r.unwrap();
    assert_eq!(seen, (1, None, None, true, false, true));
    let mut params = ConnParams::default();
    params.mpa.peer_to_peer = Some(RtrTypes { send: false, write: true, read: true });
    let (_dev, _c, _s, r, seen) = handshake(params, |req, qp| {
        let s = req.peer_to_peer();
        req.accept(qp, &ConnParams::default()).unwrap();
        s
    });
    r.unwrap();
    assert_eq!(seen, Some(RtrTypes { send: false, write: true, read: true }));
}

/// RFC 6581 §9.1 as implemented: the responder's ORD is capped by the initiator's IRD and its
/// IRD raised to the initiator's ORD; the initiator's ORD is capped by the responder's IRD.
#[test]
fn ird_and_ord_are_negotiated_per_rfc6581() {
    for ((c_ird, c_ord), (s_ird, s_ord), (want_c, want_s)) in [
        ((4, 8), (16, 2), ((4, 8), (16, 2))),
        ((4, 8), (2, 16), ((4, 8), (8, 4))),
        ((1, 1), (1, 1), ((1, 1), (1, 1))),
        ((16, 2), (4, 4), ((16, 2), (4, 4))),
    ] {
        let params = ConnParams { responder_resources: c_ird, initiator_depth: c_ord, ..ConnParams::default() };
        let (_dev, client, server, r, seen) = handshake(params, move |req, qp| {
            let s = (req.ird(), req.ord());
            let p = ConnParams { responder_resources: s_ird, initiator_depth: s_ord, ..ConnParams::default() };
            req.accept(qp, &p).unwrap();
            s
        });
        r.unwrap();
        assert_eq!(seen, (Some(c_ird), Some(c_ord)));
        let (ci, si) = (client.qp.conn_info().unwrap(), server.qp.conn_info().unwrap());
        assert_eq!(
            ((ci.ird, ci.ord), (si.ird, si.ord)),
            (want_c, want_s),
            "client {c_ird}/{c_ord}, server {s_ird}/{s_ord}"
        );
        // The rule that matters: neither side's ORD exceeds the other's IRD.
        assert!(ci.ord <= si.ird && si.ord <= ci.ird);
    }
}

#[test]
fn reads_beyond_the_ord_wait_their_turn_and_all_complete() {
    let mut cfg = PairConfig::default();
    cfg.client.responder_resources = 2;
    cfg.client.initiator_depth = 3;
    cfg.server.responder_resources = 3;
    cfg.server.initiator_depth = 2;
    let p = Pair::with(cfg);
    let (ci, si) = (p.client.qp.conn_info().unwrap(), p.server.qp.conn_info().unwrap());
    assert_eq!((ci.ord, si.ird, si.ord, ci.ird), (3, 3, 2, 2));
    let n = 200usize;
    let src = p.mr(n * 256, all_access());
    let sink = p.mr(n * 256, all_access());
    let data = fill(&src, 0, n * 256, 9);
    let ssrc = p.mr(n * 256, all_access());
    let ssink = p.mr(n * 256, all_access());
    let sdata = fill(&ssrc, 0, n * 256, 10);
    let wrs: Vec<SendWr<'_>> =
        (0..n).map(|i| SendWr::read(i as u64, sink.sge(i * 256, 256), src.remote(i as u64 * 256))).collect();
    let swrs: Vec<SendWr<'_>> =
        (0..n).map(|i| SendWr::read(i as u64, ssink.sge(i * 256, 256), ssrc.remote(i as u64 * 256))).collect();
    p.client.qp.post_send(&wrs).unwrap();
    p.server.qp.post_send(&swrs).unwrap();
    let s = p.client.send_wcs(n);
    assert_ok(&s);
    assert!(s.iter().enumerate().all(|(i, c)| c.wr_id == i as u64));
    assert_ok(&p.server.send_wcs(n));
    assert_mr_eq(&sink, 0, &data, "client Reads");
    assert_mr_eq(&ssink, 0, &sdata, "server Reads");
    assert!(p.client.qp.poll_event().is_none_or(|e| matches!(e, QpEvent::Established)));
}

/// Disconnect while 28 MiB are queued (the peer, driven by this thread, is not reading
/// yet, so most of it cannot have left): every send work request completes, in posting order,
/// successfully (handed to TCP) or flushed; the peer's receives flush after the ones
/// delivered; both sides report `Disconnected`; posting afterwards fails.
///
/// Regression: work never started used to be flushed ahead of framed work still waiting for
/// the socket, so completions came out of posting order.
#[test]
fn disconnect_in_mid_transfer_completes_or_flushes_everything() {
    for initiator_disconnects in [true, false] {
        let mut cfg = PairConfig::default();
        if initiator_disconnects {
            cfg.server_progress = Some(Progress::Poll);
        } else {
            cfg.progress = Progress::Poll;
            cfg.server_progress = Some(Progress::Thread);
        }
        let p = Pair::with(cfg);
        let (me, peer) = if initiator_disconnects { (&p.client, &p.server) } else { (&p.server, &p.client) };
        let big = p.mr(MIB, all_access());
        let target = p.mr(MIB, all_access());
        let rbuf = p.mr(64 << 10, all_access());
        fill(&big, 0, MIB, 1);
        // Let the responder speak first.
        send_and_verify(&p.client, &p.server, &big, &rbuf, 1, 0);
        send_and_verify(&p.server, &p.client, &big, &rbuf, 1, 0);
        let (total, sends) = (300u64, 150u64);
        let rwrs: Vec<RecvWr<'_>> = (0..sends).map(|i| RecvWr::new(1000 + i, &[rbuf.sge(0, 64 << 10)])).collect();
        peer.qp.post_recv(&rwrs).unwrap();
        let mut wrs = Vec::new();
        // Messages much smaller than the bytes framed ahead of the socket, so that some are
        // framed and waiting when the disconnect comes.
        for i in 0..total {
            wrs.push(if i % 2 == 0 {
                SendWr::write(i, &[big.sge(0, 128 << 10)], target.remote(0))
            } else {
                SendWr::send(i, &[big.sge(0, 64 << 10)])
            });
        }
        me.qp.post_send(&wrs).unwrap();
        me.qp.disconnect();
        // Now let the peer read (polling drives it), and collect both sides' completions.
        let (mut s, mut r) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + WAIT;
        let mut buf = [WorkCompletion::default(); 64];
        while s.len() < total as usize || r.len() < sends as usize {
            assert!(Instant::now() < deadline, "{} send and {} receive completions", s.len(), r.len());
            let n = peer.rcq.wait(&mut buf, Some(Duration::from_millis(5)));
            r.extend_from_slice(&buf[..n]);
            let n = me.scq.poll(&mut buf);
            s.extend_from_slice(&buf[..n]);
        }
        assert!(
            s.iter().enumerate().all(|(i, c)| c.wr_id == i as u64),
            "posting order: {:?}",
            s.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>()
        );
        assert!(s.iter().all(|c| matches!(c.status, WcStatus::Success | WcStatus::WrFlush)), "{s:?}");
        let first_flush = s.iter().position(|c| c.status == WcStatus::WrFlush).expect("some work was flushed");
        assert!(s[first_flush..].iter().all(|c| c.status == WcStatus::WrFlush), "flushes follow successes");
        let delivered = s[..first_flush].iter().filter(|c| c.opcode == WcOpcode::Send).count();
        assert!(r.iter().enumerate().all(|(i, c)| c.wr_id == 1000 + i as u64), "receive order");
        let ok = r.iter().take_while(|c| c.status == WcStatus::Success).count();
        assert!(r[ok..].iter().all(|c| c.status == WcStatus::WrFlush), "{r:?}");
        // Every Send handed to TCP before the close was delivered, and none after.
        assert_eq!(ok, delivered, "delivered Sends");
        assert!(ok < sends as usize, "the disconnect cut the transfer short");
        for qp in [&me.qp, &peer.qp] {
            wait_event(qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
            assert_eq!(qp.state(), QpState::Error);
            assert_eq!(
                qp.post_send(&[SendWr::send(1, &[])]).map_err(|e| e.reason),
                Err(PostReason::InvalidState(QpState::Error))
            );
            assert_eq!(
                qp.post_recv(&[RecvWr::new(1, &[rbuf.sge(0, 8)])]).map_err(|e| e.reason),
                Err(PostReason::InvalidState(QpState::Error))
            );
        }
        assert_no_wc(&me.scq, Duration::from_millis(20));
        assert_no_wc(&peer.rcq, Duration::from_millis(20));
    }
}

#[test]
fn disconnecting_an_idle_connection_and_dropping_a_queue_pair_close_both_ends() {
    let p = Pair::new();
    let rb = p.mr(64, all_access());
    post_recv(&p.server.qp, 5, &rb, 0, 64);
    p.client.qp.disconnect();
    for qp in [&p.client.qp, &p.server.qp] {
        assert!(matches!(next_non_established(qp, WAIT), Some(QpEvent::Disconnected)));
    }
    let r = p.server.recv_wcs(1);
    assert_eq!((r[0].wr_id, r[0].status), (5, WcStatus::WrFlush));
    // A second disconnect is harmless.
    p.client.qp.disconnect();

    // Dropping the last handle of a queue pair closes its connection.
    let Pair { client, server, dev, .. } = Pair::new();
    drop(client);
    assert!(matches!(next_non_established(&server.qp, WAIT), Some(QpEvent::Disconnected)));
    drop(dev);
}

/// A disconnect sends FIN and keeps draining the socket until the peer closes too: bytes the
/// peer still sends (its last Write, a Terminate) never meet a reset, which would fail the
/// peer's sends in flight and throw away what it had queued.
#[test]
fn a_disconnect_is_a_fin_and_the_peer_may_still_send_until_it_closes() {
    for progress in [Progress::Thread, Progress::Poll] {
        disconnect_drains_until_the_peer_closes(progress);
    }
}

fn disconnect_drains_until_the_peer_closes(progress: Progress) {
    init_log();
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let server = End::new(&dev, &pd, QpCap::default(), progress);
    let mut raw = RawPeer::connect_request(listener.local_addr(), iwarp_wire::mpa::EnhancedParams::client_server(1, 1));
    let req = listener.get_request(Some(WAIT)).unwrap();
    req.accept(&server.qp, &ConnParams::default()).unwrap();
    let (crc, _, _) = raw.read_reply();
    assert!(crc);
    server.qp.disconnect();
    assert!(matches!(next_non_established(&server.qp, WAIT), Some(QpEvent::Disconnected)));
    // Our FIN arrives as end of stream, not as a reset.
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no FIN after disconnect");
        match raw.sock.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{progress:?}: reading after the disconnect: {e}"),
        }
    }
    // The peer's own data after our FIN is taken in (and dropped), not answered with RST: a
    // write after a reset would fail with EPIPE or ECONNRESET.
    let chunk = vec![0x5a; 64 << 10];
    for round in 0..3 {
        for _ in 0..4 {
            raw.sock.write_all(&chunk).unwrap_or_else(|e| panic!("{progress:?}, round {round}: {e}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(raw.sock.take_error().unwrap().is_none());
    match raw.sock.read(&mut buf) {
        Ok(0) => {}
        other => panic!("{progress:?}: after both FINs: {other:?}"),
    }
}

#[test]
fn a_port_is_held_by_one_listener_and_get_request_times_out() {
    let dev = device();
    let l = dev.listen(any_port(), 4).unwrap();
    let addr = l.local_addr();
    match dev.listen(addr, 4) {
        Err(ListenError::AddrInUse(a)) => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
    // Plain TCP shares the port space.
    assert!(TcpListener::bind(addr).is_err());
    let t = Instant::now();
    assert!(matches!(l.get_request(Some(Duration::from_millis(100))), Err(Error::TimedOut)));
    assert!(t.elapsed() < Duration::from_secs(2));
    // A connected queue pair cannot connect again.
    let p = Pair::new();
    assert!(p.client.qp.connect(addr, &ConnParams::default()).is_err());
}

/// An initiator closes on a malformed Reply (RFC 5044 §7.1.2) and reports why; a responder
/// asking for more outstanding Reads than we can serve gets the RFC 6581 Terminate (MPA code
/// 6) before the close.
#[test]
fn malformed_or_unservable_replies_fail_the_connect() {
    use iwarp_wire::mpa::rr::{FrameKind, FrameRepr};
    use iwarp_wire::mpa::EnhancedParams;
    for case in 0..4 {
        let l = TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let raw = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = [0u8; 24];
            s.read_exact(&mut req).unwrap();
            let mut reply =
                FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(16, 16), b"").to_vec().unwrap();
            match case {
                0 => reply[..16].copy_from_slice(b"MPA ID Req Frame"),
                1 => reply[17] = 3,
                2 => reply[18..20].copy_from_slice(&600u16.to_be_bytes()),
                _ => {
                    // ORD 0x2000: more than the device's 128.
                    reply = FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(16, 0x2000), b"")
                        .to_vec()
                        .unwrap();
                }
            }
            s.write_all(&reply).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            rest
        });
        let dev = device();
        let pd = dev.alloc_pd();
        let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
        let r = end.qp.connect(addr, &ConnParams::default());
        let rest = raw.join().unwrap();
        match (case, &r) {
            (0, Err(ConnectError::Mpa(CmError::Malformed(iwarp_wire::Error::BadKey { .. })))) => {}
            (1, Err(ConnectError::Mpa(CmError::Malformed(iwarp_wire::Error::UnsupportedRevision(3))))) => {}
            (2, Err(ConnectError::Mpa(CmError::Malformed(iwarp_wire::Error::PrivateDataTooLong(600))))) => {}
            (3, Err(ConnectError::Mpa(CmError::InsufficientIrd { peer_ord: 0x2000, max: 128, .. }))) => {
                // A bare Terminate: LLP, MPA, code 6.
                assert_eq!(rest.len(), 28, "{rest:02x?}");
                assert_eq!(&rest[..4], &[0x00, 0x16, 0x41, 0x47]);
                assert_eq!(&rest[20..24], &[0x20, 0x06, 0x00, 0x00]);
            }
            _ => panic!("case {case}: {r:?}"),
        }
        if case < 3 {
            assert!(rest.is_empty(), "nothing after a malformed Reply: {rest:02x?}");
        }
        assert!(matches!(end.qp.next_event(WAIT), Some(QpEvent::ConnectFailed(ConnectError::Mpa(_)))));
    }
}

/// Requests the listener cannot accept (revision 3, private data over 512 bytes, an FPDU
/// glued to the Request) close the connection at once and never reach the application.
#[test]
fn malformed_requests_are_dropped_at_once() {
    use iwarp_wire::mpa::rr::{FrameKind, FrameRepr};
    use iwarp_wire::mpa::EnhancedParams;
    let dev = device();
    let listener = dev.listen(any_port(), 16).unwrap();
    let good = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(1, 1), b"").to_vec().unwrap();
    for case in 0..3 {
        let mut req = good.clone();
        match case {
            0 => req[17] = 3,
            1 => req[18..20].copy_from_slice(&513u16.to_be_bytes()),
            _ => req.extend_from_slice(&[0, 0x0e, 0xc1, 0x40]),
        }
        let mut s = TcpStream::connect(listener.local_addr()).unwrap();
        s.write_all(&req).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = Instant::now();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("case {case}: {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2), "case {case}: closed at once");
    }
    assert!(matches!(listener.get_request(Some(Duration::from_millis(100))), Err(Error::TimedOut)));
}

/// Two copies of this stack agree to FPDUs larger than the MSS unless either side declines,
/// and a transfer under the agreement arrives whole.
#[test]
fn large_fpdus_are_agreed_unless_a_side_declines() {
    let off = MpaOptions { large_fpdus: false, ..MpaOptions::default() };
    for (client_on, server_on) in [(true, true), (false, true), (true, false)] {
        let params =
            ConnParams { mpa: if client_on { MpaOptions::default() } else { off.clone() }, ..ConnParams::default() };
        let server_mpa = if server_on { MpaOptions::default() } else { off.clone() };
        let (_dev, client, server, r, offered) = handshake(params, move |req, qp| {
            let offered = req.large_fpdus();
            req.accept(qp, &ConnParams { mpa: server_mpa, ..ConnParams::default() }).unwrap();
            offered
        });
        r.unwrap();
        assert_eq!(offered, client_on);
        let both = client_on && server_on;
        assert_eq!(client.qp.conn_info().unwrap().large_fpdus, both);
        assert_eq!(server.qp.conn_info().unwrap().large_fpdus, both);
    }
}

/// The verbs' rule for a queue pair moved to the error state: everything posted completes
/// flushed, even on one that never had a connection; nothing more can be posted; an armed
/// completion queue signals its channel for them. In both progress modes.
#[test]
fn disconnecting_a_queue_pair_never_connected_flushes_its_receives() {
    for progress in [Progress::Thread, Progress::Poll] {
        let dev = device();
        let pd = dev.alloc_pd();
        let ch = dev.create_comp_channel().unwrap();
        let scq = dev.create_cq(16).unwrap();
        let rcq = dev.create_cq_with_channel(16, &ch).unwrap();
        let mut init = QpInit::new(&scq, &rcq);
        init.progress = progress;
        let qp = pd.create_qp(&init).unwrap();
        let mr = pd.reg_mr(256, all_access()).unwrap();
        for i in 0..3 {
            post_recv(&qp, 10 + i, &mr, 64 * i as usize, 64);
        }
        rcq.req_notify(false);
        qp.disconnect();
        let wcs = wait_wcs(&rcq, 3, WAIT);
        let got: Vec<(u64, WcStatus, WcOpcode)> = wcs.iter().map(|w| (w.wr_id, w.status, w.opcode)).collect();
        assert_eq!(
            got,
            [
                (10, WcStatus::WrFlush, WcOpcode::Recv),
                (11, WcStatus::WrFlush, WcOpcode::Recv),
                (12, WcStatus::WrFlush, WcOpcode::Recv)
            ],
            "{progress:?}"
        );
        assert!(wcs.iter().all(|w| w.qp_num == qp.qp_num()));
        assert_eq!(ch.get_event(Some(WAIT)), Some(rcq.id()), "the armed queue signalled its channel");
        assert_eq!(qp.state(), QpState::Error);
        assert!(matches!(
            qp.post_recv(&[RecvWr::new(20, &[mr.sge(0, 8)])]).map_err(|e| e.reason),
            Err(PostReason::InvalidState(QpState::Error))
        ));
        assert_no_wc(&scq, Duration::from_millis(50));

        // What a verbs layer completes itself for work posted now: on the right queues, in
        // posting order, signalling the channel (a solicited-only arming fires for a flush).
        rcq.req_notify(true);
        qp.complete_flushed([(20, WcOpcode::Recv), (21, WcOpcode::Send)]);
        let r = wait_wcs(&rcq, 1, WAIT);
        assert_eq!(
            (r[0].wr_id, r[0].status, r[0].opcode, r[0].qp_num),
            (20, WcStatus::WrFlush, WcOpcode::Recv, qp.qp_num())
        );
        let s = wait_wcs(&scq, 1, WAIT);
        assert_eq!((s[0].wr_id, s[0].status, s[0].opcode), (21, WcStatus::WrFlush, WcOpcode::Send));
        assert_eq!(ch.get_event(Some(WAIT)), Some(rcq.id()));
    }
}

/// Flushed completions a verbs layer adds wait until the queue pair is in error, behind the
/// work it flushes itself.
#[test]
fn completions_flushed_by_the_caller_follow_the_queue_pairs_own() {
    let dev = device();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(16).unwrap();
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
    let mr = pd.reg_mr(64, all_access()).unwrap();
    post_recv(&qp, 1, &mr, 0, 64);
    qp.complete_flushed([(2, WcOpcode::Recv)]);
    assert_no_wc(&cq, Duration::from_millis(100));
    qp.disconnect();
    let got: Vec<(u64, WcStatus)> = wait_wcs(&cq, 2, WAIT).iter().map(|w| (w.wr_id, w.status)).collect();
    assert_eq!(got, [(1, WcStatus::WrFlush), (2, WcStatus::WrFlush)]);
}

/// A peer's last FPDU and its FIN arriving together, before the event loop reads (an idle
/// loop wakes after both are queued): the short read of the FPDU must not end the turn with
/// the end of stream unread, for no new readiness edge follows it. Each of many rounds must
/// see the Send and then the disconnection at once (it used to wait for a timer, seconds).
#[test]
fn a_last_fpdu_and_fin_arriving_together_are_both_taken() {
    init_log();
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let rb = pd.reg_mr(4096, all_access()).unwrap();
    for round in 0..20 {
        let progress = if round % 2 == 0 { Progress::Thread } else { Progress::Assisted };
        let server = End::new(&dev, &pd, QpCap::default(), progress);
        post_recv(&server.qp, 1, &rb, 0, 4096);
        let mut raw =
            RawPeer::connect_request(listener.local_addr(), iwarp_wire::mpa::EnhancedParams::client_server(1, 1));
        listener.get_request(Some(WAIT)).unwrap().accept(&server.qp, &ConnParams::default()).unwrap();
        raw.read_reply();
        server.qp.wait_established(WAIT).unwrap();
        // Let the event loop go idle (past its spin after activity), then FPDU and FIN.
        std::thread::sleep(Duration::from_millis(20));
        let fpdu = raw.fpdu(
            iwarp_wire::SegmentHeader::untagged(iwarp_wire::Opcode::Send, true, iwarp_wire::Msn(1), 0),
            &[],
            b"last words",
        );
        raw.sock.write_all(&fpdu).unwrap();
        raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let t0 = Instant::now();
        let wc = server.recv_wcs(1);
        assert_eq!(wc[0].status, WcStatus::Success, "round {round} ({progress:?})");
        let ev = next_non_established(&server.qp, Duration::from_secs(5));
        let took = t0.elapsed();
        assert!(
            matches!(ev, Some(QpEvent::Disconnected | QpEvent::Error { .. })),
            "round {round} ({progress:?}): {ev:?}"
        );
        assert!(took < Duration::from_secs(1), "round {round} ({progress:?}): end of stream seen after {took:?}");
    }
}
