//! Request/response over Send/Receive, with one shared receive queue serving every client.
//!
//! Run with `cargo run -p iwarp --example request_response`. A server thread accepts three
//! clients onto queue pairs that all take their receive buffers from one
//! [`SharedReceiveQueue`]; each client sends a request, the server answers on the queue pair
//! the request came in on (the completion's `qp_num` says which) and re-posts the buffer.
//!
//! What it shows: `create_srq`, receive buffers as slots of one region (`wr_id` = slot), and
//! the rule that makes iWARP Send/Receive work: a receive is posted before the peer's Send
//! arrives. Here clients post their reply buffer before sending the request, and the server
//! keeps the shared queue stocked.

use iwarp::{Access, ConnParams, Device, DeviceConfig, QpInit, RecvWr, SendWr, WcStatus, WorkCompletion};
use std::collections::HashMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const CLIENTS: usize = 3;
const SLOT: usize = 256;

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
    let addr = listener.local_addr();

    let server_dev = dev.clone();
    let server = std::thread::spawn(move || -> Result<(), iwarp::Error> {
        let pd = server_dev.alloc_pd();
        let srq = pd.create_srq(16, 1)?;
        let slots = pd.reg_mr(16 * SLOT, Access::LOCAL_WRITE)?;
        let recvs: Vec<RecvWr<'_>> = (0..16).map(|i| RecvWr::new(i, &[slots.sge(i as usize * SLOT, SLOT)])).collect();
        srq.post_recv(&recvs)?;
        let cq = server_dev.create_cq(64)?;
        let mut qps = HashMap::new();
        for _ in 0..CLIENTS {
            let mut init = QpInit::new(&cq, &cq);
            init.srq = Some(&srq);
            let qp = pd.create_qp(&init)?;
            listener.get_request(Some(TIMEOUT))?.accept(&qp, &ConnParams::default())?;
            qps.insert(qp.qp_num(), qp);
        }
        let mut wc = [WorkCompletion::default(); 8];
        let mut answered = 0;
        while answered < CLIENTS {
            let n = cq.wait(&mut wc, Some(TIMEOUT));
            if n == 0 {
                return Err(iwarp::Error::TimedOut);
            }
            for c in wc[..n].iter().filter(|c| c.opcode == iwarp::WcOpcode::Recv) {
                assert_eq!(c.status, WcStatus::Success);
                let slot = c.wr_id as usize * SLOT;
                let request = slots.to_vec(slot, c.byte_len as usize)?;
                let reply = String::from_utf8_lossy(&request).to_uppercase();
                qps[&c.qp_num].post_send(&[SendWr::send_inline(0, reply.as_bytes())])?;
                srq.post_recv(&[RecvWr::new(c.wr_id, &[slots.sge(slot, SLOT)])])?; // back in the pool
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100)); // let the replies leave before closing
        Ok(())
    });

    let pd = dev.alloc_pd();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let cq = dev.create_cq(16)?;
        let qp = pd.create_qp(&QpInit::new(&cq, &cq))?;
        let reply = pd.reg_mr(SLOT, Access::LOCAL_WRITE)?;
        qp.post_recv(&[RecvWr::new(1, &[reply.sge_all()])])?;
        qp.connect(addr, &ConnParams::default())?;
        qp.post_send(&[SendWr::send_inline(2, format!("request from client {i}").as_bytes())])?;
        clients.push((qp, cq, reply));
    }
    for (i, (_qp, cq, reply)) in clients.iter().enumerate() {
        let mut wc = [WorkCompletion::default(); 1];
        loop {
            assert_eq!(cq.wait(&mut wc, Some(TIMEOUT)), 1, "client {i}: no completion");
            if wc[0].opcode == iwarp::WcOpcode::Recv {
                break;
            }
        }
        println!("client {i}: reply {:?}", String::from_utf8_lossy(&reply.to_vec(0, wc[0].byte_len as usize)?));
    }
    server.join().expect("server thread")?;
    Ok(())
}
