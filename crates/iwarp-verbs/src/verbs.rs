//! The verbs' logic, in safe Rust: each call checks its handles against the registry, applies
//! the rules between objects, creates or destroys the stack's objects, and allocates the C
//! structures it hands out (`Box::into_raw`; `ffi` frees them once the registry let go).
// Matches use the C constants under bindgen's names (`ibv_qp_state_IBV_QPS_INIT`, ...).
#![allow(non_upper_case_globals)]

use crate::abi::*;
use crate::attrs;
use crate::state::{self, Addr, Chan, Cq, Ctx, Errno, Kind, Mr, Obj, Pd, Qp, QpVerbs, Res, Srq};
use iwarp::{Access, Progress, QpCap, QpInit};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

fn addr<T>(p: *const T) -> Addr {
    p as Addr
}

/// The `struct ibv_context` a context address names (the registry's key is its address).
fn ctx_ptr(c: Addr) -> *mut ibv_context {
    c as *mut ibv_context
}

/// The offset of the `struct ibv_context` inside a `struct verbs_context`.
pub(crate) const CONTEXT_OFFSET: usize = core::mem::offset_of!(verbs_context, context);

/// Opens a context: `template` carries the operation tables (their functions live in `ffi`);
/// the rest is filled here. Returns its `struct ibv_context`, inside a `struct verbs_context`.
pub(crate) fn open_device(dev: *mut ibv_device, template: verbs_context) -> Res<*mut ibv_context> {
    state::device()?;
    let ctx = Arc::new(Ctx::new()?);
    let mut v = Box::new(template);
    v.sz = core::mem::size_of::<verbs_context>() as size_t;
    v.context.device = dev;
    v.context.cmd_fd = ctx.async_rx.as_raw_fd();
    v.context.async_fd = ctx.async_rx.as_raw_fd();
    v.context.num_comp_vectors = attrs::COMP_VECTORS;
    v.context.abi_compat = VERBS_ABI_IS_EXTENDED;
    let c = Box::into_raw(v).cast::<u8>().wrapping_add(CONTEXT_OFFSET).cast::<ibv_context>();
    state::insert(addr(c), Obj::Context(ctx), addr(c), &[]);
    Ok(c)
}

pub(crate) fn alloc_pd(ctx: *mut ibv_context) -> Res<*mut ibv_pd> {
    let (_, c) = state::context(addr(ctx))?;
    let pd = state::device()?.alloc_pd();
    let handle = pd.id();
    let p = Box::into_raw(Box::new(ibv_pd { context: ctx, handle }));
    state::insert(addr(p), Obj::Pd(Arc::new(Pd { pd })), c, &[c]);
    Ok(p)
}

/// The mandatory bits of verbs access flags, refused unless the stack knows them all. Bits
/// from `IBV_ACCESS_OPTIONAL_FIRST` up are hints (relaxed ordering) and ignored.
fn mandatory_access(flags: u32) -> Res<u32> {
    let mandatory = flags & (ibv_access_flags_IBV_ACCESS_RELAXED_ORDERING - 1);
    let known = ibv_access_flags_IBV_ACCESS_LOCAL_WRITE
        | ibv_access_flags_IBV_ACCESS_REMOTE_WRITE
        | ibv_access_flags_IBV_ACCESS_REMOTE_READ
        | ibv_access_flags_IBV_ACCESS_REMOTE_ATOMIC;
    if mandatory & !known != 0 {
        // Memory windows, zero-based or on-demand regions, huge-page hints: not implemented.
        return Err(Errno::NOTSUP);
    }
    Ok(mandatory)
}

/// The stack's rights for verbs access flags (see [`mandatory_access`]).
fn access(flags: u32) -> Res<Access> {
    let mandatory = mandatory_access(flags)?;
    let remote_w = ibv_access_flags_IBV_ACCESS_REMOTE_WRITE | ibv_access_flags_IBV_ACCESS_REMOTE_ATOMIC;
    if mandatory & remote_w != 0 && mandatory & ibv_access_flags_IBV_ACCESS_LOCAL_WRITE == 0 {
        // The verbs require local write whenever peers may write.
        return Err(Errno::INVAL);
    }
    let mut a = Access::empty();
    for (bit, right) in [
        (ibv_access_flags_IBV_ACCESS_LOCAL_WRITE, Access::LOCAL_WRITE),
        (ibv_access_flags_IBV_ACCESS_REMOTE_WRITE, Access::REMOTE_WRITE),
        (ibv_access_flags_IBV_ACCESS_REMOTE_READ, Access::REMOTE_READ),
        (ibv_access_flags_IBV_ACCESS_REMOTE_ATOMIC, Access::REMOTE_ATOMIC),
    ] {
        if mandatory & bit != 0 {
            a |= right;
        }
    }
    Ok(a)
}

