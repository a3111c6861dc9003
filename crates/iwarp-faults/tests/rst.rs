//! Resets: an RST injected into a live connection, and the half-open connection a server's
//! restart leaves behind (the client learns of the restart only when its next segment is
//! answered with an RST). Needs root, `ip netns` and `iptables-legacy`.

mod common;

use common::*;
use iwarp_faults::{field, num, Side};
use std::time::{Duration, Instant};

#[test]
fn rst_injected_mid_stream_ends_only_that_queue_pair_with_everything_flushed_in_order() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(true, 9000) else { return };
    // The victim's server learns of the end only when a segment of its own reaches the
    // client: keepalive after 2 s makes sure one does if it has nothing else to send.
    let mut victim = server(&lab, 7000, &[LIVE]);
    let mut bystander = server(&lab, 7001, &[]);
    let mut cl = client(&lab, &[7000, 7001], &["secs=5", "maxwrite=262144", "slot=262144", "maxsend=8192"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Detection is timed from the mark, so it goes first (it includes the rule's insertion).
    cl.tell("mark");
    cl.wait_line("marked", Duration::from_secs(5)).expect("marked");
    // Every segment the client sends to port 7000 is answered by an RST from the server's
    // namespace; the server's socket hears nothing more.
    let rule = lab.reset_to_sender(Side::B, 7000).expect("iptables");
    cl.wait_line("result qp=0", Duration::from_secs(30)).expect("the victim queue pair ended");
    // The rule also drops the RSTs the client's kernel sends back for the server's segments
    // (they arrive for port 7000): out of the way once the client is reset.
    let answered = lab.dropped(Side::B, "INPUT").unwrap_or(0);
    drop(rule);
    let lines = cl.finish("result", Duration::from_secs(60));
    let dead = result(&lines, 0);
    assert_accounted(&dead);
    assert_eq!(field(&dead, "event"), Some("error"), "an RST is an error, not a close: {dead}");
    assert!(num(&dead, "flushed").unwrap_or(0) >= 1, "{dead}");
    assert_eq!(num(&dead, "read_bad"), Some(0), "{dead}");
    let detect = num(&dead, "detect_ms").expect("detected");
    assert!(detect <= 1000, "the RST was acted on after {detect} ms");
    assert!(answered >= 1, "no segment was answered with an RST");
    let alive = result(&lines, 1);
    assert_clean(&alive);
    assert!(num(&alive, "after_death").unwrap_or(0) > 0, "the other queue pair stopped: {alive}");
    let s = bystander.finish("server_conn", Duration::from_secs(3));
    let s = s.first().expect("bystander report");
    assert_eq!(num(s, "bad"), Some(0), "{s}");
    assert_eq!(num(s, "verified"), num(&alive, "bytes"), "{s}");
    // The victim's server learns of the end from the client's kernel: its own next segment
    // finds no connection there and is answered with an RST.
    let v = victim.wait_line("server_conn", Duration::from_secs(10)).expect("victim server report");
    assert_eq!(num(&v, "bad"), Some(0), "{v}");
    assert_eq!(num(&v, "outstanding"), Some(0), "{v}");
    assert_eq!(num(&v, "in_order"), Some(1), "{v}");
    eprintln!("RST injected: noticed after {detect} ms, {answered} segments answered with an RST");
}

/// The server's host crashes and restarts while the client waits for answers (`busy`:
/// `false`; its every byte acknowledged, its next segment a keepalive probe) or while the
/// client's bytes wait for the stopped server's window to open (`busy`; its next segment a
/// window probe, backing off exponentially from the moment the window closed).
fn half_open(busy: bool) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(true, 1500) else { return };
    let total = 48u64 << 20;
    let region = format!("region={total}");
    let mut old = server(&lab, 7000, &[&region]);
    let total_arg = format!("total={total}");
    let (mut cl, stopped) = if busy {
        // A flood of Writes, with no keepalive and no user timeout: only an RST can end it.
        let mut cl = client(&lab, &[7000], &["mode=flood", &total_arg, "sq=64", "pause=4194304", "live=off"]);
        cl.wait_line("paused", Duration::from_secs(30)).expect("client paused");
        // The server stops reading; the flood fills both socket buffers and the send queue.
        old.signal("STOP").expect("stop");
        let stopped = Instant::now();
        cl.tell("go");
        cl.wait_line("queue_full", Duration::from_secs(10)).expect("the flood never filled the send queue");
        (cl, stopped)
    } else {
        // Keepalive after 2 s of silence, probes every 2 s, no user timeout: three unanswered
        // probes (8 s of silence) would end the connection, an RST ends it at once. Traffic
        // stops after 20 messages: every byte acknowledged, nothing to retransmit.
        let mut cl = client(&lab, &[7000], &["msgs=20", "hold=60", "live=2,2,0"]);
        cl.wait_line("idle", Duration::from_secs(30)).expect("client idle");
        (cl, Instant::now())
    };
    // The server's host "crashes": nothing it sends gets out, the process dies, its kernel
    // forgets the connection (its FIN or RST dropped on the way), and a new server starts on
    // the same port: half-open, the client's side still established.
    let silence = Instant::now();
    let blackhole = lab.blackhole(Side::B).expect("iptables");
    old.signal("KILL").expect("kill");
    assert!(old.wait_exit(Duration::from_secs(5)).is_some(), "old server still running");
    lab.forget_tcp(Side::B).expect("ss -K");
    let left = lab.tcp_sockets(Side::B);
    assert!(left.is_empty(), "the server's side of the connection outlived the crash: {left:?}");
    let mut new = server(&lab, 7000, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cl.seen("result").is_empty(), "the client noticed before the restart was visible");
    assert_eq!(lab.tcp_sockets(Side::A).len(), 1, "the client's side is still established: half-open");
    let before = silence.elapsed();
    let since_stop = stopped.elapsed();
    drop(blackhole);
    cl.tell("mark");
    let lines = cl.finish("result", Duration::from_secs(30));
    let r = result(&lines, 0);
    let ended = silence.elapsed();
    assert_accounted(&r);
    assert_eq!(field(&r, "event"), Some("error"), "{r}");
    assert!(num(&r, "flushed").unwrap_or(0) >= 1, "{r}");
    let detect = num(&r, "detect_ms").expect("detected");
    // The client's next probe meets the restarted host, whose listener answers a segment of
    // no connection it knows with an RST.
    if busy {
        // Window probes back off exponentially from the closing of the window (after the stop,
        // before the crash): the next comes at most about as long after the path is back as
        // the server had been stopped, plus the minimum RTO and slack.
        let bound = since_stop.as_millis() as u64 + 1000;
        assert!(detect <= bound, "the half-open connection ended {detect} ms after the path came back (bound {bound})");
    } else {
        assert_eq!(num(&r, "read_bad"), Some(0), "{r}");
        // At most one 2 s keepalive interval away; well before keepalive would have given up
        // (8 s of silence).
        assert!(detect <= 2000 + 1500, "the half-open connection ended {detect} ms after the path came back");
        assert!(ended < Duration::from_secs(8), "ended by keepalive's timeout, not by an RST: {ended:?} of silence");
    }
    eprintln!(
        "half-open ({}): path back after {before:?}; reset {detect} ms later",
        if busy { "window probe" } else { "keepalive probe" }
    );
    // The restarted server serves a new connection.
    let mut again = client(&lab, &[7000], &["msgs=30"]);
    let lines = again.finish("result", Duration::from_secs(30));
    let r = result(&lines, 0);
    assert_clean(&r);
    assert_eq!(num(&r, "msgs"), Some(30), "{r}");
    let s = new.wait_line("server_conn", Duration::from_secs(10)).expect("new server report");
    assert_eq!(num(&s, "bad"), Some(0), "{s}");
    assert_eq!(num(&s, "verified"), num(&r, "bytes"), "{s}");
    assert_eq!(num(&s, "n"), Some(1), "the stale connection reached the new server: {s}");
}

#[test]
fn half_open_connection_waiting_for_answers_is_reset_by_its_next_keepalive_probe_and_the_new_server_serves() {
    half_open(false);
}

#[test]
fn half_open_connection_with_bytes_queued_is_reset_by_its_next_window_probe_and_the_new_server_serves() {
    half_open(true);
}
