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
    let mut victim = server(&lab, 7000, &[]);
    let mut bystander = server(&lab, 7001, &[]);
    let mut cl = client(&lab, &[7000, 7001], &["secs=5", "maxwrite=262144", "slot=262144", "maxsend=8192"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Detection is timed from the mark, so it goes first (it includes the rule's insertion).
    cl.tell("mark");
    cl.wait_line("marked", Duration::from_secs(5)).expect("marked");
    // Every segment the client sends to port 7000 is answered by an RST from the server's
    // namespace; the server's socket hears nothing more.
    let rule = lab.reset_to_sender(Side::B, 7000).expect("iptables");
    let lines = cl.finish("result", Duration::from_secs(60));
    let answered = lab.dropped(Side::B, "INPUT").unwrap_or(0);
    drop(rule);
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

#[test]
fn half_open_connection_after_a_server_restart_is_reset_by_the_next_segment_and_the_new_server_serves() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(true, 1500) else { return };
    let mut old = server(&lab, 7000, &[]);
    // No keepalive and no user timeout: only the RST can end the connection.
    let mut cl = client(&lab, &[7000], &["secs=60", "maxwrite=65536", "slot=65536", "live=off"]);
    std::thread::sleep(Duration::from_millis(1000));
    // The server's host "crashes": nothing it sends gets out (so neither its FIN nor its RST
    // reaches the client), the process dies, and a new server starts on the same port.
    let blackhole = lab.blackhole(Side::B).expect("iptables");
    let outage = Instant::now();
    old.signal("KILL").expect("kill");
    assert!(old.wait_exit(Duration::from_secs(5)).is_some(), "old server still running");
    let mut new = server(&lab, 7000, &[]);
    // The client is still retransmitting into the void: half-open.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cl.seen("result").is_empty(), "the client noticed before the restart was visible");
    let outage = outage.elapsed();
    let t = Instant::now();
    drop(blackhole);
    cl.tell("mark");
    let lines = cl.finish("result", Duration::from_secs(30));
    let r = result(&lines, 0);
    assert_accounted(&r);
    assert_eq!(field(&r, "event"), Some("error"), "{r}");
    assert!(num(&r, "flushed").unwrap_or(0) >= 1, "{r}");
    assert_eq!(num(&r, "read_bad"), Some(0), "{r}");
    let detect = num(&r, "detect_ms").expect("detected");
    // The client's next retransmission meets the restarted host, which answers with an RST.
    // Retransmissions back off exponentially from the start of the outage, so the next one
    // comes at most about one outage (plus the minimum RTO, 200 ms) after the path is back.
    let bound = outage.as_millis() as u64 + 2000;
    assert!(detect <= bound, "the half-open connection ended {detect} ms after the path came back (bound {bound})");
    eprintln!(
        "half-open: outage {outage:?}; reset {detect} ms after the path came back ({:?} to the result line)",
        t.elapsed()
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
