//! Connection storms: thousands of connections against one listener, most of them abandoned
//! before or during the MPA exchange, some held silent half-way through their MPA Request,
//! while a queue pair on the same listener carries verified traffic. Needs root and
//! `ip netns`.

mod common;

use common::*;
use iwarp_faults::num;
use std::time::{Duration, Instant};

/// The server's MPA Request timeout in this test.
const MPA_TIMEOUT_MS: u64 = 2000;

#[test]
fn storm_of_5000_connections_leaves_the_listener_serving_and_no_descriptor_behind() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    let timeout = format!("mpa_timeout={MPA_TIMEOUT_MS}");
    let mut srv = server(&lab, 7000, &[&timeout, "backlog=512", "region=1048576", "depth=16"]);
    srv.quiet("accepted");
    srv.quiet("server_conn");
    let mut stream = client(&lab, &[7000], &["secs=120", "maxwrite=65536", "slot=65536", "window=8"]);
    std::thread::sleep(Duration::from_millis(500));
    let fds0 = srv.fd_count().expect("server fds");
    let threads0 = srv.threads().unwrap_or(0);
    let mut storm = initiator(
        &lab,
        "storm",
        7000,
        &["count=5000", "secs=30", "threads=4", "full_every=10", "silent_every=50", "watch=10"],
    );
    std::thread::sleep(Duration::from_millis(300));
    // A real connection made during the storm.
    let t = Instant::now();
    let mut during = client(&lab, &[7000], &["msgs=20", "maxwrite=65536", "slot=65536"]);
    let during_ready = t.elapsed();
    assert!(
        storm.wait_line("storm ", Duration::ZERO).is_none(),
        "the storm was over before the connection made during it"
    );
    let fds_peak = srv.fd_count().unwrap_or(0);
    let r = result(&during.finish("result", Duration::from_secs(30)), 0);
    assert_clean(&r);
    assert_eq!(num(&r, "msgs"), Some(20), "{r}");
    let line = storm.wait_line("storm ", Duration::from_secs(60)).expect("storm report");
    stream.tell("mark");
    assert_eq!(num(&line, "connections"), Some(5000), "{line}");
    assert_eq!(num(&line, "failed"), Some(0), "{line}");
    let secs: f64 = iwarp_faults::field(&line, "secs").and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
    assert!(secs <= 30.0, "{line}");
    // Every connection held silent half-way through its Request is closed by the listener
    // once the MPA timeout passes, and not before.
    let silent = storm.wait_line("silent ", Duration::from_secs(30)).expect("silent report");
    assert_eq!(num(&silent, "held"), num(&line, "silent"), "{silent}");
    assert_eq!(num(&silent, "open"), Some(0), "{silent}");
    let (min, max) = (num(&silent, "min_close_ms").unwrap_or(0), num(&silent, "max_close_ms").unwrap_or(u64::MAX));
    assert!(min >= MPA_TIMEOUT_MS - 100, "a silent connection was closed before the MPA timeout: {silent}");
    assert!(max <= MPA_TIMEOUT_MS + 3000, "a silent connection outlived the MPA timeout: {silent}");
    // A real connection after the storm.
    let t = Instant::now();
    let mut after = client(&lab, &[7000], &["msgs=20", "maxwrite=65536", "slot=65536"]);
    let after_ready = t.elapsed();
    let r = result(&after.finish("result", Duration::from_secs(30)), 0);
    assert_clean(&r);
    // Every storm connection that completed MPA was accepted onto a queue pair and ended
    // cleanly (the storm closed it), with all its work requests accounted for; every whole
    // Request whose peer left before the Reply reached the application, whose accept either
    // found the peer gone or ended as soon as it began.
    let (full, requests) = (num(&line, "full").unwrap_or(0), num(&line, "request").unwrap_or(0));
    let conns = 3 + (full + requests) as usize;
    let n = srv.wait_count("server_conn", conns - 1, Duration::from_secs(20));
    assert_eq!(n, conns - 1, "server connections reported (all but the stream's)");
    let mut gone = 0;
    for s in srv.seen("server_conn") {
        if s.contains("fatal=") {
            assert!(s.contains("the peer closed the connection"), "only AcceptError::PeerGone: {s}");
            gone += 1;
            continue;
        }
        assert_eq!(num(&s, "bad"), Some(0), "{s}");
        assert_eq!(num(&s, "outstanding"), Some(0), "{s}");
        assert_eq!(num(&s, "in_order"), Some(1), "{s}");
    }
    assert!(gone <= requests, "{gone} accepts found the peer gone, of {requests} abandoned Requests");
    // The server's descriptors come back to where they were with only the stream connected.
    let t = Instant::now();
    let mut fds = srv.fd_count().unwrap_or(usize::MAX);
    while fds > fds0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        fds = srv.fd_count().unwrap_or(usize::MAX);
    }
    let threads = srv.threads().unwrap_or(0);
    assert!(fds <= fds0, "server descriptors: {fds0} before the storm, {fds} after");
    // The stream ran through it all with every byte verified.
    stream.tell("stop");
    let r = result(&stream.finish("result", Duration::from_secs(30)), 0);
    assert_clean(&r);
    assert!(num(&r, "after_mark").unwrap_or(0) > 0, "the stream stopped with the storm: {r}");
    let s = srv.wait_count("server_conn", conns, Duration::from_secs(10));
    assert_eq!(s, conns);
    let last = srv.seen("server_conn").pop().unwrap_or_default();
    assert_eq!(num(&last, "verified"), num(&r, "bytes"), "{last}");
    eprintln!(
        "storm: {line}\n  {silent}\n  accepts that found the peer gone: {gone}\n  connect during the storm ready in {during_ready:?}, after it in {after_ready:?}\n  \
         server descriptors {fds0} before, {fds_peak} during, {fds} after; threads {threads0} before, {threads} after\n  \
         stream: {} messages, {} bytes verified",
        num(&r, "msgs").unwrap_or(0),
        num(&r, "bytes").unwrap_or(0)
    );
}