/// Registers application memory in place. `register` performs the registration of
/// `(ptr, len)` under the caller's contract (`ffi` holds the `unsafe` call).
pub(crate) fn reg_mr(
    pd: *mut ibv_pd,
    buf: *mut u8,
    len: usize,
    iova: u64,
    flags: u32,
    register: impl FnOnce(&iwarp::ProtectionDomain, Access) -> Result<iwarp::MemoryRegion, iwarp::RegisterError>,
) -> Res<*mut ibv_mr> {
    let (p, c) = state::pd(addr(pd))?;
    if buf.is_null() {
        return Err(Errno::INVAL);
    }
    if iova != buf as u64 {
        // Peers name a region's bytes by their virtual address here (Tagged Offsets are the
        // address, as with Linux peers); another I/O virtual address is not implemented.
        return Err(Errno::NOTSUP);
    }
    let rights = access(flags)?;
    let mr = register(&p.pd, rights).map_err(|e| match e {
        iwarp::RegisterError::NullPointer => Errno::INVAL,
        _ => Errno::NOMEM,
    })?;
    let m = Box::into_raw(Box::new(ibv_mr {
        context: ctx_ptr(c),
        pd,
        addr: buf.cast(),
        length: len as size_t,
        handle: mr.lkey(),
        lkey: mr.lkey(),
        rkey: mr.rkey(),
    }));
    state::insert(addr(m), Obj::Mr(Arc::new(Mr { mr })), c, &[addr(pd)]);
    Ok(m)
}

pub(crate) fn create_comp_channel(ctx: *mut ibv_context) -> Res<*mut ibv_comp_channel> {
    let (_, c) = state::context(addr(ctx))?;
    let ch = state::device()?.create_comp_channel().map_err(|_| Errno(libc::EMFILE))?;
    let p = Box::into_raw(Box::new(ibv_comp_channel { context: ctx, fd: ch.as_raw_fd(), refcnt: 0 }));
    state::insert(addr(p), Obj::Channel(Arc::new(Chan { ch, cqs: Mutex::new(HashMap::new()) })), c, &[c]);
    Ok(p)
}

pub(crate) fn create_cq(
    ctx: *mut ibv_context,
    cqe: i32,
    cq_context: *mut libc::c_void,
    channel: *mut ibv_comp_channel,
    comp_vector: i32,
) -> Res<*mut ibv_cq> {
    let (_, c) = state::context(addr(ctx))?;
    let dev = state::device()?;
    let max = dev.capabilities().max_cqe;
    let size = usize::try_from(cqe).ok().filter(|&n| n >= 1 && n <= max).ok_or(Errno::INVAL)?;
    if !(0..attrs::COMP_VECTORS).contains(&comp_vector) {
        return Err(Errno::INVAL);
    }
    let chan = if channel.is_null() {
        None
    } else {
        let (ch, cc) = state::channel(addr(channel))?;
        if cc != c {
            return Err(Errno::INVAL);
        }
        Some(ch)
    };
    let cq = match &chan {
        Some(ch) => dev.create_cq_with_channel(size, &ch.ch),
        None => dev.create_cq(size),
    }
    .map_err(|_| Errno(libc::EMFILE))?;
    let id = cq.id();
    let p =
        Box::into_raw(Box::new(ibv_cq { context: ctx, channel, cq_context, cqe, handle: id, ..Default::default() }));
    let mut parents = vec![c];
    if let Some(ch) = &chan {
        ch.cqs.lock().unwrap_or_else(|e| e.into_inner()).insert(id, addr(p));
        parents.push(addr(channel));
    }
    let ch_addr = chan.as_ref().map(|_| addr(channel));
    state::insert(addr(p), Obj::Cq(Arc::new(Cq::new(cq, ch_addr))), c, &parents);
    Ok(p)
}

/// Destroys a completion queue (the caller frees `cq` on success).
pub(crate) fn destroy_cq(cq: *mut ibv_cq) -> Res<()> {
    let Obj::Cq(q) = state::remove(addr(cq), Kind::Cq)? else { return Err(Errno::INVAL) };
    if let Some(Ok((ch, _))) = q.channel.map(state::channel) {
        ch.cqs.lock().unwrap_or_else(|e| e.into_inner()).remove(&q.cq.id());
    }
    Ok(())
}

