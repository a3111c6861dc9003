//! The mixed workload: four queue pairs of one client process, each moving messages of an
//! RDMA Write (1 B to 16 MiB, spread evenly over the powers of two), a Send (up to 64 KiB,
//! the same way), an RDMA Read of the written bytes back, a fetch-and-add and a
//! compare-and-swap, between two copies of the stack; once on a clean link and once with 1% of
//! the segments lost each way. The server checks every byte written and sent, the client every
//! byte read back and every atomic's original value, and the server the atomics' two words at
//! the end; every work request is accounted for. Needs root and `ip netns` (and
//! `iptables-legacy` and `ethtool` for the loss).

mod common;

use common::*;
use iwarp_faults::{num, Side};
use std::time::{Duration, Instant};

const QPS: usize = 4;
const WINDOW: u64 = 4;
const MAX: u64 = 16 << 20;

fn mixed(loss: Option<f64>, secs: u64) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(loss.is_some(), 1500) else { return };
    let t0 = Instant::now();
    // Each connection's region: WINDOW slots of 16 MiB and the atomics' two words after them.
    let region = format!("region={}", WINDOW * MAX + 16);
    let mut srv = server(&lab, 7000, &[&region]);
    let _rules = loss.map(|p| [lab.loss(Side::A, p).expect("iptables"), lab.loss(Side::B, p).expect("iptables")]);
    let (window, slot, secs_arg) = (format!("window={WINDOW}"), format!("maxwrite={MAX}"), format!("secs={secs}"));
    let mut cl = client(
        &lab,
        &[7000; QPS],
        &[&window, &slot, &format!("slot={MAX}"), "maxsend=65536", "sizes=log", "atomics=1", &secs_arg],
    );
    let lines = cl.finish("result", Duration::from_secs(secs + 60));
    let (mut bytes, mut msgs, mut atomics) = (0u64, 0u64, 0u64);
    for q in 0..QPS {
        let r = result(&lines, q);
        assert_clean(&r);
        let m = num(&r, "msgs").unwrap_or(0);
        assert!(m >= 2, "{r}");
        // Every work request accounted for: all completed successfully, in order, but the
        // receives still posted for acknowledgements that will not come.
        assert_eq!(num(&r, "outstanding"), Some(WINDOW + 4), "{r}");
        assert_eq!(num(&r, "completed").map(|c| c + WINDOW + 4), num(&r, "posted"), "{r}");
        assert_eq!(num(&r, "ok"), num(&r, "completed"), "{r}");
        assert_eq!(num(&r, "sends"), Some(m), "{r}");
        assert_eq!(num(&r, "writes"), num(&r, "reads"), "{r}");
        // The sizes' extremes: the first message's Write is 1 byte, the second's 16 MiB.
        assert_eq!(num(&r, "wmin"), Some(1), "{r}");
        assert_eq!(num(&r, "wmax"), Some(MAX), "{r}");
        // Every atomic returned the original its predecessors left; every 4th compare-and-swap
        // compared with a wrong value and left the word alone; the server found both words
        // at the values the atomics must have left.
        assert_eq!(num(&r, "fetch_adds"), Some(m), "{r}");
        assert_eq!(num(&r, "compare_swaps"), Some(m), "{r}");
        assert_eq!(num(&r, "swapped"), Some(m - m / 4), "{r}");
        assert_eq!(num(&r, "atomic_bad"), Some(0), "{r}");
        assert_eq!(num(&r, "words_checked"), Some(1), "{r}");
        assert_eq!(num(&r, "words_bad"), Some(0), "{r}");
        bytes += num(&r, "bytes").unwrap_or(0);
        msgs += m;
        atomics += 2 * m;
    }
    let dropped = (lab.dropped(Side::B, "INPUT"), lab.dropped(Side::A, "INPUT"));
    // The server's side: each connection verified every byte, every atomic word, and ended
    // cleanly with all its work requests completed in order.
    assert_eq!(srv.wait_count("server_conn", QPS, Duration::from_secs(15)), QPS, "server reports");
    let conns = srv.seen("server_conn");
    let mut verified = 0;
    for s in &conns {
        assert_eq!(num(s, "bad"), Some(0), "{s}");
        assert_eq!(num(s, "failed"), Some(0), "{s}");
        assert_eq!(num(s, "outstanding"), Some(0), "{s}");
        assert_eq!(num(s, "in_order"), Some(1), "{s}");
        verified += num(s, "verified").unwrap_or(0);
    }
    assert_eq!(verified, bytes, "the server verified every byte the client wrote and sent");
    let words = srv.seen("server_atomics");
    assert_eq!(words.len(), QPS, "{words:?}");
    assert!(words.iter().all(|w| num(w, "bad") == Some(0)), "{words:?}");
    eprintln!(
        "mixed, {}: {QPS} queue pairs, {msgs} messages, {bytes} bytes written and sent verified, {atomics} atomics checked; segments dropped {dropped:?}; {:.1} s",
        loss.map_or("clean".to_string(), |p| format!("{}% loss each way", p * 100.0)),
        t0.elapsed().as_secs_f64()
    );
    if loss.is_some() {
        assert!(dropped.0.unwrap_or(0) > 0 && dropped.1.unwrap_or(0) > 0, "a loss rule dropped nothing: {dropped:?}");
    }
}

#[test]
fn mixed_writes_reads_sends_and_atomics_on_four_queue_pairs_every_byte_and_request_accounted() {
    mixed(None, 6);
}

#[test]
fn mixed_workload_with_one_percent_loss_each_way_at_mtu_1500_every_byte_and_request_accounted() {
    mixed(Some(0.01), 6);
}
