//! `iwperf -b` end to end on 127.0.0.1: an iwperf server and an iwperf client, both with
//! `-b`, each posting and each measuring; both directions carry the expected payload (the
//! data connections' byte counts in `--json`) and both sides report the aggregate, as the
//! result line and as `bidirectional` in JSON. Also `tcp_bw -b`, the baseline.

mod common;

use common::{free_port, wait_exit, wait_listening};
use serde_json::Value;
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn iwperf(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iwperf"));
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Runs `cmd` to its end, at most `limit`; kills it and fails the test past that.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The server's stdout and stderr once it has ended by itself (bounded).
fn finish(mut server: Child) -> (String, String) {
    wait_exit(&mut server, "iwperf server did not exit after its client");
    assert!(server.try_wait().unwrap().unwrap().success(), "iwperf server failed");
    let (mut out, mut err) = (String::new(), String::new());
    server.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (out, err)
}

/// The one JSON line of a run.
fn json(out: &str) -> Value {
    let rows: Vec<Value> =
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{out}");
    rows.into_iter().next().unwrap()
}

/// The result line under perftest's `#bytes` header: size, iterations, peak, average, rate.
fn result_line(out: &str) -> Vec<f64> {
    let mut lines = out.lines().skip_while(|l| !l.trim_start().starts_with("#bytes"));
    lines.next().expect("a result header");
    lines.next().expect("a result line").split_whitespace().map(|x| x.parse().unwrap()).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Runs `test -b` as server and client; checks what every bidirectional run must show and
/// returns the (client, server) JSON lines.
fn bidir_pair(test: &str, title: &str, size: u64, iters: u64) -> (Value, Value) {
    let port = free_port().to_string();
    let (s, n) = (size.to_string(), iters.to_string());
    let args = [test, "-b", "-s", s.as_str(), "-n", n.as_str(), "-p", port.as_str(), "--json"];
    let server = iwperf(&args).spawn().unwrap();
    let mut cargs = args.to_vec();
    cargs.push("127.0.0.1");
    let client = run_bounded(iwperf(&cargs), Duration::from_secs(60), "iwperf client");
    let (cout, cerr) = (String::from_utf8_lossy(&client.stdout).into_owned(), String::from_utf8_lossy(&client.stderr));
    assert!(client.status.success(), "client failed: {cerr}\n{cout}");
    let (sout, serr) = finish(server);
    let mut rows = Vec::new();
    for (who, out, err) in [("client", &cout, cerr.as_ref()), ("server", &sout, serr.as_str())] {
        assert!(err.trim().is_empty(), "{who} stderr: {err}");
        // perftest's -b header: the title, and the TX depth on both sides.
        assert!(out.contains(&format!("                    {title}\n")), "{who}: {out}");
        assert!(out.contains(" TX depth        : "), "{who}: {out}");
        let j = json(out);
        assert_eq!((j["test"].as_str(), j["role"].as_str()), (Some(test), Some(who)), "{j}");
        let (bw, remote, agg) = (&j["bw"], &j["bidirectional"]["remote"], &j["bidirectional"]["aggregate"]);
        // Each side counted its own messages, and heard the peer's count in its report.
        assert_eq!((bw["iters"].as_u64(), remote["iters"].as_u64()), (Some(iters), Some(iters)), "{j}");
        assert!(f(&bw["mb_per_s"]) > 0.0 && f(&remote["mb_per_s"]) > 0.0, "{j}");
        // The aggregate is both directions summed, and it is what the result line prints.
        for k in ["mb_per_s", "peak_mb_per_s", "gbit_per_s", "mpps"] {
            let sum = f(&bw[k]) + f(&remote[k]);
            assert!((f(&agg[k]) - sum).abs() <= 1e-6 * sum.max(1.0), "{k}: {j}");
        }
        let line = result_line(out);
        assert_eq!((line[0], line[1]), (size as f64, iters as f64), "{who}: {out}");
        assert!((line[3] - f(&agg["mb_per_s"])).abs() <= 0.006, "{who}: {line:?} vs {agg}");
        assert!((line[2] - f(&agg["peak_mb_per_s"])).abs() <= 0.006, "{who}: {line:?} vs {agg}");
        rows.push(j);
    }
    let (c, s) = (rows.remove(0), rows.remove(0));
    // What one side measured is what the other was told.
    assert_eq!(c["bidirectional"]["remote"]["iters"], s["bw"]["iters"]);
    let (told, own) = (f(&c["bidirectional"]["remote"]["mb_per_s"]), f(&s["bw"]["mb_per_s"]));
    assert!((told - own).abs() <= 1e-6 * own, "{told} vs {own}");
    assert!(
        (f(&c["bidirectional"]["aggregate"]["mb_per_s"]) - f(&s["bidirectional"]["aggregate"]["mb_per_s"])).abs()
            < 1e-6
    );
    (c, s)
}

/// Payload bytes on the data connections: (sent, received).
fn moved(j: &Value) -> (u64, u64) {
    (j["path"]["tx_bytes"].as_u64().unwrap(), j["path"]["rx_bytes"].as_u64().unwrap())
}

#[test]
fn write_bw_b_writes_both_ways_and_both_sides_report_the_sum() {
    let (size, n) = (65536u64, 300u64);
    let (c, s) = bidir_pair("write_bw", "RDMA_Write Bidirectional BW Test", size, n);
    // Exactly the Writes, each way: every side sent its own and received all of the peer's
    // (the tool waits for the reported Writes to arrive before the closing round).
    assert_eq!(moved(&c), (n * size, n * size), "{c}");
    assert_eq!(moved(&s), (n * size, n * size), "{s}");
}

#[test]
fn send_bw_b_sends_both_ways_with_credits_both_ways() {
    let (size, n) = (4096u64, 300u64);
    let (c, s) = bidir_pair("send_bw", "Send Bidirectional BW Test", size, n);
    // The Sends each way, and the receive credits (4-byte Writes, one every RX depth / 3
    // receives: 300 receives, RX depth 300, every 100th) each way.
    let credits = 4 * 3;
    assert_eq!(moved(&c), (n * size + credits, n * size + credits), "{c}");
    assert_eq!(moved(&s), (n * size + credits, n * size + credits), "{s}");
}

#[test]
fn read_bw_b_reads_both_ways() {
    let (size, n) = (65536u64, 100u64);
    let (c, s) = bidir_pair("read_bw", "RDMA_Read Bidirectional BW Test", size, n);
    // Each side's Read Responses (the peer's data into its memory) and its answers to the
    // peer's Read Requests; the requests themselves carry a few bytes more.
    for j in [&c, &s] {
        let (tx, rx) = moved(j);
        assert!(tx >= n * size && rx >= n * size && tx < n * size + n * 64 && rx < n * size + n * 64, "{j}");
    }
}

#[test]
fn tcp_bw_b_moves_both_ways_on_one_connection() {
    let port = free_port().to_string();
    let args = ["tcp_bw", "-b", "-s", "65536", "-n", "2000", "-p", port.as_str(), "--json"];
    let server = iwperf(&args).spawn().unwrap();
    let mut cargs = args.to_vec();
    cargs.push("127.0.0.1");
    // tcp_bw's client does not retry a refused connect.
    wait_listening(port.parse().unwrap());
    let client = run_bounded(iwperf(&cargs), Duration::from_secs(60), "tcp_bw -b client");
    let cout = String::from_utf8_lossy(&client.stdout).into_owned();
    assert!(client.status.success(), "{}\n{cout}", String::from_utf8_lossy(&client.stderr));
    let (sout, _) = finish(server);
    let (c, s) = (json(&cout), json(&sout));
    for j in [&c, &s] {
        assert_eq!(
            (j["bw"]["iters"].as_u64(), j["bidirectional"]["remote"]["iters"].as_u64()),
            (Some(2000), Some(2000))
        );
        let sum = f(&j["bw"]["mb_per_s"]) + f(&j["bidirectional"]["remote"]["mb_per_s"]);
        assert!((f(&j["bidirectional"]["aggregate"]["mb_per_s"]) - sum).abs() < 1e-6 * sum, "{j}");
    }
    assert_eq!(c["bidirectional"]["remote"]["seconds"], s["bw"]["seconds"]);
    assert!((result_line(&cout)[3] - f(&c["bidirectional"]["aggregate"]["mb_per_s"])).abs() <= 0.006);
}
