//! The exported C functions of librdmacm (`RDMACM_1.0` ... `RDMACM_1.3`), in the same
//! library as the verbs so that both share one copy of the stack's state (`librdmacm.so.1` is
//! a second name of `libibverbs.so.1`).
//!
//! As in the parent module, each function catches panics, reads its C arguments, calls the
//! logic (`crate::cm`, in safe Rust) and writes results back; the unsafe operations are the
//! same kinds, upheld the same way:
//! - identifiers, channels and events are looked up in `cm`'s registry before anything is
//!   read or written through them (NULL, stale and foreign pointers are `EINVAL`); their
//!   memory is ours until the matching destroy or acknowledgement frees it;
//! - argument structures (`struct sockaddr *`, `struct rdma_conn_param *`, attributes,
//!   `struct rdma_addrinfo *` hints) are the caller's, valid for the call by the API's
//!   contract; NULL is checked where the API allows it or refused with `EINVAL`.
//!
//! librdmacm returns 0 or -1 with `errno` (`rdma_get_src_port` and friends return values).

#![allow(non_upper_case_globals)]

use super::{free, guard, input, out, ret_m1, set_errno};
use crate::abi::cma::*;
use crate::abi::*;
use crate::cm::{self, Channel, ConnIn, Event, QpInitCopy};
use crate::state::{self, Addr, Errno, Res};
use crate::verbs::{self, QpRequest};
use core::ffi::{c_char, c_int, c_void, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock};

// ---------------------------------------------------------------------------------------------
// The context and protection domain every identifier shares

/// librdmacm's one verbs context (`id->verbs`), opened on first use and never closed: every
/// identifier shares it, so `id->verbs == pd->context` for a domain made on it.
pub(crate) fn cm_context() -> Res<*mut ibv_context> {
    static CTX: OnceLock<usize> = OnceLock::new();
    if let Some(&c) = CTX.get() {
        return Ok(c as *mut ibv_context);
    }
    static INIT: Mutex<()> = Mutex::new(());
    let _g = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&c) = CTX.get() {
        return Ok(c as *mut ibv_context);
    }
    let c = verbs::open_device(super::the_device(), super::context_template())?;
    let _ = CTX.set(c as usize);
    Ok(c)
}

/// `true` for librdmacm's context (which applications must not close).
pub(crate) fn is_cm_context(ctx: *mut ibv_context) -> bool {
    cm_context().is_ok_and(|c| c == ctx)
}

/// The protection domain identifiers get (`id->pd`), as rdma-core gives each device one.
fn cm_pd() -> Res<*mut ibv_pd> {
    static PD: OnceLock<usize> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    let _g = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&p) = PD.get() {
        return Ok(p as *mut ibv_pd);
    }
    let p = verbs::alloc_pd(cm_context()?)?;
    let _ = PD.set(p as usize);
    Ok(p)
}

/// Allocates a `struct rdma_event_channel` for `ch`; returns its address.
pub(crate) fn new_channel_struct(ch: &Channel) -> Addr {
    Box::into_raw(Box::new(rdma_event_channel { fd: ch.rx.as_raw_fd() })) as Addr
}

/// Allocates a `struct rdma_cm_id` on the channel at `channel`; returns its address.
pub(crate) fn new_id_struct(channel: Addr, context: usize, ps: u32) -> Res<Addr> {
    let id = rdma_cm_id {
        verbs: cm_context()?,
        channel: channel as *mut rdma_event_channel,
        context: context as *mut c_void,
        ps,
        port_num: crate::attrs::PORT,
        pd: cm_pd()?,
        qp_type: ibv_qp_type_IBV_QPT_RC,
        ..Default::default()
    };
    Ok(Box::into_raw(Box::new(id)) as Addr)
}

// ---------------------------------------------------------------------------------------------
// Socket addresses

/// Reads a `struct sockaddr *` (IPv4 or IPv6).
///
/// # Safety
/// `p` is NULL or points to a socket address of its family's size.
unsafe fn read_sockaddr(p: *const sockaddr) -> Res<SocketAddr> {
    if p.is_null() {
        return Err(Errno::INVAL);
    }
    // SAFETY: a socket address starts with its family (the caller's contract).
    let family = i32::from(unsafe { (*p).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let s = unsafe { p.cast::<sockaddr_in>().read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(s.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let s = unsafe { p.cast::<sockaddr_in6>().read_unaligned() };
            // SAFETY: every member of the address union is plain bytes.
            let ip = Ipv6Addr::from(unsafe { s.sin6_addr.__in6_u.__u6_addr8 });
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(s.sin6_port), s.sin6_flowinfo, s.sin6_scope_id)))
        }
        _ => Err(Errno(libc::EAFNOSUPPORT)),
    }
}

fn sin(a: SocketAddrV4) -> sockaddr_in {
    sockaddr_in {
        sin_family: libc::AF_INET as sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn sin6(a: SocketAddrV6) -> sockaddr_in6 {
    sockaddr_in6 {
        sin6_family: libc::AF_INET6 as sa_family_t,
        sin6_port: a.port().to_be(),
        sin6_flowinfo: a.flowinfo(),
        sin6_addr: in6_addr { __in6_u: in6_addr__bindgen_ty_1 { __u6_addr8: a.ip().octets() } },
        sin6_scope_id: a.scope_id(),
    }
}

/// Writes the source and destination into an identifier's route (unchanged where `None`).
fn set_route(id: &mut rdma_cm_id, src: Option<SocketAddr>, dst: Option<SocketAddr>) {
    let a = &mut id.route.addr;
    if let Some(s) = src {
        a.__bindgen_anon_1 = Default::default();
        match s {
            SocketAddr::V4(v) => a.__bindgen_anon_1.src_sin = sin(v),
            SocketAddr::V6(v) => a.__bindgen_anon_1.src_sin6 = sin6(v),
        }
    }
    if let Some(d) = dst {
        a.__bindgen_anon_2 = Default::default();
        match d {
            SocketAddr::V4(v) => a.__bindgen_anon_2.dst_sin = sin(v),
            SocketAddr::V6(v) => a.__bindgen_anon_2.dst_sin6 = sin6(v),
        }
    }
}

/// The identifier's C structure, once the registry knows it.
///
/// # Safety
/// `p` was checked live in `cm`'s registry (its memory is ours until freed).
unsafe fn id_mut<'a>(p: *mut rdma_cm_id) -> &'a mut rdma_cm_id {
    // SAFETY: by this function's contract.
    unsafe { &mut *p }
}

fn lookup(id: *mut rdma_cm_id) -> Res<std::sync::Arc<cm::CmId>> {
    cm::id(id as Addr)
}

// ---------------------------------------------------------------------------------------------
// Channels and identifiers

/// `rdma_create_event_channel`.
#[no_mangle]
pub extern "C" fn rdma_create_event_channel() -> *mut rdma_event_channel {
    guard(core::ptr::null_mut(), || {
        let r = (|| {
            state::device()?;
            cm_context()?;
            let ch = Channel::new()?;
            let c = new_channel_struct(&ch);
            cm::insert_channel(c, ch);
            Ok(c as *mut rdma_event_channel)
        })();
        r.unwrap_or_else(|Errno(e)| {
            set_errno(e);
            core::ptr::null_mut()
        })
    })
}

fn destroy_channel(ch: Addr) -> Res<()> {
    cm::remove_channel(ch)?;
    // SAFETY: removed from the registry just now; allocated by new_channel_struct.
    unsafe { free(ch as *mut rdma_event_channel) };
    Ok(())
}

/// `rdma_destroy_event_channel`: refused (errno `EBUSY`, nothing freed) while identifiers
/// use the channel.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_event_channel(channel: *mut rdma_event_channel) {
    guard((), || {
        if let Err(Errno(e)) = destroy_channel(channel as Addr) {
            set_errno(e);
        }
    })
}

/// `rdma_create_id`: `RDMA_PS_TCP` only; no channel makes a synchronous identifier.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_create_id(
    channel: *mut rdma_event_channel,
    id: *mut *mut rdma_cm_id,
    context: *mut c_void,
    ps: rdma_port_space,
) -> c_int {
    guard(-1, || ret_m1(create_id(channel as Addr, id, context as usize, ps).map(|_| ())))
}

