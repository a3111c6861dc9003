//! The subsystem and its controllers: state shared by a controller's queues (properties,
//! features, keep alive), and the admin commands that need no data from the host.

use super::TargetConfig;
use crate::block::BlockDevice;
use crate::wire::{self, property, IdentifyController, IdentifyNamespace, Status, IDENTIFY_LEN};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The one namespace's id.
pub(crate) const NSID: u32 = 1;

/// The subsystem: configuration, the namespace's device, the live controllers.
pub(crate) struct Subsystem {
    pub config: TargetConfig,
    pub device: Arc<dyn BlockDevice>,
    controllers: Mutex<HashMap<u16, Arc<Controller>>>,
    next_cntlid: AtomicU16,
}

impl Subsystem {
    pub fn new(config: TargetConfig, device: Arc<dyn BlockDevice>) -> Self {
        Subsystem { config, device, controllers: Mutex::new(HashMap::new()), next_cntlid: AtomicU16::new(1) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Arc<Controller>>> {
        self.controllers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn controller_count(&self) -> usize {
        self.map().len()
    }

    /// A new controller for `hostnqn`, or `None` when every id is taken.
    pub fn add_controller(&self, hostnqn: String, kato_ms: u32) -> Option<Arc<Controller>> {
        let mut map = self.map();
        // Controller ids 1..=0xFFEF (0xFFF0.. are reserved, 0xFFFF asks for a dynamic one).
        for _ in 0..0xFFEF {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            if id == 0 || id > 0xFFEF {
                self.next_cntlid.store(1, Ordering::Relaxed);
                continue;
            }
            if map.contains_key(&id) {
                continue;
            }
            let c = Arc::new(Controller::new(id, hostnqn, kato_ms));
            map.insert(id, Arc::clone(&c));
            return Some(c);
        }
        None
    }

    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.map().get(&cntlid).filter(|c| !c.is_dead()).cloned()
    }

    /// Ends controller `c`: its queues disconnect at their next tick.
    pub fn remove_controller(&self, c: &Controller) {
        c.kill();
        let mut map = self.map();
        if map.get(&c.cntlid).is_some_and(|m| std::ptr::eq(&**m, c)) {
            map.remove(&c.cntlid);
        }
    }

    pub fn blocks(&self) -> u64 {
        self.device.size() / u64::from(self.device.block_size())
    }

    pub fn identify_controller(&self, cntlid: u16) -> Box<[u8; IDENTIFY_LEN]> {
        let c = &self.config;
        IdentifyController {
            serial: c.serial.clone(),
            model: "iwarp-nvmf".into(),
            firmware: env!("CARGO_PKG_VERSION").chars().take(8).collect(),
            mdts: c.mdts,
            cntlid,
            ver: VERSION,
            aerl: c.aerl,
            kas: KAS,
            maxcmd: c.max_queue_entries,
            nn: 1,
            oncs: wire::ONCS_WRITE_ZEROES,
            vwc: 1,
            sgls: wire::sgls::SUPPORTED | wire::sgls::KEYED | wire::sgls::OFFSET,
            subnqn: c.nqn.clone(),
            ioccsz: (wire::SQE_LEN as u32 + c.in_capsule_data) / 16,
            iorcsz: (wire::CQE_LEN / 16) as u32,
        }
        .to_page()
    }

    pub fn identify_namespace(&self) -> Box<[u8; IDENTIFY_LEN]> {
        IdentifyNamespace {
            blocks: self.blocks(),
            lbads: self.device.block_size().trailing_zeros() as u8,
            nguid: self.nguid(),
        }
        .to_page()
    }

    /// A namespace GUID derived from the NQN (FNV-1a, twice), stable across runs.
    pub fn nguid(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (half, seed) in [(0usize, 0xcbf29ce484222325u64), (8, 0x84222325cbf29ce4)] {
            let mut h = seed;
            for b in self.config.nqn.bytes().chain(NSID.to_le_bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100000001b3);
            }
            out[half..half + 8].copy_from_slice(&h.to_be_bytes());
        }
        out
    }

    pub fn uuid(&self) -> [u8; 16] {
        let mut u = self.nguid();
        u[6] = (u[6] & 0x0F) | 0x40; // version 4 layout
        u[8] = (u[8] & 0x3F) | 0x80; // RFC 4122 variant
        u
    }
}

/// NVMe version the controller reports: 1.3.
pub(crate) const VERSION: u32 = 0x0001_0300;
/// Keep-alive granularity: 100 ms units (1 = 100 ms).
pub(crate) const KAS: u16 = 1;

/// A controller: what its queues share.
pub(crate) struct Controller {
    pub cntlid: u16,
    pub hostnqn: String,
    pub cc: AtomicU32,
    pub csts: AtomicU32,
    kato_ms: AtomicU32,
    last_keep_alive: Mutex<Instant>,
    dead: AtomicBool,
    /// Granted I/O queues (Number of Queues), 1-based; 0 until set.
    pub io_queues: AtomicU16,
    /// qids of connected I/O queues.
    pub queues: Mutex<BTreeSet<u16>>,
    /// Asynchronous Event Requests held.
    pub aers: AtomicU16,
    /// Asynchronous Event Configuration (Set Features 0x0B).
    pub aec: AtomicU32,
}

impl Controller {
    fn new(cntlid: u16, hostnqn: String, kato_ms: u32) -> Self {
        Controller {
            cntlid,
            hostnqn,
            cc: AtomicU32::new(0),
            csts: AtomicU32::new(0),
            kato_ms: AtomicU32::new(kato_ms),
            last_keep_alive: Mutex::new(Instant::now()),
            dead: AtomicBool::new(false),
            io_queues: AtomicU16::new(0),
            queues: Mutex::new(BTreeSet::new()),
            aers: AtomicU16::new(0),
            aec: AtomicU32::new(0),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        let cc = self.cc.load(Ordering::Acquire);
        let csts = self.csts.load(Ordering::Acquire);
        property::cc::enabled(cc) && property::csts::ready(csts)
    }

    pub fn keep_alive(&self) {
        *self.last_keep_alive.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Acquire)
    }

