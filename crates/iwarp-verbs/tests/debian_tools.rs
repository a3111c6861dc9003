//! Unmodified Debian 12 rdma-core programs against the built library: every libibverbs symbol
//! they import (at load time: they are linked with BIND_NOW) exists at its version, and
//! `ibv_devices` and `ibv_devinfo -v` run under `iwrun` and show the device.
//!
//! Under `CI=true` a missing tool fails these tests (`.ci/run deps` installs ibverbs-utils,
//! rdmacm-utils, perftest and binutils); elsewhere they are skipped with the reason printed.

#![allow(unsafe_code)]

mod common;

use common::{iwrun, wait_bounded, wait_listening};
use std::ffi::{c_int, c_void};
use std::process::{Command, Stdio};
use std::ptr::null_mut;
use std::time::Duration;

/// The Debian programs of the notes: ibverbs-utils, rdmacm-utils and perftest.
const PROGRAMS: &[(&str, &str)] = &[
    ("ibv_devices", "ibverbs-utils"),
    ("ibv_devinfo", "ibverbs-utils"),
    ("ibv_rc_pingpong", "ibverbs-utils"),
    ("ibv_srq_pingpong", "ibverbs-utils"),
    ("ibv_asyncwatch", "ibverbs-utils"),
    ("rping", "rdmacm-utils"),
    ("ucmatose", "rdmacm-utils"),
    ("rdma_server", "rdmacm-utils"),
    ("rdma_client", "rdmacm-utils"),
    ("ib_write_bw", "perftest"),
    ("ib_read_bw", "perftest"),
    ("ib_send_bw", "perftest"),
    ("ib_write_lat", "perftest"),
    ("ib_read_lat", "perftest"),
    ("ib_send_lat", "perftest"),
    ("ib_atomic_bw", "perftest"),
];

/// `(symbol, version)` of every libibverbs import of `program` (`objdump -T`).
fn ibverbs_imports(objdump: &std::path::Path, program: &std::path::Path) -> Vec<(String, String)> {
    imports(objdump, program, "IBVERBS_")
}