fn create_id(channel: Addr, id_out: *mut *mut rdma_cm_id, context: usize, ps: u32) -> Res<Addr> {
    if id_out.is_null() {
        return Err(Errno::INVAL);
    }
    if ps != rdma_port_space_RDMA_PS_TCP {
        // udaddy and mckey stop here without a word of their own.
        cm::refused_once(
            "rdma_create_id",
            "iWARP has reliable connections only: port space RDMA_PS_TCP, not UDP, IPoIB or IB",
            libc::EOPNOTSUPP,
        );
        return Err(Errno::NOTSUP);
    }
    let (channel, sync) = if channel == 0 {
        let ch = Channel::new()?;
        let c = new_channel_struct(&ch);
        cm::insert_channel(c, ch);
        (c, true)
    } else {
        cm::channel(channel)?;
        (channel, false)
    };
    let id = new_id_struct(channel, context, ps)?;
    if let Err(e) = cm::insert_id(id, channel, sync, context, ps) {
        // SAFETY: allocated just above, never published.
        unsafe { free(id as *mut rdma_cm_id) };
        return Err(e);
    }
    // SAFETY: the caller's output argument, checked not NULL.
    unsafe { out(id_out, id as *mut rdma_cm_id)? };
    Ok(id)
}

/// `rdma_destroy_id`: see `cm::destroy_id` (an identifier with events not yet acknowledged
/// is freed at the last acknowledgement; this returns at once).
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_id(id: *mut rdma_cm_id) -> c_int {
    guard(-1, || ret_m1(destroy_id(id)))
}

fn destroy_id(id: *mut rdma_cm_id) -> Res<()> {
    lookup(id)?;
    // A synchronous identifier's current event goes with it, as with rdma-core.
    // SAFETY: a live identifier (looked up above).
    let held = core::mem::replace(unsafe { &mut id_mut(id).event }, core::ptr::null_mut());
    if !held.is_null() {
        let _ = ack_event(held as Addr);
    }
    let d = cm::destroy_id(id as Addr)?;
    if let Some(ch) = d.sync_channel {
        let _ = destroy_channel(ch);
    }
    if d.free_now {
        // SAFETY: removed from the registry, no event refers to it: freed once.
        unsafe { free(id) };
    }
    Ok(())
}

/// `rdma_migrate_id`: to another channel, or (NULL) to a private one.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_migrate_id(id: *mut rdma_cm_id, channel: *mut rdma_event_channel) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            let to = if channel.is_null() {
                if i.state().sync {
                    return Err(Errno::INVAL);
                }
                let ch = Channel::new()?;
                let c = new_channel_struct(&ch);
                cm::insert_channel(c, ch);
                i.state().sync = true;
                c
            } else {
                channel as Addr
            };
            let was_sync = i.state().sync && !channel.is_null();
            let old = i.state().channel;
            cm::migrate(id as Addr, &i, to)?;
            if was_sync {
                i.state().sync = false;
                let _ = destroy_channel(old);
            }
            // SAFETY: a live identifier (looked up above).
            unsafe { id_mut(id).channel = to as *mut rdma_event_channel };
            Ok(())
        })())
    })
}

/// Waits for a synchronous identifier's next event (rdma-core's `ucma_complete`): the event
/// stays in `id->event` until the next call or `rdma_destroy_id`.
fn complete(id: *mut rdma_cm_id) -> Res<()> {
    let i = lookup(id)?;
    let (sync, channel) = {
        let st = i.state();
        (st.sync, st.channel)
    };
    if !sync {
        return Ok(());
    }
    // SAFETY: a live identifier (looked up above).
    let held = core::mem::replace(unsafe { &mut id_mut(id).event }, core::ptr::null_mut());
    if !held.is_null() {
        let _ = ack_event(held as Addr);
    }
    let ev = get_event(channel)?;
    // SAFETY: as above; `ev` is an event we just allocated.
    let (kind, status) = unsafe {
        id_mut(id).event = ev;
        ((*ev).event, (*ev).status)
    };
    status_errno(kind, status)
}

fn status_errno(kind: u32, status: i32) -> Res<()> {
    if kind == rdma_cm_event_type_RDMA_CM_EVENT_REJECTED {
        return Err(Errno(libc::ECONNREFUSED));
    }
    match status {
        0 => Ok(()),
        s => Err(Errno(s.abs())),
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses and routes

/// `rdma_bind_addr`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_bind_addr(id: *mut rdma_cm_id, addr: *mut sockaddr) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's address argument.
            let a = unsafe { read_sockaddr(addr) }?;
            let local = cm::bind_addr(&i, a)?;
            // SAFETY: a live identifier (looked up above).
            set_route(unsafe { id_mut(id) }, Some(local), None);
            Ok(())
        })())
    })
}

/// `rdma_resolve_addr`: ADDR_RESOLVED follows at once (there is nothing to resolve over
/// TCP); the timeout is not needed.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_resolve_addr(
    id: *mut rdma_cm_id,
    src: *mut sockaddr,
    dst: *mut sockaddr,
    _timeout_ms: c_int,
) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's address arguments (the source may be NULL).
            let (s, d) = unsafe {
                let s = if src.is_null() { None } else { Some(read_sockaddr(src)?) };
                (s, read_sockaddr(dst)?)
            };
            cm::resolve_addr(id as Addr, &i, s, d)?;
            complete(id)
        })())
    })
}

/// `rdma_resolve_route`: ROUTE_RESOLVED follows at once.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_resolve_route(id: *mut rdma_cm_id, _timeout_ms: c_int) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            cm::resolve_route(id as Addr, &i)?;
            complete(id)
        })())
    })
}

/// `rdma_get_src_port`: the local port in network byte order (0 when unknown).
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_get_src_port(id: *mut rdma_cm_id) -> u16 {
    guard(0, || lookup(id).map(|i| cm::ports(&i).0.to_be()).unwrap_or(0))
}

/// `rdma_get_dst_port`: the peer's port in network byte order (0 when unknown).
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_get_dst_port(id: *mut rdma_cm_id) -> u16 {
    guard(0, || lookup(id).map(|i| cm::ports(&i).1.to_be()).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Connections

/// `rdma_listen`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_listen(id: *mut rdma_cm_id, backlog: c_int) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            let a = cm::listen(id as Addr, &i, backlog)?;
            // SAFETY: a live identifier (looked up above).
            set_route(unsafe { id_mut(id) }, Some(a), None);
            Ok(())
        })())
    })
}

