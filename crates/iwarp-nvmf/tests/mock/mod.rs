//! A small scripted NVMe-oF target for the initiator's tests: one memory namespace, the
//! admin and I/O commands the host sends, and knobs to make it misbehave (invalidate the
//! wrong STag, stop answering). It checks what it receives and records violations.
#![allow(dead_code)]

use iwarp::{
    Access, CompletionQueue, ConnParams, Device, DeviceConfig, Listener, MemoryRegion, ProtectionDomain, QpCap, QpInit,
    QueuePair, RecvWr, RemoteAddr, SendWr, Stag, WcStatus, WorkCompletion,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ICD: usize = 4096;
pub const MDTS: u8 = 5; // 128 KiB
pub const MOCK_UUID: [u8; 16] = *b"mock-namespace-1";

/// Knobs and observations shared with the test.
#[derive(Default)]
pub struct Script {
    /// Hold an I/O read until the next one arrives, then answer the first with a Send with
    /// Invalidate of the second's STag.
    pub bogus_invalidate: AtomicBool,
    /// Stop answering I/O commands.
    pub stall_io: AtomicBool,
    /// Keep Alive commands seen.
    pub keep_alives: AtomicU32,
    /// Commands that carried in-capsule data.
    pub in_capsule_writes: AtomicU32,
    /// Set when CC.SHN was written.
    pub shutdown: AtomicBool,
    /// What the target found wrong.
    pub violations: Mutex<Vec<String>>,
    /// The keyed SGL of every I/O read, in arrival order.
    pub read_sgls: Mutex<Vec<RemoteAddr>>,
    /// Before answering a read, RDMA-Write its data to the previous read's buffer too, as
    /// a target with a stale STag would.
    pub late_write: AtomicBool,
}

pub struct MockTarget {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
    pub disk: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    qps: Arc<Mutex<Vec<QueuePair>>>,
    _dev: Device,
}

impl Drop for MockTarget {
    /// Stops serving and closes every connection at once, as a target that exits.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for qp in self.qps.lock().unwrap().drain(..) {
            qp.disconnect();
        }
    }
}

impl MockTarget {
    pub fn start(nqn: &str, size: usize) -> MockTarget {
        let dev = Device::open(DeviceConfig::default()).unwrap();
        let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let addr = listener.local_addr();
        let script = Arc::new(Script::default());
        let disk = Arc::new(Mutex::new(vec![0u8; size]));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            nqn: nqn.to_string(),
            script: Arc::clone(&script),
            disk: Arc::clone(&disk),
            pd: dev.alloc_pd(),
            dev: dev.clone(),
            stop: Arc::clone(&stop),
            ctrl: Arc::new(Mutex::new(Ctrl::default())),
            qps: Arc::new(Mutex::new(Vec::new())),
        };
        let qps = Arc::clone(&ctx.qps);
        std::thread::spawn(move || accept_loop(listener, ctx));
        MockTarget { addr, script, disk, stop, qps, _dev: dev }
    }
}

#[derive(Default)]
struct Ctrl {
    cc: u32,
}

#[derive(Clone)]
struct Ctx {
    nqn: String,
    script: Arc<Script>,
    disk: Arc<Mutex<Vec<u8>>>,
    pd: ProtectionDomain,
    dev: Device,
    stop: Arc<AtomicBool>,
    ctrl: Arc<Mutex<Ctrl>>,
    qps: Arc<Mutex<Vec<QueuePair>>>,
}

fn accept_loop(listener: Listener, ctx: Ctx) {
    while !ctx.stop.load(Ordering::Acquire) {
        let Ok(req) = listener.get_request(Some(Duration::from_millis(100))) else { continue };
        let pd = req.private_data().to_vec();
        if pd.len() < 8 {
            let _ = req.reject(&[0, 0, 1, 0]);
            continue;
        }
        let qid = u16::from_le_bytes([pd[2], pd[3]]);
        let hsqsize = u16::from_le_bytes([pd[6], pd[7]]) as usize;
        let depth = hsqsize + 1;
        let cq = ctx.dev.create_cq(4 * depth + 64).unwrap();
        let cap = QpCap {
            max_send_wr: 4 * depth + 8,
            max_recv_wr: depth,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 64,
        };
        let qp = ctx.pd.create_qp(&QpInit { cap, ..QpInit::new(&cq, &cq) }).unwrap();
        let caps = ctx.pd.reg_mr(depth * (64 + ICD), Access::LOCAL_WRITE).unwrap();
        let wrs: Vec<RecvWr<'_>> =
            (0..depth).map(|i| RecvWr::new(i as u64, &[caps.sge(i * (64 + ICD), 64 + ICD)])).collect();
        qp.post_recv(&wrs).unwrap();
        drop(wrs);
        let mut accept = ConnParams {
            private_data: vec![0u8; 32],
            responder_resources: 0,
            initiator_depth: 16,
            ..ConnParams::default()
        };
        accept.private_data[2..4].copy_from_slice(&(depth as u16).to_le_bytes());
        if req.accept(&qp, &accept).is_err() {
            continue;
        }
        ctx.qps.lock().unwrap().push(qp.clone());
        let c = ctx.clone();
        std::thread::spawn(move || {
            let _ = qp.wait_established(Duration::from_secs(5));
            serve(c, qid, qp, cq, caps, depth)
        });
    }
}

