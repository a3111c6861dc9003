//! Unmodified Debian 12 rdma-core programs against the built library: every symbol every
//! program of ibverbs-utils, rdmacm-utils and perftest imports from libibverbs, librdmacm,
//! libmlx5 and libefa (at load time: they are linked with BIND_NOW) exists at its version,
//! every function of Debian's librdmacm is exported, and `ibv_devices` and `ibv_devinfo -v`
//! run under `iwrun` and show the device.
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

/// The packages whose every program must load on this library.
const PACKAGES: [&str; 3] = ["ibverbs-utils", "rdmacm-utils", "perftest"];

/// Every ELF program in `/usr/bin` of `package` (its scripts left out), from `dpkg -L`; `None`
/// with a printed reason when the package is not installed (a failure under `CI=true`).
fn package_programs(package: &str) -> Option<Vec<std::path::PathBuf>> {
    let listed = Command::new("dpkg").args(["-L", package]).output().ok().filter(|o| o.status.success());
    let Some(listed) = listed else {
        let msg = format!("{package} is not installed (apt-get install {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}: CI must have it");
        eprintln!("skipped: {msg}");
        return None;
    };
    let programs = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with("/usr/bin/"))
        .map(std::path::PathBuf::from)
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF")))
        .collect::<Vec<_>>();
    assert!(!programs.is_empty(), "{package} has programs");
    Some(programs)
}

/// Every import of every program of ibverbs-utils, rdmacm-utils and perftest from libibverbs,
/// librdmacm, libmlx5 and libefa exists at its version in the library that answers for it
/// here (librdmacm.so.1 is libibverbs.so.1's second name; the vendor libraries are the
/// stand-ins): each of them loads (BIND_NOW), including mckey, rstream, riostream, rcopy,
/// udpong and rdma_xserver, which import multicast, rsockets and shared receive queues.
#[test]
fn every_import_of_every_debian_rdma_program_exists_at_its_version() {
    let Some(objdump) = common::tool("objdump", "binutils") else { return };
    let verbs = common::lib();
    let mlx5 = common::load_beside("libmlx5.so.1");
    let efa = common::load_beside("libefa.so.1");
    let mut checked = 0;
    let mut programs = 0;
    for package in PACKAGES {
        for program in package_programs(package).into_iter().flatten() {
            programs += 1;
            for (lib, prefix) in [(verbs, "IBVERBS_"), (verbs, "RDMACM_"), (&mlx5, "MLX5_"), (&efa, "EFA_")] {
                for (sym, version) in imports(&objdump, &program, prefix) {
                    assert!(!lib.raw(&sym, &version).is_null(), "{} needs {sym}@{version}", program.display());
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} imports of {programs} programs found");
    assert!(checked > 0 || std::env::var("CI").as_deref() != Ok("true"));
}

/// Every function Debian's own librdmacm.so.1 exports, at its version, is exported here too
/// (those this library refuses answer with an errno), so no program built against rdma-core
/// 44's librdmacm fails to load.
#[test]
fn every_function_of_rdma_core_44s_librdmacm_is_exported_at_its_version() {
    let Some(objdump) = common::tool("objdump", "binutils") else { return };
    let real = std::path::Path::new("/usr/lib/x86_64-linux-gnu/librdmacm.so.1");
    if !real.exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "librdmacm1 must be installed in CI");
        eprintln!("skipped: librdmacm1 is not installed");
        return;
    }
    let out = Command::new(&objdump).arg("-T").arg(real).output().expect("objdump runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let exported: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.contains("*UND*") && l.contains(" DF "))
        .filter_map(|l| {
            let mut f = l.split_whitespace().rev();
            let name = f.next()?;
            let version = f.next()?;
            version.starts_with("RDMACM_").then_some((name, version))
        })
        .collect();
    assert!(exported.len() >= 60, "rdma-core 44's librdmacm exports about 70 functions: {exported:?}");
    let lib = common::lib();
    let missing: Vec<_> = exported.iter().filter(|(n, v)| lib.raw(n, v).is_null()).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
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
