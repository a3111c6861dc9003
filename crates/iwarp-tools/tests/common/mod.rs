//! What the tools' end-to-end tests share: a free loopback port, and waiting (bounded) for a
//! server process to end by itself.

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to 10 s for `child` to exit by itself; kills it and panics with `what` otherwise.
pub fn wait_exit(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        panic!("{what}");
    }
}