    pub fn set_kato_ms(&self, ms: u32) {
        self.kato_ms.store(ms, Ordering::Release);
        self.keep_alive();
    }

    /// Whether the keep-alive timer ran out at `now`.
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        let kato = self.kato_ms();
        if kato == 0 {
            return false;
        }
        let last = *self.last_keep_alive.lock().unwrap_or_else(|e| e.into_inner());
        now.saturating_duration_since(last) > Duration::from_millis(u64::from(kato))
    }

    /// CAP for queues up to `entries`.
    pub fn cap(entries: u16) -> u64 {
        // TO: 500 ms units the host waits for CSTS.RDY; readiness here is immediate.
        property::cap::build(entries.saturating_sub(1), 10)
    }

    /// Property Get: the value, or Invalid Field for an unknown offset or a wrong size.
    pub fn property_get(&self, size: wire::PropertySize, offset: u32, entries: u16) -> Result<u64, Status> {
        use wire::PropertySize::{Eight, Four};
        match (offset, size) {
            (property::CAP, Eight) => Ok(Self::cap(entries)),
            (property::CAP, Four) => Ok(Self::cap(entries) & 0xFFFF_FFFF),
            (property::VS, Four) => Ok(u64::from(VERSION)),
            (property::CC, Four) => Ok(u64::from(self.cc.load(Ordering::Acquire))),
            (property::CSTS, Four) => Ok(u64::from(self.csts.load(Ordering::Acquire))),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// Property Set: only CC is writable. EN 0→1 makes the controller ready (or fatal, for
    /// queue entry sizes other than 64/16 bytes); EN 1→0 resets it; a shutdown notification
    /// completes at once.
    pub fn property_set(&self, size: wire::PropertySize, offset: u32, value: u64) -> Result<(), Status> {
        use property::{cc, csts};
        if offset != property::CC || size != wire::PropertySize::Four {
            return Err(Status::INVALID_FIELD);
        }
        let new = value as u32;
        let old = self.cc.swap(new, Ordering::AcqRel);
        let mut st = self.csts.load(Ordering::Acquire);
        if cc::enabled(new) && !cc::enabled(old) {
            if cc::iosqes(new) != 6 || cc::iocqes(new) != 4 {
                st |= csts::CFS;
            } else {
                st |= csts::RDY;
            }
        } else if !cc::enabled(new) && cc::enabled(old) {
            st &= !(csts::RDY | csts::SHST_MASK | csts::CFS);
        }
        if cc::shn(new) != 0 && cc::shn(old) == 0 {
            st = (st & !csts::SHST_MASK) | csts::SHST_COMPLETE;
        } else if cc::shn(new) == 0 {
            st &= !csts::SHST_MASK;
        }
        self.csts.store(st, Ordering::Release);
        Ok(())
    }
}
