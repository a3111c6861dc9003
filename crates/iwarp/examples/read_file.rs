//! Pulling a file with RDMA Read: the server exposes a buffer, the client fetches it in
//! chunks without the server's CPU touching a byte.
//!
//! Run with `cargo run -p iwarp --example read_file`. The "file" is one MiB of generated
//! bytes standing in for one read from disk. The client asks for it with a Send; the server,
//! which registered it for remote reading, answers with its [`RemoteAddr`] (16 bytes,
//! [`RemoteAddr::to_bytes`]); the client pulls it with several RDMA Reads in flight, checks
//! it, and says "done" so the server can close. The client speaks first: an iWARP responder
//! sends nothing before the initiator's first message has arrived (RFC 5044 §7.1.2).
//!
//! What it shows: `Access::REMOTE_READ`, exchanging a region's address in-band, RDMA Read
//! work requests (`SendWr::read`) and keeping several of them outstanding (at most the
//! connection's ORD, `ConnParams::initiator_depth`).

use iwarp::{Access, ConnParams, Device, DeviceConfig, QpInit, RecvWr, RemoteAddr, SendWr, WcStatus, WorkCompletion};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const FILE_LEN: usize = 1 << 20;
const CHUNK: usize = 64 << 10;

fn file_contents() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0]).collect()
}

/// Waits for one completion on `cq` and checks that it succeeded.
fn one(cq: &iwarp::CompletionQueue) -> Result<WorkCompletion, Box<dyn std::error::Error>> {
    let mut wc = [WorkCompletion::default(); 1];
    if cq.wait(&mut wc, Some(TIMEOUT)) != 1 {
        return Err("no completion in time".into());
    }
    if wc[0].status != WcStatus::Success {
        return Err(format!("work request {} failed: {}", wc[0].wr_id, wc[0].status).into());
    }
    Ok(wc[0])
}

/// Runs the example (a function, so that `tests/examples.rs` can run it too).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open(DeviceConfig::default())?;
    let listener = dev.listen("127.0.0.1:0".parse()?, 16)?;
    let addr = listener.local_addr();

    let server_dev = dev.clone();
    let server = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let pd = server_dev.alloc_pd();
        let file = pd.reg_owned(file_contents(), Access::REMOTE_READ)?;
        let note = pd.reg_mr(64, Access::LOCAL_WRITE)?;
        let (scq, rcq) = (server_dev.create_cq(16)?, server_dev.create_cq(16)?);
        let qp = pd.create_qp(&QpInit::new(&scq, &rcq))?;
        qp.post_recv(&[RecvWr::new(1, &[note.sge(0, 32)]), RecvWr::new(2, &[note.sge(32, 32)])])?;
        listener.get_request(Some(TIMEOUT))?.accept(&qp, &ConnParams::default())?;
        let mut wc = [WorkCompletion::default(); 1];
        for (slot, answer) in [(0, Some(file.remote(0))), (32, None)] {
            if rcq.wait(&mut wc, Some(TIMEOUT)) != 1 {
                return Err("the client went quiet".into());
            }
            let said = note.to_vec(slot, wc[0].byte_len as usize)?;
            println!("server: client says {:?}", String::from_utf8_lossy(&said));
            if let Some(remote) = answer {
                qp.post_send(&[SendWr::send_inline(3, &remote.to_bytes())])?;
            }
        }
        Ok(())
    });

    let pd = dev.alloc_pd();
    let (scq, rcq) = (dev.create_cq(64)?, dev.create_cq(16)?);
    let qp = pd.create_qp(&QpInit::new(&scq, &rcq))?;
    let inbox = pd.reg_mr(RemoteAddr::ENCODED_LEN, Access::LOCAL_WRITE)?;
    qp.post_recv(&[RecvWr::new(1, &[inbox.sge_all()])])?;
    qp.connect(addr, &ConnParams::default())?;
    qp.post_send(&[SendWr::send_inline(1, b"get file")])?;
    one(&scq)?;
    one(&rcq)?;
    let remote = RemoteAddr::from_bytes(&inbox.to_vec(0, RemoteAddr::ENCODED_LEN)?.try_into().expect("16 bytes"));
    println!("client: file at STag {:#x}, {} bytes", remote.stag.0, remote.len);

    let copy = pd.reg_mr(remote.len as usize, Access::LOCAL_WRITE)?;
    let chunks = copy.len().div_ceil(CHUNK);
    let in_flight = 8;
    let (mut posted, mut done) = (0, 0);
    while done < chunks {
        while posted < chunks && posted - done < in_flight {
            let off = posted * CHUNK;
            let len = CHUNK.min(copy.len() - off);
            let from = RemoteAddr { to: remote.to + off as u64, len: len as u32, ..remote };
            qp.post_send(&[SendWr::read(posted as u64, copy.sge(off, len), from)])?;
            posted += 1;
        }
        one(&scq)?;
        done += 1;
    }
    assert_eq!(copy.to_vec(0, copy.len())?, file_contents(), "the copy differs");
    println!("client: pulled {} bytes in {chunks} RDMA Reads, contents match", copy.len());
    qp.post_send(&[SendWr::send_inline(9, b"done")])?;
    one(&scq)?;
    server.join().expect("server thread").map_err(|e| e.to_string())?;
    Ok(())
}
