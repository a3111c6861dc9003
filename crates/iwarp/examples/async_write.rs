//! RDMA Write with async/await on tokio (`cargo run -p iwarp --features tokio --example
//! async_write`): a server task accepts a connection and hands its target region's address
//! over a channel, the client writes into it and awaits the Write's completion, then sends a
//! message that the server's awaited receive picks up, so the server knows the Write is over.

use iwarp::async_tokio::AsyncQueuePair;
use iwarp::{Access, ConnParams, Device, DeviceConfig, QpCap, RecvWr, SendWr, WcStatus};

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let pd = dev.alloc_pd();
    let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
    let addr = listener.local_addr();
    let (remote_tx, remote_rx) = tokio::sync::oneshot::channel();

    let server_pd = pd.clone();
    let server = tokio::spawn(async move {
        let target = server_pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
        let note = server_pd.reg_mr(64, Access::LOCAL_WRITE)?;
        let qp = AsyncQueuePair::new(&server_pd, QpCap::default())?;
        // Post the receive before accepting: an iWARP Send with no receive ends the connection.
        let received = qp.post_recv(&RecvWr::new(1, &[note.sge_all()]))?;
        let req = listener.next_request().await?;
        println!("server: request from {}", req.peer_addr());
        qp.accept(req, &ConnParams::default()).await?;
        let _ = remote_tx.send(target.remote(0));
        let wc = received.await;
        assert_eq!(wc.status, WcStatus::Success);
        println!(
            "server: {:?} says the Write is done",
            String::from_utf8_lossy(&note.to_vec(0, wc.byte_len as usize)?)
        );
        println!("server: target holds {:?}", String::from_utf8_lossy(&target.to_vec(0, 21)?));
        Ok::<_, iwarp::Error>(())
    });

    let qp = AsyncQueuePair::new(&pd, QpCap::default())?;
    qp.connect(addr, &ConnParams::default()).await?;
    let remote = remote_rx.await?;
    let src = pd.reg_mr(4096, Access::LOCAL_WRITE)?;
    src.write(0, b"hello from async code")?;
    // The future owns nothing the program needs back; the queue pair holds `src` until the
    // Write's completion is reaped, even if this future were dropped.
    let wc = qp.post_send(&SendWr::write(7, &[src.sge(0, 21)], remote))?.await;
    println!("client: Write {} completed: {:?}", wc.wr_id, wc.status);
    src.write(100, b"done")?;
    let wc = qp.post_send(&SendWr::send(8, &[src.sge(100, 4)]))?.await;
    println!("client: Send {} completed: {:?}", wc.wr_id, wc.status);
    server.await??;
    Ok(())
}
