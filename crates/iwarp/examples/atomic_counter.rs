//! Atomics as a distributed counter: four clients, each on its own connection, increment one
//! 64-bit word in the server's memory with RDMA Fetch-and-Add (RFC 7306).
//!
//! Run with `cargo run -p iwarp --example atomic_counter`. Every Fetch-and-Add returns the
//! value before its addition, so the 4 x 100 values the clients get back are exactly 0..400,
//! each once: the target applies atomics one at a time, whatever the connection. The server's
//! CPU does nothing but accept.
//!
//! What it shows: `Access::REMOTE_ATOMIC`, `SendWr::fetch_add` with an 8-byte local sink for
//! the original value, and several queue pairs sharing one remote word.

use iwarp::{Access, ConnParams, Device, DeviceConfig, QpInit, SendWr, WcStatus, WorkCompletion};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const CLIENTS: usize = 4;
const ADDS: usize = 100;

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let pd = dev.alloc_pd();
    // The counter: one naturally aligned 64-bit word, in host byte order.
    let counter = pd.reg_mr(8, Access::LOCAL_WRITE | Access::REMOTE_ATOMIC)?;
    let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
    let addr = listener.local_addr();
    let server_cq = dev.create_cq(16)?;
    let mut server_qps = Vec::new();
    for _ in 0..CLIENTS {
        server_qps.push(pd.create_qp(&QpInit::new(&server_cq, &server_cq))?);
    }
    let accepting = std::thread::spawn(move || -> Result<Vec<iwarp::QueuePair>, iwarp::Error> {
        for qp in &server_qps {
            listener.get_request(Some(TIMEOUT))?.accept(qp, &ConnParams::default())?;
        }
        Ok(server_qps) // keep them: dropping a queue pair closes its connection
    });

    let remote = counter.remote(0);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (dev, pd) = (dev.clone(), pd.clone());
            std::thread::spawn(move || -> Result<Vec<u64>, iwarp::Error> {
                let cq = dev.create_cq(16)?;
                let qp = pd.create_qp(&QpInit::new(&cq, &cq))?;
                qp.connect(addr, &ConnParams::default())?;
                let sink = pd.reg_mr(8, Access::LOCAL_WRITE)?;
                let mut seen = Vec::with_capacity(ADDS);
                let mut wc = [WorkCompletion::default(); 1];
                for i in 0..ADDS {
                    qp.post_send(&[SendWr::fetch_add(i as u64, sink.sge(0, 8), remote, 1)])?;
                    if cq.wait(&mut wc, Some(TIMEOUT)) != 1 || wc[0].status != WcStatus::Success {
                        return Err(iwarp::Error::TimedOut);
                    }
                    seen.push(u64::from_ne_bytes(sink.to_vec(0, 8)?.try_into().expect("8 bytes")));
                }
                Ok(seen)
            })
        })
        .collect();
    let mut all = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let seen = c.join().expect("client thread")?;
        println!("client {i}: got {} values, first {:?}", seen.len(), &seen[..4]);
        all.extend(seen);
    }
    let _server_qps = accepting.join().expect("accepting thread")?;
    all.sort_unstable();
    assert_eq!(all, (0..(CLIENTS * ADDS) as u64).collect::<Vec<_>>(), "every value exactly once");
    let total = u64::from_ne_bytes(counter.to_vec(0, 8)?.try_into().expect("8 bytes"));
    println!("counter = {total} after {CLIENTS} clients x {ADDS} fetch-and-adds");
    assert_eq!(total, (CLIENTS * ADDS) as u64);
    Ok(())
}