/// What `ibv_create_qp` and `create_qp_ex` are asked for.
pub(crate) struct QpRequest {
    pub(crate) pd: *mut ibv_pd,
    pub(crate) qp_context: *mut libc::c_void,
    pub(crate) send_cq: *mut ibv_cq,
    pub(crate) recv_cq: *mut ibv_cq,
    pub(crate) srq: *mut ibv_srq,
    pub(crate) cap: ibv_qp_cap,
    pub(crate) qp_type: u32,
    pub(crate) sq_sig_all: bool,
}

/// The inline bytes every queue pair takes in one send, whatever it asked for.
const MIN_INLINE: usize = 64;

/// Creates an RC queue pair; returns it and the capabilities it got (written back to the
/// caller's `cap`).
pub(crate) fn create_qp(req: &QpRequest) -> Res<(*mut ibv_qp, ibv_qp_cap)> {
    let (pd, c) = state::pd(addr(req.pd))?;
    if req.qp_type != ibv_qp_type_IBV_QPT_RC {
        // iWARP has reliable connections only (no UC, UD, raw or XRC queue pairs).
        return Err(Errno::NOTSUP);
    }
    let (scq, sc) = state::cq(addr(req.send_cq))?;
    let (rcq, rc) = state::cq(addr(req.recv_cq))?;
    let srq = if req.srq.is_null() {
        None
    } else {
        let (s, src) = state::srq(addr(req.srq))?;
        if src != c {
            return Err(Errno::INVAL);
        }
        Some(s)
    };
    if sc != c || rc != c {
        return Err(Errno::INVAL);
    }
    let n = |v: u32| v as usize;
    let cap = QpCap {
        max_send_wr: n(req.cap.max_send_wr),
        max_recv_wr: if srq.is_some() { 0 } else { n(req.cap.max_recv_wr) },
        max_send_sge: n(req.cap.max_send_sge),
        max_recv_sge: if srq.is_some() { 0 } else { n(req.cap.max_recv_sge) },
        // At least MIN_INLINE: the verbs let a provider grant more than asked (the caller
        // reads the grant back), and programs such as rdma_xclient post small inline sends
        // on queue pairs that asked for none, which Linux siw accepts up to its own limit.
        max_inline_data: n(req.cap.max_inline_data).max(MIN_INLINE),
    };
    let init = QpInit {
        send_cq: &scq.cq,
        recv_cq: &rcq.cq,
        srq: srq.as_ref().map(|s| &s.srq),
        cap,
        // The event loop moves the bytes (applications such as ib_write_lat watch their
        // buffers without calling into the library), and so does a thread busy-polling an
        // empty completion queue, which then serves itself instead of waking the event loop.
        progress: Progress::Assisted,
    };
    let qp = pd.pd.create_qp(&init).map_err(|_| Errno::INVAL)?;
    let out = ibv_qp_cap {
        max_send_wr: req.cap.max_send_wr,
        max_recv_wr: cap.max_recv_wr as u32,
        max_send_sge: req.cap.max_send_sge,
        max_recv_sge: cap.max_recv_sge as u32,
        max_inline_data: cap.max_inline_data as u32,
    };
    let p = Box::into_raw(Box::new(ibv_qp {
        context: ctx_ptr(c),
        qp_context: req.qp_context,
        pd: req.pd,
        send_cq: req.send_cq,
        recv_cq: req.recv_cq,
        srq: req.srq,
        handle: qp.qp_num(),
        qp_num: qp.qp_num(),
        state: ibv_qp_state_IBV_QPS_RESET,
        qp_type: ibv_qp_type_IBV_QPT_RC,
        ..Default::default()
    }));
    let mut parents = vec![addr(req.pd), addr(req.send_cq)];
    if req.recv_cq != req.send_cq {
        parents.push(addr(req.recv_cq));
    }
    if !req.srq.is_null() {
        parents.push(addr(req.srq));
    }
    let watched = qp.clone();
    let uses_srq = srq.is_some();
    let verbs = Mutex::new(QpVerbs { state: ibv_qp_state_IBV_QPS_RESET, access: 0 });
    let srq_addr = (!req.srq.is_null()).then(|| addr(req.srq));
    let q = Qp { qp, sq_sig_all: req.sq_sig_all, cap, uses_srq, srq: srq_addr, last_wqe: Default::default(), verbs };
    state::insert(addr(p), Obj::Qp(Arc::new(q)), c, &parents);
    // Its errors become asynchronous events, its connection's events rdma_cm's.
    crate::cm::watch_qp(addr(p), watched);
    Ok((p, out))
}

