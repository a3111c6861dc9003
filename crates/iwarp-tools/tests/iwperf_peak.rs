//! Every iwperf bandwidth client measures a peak, as perftest's clients do (its write, read,
//! send and atomic clients share one loop): a positive `BW peak` on the result line. The
//! send_bw client once printed 0.00 there, as only perftest's send_bw *server* does.

mod common;

use common::{free_port, wait_exit};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn iwperf(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iwperf"));
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The numbers of the line under perftest's `#bytes` header.
fn result_line(out: &str) -> Vec<f64> {
    let mut lines = out.lines().skip_while(|l| !l.trim_start().starts_with("#bytes"));
    lines.next().unwrap_or_else(|| panic!("a result header:\n{out}"));
    lines.next().expect("a result line").split_whitespace().map(|x| x.parse().unwrap()).collect()
}

#[test]
fn bandwidth_clients_report_a_peak() {
    for (test, size) in [("send_bw", "4096"), ("write_bw", "4096"), ("read_bw", "4096"), ("atomic_bw", "8")] {
        let port = free_port().to_string();
        let args = [test, "-R", "-s", size, "-n", "200", "-p", port.as_str()];
        let mut server = iwperf(&args).spawn().unwrap();
        let mut cargs = args.to_vec();
        cargs.push("127.0.0.1");
        let mut client = iwperf(&cargs).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = client.kill();
                let _ = client.wait();
                let _ = server.kill();
                let _ = server.wait();
                panic!("{test}: the client did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = client.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{test} client: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        wait_exit(&mut server, "iwperf server did not exit after its client");
        let l = result_line(&stdout);
        // size, iterations, peak, average, message rate; the peak is at least the average.
        assert_eq!(l[1], 200.0, "{test}:\n{stdout}");
        assert!(l[2] > 0.0 && l[3] > 0.0 && l[4] > 0.0, "{test}: {l:?}\n{stdout}");
        assert!(l[2] >= l[3] - 0.01, "{test}: peak below average: {l:?}");
    }
}
