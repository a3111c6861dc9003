//! Transport failures under a live queue pair: a reset connection surfaces as the queue pair's
//! error event and flushes every outstanding work request in posting order, whether the queue
//! pair was busy or idle. (Keepalive and `TCP_USER_TIMEOUT` end a connection the same way, with
//! `ETIMEDOUT`; the fault suite in `crates/iwarp-faults` shows that over a veth pair.)

mod common;

use common::*;
use iwarp::*;
use iwarp_wire::mpa::EnhancedParams;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Connects a queue pair to a raw responder, posts three receives and two Reads the raw peer
/// never answers, then resets the connection from the raw side.
fn reset_under(progress: Progress) {
    init_log();
    let dev = device();
    let pd = dev.alloc_pd();
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(4, 4)));
    let end = End::new(&dev, &pd, PairConfig::default().cap, progress);
    end.qp.connect(addr, &ConnParams::default()).unwrap();
    let raw = raw.join().unwrap();
    let sink = pd.reg_mr(4096, all_access()).unwrap();
    for i in 0..3 {
        post_recv(&end.qp, 10 + i, &sink, 0, 64);
    }
    let remote = RemoteAddr::unbounded(Stag(0x1234_5600), 0);
    end.qp
        .post_send(&[SendWr::read(1, sink.sge(0, 128), remote), SendWr::read(2, sink.sge(128, 128), remote)])
        .unwrap();
    // A polled queue pair must see its sends go out before the peer is gone.
    std::thread::sleep(Duration::from_millis(50));
    if progress == Progress::Poll {
        let mut none = [WorkCompletion::default(); 1];
        assert_eq!(end.scq.poll(&mut none), 0);
    }
    // SO_LINGER 0: close with RST.
    socket2::SockRef::from(&raw.sock).set_linger(Some(Duration::ZERO)).unwrap();
    let t0 = Instant::now();
    drop(raw);
    let sends = end.send_wcs(2);
    assert_eq!(
        sends.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
        [(1, WcStatus::WrFlush), (2, WcStatus::WrFlush)]
    );
    let recvs = end.recv_wcs(3);
    assert_eq!(
        recvs.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
        [(10, WcStatus::WrFlush), (11, WcStatus::WrFlush), (12, WcStatus::WrFlush)]
    );
    let ev = next_non_established(&end.qp, WAIT);
    assert!(matches!(ev, Some(QpEvent::Error { cause: None, remote: false, .. })), "{ev:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "noticed after {:?}", t0.elapsed());
    // Nothing more arrives, and later posts are refused or flushed, never silent.
    assert_no_wc(&end.scq, Duration::from_millis(50));
    assert_eq!(end.qp.state(), QpState::Error);
}

#[test]
fn a_reset_connection_reports_an_error_and_flushes_in_order() {
    reset_under(Progress::Thread);
}

#[test]
fn a_reset_connection_of_a_polled_queue_pair_reports_an_error_and_flushes_in_order() {
    reset_under(Progress::Poll);
}
