//! Building `libibverbs.so.1` (and perftest's stand-in vendor libraries) from this crate's
//! staticlib.
//!
//! rustc gives a cdylib a version script of its own, which defeats ours, so each shared
//! library is linked by the system's C compiler driver instead: the whole staticlib, a version
//! script (rdma-core 44's version nodes, each exported function on the node of its default
//! version, everything else local), the SONAME, and `--gc-sections`, which drops what the
//! exported functions do not reach. The results go to a directory of their own, to be put
//! first on `LD_LIBRARY_PATH`. The stack's state lives only in libibverbs.so.1: the stand-ins
//! export functions that use none of it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One shared library made from the staticlib.
#[derive(Debug, Clone, Copy)]
pub struct Library {
    /// The SONAME, and the file name applications' loaders look for.
    pub soname: &'static str,
    /// Its version script: the version nodes, and the functions exported on them.
    pub version_script: &'static str,
}

/// The verbs library.
pub const LIBIBVERBS: Library =
    Library { soname: "libibverbs.so.1", version_script: include_str!("../abi/libibverbs.map") };
/// perftest's Mellanox library, as a stand-in (see the `standins` module).
pub const LIBMLX5: Library = Library { soname: "libmlx5.so.1", version_script: include_str!("../abi/libmlx5.map") };
/// perftest's EFA library, as a stand-in.
pub const LIBEFA: Library = Library { soname: "libefa.so.1", version_script: include_str!("../abi/libefa.map") };
/// Every library `iwrun` puts in front of the system's.
pub const ALL: [Library; 3] = [LIBIBVERBS, LIBMLX5, LIBEFA];

/// Why the shared library could not be built.
#[derive(Debug)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkError {}

/// The staticlib cargo built last for the profile directory that holds `exe_dir` (a profile
/// directory such as `target/debug`, or its `deps` subdirectory, where test binaries live).
///
/// Cargo copies the staticlib up to the profile directory only when the crate itself is what
/// was asked for (`cargo build -p iwarp-verbs`); when it is built for tests or for `cargo run`
/// the fresh one stays in `deps/` under a hashed name. So this takes the newest of
/// `libiwarp_verbs.a` and `deps/libiwarp_verbs-*.a`.
pub fn find_staticlib(exe_dir: &Path) -> Option<PathBuf> {
    let profile = if exe_dir.file_name().is_some_and(|n| n == "deps") { exe_dir.parent()? } else { exe_dir };
    let mut candidates = vec![profile.join("libiwarp_verbs.a")];
    if let Ok(entries) = std::fs::read_dir(profile.join("deps")) {
        candidates.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libiwarp_verbs-") && n.ends_with(".a"))
        }));
    }
    candidates.into_iter().filter(|p| p.is_file()).max_by_key(|p| mtime(p))
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The directory the libraries made from `staticlib` go to (`iwarp-verbs/` beside it): one
/// place for `iwrun` and the tests, so that a library linked by one is current for the other.
pub fn out_dir_for(staticlib: &Path) -> PathBuf {
    staticlib.parent().unwrap_or(Path::new(".")).join("iwarp-verbs")
}

/// Links every library of [`ALL`] into `out_dir` (see [`shared_library`]); returns the
/// directory.
///
/// # Errors
/// As [`shared_library`].
pub fn shared_libraries(staticlib: &Path, out_dir: &Path) -> Result<PathBuf, LinkError> {
    for lib in ALL {
        shared_library(lib, staticlib, out_dir)?;
    }
    second_name(out_dir, LIBRDMACM_SONAME, LIBIBVERBS.soname)?;
    Ok(out_dir.to_path_buf())
}

/// The name librdmacm's users load: a symbolic link to libibverbs.so.1, which exports the
/// `RDMACM_*` nodes too. glibc loads a file it has already loaded (same device and inode)
/// once and gives it the second name, so a program linked against both libraries gets one
/// copy of the stack's state whichever name comes first.
pub const LIBRDMACM_SONAME: &str = "librdmacm.so.1";

/// Makes `dir/name` a symbolic link to `target` (a name in the same directory), replacing
/// whatever is there, atomically.
fn second_name(dir: &Path, name: &str, target: &str) -> Result<(), LinkError> {
    let link = dir.join(name);
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| LinkError(format!("linking {name}: {e}")))?;
    std::fs::rename(&tmp, &link).map_err(|e| LinkError(format!("renaming {name} into place: {e}")))
}

/// Links `staticlib` into `out_dir/<soname>` unless that file is newer than the staticlib and
/// was made with the same version script; returns its path. The file is written under a
/// temporary name and renamed, so a concurrent loader never sees half of it.
///
/// # Errors
/// If `cc` cannot be run or fails (its output is in the error).
pub fn shared_library(lib: Library, staticlib: &Path, out_dir: &Path) -> Result<PathBuf, LinkError> {
    let Library { soname, version_script } = lib;
    let err = |what: &str, e: &dyn std::fmt::Display| LinkError(format!("{what}: {e}"));
    std::fs::create_dir_all(out_dir).map_err(|e| err("creating the output directory", &e))?;
    let out = out_dir.join(soname);
    let map = out_dir.join(format!("{soname}.map"));
    let map_current = std::fs::read_to_string(&map).is_ok_and(|m| m == version_script);
    if map_current {
        if let (Some(lib), Some(so)) = (mtime(staticlib), mtime(&out)) {
            if so > lib {
                return Ok(out);
            }
        }
    }
    std::fs::write(&map, version_script).map_err(|e| err("writing the version script", &e))?;
    let tmp = out_dir.join(format!(".{soname}.{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(&tmp)
        .arg("-Wl,--whole-archive")
        .arg(staticlib)
        .arg("-Wl,--no-whole-archive")
        .arg(format!("-Wl,--version-script={}", map.display()))
        .arg(format!("-Wl,-soname,{soname}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn touch(p: &Path, age: u64) {
        let f = std::fs::File::create(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age)).unwrap();
    }

    #[test]
    fn the_newest_staticlib_of_the_profile_wins_from_either_directory() {
        let root = std::env::temp_dir().join(format!("iwarp-verbs-find-{}", std::process::id()));
        let profile = root.join("target").join("debug");
        std::fs::create_dir_all(profile.join("deps")).unwrap();
        touch(&profile.join("libiwarp_verbs.a"), 100);
        touch(&profile.join("deps").join("libiwarp_verbs-0123.a"), 10);
        touch(&profile.join("deps").join("libiwarp_verbs-4567.a"), 50);
        touch(&profile.join("deps").join("libother-0123.a"), 1);
        let newest = profile.join("deps").join("libiwarp_verbs-0123.a");
        assert_eq!(find_staticlib(&profile.join("deps")), Some(newest.clone()));
        assert_eq!(find_staticlib(&profile), Some(newest));
        touch(&profile.join("libiwarp_verbs.a"), 0);
        assert_eq!(find_staticlib(&profile.join("deps")), Some(profile.join("libiwarp_verbs.a")));
        assert_eq!(find_staticlib(&root.join("target")), None, "only the profile directory itself");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
