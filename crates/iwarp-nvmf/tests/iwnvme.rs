//! The `iwnvme target` binary: serves memory or a file, prints its listening line, answers a host.

mod common;

use common::*;
use iwarp_nvmf::wire::{cns, io_opcode, Command, IdentifyNamespace, Sgl, Status, IDENTIFY_LEN};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command as Proc, Stdio};

struct Running {
    child: Child,
    addr: SocketAddr,
    line: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only the child this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    let mut child = Proc::new(env!("CARGO_BIN_EXE_iwnvme"))
        .arg("target")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("iwnvme starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(3).and_then(|a| a.parse().ok());
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("unexpected first line {line:?}");
    };
    Running { child, addr, line }
}

fn write_read(addr: SocketAddr, blocks: u64) -> Vec<u8> {
    let mut admin = HostQueue::connect(addr, 0, 31);
    let cntlid = admin.admin_setup(5000);
    let cid = admin.cid();
    let (r, page) = admin.exec_read(Command::identify(cid, 1, cns::NAMESPACE, &Sgl::none()), IDENTIFY_LEN, false);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(IdentifyNamespace::parse(&page).unwrap().blocks, blocks);
    let mut io = HostQueue::connect(addr, 1, 31);
    assert_eq!(io.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN).status(), Status::SUCCESS);
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 2, 7, &Sgl::InCapsule { offset: 0, length: 4096 });
    assert_eq!(io.exec_with(&cmd, &data).status(), Status::SUCCESS);
    let cid = io.cid();
    let (r, back) = io.exec_read(Command::rw(io_opcode::READ, cid, 1, 2, 7, &Sgl::none()), 4096, true);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(back, data);
    data
}

#[test]
fn iwnvme_target_serves_memory() {
    let t = spawn(&["--listen", "127.0.0.1:0", "--nqn", NQN, "--mem-size", "1M"]);
    assert_eq!(t.line.trim(), format!("iwnvme: listening on {} nqn {NQN} size 1048576", t.addr));
    write_read(t.addr, 2048);
}

#[test]
fn iwnvme_target_serves_a_file_it_sizes() {
    let path = std::env::temp_dir().join(format!("iwnvme-test-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let t = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--nqn",
        NQN,
        "--file",
        path.to_str().unwrap(),
        "--size",
        "64K",
        "--crc",
        "require",
    ]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 65536);
    let data = write_read(t.addr, 128);
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[1024..1024 + 4096], &data[..]);
    drop(t);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn iwnvme_target_without_crc_serves_a_host_that_declines_it() {
    let t = spawn(&["--listen", "127.0.0.1:0", "--nqn", NQN, "--mem-size", "64K", "--no-crc"]);
    let mut q = connect_raw(t.addr, &cm_request(0, 31), false).unwrap();
    assert!(!q.qp.conn_info().unwrap().crc);
    assert_ne!(q.admin_setup(0), 0);
}

#[test]
fn iwnvme_target_refuses_bad_arguments() {
    for args in [
        &["--nqn", NQN][..],
        &["--nqn", NQN, "--mem-size", "lots"][..],
        &["--nqn", NQN, "--mem-size", "1M", "--file", "/nonexistent/x"][..],
        &["--nqn", NQN, "--mem-size", "100"][..],
        &["--listen", "nowhere", "--nqn", NQN, "--mem-size", "1M"][..],
        &["--nqn", NQN, "--mem-size", "1M", "--crc", "require", "--no-crc"][..],
    ] {
        let out = Proc::new(env!("CARGO_BIN_EXE_iwnvme")).arg("target").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn bench_reports_every_workload_over_nvmf_and_raw_as_json() {
    let out = Proc::new(env!("CARGO_BIN_EXE_iwnvme"))
        .args(["bench", "--mem-size", "8M", "--seconds", "0.05", "--queues", "1", "--json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("iwnvme runs");
    assert!(out.status.success(), "exit status {:?}", out.status);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = doc["rows"].as_array().expect("rows");
    // 8 workloads (seq 1 MiB and random 4 KiB, write and read, depth 1 and 32) on both devices.
    assert_eq!(rows.len(), 16);
    for r in rows {
        let name = r["name"].as_str().unwrap();
        assert!(r["median"]["iops"].as_f64().unwrap() > 0.0, "{name} on {}", r["device"]);
        assert!(r["median"]["p99_us"].as_f64().unwrap() >= r["median"]["p50_us"].as_f64().unwrap());
    }
    assert!(rows.iter().any(|r| r["name"] == "rand-read-4K-qd32" && r["device"] == "nvmf"));
}
