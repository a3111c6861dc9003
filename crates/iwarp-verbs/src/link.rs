//! Building `libibverbs.so.1` from this crate's staticlib.
//!
//! rustc gives a cdylib a version script of its own, which defeats ours, so the shared
//! library is linked by the system's C compiler driver instead: the whole staticlib, our
//! version script ([`VERSION_SCRIPT`]: rdma-core 44's version nodes, each exported function
//! on the node of its default version, everything else local) and the SONAME. The result goes
//! to a directory of its own, to be put first on `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SONAME, and the file name applications' loaders look for.
pub const SONAME: &str = "libibverbs.so.1";

/// The version script: rdma-core 44's version nodes, chained as in the real library, with the
/// symbols this library exports at their default versions.
pub const VERSION_SCRIPT: &str = include_str!("../abi/libibverbs.map");

/// Why the shared library could not be built.
#[derive(Debug)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkError {}

/// The staticlib cargo built next to `exe_dir` (a profile directory such as `target/debug`,
/// or its `deps` subdirectory, where test binaries live).
pub fn find_staticlib(exe_dir: &Path) -> Option<PathBuf> {
    let mut dir = Some(exe_dir);
    while let Some(d) = dir {
        let candidate = d.join("libiwarp_verbs.a");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent().filter(|p| p.file_name().is_some_and(|n| n != "target"));
    }
    None
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Links `staticlib` into `out_dir/libibverbs.so.1` unless that file is newer than both the
/// staticlib and the version script it was made with; returns its path. The file is written
/// under a temporary name and renamed, so a concurrent loader never sees half of it.
///
/// # Errors
/// If `cc` cannot be run or fails (its output is in the error).
pub fn shared_library(staticlib: &Path, out_dir: &Path) -> Result<PathBuf, LinkError> {
    let err = |what: &str, e: &dyn std::fmt::Display| LinkError(format!("{what}: {e}"));
    std::fs::create_dir_all(out_dir).map_err(|e| err("creating the output directory", &e))?;
    let out = out_dir.join(SONAME);
    let map = out_dir.join("libibverbs.map");
    let map_current = std::fs::read_to_string(&map).is_ok_and(|m| m == VERSION_SCRIPT);
    if map_current {
        if let (Some(lib), Some(so)) = (mtime(staticlib), mtime(&out)) {
            if so > lib {
                return Ok(out);
            }
        }
    }
    std::fs::write(&map, VERSION_SCRIPT).map_err(|e| err("writing the version script", &e))?;
    let tmp = out_dir.join(format!(".{SONAME}.{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(&tmp)
        .arg("-Wl,--whole-archive")
        .arg(staticlib)
        .arg("-Wl,--no-whole-archive")
        .arg(format!("-Wl,--version-script={}", map.display()))
        .arg(format!("-Wl,-soname,{SONAME}"))
        .args(["-Wl,-z,now", "-Wl,--gc-sections", "-Wl,--undefined-version"])
        .args(["-lgcc_s", "-lpthread", "-lm", "-ldl", "-lrt", "-lutil", "-lc"])
        .output()
        .map_err(|e| err(&format!("running {cc}"), &e))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(LinkError(format!("{cc} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr))));
    }
    std::fs::rename(&tmp, &out).map_err(|e| err("renaming the library into place", &e))?;
    Ok(out)
}
