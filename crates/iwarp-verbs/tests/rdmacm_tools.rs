//! Unmodified Debian 12 programs that connect through librdmacm and move data, both sides
//! under `iwrun` on 127.0.0.1: rping (sizes 64 and 4096, and `-q`, its own queue pair
//! connected by number), rping against this stack's `iwping` in both directions, perftest's
//! six `-R` benchmarks at 1 B, 4 KiB, 64 KiB and 1 MiB, its two atomic benchmarks (8 bytes,
//! fetch-and-add and compare-and-swap), each of the eight against `iwperf` in both directions,
//! ucmatose, rdma_server/rdma_client, rdma_xserver/rdma_xclient, qperf's RC tests over
//! rdma_cm, fio's rdma engine (RDMA Write and Read). Programs that need what
//! iWARP or this library lacks (mckey, udaddy, rdma_xserver over XRC; rstream, riostream,
//! udpong and rcopy, which use rsockets) must load and fail cleanly: an exit status, not a
//! signal, with their own message and the library's. Each process has a time limit and is
//! killed by its PID when it overstays; each exit status and the output that proves the data
//! moved are checked.
//!
//! Under `CI=true` a missing Debian program fails (`.ci/run deps` installs rdmacm-utils and
//! perftest), as does a missing `iwping`/`iwperf` (`cargo test --workspace` builds them);
//! elsewhere the test prints why it skipped.

mod common;

use common::{wait_bounded, wait_listening};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (the host's choice; released at once).
fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

fn spawn(program: &[&str]) -> Child {
    Command::new(program[0])
        .args(&program[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program:?}: {e}"))
}

fn under_iwrun<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![env!("CARGO_BIN_EXE_iwrun")];
    v.extend_from_slice(args);
    v
}

/// Runs a server and, once its port listens, a client; returns both outputs (each process
/// killed by its PID if it overstays [`LIMIT`]).
fn pair(server: &[&str], client: &[&str], port: &str) -> (Output, Output) {
    common::shared_library(); // linked before either starts, so iwrun finds it current
    let s = spawn(server);
    if !wait_listening(port, Duration::from_secs(20)) {
        let out = wait_bounded(s, Duration::ZERO);
        panic!("{server:?} never listened: {out:?}");
    }
    let c = wait_bounded(spawn(client), LIMIT);
    let s = wait_bounded(s, LIMIT);
    (s, c)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn assert_ok(who: &str, o: &Output) {
    assert!(o.status.success(), "{who} failed ({:?}):\n{}", o.status, text(o));
}

/// One of this workspace's tools (`iwping`, `iwperf`), built beside this test's profile.
fn own_tool(name: &str) -> Option<PathBuf> {
    let p = common::profile_dir().join(name);
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("{name} is not built (cargo build -p iwarp-tools, or cargo test --workspace)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}: CI builds it");
    eprintln!("skipped: {msg}");
    None
}

/// The rping ping lines: `rdma-ping-N: ` and then letters rotating from 'A' + N.
fn check_pings(out: &str, prefix: &str, count: usize, size: usize) {
    let pings: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix(prefix)).collect();
    assert_eq!(pings.len(), count, "{count} pings with {prefix:?}:\n{out}");
    for (i, p) in pings.iter().enumerate() {
        let head = format!("rdma-ping-{i}: ");
        assert!(p.starts_with(&head), "{p}");
        let first = (b'A' + (i % 58) as u8) as char;
        assert!(p[head.len()..].starts_with(first), "ping {i} starts its pattern at {first:?}: {p}");
        // The buffer is `size` bytes with a terminating NUL.
        assert_eq!(p.len(), size - 1, "ping {i} is {size} bytes with its NUL");
    }
}

fn rping(size: Option<usize>, own_qp: bool) {
    if common::tool("rping", "rdmacm-utils").is_none() {
        return;
    }
    let port = free_port();
    let s = size.map(|s| s.to_string());
    let mut server = vec!["rping", "-s", "-a", "127.0.0.1", "-p", &port, "-v"];
    let mut client = vec!["rping", "-c", "-a", "127.0.0.1", "-p", &port, "-v", "-V", "-C", "5"];
    for v in [&mut server, &mut client] {
        if let Some(s) = &s {
            v.extend(["-S", s.as_str()]);
        }
        if own_qp {
            v.push("-q");
        }
    }
    let (so, co) = pair(&under_iwrun(&server), &under_iwrun(&client), &port);
    assert_ok("rping -c", &co);
    assert_ok("rping -s", &so);
    check_pings(&text(&co), "ping data: ", 5, size.unwrap_or(64));
    check_pings(&text(&so), "server ping data: ", 5, size.unwrap_or(64));
    assert!(text(&so).contains("server DISCONNECT EVENT"), "{}", text(&so));
}

#[test]
fn rping_pings_five_times_at_64_bytes() {
    rping(None, false);
}

#[test]
fn rping_pings_five_times_at_4096_bytes() {
    rping(Some(4096), false);
}

/// `-q`: rping makes its queue pairs with ibv_create_qp, moves them with rdma_init_qp_attr's
/// attributes and names them to rdma_connect/rdma_accept by `qp_num`.
#[test]
fn rping_with_its_own_queue_pairs_connected_by_number() {
    rping(None, true);
}

#[test]
fn rping_and_iwping_ping_each_other_both_ways() {
    if common::tool("rping", "rdmacm-utils").is_none() {
        return;
    }
    let Some(iwping) = own_tool("iwping") else { return };
    let iwping = iwping.to_str().unwrap();
    // rping client, iwping server.
    let port = free_port();
    let (so, co) = pair(
        &[iwping, "-s", "-a", "127.0.0.1", "-p", &port, "-v"],
        &under_iwrun(&["rping", "-c", "-a", "127.0.0.1", "-p", &port, "-v", "-V", "-C", "5"]),
        &port,
    );
    assert_ok("rping -c", &co);
    assert_ok("iwping -s", &so);
    check_pings(&text(&co), "ping data: ", 5, 64);
    // iwping client, rping server.
    let port = free_port();
    let (so, co) = pair(
        &under_iwrun(&["rping", "-s", "-a", "127.0.0.1", "-p", &port, "-v"]),
        &[iwping, "-c", "-a", "127.0.0.1", "-p", &port, "-v", "-V", "-C", "5"],
        &port,
    );
    assert_ok("iwping -c", &co);
    assert_ok("rping -s", &so);
    check_pings(&text(&so), "server ping data: ", 5, 64);
}

/// perftest's result line for `size`: `size iterations numbers...`.
fn result_line(out: &str, size: usize, iters: usize) -> Option<Vec<f64>> {
    out.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[0] == size.to_string() && f[1] == iters.to_string())
            .then(|| f[2..].iter().filter_map(|x| x.parse().ok()).collect())
    })
}