/// A `struct rdma_conn_param *` (NULL allowed), and the queue pair number it names.
///
/// # Safety
/// `p` is NULL or valid for reading; its private data pointer valid for its length.
unsafe fn conn_in(p: *const rdma_conn_param) -> Res<Option<(ConnIn, u32)>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL, the caller's argument.
    let c = unsafe { p.read() };
    let private_data = if c.private_data.is_null() || c.private_data_len == 0 {
        Vec::new()
    } else {
        // SAFETY: the caller's private data, `private_data_len` bytes.
        unsafe { core::slice::from_raw_parts(c.private_data.cast::<u8>(), c.private_data_len.into()) }.to_vec()
    };
    let ci = ConnIn { private_data, responder_resources: c.responder_resources, initiator_depth: c.initiator_depth };
    Ok(Some((ci, c.qp_num)))
}

/// The queue pair a connection runs on: `id->qp`, else the one `qp_num` names (a queue pair
/// made with `ibv_create_qp`, as rping's `-q`).
fn conn_qp(id: *mut rdma_cm_id, qp_num: Option<u32>) -> Res<Addr> {
    // SAFETY: a live identifier (the callers looked it up).
    let own = unsafe { id_mut(id).qp };
    if !own.is_null() {
        return Ok(own as Addr);
    }
    let n = qp_num.ok_or(Errno::INVAL)?;
    state::qp_by_num(n).ok_or(Errno::INVAL)
}

/// `rdma_connect`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_connect(id: *mut rdma_cm_id, param: *mut rdma_conn_param) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's parameters.
            let p = unsafe { conn_in(param) }?;
            let qp = conn_qp(id, p.as_ref().map(|p| p.1))?;
            cm::connect(id as Addr, &i, qp, p.as_ref().map(|p| &p.0))?;
            complete(id)
        })())
    })
}

/// `rdma_accept`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_accept(id: *mut rdma_cm_id, param: *mut rdma_conn_param) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's parameters.
            let p = unsafe { conn_in(param) }?;
            let qp = conn_qp(id, p.as_ref().map(|p| p.1))?;
            cm::accept(id as Addr, &i, qp, p.as_ref().map(|p| &p.0))?;
            complete(id)
        })())
    })
}

/// `rdma_reject`: the initiator gets REJECTED with this private data.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_reject(id: *mut rdma_cm_id, private_data: *const c_void, len: u8) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            let pd = if private_data.is_null() || len == 0 {
                Vec::new()
            } else {
                // SAFETY: the caller's `len` bytes.
                unsafe { core::slice::from_raw_parts(private_data.cast::<u8>(), len.into()) }.to_vec()
            };
            cm::reject(&i, &pd)
        })())
    })
}

/// `rdma_disconnect`: DISCONNECTED follows on both sides.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_disconnect(id: *mut rdma_cm_id) -> c_int {
    guard(-1, || ret_m1(lookup(id).and_then(|i| cm::disconnect(&i))))
}

/// `rdma_establish` (RDMACM_1.2): nothing to do once connected (the connection manager moved
/// the queue pair); `EINVAL` for an identifier with a queue pair of its own, as rdma-core.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_establish(id: *mut rdma_cm_id) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: a live identifier (looked up above).
            let own = !unsafe { id_mut(id).qp }.is_null();
            cm::establish(&i, own)
        })())
    })
}

/// `rdma_init_qp_attr` (RDMACM_1.2): what an iWARP queue pair takes by hand in each state,
/// as Linux's iWARP connection manager answers: INIT and RTR the state and remote read and
/// write access, RTS the state alone; `EINVAL` for other states.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_init_qp_attr(id: *mut rdma_cm_id, attr: *mut ibv_qp_attr, mask: *mut c_int) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            lookup(id)?;
            // SAFETY: the caller's in/out argument.
            let mut a = unsafe { input(attr) }?;
            if mask.is_null() {
                return Err(Errno::INVAL);
            }
            let m = match a.qp_state {
                ibv_qp_state_IBV_QPS_INIT | ibv_qp_state_IBV_QPS_RTR => {
                    a.qp_access_flags =
                        ibv_access_flags_IBV_ACCESS_REMOTE_WRITE | ibv_access_flags_IBV_ACCESS_REMOTE_READ;
                    ibv_qp_attr_mask_IBV_QP_STATE | ibv_qp_attr_mask_IBV_QP_ACCESS_FLAGS
                }
                ibv_qp_state_IBV_QPS_RTS => ibv_qp_attr_mask_IBV_QP_STATE,
                _ => return Err(Errno::INVAL),
            };
            // SAFETY: the caller's output arguments (checked not NULL).
            unsafe {
                out(attr, a)?;
                out(mask, m as c_int)
            }
        })())
    })
}

/// `rdma_set_option`: the `RDMA_OPTION_ID` options (type of service, address reuse, IPv6
/// only, ACK timeout) are accepted and change nothing over TCP loopback; InfiniBand path
/// records are `EOPNOTSUPP`; anything else `ENOSYS`, as the kernel answers.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_set_option(
    id: *mut rdma_cm_id,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: usize,
) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            lookup(id)?;
            if optval.is_null() {
                return Err(Errno::INVAL);
            }
            const TOS: i32 = RDMA_OPTION_ID_TOS as i32;
            const REUSEADDR: i32 = RDMA_OPTION_ID_REUSEADDR as i32;
            const AFONLY: i32 = RDMA_OPTION_ID_AFONLY as i32;
            const ACK_TIMEOUT: i32 = RDMA_OPTION_ID_ACK_TIMEOUT as i32;
            match (level as u32, optname) {
                (RDMA_OPTION_ID, TOS | ACK_TIMEOUT) if optlen == 1 => Ok(()),
                (RDMA_OPTION_ID, REUSEADDR | AFONLY) if optlen == 4 => Ok(()),
                (RDMA_OPTION_ID, TOS | ACK_TIMEOUT | REUSEADDR | AFONLY) => Err(Errno::INVAL),
                (RDMA_OPTION_IB, _) => Err(Errno::NOTSUP),
                _ => Err(Errno(libc::ENOSYS)),
            }
        })())
    })
}

// ---------------------------------------------------------------------------------------------
// Events

/// A handed-out event and the private data it points to.
#[repr(C)]
struct EventBox {
    ev: rdma_cm_event,
    private_data: [u8; 256],
}

/// Takes the channel's next event and makes it a C structure; applies what it tells the
/// identifier (addresses).
fn get_event(channel: Addr) -> Res<*mut rdma_cm_event> {
    // A channel this library does not know (destroyed, or never made): rdma-core reads the
    // channel's descriptor, which is closed by then, and answers EBADF; so do we. NULL stays
    // EINVAL.
    let ch = cm::channel(channel).map_err(|e| if channel == 0 { e } else { Errno::BADF })?;
    let e: Event = ch.next()?;
    let mut b = Box::new(EventBox {
        ev: rdma_cm_event {
            id: e.id as *mut rdma_cm_id,
            listen_id: e.listen_id as *mut rdma_cm_id,
            event: e.kind,
            status: e.status,
            ..Default::default()
        },
        private_data: [0; 256],
    });
    let n = e.private_data.len().min(255);
    b.private_data[..n].copy_from_slice(&e.private_data[..n]);
    let pd_ptr = if n > 0 { b.private_data.as_ptr().cast::<c_void>() } else { core::ptr::null() };
    // SAFETY: `conn` is the union member of connected (RC) identifiers; the box is ours.
    let conn = unsafe { b.ev.param.conn.as_mut() };
    *conn = rdma_conn_param {
        private_data: pd_ptr,
        private_data_len: n as u8,
        responder_resources: e.responder_resources,
        initiator_depth: e.initiator_depth,
        ..Default::default()
    };
    if let Some((src, dst)) = e.route {
        if cm::id(e.id).is_ok() {
            // SAFETY: a live identifier (looked up just now); the application reads its
            // route between events, as with rdma-core, which writes it at this point too.
            set_route(unsafe { id_mut(e.id as *mut rdma_cm_id) }, src, dst);
        }
    }
    let p = Box::into_raw(b);
    cm::handed_out(p as Addr, e.id);
    Ok(p.cast::<rdma_cm_event>())
}

