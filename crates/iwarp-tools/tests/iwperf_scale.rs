//! `iwperf scale` end to end, at small counts: every queue pair connects and does work, the
//! plain-TCP baseline's reader takes every byte written, and the JSON rows say so.

use serde_json::Value;
use std::process::Command;

/// Runs `iwperf scale` with `args`; its stdout and its JSON rows.
fn scale(args: &[&str]) -> (String, Vec<Value>) {
    let o = Command::new(env!("CARGO_BIN_EXE_iwperf")).arg("scale").args(args).arg("--json").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "iwperf scale failed: {}\n{out}", String::from_utf8_lossy(&o.stderr));
    let rows = out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    (out, rows)
}

#[test]
fn scale_runs_every_count_and_every_queue_pair_works() {
    let (out, rows) = scale(&["--qps", "1,3,200", "--seconds", "0.3", "--runs", "2"]);
    let counts: Vec<u64> = rows.iter().map(|r| r["qps"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 3, 200]);
    for r in &rows {
        assert_eq!(r["test"], "scale");
        assert_eq!(r["size"], 65536);
        assert_eq!(r["runs"], 2);
        assert_eq!(r["one_per_post"], false);
        let (writes, posts) = (r["writes"].as_u64().unwrap(), r["posts"].as_u64().unwrap());
        assert!(posts > 0 && writes >= posts, "{r}");
        if r["qps"] == 200 {
            // 128 in flight over 200 queue pairs: every queue pair has one turn at a time.
            assert_eq!(writes, posts, "{r}");
        } else {
            // A queue pair's due turns go out as one list.
            assert!(writes >= 2 * posts, "{r}");
        }
        // The tool fails unless every queue pair completed a Write in every round; the row says
        // how many did.
        assert_eq!(r["qps_that_worked"], r["qps"], "{r}");
        assert!(r["gbit_per_s"].as_f64().unwrap() > 0.0, "{r}");
        // The TCP baseline counts only once its reader has taken every byte written.
        assert!(r["tcp_gbit_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Memory per idle queue pair, over 200 of them: the goal is at most 64 KiB.
    let many = &rows[2];
    for side in ["client_bytes_per_idle_qp", "server_bytes_per_idle_qp"] {
        assert!(many[side].as_f64().unwrap() <= 65536.0, "{side}: {many}");
    }
    // The table names the baseline's shape.
    assert!(out.contains("TCP: N connections in turn"), "{out}");
}

#[test]
fn scale_posts_one_write_at_a_time_when_asked() {
    let (out, rows) = scale(&["--qps", "1,3", "--seconds", "0.3", "--runs", "1", "--one-per-post"]);
    assert_eq!(rows.len(), 2, "{out}");
    for r in &rows {
        assert_eq!(r["one_per_post"], true);
        assert_eq!(r["writes"], r["posts"], "{r}");
        assert_eq!(r["qps_that_worked"], r["qps"], "{r}");
        assert!(r["gbit_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(out.contains("one Write per post"), "{out}");
}
