//! The initiator (NVMe-oF host): attaches a remote controller over the RDMA transport and
//! exposes its namespace as a [`BlockDevice`].
//!
//! [`Controller::connect`] follows the attach sequence of a Linux host:
//!
//! 1. the admin queue: a connection whose private data names queue 0 (32 entries), then
//!    Fabrics Connect with its 1,024 bytes of data (host identifier, controller 0xFFFF,
//!    subsystem and host NQNs) in a keyed SGL the target RDMA-Reads;
//! 2. Property Get CAP, Property Set CC (enable), Property Get CC, polling CSTS until RDY
//!    (within CAP.TO), Property Get VS;
//! 3. Identify Controller (keyed SGLs required; MDTS bounds each command, IOCCSZ the
//!    in-capsule data), the SMART log (a failure is only a warning), Set Features Number of
//!    Queues;
//! 4. the namespace: the active namespace list (VS 1.1 on), its Namespace Identification
//!    Descriptor list (VS 1.3 on; the namespace is refused if that fails), Identify
//!    Namespace (size, LBA format);
//! 5. one connection per I/O queue with its own Fabrics Connect (qid, the controller id);
//! 6. an Asynchronous Event Request held at the controller, and a thread sending Keep Alive
//!    every half keep-alive timeout (it also logs and re-arms completed event requests).
//!
//! [`Controller::disconnect`] (or dropping the controller and every [`Namespace`]) shuts
//! the controller down with CC.SHN, waits for CSTS.SHST, and closes the queues.
//!
//! Each queue is one queue pair with a completion thread that matches responses to
//! commands by command identifier. Data moves through keyed SGLs over buffers each queue
//! registers once and rekeys per command ([`iwarp::MemoryRegion::rekey`]: a fresh STag each
//! time, as a fast registration gives); a response that arrives as a Send with Invalidate
//! must invalidate that STag, and a buffer is invalid whenever no command holds it. Writes that
//! fit the target's in-capsule data size travel in the command capsule on I/O queues
//! (Fabrics commands always use a keyed SGL).
//!
//! Not done: reconnection or controller reset after a failure or a timed-out command (the
//! command fails, and a failed queue fails every later command), metadata and protection
//! information, namespaces other than the one attached, Identify CNS 6.

mod cmd;
mod queue;

use crate::block::{check_range, BlockDevice};
use crate::wire::{self, property};
use iwarp::{Device, DeviceConfig, ProtectionDomain};
use queue::{Data, Queue, QueueConfig, Ticket};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::wire::Status;
use queue::Completion;

/// Admin queue depth (entries), as a Linux host uses.
const ADMIN_QUEUE_SIZE: u16 = 32;
/// The largest transfer one command carries, whatever the controller's MDTS allows.
const MAX_TRANSFER: usize = 1 << 20;
/// How long an Asynchronous Event Request may be held (it is never waited for).
const AER_HOLD: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most in-capsule data a write carries, whatever the controller's IOCCSZ allows.
const MAX_IN_CAPSULE: usize = 8192;

/// How to attach a controller.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// I/O queues to ask for (each its own connection); the controller may grant fewer.
    pub io_queues: u16,
    /// Entries of each I/O queue (clamped to the controller's CAP.MQES + 1).
    pub queue_size: u16,
    /// Keep-alive timeout sent in Connect; Keep Alive goes out every half of it. Zero
    /// disables keep alive.
    pub kato: Duration,
    /// This host's NQN.
    pub hostnqn: String,
    /// This host's identifier (16 bytes, sent in Connect).
    pub hostid: [u8; 16],
    /// How long a command may take before it fails with [`io::ErrorKind::TimedOut`].
    pub command_timeout: Duration,
    /// How long each queue's connection setup may take.
    pub connect_timeout: Duration,
    /// The namespace to attach (`None`: the first active one).
    pub nsid: Option<u32>,
    /// Ask for MPA CRC32c on every queue's connection (the target may still insist on it).
    pub crc: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            io_queues: 4,
            queue_size: 128,
            kato: Duration::from_secs(5),
            hostnqn: default_hostnqn(),
            hostid: default_hostid(),
            command_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            nsid: None,
            crc: true,
        }
    }
}