/// `rdma_get_cm_event`: waits for the channel's next event unless its descriptor was made
/// non-blocking (then `EAGAIN` when none waits); `EBADF` for a channel already destroyed.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_get_cm_event(channel: *mut rdma_event_channel, event: *mut *mut rdma_cm_event) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            if event.is_null() {
                return Err(Errno::INVAL);
            }
            let ev = get_event(channel as Addr)?;
            // SAFETY: the caller's output argument (checked not NULL).
            unsafe { out(event, ev) }
        })())
    })
}

fn ack_event(ev: Addr) -> Res<()> {
    let zombie = cm::ack(ev)?;
    // SAFETY: an event get_event allocated as an EventBox, known to the registry until the
    // acknowledgement just now: freed once.
    unsafe { free(ev as *mut EventBox) };
    if let Some(id) = zombie {
        // SAFETY: a destroyed identifier whose last event this was: freed once.
        unsafe { free(id as *mut rdma_cm_id) };
    }
    Ok(())
}

/// `rdma_ack_cm_event`: frees the event; `EINVAL` for one not handed out (or acknowledged
/// twice).
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_ack_cm_event(event: *mut rdma_cm_event) -> c_int {
    guard(-1, || ret_m1(ack_event(event as Addr)))
}

/// `rdma_event_str`.
#[no_mangle]
pub extern "C" fn rdma_event_str(event: rdma_cm_event_type) -> *const c_char {
    crate::strings::cm_event(event.into()).as_ptr()
}

// ---------------------------------------------------------------------------------------------
// Queue pairs on identifiers

/// Creates the queue pair of `rdma_create_qp` and `rdma_create_qp_ex`.
fn create_qp_on(id: *mut rdma_cm_id, pd: *mut ibv_pd, a: QpInitCopy) -> Res<(*mut ibv_qp, ibv_qp_cap)> {
    let i = lookup(id)?;
    // SAFETY: a live identifier (looked up above).
    let c = unsafe { id_mut(id) };
    if !c.qp.is_null() {
        return Err(Errno::INVAL);
    }
    let pd = if pd.is_null() { c.pd } else { pd };
    let (_, pd_ctx) = state::pd(pd as Addr)?;
    if pd_ctx != c.verbs as Addr {
        return Err(Errno::INVAL);
    }
    // Missing completion queues are made here, each with a channel of its own (the
    // rdma_verbs.h helpers wait on them).
    let mut made = cm::Extra::default();
    let mut cq_for = |given: Addr, n: u32, slot_ch: &mut *mut ibv_comp_channel, slot_cq: &mut *mut ibv_cq| {
        if given != 0 {
            return Ok(given as *mut ibv_cq);
        }
        let ch = verbs::create_comp_channel(c.verbs)?;
        made.comp_channels.push(ch as Addr);
        super::make_blocking(ch);
        let cq = verbs::create_cq(c.verbs, n.max(1) as i32, id.cast(), ch, 0)?;
        made.cqs.push(cq as Addr);
        *slot_ch = ch;
        *slot_cq = cq;
        Ok::<_, Errno>(cq)
    };
    let mut ch_s = core::ptr::null_mut();
    let mut cq_s = core::ptr::null_mut();
    let mut ch_r = core::ptr::null_mut();
    let mut cq_r = core::ptr::null_mut();
    let made_qp = (|| {
        let send_cq = cq_for(a.send_cq, a.cap.max_send_wr, &mut ch_s, &mut cq_s)?;
        let recv_cq = cq_for(a.recv_cq, a.cap.max_recv_wr, &mut ch_r, &mut cq_r)?;
        let req = QpRequest {
            pd,
            qp_context: a.qp_context as *mut c_void,
            send_cq,
            recv_cq,
            // As rdma-core: the identifier's shared receive queue (rdma_create_srq) unless
            // the attributes name one.
            srq: if a.srq != 0 { a.srq as *mut ibv_srq } else { c.srq },
            cap: a.cap,
            qp_type: a.qp_type,
            sq_sig_all: a.sq_sig_all != 0,
        };
        verbs::create_qp(&req)
    })();
    let (qp, cap) = match made_qp {
        Ok(q) => q,
        Err(e) => {
            destroy_extra(&made);
            return Err(e);
        }
    };
    // As rdma-core, the new queue pair is in INIT.
    if let Ok((q, _)) = state::qp(qp as Addr) {
        if let Ok(s) = verbs::modify_qp(&q, ibv_qp_attr_mask_IBV_QP_STATE, ibv_qp_state_IBV_QPS_INIT, 0, 1) {
            // SAFETY: the queue pair just made.
            unsafe { (*qp).state = s };
        }
    }
    if !cq_s.is_null() {
        c.send_cq_channel = ch_s;
        c.send_cq = cq_s;
    }
    if !cq_r.is_null() {
        c.recv_cq_channel = ch_r;
        c.recv_cq = cq_r;
    }
    c.qp = qp;
    c.pd = pd;
    let mut st = i.state();
    st.extra.cqs.extend(made.cqs);
    st.extra.comp_channels.extend(made.comp_channels);
    Ok((qp, cap))
}

fn destroy_extra(x: &cm::Extra) {
    for &cq in &x.cqs {
        // SAFETY: completion queues this module made; the exported destroy checks them.
        unsafe { super::ibv_destroy_cq(cq as *mut ibv_cq) };
    }
    for &ch in &x.comp_channels {
        // SAFETY: as above, channels.
        unsafe { super::ibv_destroy_comp_channel(ch as *mut ibv_comp_channel) };
    }
}

fn init_copy(i: &ibv_qp_init_attr) -> QpInitCopy {
    QpInitCopy {
        qp_context: i.qp_context as usize,
        send_cq: i.send_cq as Addr,
        recv_cq: i.recv_cq as Addr,
        srq: i.srq as Addr,
        cap: i.cap,
        qp_type: i.qp_type,
        sq_sig_all: i.sq_sig_all,
    }
}

/// `rdma_create_qp`: on `id->verbs`; `pd` NULL takes `id->pd`; a domain of another context
/// is `EINVAL`; completion queues not given are made (with channels) and kept in the
/// identifier; the queue pair is `id->qp`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_create_qp(id: *mut rdma_cm_id, pd: *mut ibv_pd, attr: *mut ibv_qp_init_attr) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            // SAFETY: the caller's attributes.
            let a = unsafe { input(attr) }?;
            let (_, cap) = create_qp_on(id, pd, init_copy(&a))?;
            // SAFETY: as above, its capabilities written back.
            unsafe { (*attr).cap = cap };
            Ok(())
        })())
    })
}

