//! An async echo server and client on tokio (`cargo run -p iwarp --features tokio --example
//! async_echo`).
//!
//! The server task accepts connections and serves each on a task of its own: every message
//! that arrives by Send goes back by Send. The client connects, sends three lines and awaits
//! each echo, then disconnects; its disconnect flushes the server's posted receives, which
//! ends that connection's task.
//!
//! What it shows: `Listener::next_request`, `AsyncQueuePair` (accept, connect, and a future
//! per posted work request), and keeping a receive posted ahead of every message the peer may
//! send: the server holds two receive slots and re-posts each as soon as its echo completes
//! (a post the queue pair refuses because the client has already left ends the connection's
//! task, as a flushed receive does).

use iwarp::async_tokio::AsyncQueuePair;
use iwarp::{Access, ConnParams, ConnectRequest, Device, DeviceConfig, ProtectionDomain, QpCap, RecvWr, SendWr};
use iwarp::{PostError, PostReason, WcStatus, WorkCompletion};
use std::collections::VecDeque;
use std::time::Duration;

const SLOT: usize = 1024;

async fn serve(pd: ProtectionDomain, req: ConnectRequest) -> Result<usize, iwarp::Error> {
    let qp = AsyncQueuePair::new(&pd, QpCap::default())?;
    let buf = pd.reg_mr(2 * SLOT, Access::LOCAL_WRITE)?;
    let mut posted = VecDeque::new();
    for slot in 0..2 {
        posted.push_back((slot, qp.post_recv(&RecvWr::new(slot as u64, &[buf.sge(slot * SLOT, SLOT)]))?));
    }
    qp.accept(req, &ConnParams::default()).await?;
    let mut echoed = 0;
    // Receives complete in the order they were posted.
    while let Some((slot, recv)) = posted.pop_front() {
        let wc: WorkCompletion = recv.await;
        if wc.status != WcStatus::Success {
            break; // flushed: the client has gone
        }
        let echo = qp.post_send(&SendWr::send(0, &[buf.sge(slot * SLOT, wc.byte_len as usize)]))?.await;
        if echo.status != WcStatus::Success {
            break;
        }
        echoed += 1;
        // The client may leave as soon as this echo reaches it: a queue pair whose connection
        // has ended refuses the post, and this connection is done.
        match qp.post_recv(&RecvWr::new(slot as u64, &[buf.sge(slot * SLOT, SLOT)])) {
            Ok(recv) => posted.push_back((slot, recv)),
            Err(PostError { reason: PostReason::InvalidState(_), .. }) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(echoed)
}

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let pd = dev.alloc_pd();
    let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
    let addr = listener.local_addr();
    let server_pd = pd.clone();
    let server = tokio::spawn(async move {
        // One connection here; a real server loops, spawning `serve` for each request.
        let req = listener.next_request().await?;
        println!("server: connection from {}", req.peer_addr());
        tokio::spawn(serve(server_pd, req)).await.expect("connection task")
    });

    let qp = AsyncQueuePair::new(&pd, QpCap::default())?;
    qp.connect(addr, &ConnParams::default()).await?;
    let (out, back) = (pd.reg_mr(SLOT, Access::LOCAL_WRITE)?, pd.reg_mr(SLOT, Access::LOCAL_WRITE)?);
    for line in ["hello", "echo over iWARP", "bye"] {
        let reply = qp.post_recv(&RecvWr::new(1, &[back.sge_all()]))?; // before the request
        out.write(0, line.as_bytes())?;
        let sent = qp.post_send(&SendWr::send(2, &[out.sge(0, line.len())]))?;
        let (sent, reply) = (sent.await, reply.await);
        assert_eq!((sent.status, reply.status), (WcStatus::Success, WcStatus::Success));
        println!(
            "client: {line:?} came back as {:?}",
            String::from_utf8_lossy(&back.to_vec(0, reply.byte_len as usize)?)
        );
    }
    qp.disconnect();
    let echoed = tokio::time::timeout(Duration::from_secs(10), server).await???;
    println!("server: echoed {echoed} messages, then saw the client leave");
    Ok(())
}
