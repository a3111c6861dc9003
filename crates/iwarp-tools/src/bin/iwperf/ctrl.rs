//! perftest's control channel: an rdma_cm connection carrying small Sends in lock step
//! (client first), and the `pingpong_dest` structure (perftest 6.06, `docs/tool-compat.md` §1).

use iwarp::{
    CompletionQueue, ConnParams, ConnectRequest, Device, Liveness, MpaOptions, ProtectionDomain, QpEvent, QpInit,
    QueuePair, RecvWr, SendWr, WcOpcode, WcStatus, WorkCompletion,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The version string we announce: perftest 4.5-0.17's.
pub const VERSION: &str = "6.06";
/// Size of `struct pingpong_dest` in 6.06, and of every posted control receive.
pub const DEST_LEN: usize = 56;
/// How long any control step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// perftest's `struct pingpong_dest` (all integers big-endian on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dest {
    /// LID (0 on iWARP).
    pub lid: u32,
    /// Outstanding reads.
    pub out_reads: u32,
    /// QP number (printed).
    pub qpn: u32,
    /// PSN (printed; 24 bits).
    pub psn: u32,
    /// The STag the peer must use.
    pub rkey: u32,
    /// The address the peer must use.
    pub vaddr: u64,
    /// Raw GID bytes.
    pub gid: [u8; 16],
}

impl Dest {
    /// The 56 wire bytes (padding, srqn and gid_index zero).
    pub fn to_bytes(self) -> [u8; DEST_LEN] {
        let mut b = [0u8; DEST_LEN];
        b[0..4].copy_from_slice(&self.lid.to_be_bytes());
        b[4..8].copy_from_slice(&self.out_reads.to_be_bytes());
        b[8..12].copy_from_slice(&self.qpn.to_be_bytes());
        b[12..16].copy_from_slice(&self.psn.to_be_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_be_bytes());
        b[24..32].copy_from_slice(&self.vaddr.to_be_bytes());
        b[32..48].copy_from_slice(&self.gid);
        b
    }

    /// Parses 56 bytes (padding, srqn and gid_index ignored).
    pub fn parse(b: &[u8]) -> Option<Dest> {
        if b.len() != DEST_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[32..48]);
        Some(Dest {
            lid: u32_at(0),
            out_reads: u32_at(4),
            qpn: u32_at(8),
            psn: u32_at(12),
            rkey: u32_at(16),
            vaddr: u64::from_be_bytes(b[24..32].try_into().expect("8 bytes")),
            gid,
        })
    }

    /// perftest's address block (` local address: LID 0000 QPN 0x0003 PSN 0xc5478f` + GID line).
    pub fn describe(&self, which: &str) -> String {
        let gid: Vec<String> = self.gid.iter().map(|b| format!("{b:02}")).collect();
        format!(
            " {which} address: LID {:04x} QPN {:#06x} PSN {:#06x}\n GID: {}",
            self.lid,
            self.qpn,
            self.psn,
            gid.join(":")
        )
    }
}

/// The control connection.
pub struct Ctrl {
    qp: QueuePair,
    cq: CompletionQueue,
    recv: iwarp::MemoryRegion,
    client: bool,
    wr: u64,
    drive: Option<Drive>,
}

/// A completion queue of manual-progress data queue pairs that must keep moving while this
/// side waits for a control message (bidirectional runs: the peer is still writing, reading
/// or sending to us after our own part is done).
struct Drive {
    cq: CompletionQueue,
    /// Sleep in the kernel on the data sockets between looks (`-e`) instead of spinning.
    events: bool,
}

fn ctrl_qp(pd: &ProtectionDomain, cq: &CompletionQueue) -> iwarp::Result<QueuePair> {
    let mut init = QpInit::new(cq, cq);
    init.cap.max_send_wr = 4;
    init.cap.max_recv_wr = 2;
    init.cap.max_inline_data = 64;
    Ok(pd.create_qp(&init)?)
}

fn ctrl_params(mpa: &MpaOptions, liveness: Liveness) -> ConnParams {
    // perftest's control QP has no RDMA Read resources: IRD = ORD = 0.
    ConnParams { responder_resources: 0, initiator_depth: 0, mpa: mpa.clone(), liveness, ..Default::default() }
}