/// A latency test (its result line: t_min, t_max, t_typical, ...).
fn is_lat(program: &str) -> bool {
    program.ends_with("_lat")
}

/// Checks a perftest (or iwperf) side's output: the transport, and a result line for `size`
/// and `iters` whose figures are positive. Latency: minimum, maximum, typical and average.
/// Bandwidth: the message rate (six decimals); the peak and average in MB/s (two decimals)
/// from 4 KiB up, where a slow moment on a busy machine cannot round them to 0.00. A side
/// that prints the peer's figures or its own (`own`) needs the peak; a send_bw server's is
/// 0.00 (it times no posts). Returns the figures.
fn check_result(who: &str, program: &str, out: &str, size: usize, iters: usize, own: bool) -> Vec<f64> {
    assert!(out.contains("Transport type : IW"), "{who}:\n{out}");
    let r = result_line(out, size, iters).unwrap_or_else(|| panic!("{who}: no result line for {size}:\n{out}"));
    let want: &[usize] = match (is_lat(program), own, size >= 4096) {
        (true, _, _) => &[0, 1, 2, 3],
        (false, true, true) => &[0, 1, 2],
        (false, false, true) => &[1, 2],
        (false, _, false) => &[2],
    };
    assert!(want.iter().all(|&i| r.get(i).is_some_and(|v| *v > 0.0)), "{who} {size}: {r:?}\n{out}");
    r
}

/// Whether the server side of `program` prints a result line: bandwidth servers do (the
/// client's figures, or send_bw's own count); of the latency tests, only write_lat and
/// send_lat, which measure on both sides.
fn server_prints(program: &str) -> bool {
    !matches!(program, "ib_read_lat" | "ib_atomic_lat")
}

/// One perftest pair at a time: each side busy-polls, and on two cores several pairs at once
/// only slow each other down.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `-n` for a size: 100, but 10 at 1 MiB (each pair then stays within a few seconds in a
/// debug build).
fn iters_for(size: usize) -> usize {
    if size >= 1 << 20 {
        10
    } else {
        100
    }
}

