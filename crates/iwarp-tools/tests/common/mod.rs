//! What the tools' end-to-end tests share: a free loopback port, waiting (bounded) for a
//! server to listen on it, and for a server process to end by itself.

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

/// Waits up to 10 s until a socket listens on 127.0.0.1 or 0.0.0.0 `port`, without connecting
/// (a server may take its first connection as its one client).
#[allow(dead_code)] // not every test crate that includes this module needs it
pub fn wait_listening(port: u16) {
    let want = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        if table.lines().any(|l| {
            l.split_whitespace().nth(1).is_some_and(|a| format!("{a} ").ends_with(&want))
                && l.split_whitespace().nth(3) == Some("0A")
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listened on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