/// `rdma_create_qp_ex`: as `rdma_create_qp`, with the domain in the attributes
/// (`IBV_QP_INIT_ATTR_PD`); other extensions are `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_create_qp_ex(id: *mut rdma_cm_id, attr: *mut ibv_qp_init_attr_ex) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            // SAFETY: the caller's attributes.
            let a = unsafe { input(attr) }?;
            if a.comp_mask & !ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD != 0 {
                return Err(Errno::NOTSUP);
            }
            let pd =
                if a.comp_mask & ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD != 0 { a.pd } else { core::ptr::null_mut() };
            let copy = QpInitCopy {
                qp_context: a.qp_context as usize,
                send_cq: a.send_cq as Addr,
                recv_cq: a.recv_cq as Addr,
                srq: a.srq as Addr,
                cap: a.cap,
                qp_type: a.qp_type,
                sq_sig_all: a.sq_sig_all,
            };
            let (_, cap) = create_qp_on(id, pd, copy)?;
            // SAFETY: as above, its capabilities written back.
            unsafe { (*attr).cap = cap };
            Ok(())
        })())
    })
}

/// `rdma_destroy_qp`: destroys `id->qp` and the completion queues `rdma_create_qp` made.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_qp(id: *mut rdma_cm_id) {
    guard((), || {
        let r = (|| {
            let i = lookup(id)?;
            // SAFETY: a live identifier (looked up above).
            let c = unsafe { id_mut(id) };
            if c.qp.is_null() {
                return Err(Errno::INVAL);
            }
            let qp = c.qp;
            cm::forget_qp(&i, qp as Addr);
            // SAFETY: the identifier's queue pair, checked by the exported destroy.
            let r = unsafe { super::ibv_destroy_qp(qp) };
            if r != 0 {
                return Err(Errno(r));
            }
            c.qp = core::ptr::null_mut();
            let extra = core::mem::take(&mut i.state().extra);
            let keep = cm::Extra {
                qp_init_attr: extra.qp_init_attr,
                pd: extra.pd,
                connect_data: extra.connect_data.clone(),
                ..Default::default()
            };
            destroy_extra(&extra);
            i.state().extra = keep;
            c.send_cq = core::ptr::null_mut();
            c.send_cq_channel = core::ptr::null_mut();
            c.recv_cq = core::ptr::null_mut();
            c.recv_cq_channel = core::ptr::null_mut();
            Ok(())
        })();
        if let Err(Errno(e)) = r {
            set_errno(e);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Devices

/// `rdma_get_devices`: a NULL-terminated array holding librdmacm's one context.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_get_devices(num: *mut c_int) -> *mut *mut ibv_context {
    guard(core::ptr::null_mut(), || match cm_context() {
        Ok(c) => {
            if !num.is_null() {
                // SAFETY: the caller's optional output argument, not NULL.
                unsafe { num.write(1) };
            }
            let list = Box::into_raw(Box::new([c, core::ptr::null_mut()]));
            DEVICE_LISTS.lock().unwrap_or_else(|e| e.into_inner()).push(list as Addr);
            list.cast()
        }
        Err(Errno(e)) => {
            set_errno(e);
            core::ptr::null_mut()
        }
    })
}

static DEVICE_LISTS: Mutex<Vec<Addr>> = Mutex::new(Vec::new());

/// `rdma_free_devices`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_free_devices(list: *mut *mut ibv_context) {
    guard((), || {
        let mut lists = DEVICE_LISTS.lock().unwrap_or_else(|e| e.into_inner());
        match lists.iter().position(|&l| l == list as Addr) {
            Some(pos) => {
                lists.remove(pos);
                // SAFETY: a list rdma_get_devices allocated, freed once.
                unsafe { free(list.cast::<[*mut ibv_context; 2]>()) };
            }
            None => set_errno(libc::EINVAL),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Address information and endpoints (the synchronous style of rdma_server/rdma_client)

/// An `rdma_addrinfo` and the addresses it points to.
#[repr(C)]
struct AddrInfoBox {
    ai: rdma_addrinfo,
    src: sockaddr_in6,
    dst: sockaddr_in6,
    connect: [u8; 256],
}

static ADDR_INFOS: Mutex<Vec<Addr>> = Mutex::new(Vec::new());

fn store(slot: &mut sockaddr_in6, a: SocketAddr) -> (*mut sockaddr, socklen_t) {
    let p: *mut sockaddr_in6 = slot;
    match a {
        SocketAddr::V4(v) => {
            // SAFETY: a sockaddr_in is smaller than the sockaddr_in6 slot and less aligned.
            unsafe { p.cast::<sockaddr_in>().write(sin(v)) };
            (p.cast(), core::mem::size_of::<sockaddr_in>() as socklen_t)
        }
        SocketAddr::V6(v) => {
            *slot = sin6(v);
            (p.cast(), core::mem::size_of::<sockaddr_in6>() as socklen_t)
        }
    }
}

/// `rdma_getaddrinfo`: numeric or resolvable node names and numeric services; the address
/// goes to `ai_src_addr` with `RAI_PASSIVE`, to `ai_dst_addr` otherwise (with the hints'
/// source, if any). Port space TCP and RC queue pairs unless the hints say otherwise (which
/// later calls refuse). Failure is -1 with `errno`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const rdma_addrinfo,
    res: *mut *mut rdma_addrinfo,
) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            if res.is_null() || (node.is_null() && service.is_null()) {
                return Err(Errno::INVAL);
            }
            let h = if hints.is_null() {
                rdma_addrinfo::default()
            } else {
                // SAFETY: the caller's hints.
                unsafe { hints.read() }
            };
            // SAFETY: NUL-terminated strings of the caller, when not NULL.
            let (node, service) = unsafe {
                let s = |p: *const c_char| (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned());
                (s(node), s(service))
            };
            let port: u16 = match &service {
                Some(s) => s.parse().map_err(|_| Errno::INVAL)?,
                None => 0,
            };
            let passive = h.ai_flags & RAI_PASSIVE as c_int != 0;
            let want6 = h.ai_family == libc::AF_INET6;
            let want4 = h.ai_family == libc::AF_INET;
            let addr = match &node {
                None => SocketAddr::new(
                    if want6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) },
                    port,
                ),
                Some(n) => (n.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|_| Errno(libc::EADDRNOTAVAIL))?
                    .find(|a| !(want6 && a.is_ipv4() || want4 && a.is_ipv6()))
                    .ok_or(Errno(libc::EADDRNOTAVAIL))?,
            };
            let mut b = Box::new(AddrInfoBox {
                ai: rdma_addrinfo {
                    ai_flags: h.ai_flags,
                    ai_family: if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 },
                    ai_qp_type: if h.ai_qp_type != 0 { h.ai_qp_type } else { ibv_qp_type_IBV_QPT_RC as c_int },
                    ai_port_space: if h.ai_port_space != 0 {
                        h.ai_port_space
                    } else {
                        rdma_port_space_RDMA_PS_TCP as c_int
                    },
                    ..Default::default()
                },
                src: sin6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
                dst: sin6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
                connect: [0; 256],
            });
            if passive {
                let (p, l) = store(&mut b.src, addr);
                b.ai.ai_src_addr = p;
                b.ai.ai_src_len = l;
            } else {
                let (p, l) = store(&mut b.dst, addr);
                b.ai.ai_dst_addr = p;
                b.ai.ai_dst_len = l;
                if !h.ai_src_addr.is_null() {
                    // SAFETY: the hints' source address.
                    let s = unsafe { read_sockaddr(h.ai_src_addr) }?;
                    let (p, l) = store(&mut b.src, s);
                    b.ai.ai_src_addr = p;
                    b.ai.ai_src_len = l;
                }
            }
            if !h.ai_connect.is_null() && h.ai_connect_len > 0 {
                let n = (h.ai_connect_len as usize).min(b.connect.len());
                // SAFETY: the hints' connection data, `ai_connect_len` bytes.
                let data = unsafe { core::slice::from_raw_parts(h.ai_connect.cast::<u8>(), n) };
                b.connect[..n].copy_from_slice(data);
                b.ai.ai_connect = b.connect.as_mut_ptr().cast();
                b.ai.ai_connect_len = n as _;
            }
            let p = Box::into_raw(b);
            ADDR_INFOS.lock().unwrap_or_else(|e| e.into_inner()).push(p as Addr);
            // SAFETY: the caller's output argument (checked not NULL).
            unsafe { out(res, p.cast::<rdma_addrinfo>()) }
        })())
    })
}

