//! The objects behind the C handles, and the rules between them.
//!
//! Every object an application holds is a C structure the `ffi` module allocated; its address
//! is the key of an entry in one registry. An entry knows its kind, its context, the objects
//! it depends on and how many objects depend on it. Every call looks its handles up here
//! first, so a pointer that is NULL, stale, of another kind or of another context is refused
//! with `EINVAL` before anything is read through it, and an object something still uses
//! cannot be destroyed (`EBUSY`).

use iwarp::{
    CompletionChannel, CompletionQueue, Device, DeviceConfig, MemoryRegion, ProtectionDomain, QueuePair,
    SharedReceiveQueue,
};
use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// An errno value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

impl Errno {
    pub(crate) const INVAL: Errno = Errno(libc::EINVAL);
    pub(crate) const BUSY: Errno = Errno(libc::EBUSY);
    pub(crate) const NOMEM: Errno = Errno(libc::ENOMEM);
    pub(crate) const NOTSUP: Errno = Errno(libc::EOPNOTSUPP);
    pub(crate) const AGAIN: Errno = Errno(libc::EAGAIN);
    pub(crate) const BADF: Errno = Errno(libc::EBADF);
}

pub(crate) type Res<T> = Result<T, Errno>;

/// The address of an object's C structure (for a context: of its `struct ibv_context`).
pub(crate) type Addr = usize;

/// What a registered address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    DeviceList,
    Context,
    Pd,
    Mr,
    Cq,
    Channel,
    Srq,
    Qp,
}

/// A context: the application's handle on the device.
pub(crate) struct Ctx {
    /// The stream whose other end is the context's `async_fd`: readable while an
    /// asynchronous event waits.
    async_tx: Mutex<UnixStream>,
    /// The end given to the application as `async_fd` (also its `cmd_fd`).
    pub(crate) async_rx: UnixStream,
    events: Mutex<VecDeque<AsyncEvent>>,
    queued: Condvar,
    /// Events handed out and not yet acknowledged.
    pub(crate) unacked_events: AtomicU32,
}

/// An asynchronous event, as `ibv_get_async_event` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AsyncEvent {
    /// `enum ibv_event_type`.
    pub(crate) event_type: u32,
    /// The object it concerns (a QP, CQ or SRQ address), or the port number.
    pub(crate) element: usize,
}

pub(crate) struct Pd {
    pub(crate) pd: ProtectionDomain,
}

pub(crate) struct Mr {
    pub(crate) mr: MemoryRegion,
}

pub(crate) struct Cq {
    pub(crate) cq: CompletionQueue,
    /// The completion channel it reports to.
    pub(crate) channel: Option<Addr>,
    /// Notifications handed out by `ibv_get_cq_event` and not yet acknowledged.
    pub(crate) unacked_events: AtomicU32,
}

pub(crate) struct Chan {
    pub(crate) ch: CompletionChannel,
    /// The completion queues attached, by [`CompletionQueue::id`].
    pub(crate) cqs: Mutex<HashMap<u32, Addr>>,
}

pub(crate) struct Srq {
    pub(crate) srq: SharedReceiveQueue,
}

/// A queue pair and what the verbs say about it beyond the stack's handle.
pub(crate) struct Qp {
    pub(crate) qp: QueuePair,
    pub(crate) sq_sig_all: bool,
    pub(crate) cap: iwarp::QpCap,
    pub(crate) uses_srq: bool,
    /// The `struct ibv_srq` it takes its receives from, if any.
    pub(crate) srq: Option<Addr>,
    /// `IBV_EVENT_QP_LAST_WQE_REACHED` was queued (it comes once).
    pub(crate) last_wqe: std::sync::atomic::AtomicBool,
    /// `enum ibv_qp_state` as set through `ibv_modify_qp`, and the access flags.
    pub(crate) verbs: Mutex<QpVerbs>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct QpVerbs {
    pub(crate) state: u32,
    pub(crate) access: u32,
}

#[derive(Clone)]
pub(crate) enum Obj {
    DeviceList,
    Context(Arc<Ctx>),
    Pd(Arc<Pd>),
    Mr(Arc<Mr>),
    Cq(Arc<Cq>),
    Channel(Arc<Chan>),
    Srq(Arc<Srq>),
    Qp(Arc<Qp>),
}

impl Obj {
    fn kind(&self) -> Kind {
        match self {
            Obj::DeviceList => Kind::DeviceList,
            Obj::Context(_) => Kind::Context,
            Obj::Pd(_) => Kind::Pd,
            Obj::Mr(_) => Kind::Mr,
            Obj::Cq(_) => Kind::Cq,
            Obj::Channel(_) => Kind::Channel,
            Obj::Srq(_) => Kind::Srq,
            Obj::Qp(_) => Kind::Qp,
        }
    }
}

struct Entry {
    obj: Obj,
    /// The owning context (0 for device lists).
    ctx: Addr,
    /// Objects this one uses, each counted in their `users`.
    parents: Vec<Addr>,
    users: usize,
}

#[derive(Default)]
struct Registry {
    objs: HashMap<Addr, Entry>,
    /// Memory regions by their local key (the STag), for work requests.
    by_lkey: HashMap<u32, Arc<Mr>>,
}

// Creation and destruction write; the lookups of every call (posting and polling among
// them) only read, so threads working on their own objects do not wait for one another.
static REGISTRY: RwLock<Option<Registry>> = RwLock::new(None);
static DEVICE: Mutex<Option<Device>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

fn read<T>(f: impl FnOnce(&Registry) -> T) -> T {
    let g = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    match &*g {
        Some(r) => f(r),
        None => f(&Registry::default()),
    }
}

/// The one stack device of the process, started on first use and never stopped (contexts
/// come and go; the stack's threads and STag table stay).
pub(crate) fn device() -> Res<Device> {
    let mut d = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dev) = &*d {
        return Ok(dev.clone());
    }
    let cfg =
        DeviceConfig { worker_spin: worker_spin(std::env::var("IWARP_WORKER_SPIN_US").ok()), ..Default::default() };
    let dev = Device::open(cfg).map_err(|_| Errno(libc::ENODEV))?;
    dev.set_post_batching(post_batching(std::env::var("IWARP_POST_BURST_NS").ok()));
    *d = Some(dev.clone());
    Ok(dev)
}