struct Conn {
    ctx: Ctx,
    qid: u16,
    qp: QueuePair,
    cq: CompletionQueue,
    stash: VecDeque<WorkCompletion>,
    rsp: MemoryRegion,
    next_wr: u64,
    cntlid_ok: bool,
    held: Option<(u16, RemoteAddr)>,
}

const WR_BASE: u64 = 1 << 40;

impl Conn {
    /// Waits for the send-queue completion of `wr_id`, stashing receive completions.
    fn wait_for(&mut self, wr_id: u64) -> Option<WorkCompletion> {
        let mut wcs = [WorkCompletion::default(); 16];
        loop {
            if self.ctx.stop.load(Ordering::Acquire) {
                return None;
            }
            let n = self.cq.wait(&mut wcs, Some(Duration::from_millis(100)));
            let mut found = None;
            let mut failed = false;
            for wc in &wcs[..n] {
                if wc.wr_id == wr_id {
                    found = Some(*wc);
                } else if wc.wr_id < WR_BASE {
                    self.stash.push_back(*wc);
                } else if wc.status != WcStatus::Success {
                    failed = true;
                }
            }
            if found.is_some() || failed {
                return found;
            }
        }
    }
    fn wr(&mut self) -> u64 {
        self.next_wr += 1;
        WR_BASE + self.next_wr
    }
    fn violation(&self, s: String) {
        self.ctx.script.violations.lock().unwrap().push(s);
    }
    fn respond(&mut self, cid: u16, status: u16, result: u64, inval: Option<Stag>) {
        let mut cqe = [0u8; 16];
        cqe[0..8].copy_from_slice(&result.to_le_bytes());
        cqe[10..12].copy_from_slice(&self.qid.to_le_bytes());
        cqe[12..14].copy_from_slice(&cid.to_le_bytes());
        cqe[14..16].copy_from_slice(&(status << 1).to_le_bytes());
        let wr_id = self.wr();
        let wr = match inval {
            Some(s) => SendWr::send_with_invalidate(wr_id, &[], s).inline_data(&cqe),
            None => SendWr::send_inline(wr_id, &cqe),
        };
        let _ = self.qp.post_send(&[wr]);
        let _ = self.wait_for(wr_id);
    }
    /// Reads the host's keyed buffer into a new local region.
    fn fetch(&mut self, remote: RemoteAddr) -> Option<Vec<u8>> {
        let len = remote.len as usize;
        let sink = self.ctx.pd.reg_mr(len.max(1), Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
        let wr_id = self.wr();
        self.qp.post_send(&[SendWr::read(wr_id, sink.sge(0, len), remote)]).ok()?;
        let wc = self.wait_for(wr_id)?;
        if wc.status != WcStatus::Success {
            return None;
        }
        sink.to_vec(0, len).ok()
    }
    fn push(&mut self, data: &[u8], remote: RemoteAddr) -> bool {
        let src = self.ctx.pd.reg_mr(data.len().max(1), Access::LOCAL_WRITE).unwrap();
        src.write(0, data).unwrap();
        let wr_id = self.wr();
        if self.qp.post_send(&[SendWr::write(wr_id, &[src.sge(0, data.len())], remote)]).is_err() {
            return false;
        }
        self.wait_for(wr_id).is_some_and(|wc| wc.status == WcStatus::Success)
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn serve(ctx: Ctx, qid: u16, qp: QueuePair, cq: CompletionQueue, caps: MemoryRegion, depth: usize) {
    let rsp = ctx.pd.reg_mr(16, Access::LOCAL_WRITE).unwrap();
    let mut c = Conn { ctx, qid, qp, cq, stash: VecDeque::new(), rsp, next_wr: 0, cntlid_ok: false, held: None };
    let mut wcs = [WorkCompletion::default(); 16];
    let slot = 64 + ICD;
    loop {
        let wc = match c.stash.pop_front() {
            Some(wc) => wc,
            None => {
                if c.ctx.stop.load(Ordering::Acquire) {
                    c.qp.disconnect();
                    return;
                }
                let n = c.cq.wait(&mut wcs, Some(Duration::from_millis(100)));
                for wc in &wcs[..n] {
                    c.stash.push_back(*wc);
                }
                continue;
            }
        };
        if wc.status != WcStatus::Success {
            return;
        }
        if wc.wr_id >= WR_BASE {
            continue;
        }
        let i = wc.wr_id as usize;
        let capsule = caps.to_vec(i * slot, wc.byte_len as usize).unwrap();
        let _ = c.qp.post_recv(&[RecvWr::new(i as u64, &[caps.sge(i * slot, slot)])]);
        handle(&mut c, &capsule);
        let _ = depth;
    }
}

/// The keyed SGL of a command, if it has one (with the invalidate flag).
fn keyed(cmd: &[u8]) -> Option<(RemoteAddr, bool)> {
    let t = cmd[39];
    if t >> 4 != 4 {
        return None;
    }
    let addr = le64(cmd, 24);
    let len = u32::from_le_bytes([cmd[32], cmd[33], cmd[34], 0]);
    let key = le32(cmd, 35);
    Some((RemoteAddr::new(Stag(key), addr, len), t & 0xf == 0xf))
}

fn handle(c: &mut Conn, capsule: &[u8]) {
    let cmd = &capsule[..64];
    let opcode = cmd[0];
    let cid = le16(cmd, 2);
    if cmd[1] & 0xc0 != 0x40 {
        c.violation(format!("command {opcode:#x} without PSDT=01b"));
    }
    let sgl = keyed(cmd);
    let inval = |s: &Option<(RemoteAddr, bool)>| s.and_then(|(r, i)| (i && r.len > 0).then_some(r.stag));
    let ok = 0u16;
    if opcode == 0x7f {
        match cmd[4] {
            0x01 => {
                let Some((remote, _)) = sgl else {
                    c.violation("Connect without a keyed SGL".into());
                    return c.respond(cid, 0x0102, 0, None);
                };
                let Some(data) = c.fetch(remote) else { return };
                let subnqn = String::from_utf8_lossy(&data[256..512]).trim_end_matches('\0').to_string();
                let cntlid = le16(&data, 16);
                let want = if c.qid == 0 { 0xffff } else { 1 };
                if cntlid != want {
                    c.violation(format!("Connect qid {} with cntlid {cntlid:#x}", c.qid));
                }
                if le16(cmd, 42) != c.qid {
                    c.violation("Connect qid differs from the private data's".into());
                }
                if subnqn != c.ctx.nqn {
                    // Connect Invalid Parameters (SCT 1, SC 0x82), IATTR 1, IPO 256.
                    return c.respond(cid, 0x0182, (256u64 << 16) | 1, inval(&sgl));
                }
                c.cntlid_ok = true;
                c.respond(cid, ok, 1, inval(&sgl))
            }
            0x04 => {
                let off = le32(cmd, 44);
                let v: u64 = match off {
                    0x00 => 63 | (1 << 37) | (20 << 24), // MQES 63, CSS NVM, TO 10 s
                    0x08 => 0x0001_0300,
                    0x14 => u64::from(c.ctx.ctrl.lock().unwrap().cc),
                    0x1c => {
                        let cc = c.ctx.ctrl.lock().unwrap().cc;
                        let mut csts = u64::from(cc & 1);
                        if cc & (3 << 14) != 0 {
                            csts |= 2 << 2;
                        }
                        csts
                    }
                    _ => return c.respond(cid, 0x0002, 0, None),
                };
                c.respond(cid, ok, v, None)
            }
            0x00 => {
                if le32(cmd, 44) == 0x14 {
                    let v = le64(cmd, 48) as u32;
                    c.ctx.ctrl.lock().unwrap().cc = v;
                    if v & (3 << 14) != 0 {
                        c.ctx.script.shutdown.store(true, Ordering::Release);
                    }
                }
                c.respond(cid, ok, 0, None)
            }
            _ => c.respond(cid, 0x0001, 0, None),
        }
        return;
    }
    if !c.cntlid_ok {
        c.violation(format!("command {opcode:#x} before Connect"));
    }
    let disk_blocks = (c.ctx.disk.lock().unwrap().len() / 512) as u64;
    if c.qid == 0 {
        match opcode {
            0x06 => {
                let cns = cmd[40];
                let mut buf = vec![0u8; 4096];
                match cns {
                    0x01 => {
                        buf[4..12].copy_from_slice(b"MOCK0001");
                        buf[24..34].copy_from_slice(b"mock model");
                        buf[77] = MDTS;
                        buf[78..80].copy_from_slice(&1u16.to_le_bytes());
                        buf[320..322].copy_from_slice(&10u16.to_le_bytes()); // KAS
                        buf[516..520].copy_from_slice(&1u32.to_le_bytes());
                        buf[525] = 1; // volatile write cache
                        buf[536..540].copy_from_slice(&(1u32 | (1 << 2) | (1 << 20)).to_le_bytes());
                        let n = c.ctx.nqn.len();
                        buf[768..768 + n].copy_from_slice(c.ctx.nqn.as_bytes());
                        buf[1792..1796].copy_from_slice(&(((64 + ICD) / 16) as u32).to_le_bytes());
                        buf[1796..1800].copy_from_slice(&1u32.to_le_bytes());
                    }
                    0x02 => buf[0..4].copy_from_slice(&1u32.to_le_bytes()),
                    0x03 => buf.copy_from_slice(&iwarp_nvmf::wire::ns_desc_list(&MOCK_UUID, &[7; 16])[..]),
                    0x00 => {
                        buf[0..8].copy_from_slice(&disk_blocks.to_le_bytes());
                        buf[8..16].copy_from_slice(&disk_blocks.to_le_bytes());
                        buf[128 + 2] = 9; // 512-byte blocks
                    }
                    _ => return c.respond(cid, 0x0002, 0, None),
                }
                let Some((remote, _)) = sgl else { return c.respond(cid, 0x0002, 0, None) };
                if remote.len != 4096 {
                    c.violation(format!("Identify with {} bytes", remote.len));
                }
                if !c.push(&buf, remote) {
                    return;
                }
                c.respond(cid, ok, 0, inval(&sgl))
            }
            0x09 => c.respond(cid, ok, 0x0003_0003, None), // 4 queues each
            0x0c => {}                                     // Asynchronous Event Request: held, never completed
            0x02 => c.respond(cid, ok, 0, None),           // Get Log Page (nothing written)
            0x18 => {
                c.ctx.script.keep_alives.fetch_add(1, Ordering::Relaxed);
                c.respond(cid, ok, 0, None)
            }
            _ => c.respond(cid, 0x0001, 0, None),
        }
        return;
    }
    if c.ctx.script.stall_io.load(Ordering::Acquire) {
        return;
    }
    let slba = le64(cmd, 40);
    let nlb = u64::from(le16(cmd, 48)) + 1;
    let (start, len) = ((slba * 512) as usize, (nlb * 512) as usize);
    if matches!(opcode, 0x01 | 0x02) && slba + nlb > disk_blocks {
        return c.respond(cid, 0x0080, 0, inval(&sgl));
    }
    match opcode {
        0x02 => {
            let Some((remote, _)) = sgl else { return c.respond(cid, 0x0002, 0, None) };
            if remote.len as usize != len {
                c.violation(format!("read of {len} bytes with an SGL of {}", remote.len));
            }
            let data = c.ctx.disk.lock().unwrap()[start..start + len].to_vec();
            let previous = {
                let mut sgls = c.ctx.script.read_sgls.lock().unwrap();
                let p = sgls.last().copied();
                sgls.push(remote);
                p
            };
            if let Some(p) = previous.filter(|_| c.ctx.script.late_write.load(Ordering::Acquire)) {
                let _ = c.push(&data, p);
            }
            if !c.push(&data, remote) {
                return;
            }
            if c.ctx.script.bogus_invalidate.load(Ordering::Acquire) {
                match c.held.take() {
                    None => c.held = Some((cid, remote)),
                    Some((held_cid, held)) => {
                        // The first answer invalidates the second command's STag; the second
                        // answer is a plain Send (its STag is gone already).
                        let _ = held;
                        c.respond(held_cid, ok, 0, Some(remote.stag));
                        c.respond(cid, ok, 0, None);
                    }
                }
                return;
            }
            c.respond(cid, ok, 0, inval(&sgl))
        }
        0x01 => {
            let data = if cmd[39] == 0x01 {
                c.ctx.script.in_capsule_writes.fetch_add(1, Ordering::Relaxed);
                let n = le32(cmd, 32) as usize;
                if capsule.len() < 64 + n {
                    c.violation("in-capsule data shorter than its SGL".into());
                    return c.respond(cid, 0x000f, 0, None);
                }
                capsule[64..64 + n].to_vec()
            } else {
                let Some((remote, _)) = sgl else { return c.respond(cid, 0x0002, 0, None) };
                match c.fetch(remote) {
                    Some(d) => d,
                    None => return,
                }
            };
            if data.len() != len {
                c.violation(format!("write of {len} bytes with {} bytes of data", data.len()));
                return c.respond(cid, 0x000f, 0, inval(&sgl));
            }
            c.ctx.disk.lock().unwrap()[start..start + len].copy_from_slice(&data);
            c.respond(cid, ok, 0, inval(&sgl))
        }
        0x00 => c.respond(cid, ok, 0, None),
        _ => c.respond(cid, 0x0001, 0, None),
    }
}
