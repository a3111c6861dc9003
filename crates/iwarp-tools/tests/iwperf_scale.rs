//! `iwperf scale` end to end, at small counts: every queue pair connects and does work, the
//! plain-TCP baseline's reader takes every byte written, and the JSON rows say so.

use serde_json::Value;
use std::process::Command;

#[test]
fn scale_runs_every_count_and_every_queue_pair_works() {
    let o = Command::new(env!("CARGO_BIN_EXE_iwperf"))
        .args(["scale", "--qps", "1,3,200", "--seconds", "0.3", "--runs", "2", "--json"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "iwperf scale failed: {}\n{out}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> =
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let counts: Vec<u64> = rows.iter().map(|r| r["qps"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 3, 200]);
    for r in &rows {
        assert_eq!(r["test"], "scale");
        assert_eq!(r["size"], 65536);
        assert_eq!(r["runs"], 2);
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