/// How long the event loop keeps polling after activity: `IWARP_WORKER_SPIN_US`
/// microseconds, 100 when unset or unreadable (what `iwperf` spins). RDMA applications
/// busy-poll; the event loop stands in for the adapter that serves their peer's Reads and
/// places Writes, and a sleeping event loop would add a cross-core wake-up to each.
pub(crate) fn worker_spin(var: Option<String>) -> std::time::Duration {
    let us = var.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(100).min(1_000_000);
    std::time::Duration::from_micros(us)
}

/// How posts in a burst are joined: bursts are posts within `IWARP_POST_BURST_NS`
/// nanoseconds of each other (the stack's default, 2,000, when unset or unreadable; `0`
/// sends every request as it is posted). See [`iwarp::PostBatching`].
pub(crate) fn post_batching(var: Option<String>) -> iwarp::PostBatching {
    let mut b = iwarp::PostBatching::default();
    if let Some(ns) = var.and_then(|v| v.trim().parse::<u64>().ok()) {
        b.gap = std::time::Duration::from_nanos(ns.min(1_000_000_000));
    }
    b
}

/// Records a new object at `addr` whose C structure the caller allocated; `parents` must be
/// live (the caller looked them up), and each gains a user.
pub(crate) fn insert(addr: Addr, obj: Obj, ctx: Addr, parents: &[Addr]) {
    with(|r| {
        for p in parents {
            if let Some(e) = r.objs.get_mut(p) {
                e.users += 1;
            }
        }
        if let Obj::Mr(m) = &obj {
            r.by_lkey.insert(m.mr.lkey(), Arc::clone(m));
        }
        r.objs.insert(addr, Entry { obj, ctx, parents: parents.to_vec(), users: 0 });
    })
}

/// The object at `addr` if it is a live one of `kind`; with its context.
pub(crate) fn lookup(addr: Addr, kind: Kind) -> Res<(Obj, Addr)> {
    if addr == 0 {
        return Err(Errno::INVAL);
    }
    read(|r| match r.objs.get(&addr) {
        Some(e) if e.obj.kind() == kind => Ok((e.obj.clone(), e.ctx)),
        _ => Err(Errno::INVAL),
    })
}

macro_rules! getter {
    ($name:ident, $kind:ident, $t:ty) => {
        /// The live object of this kind at the address, and its context.
        pub(crate) fn $name(addr: Addr) -> Res<(Arc<$t>, Addr)> {
            match lookup(addr, Kind::$kind)? {
                (Obj::$kind(o), ctx) => Ok((o, ctx)),
                _ => Err(Errno::INVAL),
            }
        }
    };
}
getter!(context, Context, Ctx);
getter!(pd, Pd, Pd);
getter!(cq, Cq, Cq);
getter!(channel, Channel, Chan);
getter!(srq, Srq, Srq);
getter!(qp, Qp, Qp);

/// `true` if `addr` is a device list this library handed out.
pub(crate) fn is_device_list(addr: Addr) -> bool {
    lookup(addr, Kind::DeviceList).is_ok()
}

/// The queue pair whose number is `n` (rdma_cm's `conn_param.qp_num`).
pub(crate) fn qp_by_num(n: u32) -> Option<Addr> {
    read(|r| {
        r.objs.iter().find_map(|(a, e)| match &e.obj {
            Obj::Qp(q) if q.qp.qp_num() == n => Some(*a),
            _ => None,
        })
    })
}

/// The memory region whose local key is `lkey`.
pub(crate) fn mr_by_lkey(lkey: u32) -> Option<Arc<Mr>> {
    read(|r| r.by_lkey.get(&lkey).cloned())
}

