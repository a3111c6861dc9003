//! The stack leaves the process's signal dispositions alone: writing to a connection the peer
//! has reset gives the queue pair an error, not a `SIGPIPE` that kills a process which keeps
//! the default disposition (as C programs under the verbs library do).
//!
//! The Rust test harness ignores `SIGPIPE` for its whole process, so the test runs itself
//! again as a child process with the default disposition restored, and checks that the child
//! survives.

mod common;

use common::*;
use iwarp::*;
use iwarp_wire::mpa::EnhancedParams;
use std::net::{Shutdown, TcpListener};
use std::process::Command;
use std::time::Duration;

/// Set in the child process.
const CHILD: &str = "IWARP_SIGPIPE_CHILD";
/// What the child prints when it got through.
const SURVIVED: &str = "child survived the writes";

/// The current disposition of `SIGPIPE`.
fn sigpipe_disposition() -> libc::sighandler_t {
    let mut old: libc::sigaction = unsafe_zeroed();
    // SAFETY: a null new action only queries; `old` is a live struct the kernel fills.
    let r = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "sigaction");
    old.sa_sigaction
}

fn unsafe_zeroed() -> libc::sigaction {
    // SAFETY: sigaction is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Restores the default disposition (termination) of `SIGPIPE` in this process.
fn default_sigpipe() {
    // SAFETY: installing SIG_DFL for SIGPIPE touches no memory of this program.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// The child's work: a queue pair whose peer closed and then reset the connection, written
/// to twice. The first write reaches a peer socket that no longer exists (its host answers
/// with a reset); the second meets the reset of a connection in CLOSE_WAIT, where Linux
/// reports `EPIPE` and, without `MSG_NOSIGNAL`, raises `SIGPIPE`.
fn child() {
    default_sigpipe();
    init_log();
    assert_eq!(sigpipe_disposition(), libc::SIG_DFL);
    let dev = device();
    assert_eq!(sigpipe_disposition(), libc::SIG_DFL, "Device::open changed the process's SIGPIPE disposition");
    let pd = dev.alloc_pd();
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(8, 8)));
    // Polled progress: nothing reads the socket (and sees the close) until the test polls.
    let end = End::new(&dev, &pd, PairConfig::default().cap, Progress::Poll);
    end.qp.connect(addr, &ConnParams::default()).unwrap();
    let raw = raw.join().unwrap();
    raw.sock.shutdown(Shutdown::Both).unwrap();
    drop(raw);
    std::thread::sleep(Duration::from_millis(200));
    let target = RemoteAddr::new(Stag(0x1234), 0, 64);
    let src = pd.reg_mr(64, Access::LOCAL_WRITE).unwrap();
    for wr_id in 1..=3 {
        // Refused once the queue pair has noticed the failure: that is fine too.
        let r = end.qp.post_send(&[SendWr::write(wr_id, &[src.sge(0, 64)], target)]);
        eprintln!("post {wr_id}: {r:?} {:?}", end.qp.state());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(end.qp.state(), QpState::Error, "the write to the reset connection failed");
    let mut wc = [WorkCompletion::default(); 8];
    let _ = end.scq.poll(&mut wc);
    println!("{SURVIVED}");
}

#[test]
fn writing_to_a_reset_connection_does_not_raise_sigpipe() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "writing_to_a_reset_connection_does_not_raise_sigpipe", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(SURVIVED),
        "child failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