impl Ctrl {
    /// Connects the control channel (client).
    pub fn connect(
        dev: &Device,
        pd: &ProtectionDomain,
        addr: SocketAddr,
        mpa: &MpaOptions,
        liveness: Liveness,
        source: Option<SocketAddr>,
    ) -> Result<Ctrl, String> {
        let cq = dev.create_cq(8).map_err(|e| e.to_string())?;
        let recv = pd.reg_mr(DEST_LEN, iwarp::Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
        let make = || {
            let qp = ctrl_qp(pd, &cq).map_err(|e| e.to_string())?;
            qp.post_recv(&[RecvWr::new(0, &[recv.sge_all()])]).map_err(|e| e.to_string())?;
            Ok(qp)
        };
        let params = ConnParams { source, ..ctrl_params(mpa, liveness) };
        let qp =
            connect_retry(make, addr, &params).map_err(|e| format!(" Unable to init the socket connection: {e}"))?;
        Ok(Ctrl { qp, cq, recv, client: true, wr: 0, drive: None })
    }

    /// Accepts the control channel (server).
    pub fn accept(
        dev: &Device,
        pd: &ProtectionDomain,
        req: ConnectRequest,
        mpa: &MpaOptions,
        liveness: Liveness,
    ) -> Result<Ctrl, String> {
        let cq = dev.create_cq(8).map_err(|e| e.to_string())?;
        let qp = ctrl_qp(pd, &cq).map_err(|e| e.to_string())?;
        let recv = pd.reg_mr(DEST_LEN, iwarp::Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
        qp.post_recv(&[RecvWr::new(0, &[recv.sge_all()])]).map_err(|e| e.to_string())?;
        req.accept(&qp, &ctrl_params(mpa, liveness)).map_err(|e| e.to_string())?;
        qp.wait_established(STEP_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(Ctrl { qp, cq, recv, client: false, wr: 0, drive: None })
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        self.wr += 1;
        // Inline: copied at post time, so the next message cannot overwrite this one.
        self.qp.post_send(&[SendWr::send_inline(self.wr, msg)]).map_err(|e| format!(" Failed to send: {e}"))
    }

    /// From now on, keep the queue pairs of `cq` (created with [`iwarp::Progress::Poll`])
    /// moving while waiting for control messages. Their successful completions are dropped
    /// (the data phase has consumed all it waits for), and so are flushed ones (the peer ended
    /// its data connection); any other error completion fails the wait.
    pub fn drive(&mut self, cq: &CompletionQueue, events: bool) {
        self.drive = Some(Drive { cq: cq.clone(), events });
    }

    /// One look at the data queue pairs being driven.
    fn drive_once(&self) -> Result<(), String> {
        let Some(d) = &self.drive else { return Ok(()) };
        let mut wc = [WorkCompletion::default(); 16];
        let n = if d.events { d.cq.wait(&mut wc, Some(Duration::from_millis(1))) } else { d.cq.poll(&mut wc) };
        // A flushed work request only says the connection has ended: the peer may end its data
        // connection as soon as it has sent its last control message, and that FIN can reach us
        // first (two TCP connections, no order between them). What is left to flush then is an
        // unsignalled credit Write not yet on the wire: the data phase has already waited for
        // every completion it needs, so a lost credit is harmless. Other errors are not.
        match wc[..n].iter().find(|c| c.status != WcStatus::Success && c.status != WcStatus::WrFlush) {
            Some(c) => Err(format!(
                " Completion with error on a data connection: status {:?} (qp {}, {:?} wr {})",
                c.status, c.qp_num, c.opcode, c.wr_id
            )),
            None => Ok(()),
        }
    }

    fn receive(&mut self) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut wc = [WorkCompletion::default(); 4];
        loop {
            let n = if self.drive.is_some() {
                self.drive_once()?;
                self.cq.poll(&mut wc)
            } else {
                self.cq.wait(&mut wc, Some(Duration::from_millis(20)))
            };
            for c in &wc[..n] {
                if c.status != WcStatus::Success {
                    return Err(format!("Bad wc status -- {:?}\n Unable to read to socket/rdma_cm", c.status));
                }
                if c.opcode == WcOpcode::Recv {
                    let data = self.recv.to_vec(0, c.byte_len as usize).map_err(|e| e.to_string())?;
                    // The peer may close right after its last message: a failed re-post only
                    // matters if another message is expected, and then receive() reports it.
                    let _ = self.qp.post_recv(&[RecvWr::new(0, &[self.recv.sge_all()])]);
                    return Ok(data);
                }
            }
            if let Some(QpEvent::Disconnected | QpEvent::Error { .. }) = self.qp.poll_event() {
                return Err(" Unable to read to socket/rdma_cm (peer disconnected)".into());
            }
            if Instant::now() > deadline {
                return Err(" Unable to read to socket/rdma_cm (timed out)".into());
            }
        }
    }

    /// One round: the client sends then receives; the server receives then sends.
    pub fn exchange(&mut self, msg: &[u8]) -> Result<Vec<u8>, String> {
        if self.client {
            self.send(msg)?;
            self.receive()
        } else {
            let r = self.receive()?;
            self.send(msg)?;
            Ok(r)
        }
    }

    /// One round of `pingpong_dest`.
    pub fn exchange_dest(&mut self, d: &Dest) -> Result<Dest, String> {
        let r = self.exchange(&d.to_bytes())?;
        Dest::parse(&r)
            .ok_or_else(|| format!(" Failed to exchange data between server and clients ({} bytes)", r.len()))
    }

    /// The common preamble, ctrl 1 to 4: version, cycle buffer, cache line, MTU. Returns the
    /// cycle buffer both sides use.
    pub fn preamble(&mut self) -> Result<usize, String> {
        let mut v = [0u8; 16];
        v[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
        let peer = self.exchange(&v)?;
        let end = peer.iter().position(|&c| c == 0).unwrap_or(peer.len());
        let ver = parse_version(&peer[..end]);
        if ver < (5, 70) {
            return Err(format!(
                "Current implementation is not compatible with versions older than 5.70 (peer {}.{:02})",
                ver.0, ver.1
            ));
        }
        // perftest 6.28 and later add a parameter-negotiation message 6.06 does not have.
        if ver >= (6, 28) {
            return Err(format!(
                "peer perftest {}.{:02} expects a parameter negotiation this version (6.06) does not speak",
                ver.0, ver.1
            ));
        }
        let page = 4096i32;
        let peer = self.exchange(&page.to_be_bytes())?;
        let cycle = be_i32(&peer).max(page) as usize;
        let peer = self.exchange(&64i32.to_be_bytes())?;
        let _cache_line = be_i32(&peer).max(64);
        // ibv_mtu enum 3 = 1024 bytes, what siw reports.
        let _mtu = self.exchange(b"3\0")?;
        Ok(cycle)
    }

    /// Disconnects. A client first gives the server up to 3 s to close, as perftest's client
    /// does (the server's FIN comes first on the wire): a client FIN that arrives while siw is
    /// still finishing its last Send makes siw fail that Send ("Bad wc status 2" at the
    /// perftest server) although its bytes went out.
    pub fn close(self) {
        if self.client {
            wait_peer_close(std::slice::from_ref(&self.qp), Duration::from_secs(3));
        }
        self.qp.disconnect();
        let _ = self.qp.next_event(Duration::from_millis(500));
    }
}

/// Waits up to `timeout` for the peer to close every queue pair (or for an error).
pub fn wait_peer_close(qps: &[QueuePair], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for qp in qps {
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match qp.next_event(left) {
                Some(QpEvent::Disconnected | QpEvent::Error { .. }) | None => break,
                Some(_) => {}
            }
        }
    }
}

/// perftest's version string ("6.06") as (major, minor hundredths).
fn parse_version(b: &[u8]) -> (u32, u32) {
    let s = std::str::from_utf8(b).unwrap_or("").trim();
    let mut it = s.splitn(2, '.');
    let major = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let minor = it.next().map_or(0, |m| {
        let digits: String = m.chars().take_while(char::is_ascii_digit).take(2).collect();
        let v: u32 = digits.parse().unwrap_or(0);
        if digits.len() == 1 {
            v * 10
        } else {
            v
        }
    });
    (major, minor)
}

fn be_i32(b: &[u8]) -> i32 {
    if b.len() >= 4 {
        i32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
    } else {
        0
    }
}

/// Connects a queue pair made by `make`, retrying while the server is not listening yet.
/// Directly that is a refused connection; behind a NAT or proxy (QEMU's user-mode network, for
/// one) the TCP connect succeeds and the refusal arrives as a reset or close before the MPA
/// Reply. A queue pair whose connect failed cannot connect again, so each try uses a new one.
pub fn connect_retry(
    make: impl Fn() -> Result<QueuePair, String>,
    addr: SocketAddr,
    params: &ConnParams,
) -> Result<QueuePair, String> {
    let mut tries = 0;
    loop {
        let qp = make()?;
        match qp.connect(addr, params) {
            Ok(()) => return Ok(qp),
            Err(e) if tries < 50 && not_listening(&e) => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A failure that means "nobody accepted this connection (yet)".
fn not_listening(e: &iwarp::ConnectError) -> bool {
    use std::io::ErrorKind;
    match e {
        iwarp::ConnectError::Refused | iwarp::ConnectError::Closed => true,
        iwarp::ConnectError::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_like_perftest() {
        assert_eq!(parse_version(b"6.06"), (6, 6));
        assert_eq!(parse_version(b"5.7"), (5, 70));
        assert!(parse_version(b"6.29") >= (6, 28));
        assert!(parse_version(b"5.60") < (5, 70));
    }

    #[test]
    fn dest_round_trip_and_layout() {
        let d = Dest {
            lid: 0,
            out_reads: 128,
            qpn: 3,
            psn: 0xc5478f,
            rkey: 0xc2d0_8300,
            vaddr: 0x55d9_6a14_f000,
            gid: [7; 16],
        };
        let b = d.to_bytes();
        assert_eq!(&b[4..8], &[0, 0, 0, 128]);
        assert_eq!(&b[16..20], &[0xc2, 0xd0, 0x83, 0x00]);
        assert_eq!(&b[20..24], &[0; 4], "padding is zero");
        assert_eq!(Dest::parse(&b), Some(d));
        assert_eq!(Dest::parse(&b[..55]), None);
        let g = Dest { gid: [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..d };
        assert_eq!(
            g.describe("local"),
            " local address: LID 0000 QPN 0x0003 PSN 0xc5478f\n GID: 82:84:00:18:52:86:00:00:00:00:00:00:00:00:00:00"
        );
    }
}
