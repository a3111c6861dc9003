//! A listener whose process runs out of descriptors: a connection that arrives while `accept`
//! fails (EMFILE) waits in the kernel's accept queue, and is accepted once descriptors are
//! back, without another connection arriving to wake the listener (its readiness is
//! edge-triggered). (Its own test binary: it lowers the process's descriptor limit.)
mod common;

use common::*;
use iwarp_wire::mpa::EnhancedParams;
use std::fs::File;
use std::time::Duration;

#[test]
fn connection_queued_while_out_of_descriptors_is_accepted_once_descriptors_are_back() {
    let dev = device();
    let listener = dev.listen(any_port(), 16).expect("listen");

    // A low limit, so filling it is cheap; then take every descriptor left.
    let (mut fillers, old) = exhaust_descriptors();
    // The one left is the client's socket; the listener's accept then finds none.
    fillers.pop();
    let raw = RawPeer::connect_request(listener.local_addr(), EnhancedParams::client_server(4, 4));
    assert!(File::open("/dev/null").is_err(), "a descriptor is left for accept");
    // The listener tries (and fails) while the process is out of descriptors.
    assert!(listener.get_request(Some(Duration::from_millis(300))).is_err(), "accepted with no descriptor left");

    // Descriptors back; no other connection comes to wake the listener.
    drop(fillers);
    restore_descriptors(old);
    let req = listener.get_request(Some(Duration::from_secs(3))).expect("the queued connection is accepted");
    assert_eq!(Some(req.peer_addr()), raw.sock.local_addr().ok());
}
