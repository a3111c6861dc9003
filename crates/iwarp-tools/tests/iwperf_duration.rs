//! `iwperf -D` (run for a time instead of an iteration count) on 127.0.0.1 for each bandwidth
//! test: both ends finish on their own soon after the duration, and the client reports a
//! rate. A send_bw client once built (and marked as its last signalled Send) a batch after
//! the deadline that it never posted, and waited for it forever.

mod common;

use common::{free_port, wait_exit};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn iwperf(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iwperf"));
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

#[test]
fn timed_bandwidth_runs_end_by_themselves() {
    for test in ["send_bw", "write_bw", "read_bw"] {
        let port = free_port().to_string();
        let args = [test, "-s", "65536", "-D", "2", "-p", port.as_str(), "--json"];
        let mut server = iwperf(&args).spawn().unwrap();
        let mut cargs = args.to_vec();
        cargs.push("127.0.0.1");
        let mut client = iwperf(&cargs).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                client.kill().unwrap();
                let _ = client.wait();
                let _ = server.kill();
                let _ = server.wait();
                panic!("{test} -D 2: the client did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = client.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{test} client: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        wait_exit(&mut server, "iwperf server did not exit after its client");
        assert!(server.try_wait().unwrap().unwrap().success(), "{test} server failed");
        let row: Value =
            stdout.lines().rev().find(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).unwrap();
        let gbit = row["bw"]["gbit_per_s"].as_f64().unwrap();
        assert!(gbit > 0.0, "{test}: {row}");
    }
}
