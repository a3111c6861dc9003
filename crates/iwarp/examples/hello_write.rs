//! Hello, RDMA Write: the client writes a greeting straight into the server's memory, then
//! sends a one-word message so the server knows the Write is over.
//!
//! Run with `cargo run -p iwarp --example hello_write`. Both sides run in this process over
//! 127.0.0.1: the server on a thread, the client on the main thread.
//!
//! What it shows: registering memory (`reg_mr`), handing a peer a [`RemoteAddr`], posting
//! an RDMA Write, and why a Send follows it: a Write raises no event at its target, but
//! messages on one connection arrive in order, so the Send's receive completion tells the
//! server that every byte written before it has landed.

use iwarp::{Access, ConnParams, Device, DeviceConfig, QpInit, RecvWr, RemoteAddr, SendWr, WcStatus, WorkCompletion};
use std::sync::mpsc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
    let addr = listener.local_addr();
    let (tx, rx) = mpsc::channel::<RemoteAddr>();

    let server_dev = dev.clone();
    let server = std::thread::spawn(move || -> Result<String, iwarp::Error> {
        let pd = server_dev.alloc_pd();
        let target = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
        let note = pd.reg_mr(64, Access::LOCAL_WRITE)?;
        let cq = server_dev.create_cq(16)?;
        let qp = pd.create_qp(&QpInit::new(&cq, &cq))?;
        // Post the receive first: a Send that finds none ends the connection.
        qp.post_recv(&[RecvWr::new(1, &[note.sge_all()])])?;
        listener.get_request(Some(TIMEOUT))?.accept(&qp, &ConnParams::default())?;
        let _ = tx.send(target.remote(0)); // in real life: sent over the network
        let mut wc = [WorkCompletion::default(); 1];
        if cq.wait(&mut wc, Some(TIMEOUT)) != 1 || wc[0].status != WcStatus::Success {
            return Err(iwarp::Error::TimedOut);
        }
        let len = u32::from_ne_bytes(target.to_vec(0, 4)?.try_into().expect("4 bytes")) as usize;
        Ok(String::from_utf8_lossy(&target.to_vec(4, len)?).into_owned())
    });

    let pd = dev.alloc_pd();
    let cq = dev.create_cq(16)?;
    let qp = pd.create_qp(&QpInit::new(&cq, &cq))?;
    qp.connect(addr, &ConnParams::default())?;
    let remote = rx.recv_timeout(TIMEOUT)?;

    let greeting = b"hello, RDMA Write";
    let src = pd.reg_mr(4096, Access::LOCAL_WRITE)?;
    src.write(0, &(greeting.len() as u32).to_ne_bytes())?;
    src.write(4, greeting)?;
    qp.post_send(&[SendWr::write(1, &[src.sge(0, 4 + greeting.len())], remote), SendWr::send_inline(2, b"done")])?;
    let mut wc = [WorkCompletion::default(); 2];
    let mut done = 0;
    while done < 2 {
        let n = cq.wait(&mut wc[done..], Some(TIMEOUT));
        assert!(n > 0, "no completion within {TIMEOUT:?}");
        done += n;
    }
    println!("client: Write and Send completed ({:?}, {:?})", wc[0].status, wc[1].status);
    println!("server: its memory now holds {:?}", server.join().expect("server thread")?);
    Ok(())
}
