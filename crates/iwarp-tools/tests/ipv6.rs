//! `iwping -a ::1` and `iwperf --bind ::1` over the IPv6 loopback, as rping and perftest take
//! IPv6 addresses. Each test returns early (passing) on a host without an IPv6 loopback.

#[allow(dead_code)]
mod common;

use common::wait_exit;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on `::1`, or `None` if this host has no IPv6 loopback.
fn free_port6() -> Option<u16> {
    match TcpListener::bind("[::1]:0") {
        Ok(l) => Some(l.local_addr().unwrap().port()),
        Err(e) => {
            eprintln!("skipped: no IPv6 loopback on this host ({e})");
            None
        }
    }
}

/// Waits up to 10 s until something listens on `[::1]:port` (from /proc/net/tcp6).
fn wait_listening6(port: u16) {
    let local = format!("00000000000000000000000001000000:{port:04X}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        if table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == "0A"
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listened on [::1]:{port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn iwping_pings_over_ipv6() {
    let Some(port) = free_port6() else { return };
    let port = port.to_string();
    let mut server = Command::new(env!("CARGO_BIN_EXE_iwping"))
        .args(["-s", "-a", "::1", "-p", &port, "-V"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening6(port.parse().unwrap());
    let client = Command::new(env!("CARGO_BIN_EXE_iwping"))
        .args(["-c", "-a", "::1", "-I", "::1", "-p", &port, "-C", "5", "-v", "-V"])
        .output()
        .unwrap();
    assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
    let out = String::from_utf8_lossy(&client.stdout);
    assert_eq!(out.lines().filter(|l| l.starts_with("ping data: rdma-ping-")).count(), 5, "{out}");
    wait_exit(&mut server, "iwping server did not exit after its client disconnected");
    assert!(server.wait().unwrap().success());
}

#[test]
fn iwperf_binds_and_connects_over_ipv6() {
    let Some(port) = free_port6() else { return };
    let port = port.to_string();
    let common = ["-p", &port, "-s", "4096", "-n", "20"];
    let mut server = Command::new(env!("CARGO_BIN_EXE_iwperf"))
        .args(["write_bw", "--bind", "::1"])
        .args(common)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening6(port.parse().unwrap());
    let client = Command::new(env!("CARGO_BIN_EXE_iwperf"))
        .args(["write_bw", "::1", "--bind_source_ip", "::1"])
        .args(common)
        .output()
        .unwrap();
    assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
    let out = String::from_utf8_lossy(&client.stdout);
    assert!(out.lines().any(|l| l.trim_start().starts_with("4096")), "a result line for 4096 bytes: {out}");
    wait_exit(&mut server, "iwperf server did not exit after its client finished");
    assert!(server.wait().unwrap().success());
}
