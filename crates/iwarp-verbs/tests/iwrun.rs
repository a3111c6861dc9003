//! The launcher: usage errors, and the environment it gives the program.

mod common;

use std::process::Command;

#[test]
fn iwrun_puts_the_libraries_first_on_the_library_path() {
    common::shared_library();
    let out = Command::new(env!("CARGO_BIN_EXE_iwrun"))
        .args(["sh", "-c", "echo \"$LD_LIBRARY_PATH\""])
        .env("LD_LIBRARY_PATH", "/opt/elsewhere")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = String::from_utf8(out.stdout).unwrap();
    let mut dirs = path.trim().split(':');
    let first = std::path::PathBuf::from(dirs.next().unwrap());
    for soname in ["libibverbs.so.1", "librdmacm.so.1", "libmlx5.so.1", "libefa.so.1"] {
        assert!(first.join(soname).is_file(), "{soname} in {}", first.display());
    }
    let target = std::fs::read_link(first.join("librdmacm.so.1")).unwrap();
    assert_eq!(target, std::path::Path::new("libibverbs.so.1"), "one library, two names");
    assert_eq!(dirs.collect::<Vec<_>>(), ["/opt/elsewhere"], "the caller's path follows");
}

#[test]
fn iwrun_without_a_command_prints_its_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_iwrun")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: iwrun COMMAND"));
}

#[test]
fn iwrun_reports_a_command_it_cannot_run() {
    common::shared_library();
    let out = Command::new(env!("CARGO_BIN_EXE_iwrun")).arg("/nonexistent/program").output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/program"));
}

#[test]
fn iwrun_lib_dir_prints_the_directory_of_the_libraries() {
    common::shared_library();
    let out = Command::new(env!("CARGO_BIN_EXE_iwrun")).arg("--lib-dir").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    for soname in ["libibverbs.so.1", "librdmacm.so.1", "libmlx5.so.1", "libefa.so.1"] {
        assert!(dir.join(soname).is_file(), "{soname} in {}", dir.display());
    }
}

/// docs/verbs-abi.md's system-wide install, done in a private mount namespace (over
/// `/usr/local/lib` and a copy of the loader's cache, so the machine's own files are never
/// touched): an unmodified program then finds the device without `iwrun`. Needs root and
/// `unshare`; skipped otherwise.
#[test]
fn the_documented_system_wide_install_serves_programs_without_iwrun() {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    let have = |p: &str| {
        Command::new("sh").args(["-c", &format!("command -v {p}")]).output().is_ok_and(|o| o.status.success())
    };
    if !root || !have("unshare") || !have("ldconfig") || !have("ibv_devices") {
        eprintln!("skipped: needs root, unshare, ldconfig and ibv_devices");
        return;
    }
    common::shared_library();
    let out = Command::new(env!("CARGO_BIN_EXE_iwrun")).arg("--lib-dir").output().unwrap();
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let work = std::env::temp_dir().join(format!("iwarp-sysinst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("lib")).unwrap();
    let script = format!(
        "set -e; mount --make-rprivate /; \
         install -m 0755 '{dir}/libibverbs.so.1' '{w}/lib/'; ln -sf libibverbs.so.1 '{w}/lib/librdmacm.so.1'; \
         mount --bind '{w}/lib' /usr/local/lib; ldconfig -C '{w}/cache'; \
         mount --bind '{w}/cache' /etc/ld.so.cache; \
         env -u LD_LIBRARY_PATH ibv_devices; env -u LD_LIBRARY_PATH ldd \"$(command -v rping || command -v ibv_devices)\"",
        w = work.display()
    );
    let out = Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let _ = std::fs::remove_dir_all(&work);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("iwarp0"), "ibv_devices found the device:\n{text}");
    assert!(text.contains("libibverbs.so.1 => /usr/local/lib/libibverbs.so.1"), "{text}");
}