/// Runs `program` with `extra` as server and client, both under iwrun, at each of `sizes`;
/// checks both exit statuses and both sides' result lines.
fn perftest_sizes(program: &str, sizes: &[usize], extra: &[&str]) {
    if common::tool(program, "perftest").is_none() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for &size in sizes {
        let port = free_port();
        let (s, n) = (size.to_string(), iters_for(size).to_string());
        let mut server = vec![program, "-R", "-p", port.as_str(), "-s", s.as_str(), "-n", n.as_str()];
        server.extend_from_slice(extra);
        let mut client = server.clone();
        client.push("127.0.0.1");
        let (so, co) = pair(&under_iwrun(&server), &under_iwrun(&client), &port);
        assert!(
            co.status.success() && so.status.success(),
            "{program} -s {size}: client {:?}:\n{}\nserver {:?}:\n{}",
            co.status,
            text(&co),
            so.status,
            text(&so)
        );
        let r = check_result("client", program, &text(&co), size, iters_for(size), true);
        if server_prints(program) {
            check_result("server", program, &text(&so), size, iters_for(size), program.ends_with("_lat"));
        } else {
            assert!(text(&so).contains("Transport type : IW"), "{}", text(&so));
        }
        eprintln!("{program} {extra:?} -s {size}: {r:?}");
    }
}

/// 1 B (every one of the six accepts it), 4 KiB, 64 KiB and 1 MiB.
const SIZES: [usize; 4] = [1, 4096, 65536, 1 << 20];

#[test]
fn ib_write_bw_over_rdma_cm() {
    perftest_sizes("ib_write_bw", &SIZES, &[]);
}

#[test]
fn ib_read_bw_over_rdma_cm() {
    perftest_sizes("ib_read_bw", &SIZES, &[]);
}

#[test]
fn ib_send_bw_over_rdma_cm() {
    perftest_sizes("ib_send_bw", &SIZES, &[]);
}

#[test]
fn ib_write_lat_over_rdma_cm() {
    perftest_sizes("ib_write_lat", &SIZES, &[]);
}

#[test]
fn ib_read_lat_over_rdma_cm() {
    perftest_sizes("ib_read_lat", &SIZES, &[]);
}

#[test]
fn ib_send_lat_over_rdma_cm() {
    perftest_sizes("ib_send_lat", &SIZES, &[]);
}

/// The atomic tests take 8 bytes only (`-s 8`, their default; any other size is refused).
/// Both sides are this stack, so the connection has RFC 7306 and its atomics.
#[test]
fn ib_atomic_bw_over_rdma_cm_fetch_and_add_and_compare_and_swap() {
    perftest_sizes("ib_atomic_bw", &[8], &[]);
    perftest_sizes("ib_atomic_bw", &[8], &["-A", "CMP_AND_SWAP"]);
}

#[test]
fn ib_atomic_lat_over_rdma_cm_fetch_and_add_and_compare_and_swap() {
    perftest_sizes("ib_atomic_lat", &[8], &[]);
    perftest_sizes("ib_atomic_lat", &[8], &["-A", "CMP_AND_SWAP"]);
}

/// `program` against this stack's `iwperf TEST` on the other side, both ways: perftest's
/// server (under iwrun) with iwperf's client, then iwperf's server with perftest's client.
/// Each side must succeed; each side that prints a result line must print positive figures
/// for `size`.
fn perftest_and_iwperf(program: &str, size: usize, extra: &[&str]) {
    if common::tool(program, "perftest").is_none() {
        return;
    }
    let Some(iwperf) = own_tool("iwperf") else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let iwperf = iwperf.to_str().unwrap();
    let test = program.strip_prefix("ib_").unwrap();
    let iters = iters_for(size);
    for perftest_serves in [true, false] {
        let port = free_port();
        let (s, n) = (size.to_string(), iters.to_string());
        let mut args = vec!["-R", "-p", port.as_str(), "-s", s.as_str(), "-n", n.as_str()];
        args.extend_from_slice(extra);
        let ours: Vec<&str> = [iwperf, test].iter().chain(&args).copied().collect();
        let theirs: Vec<&str> = under_iwrun(&[&[program][..], &args].concat());
        let (server, mut client, names) = if perftest_serves {
            (theirs, ours, (program.to_string(), format!("iwperf {test}")))
        } else {
            (ours, theirs, (format!("iwperf {test}"), program.to_string()))
        };
        client.push("127.0.0.1");
        let (so, co) = pair(&server, &client, &port);
        let what = format!("{} server, {} client, -s {size}", names.0, names.1);
        assert!(
            co.status.success() && so.status.success(),
            "{what}: client {:?}:\n{}\nserver {:?}:\n{}",
            co.status,
            text(&co),
            so.status,
            text(&so)
        );
        let r = check_result(&format!("{what}: client"), program, &text(&co), size, iters, true);
        if server_prints(program) {
            let own = is_lat(program);
            check_result(&format!("{what}: server"), program, &text(&so), size, iters, own);
        }
        eprintln!("{what}: {r:?}");
    }
}

