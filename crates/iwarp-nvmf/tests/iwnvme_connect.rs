//! `iwnvme target` and `iwnvme connect` as processes on 127.0.0.1, with `qemu-img` reading
//! and writing the attached namespace through NBD; and a target process that is killed.

use iwarp_nvmf::block::BlockDevice;
use iwarp_nvmf::host::{Controller, HostOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2026-12.io.example:iwnvme-connect";

/// A child process killed (by its own PID) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `iwnvme ARGS` and returns it with its first line of output (waiting up to 20 s).
fn start(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iwnvme"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("iwnvme {args:?}: no output"));
    assert!(!line.is_empty(), "iwnvme {args:?} exited without a line");
    (proc, line.trim().to_string())
}

/// Starts a memory-backed target on an ephemeral port; returns it and its address.
fn target(size: &str) -> (Proc, String) {
    let (p, line) = start(&["target", "--listen", "127.0.0.1:0", "--nqn", NQN, "--mem-size", size]);
    let addr = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (p, addr)
}

/// The path of an installed tool, or `None` with a printed reason outside CI (CI installs it).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        let msg = format!("{name} is not installed (apt-get install {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}: CI must have it");
        eprintln!("skipped: {msg}");
    }
    found
}

/// Runs a tool to completion (killed after 120 s); panics on failure; returns its stdout.
fn run(program: &Path, args: &[&str]) -> String {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{} {args:?} did not finish in 120 s", program.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Output { status: p.0.wait().unwrap(), stdout: Vec::new(), stderr: Vec::new() };
    use std::io::Read;
    if let Some(mut s) = p.0.stdout.take() {
        s.read_to_end(&mut out.stdout).unwrap();
    }
    if let Some(mut s) = p.0.stderr.take() {
        s.read_to_end(&mut out.stderr).unwrap();
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn qemu_img_sees_the_size_and_round_trips_an_image_through_iwnvme_connect() {
    let Some(qemu_img) = tool("qemu-img", "qemu-utils") else { return };
    let dir = std::env::temp_dir().join(format!("iwnvme-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ns.sock");
    let (_target, addr) = target("24M");
    let (_host, line) = start(&[
        "connect",
        &addr,
        "--nqn",
        NQN,
        "--nbd-socket",
        sock.to_str().unwrap(),
        "--queues",
        "3",
        "--queue-size",
        "32",
    ]);
    assert_eq!(line, format!("iwnvme: namespace 1 of {NQN}, {} bytes, served on {}", 24 << 20, sock.display()));
    let uri = format!("nbd+unix:///?socket={}", sock.display());

    let info = run(&qemu_img, &["info", "--output=json", &uri]);
    assert!(info.contains(&format!("\"virtual-size\": {}", 24 << 20)), "{info}");

    let image = random_bytes(24 << 20, 0x5eed);
    let src = dir.join("src.img");
    let back = dir.join("back.img");
    std::fs::write(&src, &image).unwrap();
    run(&qemu_img, &["convert", "-n", "-f", "raw", "-O", "raw", src.to_str().unwrap(), &uri]);
    run(&qemu_img, &["convert", "-f", "raw", "-O", "raw", &uri, back.to_str().unwrap()]);
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), image.len());
    let first_diff = got.iter().zip(&image).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "the image read back differs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_fail_instead_of_hanging_when_the_target_process_is_killed() {
    let (mut target, addr) = target("4M");
    let opts = HostOptions {
        io_queues: 2,
        queue_size: 16,
        command_timeout: Duration::from_secs(15),
        ..HostOptions::default()
    };
    let ctrl = Controller::connect(addr.parse().unwrap(), NQN, &opts).unwrap();
    let ns = ctrl.namespace();
    ns.write_at(&[9u8; 8192], 0).unwrap();
    let mut back = [0u8; 8192];
    ns.read_at(&mut back, 0).unwrap();
    assert_eq!(back, [9u8; 8192]);
    target.0.kill().unwrap();
    target.0.wait().unwrap();
    let start = Instant::now();
    for _ in 0..4 {
        assert!(ns.read_at(&mut back, 0).is_err());
    }
    assert!(start.elapsed() < Duration::from_secs(5), "errors took {:?}", start.elapsed());
    let t0 = Instant::now();
    drop(ns);
    drop(ctrl);
    assert!(t0.elapsed() < Duration::from_secs(6), "shutdown took {:?}", t0.elapsed());
}

#[test]
fn iwnvme_connect_serves_over_tcp_too() {
    let Some(qemu_img) = tool("qemu-img", "qemu-utils") else { return };
    let (_target, addr) = target("8M");
    // A port the host picked a moment ago (loopback: nothing else takes it in between).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nbd = format!("127.0.0.1:{port}");
    let (_host, line) = start(&["connect", &addr, "--nqn", NQN, "--nbd-listen", &nbd, "--queues", "2"]);
    assert_eq!(line, format!("iwnvme: namespace 1 of {NQN}, {} bytes, served on {nbd}", 8 << 20));
    let info = run(&qemu_img, &["info", "--output=json", &format!("nbd://{nbd}")]);
    assert!(info.contains(&format!("\"virtual-size\": {}", 8 << 20)), "{info}");
}

#[test]
fn iwnvme_connect_to_a_wrong_nqn_exits_with_the_connect_status() {
    let (_target, addr) = target("1M");
    let dir = std::env::temp_dir().join(format!("iwnvme-connect-nqn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ns.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_iwnvme"))
        .args(["connect", &addr, "--nqn", "nqn.2026-12.io.example:nobody", "--nbd-socket", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "iwnvme connect did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("Fabrics Connect failed: Connect Invalid Parameters"), "{err}");
    assert!(!sock.exists(), "no socket is served after a failed attach");
    std::fs::remove_dir_all(&dir).unwrap();
}
