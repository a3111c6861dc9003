//! Two connected queue pairs in one process, for the application's own tests.
//!
//! Testing RDMA code usually needs RDMA hardware or a kernel module (Soft-RoCE, siw). This
//! stack needs neither: [`connected_pair`] opens a [`Device`], listens on `127.0.0.1` on a
//! port the host picks, connects a client queue pair to a server queue pair, and returns both
//! with their completion queues and their shared [`ProtectionDomain`]. Everything is real: a
//! TCP connection over loopback, the MPA exchange, the same data path as between two hosts.
//!
//! ```
//! use iwarp::testing::{connected_pair, wait_completions};
//! use iwarp::{Access, RecvWr, SendWr, WcStatus};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), iwarp::Error> {
//! let pair = connected_pair()?;
//! let inbox = pair.pd.reg_mr(64, Access::LOCAL_WRITE)?;
//! // A Send needs a posted receive at the peer (iWARP has no receiver-not-ready retry).
//! pair.server.qp.post_recv(&[RecvWr::new(1, &[inbox.sge_all()])])?;
//! pair.client.qp.post_send(&[SendWr::send_inline(2, b"ping")])?;
//!
//! let wc = wait_completions(&pair.server.recv_cq, 1, Duration::from_secs(5));
//! assert_eq!((wc[0].wr_id, wc[0].status, wc[0].byte_len), (1, WcStatus::Success, 4));
//! assert_eq!(inbox.to_vec(0, 4)?, b"ping");
//! # Ok(())
//! # }
//! ```
//!
//! Each call makes its own device (with its own event-loop threads), so tests running in
//! parallel do not share anything. Dropping the [`Pair`] closes the connection.

use crate::{
    CompletionQueue, ConnParams, Device, DeviceConfig, Error, Progress, ProtectionDomain, QpCap, QpInit, QueuePair,
    WorkCompletion,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How [`connected_pair_with`] sets a pair up. [`PairConfig::default`] is what
/// [`connected_pair`] uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PairConfig {
    /// The device's configuration.
    pub device: DeviceConfig,
    /// The address to listen on: `127.0.0.1:0` by default (`[::1]:0` for IPv6).
    pub listen_addr: SocketAddr,
    /// The client's `connect` parameters.
    pub client: ConnParams,
    /// The server's `accept` parameters.
    pub server: ConnParams,
    /// Queue sizes of both queue pairs.
    pub cap: QpCap,
    /// Who drives both queue pairs' I/O.
    pub progress: Progress,
    /// Entries in each completion queue.
    pub cq_depth: usize,
    /// How long connection setup may take before it fails.
    pub timeout: Duration,
}

impl Default for PairConfig {
    fn default() -> Self {
        PairConfig {
            device: DeviceConfig::default(),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            client: ConnParams::default(),
            server: ConnParams::default(),
            cap: QpCap::default(),
            progress: Progress::Thread,
            cq_depth: 256,
            timeout: Duration::from_secs(10),
        }
    }
}

/// One end of a [`Pair`]: a queue pair and its two completion queues.
#[derive(Debug, Clone)]
pub struct End {
    /// The queue pair, connected.
    pub qp: QueuePair,
    /// Where its send work requests complete.
    pub send_cq: CompletionQueue,
    /// Where its receive work requests complete.
    pub recv_cq: CompletionQueue,
}

/// Two queue pairs connected to each other over loopback, on one device and one protection
/// domain (so a region registered in [`Pair::pd`] can be used by either end).
#[derive(Debug)]
pub struct Pair {
    /// The device both ends live on.
    pub dev: Device,
    /// The protection domain of both queue pairs.
    pub pd: ProtectionDomain,
    /// The active side (it called `connect`).
    pub client: End,
    /// The passive side (it accepted from a listener).
    pub server: End,
}

/// A connected pair with [`PairConfig::default`].
///
/// # Errors
/// What opening the device, listening, creating the queue pairs, connecting or accepting
/// returned.
pub fn connected_pair() -> Result<Pair, Error> {
    connected_pair_with(PairConfig::default())
}

/// A connected pair set up as `cfg` says.
///
/// The server accepts on a thread of its own while the calling thread connects; both have
/// finished, and the server's side is established, when this returns.
///
/// # Errors
/// What opening the device, listening, creating the queue pairs, connecting or accepting
/// returned; [`Error::TimedOut`] if the server saw no request within `cfg.timeout`.
pub fn connected_pair_with(cfg: PairConfig) -> Result<Pair, Error> {
    let dev = Device::open(cfg.device.clone())?;
    let pd = dev.alloc_pd();
    let end = || -> Result<End, Error> {
        let send_cq = dev.create_cq(cfg.cq_depth)?;
        let recv_cq = dev.create_cq(cfg.cq_depth)?;
        let mut init = QpInit::new(&send_cq, &recv_cq);
        init.cap = cfg.cap;
        init.progress = cfg.progress;
        let qp = pd.create_qp(&init)?;
        Ok(End { qp, send_cq, recv_cq })
    };
    let server = end()?;
    let client = end()?;
    let listener = dev.listen(cfg.listen_addr, 4)?;
    let addr = listener.local_addr();
    let server_qp = server.qp.clone();
    let (params, timeout) = (cfg.server.clone(), cfg.timeout);
    let accepting = std::thread::spawn(move || -> Result<(), Error> {
        let req = listener.get_request(Some(timeout))?;
        req.accept(&server_qp, &params)?;
        Ok(server_qp.wait_established(timeout)?)
    });
    let connected = client.qp.connect(addr, &cfg.client);
    // The thread only returns errors; a panic there is a bug in the stack worth surfacing.
    let accepted = accepting.join().expect("the accepting thread panicked");
    connected?;
    accepted?;
    Ok(Pair { dev, pd, client, server })
}

/// Waits until `n` completions have been taken from `cq` or `timeout` has passed, and returns
/// those it got (fewer than `n` only on timeout).
pub fn wait_completions(cq: &CompletionQueue, n: usize, timeout: Duration) -> Vec<WorkCompletion> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![WorkCompletion::default(); n.clamp(1, 64)];
    while out.len() < n {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
        let want = (n - out.len()).min(buf.len());
        let got = cq.wait(&mut buf[..want], Some(left));
        out.extend_from_slice(&buf[..got]);
    }
    out
}
