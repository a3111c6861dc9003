//! What the fault tests share: the lab, peers started in it, and the checks of their report
//! lines.
#![allow(dead_code)]

use iwarp_faults::{field, num, Lab, Peer, Side, ADDR_B};
use std::sync::Mutex;
use std::time::Duration;

pub const PEER: &str = env!("CARGO_BIN_EXE_iwfault-peer");

/// The tests run one at a time: detection times are measured, and the machine is small.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Dead-peer detection of the vanishing tests: keepalive after 2 s of silence, probes every
/// 1 s, user timeout 4 s.
pub const LIVE: &str = "live=2,1,4000";
/// Bound on detection under [`LIVE`]: the user timeout, one probe interval, and slack.
pub const DETECT_BOUND_MS: u64 = 4000 + 1000 + 1500;

pub fn lab(iptables: bool, mtu: u32) -> Option<Lab> {
    if let Some(why) = Lab::unavailable(iptables) {
        let root_ci = std::env::var_os("CI").is_some() && !why.starts_with("not root");
        assert!(!root_ci, "fault suite under CI: {why}");
        eprintln!("skipping: {why}");
        return None;
    }
    Some(Lab::new(mtu).expect("namespaces"))
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn server(lab: &Lab, port: u16, extra: &[&str]) -> Peer {
    let listen = format!("listen={ADDR_B}:{port}");
    let mut a = args(&["server", &listen]);
    a.extend(args(extra));
    let mut p = lab.spawn(Side::B, PEER, &a).expect("server");
    p.wait_line("listening", Duration::from_secs(10)).expect("server listening");
    p
}

pub fn client(lab: &Lab, ports: &[u16], extra: &[&str]) -> Peer {
    let to: Vec<String> = ports.iter().map(|p| format!("{ADDR_B}:{p}")).collect();
    let connect = format!("connect={}", to.join(","));
    let mut a = args(&["client", &connect]);
    a.extend(args(extra));
    let mut p = lab.spawn(Side::A, PEER, &a).expect("client");
    p.wait_line("ready", Duration::from_secs(15)).expect("client connected");
    p
}

/// The `result qp=N` line of a client.
pub fn result(lines: &[String], qp: usize) -> String {
    let tag = format!("qp={qp}");
    lines
        .iter()
        .find(|l| l.split_whitespace().any(|t| t == tag))
        .cloned()
        .unwrap_or_else(|| panic!("no result for {tag}"))
}

/// Every posted work request completed, in posting order.
pub fn assert_accounted(line: &str) {
    assert_eq!(num(line, "outstanding"), Some(0), "work requests never completed: {line}");
    assert_eq!(num(line, "posted"), num(line, "completed"), "{line}");
    assert_eq!(num(line, "in_order"), Some(1), "completions out of posting order: {line}");
}

/// A clean run: every message acknowledged, nothing failed or flushed, every byte verified.
pub fn assert_clean(line: &str) {
    assert_eq!(num(line, "failed"), Some(0), "{line}");
    assert_eq!(num(line, "flushed"), Some(0), "{line}");
    assert_eq!(num(line, "read_bad"), Some(0), "{line}");
    assert_eq!(num(line, "in_order"), Some(1), "{line}");
    assert_eq!(field(line, "event"), Some("none"), "{line}");
    assert_eq!(num(line, "msgs"), num(line, "acked"), "{line}");
}

/// Starts one of the peer program's hand-driven initiators (`storm`, `reset`, `hostile`) in
/// namespace A against the server's `port` in B.
pub fn initiator(lab: &Lab, role: &str, port: u16, extra: &[&str]) -> Peer {
    let connect = format!("connect={ADDR_B}:{port}");
    let mut a = args(&[role, &connect]);
    a.extend(args(extra));
    lab.spawn(Side::A, PEER, &a).expect(role)
}
