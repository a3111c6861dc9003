//! One port for iWARP and plain TCP: a shared listener hands each connection over as an iWARP
//! connection request or as a plain TCP stream, by its first bytes.
//!
//! Run with `cargo run -p iwarp --example shared_port`. It listens on a port the host picks,
//! connects one plain TCP client and one iWARP client to it, serves both from one loop, and
//! prints what happened.

use iwarp::{Access, ConnParams, Device, DeviceConfig, Incoming, QpInit, SendWr, SharedOptions, WorkCompletion};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let pd = dev.alloc_pd();
    let listener = dev.listen_shared("127.0.0.1:0".parse()?, 16, SharedOptions::default())?;
    let addr = listener.local_addr();
    println!("listening on {addr} for iWARP and plain TCP");

    // A plain client: sends a line, expects it back.
    let plain = std::thread::spawn(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(b"hello from plain TCP\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    });
    // An iWARP client: connects and sends a message.
    let client_pd = pd.clone();
    let client_dev = dev.clone();
    let iwarp = std::thread::spawn(move || -> Result<(), iwarp::Error> {
        let cq = client_dev.create_cq(8)?;
        let qp = client_pd.create_qp(&QpInit::new(&cq, &cq))?;
        qp.connect(addr, &ConnParams::default())?;
        qp.post_send(&[SendWr::send_inline(1, b"hello from iWARP")])?;
        let mut wc = [WorkCompletion::default(); 1];
        cq.wait(&mut wc, Some(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    });

    // The server: one loop takes both kinds.
    let cq = dev.create_cq(8)?;
    let buf = pd.reg_mr(64, Access::LOCAL_WRITE)?;
    let mut qps = Vec::new();
    for _ in 0..2 {
        match listener.get_incoming(Some(Duration::from_secs(5)))? {
            Incoming::Iwarp(req) => {
                println!("iWARP connection request from {}", req.peer_addr());
                let qp = pd.create_qp(&QpInit::new(&cq, &cq))?;
                qp.post_recv(&[iwarp::RecvWr::new(7, &[buf.sge_all()])])?;
                req.accept(&qp, &ConnParams::default())?;
                let mut wc = [WorkCompletion::default(); 1];
                let n = cq.wait(&mut wc, Some(Duration::from_secs(5)));
                assert_eq!(n, 1);
                println!(
                    "  received by RDMA Send: {:?}",
                    String::from_utf8_lossy(&buf.to_vec(0, wc[0].byte_len as usize)?)
                );
                qps.push(qp);
            }
            Incoming::Plain(mut stream) => {
                println!("plain TCP connection from {}", stream.peer_addr());
                // The bytes the listener looked at are still there, in order.
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while stream.read(&mut b)? == 1 {
                    line.push(b[0]);
                    if b[0] == b'\n' {
                        break;
                    }
                }
                stream.write_all(&line)?;
                println!("  echoed {:?}", String::from_utf8_lossy(&line));
            }
        }
    }
    println!("plain client got back {:?}", plain.join().expect("plain client")?);
    iwarp.join().expect("iwarp client")?;
    Ok(())
}
