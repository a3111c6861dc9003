//! The fault suite: peers of the stack in two network namespaces joined by a veth pair, and
//! what happens to their connections and work requests when a peer is killed, vanishes,
//! or stops reading (loss: `loss.rs`). Needs root, `ip netns` and `iptables-legacy`; skips with a
//! message otherwise (and fails under CI, which installs them, if run as root without them).
//!
//! Each test prints the peers' report lines; `docs/faults.md` records a run.

mod common;

use common::*;
use iwarp_faults::{field, num, Side};
use std::time::{Duration, Instant};

#[test]
fn harness_makes_and_removes_its_namespaces_and_traffic_is_verified_at_mtu_65535() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 65535) else { return };
    let (a, b) = (lab.a.clone(), lab.b.clone());
    {
        let mut srv = server(&lab, 7000, &[]);
        let mut cl = client(&lab, &[7000], &["msgs=100", "maxwrite=262144", "slot=262144", "maxsend=16384"]);
        let lines = cl.finish("result", Duration::from_secs(60));
        let r = result(&lines, 0);
        assert_clean(&r);
        assert_eq!(num(&r, "msgs"), Some(100));
        let s = srv.wait_line("server_conn", Duration::from_secs(10)).expect("server report");
        assert_eq!(num(&s, "bad"), Some(0), "{s}");
        assert_eq!(num(&s, "verified"), num(&r, "bytes"), "server verified every byte the client sent");
    }
    drop(lab);
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&a) && !list.contains(&b), "namespaces left behind: {list}");
}

#[test]
fn peer_killed_mid_transfer_flushes_in_order_and_other_queue_pairs_continue() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 9000) else { return };
    let mut victim = server(&lab, 7000, &[]);
    let mut bystander = server(&lab, 7001, &[]);
    // Two queue pairs on one device: one to the victim, one to the bystander; 6 s of traffic.
    let mut cl = client(&lab, &[7000, 7001], &["secs=6", "maxwrite=262144", "slot=262144", "maxsend=8192"]);
    std::thread::sleep(Duration::from_millis(1500));
    // The mark first, acknowledged, then the kill: a death noticed before the mark reached
    // the client would have no detection time (the kill's reset arrives in microseconds).
    // The time measured is then from the mark, a little more than from the kill.
    cl.tell("mark");
    cl.wait_line("marked", Duration::from_secs(5)).expect("client marked");
    let t = Instant::now();
    victim.signal("KILL").expect("kill");
    assert!(victim.wait_exit(Duration::from_secs(5)).is_some(), "victim still running");
    let lines = cl.finish("result", Duration::from_secs(60));
    eprintln!("results {:?} after the kill", t.elapsed());
    let dead = result(&lines, 0);
    assert_accounted(&dead);
    assert_ne!(field(&dead, "event"), Some("none"), "no error event: {dead}");
    assert!(num(&dead, "flushed").unwrap_or(0) + num(&dead, "failed").unwrap_or(0) >= 1, "{dead}");
    assert_eq!(num(&dead, "read_bad"), Some(0), "{dead}");
    let detect = num(&dead, "detect_ms").expect("detected");
    assert!(detect <= 2000, "death noticed after {detect} ms");
    let alive = result(&lines, 1);
    assert_clean(&alive);
    assert!(num(&alive, "after_death").unwrap_or(0) > 0, "the other queue pair stopped: {alive}");
    let s = bystander.finish("server_conn", Duration::from_secs(3));
    let s = s.first().expect("bystander report");
    assert_eq!(num(s, "bad"), Some(0), "{s}");
    assert_eq!(num(s, "verified"), num(&alive, "bytes"), "{s}");
}

