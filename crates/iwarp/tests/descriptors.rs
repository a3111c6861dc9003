//! A queue pair's event descriptor is made on first use, so a process out of descriptors gets
//! an error from `QueuePair::event_fd`, never a panic, and the queue pair keeps working. (Its
//! own test binary: it lowers the process's descriptor limit.)
mod common;

use common::*;
use iwarp::*;

#[test]
fn event_fd_reports_descriptor_exhaustion_as_an_error() {
    let dev = device();
    let pd = dev.alloc_pd();
    let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);

    // A low limit, so filling it is cheap; then take every descriptor left.
    let (fillers, old) = exhaust_descriptors();

    let err = end.qp.event_fd().expect_err("no descriptor left: an error, not a panic");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE));

    // Descriptors back: the same queue pair now gets one, and it stays the same one.
    drop(fillers);
    restore_descriptors(old);
    let a = std::os::fd::AsRawFd::as_raw_fd(&end.qp.event_fd().expect("a descriptor"));
    let b = std::os::fd::AsRawFd::as_raw_fd(&end.qp.event_fd().expect("a descriptor"));
    assert_eq!(a, b);
}
