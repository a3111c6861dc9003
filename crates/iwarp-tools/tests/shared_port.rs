//! `--shared-port`: an iwping server answers plain TCP clients on its iWARP port with a line
//! echo, while iwping clients ping it over RDMA.

mod common;

use common::{free_port, wait_exit};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn connect_retry(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("server never listened: {e}"),
        }
    }
}

#[test]
fn iwping_server_on_a_shared_port_echoes_plain_lines_and_answers_pings() {
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_iwping"))
        .args(["-s", "-a", "127.0.0.1", "-p", &port.to_string(), "-v", "--shared-port"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A plain client, like `nc 127.0.0.1 PORT`.
    let mut plain = connect_retry(port);
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"first line\nsecond line\n").unwrap();
    let mut r = BufReader::new(plain.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "first line\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "second line\n");
    // An RDMA client on the same port while the plain one is still connected.
    let client = Command::new(env!("CARGO_BIN_EXE_iwping"))
        .args(["-c", "-a", "127.0.0.1", "-p", &port.to_string(), "-C", "3", "-v", "-V"])
        .output()
        .unwrap();
    assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
    let out = String::from_utf8_lossy(&client.stdout);
    assert_eq!(out.lines().filter(|l| l.starts_with("ping data: rdma-ping-")).count(), 3, "{out}");
    // The server (not persistent) exits after its RDMA client disconnects.
    wait_exit(&mut server, "iwping server did not exit after its client disconnected");
    let mut srv = String::new();
    std::io::Read::read_to_string(server.stdout.as_mut().unwrap(), &mut srv).unwrap();
    assert_eq!(srv.lines().filter(|l| l.starts_with("server ping data: ")).count(), 3, "{srv}");
}