/// `rdma_freeaddrinfo`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_freeaddrinfo(res: *mut rdma_addrinfo) {
    guard((), || {
        let mut l = ADDR_INFOS.lock().unwrap_or_else(|e| e.into_inner());
        match l.iter().position(|&a| a == res as Addr) {
            Some(pos) => {
                l.remove(pos);
                // SAFETY: allocated by rdma_getaddrinfo as an AddrInfoBox, freed once.
                unsafe { free(res.cast::<AddrInfoBox>()) };
            }
            None => set_errno(libc::EINVAL),
        }
    })
}

/// `rdma_create_ep`: a synchronous identifier from `rdma_getaddrinfo`'s answer. Passive: bound
/// to `ai_src_addr`, the domain and queue pair attributes kept for `rdma_get_request`.
/// Active: address and route resolved, the queue pair made if asked, `ai_connect` kept for
/// `rdma_connect`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_create_ep(
    id: *mut *mut rdma_cm_id,
    res: *mut rdma_addrinfo,
    pd: *mut ibv_pd,
    qp_init_attr: *mut ibv_qp_init_attr,
) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            // SAFETY: the caller's address information.
            let r = unsafe { input(res) }?;
            if id.is_null() {
                return Err(Errno::INVAL);
            }
            let mut new: *mut rdma_cm_id = core::ptr::null_mut();
            create_id(0, &mut new, 0, r.ai_port_space as u32)?;
            let made = (|| {
                let i = lookup(new)?;
                if r.ai_flags & RAI_PASSIVE as c_int != 0 {
                    // SAFETY: the answer's source address.
                    let a = unsafe { read_sockaddr(r.ai_src_addr) }?;
                    let local = cm::bind_addr(&i, a)?;
                    // SAFETY: the identifier just made.
                    let c = unsafe { id_mut(new) };
                    set_route(c, Some(local), None);
                    if !pd.is_null() {
                        state::pd(pd as Addr)?;
                        c.pd = pd;
                    }
                    if !qp_init_attr.is_null() {
                        // SAFETY: the caller's attributes.
                        let mut a = unsafe { qp_init_attr.read() };
                        a.qp_type = r.ai_qp_type as u32;
                        i.state().extra.qp_init_attr = Some(init_copy(&a));
                    }
                    return Ok(());
                }
                // SAFETY: the answer's addresses (the source may be NULL).
                let (s, d) = unsafe {
                    let s = if r.ai_src_addr.is_null() { None } else { Some(read_sockaddr(r.ai_src_addr)?) };
                    (s, read_sockaddr(r.ai_dst_addr)?)
                };
                cm::resolve_addr(new as Addr, &i, s, d)?;
                complete(new)?;
                cm::resolve_route(new as Addr, &i)?;
                complete(new)?;
                if !qp_init_attr.is_null() {
                    // SAFETY: the caller's attributes.
                    let mut a = unsafe { qp_init_attr.read() };
                    a.qp_type = r.ai_qp_type as u32;
                    let (_, cap) = create_qp_on(new, pd, init_copy(&a))?;
                    // SAFETY: as above, capabilities written back.
                    unsafe {
                        (*qp_init_attr).qp_type = a.qp_type;
                        (*qp_init_attr).cap = cap;
                    }
                }
                if !r.ai_connect.is_null() && r.ai_connect_len > 0 {
                    // SAFETY: the answer's connection data.
                    let data =
                        unsafe { core::slice::from_raw_parts(r.ai_connect.cast::<u8>(), r.ai_connect_len as usize) };
                    i.state().extra.connect_data = data.to_vec();
                }
                Ok(())
            })();
            match made {
                Ok(()) => {
                    // SAFETY: the caller's output argument (checked not NULL).
                    unsafe { out(id, new) }
                }
                Err(e) => {
                    destroy_ep(new);
                    Err(e)
                }
            }
        })())
    })
}

fn destroy_ep(id: *mut rdma_cm_id) {
    // SAFETY: the exported functions check the identifier themselves.
    unsafe {
        if lookup(id).is_ok() && !id_mut(id).qp.is_null() {
            rdma_destroy_qp(id);
        }
        if lookup(id).is_ok() && !id_mut(id).srq.is_null() {
            rdma_destroy_srq(id);
        }
        rdma_destroy_id(id);
    }
}

/// `rdma_destroy_ep`: its queue pair (with what `rdma_create_qp` made), its shared receive
/// queue (`rdma_create_srq`) and the identifier.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_ep(id: *mut rdma_cm_id) {
    guard((), || {
        if lookup(id).is_err() {
            return set_errno(libc::EINVAL);
        }
        destroy_ep(id)
    })
}

/// `rdma_get_request`: a synchronous listener's next connection request, as a new
/// identifier (with a queue pair made from `rdma_create_ep`'s attributes, if it was given
/// some). `EINVAL` on an identifier with a channel.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_get_request(listen: *mut rdma_cm_id, id: *mut *mut rdma_cm_id) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let l = lookup(listen)?;
            if id.is_null() {
                return Err(Errno::INVAL);
            }
            let (sync, channel, attr) = {
                let st = l.state();
                (st.sync, st.channel, st.extra.qp_init_attr)
            };
            if !sync {
                return Err(Errno::INVAL);
            }
            // SAFETY: a live identifier (looked up above).
            let lc = unsafe { id_mut(listen) };
            let held = core::mem::replace(&mut lc.event, core::ptr::null_mut());
            if !held.is_null() {
                let _ = ack_event(held as Addr);
            }
            let ev = get_event(channel)?;
            // SAFETY: the event just made.
            let (kind, status, child) = unsafe { ((*ev).event, (*ev).status, (*ev).id) };
            let mut fail = |e: Errno| {
                lc.event = ev;
                Err(e)
            };
            if kind == rdma_cm_event_type_RDMA_CM_EVENT_REJECTED {
                return fail(Errno(libc::ECONNREFUSED));
            }
            if status != 0 {
                return fail(Errno(status.abs()));
            }
            if kind != rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST {
                return fail(Errno::INVAL);
            }
            if let Some(a) = attr {
                if let Err(e) = create_qp_on(child, lc.pd, a) {
                    return fail(e);
                }
            }
            // SAFETY: the new identifier (from the event) and the caller's output argument.
            unsafe {
                id_mut(child).event = ev;
                out(id, child)
            }
        })())
    })
}

// ---------------------------------------------------------------------------------------------
// rsockets

