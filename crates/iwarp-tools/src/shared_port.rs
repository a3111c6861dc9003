//! `--shared-port`: a server that also answers plain TCP clients on its iWARP port, with a
//! line echo, so `nc HOST PORT` and an RDMA client can be pointed at the same port.

use iwarp::{Listener, PlainStream};
use std::io::{BufRead, BufReader, Write};

/// Serves the plain side of a shared listener in the background: each plain connection gets
/// its own thread that sends every line back.
pub fn spawn_line_echo(listener: Listener) {
    std::thread::spawn(move || {
        while let Ok(p) = listener.get_plain(None) {
            std::thread::spawn(move || echo_lines(p));
        }
    });
}

fn echo_lines(p: PlainStream) {
    let peer = p.peer_addr();
    let Ok(mut w) = p.get_ref().try_clone() else { return };
    let mut r = BufReader::new(p);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if w.write_all(&line).is_err() {
                    break;
                }
            }
        }
    }
    eprintln!("plain TCP client {peer} done");
}
