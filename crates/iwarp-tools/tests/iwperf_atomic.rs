//! `iwperf atomic_bw` and `atomic_lat` (perftest's ib_atomic_bw/ib_atomic_lat) end to end on
//! 127.0.0.1, an iwperf server against an iwperf client: fetch-and-add by default and
//! compare-and-swap with `-A CMP_AND_SWAP`, 8 bytes each, perftest's header and result
//! lines, and every request answered on the wire (one RFC 7306 request and one response per
//! iteration in the data connection's counters). Also the options perftest refuses.

mod common;

use common::{free_port, wait_exit};
use serde_json::Value;
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn iwperf(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iwperf"));
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Runs `cmd` to its end, at most 60 s; kills it and fails the test past that.
fn run_bounded(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{what} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The server's stdout once it has ended by itself, successfully (bounded).
fn finish(mut server: Child) -> String {
    wait_exit(&mut server, "iwperf server did not exit after its client");
    let ok = server.try_wait().unwrap().unwrap().success();
    let (mut out, mut err) = (String::new(), String::new());
    server.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(ok, "iwperf server failed: {err}\n{out}");
    out
}

/// Runs `test` with `extra` as server and client (both with `--json`); returns their stdouts.
fn atomic_pair(test: &str, extra: &[&str]) -> (String, String) {
    let port = free_port().to_string();
    let mut args = vec![test, "-R", "-n", "200", "-p", port.as_str(), "--json"];
    args.extend_from_slice(extra);
    let server = iwperf(&args).spawn().unwrap();
    let mut cargs = args.clone();
    cargs.push("127.0.0.1");
    let client = run_bounded(iwperf(&cargs), "iwperf client");
    let cout = String::from_utf8_lossy(&client.stdout).into_owned();
    assert!(client.status.success(), "client failed: {}\n{cout}", String::from_utf8_lossy(&client.stderr));
    (cout, finish(server))
}

/// The numbers of the line under perftest's `#bytes` header.
fn result_line(out: &str) -> Vec<f64> {
    let mut lines = out.lines().skip_while(|l| !l.trim_start().starts_with("#bytes"));
    lines.next().unwrap_or_else(|| panic!("a result header:\n{out}"));
    lines.next().expect("a result line").split_whitespace().map(|x| x.parse().unwrap()).collect()
}

fn json(out: &str) -> Value {
    let row = out.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("a JSON line:\n{out}"));
    serde_json::from_str(row).unwrap()
}

fn count(j: &Value, k: &str) -> u64 {
    j["path"][k].as_u64().unwrap_or_else(|| panic!("{k}: {j}"))
}

/// One FPDU per request (or response), give or take the few zero-length Writes with which an
/// initiator may wake a silent responder (`ConnParams::wake_silent_responder`).
fn about(n: u64, want: u64) -> bool {
    (want..=want + 8).contains(&n)
}

/// The header perftest prints for an atomic test on this device.
fn check_header(out: &str, title: &str) {
    assert!(out.contains(&format!("                    {title}\n")), "{out}");
    assert!(out.contains("Transport type : IW"), "{out}");
    assert!(out.contains(" Outstand reads  : 128\n"), "{out}");
    assert!(!out.contains("Max inline data"), "{out}");
}

#[test]
fn atomic_bw_fetches_and_adds_8_bytes_and_reports_the_clients_rate_on_both_sides() {
    let (c, s) = atomic_pair("atomic_bw", &[]);
    check_header(&c, "Atomic FETCH_AND_ADD BW Test");
    check_header(&s, "Atomic FETCH_AND_ADD BW Test");
    let (cl, sl) = (result_line(&c), result_line(&s));
    assert_eq!((cl[0], cl[1]), (8.0, 200.0), "{c}");
    assert!(cl[2..].iter().all(|v| *v > 0.0), "{c}");
    // The server prints the client's figures, as perftest's does.
    assert_eq!(cl, sl, "client:\n{c}\nserver:\n{s}");
    // 200 atomic requests reached the server and 200 responses came back.
    let (cj, sj) = (json(&c), json(&s));
    assert_eq!(cj["test"], "atomic_bw");
    assert!(about(count(&cj, "tx_fpdus"), 200) && count(&cj, "rx_fpdus") == 200, "{cj}");
    assert!(about(count(&sj, "rx_fpdus"), 200) && count(&sj, "tx_fpdus") == 200, "{sj}");
}

#[test]
fn atomic_lat_compares_and_swaps_one_at_a_time() {
    let (c, s) = atomic_pair("atomic_lat", &["-A", "CMP_AND_SWAP"]);
    check_header(&c, "Atomic CMP_AND_SWAP Latency Test");
    check_header(&s, "Atomic CMP_AND_SWAP Latency Test");
    assert!(c.contains(" TX depth        : 1\n"), "{c}");
    let l = result_line(&c);
    assert_eq!((l[0], l[1]), (8.0, 200.0), "{c}");
    // t_min, t_max, t_typical, t_avg positive; t_min <= t_typical <= t_max.
    assert!(l[2] > 0.0 && l[2] <= l[4] && l[4] <= l[3] && l[5] > 0.0, "{c}");
    // As perftest's ib_atomic_lat server: no table, one dash line after the address blocks.
    assert!(!s.contains("#bytes"), "{s}");
    assert!(!s.contains(&format!("{0}\n{0}", "-".repeat(87))), "{s}");
    // The server has no figures, so no JSON line; the client's counters show every request
    // answered.
    let cj = json(&c);
    assert_eq!(cj["lat"]["iters"], 200, "{cj}");
    assert!(about(count(&cj, "tx_fpdus"), 200) && count(&cj, "rx_fpdus") == 200, "{cj}");
}

#[test]
fn atomic_tests_refuse_other_sizes_and_other_tests_refuse_an_atomic_type() {
    for (args, says) in [
        (&["atomic_bw", "-s", "16"][..], "Message size cannot be changed for Atomic tests"),
        (&["atomic_lat", "-a"][..], "Message size cannot be changed for Atomic tests"),
        (&["read_bw", "-A", "FETCH_AND_ADD"][..], " You are not running the atomic_lat/bw test!"),
    ] {
        let out = run_bounded(iwperf(args), "iwperf");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {out:?}");
    }
    let out = run_bounded(iwperf(&["atomic_bw", "-A", "SWAP"]), "iwperf");
    assert!(!out.status.success());
}