#[test]
fn ib_write_bw_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_write_bw", 1 << 20, &[]);
}

#[test]
fn ib_read_bw_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_read_bw", 4096, &[]);
}

#[test]
fn ib_send_bw_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_send_bw", 65536, &[]);
}

#[test]
fn ib_write_lat_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_write_lat", 1, &[]);
}

#[test]
fn ib_read_lat_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_read_lat", 1 << 20, &[]);
}

#[test]
fn ib_send_lat_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_send_lat", 4096, &[]);
}

#[test]
fn ib_atomic_bw_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_atomic_bw", 8, &[]);
}

#[test]
fn ib_atomic_lat_and_iwperf_measure_each_other() {
    perftest_and_iwperf("ib_atomic_lat", 8, &["-A", "CMP_AND_SWAP"]);
}

#[test]
fn ucmatose_connects_two_queue_pairs_and_exchanges_messages() {
    if common::tool("ucmatose", "rdmacm-utils").is_none() {
        return;
    }
    let port = free_port();
    let (so, co) = pair(
        &under_iwrun(&["ucmatose", "-p", &port, "-c", "2", "-C", "5"]),
        &under_iwrun(&["ucmatose", "-s", "127.0.0.1", "-p", &port, "-c", "2", "-C", "5"]),
        &port,
    );
    assert_ok("ucmatose (client)", &co);
    assert_ok("ucmatose (server)", &so);
    for o in [&so, &co] {
        let t = text(o);
        assert!(t.contains("data transfers complete") && t.contains("return status 0"), "{t}");
    }
}

#[test]
fn rdma_server_and_rdma_client_use_synchronous_endpoints() {
    if common::tool("rdma_server", "rdmacm-utils").is_none() {
        return;
    }
    let port = free_port();
    let (so, co) = pair(
        &under_iwrun(&["rdma_server", "-p", &port]),
        &under_iwrun(&["rdma_client", "-s", "127.0.0.1", "-p", &port]),
        &port,
    );
    assert_ok("rdma_client", &co);
    assert_ok("rdma_server", &so);
    assert!(text(&co).contains("rdma_client: end 0"), "{}", text(&co));
    assert!(text(&so).contains("rdma_server: end 0"), "{}", text(&so));
}

/// rping links both librdmacm.so.1 and libibverbs.so.1 with BIND_NOW: both names load the
/// same file once (one copy of the stack's state).
#[test]
fn librdmacm_and_libibverbs_are_one_object_in_a_program_linking_both() {
    if common::tool("rping", "rdmacm-utils").is_none() {
        return;
    }
    let port = free_port();
    common::shared_library();
    let server = spawn(&under_iwrun(&["rping", "-s", "-a", "127.0.0.1", "-p", &port]));
    let pid = server.id();
    let listening = wait_listening(&port, Duration::from_secs(20));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut server = server;
    let _ = server.kill(); // by its PID: rping -s waits for clients forever
    let _ = server.wait();
    assert!(listening, "rping -s never listened");
    let ours = common::shared_library();
    let ours = std::fs::canonicalize(&ours).unwrap();
    let exec_maps: Vec<&str> = maps.lines().filter(|l| l.contains(" r-xp ") || l.contains(" r-x")).collect();
    let mapped = |needle: &str| exec_maps.iter().filter(|l| l.ends_with(needle)).count();
    assert_eq!(mapped(ours.to_str().unwrap()), 1, "one executable mapping of our library:\n{maps}");
    assert_eq!(mapped("/librdmacm.so.1.3.44.0") + mapped("/libibverbs.so.1.14.44.0"), 0, "no system copy:\n{maps}");
}