pub(crate) fn create_srq(pd: *mut ibv_pd, srq_context: *mut libc::c_void, attr: ibv_srq_attr) -> Res<*mut ibv_srq> {
    let (p, c) = state::pd(addr(pd))?;
    let srq = p.pd.create_srq(attr.max_wr as usize, attr.max_sge as usize).map_err(|_| Errno::INVAL)?;
    let s = Box::into_raw(Box::new(ibv_srq { context: ctx_ptr(c), srq_context, pd, ..Default::default() }));
    state::insert(addr(s), Obj::Srq(Arc::new(Srq { srq })), c, &[addr(pd)]);
    Ok(s)
}

/// `ibv_modify_srq`: `IBV_SRQ_LIMIT` arms the limit (0 disarms it; above the queue's
/// depth is `EINVAL`); `IBV_SRQ_MAX_WR` (resizing) is `EINVAL`, as on a device without
/// `IBV_DEVICE_SRQ_RESIZE`, and so is any other bit.
pub(crate) fn modify_srq(srq: Addr, attr: &ibv_srq_attr, mask: u32) -> Res<()> {
    let (s, _) = state::srq(srq)?;
    if mask & !ibv_srq_attr_mask_IBV_SRQ_LIMIT != 0 {
        return Err(Errno::INVAL);
    }
    if mask & ibv_srq_attr_mask_IBV_SRQ_LIMIT != 0 {
        s.srq.arm_limit(attr.srq_limit as usize).map_err(|_| Errno::INVAL)?;
    }
    Ok(())
}

/// `ibv_query_srq`: the depth, elements per request and armed limit (0 once reached).
pub(crate) fn query_srq(srq: Addr) -> Res<ibv_srq_attr> {
    let (s, _) = state::srq(srq)?;
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(ibv_srq_attr { max_wr: n(s.srq.depth()), max_sge: n(s.srq.max_sge()), srq_limit: n(s.srq.limit()) })
}

/// Applies `ibv_modify_qp`. Returns the new `enum ibv_qp_state` (for the C structure's
/// `state` field).
///
/// An iWARP queue pair reaches RTS through the connection manager: the MPA exchange on its
/// TCP connection is what makes it ready. RTR and RTS asked for by hand with InfiniBand path
/// attributes (`IB_PATH_ATTRS`) are refused with `EINVAL`; without them (the state and
/// access flags `rdma_init_qp_attr` gives) they are recorded and change nothing else, and on
/// an established connection they change nothing. RESET, INIT (with access flags and port 1)
/// and ERR are accepted.
pub(crate) fn modify_qp(qp: &Qp, mask: u32, target: u32, access_flags: u32, port: u8) -> Res<u32> {
    let mut v = qp.verbs.lock().unwrap_or_else(|e| e.into_inner());
    if mask & ibv_qp_attr_mask_IBV_QP_PORT != 0 && port != attrs::PORT {
        return Err(Errno::INVAL);
    }
    if mask & ibv_qp_attr_mask_IBV_QP_ACCESS_FLAGS != 0 {
        qp_access(access_flags)?;
    }
    let new_state = if mask & ibv_qp_attr_mask_IBV_QP_STATE != 0 { target } else { v.state };
    match (v.state, new_state) {
        (ibv_qp_state_IBV_QPS_RESET | ibv_qp_state_IBV_QPS_INIT, ibv_qp_state_IBV_QPS_INIT) => {}
        // Already there through its connection: nothing to do.
        (_, ibv_qp_state_IBV_QPS_RTR | ibv_qp_state_IBV_QPS_RTS) if qp.qp.state() == iwarp::QpState::Rts => {}
        // The iWARP form (what rdma_init_qp_attr gives, as rping -q applies it before
        // rdma_accept): recorded; the connection manager's connection makes it ready.
        (ibv_qp_state_IBV_QPS_INIT, ibv_qp_state_IBV_QPS_RTR)
        | (ibv_qp_state_IBV_QPS_INIT | ibv_qp_state_IBV_QPS_RTR, ibv_qp_state_IBV_QPS_RTS)
            if mask & IB_PATH_ATTRS == 0 => {}
        (_, ibv_qp_state_IBV_QPS_RESET) if qp.qp.conn_info().is_none() => {}
        (_, ibv_qp_state_IBV_QPS_ERR) => qp.qp.disconnect(),
        (a, b) if a == b && mask & ibv_qp_attr_mask_IBV_QP_STATE == 0 => {}
        _ => return Err(Errno::INVAL),
    }
    if mask & ibv_qp_attr_mask_IBV_QP_ACCESS_FLAGS != 0 {
        v.access = access_flags;
    }
    v.state = new_state;
    Ok(new_state)
}

