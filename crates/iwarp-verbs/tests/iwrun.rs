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