#[test]
fn rdma_xserver_and_rdma_xclient_exchange_a_message_over_rc() {
    if common::tool("rdma_xserver", "rdmacm-utils").is_none() {
        return;
    }
    let port = free_port();
    let (so, co) = pair(
        &under_iwrun(&["rdma_xserver", "-p", &port]),
        &under_iwrun(&["rdma_xclient", "-s", "127.0.0.1", "-p", &port]),
        &port,
    );
    assert_ok("rdma_xclient", &co);
    assert_ok("rdma_xserver", &so);
    assert!(text(&co).contains("rdma_xclient: end 0"), "{}", text(&co));
    assert!(text(&so).contains("rdma_xserver: end 0"), "{}", text(&so));
}

/// Exits with a status (no signal), not 0, with `needles` in its output.
fn fails_cleanly(who: &str, o: &Output, needles: &[&str]) {
    assert!(o.status.code().is_some_and(|c| c != 0), "{who} exits with an error, not a signal: {o:?}");
    let t = text(o);
    for n in needles {
        assert!(t.contains(n), "{who}: {n:?} missing from:\n{t}");
    }
}

/// XRC needs InfiniBand's port space: rdma_xserver `-c x` stops at its first call.
#[test]
fn rdma_xserver_over_xrc_fails_cleanly_at_rdma_create_ep() {
    if common::tool("rdma_xserver", "rdmacm-utils").is_none() {
        return;
    }
    let port = free_port();
    let o = common::iwrun(&["rdma_xserver", "-c", "x", "-p", &port], LIMIT);
    fails_cleanly(
        "rdma_xserver -c x",
        &o,
        &["rdma_create_ep: Operation not supported", "librdmacm (iwarp): rdma_create_id() refused"],
    );
}

/// rstream, riostream, rcopy and udpong load (they import the rsockets calls) and stop where
/// they ask for an rsocket, saying why, as server and as client.
#[test]
fn rsockets_programs_load_and_fail_at_rsocket_with_a_message() {
    let port = free_port();
    for (program, role) in [
        ("rstream", &["-p", &port][..]),
        ("rstream", &["-s", "127.0.0.1", "-p", &port][..]),
        ("riostream", &["-p", &port][..]),
        ("riostream", &["-s", "127.0.0.1", "-p", &port][..]),
        ("udpong", &["-p", &port][..]),
        ("rcopy", &[][..]),
    ] {
        if common::tool(program, "rdmacm-utils").is_none() {
            continue;
        }
        let mut args = vec![program];
        args.extend_from_slice(role);
        let o = common::iwrun(&args, LIMIT);
        fails_cleanly(
            &args.join(" "),
            &o,
            &[
                "rsocket failed: Function not implemented",
                "librdmacm (iwarp): rsocket() refused: rsockets are not implemented",
            ],
        );
    }
}

/// mckey and udaddy use unreliable datagrams (their default port space is UDP): they stop
/// at their first identifier, and the library says why. mckey in the TCP port space gets
/// as far as its UD queue pair, which is refused.
#[test]
fn datagram_and_multicast_programs_load_and_fail_cleanly() {
    if common::tool("mckey", "rdmacm-utils").is_none() || common::tool("udaddy", "rdmacm-utils").is_none() {
        return;
    }
    let refused = "librdmacm (iwarp): rdma_create_id() refused: iWARP has reliable connections only";
    let o = common::iwrun(&["mckey", "-m", "239.1.1.1", "-b", "127.0.0.1"], LIMIT);
    fails_cleanly("mckey", &o, &[refused]);
    let o = common::iwrun(&["mckey", "-p", "0x0106", "-m", "239.1.1.1", "-b", "127.0.0.1"], LIMIT);
    fails_cleanly("mckey -p 0x0106", &o, &["mckey: unable to create QP: Operation not supported"]);
    let o = common::iwrun(&["udaddy", "-b", "127.0.0.1", "-p", &free_port()], LIMIT);
    fails_cleanly("udaddy", &o, &[refused, "udaddy: listen request failed: Operation not supported"]);
}

/// The first number after `=` on the line following `test:` in qperf's output.
fn qperf_value(out: &str, test: &str) -> Option<f64> {
    let mut lines = out.lines().skip_while(|l| l.trim() != format!("{test}:"));
    lines.next()?;
    let v = lines.next()?.split('=').nth(1)?;
    v.split_whitespace().next()?.parse().ok()
}

