//! `iwrun COMMAND [ARGS...]`: runs an unmodified rdma-core program on this stack.
//!
//! Links `libibverbs.so.1` and perftest's stand-in `libmlx5.so.1` and `libefa.so.1` from the
//! staticlib cargo built next to this binary (only when the staticlib is newer), into
//! `<profile dir>/iwarp-verbs/`, and runs the command with that directory first on
//! `LD_LIBRARY_PATH`. Nothing is installed system-wide.
//!
//! ```sh
//! cargo run -p iwarp-verbs --bin iwrun -- ibv_devinfo -v
//! ```
//!
//! `iwrun --lib-dir` links them and prints that directory (for `LD_LIBRARY_PATH` or a
//! system-wide install) instead of running a command.
#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: iwrun COMMAND [ARGS...]\n       iwrun --lib-dir   (prints the directory of the libraries)");
        return ExitCode::from(2);
    };
    let lib_dir = match prepare() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("iwrun: {e}");
            return ExitCode::from(1);
        }
    };
    if program == "--lib-dir" {
        println!("{}", lib_dir.display());
        return ExitCode::SUCCESS;
    }
    let mut path = std::ffi::OsString::from(&lib_dir);
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    let err = Command::new(&program).args(args).env("LD_LIBRARY_PATH", path).exec();
    eprintln!("iwrun: cannot run {}: {err}", program.to_string_lossy());
    ExitCode::from(127)
}

/// The directory holding a current libibverbs.so.1.
fn prepare() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let dir = exe.parent().ok_or("no directory")?;
    let staticlib = iwarp_verbs::link::find_staticlib(dir).ok_or_else(|| {
        format!("no libiwarp_verbs.a near {} (build with `cargo build -p iwarp-verbs`)", dir.display())
    })?;
    let out_dir = iwarp_verbs::link::out_dir_for(&staticlib);
    iwarp_verbs::link::shared_libraries(&staticlib, &out_dir).map_err(|e| e.to_string())
}