/// Drops every packet the server sends once the client is `state` ("idle" after 20 messages,
/// or "busy" in mid-transfer); the client must notice within [`DETECT_BOUND_MS`].
fn vanish(busy: bool) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(true, 1500) else { return };
    let _srv = server(&lab, 7000, &[]);
    let extra: &[&str] =
        if busy { &["secs=60", "maxwrite=262144", "slot=262144", LIVE] } else { &["msgs=20", "hold=60", LIVE] };
    let mut cl = client(&lab, &[7000], extra);
    if busy {
        std::thread::sleep(Duration::from_millis(1000));
    } else {
        cl.wait_line("idle", Duration::from_secs(30)).expect("client idle");
    }
    let _rule = lab.blackhole(Side::B).expect("iptables");
    cl.tell("mark");
    let lines = cl.finish("result", Duration::from_secs(60));
    let r = result(&lines, 0);
    assert_accounted(&r);
    assert_eq!(field(&r, "event"), Some("error"), "{r}");
    assert_eq!(num(&r, "read_bad"), Some(0), "{r}");
    let detect = num(&r, "detect_ms").expect("detected");
    assert!(detect <= DETECT_BOUND_MS, "vanished peer noticed after {detect} ms (bound {DETECT_BOUND_MS})");
    eprintln!(
        "{} peer vanished: noticed after {detect} ms; dropped {:?} packets",
        if busy { "busy" } else { "idle" },
        lab.dropped(Side::B, "OUTPUT")
    );
}

#[test]
fn vanished_peer_of_an_idle_queue_pair_is_noticed_by_keepalive() {
    vanish(false);
}

#[test]
fn vanished_peer_of_a_busy_queue_pair_is_noticed_by_the_user_timeout() {
    vanish(true);
}

#[test]
fn stopped_reader_fills_the_send_queue_then_resumes_with_no_byte_lost() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    let total = 48u64 << 20;
    let region = format!("region={total}");
    let mut srv = server(&lab, 7000, &[&region]);
    let total_arg = format!("total={total}");
    let mut cl = client(&lab, &[7000], &["mode=flood", &total_arg, "chunk=65536", "sq=64", "pause=4194304"]);
    cl.wait_line("paused", Duration::from_secs(30)).expect("client paused");
    srv.signal("STOP").expect("stop");
    let stopped = Instant::now();
    cl.tell("go");
    let full = cl.wait_line("queue_full", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed()));
    srv.signal("CONT").expect("cont");
    eprintln!("reader stopped for {:?}", stopped.elapsed());
    let full = full.expect("posts never found the send queue full");
    let lines = cl.finish("result", Duration::from_secs(90));
    let r = result(&lines, 0);
    assert_eq!(num(&r, "failed"), Some(0), "{r}");
    assert_eq!(num(&r, "flushed"), Some(0), "{r}");
    assert_eq!(num(&r, "in_order"), Some(1), "{r}");
    assert_eq!(num(&r, "sends_left"), Some(0), "{r}");
    assert_eq!(num(&r, "written"), Some(total), "{r}");
    assert_eq!(num(&r, "verified"), Some(total), "the server checked the whole region: {r}");
    assert_eq!(num(&r, "bad"), Some(0), "{r}");
    assert!(num(&r, "queue_full").unwrap_or(0) > 0, "{r}");
    let grew = num(&r, "rss_max").unwrap_or(0).saturating_sub(num(&r, "rss_start").unwrap_or(0));
    assert!(grew < 32 << 20, "the sender's memory grew by {grew} bytes while the reader was stopped");
    eprintln!("stopped reader: {full}; resident memory grew by {} KiB", grew >> 10);
}

#[test]
fn reader_stopped_longer_than_the_user_timeout_is_dropped_and_everything_flushes() {
    // The user timeout also bounds a closed receive window (Linux counts it from the first
    // zero-window probe): a stopped reader is then a dead one. Documented in `Liveness`.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    let total = 48u64 << 20;
    let region = format!("region={total}");
    let mut srv = server(&lab, 7000, &[&region]);
    let total_arg = format!("total={total}");
    let mut cl = client(&lab, &[7000], &["mode=flood", &total_arg, "sq=64", "pause=4194304", "live=2,1,2000"]);
    cl.wait_line("paused", Duration::from_secs(30)).expect("client paused");
    srv.signal("STOP").expect("stop");
    cl.tell("mark");
    cl.tell("go");
    let lines = cl.finish("result", Duration::from_secs(30));
    srv.signal("CONT").expect("cont");
    let r = result(&lines, 0);
    assert_accounted(&r);
    assert_eq!(field(&r, "event"), Some("error"), "{r}");
    assert!(num(&r, "flushed").unwrap_or(0) > 0, "{r}");
    let detect = num(&r, "detect_ms").expect("detected");
    assert!(detect <= 2000 + 3000, "a reader stopped past the 2 s user timeout dropped after {detect} ms");
    eprintln!("reader stopped past the user timeout: dropped after {detect} ms");
}
