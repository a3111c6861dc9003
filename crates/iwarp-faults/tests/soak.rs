//! The soak: the mixed workload (four queue pairs of Writes of 1 B to 16 MiB, Sends, Reads back
//! and atomics, every byte and every atomic checked) for a long time, reporting the
//! throughput of every interval and the peers' descriptors and resident memory at the start
//! and the end. Ignored by default; run it with
//!
//! ```sh
//! IWF_SOAK_SECS=600 cargo test -p iwarp-faults --test soak -- --ignored --nocapture
//! ```
//!
//! (`IWF_SOAK_SECS`: how long, 60 by default, at most a day; `IWF_SOAK_TICK`: the interval,
//! 10 s by default; `IWF_SOAK_LOSS`: a share of the segments lost each way, e.g. 0.001.)
//! Needs root and `ip netns` (and `iptables-legacy` and `ethtool` for the loss).

mod common;

use common::*;
use iwarp_faults::{num, Side};
use std::time::{Duration, Instant};

const QPS: usize = 4;
const WINDOW: u64 = 4;
const MAX: u64 = 16 << 20;

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "a soak: run with --ignored, for IWF_SOAK_SECS seconds"]
fn soak_of_the_mixed_workload_keeps_its_rate_descriptors_and_memory() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let secs = env("IWF_SOAK_SECS", 60.0).clamp(10.0, 86_400.0) as u64;
    let tick = env("IWF_SOAK_TICK", 10.0).clamp(1.0, 3600.0) as u64;
    let loss = env("IWF_SOAK_LOSS", 0.0);
    let Some(lab) = lab(loss > 0.0, 1500) else { return };
    let region = format!("region={}", WINDOW * MAX + 16);
    let mut srv = server(&lab, 7000, &[&region]);
    let _rules =
        (loss > 0.0).then(|| [lab.loss(Side::A, loss).expect("iptables"), lab.loss(Side::B, loss).expect("iptables")]);
    let mut cl = client(
        &lab,
        &[7000; QPS],
        &[
            &format!("window={WINDOW}"),
            &format!("maxwrite={MAX}"),
            &format!("slot={MAX}"),
            "maxsend=65536",
            "sizes=log",
            "atomics=1",
            // One interval more than measured: the last sample is taken while every queue
            // pair still runs, not as the peers tear down.
            &format!("secs={}", (secs / tick + 1) * tick),
            &format!("tick={tick}"),
        ],
    );
    cl.quiet("tick");
    let sample = |cl: &iwarp_faults::Peer, srv: &iwarp_faults::Peer| {
        (cl.fd_count().unwrap_or(0), cl.rss().unwrap_or(0), srv.fd_count().unwrap_or(0), srv.rss().unwrap_or(0))
    };
    let start = sample(&cl, &srv);
    let t0 = Instant::now();
    // Every interval: each queue pair's tick, then the bytes the interval moved.
    let (mut prev, mut rows, mut first, mut last) = (0u64, Vec::new(), None, start);
    let intervals = secs / tick;
    for k in 1..=intervals {
        let want = QPS * k as usize;
        let got = cl.wait_count("tick", want, Duration::from_secs(tick + 60));
        assert_eq!(got, want, "interval {k}: ticks missing (a queue pair stalled or died)");
        let ticks = cl.seen("tick");
        let now: u64 = ticks[want - QPS..].iter().map(|t| num(t, "bytes").unwrap_or(0)).sum();
        for t in &ticks[want - QPS..] {
            assert_eq!(num(t, "bad"), Some(0), "{t}");
            assert_eq!(num(t, "atomic_bad"), Some(0), "{t}");
            assert_eq!(num(t, "failed"), Some(0), "{t}");
        }
        let s = sample(&cl, &srv);
        first.get_or_insert(s);
        last = s;
        let rate = (now - prev) as f64 / tick as f64 / 1e6;
        eprintln!(
            "soak t={:>5} s: {rate:.1} MB/s written and sent; client {} descriptors, {} MiB resident; server {} descriptors, {} MiB",
            k * tick,
            s.0,
            s.1 >> 20,
            s.2,
            s.3 >> 20
        );
        assert!(now > prev, "interval {k}: nothing moved");
        rows.push(rate);
        prev = now;
    }
    let lines = cl.finish("result", Duration::from_secs(120));
    for q in 0..QPS {
        let r = result(&lines, q);
        assert_clean(&r);
        assert_eq!(num(&r, "atomic_bad"), Some(0), "{r}");
        assert_eq!(num(&r, "words_bad"), Some(0), "{r}");
        assert_eq!(num(&r, "outstanding"), Some(WINDOW + 4), "{r}");
    }
    assert_eq!(srv.wait_count("server_conn", QPS, Duration::from_secs(15)), QPS);
    for s in srv.seen("server_conn") {
        assert_eq!(num(&s, "bad"), Some(0), "{s}");
        assert_eq!(num(&s, "outstanding"), Some(0), "{s}");
    }
    let first = first.unwrap_or(start);
    let min = rows.iter().copied().fold(f64::MAX, f64::min);
    let max = rows.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "soak {secs} s ({:.0} s measured): {} intervals, {min:.1} to {max:.1} MB/s; client descriptors {} at the start, {} after the first interval, {} at the end; resident {} / {} / {} MiB; server descriptors {} / {} / {}, resident {} / {} / {} MiB",
        t0.elapsed().as_secs_f64(),
        rows.len(),
        start.0,
        first.0,
        last.0,
        start.1 >> 20,
        first.1 >> 20,
        last.1 >> 20,
        start.2,
        first.2,
        last.2,
        start.3 >> 20,
        first.3 >> 20,
        last.3 >> 20
    );
    // Descriptors: none gained after the first interval; memory: bounded growth after it
    // (the allocator keeps some of the 16 MiB buffers it has handed out).
    assert_eq!(last.0, first.0, "the client's descriptors changed");
    assert_eq!(last.2, first.2, "the server's descriptors changed");
    assert!(last.1 <= first.1 + (128 << 20), "the client's memory grew from {} to {} bytes", first.1, last.1);
    assert!(last.3 <= first.3 + (128 << 20), "the server's memory grew from {} to {} bytes", first.3, last.3);
}