/// Removes the object at `addr` (of `kind`) unless something still uses it; its parents lose
/// a user. The caller frees the C structure afterwards.
pub(crate) fn remove(addr: Addr, kind: Kind) -> Res<Obj> {
    with(|r| {
        let e = match r.objs.get(&addr) {
            Some(e) if e.obj.kind() == kind => e,
            _ => return Err(Errno::INVAL),
        };
        if e.users > 0 {
            return Err(Errno::BUSY);
        }
        if let Obj::Cq(cq) = &e.obj {
            if cq.unacked_events.load(Ordering::Acquire) > 0 {
                return Err(Errno::BUSY);
            }
        }
        Ok(take(r, addr))
    })
}

fn take(r: &mut Registry, addr: Addr) -> Obj {
    // Called only with a present address (checked by the callers).
    let Some(e) = r.objs.remove(&addr) else { return Obj::DeviceList };
    for p in &e.parents {
        if let Some(pe) = r.objs.get_mut(p) {
            pe.users = pe.users.saturating_sub(1);
        }
    }
    if let Obj::Mr(m) = &e.obj {
        r.by_lkey.remove(&m.mr.lkey());
    }
    e.obj
}

/// Removes a context and every object still left in it, children before parents (as closing
/// the device file does for a kernel driver). Returns the removed objects' addresses and
/// kinds, for the caller to free their C structures.
pub(crate) fn remove_context(ctx: Addr) -> Res<Vec<(Addr, Kind)>> {
    with(|r| {
        match r.objs.get(&ctx) {
            Some(e) if e.obj.kind() == Kind::Context => {}
            _ => return Err(Errno::INVAL),
        }
        let mut gone = Vec::new();
        // Children first: queue pairs, then what they use, and so on.
        for kind in [Kind::Qp, Kind::Srq, Kind::Mr, Kind::Cq, Kind::Channel, Kind::Pd] {
            let addrs: Vec<Addr> =
                r.objs.iter().filter(|(_, e)| e.ctx == ctx && e.obj.kind() == kind).map(|(a, _)| *a).collect();
            for a in addrs {
                take(r, a);
                gone.push((a, kind));
            }
        }
        take(r, ctx);
        Ok(gone)
    })
}

impl Ctx {
    pub(crate) fn new() -> Res<Ctx> {
        let (tx, rx) = UnixStream::pair().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
        Ok(Ctx {
            async_tx: Mutex::new(tx),
            async_rx: rx,
            events: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            unacked_events: AtomicU32::new(0),
        })
    }

    /// Queues an asynchronous event and makes `async_fd` readable.
    pub(crate) fn push_event(&self, ev: AsyncEvent) {
        use std::io::Write;
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push_back(ev);
        let _ = self.async_tx.lock().unwrap_or_else(|e| e.into_inner()).write(&[1]);
        self.queued.notify_all();
    }

    /// The next asynchronous event: waits for one if `block`, else `EAGAIN` when none waits.
    pub(crate) fn next_event(&self, block: bool) -> Res<AsyncEvent> {
        use std::io::Read;
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(ev) = q.pop_front() {
                drop(q);
                // Take the event's byte, written just after it was queued, so that async_fd
                // is readable exactly while events wait.
                let _ = (&self.async_rx).read(&mut [0u8]);
                self.unacked_events.fetch_add(1, Ordering::AcqRel);
                return Ok(ev);
            }
            if !block {
                return Err(Errno::AGAIN);
            }
            q = self.queued.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Cq {
    pub(crate) fn new(cq: CompletionQueue, channel: Option<Addr>) -> Cq {
        Cq { cq, channel, unacked_events: AtomicU32::new(0) }
    }
}

/// Acknowledges `n` events of a counter, refusing more than were handed out.
pub(crate) fn ack(counter: &AtomicU32, n: u32) -> Res<()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(n))
        .map(|_| ())
        .map_err(|_| Errno::INVAL)
}

/// Acknowledges one asynchronous event on a context that has one handed out (the event
/// structure does not name its context).
pub(crate) fn ack_any_async_event() {
    with(|r| {
        for e in r.objs.values() {
            if let Obj::Context(c) = &e.obj {
                if ack(&c.unacked_events, 1).is_ok() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod spin_tests {
    use super::{post_batching, worker_spin};
    use std::time::Duration;

    #[test]
    fn the_post_burst_gap_comes_from_the_environment_with_the_stacks_default() {
        let default = iwarp::PostBatching::default();
        assert_eq!(post_batching(None), default);
        assert_eq!(post_batching(Some("0".into())).gap, Duration::ZERO);
        assert_eq!(post_batching(Some(" 5000 ".into())).gap, Duration::from_micros(5));
        assert_eq!(post_batching(Some("soon".into())), default);
        assert_eq!(post_batching(Some("99999999999999".into())).gap, Duration::from_secs(1));
        assert_eq!(post_batching(Some("0".into())).flush_after, default.flush_after);
    }

    #[test]
    fn the_event_loop_spin_comes_from_the_environment_with_a_default() {
        assert_eq!(worker_spin(None), Duration::from_micros(100));
        assert_eq!(worker_spin(Some("0".into())), Duration::ZERO);
        assert_eq!(worker_spin(Some(" 25 ".into())), Duration::from_micros(25));
        assert_eq!(worker_spin(Some("lots".into())), Duration::from_micros(100));
        assert_eq!(worker_spin(Some("99999999999".into())), Duration::from_secs(1));
    }
}
