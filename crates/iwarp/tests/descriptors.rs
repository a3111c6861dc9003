//! A queue pair's event descriptor is made on first use, so a process out of descriptors gets
//! an error from `QueuePair::event_fd`, never a panic, and the queue pair keeps working. (Its
//! own test binary: it lowers the process's descriptor limit.)
mod common;

use common::*;
use iwarp::*;
use std::fs::File;

#[test]
fn event_fd_reports_descriptor_exhaustion_as_an_error() {
    let dev = device();
    let pd = dev.alloc_pd();
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);

    // A low limit, so filling it is cheap; then take every descriptor left.
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read a live rlimit struct.
    unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0) };
    let low = libc::rlimit { rlim_cur: 512.min(old.rlim_max), rlim_max: old.rlim_max };
    // SAFETY: as above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0) };
    let mut fillers = Vec::new();
    let exhausted = loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => break e,
        }
        assert!(fillers.len() <= 512, "the limit did not apply");
    };
    assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE));

    let err = end.qp.event_fd().expect_err("no descriptor left: an error, not a panic");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE));

    // Descriptors back: the same queue pair now gets one, and it stays the same one.
    drop(fillers);
    // SAFETY: restores the limit read above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0) };
    let a = std::os::fd::AsRawFd::as_raw_fd(&end.qp.event_fd().expect("a descriptor"));
    let b = std::os::fd::AsRawFd::as_raw_fd(&end.qp.event_fd().expect("a descriptor"));
    assert_eq!(a, b);
}