/// qperf's RC tests over rdma_cm (`-cm1`), one client run against one server (killed by its
/// PID afterwards: a qperf server never exits). `rc_bw` and `rc_bi_bw` send without waiting
/// for the peer's receives (InfiniBand's receiver-not-ready retry covers them there): a Send
/// that finds none posted waits for one (`ConnParams::recv_wait`, see docs/verbs-abi.md).
/// The UD test must fail cleanly.
/// qperf's server serves one test at a time and its per-test child waits for
/// `RDMA_CM_EVENT_DISCONNECTED` after the client's `rdma_disconnect`: a server that noticed
/// the client's FIN late (it arrived with the last FPDU, and the event loop stopped at the
/// short read) held the next test back until the client timed out ("failed to receive RDMA CM
/// TCP IPv4 server port"), about one run in three (tests/cm.rs,
/// `a_last_fpdu_and_fin_arriving_together_are_both_taken`).
#[test]
fn qperf_rc_tests_over_rdma_cm() {
    if common::tool("qperf", "qperf").is_none() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_port();
    let tests = [
        "rc_lat",
        "rc_rdma_write_lat",
        "rc_rdma_write_poll_lat",
        "rc_rdma_read_lat",
        "rc_rdma_read_bw",
        "rc_rdma_write_bw",
        "rc_compare_swap_mr",
        "rc_fetch_add_mr",
        "rc_bw",
        "rc_bi_bw",
    ];
    common::shared_library();
    let server = spawn(&under_iwrun(&["qperf", "-lp", port.as_str()]));
    assert!(wait_listening(&port, Duration::from_secs(20)), "qperf's server never listened");
    let mut args = vec!["qperf", "127.0.0.1", "-lp", port.as_str(), "-cm1", "-t", "1"];
    args.extend(tests);
    let c = wait_bounded(spawn(&under_iwrun(&args)), LIMIT);
    let ud = wait_bounded(spawn(&under_iwrun(&["qperf", "127.0.0.1", "-lp", port.as_str(), "ud_lat"])), LIMIT);
    let s = wait_bounded(server, Duration::ZERO);
    let out = text(&c);
    assert!(c.status.success(), "qperf client {:?}:\n{out}\nserver:\n{}", c.status, text(&s));
    for t in tests {
        let v = qperf_value(&out, t).unwrap_or_else(|| panic!("no result for {t}:\n{out}"));
        assert!(v > 0.0, "{t}: {v}\n{out}");
        eprintln!("qperf {t}: {v}");
    }
    let ud_out = text(&ud);
    assert_eq!(ud.status.code(), Some(1), "ud_lat fails cleanly:\n{ud_out}");
    assert!(ud_out.contains("failed to create QP: Operation not supported"), "{ud_out}");
}

/// fio's rdma engine: the server reads (`--rw=read`, no hostname), the client writes, with
/// RDMA Writes, RDMA Reads and Sends (`--verb`). With `--verb=send` the server posts one
/// receive per I/O depth while the client sends ahead: Sends wait for their receives
/// (`ConnParams::recv_wait`), as qperf's `rc_bw`.
#[test]
fn fio_rdma_engine_moves_data_with_writes_reads_and_sends() {
    if common::tool("fio", "fio").is_none() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for verb in ["write", "read", "send"] {
        let port = free_port();
        // The engine's options (port, verb, hostname) only after --ioengine.
        let port_arg = format!("--port={port}");
        let verb_arg = format!("--verb={verb}");
        let server =
            ["fio", "--name=server", "--ioengine=rdma", "--rw=read", "--bs=64k", "--size=4m", &port_arg, &verb_arg];
        let mut client = server.to_vec();
        client[1] = "--name=client";
        client[3] = "--rw=write";
        client.push("--hostname=127.0.0.1");
        let (so, co) = pair(&under_iwrun(&server), &under_iwrun(&client), &port);
        let out = text(&co);
        assert!(co.status.success() && so.status.success(), "fio {verb}: client:\n{out}\nserver:\n{}", text(&so));
        assert!(out.contains("err= 0"), "{out}");
        let line = out.lines().find(|l| l.trim_start().starts_with("WRITE: bw=")).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("io=4096KiB"), "all 4 MiB moved: {line}");
        let bw: f64 = line
            .split("bw=")
            .nth(1)
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit() && c != '.').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(bw > 0.0, "{line}");
        eprintln!("fio --verb={verb}: {line}");
    }
}