/// `(symbol, version)` of every import of `program` whose version starts with `prefix`.
fn imports(objdump: &std::path::Path, program: &std::path::Path, prefix: &str) -> Vec<(String, String)> {
    let out = Command::new(objdump).arg("-T").arg(program).output().expect("objdump runs");
    assert!(out.status.success(), "objdump -T {}", program.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("*UND*"))
        .filter_map(|l| {
            let mut f = l.split_whitespace().rev();
            let name = f.next()?;
            let version = f.next()?.trim_matches(|c| c == '(' || c == ')');
            version.starts_with(prefix).then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

#[test]
fn every_libibverbs_import_of_the_debian_tools_exists_at_its_version() {
    let Some(objdump) = common::tool("objdump", "binutils") else { return };
    let lib = common::lib();
    let mut checked = 0;
    for (name, package) in PROGRAMS {
        let Some(program) = common::tool(name, package) else { continue };
        let imports = ibverbs_imports(&objdump, &program);
        assert!(!imports.is_empty(), "{name} imports nothing from libibverbs?");
        for (sym, version) in imports {
            assert!(!lib.raw(&sym, &version).is_null(), "{name} needs {sym}@{version}");
            checked += 1;
        }
    }
    assert!(checked > 0 || std::env::var("CI").as_deref() != Ok("true"));
}

/// Every librdmacm import of the programs (rping, ucmatose, rdma_server/rdma_client, udaddy,
/// perftest) exists at its version in the same library (librdmacm.so.1 is its second name).
#[test]
fn every_librdmacm_import_of_the_debian_tools_exists_at_its_version() {
    let Some(objdump) = common::tool("objdump", "binutils") else { return };
    let lib = common::lib();
    let mut checked = 0;
    for (name, package) in PROGRAMS.iter().chain(&[("udaddy", "rdmacm-utils")]) {
        let Some(program) = common::tool(name, package) else { continue };
        for (sym, version) in imports(&objdump, &program, "RDMACM_") {
            assert!(!lib.raw(&sym, &version).is_null(), "{name} needs {sym}@{version}");
            checked += 1;
        }
    }
    assert!(checked > 0 || std::env::var("CI").as_deref() != Ok("true"));
}

/// perftest's programs load libmlx5.so.1 and libefa.so.1 at start (BIND_NOW): the stand-ins
/// have every function they import, at its version, and each says "no such device".
#[test]
fn the_stand_in_vendor_libraries_have_what_perftest_imports() {
    let Some(objdump) = common::tool("objdump", "binutils") else { return };
    let mlx5 = common::load_beside("libmlx5.so.1");
    let efa = common::load_beside("libefa.so.1");
    let mut checked = 0;
    for (name, package) in PROGRAMS.iter().filter(|(_, p)| *p == "perftest") {
        let Some(program) = common::tool(name, package) else { continue };
        for (lib, prefix) in [(&mlx5, "MLX5_"), (&efa, "EFA_")] {
            for (sym, version) in imports(&objdump, &program, prefix) {
                assert!(!lib.raw(&sym, &version).is_null(), "{name} needs {sym}@{version}");
                checked += 1;
            }
        }
    }
    assert!(checked > 0 || std::env::var("CI").as_deref() != Ok("true"));
    // SAFETY: the C prototypes of mlx5dv.h and efadv.h (pointer arguments as void *); the
    // stand-ins read none of their arguments.
    unsafe {
        let open: unsafe extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void =
            mlx5.func("mlx5dv_open_device", "MLX5_1.7");
        assert!(open(null_mut(), null_mut()).is_null());
        assert_eq!(common::errno(), libc::ENODEV);
        let query: unsafe extern "C" fn(*mut c_void, *mut c_void, u32) -> c_int =
            efa.func("efadv_query_device", "EFA_1.1");
        assert_eq!(query(null_mut(), null_mut(), 0), libc::ENODEV);
        assert!(mlx5.raw("ibv_open_device", "IBVERBS_1.1").is_null(), "a stand-in exports only its own functions");
    }
}

#[test]
fn ibv_devices_lists_iwarp0() {
    if common::tool("ibv_devices", "ibverbs-utils").is_none() {
        return;
    }
    let out = iwrun(&["ibv_devices"], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ibv_devices: {out:?}");
    let line = stdout.lines().find(|l| l.contains("iwarp0")).unwrap_or_else(|| panic!("no iwarp0 in:\n{stdout}"));
    let guid = line.split_whitespace().nth(1).expect("a GUID column");
    assert_eq!(guid.len(), 16, "{line}");
    assert_eq!(&guid[6..10], "fffe", "an EUI-64 GUID: {line}");
}

#[test]
fn ibv_devinfo_verbose_shows_an_active_iwarp_port() {
    if common::tool("ibv_devinfo", "ibverbs-utils").is_none() {
        return;
    }
    let out = iwrun(&["ibv_devinfo", "-v"], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ibv_devinfo -v: {out:?}");
    for expected in [
        "hca_id:\tiwarp0",
        "transport:\t\t\tiWARP (1)",
        "vendor_id:\t\t\t0x697770",
        "phys_port_cnt:\t\t\t1",
        "max_sge_rd:\t\t\t1",
        "port:\t1",
        "state:\t\t\tPORT_ACTIVE (4)",
        "link_layer:\t\tEthernet",
        "gid_tbl_len:\t\t1",
        "max_mtu:\t\t4096 (5)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
    // Port 2 does not exist: a clear error, not a crash.
    let out = iwrun(&["ibv_devinfo", "-i", "2"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4), "ibv_devinfo -i 2: {out:?}");
}

/// `ibv_rc_pingpong` moves its queue pairs to RTR and RTS by hand, which iWARP cannot do: the
/// server (which moves first) must fail with the program's own message, the client when the
/// server goes away, both with the program's exit code, neither by a signal.
#[test]
fn a_program_that_moves_queue_pairs_by_hand_fails_cleanly() {
    if common::tool("ibv_rc_pingpong", "ibverbs-utils").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    common::shared_library();
    let spawn = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_iwrun"))
            .args(["ibv_rc_pingpong", "-d", "iwarp0", "-g", "0", "-p", &port])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iwrun starts")
    };
    let server = spawn(&[]);
    // The client does not retry, and a probe connection would be the server's one client:
    // wait until the kernel shows the port listening.
    assert!(wait_listening(&port, Duration::from_secs(20)), "the server never listened");
    let client = wait_bounded(spawn(&["127.0.0.1"]), Duration::from_secs(30));
    let server = wait_bounded(server, Duration::from_secs(30));
    for (who, out) in [("client", &client), ("server", &server)] {
        assert_eq!(out.status.code(), Some(1), "{who} exits with an error, not a signal: {out:?}");
    }
    let stderr = String::from_utf8_lossy(&server.stderr);
    assert!(stderr.contains("Failed to modify QP to RTR"), "server: {stderr}");
}