/// `ibv_modify_qp` attributes that address an InfiniBand peer (address vector, path MTU,
/// queue pair number, packet sequence numbers, retries, alternate path): an iWARP queue pair
/// cannot be connected with them, so RTR or RTS asked for with any of them is `EINVAL`.
const IB_PATH_ATTRS: u32 = ibv_qp_attr_mask_IBV_QP_AV
    | ibv_qp_attr_mask_IBV_QP_PATH_MTU
    | ibv_qp_attr_mask_IBV_QP_TIMEOUT
    | ibv_qp_attr_mask_IBV_QP_RETRY_CNT
    | ibv_qp_attr_mask_IBV_QP_RNR_RETRY
    | ibv_qp_attr_mask_IBV_QP_RQ_PSN
    | ibv_qp_attr_mask_IBV_QP_MIN_RNR_TIMER
    | ibv_qp_attr_mask_IBV_QP_SQ_PSN
    | ibv_qp_attr_mask_IBV_QP_ALT_PATH
    | ibv_qp_attr_mask_IBV_QP_PATH_MIG_STATE
    | ibv_qp_attr_mask_IBV_QP_DEST_QPN;

/// A queue pair's access flags: known bits only (the local-write rule is the regions').
fn qp_access(flags: u32) -> Res<()> {
    mandatory_access(flags).map(|_| ())
}

/// The verbs state of a queue pair: what the connection made of it once it has one (as
/// Linux siw reports its states: closing is SQD, terminating SQE), else what `ibv_modify_qp`
/// set (RESET or INIT; ERR).
fn verbs_state(engine: iwarp::QpState, set: u32) -> u32 {
    match engine {
        iwarp::QpState::Rts => ibv_qp_state_IBV_QPS_RTS,
        iwarp::QpState::Closing => ibv_qp_state_IBV_QPS_SQD,
        iwarp::QpState::Terminate => ibv_qp_state_IBV_QPS_SQE,
        iwarp::QpState::Error => ibv_qp_state_IBV_QPS_ERR,
        _ => set,
    }
}

/// `ibv_query_qp`'s answer.
pub(crate) fn query_qp(qp: &Qp) -> (ibv_qp_attr, ibv_qp_cap) {
    let v = *qp.verbs.lock().unwrap_or_else(|e| e.into_inner());
    let cap = ibv_qp_cap {
        max_send_wr: qp.cap.max_send_wr as u32,
        max_recv_wr: qp.cap.max_recv_wr as u32,
        max_send_sge: qp.cap.max_send_sge as u32,
        max_recv_sge: qp.cap.max_recv_sge as u32,
        max_inline_data: qp.cap.max_inline_data as u32,
    };
    let (ird, ord) = qp.qp.conn_info().map(|i| (i.ird, i.ord)).unwrap_or((0, 0));
    let state = verbs_state(qp.qp.state(), v.state);
    let attr = ibv_qp_attr {
        qp_state: state,
        cur_qp_state: state,
        path_mtu: ibv_mtu_IBV_MTU_4096,
        qp_access_flags: v.access,
        cap,
        port_num: attrs::PORT,
        max_rd_atomic: u8::try_from(ord).unwrap_or(u8::MAX),
        max_dest_rd_atomic: u8::try_from(ird).unwrap_or(u8::MAX),
        ..Default::default()
    };
    (attr, cap)
}

/// Removes an object of `kind` if nothing uses it.
pub(crate) fn destroy(p: Addr, kind: Kind) -> Res<()> {
    state::remove(p, kind).map(drop)
}

/// `ibv_dereg_mr`: the region leaves the registry (no new post names its keys), then is
/// deregistered, which waits until the stack no longer touches the buffer (a placement or a
/// send from it under way finishes; work requests still naming it fail, see
/// [`iwarp::MemoryRegion::deregister`]): the application may free the buffer when this
/// returns `Ok`. `EBUSY` if a system call on it was still under way after the stack's bound
/// (the buffer must then not be freed; the `struct ibv_mr` is not freed either, and the
/// handle is no longer valid).
pub(crate) fn dereg_mr(p: Addr) -> Res<()> {
    let Obj::Mr(m) = state::remove(p, Kind::Mr)? else { return Err(Errno::INVAL) };
    m.mr.deregister().map_err(|_| Errno::BUSY)
}

/// Queues an asynchronous event of one of `ctx`'s objects for `ibv_get_async_event`.
pub(crate) fn post_async_event(ctx: Addr, ev: state::AsyncEvent) -> Res<()> {
    let (c, _) = state::context(ctx)?;
    c.push_event(ev);
    Ok(())
}