/// `rpoll` (rsockets): this library makes no rsockets, so every descriptor is an ordinary
/// one and `rpoll` is `poll(2)` (what rsockets does for descriptors that are not its own).
/// The examples' shared code calls it to wait on a channel's descriptor.
///
/// # Safety
/// `poll(2)`'s contract: `fds` holds `nfds` entries.
#[no_mangle]
pub unsafe extern "C" fn rpoll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int {
    // SAFETY: by this function's contract, passed on unchanged.
    unsafe { libc::poll(fds, nfds, timeout) }
}

// ---------------------------------------------------------------------------------------------
// Shared receive queues on identifiers

/// Makes a basic shared receive queue on the identifier's context: on `pd`, or `id->pd` when
/// NULL; it becomes `id->srq`, which `rdma_create_qp` then uses when its attributes name none.
fn create_srq_on(id: *mut rdma_cm_id, pd: *mut ibv_pd, context: *mut c_void, attr: ibv_srq_attr) -> Res<*mut ibv_srq> {
    lookup(id)?;
    // SAFETY: a live identifier (looked up above).
    let c = unsafe { id_mut(id) };
    if !c.srq.is_null() {
        return Err(Errno::INVAL);
    }
    let pd = if pd.is_null() { c.pd } else { pd };
    let (_, pd_ctx) = state::pd(pd as Addr)?;
    if pd_ctx != c.verbs as Addr {
        return Err(Errno::INVAL);
    }
    let srq = verbs::create_srq(pd, context, attr)?;
    c.srq = srq;
    Ok(srq)
}

/// `rdma_create_srq`: a basic shared receive queue on `id->verbs` (see `create_srq_on`); XRC
/// identifiers cannot exist here (`RDMA_PS_IB` is refused), so none is an XRC one.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_create_srq(id: *mut rdma_cm_id, pd: *mut ibv_pd, attr: *mut ibv_srq_init_attr) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            // SAFETY: the caller's attributes.
            let a = unsafe { input(attr) }?;
            create_srq_on(id, pd, a.srq_context, a.attr).map(drop)
        })())
    })
}

/// `rdma_create_srq_ex`: `IBV_SRQ_INIT_ATTR_TYPE` is required (as rdma-core), the type must be
/// `IBV_SRQT_BASIC` (XRC and tag matching: `EOPNOTSUPP`); the domain is the attributes' (with
/// `IBV_SRQ_INIT_ATTR_PD`) or `id->pd`, written back into them.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_create_srq_ex(id: *mut rdma_cm_id, attr: *mut ibv_srq_init_attr_ex) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            // SAFETY: the caller's attributes.
            let mut a = unsafe { input(attr) }?;
            lookup(id)?;
            if a.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE == 0 {
                return Err(Errno::INVAL);
            }
            let known = ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD;
            if a.comp_mask & !known != 0 || a.srq_type != ibv_srq_type_IBV_SRQT_BASIC {
                return Err(Errno::NOTSUP);
            }
            if a.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD == 0 || a.pd.is_null() {
                // SAFETY: a live identifier (looked up above).
                a.pd = unsafe { id_mut(id).pd };
                a.comp_mask |= ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD;
            }
            create_srq_on(id, a.pd, a.srq_context, a.attr)?;
            // SAFETY: the caller's attributes (read above): the domain used, written back.
            unsafe { out(attr, a) }
        })())
    })
}

/// `rdma_destroy_srq`: destroys `id->srq` and clears it. It returns nothing: while a queue
/// pair still uses the queue nothing is destroyed and errno is `EBUSY` (rdma-core would
/// destroy it under the queue pair); without one, errno is `EINVAL`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_srq(id: *mut rdma_cm_id) {
    guard((), || {
        let r = (|| {
            lookup(id)?;
            // SAFETY: a live identifier (looked up above).
            let c = unsafe { id_mut(id) };
            if c.srq.is_null() {
                return Err(Errno::INVAL);
            }
            // SAFETY: the identifier's queue, checked by the exported destroy.
            match unsafe { super::ibv_destroy_srq(c.srq) } {
                0 => {
                    c.srq = core::ptr::null_mut();
                    Ok(())
                }
                e => Err(Errno(e)),
            }
        })();
        if let Err(Errno(e)) = r {
            set_errno(e);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Multicast, notifications and ECE

/// The multicast address of a join or leave: `EINVAL` unless IPv4 or IPv6 (rdma-core's check).
///
/// # Safety
/// `addr` is NULL or a socket address of its family's size.
unsafe fn mc_addr(addr: *const sockaddr) -> Res<SocketAddr> {
    // SAFETY: by this function's contract.
    unsafe { read_sockaddr(addr) }.map_err(|_| Errno::INVAL)
}

/// `rdma_join_multicast`: iWARP has no multicast: -1 with `ENOSYS`, what Linux answers for a
/// device that is not InfiniBand or RoCE (`EINVAL` first for a bad address or an identifier
/// neither bound nor resolved). A line on stderr says why, once.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_join_multicast(id: *mut rdma_cm_id, addr: *mut sockaddr, _context: *mut c_void) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's address argument.
            unsafe { mc_addr(addr) }?;
            cm::join_multicast(&i)
        })())
    })
}

/// `rdma_join_multicast_ex` (RDMACM_1.1): the attributes checked as rdma-core does
/// (`ENOTSUP` for unknown mask bits, `EINVAL` without an address or join flags), then as
/// `rdma_join_multicast`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_join_multicast_ex(
    id: *mut rdma_cm_id,
    attr: *mut rdma_cm_join_mc_attr_ex,
    _context: *mut c_void,
) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's attributes.
            let a = unsafe { input(attr) }?;
            if a.comp_mask >= rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_RESERVED {
                return Err(Errno(libc::ENOTSUP));
            }
            if a.comp_mask & rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_ADDRESS == 0
                || a.comp_mask & rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS == 0
                || a.join_flags >= rdma_cm_mc_join_flags_RDMA_MC_JOIN_FLAG_RESERVED
            {
                return Err(Errno::INVAL);
            }
            // SAFETY: the attributes' address.
            unsafe { mc_addr(a.addr) }?;
            cm::join_multicast(&i)
        })())
    })
}

/// `rdma_leave_multicast`: no group can have been joined, so every address is one the
/// identifier is not a member of: `EADDRNOTAVAIL`, rdma-core's answer for those.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_leave_multicast(id: *mut rdma_cm_id, addr: *mut sockaddr) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            lookup(id)?;
            // SAFETY: the caller's address argument.
            unsafe { mc_addr(addr) }?;
            Err(Errno(libc::EADDRNOTAVAIL))
        })())
    })
}

/// `rdma_notify`: nothing to do on iWARP (see `cm::notify`).
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_notify(id: *mut rdma_cm_id, _event: ibv_event_type) -> c_int {
    guard(-1, || ret_m1(lookup(id).and_then(|i| cm::notify(&i))))
}

/// `rdma_set_local_ece` (RDMACM_1.3): kept for `rdma_get_remote_ece`'s peer, as rdma-core
/// checks it (`EINVAL` with a queue pair, no vendor id or a completion mask); iWARP's MPA
/// exchange has no field for it, so the peer never sees it.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_set_local_ece(id: *mut rdma_cm_id, ece: *mut ibv_ece) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            let i = lookup(id)?;
            // SAFETY: the caller's argument.
            let e = unsafe { input(ece) }?;
            // SAFETY: a live identifier (looked up above).
            if !unsafe { id_mut(id).qp }.is_null() || e.vendor_id == 0 || e.comp_mask != 0 {
                return Err(Errno::INVAL);
            }
            i.state().local_ece = Some((e.vendor_id, e.options));
            Ok(())
        })())
    })
}

