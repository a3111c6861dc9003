//! A thousand peer deaths: one long-lived server process whose peers, one after another, move
//! data and die with work in flight, and what that leaves behind in it. Needs root and
//! `ip netns`.
//!
//! The dying peers are connections of one process (`iwfault-peer reset`) that speaks MPA and
//! DDP/RDMAP by hand and ends each connection with an RST (`SO_LINGER` 0), which is what the
//! server sees of a peer process killed with bytes unread: a thousand SIGKILLed processes
//! would cost about as many `ip netns exec` starts and device setups for the same view.

mod common;

use common::*;
use iwarp_faults::{field, num};
use std::time::{Duration, Instant};

/// Resident memory the server may gain between the 100th and the 1,000th death.
const RSS_BOUND: u64 = 2 << 20;

#[test]
fn a_thousand_peers_reset_with_work_in_flight_leave_no_descriptor_thread_or_memory_behind() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    let mut srv = server(&lab, 7000, &["region=65536", "depth=16"]);
    srv.quiet("accepted");
    srv.quiet("server_conn");
    let (fds0, threads0) = (srv.fd_count().expect("server fds"), srv.threads().expect("server threads"));
    let start = Instant::now();
    let mut peers = initiator(&lab, "reset", 7000, &["count=1000", "msgs=3", "pause_at=100"]);
    peers.wait_line("paused", Duration::from_secs(60)).expect("100 deaths");
    assert_eq!(srv.wait_count("server_conn", 100, Duration::from_secs(20)), 100);
    // A connection's thread reports, then returns: give the last ones a moment (up to 5 s)
    // to come back to the start's descriptors and threads.
    let settled = |srv: &mut iwarp_faults::Peer| {
        let t = Instant::now();
        loop {
            let (fds, threads) = (srv.fd_count().unwrap_or(usize::MAX), srv.threads().unwrap_or(u64::MAX));
            if (fds <= fds0 && threads <= threads0) || t.elapsed() > Duration::from_secs(5) {
                return (fds, threads);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (fds100, threads100) = settled(&mut srv);
    let rss100 = srv.rss().unwrap_or(0);
    peers.tell("go");
    let done = peers.wait_line("reset_done", Duration::from_secs(180)).expect("1000 deaths");
    assert_eq!(srv.wait_count("server_conn", 1000, Duration::from_secs(30)), 1000);
    let (fds1000, threads1000) = settled(&mut srv);
    let rss1000 = srv.rss().unwrap_or(u64::MAX);
    let took = start.elapsed();
    assert_eq!(num(&done, "errors"), Some(0), "{done}");
    assert_eq!(num(&done, "acked"), Some(3000), "every message before the reset was answered: {done}");
    // Every connection: its messages verified, then reset, every work request still posted
    // flushed, in posting order.
    let conns = srv.seen("server_conn");
    for s in &conns {
        assert_eq!(num(s, "bad"), Some(0), "{s}");
        assert!(num(s, "msgs").unwrap_or(0) >= 3, "{s}");
        assert_eq!(field(s, "end"), Some("error"), "a reset is an error: {s}");
        assert_eq!(num(s, "outstanding"), Some(0), "{s}");
        assert_eq!(num(s, "posted"), num(s, "completed"), "{s}");
        assert_eq!(num(s, "in_order"), Some(1), "{s}");
        assert!(num(s, "flushed").unwrap_or(0) >= 1, "the receives still posted were not flushed: {s}");
    }
    let flushed: u64 = conns.iter().filter_map(|s| num(s, "flushed")).sum();
    let verified: u64 = conns.iter().filter_map(|s| num(s, "verified")).sum();
    assert!(
        fds100 <= fds0 && fds1000 <= fds0,
        "server descriptors: {fds0} at start, {fds100} after 100 deaths, {fds1000} after 1000"
    );
    assert!(
        threads100 <= threads0 && threads1000 <= threads0,
        "server threads: {threads0} at start, {threads100} after 100 deaths, {threads1000} after 1000"
    );
    let grew = rss1000.saturating_sub(rss100);
    assert!(grew <= RSS_BOUND, "server memory grew by {grew} bytes between the 100th and the 1000th death");
    eprintln!(
        "1000 deaths in {took:?}: {done}\n  server descriptors {fds0} at start, {fds100} after 100, {fds1000} after 1000; \
         threads {threads0} / {threads100} / {threads1000}; resident {} KiB after 100, {} KiB after 1000 (+{} KiB)\n  \
         {verified} bytes verified, {flushed} work requests flushed",
        rss100 >> 10,
        rss1000 >> 10,
        grew >> 10
    );
}

#[test]
fn five_hundred_peers_reset_at_once_leave_every_request_flushed_and_no_descriptor_behind() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    let mut srv = server(&lab, 7000, &["region=65536", "depth=16", "backlog=512"]);
    srv.quiet("accepted");
    srv.quiet("server_conn");
    let (fds0, threads0) = (srv.fd_count().expect("server fds"), srv.threads().expect("server threads"));
    // 500 connections, each with its messages answered, held open together (the peer pauses
    // with all of them established), then all reset at once.
    let mut peers = initiator(&lab, "reset", 7000, &["count=500", "msgs=3", "batch=1000", "pause_at=500"]);
    let paused = peers.wait_line("paused", Duration::from_secs(60)).expect("500 connections");
    assert_eq!(num(&paused, "held"), Some(500), "{paused}");
    let (fds_held, threads_held) = (srv.fd_count().unwrap_or(0), srv.threads().unwrap_or(0));
    let t = Instant::now();
    peers.tell("go");
    let done = peers.wait_line("reset_done", Duration::from_secs(30)).expect("reset");
    assert_eq!(num(&done, "errors"), Some(0), "{done}");
    assert_eq!(num(&done, "acked"), Some(1500), "{done}");
    assert_eq!(srv.wait_count("server_conn", 500, Duration::from_secs(30)), 500);
    let reported = t.elapsed();
    for s in srv.seen("server_conn") {
        assert_eq!(num(&s, "bad"), Some(0), "{s}");
        assert_eq!(field(&s, "end"), Some("error"), "a reset is an error: {s}");
        assert_eq!(num(&s, "outstanding"), Some(0), "{s}");
        assert_eq!(num(&s, "in_order"), Some(1), "{s}");
    }
    let t2 = Instant::now();
    let (mut fds, mut threads) = (usize::MAX, u64::MAX);
    while (fds > fds0 || threads > threads0) && t2.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        (fds, threads) = (srv.fd_count().unwrap_or(usize::MAX), srv.threads().unwrap_or(u64::MAX));
    }
    assert!(
        fds <= fds0 && threads <= threads0,
        "server: {fds0} descriptors and {threads0} threads at start, {fds} and {threads} after"
    );
    eprintln!(
        "500 at once: server held {fds_held} descriptors and {threads_held} threads; all 500 ends reported {reported:?} after the resets; back to {fds} descriptors and {threads} threads"
    );
}