/// A host NQN of the UUID form (`nqn.2014-08.org.nvmexpress:uuid:...`), made from the host
/// identifier.
pub fn default_hostnqn() -> String {
    let id = default_hostid();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "nqn.2014-08.org.nvmexpress:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A host identifier derived from the machine id (`/etc/machine-id`) when there is one,
/// otherwise from the process id and the clock.
pub fn default_hostid() -> [u8; 16] {
    let mut id = [0u8; 16];
    let text = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let hex: Vec<u8> = text.trim().bytes().collect();
    if hex.len() >= 32 {
        for (i, b) in id.iter_mut().enumerate() {
            let s = std::str::from_utf8(&hex[2 * i..2 * i + 2]).unwrap_or("00");
            *b = u8::from_str_radix(s, 16).unwrap_or(0);
        }
    } else {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            ^ u128::from(std::process::id());
        id = seed.to_le_bytes();
    }
    // RFC 4122 version 4 and variant bits, so the NQN is a well-formed UUID.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Why attaching (or a command of the attach sequence) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The local iWARP device could not be opened or set up.
    #[error("iWARP device: {0}")]
    Device(#[from] iwarp::Error),
    /// The connection of a queue failed (refused, timed out, MPA failure).
    #[error("queue {qid}: connection failed: {source}")]
    Transport {
        /// The queue.
        qid: u16,
        /// The stack's error.
        source: iwarp::ConnectError,
    },
    /// The target rejected the connection of a queue (RDMA CM reject).
    #[error("queue {qid}: connection rejected by the target: {reason}")]
    Rejected {
        /// The queue.
        qid: u16,
        /// The reject's status, named.
        reason: String,
    },
    /// Fabrics Connect of a queue completed with an error status.
    #[error("queue {qid}: Fabrics Connect failed: {}", cmd::status_text(*status))]
    Connect {
        /// The queue.
        qid: u16,
        /// The completion's status.
        status: Status,
    },
    /// An admin command of the attach sequence completed with an error status.
    #[error("{command} failed: {}", cmd::status_text(*status))]
    Command {
        /// The command.
        command: &'static str,
        /// The completion's status.
        status: Status,
    },
    /// The controller does not offer what this host needs, or misbehaved.
    #[error("controller: {0}")]
    Controller(String),
    /// A transport failure or a timeout.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What Identify Controller and the registers said, as this host uses it.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    /// The controller identifier Connect returned.
    pub cntlid: u16,
    /// The subsystem NQN attached.
    pub subnqn: String,
    /// CAP, as Property Get returned it.
    pub cap: u64,
    /// VS (version: major in bits 31:16, minor in 15:8).
    pub vs: u32,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// The largest transfer of one command, in bytes (MDTS, capped by this host).
    pub max_transfer: usize,
    /// Bytes of in-capsule data a write may carry on I/O queues (0: none).
    pub in_capsule: usize,
    /// I/O queues in use.
    pub io_queues: u16,
    /// Entries of each I/O queue.
    pub queue_size: u16,
    /// Whether the controller has a volatile write cache (Flush is sent only then).
    pub volatile_write_cache: bool,
    /// Whether the controller supports Write Zeroes.
    pub write_zeroes: bool,
}

/// An attached controller. Cheap to clone; shut down by [`disconnect`](Self::disconnect),
/// or when it and every [`Namespace`] of it have been dropped.
#[derive(Debug, Clone)]
pub struct Controller {
    inner: Arc<CtrlInner>,
}

#[derive(Debug)]
struct CtrlInner {
    info: ControllerInfo,
    ns: NamespaceInfo,
    admin: Arc<Queue>,
    io: Vec<Arc<Queue>>,
    next_queue: AtomicUsize,
    timeout: Duration,
    shut: AtomicBool,
    keepalive: Mutex<Option<(Arc<StopFlag>, JoinHandle<()>)>>,
    /// The Asynchronous Event Request held at the controller.
    aer: Mutex<Option<Ticket>>,
    /// Serializes the read-modify-write of unaligned writes.
    rmw: Mutex<()>,
    _pd: ProtectionDomain,
    _dev: Device,
}

/// A flag and its condition variable: tells the keep-alive thread to stop.
type StopFlag = (Mutex<bool>, Condvar);

/// What Identify Namespace said about the attached namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace identifier.
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Logical block size in bytes (from the LBA format in use).
    pub block_size: u32,
    /// The namespace's UUID, if its identification descriptors have one.
    pub uuid: Option<[u8; 16]>,
}

impl Controller {
    /// Attaches the controller of subsystem `nqn` at `addr`, as described in the module docs.
    ///
    /// # Errors
    /// [`HostError`]: the connection failed or was rejected, Fabrics Connect was refused (the
    /// status names why, e.g. an unknown subsystem NQN), the controller did not become ready,
    /// lacks keyed SGLs or has no namespace, or a command timed out.
    pub fn connect(addr: SocketAddr, nqn: &str, opts: &HostOptions) -> Result<Controller, HostError> {
        let span = tracing::debug_span!("nvmf_host", %addr, nqn);
        let _enter = span.enter();
        let dev = Device::open(DeviceConfig::default())?;
        let pd = dev.alloc_pd();
        let timeout = opts.command_timeout;
        let kato_ms = u32::try_from(opts.kato.as_millis()).unwrap_or(u32::MAX);

        let admin_cfg = QueueConfig {
            qid: 0,
            size: ADMIN_QUEUE_SIZE,
            in_capsule: 0,
            connect_timeout: opts.connect_timeout,
            crc: opts.crc,
        };
        let admin = Queue::connect(&dev, &pd, addr, &admin_cfg)?;
        let connect = |q: &Queue, cntlid: u16| -> Result<u16, HostError> {
            let data = wire::ConnectData {
                hostid: opts.hostid,
                cntlid,
                subnqn: nqn.to_string(),
                hostnqn: opts.hostnqn.clone(),
            }
            .to_bytes();
            let sqsize = q.size() - 1;
            let cmd = cmd::connect(q.qid(), sqsize, kato_ms);
            let c = q.execute(cmd, Data::ToController(&data), timeout)?;
            if !c.status.is_success() {
                return Err(HostError::Connect { qid: q.qid(), status: c.status });
            }
            Ok(c.result as u16)
        };
        let cntlid = connect(&admin, 0xFFFF)?;
        tracing::debug!(cntlid, "admin queue connected");

        let admin_cmd = |name: &'static str, cmd: wire::Command, data: Data<'_>| -> Result<Completion, HostError> {
            let c = admin.execute(cmd, data, timeout)?;
            if !c.status.is_success() {
                return Err(HostError::Command { command: name, status: c.status });
            }
            Ok(c)
        };
        let get = |name, offset: u32, eight: bool| -> Result<u64, HostError> {
            Ok(admin_cmd(name, cmd::property_get(offset, eight), Data::None)?.result)
        };
        let set = |name, offset: u32, value: u64| -> Result<(), HostError> {
            admin_cmd(name, cmd::property_set(offset, false, value), Data::None).map(|_| ())
        };

        // Enable the controller and wait for CSTS.RDY (up to CAP.TO, in 500 ms units).
        let cap = get("Property Get CAP", property::CAP, true)?;
        let mqes = (cap & 0xffff) as u16;
        let ready_timeout = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(2));
        let mps_min = 4096usize << ((cap >> 48) & 0xf);
        let cc = property::cc::enable_value();
        set("Property Set CC", property::CC, u64::from(cc))?;
        let cc_now = get("Property Get CC", property::CC, false)? as u32;
        if !property::cc::enabled(cc_now) {
            return Err(HostError::Controller(format!("CC reads {cc_now:#x} after enabling")));
        }
        let start = Instant::now();
        loop {
            let csts = get("Property Get CSTS", property::CSTS, false)? as u32;
            if csts & property::csts::CFS != 0 {
                return Err(HostError::Controller("controller fatal status (CSTS.CFS) while enabling".into()));
            }
            if csts & property::csts::RDY != 0 {
                break;
            }
            if start.elapsed() > ready_timeout {
                return Err(HostError::Controller(format!("CSTS.RDY not set within {ready_timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let vs = get("Property Get VS", property::VS, false)? as u32;

        // Identify Controller.
        let mut idbuf = vec![0u8; 4096];
        admin_cmd("Identify Controller", cmd::identify(wire::cns::CONTROLLER, 0), Data::FromController(&mut idbuf))?;
        let id = wire::IdentifyController::parse(&idbuf)
            .map_err(|e| HostError::Controller(format!("Identify Controller: {e}")))?;
        if id.sgls & 3 == 0 || id.sgls & wire::sgls::KEYED == 0 {
            return Err(HostError::Controller("no keyed SGL data block support (SGLS bit 2)".into()));
        }
        let max_transfer = match id.mdts {
            0 => MAX_TRANSFER,
            m => (mps_min << u32::from(m).min(20)).min(MAX_TRANSFER),
        };
        let in_capsule = if id.sgls & wire::sgls::OFFSET != 0 {
            (id.ioccsz as usize * 16).saturating_sub(64).min(MAX_IN_CAPSULE)
        } else {
            0
        };

        // The SMART / health log, as a Linux host reads it; a failure is only worth a warning.
        let mut smart = vec![0u8; 512];
        match admin.execute(cmd::get_log_page(wire::log_page::SMART, 512), Data::FromController(&mut smart), timeout) {
            Ok(c) if c.status.is_success() => tracing::debug!(critical_warning = smart[0], "SMART log"),
            Ok(c) => tracing::warn!(status = %cmd::status_text(c.status), "Get Log Page SMART failed"),
            Err(e) => return Err(e.into()),
        }

        // Number of Queues (0's based on the wire).
        let want = opts.io_queues.max(1);
        let c =
            admin_cmd("Set Features Number of Queues", cmd::set_features_num_queues(want - 1, want - 1), Data::None)?;
        let granted = ((c.result & 0xffff) as u16).min((c.result >> 16) as u16).saturating_add(1);
        let io_queues = want.min(granted);

        // Namespaces: the active list (VS 1.1 and later), then Identify Namespace.
        let nsid = match opts.nsid {
            Some(n) => n,
            None if vs >= 0x0001_0100 => {
                let mut list = vec![0u8; 4096];
                admin_cmd(
                    "Identify Active Namespace List",
                    cmd::identify(wire::cns::ACTIVE_NS_LIST, 0),
                    Data::FromController(&mut list),
                )?;
                match wire::parse_active_ns_list(&list).first() {
                    Some(&first) => first,
                    None => return Err(HostError::Controller("no active namespace".into())),
                }
            }
            None => 1,
        };
        // The Namespace Identification Descriptor list (VS 1.3 and later): a Linux host skips
        // a namespace whose list it cannot read, and so does this one.
        let mut uuid = None;
        if vs >= 0x0001_0300 {
            let mut descs = vec![0u8; 4096];
            admin_cmd(
                "Identify Namespace Identification Descriptor list",
                cmd::identify(wire::cns::NS_DESC_LIST, nsid),
                Data::FromController(&mut descs),
            )?;
            uuid = wire::parse_ns_desc_list(&descs)
                .into_iter()
                .find(|(t, v)| *t == wire::nidt::UUID && v.len() == 16)
                .and_then(|(_, v)| <[u8; 16]>::try_from(v).ok());
        }
        let mut nsbuf = vec![0u8; 4096];
        admin_cmd("Identify Namespace", cmd::identify(wire::cns::NAMESPACE, nsid), Data::FromController(&mut nsbuf))?;
        let nsid_info = wire::IdentifyNamespace::parse(&nsbuf)
            .map_err(|e| HostError::Controller(format!("Identify Namespace {nsid}: {e}")))?;
        let block_size = 1u32.checked_shl(u32::from(nsid_info.lbads)).unwrap_or(0);
        if nsid_info.blocks == 0 || !(512..=(1 << 16)).contains(&block_size) {
            return Err(HostError::Controller(format!(
                "namespace {nsid}: {} blocks of {block_size} bytes is not usable",
                nsid_info.blocks
            )));
        }
        let ns = NamespaceInfo { nsid, blocks: nsid_info.blocks, block_size, uuid };

        // I/O queues.
        let queue_size = opts.queue_size.clamp(2, mqes.saturating_add(1).max(2));
        let mut io = Vec::new();
        for qid in 1..=io_queues {
            let cfg =
                QueueConfig { qid, size: queue_size, in_capsule, connect_timeout: opts.connect_timeout, crc: opts.crc };
            let q = Queue::connect(&dev, &pd, addr, &cfg)?;
            connect(&q, cntlid)?;
            io.push(Arc::new(q));
        }
        tracing::debug!(io_queues, queue_size, max_transfer, in_capsule, "controller attached");

        let info = ControllerInfo {
            cntlid,
            subnqn: id.subnqn.clone(),
            cap,
            vs,
            serial: id.serial.clone(),
            model: id.model.clone(),
            firmware: id.firmware.clone(),
            max_transfer,
            in_capsule,
            io_queues,
            queue_size,
            volatile_write_cache: id.vwc & 1 != 0,
            write_zeroes: id.oncs & (1 << 3) != 0,
        };
        let inner = Arc::new(CtrlInner {
            info,
            ns,
            admin: Arc::new(admin),
            io,
            next_queue: AtomicUsize::new(0),
            timeout,
            shut: AtomicBool::new(false),
            keepalive: Mutex::new(None),
            aer: Mutex::new(None),
            rmw: Mutex::new(()),
            _pd: pd,
            _dev: dev,
        });
        inner.arm_aer();
        if !opts.kato.is_zero() {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let weak = Arc::downgrade(&inner);
            let period = opts.kato / 2;
            let s = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name("nvmf-keepalive".into())
                .spawn(move || keep_alive(weak, period, s))
                .map_err(HostError::Io)?;
            *lock(&inner.keepalive) = Some((stop, handle));
        }
        Ok(Controller { inner })
    }

    /// What the controller said about itself.
    pub fn info(&self) -> &ControllerInfo {
        &self.inner.info
    }

    /// The attached namespace, as a block device.
    pub fn namespace(&self) -> Namespace {
        Namespace { ctrl: Arc::clone(&self.inner) }
    }

    /// Shuts the controller down (CC.SHN, then waiting for CSTS.SHST to say complete) and
    /// closes every queue. I/O on its namespaces fails afterwards. Calling it again does
    /// nothing.
    ///
    /// # Errors
    /// [`HostError`] if the shutdown commands failed; the queues are closed anyway.
    pub fn disconnect(&self) -> Result<(), HostError> {
        self.inner.shutdown()
    }
}

impl CtrlInner {
    fn shutdown(&self) -> Result<(), HostError> {
        if self.shut.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some((stop, handle)) = lock(&self.keepalive).take() {
            *lock(&stop.0) = true;
            stop.1.notify_all();
            // The keep-alive thread may itself hold the last handle (it upgrades its weak one
            // for each Keep Alive): it then ends on its own after this returns.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        let r = self.shutdown_controller();
        for q in &self.io {
            q.close();
        }
        self.admin.close();
        if let Err(e) = &r {
            tracing::debug!(error = %e, "controller shutdown");
        }
        r
    }

    fn shutdown_controller(&self) -> Result<(), HostError> {
        let timeout = self.timeout.min(Duration::from_secs(5));
        let cc = property::cc::enable_value() | property::cc::SHN_NORMAL;
        let c = self.admin.execute(cmd::property_set(property::CC, false, u64::from(cc)), Data::None, timeout)?;
        if !c.status.is_success() {
            return Err(HostError::Command { command: "Property Set CC.SHN", status: c.status });
        }
        let start = Instant::now();
        loop {
            let c = self.admin.execute(cmd::property_get(property::CSTS, false), Data::None, timeout)?;
            if !c.status.is_success() {
                return Err(HostError::Command { command: "Property Get CSTS", status: c.status });
            }
            if (c.result as u32) & property::csts::SHST_MASK == property::csts::SHST_COMPLETE {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(HostError::Controller("shutdown not complete (CSTS.SHST) in time".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Submits an Asynchronous Event Request for the controller to hold (and complete when
    /// it has an event to report).
    fn arm_aer(&self) {
        match self.admin.submit(cmd::async_event_request(), Data::None, AER_HOLD) {
            Ok(t) => *lock(&self.aer) = Some(t),
            Err(e) => tracing::debug!(error = %e, "Asynchronous Event Request not submitted"),
        }
    }

    /// Logs a completed Asynchronous Event Request and submits the next one (not after an
    /// error status: the controller does not want them).
    fn check_aer(&self) {
        let done = {
            let mut aer = lock(&self.aer);
            match aer.as_ref().and_then(Ticket::try_take) {
                Some(r) => {
                    *aer = None;
                    r
                }
                None => return,
            }
        };
        match done {
            Ok(c) if c.status.is_success() => {
                let dw0 = c.result as u32;
                tracing::info!(
                    event_type = dw0 & 7,
                    event_info = (dw0 >> 8) & 0xff,
                    log_page = (dw0 >> 16) & 0xff,
                    "asynchronous event"
                );
                self.arm_aer();
            }
            Ok(c) => tracing::debug!(status = %cmd::status_text(c.status), "Asynchronous Event Request refused"),
            Err(e) => tracing::debug!(error = %e, "Asynchronous Event Request failed"),
        }
    }

    fn next_io_queue(&self) -> &Arc<Queue> {
        let i = self.next_queue.fetch_add(1, Ordering::Relaxed);
        &self.io[i % self.io.len()]
    }
}

impl Drop for CtrlInner {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Sends Keep Alive every `period` until told to stop or the controller is gone.
fn keep_alive(ctrl: Weak<CtrlInner>, period: Duration, stop: Arc<StopFlag>) {
    loop {
        {
            let mut stopped = lock(&stop.0);
            let deadline = Instant::now() + period;
            while !*stopped {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                stopped = stop.1.wait_timeout(stopped, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            if *stopped {
                return;
            }
        }
        let Some(ctrl) = ctrl.upgrade() else { return };
        ctrl.check_aer();
        match ctrl.admin.execute(cmd::keep_alive(), Data::None, ctrl.timeout) {
            Ok(c) if c.status.is_success() => tracing::trace!("keep alive"),
            Ok(c) => tracing::warn!(status = %cmd::status_text(c.status), "Keep Alive failed"),
            Err(e) => {
                tracing::warn!(error = %e, "Keep Alive failed");
                if ctrl.admin.is_dead() {
                    return;
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The attached namespace: a [`BlockDevice`] whose reads and writes become NVMe Read and
/// Write commands, split at the controller's largest transfer and spread over the I/O
/// queues, all in flight together (up to each queue's depth).
///
/// Offsets and lengths that are multiples of the block size go straight to the
/// controller. Unaligned reads read the covering blocks and copy the part asked for;
/// unaligned writes read the partial first and last blocks, merge, and write whole blocks
/// (read-modify-write). Unaligned writes are serialized with each other, but not with
/// aligned writes to the same blocks: a caller that races those gets either's bytes in the
/// shared blocks, as with any disk whose sectors are larger than its writes.
///
/// Errors are [`io::Error`]s: a command's NVMe status (named in the message) is
/// [`io::ErrorKind::Other`] (`InvalidInput` for an LBA out of range), a command that did
/// not complete within the command timeout is [`io::ErrorKind::TimedOut`], a queue whose
/// connection failed gives [`io::ErrorKind::NotConnected`].
#[derive(Debug, Clone)]
pub struct Namespace {
    ctrl: Arc<CtrlInner>,
}

impl Namespace {
    /// What Identify Namespace said.
    pub fn info(&self) -> NamespaceInfo {
        self.ctrl.ns
    }

    /// The controller this namespace belongs to.
    pub fn controller(&self) -> Controller {
        Controller { inner: Arc::clone(&self.ctrl) }
    }

    fn live(&self) -> io::Result<()> {
        if self.ctrl.shut.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "controller disconnected"));
        }
        Ok(())
    }

    /// Reads whole blocks: `buf.len()` and `offset` are multiples of the block size.
    fn read_blocks(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (nsid, bs) = (self.ctrl.ns.nsid, u64::from(self.ctrl.ns.block_size));
        self.pipeline(
            offset,
            buf.chunks_mut(self.chunk()),
            |q, off, piece: &&mut [u8]| {
                let cmd = cmd::read(nsid, off / bs, (piece.len() as u64 / bs) as u16 - 1);
                q.submit(cmd, Data::FromControllerLen(piece.len()), self.ctrl.timeout)
            },
            |c, piece| c.copy_data_to(piece),
        )
    }

    /// Writes whole blocks: `buf.len()` and `offset` are multiples of the block size.
    fn write_blocks(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (nsid, bs) = (self.ctrl.ns.nsid, u64::from(self.ctrl.ns.block_size));
        self.pipeline(
            offset,
            buf.chunks(self.chunk()),
            |q, off, piece: &&[u8]| {
                let cmd = cmd::write(nsid, off / bs, (piece.len() as u64 / bs) as u16 - 1);
                q.submit(cmd, Data::ToController(piece), self.ctrl.timeout)
            },
            |_, _| {},
        )
    }

    /// Issues one command per piece of one [`chunk`](Self::chunk) (the pieces lie end to end
    /// from `offset`), round robin over the I/O queues with up to [`window`](Self::window) in
    /// flight, and hands each successful completion with its piece to `done`, in order. After
    /// the first failure nothing more is issued; what is in flight is collected, and that
    /// failure returned.
    fn pipeline<P>(
        &self,
        offset: u64,
        pieces: impl Iterator<Item = P>,
        submit: impl Fn(&Queue, u64, &P) -> io::Result<queue::Ticket>,
        mut done: impl FnMut(Completion, P),
    ) -> io::Result<()> {
        self.live()?;
        let (chunk, window) = (self.chunk() as u64, self.window());
        let mut pending = std::collections::VecDeque::new();
        let mut pieces = pieces.enumerate();
        loop {
            while pending.len() < window {
                let Some((i, piece)) = pieces.next() else { break };
                let q = Arc::clone(self.ctrl.next_io_queue());
                match submit(&q, offset + i as u64 * chunk, &piece) {
                    Ok(t) => pending.push_back((t, piece)),
                    Err(e) => return Self::drain(pending, e),
                }
            }
            let Some((t, piece)) = pending.pop_front() else { return Ok(()) };
            match t.wait().and_then(status_to_io) {
                Ok(c) => done(c, piece),
                Err(e) => return Self::drain(pending, e),
            }
        }
    }

    /// Collects the commands still in flight after `err`, and returns it.
    fn drain<P>(pending: std::collections::VecDeque<(queue::Ticket, P)>, err: io::Error) -> io::Result<()> {
        for (t, _) in pending {
            let _ = t.wait();
        }
        Err(err)
    }

    /// Bytes of one command: the largest transfer, in whole blocks (at least one).
    fn chunk(&self) -> usize {
        let bs = self.ctrl.ns.block_size as usize;
        (self.ctrl.info.max_transfer / bs).clamp(1, 1 << 16) * bs
    }

    /// Commands one call keeps in flight: every I/O queue's depth.
    fn window(&self) -> usize {
        self.ctrl.io.iter().map(|q| q.depth()).sum::<usize>().max(1)
    }

    /// The block-aligned span covering `[offset, offset + len)`.
    fn covering(&self, offset: u64, len: u64) -> (u64, u64) {
        let bs = u64::from(self.ctrl.ns.block_size);
        let start = offset / bs * bs;
        let end = (offset + len).div_ceil(bs) * bs;
        (start, end)
    }
}

/// A completion with an error status as an [`io::Error`] naming it.
fn status_to_io(c: Completion) -> io::Result<Completion> {
    if c.status.is_success() {
        return Ok(c);
    }
    let lba_out_of_range = c.status.sct == wire::sct::GENERIC && c.status.sc == Status::LBA_OUT_OF_RANGE.sc;
    let kind = if lba_out_of_range { io::ErrorKind::InvalidInput } else { io::ErrorKind::Other };
    Err(io::Error::new(kind, format!("NVMe command failed: {}", cmd::status_text(c.status))))
}

impl BlockDevice for Namespace {
    fn size(&self) -> u64 {
        self.ctrl.ns.blocks * u64::from(self.ctrl.ns.block_size)
    }

    fn block_size(&self) -> u32 {
        self.ctrl.ns.block_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (start, end) = self.covering(offset, buf.len() as u64);
        if start == offset && end == offset + buf.len() as u64 {
            return self.read_blocks(buf, offset);
        }
        let mut whole = vec![0u8; (end - start) as usize];
        self.read_blocks(&mut whole, start)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&whole[skip..skip + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (start, end) = self.covering(offset, buf.len() as u64);
        if start == offset && end == offset + buf.len() as u64 {
            return self.write_blocks(buf, offset);
        }
        let _serial = lock(&self.ctrl.rmw);
        let bs = u64::from(self.ctrl.ns.block_size);
        let mut whole = vec![0u8; (end - start) as usize];
        // Only the partial first and last blocks need their old contents.
        self.read_blocks(&mut whole[..bs as usize], start)?;
        if end - start > bs {
            let last = (end - start - bs) as usize;
            self.read_blocks(&mut whole[last..], end - bs)?;
        }
        let skip = (offset - start) as usize;
        whole[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_blocks(&whole, start)
    }

    fn flush(&self) -> io::Result<()> {
        self.live()?;
        if !self.ctrl.info.volatile_write_cache {
            return Ok(());
        }
        let q = self.ctrl.next_io_queue();
        q.execute(cmd::flush(self.ctrl.ns.nsid), Data::None, self.ctrl.timeout).and_then(status_to_io)?;
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size(), offset, len)?;
        let bs = u64::from(self.ctrl.ns.block_size);
        if !self.ctrl.info.write_zeroes || !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            // The trait's default: plain writes of zeros.
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                self.write_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            return Ok(());
        }
        self.live()?;
        let mut lba = offset / bs;
        let mut left = len / bs;
        while left > 0 {
            let n = left.min(1 << 16);
            let q = self.ctrl.next_io_queue();
            q.execute(cmd::write_zeroes(self.ctrl.ns.nsid, lba, (n - 1) as u16), Data::None, self.ctrl.timeout)
                .and_then(status_to_io)?;
            lba += n;
            left -= n;
        }
        Ok(())
    }
}