/// `rdma_get_remote_ece` (RDMACM_1.3): a peer's ECE never arrives over iWARP, so it is all
/// zeros, as Linux reports for iWARP connections (`EINVAL` with a queue pair, as rdma-core).
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_get_remote_ece(id: *mut rdma_cm_id, ece: *mut ibv_ece) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            lookup(id)?;
            // SAFETY: a live identifier (looked up above).
            if !unsafe { id_mut(id).qp }.is_null() {
                return Err(Errno::INVAL);
            }
            // SAFETY: the caller's output argument.
            unsafe { out(ece, ibv_ece::default()) }
        })())
    })
}

/// `rdma_reject_ece` (RDMACM_1.3): `rdma_reject` with InfiniBand's reason "vendor option not
/// supported", which an MPA Reply cannot carry: the same as `rdma_reject`.
///
/// # Safety
/// The C caller's side of the librdmacm contract (see the module docs).
#[no_mangle]
pub unsafe extern "C" fn rdma_reject_ece(id: *mut rdma_cm_id, private_data: *const c_void, len: u8) -> c_int {
    // SAFETY: the same arguments, the same contract.
    unsafe { rdma_reject(id, private_data, len) }
}

// ---------------------------------------------------------------------------------------------
// rsockets: refused
//
// rsockets is a sockets API that rdma-core builds over rdma_cm and the verbs. This library
// makes no rsockets: `rsocket` fails with `ENOSYS`, so a program fails where it asks for one
// (rstream, riostream, rcopy, udpong print their `perror` line) rather than later. Every
// call taking an rsocket then gets a descriptor that cannot be one: -1 with `EBADF`, what
// rsockets answers for a descriptor it does not know. Each says why once on stderr.
// `rpoll` and `rselect` wait on ordinary descriptors as rsockets does for them.

/// Refuses a call on an rsocket descriptor (none exists): the stderr line once, `EBADF`.
fn not_an_rsocket(call: &'static str) {
    cm::refused_once(call, "this iWARP library makes no rsockets, so no descriptor is one", libc::EBADF);
    set_errno(libc::EBADF);
}

/// `rsocket`: -1 with `ENOSYS` (see the section's comment).
#[no_mangle]
pub extern "C" fn rsocket(_domain: c_int, _type: c_int, _protocol: c_int) -> c_int {
    guard(-1, || {
        cm::refused_once("rsocket", "rsockets are not implemented by this iWARP library", libc::ENOSYS);
        set_errno(libc::ENOSYS);
        -1
    })
}

/// Defines rsockets calls that take a descriptor and refuse it (see `not_an_rsocket`); each
/// returns its type's -1.
macro_rules! refused_rsocket_calls {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $t:ty),*) -> $ret:ty;)*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $name(_socket: c_int, $($arg: $t),*) -> $ret {
            $(let _ = $arg;)*
            guard((-1_i64) as $ret, || {
                not_an_rsocket(stringify!($name));
                (-1_i64) as $ret
            })
        }
    )*};
}

refused_rsocket_calls! {
    /// `rbind`: `EBADF`.
    fn rbind(_addr: *const sockaddr, _len: socklen_t) -> c_int;
    /// `rlisten`: `EBADF`.
    fn rlisten(_backlog: c_int) -> c_int;
    /// `raccept`: `EBADF`.
    fn raccept(_addr: *mut sockaddr, _len: *mut socklen_t) -> c_int;
    /// `rconnect`: `EBADF`.
    fn rconnect(_addr: *const sockaddr, _len: socklen_t) -> c_int;
    /// `rshutdown`: `EBADF`.
    fn rshutdown(_how: c_int) -> c_int;
    /// `rclose`: `EBADF`.
    fn rclose() -> c_int;
    /// `rrecv`: `EBADF`.
    fn rrecv(_buf: *mut c_void, _len: usize, _flags: c_int) -> isize;
    /// `rrecvfrom`: `EBADF`.
    fn rrecvfrom(_buf: *mut c_void, _len: usize, _flags: c_int, _from: *mut sockaddr, _fromlen: *mut socklen_t) -> isize;
    /// `rrecvmsg`: `EBADF`.
    fn rrecvmsg(_msg: *mut libc::msghdr, _flags: c_int) -> isize;
    /// `rsend`: `EBADF`.
    fn rsend(_buf: *const c_void, _len: usize, _flags: c_int) -> isize;
    /// `rsendto`: `EBADF`.
    fn rsendto(_buf: *const c_void, _len: usize, _flags: c_int, _to: *const sockaddr, _tolen: socklen_t) -> isize;
    /// `rsendmsg`: `EBADF`.
    fn rsendmsg(_msg: *const libc::msghdr, _flags: c_int) -> isize;
    /// `rread`: `EBADF`.
    fn rread(_buf: *mut c_void, _count: usize) -> isize;
    /// `rreadv`: `EBADF`.
    fn rreadv(_iov: *const libc::iovec, _iovcnt: c_int) -> isize;
    /// `rwrite`: `EBADF`.
    fn rwrite(_buf: *const c_void, _count: usize) -> isize;
    /// `rwritev`: `EBADF`.
    fn rwritev(_iov: *const libc::iovec, _iovcnt: c_int) -> isize;
    /// `rgetpeername`: `EBADF`.
    fn rgetpeername(_addr: *mut sockaddr, _len: *mut socklen_t) -> c_int;
    /// `rgetsockname`: `EBADF`.
    fn rgetsockname(_addr: *mut sockaddr, _len: *mut socklen_t) -> c_int;
    /// `rsetsockopt`: `EBADF`.
    fn rsetsockopt(_level: c_int, _name: c_int, _val: *const c_void, _len: socklen_t) -> c_int;
    /// `rgetsockopt`: `EBADF`.
    fn rgetsockopt(_level: c_int, _name: c_int, _val: *mut c_void, _len: *mut socklen_t) -> c_int;
    /// `rfcntl`: `EBADF`. The C function is variadic (`int rfcntl(int, int, ...)`); on x86-64
    /// a variadic call passes its arguments where a fixed one does, and this reads only the
    /// two fixed ones, so the definition matches every caller.
    fn rfcntl(_cmd: c_int) -> c_int;
    /// `riomap`: `(off_t) -1`, `EBADF`.
    fn riomap(_buf: *mut c_void, _len: usize, _prot: c_int, _flags: c_int, _offset: libc::off_t) -> libc::off_t;
    /// `riounmap`: `EBADF`.
    fn riounmap(_buf: *mut c_void, _len: usize) -> c_int;
    /// `riowrite`: `(size_t) -1`, `EBADF`.
    fn riowrite(_buf: *const c_void, _count: usize, _offset: libc::off_t, _flags: c_int) -> usize;
}

/// `rselect`: this library makes no rsockets, so every descriptor is an ordinary one and
/// `rselect` is `select(2)`, as `rpoll` is `poll(2)`.
///
/// # Safety
/// `select(2)`'s contract: each set is NULL or valid, `timeout` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn rselect(
    nfds: c_int,
    readfds: *mut libc::fd_set,
    writefds: *mut libc::fd_set,
    exceptfds: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    // SAFETY: by this function's contract, passed on unchanged.
    unsafe { libc::select(nfds, readfds, writefds, exceptfds, timeout) }
}
