//! A minimal NVMe-oF host for the tests, built on the wire module and the iwarp API.
#![allow(dead_code)]

use iwarp::{
    Access, CompletionQueue, ConnParams, ConnectError, Device, DeviceConfig, MemoryRegion, QpEvent, QpInit, QueuePair,
    RecvWr, SendWr, WcOpcode, WcStatus, WorkCompletion,
};
use iwarp_nvmf::block::{BlockDevice, MemDevice};
use iwarp_nvmf::target::{Target, TargetConfig, TargetHandle};
use iwarp_nvmf::wire::{
    property, CmRequest, Command, Completion, Connect, ConnectData, Fabrics, PropertySize, Sgl, Status, CNTLID_DYNAMIC,
    CQE_LEN, SQE_LEN,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NQN: &str = "nqn.2014-08.org.example:test-disk";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
pub const TIMEOUT: Duration = Duration::from_secs(5);
const RSP_SLOTS: usize = 64;
const CAPSULE_LEN: usize = SQE_LEN + 8192;

/// A target on an ephemeral 127.0.0.1 port with a memory namespace of `size` bytes.
pub fn start_target(config: TargetConfig, size: usize) -> (Target, TargetHandle, SocketAddr, Arc<MemDevice>, Device) {
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    let mem = Arc::new(MemDevice::new(size));
    let block: Arc<dyn BlockDevice> = mem.clone();
    let target = Target::new(config, block);
    let handle = target.serve(&dev, listener).unwrap();
    let addr = handle.local_addr();
    (target, handle, addr, mem, dev)
}

/// One host queue: a connected queue pair, response slots, a capsule buffer.
pub struct HostQueue {
    pub dev: Device,
    pub pd: iwarp::ProtectionDomain,
    pub cq: CompletionQueue,
    pub qp: QueuePair,
    rsp: MemoryRegion,
    capsule: MemoryRegion,
    next_cid: u16,
    pub qid: u16,
    pending: Vec<WorkCompletion>,
}

/// A completion and the receive's work completion (for its invalidated STag).
#[derive(Debug, Clone, Copy)]
pub struct Rsp {
    pub cqe: Completion,
    pub wc: WorkCompletion,
}

impl Rsp {
    pub fn status(&self) -> Status {
        self.cqe.status()
    }
}

/// Connects a queue with raw CM private data (`None`: none at all).
pub fn connect_raw(addr: SocketAddr, private_data: &[u8], crc: bool) -> Result<HostQueue, ConnectError> {
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(256).unwrap();
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
    let rsp = pd.reg_mr(RSP_SLOTS * CQE_LEN, Access::LOCAL_WRITE).unwrap();
    let wrs: Vec<RecvWr<'_>> =
        (0..RSP_SLOTS).map(|i| RecvWr::new(i as u64, &[rsp.sge(i * CQE_LEN, CQE_LEN)])).collect();
    qp.post_recv(&wrs).unwrap();
    drop(wrs);
    let capsule = pd.reg_mr(CAPSULE_LEN, Access::LOCAL_WRITE).unwrap();
    let mut params = ConnParams {
        private_data: private_data.to_vec(),
        responder_resources: 16,
        initiator_depth: 0,
        ..ConnParams::default()
    };
    params.mpa.crc = crc;
    qp.connect(addr, &params)?;
    let qid = CmRequest::parse(private_data).map(|r| r.qid).unwrap_or(0);
    Ok(HostQueue { dev, pd, cq, qp, rsp, capsule, next_cid: 1, qid, pending: Vec::new() })
}

pub fn cm_request(qid: u16, hsqsize: u16) -> [u8; 32] {
    CmRequest { recfmt: 0, qid, hrqsize: hsqsize + 1, hsqsize }.to_bytes()
}

impl HostQueue {
    pub fn connect(addr: SocketAddr, qid: u16, hsqsize: u16) -> HostQueue {
        connect_raw(addr, &cm_request(qid, hsqsize), true).expect("queue connects")
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// A data region the target may read and write.
    pub fn data(&self, len: usize) -> MemoryRegion {
        self.pd.reg_mr(len.max(1), Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE).unwrap()
    }

    pub fn keyed(mr: &MemoryRegion, len: usize, invalidate: bool) -> Sgl {
        Sgl::Keyed { addr: mr.addr(), length: len as u32, key: mr.rkey(), invalidate }
    }

    /// Sends a command capsule (with in-capsule data after the SQE).
    pub fn send(&mut self, cmd: &Command, in_capsule: &[u8]) {
        let len = SQE_LEN + in_capsule.len();
        self.capsule.write(0, cmd.as_bytes()).unwrap();
        self.capsule.write(SQE_LEN, in_capsule).unwrap();
        self.qp.post_send(&[SendWr::send(1 << 40, &[self.capsule.sge(0, len)])]).unwrap();
        // The capsule buffer is reused: wait until the stack has taken it.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut wc = [WorkCompletion::default(); 1];
            let n = self.cq.wait(&mut wc, Some(Duration::from_millis(50)));
            if n == 1 && wc[0].wr_id == 1 << 40 {
                assert_eq!(wc[0].status, WcStatus::Success, "capsule send failed");
                return;
            }
            if n == 1 {
                self.pending.push(wc[0]);
            }
            assert!(Instant::now() < deadline, "capsule send did not complete");
        }
    }

    /// Sends raw capsule bytes (possibly malformed).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.capsule.write(0, bytes).unwrap();
        self.qp.post_send(&[SendWr::send(1 << 40, &[self.capsule.sge(0, bytes.len())])]).unwrap();
    }

    /// Waits for the next completion capsule (None on timeout).
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Rsp> {
        let deadline = Instant::now() + timeout;
        loop {
            let wc = if let Some(i) = self.pending.iter().position(|w| w.opcode == WcOpcode::Recv) {
                Some(self.pending.remove(i))
            } else {
                let mut wc = [WorkCompletion::default(); 1];
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                (self.cq.wait(&mut wc, Some(left.min(Duration::from_millis(50)))) == 1).then_some(wc[0])
            };
            let Some(wc) = wc else { continue };
            if wc.opcode != WcOpcode::Recv {
                continue;
            }
            if wc.status != WcStatus::Success {
                return None;
            }
            let slot = wc.wr_id as usize;
            let bytes = self.rsp.to_vec(slot * CQE_LEN, CQE_LEN).unwrap();
            self.qp.post_recv(&[RecvWr::new(wc.wr_id, &[self.rsp.sge(slot * CQE_LEN, CQE_LEN)])]).unwrap();
            assert_eq!(wc.byte_len as usize, CQE_LEN);
            return Some(Rsp { cqe: Completion::parse(&bytes).unwrap(), wc });
        }
    }

    pub fn recv(&mut self) -> Rsp {
        self.recv_within(TIMEOUT).expect("a completion")
    }

    /// Sends `cmd` and waits for its completion.
    pub fn exec(&mut self, cmd: &Command) -> Rsp {
        self.exec_with(cmd, &[])
    }

    pub fn exec_with(&mut self, cmd: &Command, in_capsule: &[u8]) -> Rsp {
        self.send(cmd, in_capsule);
        let r = self.recv();
        assert_eq!(r.cqe.cid, cmd.cid(), "completion for another command");
        assert_eq!(r.cqe.sqid, self.qid);
        r
    }

    /// Fabrics Connect of this queue, data through a keyed SGL.
    pub fn fabrics_connect(&mut self, sqsize: u16, kato: u32, cntlid: u16, subnqn: &str, hostnqn: &str) -> Rsp {
        let data = ConnectData { hostid: [9; 16], cntlid, subnqn: subnqn.into(), hostnqn: hostnqn.into() };
        let mr = self.data(1024);
        mr.write(0, &data.to_bytes()).unwrap();
        let cid = self.cid();
        let cmd = Fabrics::Connect(Connect { recfmt: 0, qid: self.qid, sqsize, cattr: 0, kato })
            .to_command(cid, &Self::keyed(&mr, 1024, false));
        self.exec(&cmd)
    }

    pub fn prop_get(&mut self, size: PropertySize, offset: u32) -> Rsp {
        let cid = self.cid();
        self.exec(&Fabrics::PropertyGet { size, offset }.to_command(cid, &Sgl::none()))
    }

    pub fn prop_set(&mut self, offset: u32, value: u32) -> Rsp {
        let cid = self.cid();
        self.exec(
            &Fabrics::PropertySet { size: PropertySize::Four, offset, value: u64::from(value) }
                .to_command(cid, &Sgl::none()),
        )
    }

    /// Admin queue: Connect (new controller), enable, wait for ready. Returns the cntlid.
    pub fn admin_setup(&mut self, kato: u32) -> u16 {
        let r = self.fabrics_connect(31, kato, CNTLID_DYNAMIC, NQN, HOSTNQN);
        assert_eq!(r.status(), Status::SUCCESS);
        let cntlid = r.cqe.dw0() as u16;
        let r = self.prop_set(property::CC, property::cc::enable_value());
        assert_eq!(r.status(), Status::SUCCESS);
        let r = self.prop_get(PropertySize::Four, property::CSTS);
        assert!(property::csts::ready(r.cqe.dw0()));
        cntlid
    }

    /// An admin command returning `len` bytes through a keyed SGL.
    pub fn exec_read(&mut self, mut cmd: Command, len: usize, invalidate: bool) -> (Rsp, Vec<u8>) {
        let mr = self.data(len);
        cmd.set_sgl(&Self::keyed(&mr, len, invalidate));
        let r = self.exec(&cmd);
        (r, mr.to_vec(0, len).unwrap())
    }

    /// Whether the queue pair reported its end within `timeout`.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.qp.next_event(Duration::from_millis(50)) {
                Some(QpEvent::Disconnected) | Some(QpEvent::Error { .. }) => return true,
                _ => {}
            }
        }
        false
    }
}

pub fn small_config() -> TargetConfig {
    let mut c = TargetConfig::new(NQN);
    c.tick = Duration::from_millis(10);
    c
}
