//! `iwping -V` on both sides: the client compares what the server wrote back, the server checks
//! that what it read is rping's ping pattern, at the sizes the interop matrix uses.

mod common;

use common::{free_port, wait_exit, wait_listening};
use std::process::{Command, Stdio};

#[test]
fn both_sides_validate_the_ping_data() {
    for size in ["4096", "65535"] {
        let port = free_port().to_string();
        let mut server = Command::new(env!("CARGO_BIN_EXE_iwping"))
            .args(["-s", "-a", "127.0.0.1", "-p", &port, "-V", "-S", size])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(port.parse().unwrap());
        let client = Command::new(env!("CARGO_BIN_EXE_iwping"))
            .args(["-c", "-a", "127.0.0.1", "-p", &port, "-C", "60", "-v", "-V", "-S", size])
            .output()
            .unwrap();
        assert!(client.status.success(), "size {size}: {}", String::from_utf8_lossy(&client.stderr));
        let out = String::from_utf8_lossy(&client.stdout);
        assert_eq!(out.lines().filter(|l| l.starts_with("ping data: rdma-ping-")).count(), 60, "{out}");
        wait_exit(&mut server, "iwping server did not exit after its client disconnected");
        let o = server.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // 60 pings: the start character wraps 'z' -> 'A' once (58 characters); a ping that is
        // not rping's pattern ends the server with "data mismatch!" and exit status 255.
        assert!(o.status.success() && !err.contains("mismatch"), "size {size}: server: {err}");
    }
}
