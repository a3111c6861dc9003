//! Connection storms: thousands of connections against one listener, most of them abandoned
//! before or during the MPA exchange, some held silent half-way through their MPA Request,
//! while a queue pair on the same listener carries verified traffic. Needs root and
//! `ip netns`.

mod common;

use common::*;
use iwarp_faults::{num, Side, ADDR_B};
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
    // The timeout runs from the server's accept, which may lag the connect by up to the
    // storm's length when the machine is busy.
    let bound = MPA_TIMEOUT_MS + (secs * 1000.0) as u64 + 3000;
    assert!(max <= bound, "a silent connection outlived the MPA timeout (bound {bound} ms): {silent}");
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

#[test]
fn listener_out_of_descriptors_takes_the_queued_connections_once_descriptors_are_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    // A server allowed 64 descriptors (`prlimit` sets the limit, then executes the server in
    // place); 100 connections that each send half an MPA Request and stay silent. The server
    // runs out of descriptors part way: the rest wait in the kernel's accept queue. When the
    // MPA timeout closes the first ones, descriptors come back and no new connection arrives:
    // the listener must go back for the queued ones by itself.
    let timeout = format!("mpa_timeout={MPA_TIMEOUT_MS}");
    let listen = format!("listen={ADDR_B}:7000");
    let a = args(&["--nofile=64:64", PEER, "server", &listen, &timeout, "backlog=256"]);
    let mut srv = lab.spawn(Side::B, "prlimit", &a).expect("server");
    srv.wait_line("listening", Duration::from_secs(10)).expect("server listening");
    let watch = format!("watch={}", 5 * MPA_TIMEOUT_MS / 1000);
    let mut storm =
        initiator(&lab, "storm", 7000, &["count=100", "threads=1", "full_every=0", "silent_every=1", &watch]);
    let line = storm.wait_line("storm ", Duration::from_secs(30)).expect("storm report");
    assert_eq!(num(&line, "failed"), Some(0), "{line}");
    // The most descriptors the server holds over the next second.
    let t = Instant::now();
    let mut full = 0;
    while t.elapsed() < Duration::from_secs(1) {
        full = full.max(srv.fd_count().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let silent = storm.wait_line("silent ", Duration::from_secs(30)).expect("silent report");
    assert_eq!(num(&silent, "held"), Some(100), "{silent}");
    assert!(full >= 63, "the server never ran out of descriptors ({full} open)");
    // Every connection was taken and timed out, the queued ones one MPA timeout or more later.
    assert_eq!(num(&silent, "open"), Some(0), "connections left in the accept queue: {silent}");
    let max = num(&silent, "max_close_ms").unwrap_or(0);
    assert!(max >= 2 * MPA_TIMEOUT_MS - 100, "nothing waited for descriptors: {silent}");
    // And the listener serves a real connection.
    let mut cl = client(&lab, &[7000], &["msgs=20"]);
    let r = result(&cl.finish("result", Duration::from_secs(30)), 0);
    assert_clean(&r);
    eprintln!("out of descriptors: {line}\n  {silent}\n  server descriptors at the storm's end: {full}");
}
