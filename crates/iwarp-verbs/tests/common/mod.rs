//! What the tests share: building libibverbs.so.1 from the staticlib cargo just built,
//! loading it, and finding the Debian tools the integration tests run.
#![allow(dead_code, unsafe_code)]

use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The profile directory (`target/debug`) of this test binary.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_path_buf()
}

/// libibverbs.so.1 (and the stand-ins beside it), linked once per test binary (an atomic rename, so test binaries and
/// iwrun running at once do not see a half-written file).
pub fn shared_library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let staticlib = iwarp_verbs::link::find_staticlib(&dir).expect("cargo builds libiwarp_verbs.a with the tests");
        let out = iwarp_verbs::link::shared_libraries(&staticlib, &iwarp_verbs::link::out_dir_for(&staticlib))
            .expect("linking");
        out.join(iwarp_verbs::link::LIBIBVERBS.soname)
    })
    .clone()
}

/// The loaded library.
pub struct Lib {
    handle: usize,
}

/// Loads libibverbs.so.1 (once per test binary; the handle is never closed: the library's
/// threads live on).
pub fn lib() -> &'static Lib {
    static L: OnceLock<Lib> = OnceLock::new();
    L.get_or_init(|| load(&shared_library()))
}

/// Loads a library built beside libibverbs.so.1 (the stand-ins), by SONAME.
pub fn load_beside(soname: &str) -> Lib {
    load(&shared_library().with_file_name(soname))
}

fn load(path: &std::path::Path) -> Lib {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: dlopen of a library this test built; its initialisers are Rust's std's.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen failed: {}", dlerror());
    Lib { handle: h as usize }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a C string valid until the next dl call on this thread.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-NULL C string from dlerror.
    unsafe { std::ffi::CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

impl Lib {
    /// The address of `name` at version `version`, or NULL.
    pub fn raw(&self, name: &str, version: &str) -> *mut c_void {
        let n = CString::new(name).unwrap();
        let v = CString::new(version).unwrap();
        // SAFETY: a live handle and two C strings.
        unsafe { libc::dlvsym(self.handle as *mut c_void, n.as_ptr(), v.as_ptr()) }
    }

    /// The address of `name` at any version, or NULL.
    pub fn raw_any(&self, name: &str) -> *mut c_void {
        let n = CString::new(name).unwrap();
        // SAFETY: a live handle and a C string.
        unsafe { libc::dlsym(self.handle as *mut c_void, n.as_ptr()) }
    }

    /// The function `name@version` as the function pointer type `F`.
    ///
    /// # Safety
    /// `F` must be an `extern "C"` function pointer type of the symbol's C signature.
    pub unsafe fn func<F: Copy>(&self, name: &str, version: &str) -> F {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        let p = self.raw(name, version);
        assert!(!p.is_null(), "{name}@{version} missing: {}", dlerror());
        // SAFETY: a non-NULL function address, of type F by this function's contract.
        unsafe { std::mem::transmute_copy(&p) }
    }
}

/// `errno` of this thread.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The path of an installed tool, or `None` with a printed reason when it is missing outside
/// CI. Under `CI=true` a missing tool fails the test: CI installs them (`.ci/run deps`).
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        let msg = format!("{name} is not installed (apt-get install {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}: CI must have it");
        eprintln!("skipped: {msg}");
    }
    found
}

/// Runs `args` under iwrun, killed (by its PID) after `limit`.
pub fn iwrun(args: &[&str], limit: Duration) -> Output {
    shared_library(); // linked by this process, so iwrun finds it current
    let child = Command::new(env!("CARGO_BIN_EXE_iwrun"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iwrun starts");
    wait_bounded(child, limit)
}

/// Waits until a TCP socket (IPv4 or IPv6) listens on `port` (decimal), per /proc/net.
pub fn wait_listening(port: &str, limit: Duration) -> bool {
    let hex = format!(":{:04X}", port.parse::<u16>().unwrap());
    let start = Instant::now();
    while start.elapsed() < limit {
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            // Fields: sl, local_address, rem_address, st (0A: LISTEN), ...
            if text.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&hex) && f[3] == "0A"
            }) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
