//! Delay: the stack's throughput through a user-space TCP relay that holds every byte for a
//! one-way delay in each direction (1 ms and 10 ms round trips), next to plain TCP through the
//! same relay. The relay ends TCP on both sides, so the iWARP byte stream crosses two TCP
//! connections, each with its own window; the relay holds at most 4 MiB per direction. Needs
//! root and `ip netns`.

mod common;

use common::*;
use iwarp_faults::{field, num, Side, ADDR_B};
use std::time::Duration;

const TOTAL: u64 = 64 << 20;

/// Starts a relay in B from `port` to `to`, each direction delayed by `delay_us`.
fn relay(lab: &iwarp_faults::Lab, port: u16, to: u16, delay_us: u64) -> iwarp_faults::Peer {
    let a = args(&[
        "relay",
        &format!("listen={ADDR_B}:{port}"),
        &format!("to={ADDR_B}:{to}"),
        &format!("delay_us={delay_us}"),
        "buffer=4194304",
    ]);
    let mut p = lab.spawn(Side::B, PEER, &a).expect("relay");
    p.wait_line("listening", Duration::from_secs(10)).expect("relay listening");
    p
}

/// Plain TCP and the stack through relays of round trip `rtt_ms`; returns (the stack's MB/s,
/// TCP's MB/s).
fn through_relay(rtt_ms: u64) -> Option<(f64, f64)> {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab(false, 1500)?;
    let one_way = rtt_ms * 1000 / 2;
    let region = format!("region={TOTAL}");
    let _srv = server(&lab, 7000, &[&region]);
    let mut sink =
        lab.spawn(Side::B, PEER, &args(&["sink", &format!("listen={ADDR_B}:7001"), "pings=20"])).expect("sink");
    sink.wait_line("listening", Duration::from_secs(10)).expect("sink listening");
    let _r_iwarp = relay(&lab, 8000, 7000, one_way);
    let _r_tcp = relay(&lab, 8001, 7001, one_way);
    // Plain TCP: the round trip, then the bulk transfer.
    let total = format!("total={TOTAL}");
    let mut src = initiator(&lab, "source", 8001, &[&total, "pings=20"]);
    let s = src.wait_line("source", Duration::from_secs(60)).expect("source report");
    assert_eq!(num(&s, "counted"), Some(TOTAL), "{s}");
    let rtt = num(&s, "rtt_us_median").unwrap_or(0);
    assert!(rtt >= rtt_ms * 1000, "the relay's round trip is {rtt} us, under {rtt_ms} ms: {s}");
    assert!(rtt <= rtt_ms * 1000 + 5000, "the relay's round trip is {rtt} us, far over {rtt_ms} ms: {s}");
    let tcp: f64 = field(&s, "mb_per_s").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // The stack: a flood of 64 KiB Writes, the whole region checked by the server afterwards;
    // timed from the first Write to the answer to the Send that follows the last (the check
    // taken out), as TCP is timed to the sink's count.
    let mut cl = client(&lab, &[8000], &["mode=flood", &total, "sq=128"]);
    let r = result(&cl.finish("result", Duration::from_secs(120)), 0);
    assert_eq!(num(&r, "failed"), Some(0), "{r}");
    assert_eq!(num(&r, "flushed"), Some(0), "{r}");
    assert_eq!(num(&r, "in_order"), Some(1), "{r}");
    assert_eq!(num(&r, "verified"), Some(TOTAL), "{r}");
    assert_eq!(num(&r, "bad"), Some(0), "{r}");
    let secs: f64 = field(&r, "transfer_secs").and_then(|v| v.parse().ok()).unwrap_or(f64::MAX);
    let iwarp = TOTAL as f64 / secs / 1e6;
    eprintln!("RTT {rtt_ms} ms (measured {rtt} us): iWARP Writes {iwarp:.1} MB/s, plain TCP {tcp:.1} MB/s through the same relay");
    Some((iwarp, tcp))
}

fn check(rtt_ms: u64) {
    let Some((iwarp, tcp)) = through_relay(rtt_ms) else { return };
    // Both cross the same relay. A debug build spends CPU on every byte (CRC, copies) where
    // TCP spends the kernel's: the bound only catches a stall (a window or flow-control fault
    // would cut the stack to a small fraction of TCP at 10 ms).
    assert!(iwarp >= tcp * 0.1, "RTT {rtt_ms} ms: iWARP {iwarp:.1} MB/s against TCP {tcp:.1} MB/s");
}

#[test]
fn through_a_1_ms_relay_writes_keep_up_with_plain_tcp() {
    check(1);
}

#[test]
fn through_a_10_ms_relay_writes_keep_up_with_plain_tcp() {
    check(10);
}
