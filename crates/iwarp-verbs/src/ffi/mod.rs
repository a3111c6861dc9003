//! The exported C functions of libibverbs, and the crate's only hand-written `unsafe`.
//!
//! Each function here does three things and no more: catch panics (unwinding out of
//! `extern "C"` aborts), read its C arguments into Rust values, and write results back through
//! the application's pointers. The logic is in `verbs`, `post` and `state`, in safe Rust.
//!
//! The unsafe operations, and who upholds what:
//! - **Handles** (`ibv_context *`, `ibv_pd *`, ...) are never dereferenced before the registry
//!   has confirmed that they are live objects of the right kind that this library allocated
//!   (`state::lookup`); their memory is ours until we free it in the matching destroy call.
//! - **Argument structures** (`ibv_qp_init_attr *`, `ibv_send_wr *`, output structures) are
//!   the caller's: the verbs API requires them to be valid for the call, as every
//!   implementation of it does. NULL is checked and refused with `EINVAL`; other invalid
//!   pointers are the C caller's undefined behaviour, exactly as with rdma-core.
//! - **Registered memory**: `ibv_reg_mr` hands the application's buffer to
//!   [`iwarp::ProtectionDomain::reg_mr_external`]; the verbs contract (the buffer stays
//!   allocated until `ibv_dereg_mr` returns) is the one that function's `# Safety` asks for:
//!   `ibv_dereg_mr` returns only once the stack no longer touches the buffer
//!   ([`iwarp::MemoryRegion::deregister`]).
// Matches use the C constants under bindgen's names (`ibv_qp_state_IBV_QPS_INIT`, ...).
#![allow(non_upper_case_globals)]
#![allow(unsafe_code)]

use crate::abi::*;
use crate::attrs;
use crate::post::{self, RecvReq, SendReq};
use crate::state::{self, Errno, Kind, Res};
use crate::strings;
use crate::verbs::{self, QpRequest, CONTEXT_OFFSET};
use core::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

pub(crate) mod cm;

pub(crate) fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() = e }
}

/// Runs `f`, catching a panic (reported as `EIO`).
pub(crate) fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        on_panic
    })
}

/// For functions returning 0 or an errno value (and setting errno too).
pub(crate) fn ret(r: Res<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(Errno(e)) => {
            set_errno(e);
            e
        }
    }
}

/// For functions returning 0 or -1 with errno.
pub(crate) fn ret_m1(r: Res<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(Errno(e)) => {
            set_errno(e);
            -1
        }
    }
}

/// For functions returning an object or NULL with errno.
pub(crate) fn ret_ptr<T>(r: Res<*mut T>) -> *mut T {
    r.unwrap_or_else(|Errno(e)| {
        set_errno(e);
        core::ptr::null_mut()
    })
}

/// Writes `v` to `p` after checking it is not NULL.
///
/// # Safety
/// `p` must be NULL or valid for writing a `T` (the caller's output argument).
pub(crate) unsafe fn out<T>(p: *mut T, v: T) -> Res<()> {
    if p.is_null() {
        return Err(Errno::INVAL);
    }
    // SAFETY: not NULL, and valid for writes by this function's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Writes the first `len` bytes of `v` to `p` (for structures that grew over releases, whose
/// callers pass the size they know).
///
/// # Safety
/// `p` must be NULL or valid for writing `len` bytes.
unsafe fn out_prefix<T: Copy>(p: *mut T, v: T, len: usize) -> Res<()> {
    if p.is_null() {
        return Err(Errno::INVAL);
    }
    let n = len.min(core::mem::size_of::<T>());
    // SAFETY: `v` is a live local of at least `n` bytes; `p` is valid for `len >= n` bytes by
    // this function's contract; they cannot overlap (one is on our stack).
    unsafe { core::ptr::copy_nonoverlapping((&raw const v).cast::<u8>(), p.cast::<u8>(), n) };
    Ok(())
}

/// Reads `*p` after checking it is not NULL.
///
/// # Safety
/// `p` must be NULL or valid for reading a `T` (the caller's input argument).
pub(crate) unsafe fn input<T: Copy>(p: *const T) -> Res<T> {
    if p.is_null() {
        return Err(Errno::INVAL);
    }
    // SAFETY: not NULL, valid for reads by this function's contract.
    Ok(unsafe { p.read() })
}

/// Frees a C structure this library allocated with `Box::into_raw`, once the registry has
/// removed it.
///
/// # Safety
/// `p` came from `Box::into_raw(Box<T>)` in `verbs` and is freed once (the registry entry,
/// which the caller just removed, was its only owner).
pub(crate) unsafe fn free<T>(p: *mut T) {
    // SAFETY: by this function's contract.
    drop(unsafe { Box::from_raw(p) });
}

/// Removes handle `p` of `kind` from the registry and frees its structure: 0, or the errno
/// (`EBUSY` while in use, `EINVAL` for an unknown handle) with nothing freed. For the handles
/// whose teardown is nothing more (a queue pair's is not: it also stops being watched).
fn destroy_and_free<T>(p: *mut T, kind: Kind) -> c_int {
    ret(verbs::destroy(p as usize, kind).map(|()| {
        // SAFETY: just removed from the registry, so no other call reaches it any more; verbs
        // allocates every handle of `kind` as a `Box` of its C structure.
        unsafe { free(p) }
    }))
}

// ---------------------------------------------------------------------------------------------
// Devices

/// The one `struct ibv_device`, allocated once and never freed (device pointers stay valid
/// for the process's life, as with rdma-core while a list or context refers to them).
pub(crate) fn the_device() -> *mut ibv_device {
    static DEV: OnceLock<usize> = OnceLock::new();
    *DEV.get_or_init(|| Box::into_raw(Box::new(attrs::device_struct())) as usize) as *mut ibv_device
}

fn check_device(dev: *mut ibv_device) -> Res<()> {
    if dev.is_null() || dev != the_device() {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// `ibv_get_device_list`: a NULL-terminated array with the one device.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_list(num_devices: *mut c_int) -> *mut *mut ibv_device {
    guard(core::ptr::null_mut(), || {
        let list = Box::into_raw(Box::new([the_device(), core::ptr::null_mut()]));
        state::insert(list as usize, state::Obj::DeviceList, 0, &[]);
        if !num_devices.is_null() {
            // SAFETY: the caller's optional output argument, not NULL.
            unsafe { num_devices.write(1) };
        }
        list.cast()
    })
}

/// `ibv_free_device_list`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_free_device_list(list: *mut *mut ibv_device) {
    guard((), || {
        if state::is_device_list(list as usize) && state::remove(list as usize, Kind::DeviceList).is_ok() {
            // SAFETY: a list from ibv_get_device_list (the registry knew it), freed once.
            unsafe { free(list.cast::<[*mut ibv_device; 2]>()) };
        }
    })
}

/// `ibv_get_device_name`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_name(dev: *mut ibv_device) -> *const c_char {
    guard(core::ptr::null(), || match check_device(dev) {
        // SAFETY: our device structure, never freed.
        Ok(()) => unsafe { (&raw const (*dev).name).cast() },
        Err(Errno(e)) => {
            set_errno(e);
            core::ptr::null()
        }
    })
}

/// `ibv_get_device_guid`: the node GUID in network byte order.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_guid(dev: *mut ibv_device) -> u64 {
    guard(0, || match check_device(dev) {
        Ok(()) => attrs::node_guid_be(),
        Err(Errno(e)) => {
            set_errno(e);
            0
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Contexts

pub(crate) fn context_template() -> verbs_context {
    let mut v = verbs_context {
        query_port: Some(op_query_port),
        query_device_ex: Some(op_query_device_ex),
        create_qp_ex: Some(op_create_qp_ex),
        ..Default::default()
    };
    v.context.ops.poll_cq = Some(op_poll_cq);
    v.context.ops.req_notify_cq = Some(op_req_notify_cq);
    v.context.ops.post_send = Some(op_post_send);
    v.context.ops.post_recv = Some(op_post_recv);
    v.context.ops.post_srq_recv = Some(op_post_srq_recv);
    v
}

/// `ibv_open_device`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_open_device(dev: *mut ibv_device) -> *mut ibv_context {
    guard(core::ptr::null_mut(), || {
        ret_ptr(check_device(dev).and_then(|()| verbs::open_device(dev, context_template())))
    })
}

/// `ibv_close_device`: also destroys every object still left in the context.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_close_device(ctx: *mut ibv_context) -> c_int {
    guard(libc::EIO, || {
        if cm::is_cm_context(ctx) {
            // librdmacm's context lives as long as the process (as rdma-core's does).
            return ret(Err(Errno::BUSY));
        }
        ret(state::remove_context(ctx as usize).map(|gone| {
            for (a, kind) in gone {
                // SAFETY: each address was a live registry entry of this kind, allocated by
                // `verbs` as that C type, and is now removed: freed once.
                unsafe {
                    match kind {
                        Kind::Qp => {
                            crate::cm::unwatch_qp(a);
                            free(a as *mut ibv_qp)
                        }
                        Kind::Srq => free(a as *mut ibv_srq),
                        Kind::Mr => free(a as *mut ibv_mr),
                        Kind::Cq => free(a as *mut ibv_cq),
                        Kind::Channel => free(a as *mut ibv_comp_channel),
                        Kind::Pd => free(a as *mut ibv_pd),
                        Kind::Context | Kind::DeviceList => {}
                    }
                }
            }
            // SAFETY: the context was a registry entry made by `verbs::open_device`, whose
            // `struct ibv_context` sits CONTEXT_OFFSET bytes into a boxed `verbs_context`.
            unsafe { free(ctx.cast::<u8>().sub(CONTEXT_OFFSET).cast::<verbs_context>()) };
        }))
    })
}

/// `ibv_get_async_event`: waits for the context's next asynchronous event (or fails with
/// `EAGAIN` if its `async_fd` was made non-blocking and none waits).
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_get_async_event(ctx: *mut ibv_context, event: *mut ibv_async_event) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            if event.is_null() {
                return Err(Errno::INVAL);
            }
            let (c, _) = state::context(ctx as usize)?;
            // SAFETY: fcntl(F_GETFL) on the context's own async_fd reads its flags.
            let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&c.async_rx), libc::F_GETFL) };
            let ev = c.next_event(flags & libc::O_NONBLOCK == 0)?;
            let mut out_ev = ibv_async_event { event_type: ev.event_type, ..Default::default() };
            out_ev.element.qp = ev.element as *mut ibv_qp;
            // SAFETY: the caller's output argument, checked not NULL above.
            unsafe { out(event, out_ev) }
        })())
    })
}

/// `ibv_ack_async_event`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_ack_async_event(event: *mut ibv_async_event) {
    guard((), || {
        // SAFETY: the caller's event, filled by ibv_get_async_event.
        let Ok(ev) = (unsafe { input(event) }) else { return set_errno(libc::EINVAL) };
        // The event's element says nothing of its context; acknowledge on whichever context
        // has events handed out (one per process in practice).
        let _ = ev;
        state::ack_any_async_event();
    })
}

// ---------------------------------------------------------------------------------------------
// Queries

/// `ibv_query_device`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_device(ctx: *mut ibv_context, attr: *mut ibv_device_attr) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            state::context(ctx as usize)?;
            let caps = state::device()?.capabilities();
            // SAFETY: the caller's output argument.
            unsafe { out(attr, attrs::device_attr(&caps)) }
        })())
    })
}

unsafe extern "C" fn op_query_device_ex(
    ctx: *mut ibv_context,
    input: *const ibv_query_device_ex_input,
    attr: *mut ibv_device_attr_ex,
    attr_size: size_t,
) -> c_int {
    guard(libc::EIO, || {
        let r = (|| {
            state::context(ctx as usize)?;
            if !input.is_null() {
                // SAFETY: the caller's input argument, not NULL.
                let i = unsafe { input.read() };
                if i.comp_mask != 0 {
                    return Err(Errno::INVAL);
                }
            }
            let attr_size = attr_size as usize;
            if attr_size < core::mem::size_of::<ibv_device_attr>() {
                return Err(Errno::INVAL);
            }
            let caps = state::device()?.capabilities();
            // SAFETY: the caller's output argument of `attr_size` bytes.
            unsafe { out_prefix(attr, attrs::device_attr_ex(&caps), attr_size) }
        })();
        // Returns the errno value without touching errno (the inline caller returns it).
        r.err().map_or(0, |Errno(e)| e)
    })
}

fn port_check(ctx: *mut ibv_context, port: u32) -> Res<()> {
    state::context(ctx as usize)?;
    if port != u32::from(attrs::PORT) {
        return Err(Errno::INVAL);
    }
    Ok(())
}

/// `ibv_query_port` as exported (the compat entry point, for applications that bypass the
/// header's inline): fills the 48 bytes such callers know.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_port(ctx: *mut ibv_context, port: u8, attr: *mut c_void) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            port_check(ctx, port.into())?;
            // SAFETY: the caller's output argument of the compat structure's size.
            unsafe { out_prefix(attr.cast::<ibv_port_attr>(), attrs::port_attr(), COMPAT_PORT_ATTR_LEN) }
        })())
    })
}

unsafe extern "C" fn op_query_port(ctx: *mut ibv_context, port: u8, attr: *mut ibv_port_attr, len: size_t) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            port_check(ctx, port.into())?;
            // SAFETY: the caller's output argument of `len` bytes.
            unsafe { out_prefix(attr, attrs::port_attr(), len as usize) }
        })())
    })
}

/// `ibv_query_gid`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_gid(ctx: *mut ibv_context, port: u8, index: c_int, gid: *mut ibv_gid) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            port_check(ctx, port.into())?;
            if index != 0 {
                return Err(Errno::INVAL);
            }
            // SAFETY: the caller's output argument.
            unsafe { out(gid, ibv_gid { raw: attrs::gid() }) }
        })())
    })
}

/// `_ibv_query_gid_ex` (what the header's `ibv_query_gid_ex` calls).
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn _ibv_query_gid_ex(
    ctx: *mut ibv_context,
    port: u32,
    index: u32,
    entry: *mut ibv_gid_entry,
    flags: u32,
    entry_size: usize,
) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            port_check(ctx, port)?;
            if flags != 0 {
                return Err(Errno::INVAL);
            }
            if index != 0 {
                return Err(Errno(libc::ENODATA));
            }
            let e = ibv_gid_entry {
                gid: ibv_gid { raw: attrs::gid() },
                gid_index: 0,
                port_num: port,
                gid_type: ibv_gid_type_IBV_GID_TYPE_IB,
                ndev_ifindex: 0,
            };
            // SAFETY: the caller's output argument of `entry_size` bytes.
            unsafe { out_prefix(entry, e, entry_size) }
        })())
    })
}

/// `ibv_query_gid_type` (IBVERBS_PRIVATE_34; ibv_devinfo uses it).
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_gid_type(ctx: *mut ibv_context, port: u8, index: c_uint, ty: *mut u32) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            port_check(ctx, port.into())?;
            if index != 0 {
                return Err(Errno::INVAL);
            }
            // SAFETY: the caller's output argument (an enum, 4 bytes).
            unsafe { out(ty, attrs::GID_TYPE_SYSFS) }
        })())
    })
}

/// `ibv_query_pkey`: one P_Key, the default full-membership 0xffff.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_pkey(ctx: *mut ibv_context, port: u8, index: c_int, pkey: *mut u16) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            port_check(ctx, port.into())?;
            if index != 0 {
                return Err(Errno::INVAL);
            }
            // SAFETY: the caller's output argument.
            unsafe { out(pkey, 0xffff_u16.to_be()) }
        })())
    })
}

/// `ibv_read_sysfs_file`: there is no sysfs device; always -1 with `ENOSYS`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_read_sysfs_file(
    _dir: *const c_char,
    _file: *const c_char,
    _buf: *mut c_char,
    _size: usize,
) -> c_int {
    set_errno(libc::ENOSYS);
    -1
}

/// `ibv_fork_init`: nothing to prepare (registration does not pin pages), 0.
#[no_mangle]
pub extern "C" fn ibv_fork_init() -> c_int {
    0
}

/// `ibv_wc_status_str`.
#[no_mangle]
pub extern "C" fn ibv_wc_status_str(status: c_int) -> *const c_char {
    strings::wc_status(status.into()).as_ptr()
}

/// `ibv_event_type_str`.
#[no_mangle]
pub extern "C" fn ibv_event_type_str(event: c_int) -> *const c_char {
    strings::event_type(event.into()).as_ptr()
}

/// `ibv_port_state_str`.
#[no_mangle]
pub extern "C" fn ibv_port_state_str(state: c_int) -> *const c_char {
    strings::port_state(state.into()).as_ptr()
}

// ---------------------------------------------------------------------------------------------
// Protection domains and memory regions

/// `ibv_alloc_pd`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_alloc_pd(ctx: *mut ibv_context) -> *mut ibv_pd {
    guard(core::ptr::null_mut(), || ret_ptr(verbs::alloc_pd(ctx)))
}

/// `ibv_dealloc_pd`: `EBUSY` while regions, queues or queue pairs use the domain.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_dealloc_pd(pd: *mut ibv_pd) -> c_int {
    guard(libc::EIO, || destroy_and_free(pd, Kind::Pd))
}

fn reg(pd: *mut ibv_pd, buf: *mut c_void, len: usize, iova: u64, access: u32) -> *mut ibv_mr {
    ret_ptr(verbs::reg_mr(pd, buf.cast(), len, iova, access, |p, rights| {
        // SAFETY: ibv_reg_mr's contract: the application keeps `buf..buf+len` allocated and
        // in place until ibv_dereg_mr returns (which waits until the stack is done with it),
        // and does not touch bytes while the stack or a peer may (the RDMA rules); that is
        // what reg_mr_external's # Safety asks. NULL is refused before this call.
        unsafe { p.reg_mr_external(buf.cast(), len, rights) }
    }))
}

/// `ibv_reg_mr` (what the header's macro calls with constant access flags).
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_reg_mr(pd: *mut ibv_pd, buf: *mut c_void, len: usize, access: c_int) -> *mut ibv_mr {
    guard(core::ptr::null_mut(), || reg(pd, buf, len, buf as u64, access as u32))
}

/// `ibv_reg_mr_iova2`: the I/O virtual address must be the buffer's address.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_reg_mr_iova2(
    pd: *mut ibv_pd,
    buf: *mut c_void,
    len: usize,
    iova: u64,
    access: c_uint,
) -> *mut ibv_mr {
    guard(core::ptr::null_mut(), || reg(pd, buf, len, iova, access))
}

/// `ibv_dereg_mr`: when it returns 0 the stack no longer touches the buffer, which the
/// application may free (see `verbs::dereg_mr`).
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_dereg_mr(mr: *mut ibv_mr) -> c_int {
    guard(libc::EIO, || {
        ret(verbs::dereg_mr(mr as usize).map(|()| {
            // SAFETY: just removed from the registry, so no other call reaches it any more;
            // verbs allocates every `ibv_mr` as a `Box`.
            unsafe { free(mr) }
        }))
    })
}

// ---------------------------------------------------------------------------------------------
// Completion channels and queues

/// `ibv_create_comp_channel`. Its descriptor starts blocking, as rdma-core's does: the
/// application may make it non-blocking, and `ibv_get_cq_event` follows that choice.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_create_comp_channel(ctx: *mut ibv_context) -> *mut ibv_comp_channel {
    guard(core::ptr::null_mut(), || ret_ptr(verbs::create_comp_channel(ctx).inspect(|&ch| make_blocking(ch))))
}

/// Makes a new completion channel's descriptor blocking, as rdma-core's is. The stack makes
/// it non-blocking. Blocking, its waits still work: `CompletionChannel::get_event` reads the
/// descriptor (which then sleeps until a notification) before it polls, and a blocking read
/// is only reached with no timeout (see ibv_get_cq_event).
pub(crate) fn make_blocking(ch: *mut ibv_comp_channel) {
    // SAFETY: a channel just created by verbs (its `fd` is the stack's descriptor); fcntl on
    // it touches no memory of ours.
    unsafe {
        let fd = (*ch).fd;
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
}

/// `ibv_destroy_comp_channel`: `EBUSY` while a completion queue uses it.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_comp_channel(ch: *mut ibv_comp_channel) -> c_int {
    guard(libc::EIO, || destroy_and_free(ch, Kind::Channel))
}

/// `ibv_create_cq`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_create_cq(
    ctx: *mut ibv_context,
    cqe: c_int,
    cq_context: *mut c_void,
    channel: *mut ibv_comp_channel,
    comp_vector: c_int,
) -> *mut ibv_cq {
    guard(core::ptr::null_mut(), || ret_ptr(verbs::create_cq(ctx, cqe, cq_context, channel, comp_vector)))
}

/// `ibv_destroy_cq`: `EBUSY` while a queue pair uses it or notifications are unacknowledged.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_cq(cq: *mut ibv_cq) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            verbs::destroy_cq(cq)?;
            // SAFETY: removed from the registry just now; allocated by verbs::create_cq.
            unsafe { free(cq) };
            Ok(())
        })())
    })
}

/// `ibv_get_cq_event`: waits for a notification on the channel, in `read(2)` of its
/// descriptor as rdma-core does: a signal interrupts the wait with `EINTR` (unless its
/// handler asked for `SA_RESTART`), and a non-blocking descriptor with nothing queued fails
/// with `EAGAIN`. qperf ends each test with `SIGALRM` and expects the `EINTR`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_get_cq_event(
    ch: *mut ibv_comp_channel,
    cq: *mut *mut ibv_cq,
    cq_context: *mut *mut c_void,
) -> c_int {
    guard(-1, || {
        ret_m1((|| {
            if cq.is_null() || cq_context.is_null() {
                return Err(Errno::INVAL);
            }
            let (chan, _) = state::channel(ch as usize)?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&chan.ch);
            let mut spun = false;
            loop {
                let next = match chan.ch.pop_event() {
                    Some(id) => Some(id),
                    None if !spun => {
                        spun = true;
                        post::spin_for_event(&chan)
                    }
                    None => None,
                };
                let Some(id) = next else {
                    let mut v = 0u64;
                    // SAFETY: reads at most 8 bytes into a live u64, from the channel's own
                    // descriptor (blocking unless the application made it non-blocking).
                    let r = unsafe { libc::read(fd, (&raw mut v).cast(), 8) };
                    if r < 0 {
                        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
                        return Err(if e == libc::EWOULDBLOCK { Errno::AGAIN } else { Errno(e) });
                    }
                    continue;
                };
                let Some(&a) = chan.cqs.lock().unwrap_or_else(|e| e.into_inner()).get(&id) else {
                    continue; // a queue destroyed since it fired
                };
                let Ok((q, _)) = state::cq(a) else {
                    continue; // destroyed between the two lookups
                };
                q.unacked_events.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let p = a as *mut ibv_cq;
                // SAFETY: a live completion queue of ours; the outputs were checked not NULL.
                unsafe {
                    out(cq, p)?;
                    out(cq_context, (*p).cq_context)?;
                }
                return Ok(());
            }
        })())
    })
}

/// `ibv_ack_cq_events`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_ack_cq_events(cq: *mut ibv_cq, nevents: c_uint) {
    guard((), || {
        if let Err(Errno(e)) = state::cq(cq as usize).and_then(|(q, _)| state::ack(&q.unacked_events, nevents)) {
            set_errno(e);
        }
    })
}

unsafe extern "C" fn op_poll_cq(cq: *mut ibv_cq, n: c_int, wc: *mut ibv_wc) -> c_int {
    guard(-1, || {
        let Ok((q, _)) = state::cq(cq as usize) else { return -1 };
        let Ok(n) = usize::try_from(n) else { return -1 };
        if wc.is_null() {
            return if n == 0 { 0 } else { -1 };
        }
        // SAFETY: ibv_poll_cq's contract: `wc` holds `n` entries.
        let slots = unsafe { core::slice::from_raw_parts_mut(wc, n) };
        post::poll(&q, slots) as c_int
    })
}

unsafe extern "C" fn op_req_notify_cq(cq: *mut ibv_cq, solicited_only: c_int) -> c_int {
    guard(libc::EIO, || ret(state::cq(cq as usize).map(|(q, _)| q.cq.req_notify(solicited_only != 0))))
}

// ---------------------------------------------------------------------------------------------
// Shared receive queues and queue pairs

/// `ibv_create_srq`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_create_srq(pd: *mut ibv_pd, init: *mut ibv_srq_init_attr) -> *mut ibv_srq {
    guard(core::ptr::null_mut(), || {
        ret_ptr((|| {
            // SAFETY: the caller's input argument.
            let i = unsafe { input(init) }?;
            verbs::create_srq(pd, i.srq_context, i.attr)
        })())
    })
}

/// `ibv_destroy_srq`: `EBUSY` while a queue pair uses it.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_srq(srq: *mut ibv_srq) -> c_int {
    guard(libc::EIO, || destroy_and_free(srq, Kind::Srq))
}

/// `ibv_modify_srq`: only `IBV_SRQ_LIMIT` (see `verbs::modify_srq`); returns an errno.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_modify_srq(srq: *mut ibv_srq, attr: *mut ibv_srq_attr, mask: c_int) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            // SAFETY: the caller's input argument.
            let a = unsafe { input(attr) }?;
            verbs::modify_srq(srq as usize, &a, mask as u32)
        })())
    })
}

/// `ibv_query_srq`: returns an errno.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_srq(srq: *mut ibv_srq, attr: *mut ibv_srq_attr) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            if attr.is_null() {
                return Err(Errno::INVAL);
            }
            let a = verbs::query_srq(srq as usize)?;
            // SAFETY: the caller's output argument, checked not NULL above.
            unsafe { out(attr, a) }
        })())
    })
}

pub(crate) fn create_qp(req: QpRequest, cap_out: *mut ibv_qp_cap) -> Res<*mut ibv_qp> {
    let (qp, cap) = verbs::create_qp(&req)?;
    // SAFETY: `cap_out` points into the caller's init attributes (read just before).
    unsafe { cap_out.write(cap) };
    Ok(qp)
}

/// `ibv_create_qp`: RC only.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_create_qp(pd: *mut ibv_pd, init: *mut ibv_qp_init_attr) -> *mut ibv_qp {
    guard(core::ptr::null_mut(), || {
        ret_ptr((|| {
            // SAFETY: the caller's input argument.
            let i = unsafe { input(init) }?;
            let req = QpRequest {
                pd,
                qp_context: i.qp_context,
                send_cq: i.send_cq,
                recv_cq: i.recv_cq,
                srq: i.srq,
                cap: i.cap,
                qp_type: i.qp_type,
                sq_sig_all: i.sq_sig_all != 0,
            };
            // SAFETY: `init` is valid (read above); `cap` is a field of it.
            create_qp(req, unsafe { &raw mut (*init).cap })
        })())
    })
}

unsafe extern "C" fn op_create_qp_ex(ctx: *mut ibv_context, init: *mut ibv_qp_init_attr_ex) -> *mut ibv_qp {
    guard(core::ptr::null_mut(), || {
        ret_ptr((|| {
            state::context(ctx as usize)?;
            // SAFETY: the caller's input argument.
            let i = unsafe { input(init) }?;
            if i.comp_mask & !ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD != 0 {
                // XRC, TSO, RSS, create flags and the extended post API are not implemented.
                return Err(Errno::NOTSUP);
            }
            if i.comp_mask & ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD == 0 {
                return Err(Errno::INVAL);
            }
            let req = QpRequest {
                pd: i.pd,
                qp_context: i.qp_context,
                send_cq: i.send_cq,
                recv_cq: i.recv_cq,
                srq: i.srq,
                cap: i.cap,
                qp_type: i.qp_type,
                sq_sig_all: i.sq_sig_all != 0,
            };
            if state::pd(i.pd as usize)?.1 != ctx as usize {
                return Err(Errno::INVAL);
            }
            // SAFETY: `init` is valid (read above); `cap` is a field of it.
            create_qp(req, unsafe { &raw mut (*init).cap })
        })())
    })
}

/// `ibv_destroy_qp`: closes the connection (its work is flushed).
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_qp(qp: *mut ibv_qp) -> c_int {
    guard(libc::EIO, || {
        ret(verbs::destroy(qp as usize, Kind::Qp).map(|()| {
            crate::cm::unwatch_qp(qp as usize);
            // SAFETY: removed from the registry just now; allocated by verbs::create_qp.
            unsafe { free(qp) }
        }))
    })
}

/// `ibv_modify_qp`: RESET, INIT and ERR; RTR and RTS come from the connection manager.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_modify_qp(qp: *mut ibv_qp, attr: *mut ibv_qp_attr, mask: c_int) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            let (q, _) = state::qp(qp as usize)?;
            // SAFETY: the caller's input argument.
            let a = unsafe { input(attr) }?;
            let s = verbs::modify_qp(&q, mask as u32, a.qp_state, a.qp_access_flags, a.port_num)?;
            // SAFETY: a live queue pair of ours (looked up above).
            unsafe { (*qp).state = s };
            Ok(())
        })())
    })
}

/// `ibv_query_qp`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_qp(
    qp: *mut ibv_qp,
    attr: *mut ibv_qp_attr,
    _mask: c_int,
    init: *mut ibv_qp_init_attr,
) -> c_int {
    guard(libc::EIO, || {
        ret((|| {
            let (q, _) = state::qp(qp as usize)?;
            let (a, cap) = verbs::query_qp(&q);
            // SAFETY: a live queue pair of ours (looked up above).
            let c = unsafe { qp.read() };
            let i = ibv_qp_init_attr {
                qp_context: c.qp_context,
                send_cq: c.send_cq,
                recv_cq: c.recv_cq,
                srq: c.srq,
                cap,
                qp_type: c.qp_type,
                sq_sig_all: q.sq_sig_all.into(),
            };
            // SAFETY: the caller's output arguments.
            unsafe {
                out(attr, a)?;
                out(init, i)
            }
        })())
    })
}

/// `ibv_qp_to_qp_ex`: the extended post API is not implemented; NULL with `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_qp_to_qp_ex(_qp: *mut ibv_qp) -> *mut ibv_qp_ex {
    set_errno(libc::EOPNOTSUPP);
    core::ptr::null_mut()
}

/// More work requests in one list than any queue holds (twice the device's `max_qp_wr`; a
/// list that loops back on itself would otherwise grow without end): `ENOMEM`, as for a full
/// queue.
pub(crate) const MAX_LIST: usize = 1 << 16;

/// Copies a C scatter/gather list.
///
/// # Safety
/// `sg` must hold `n` elements when `n > 0`.
unsafe fn sges(sg: *const ibv_sge, n: c_int) -> Res<Vec<ibv_sge>> {
    let n = usize::try_from(n).map_err(|_| Errno::INVAL)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if sg.is_null() {
        return Err(Errno::INVAL);
    }
    // SAFETY: by this function's contract.
    Ok(unsafe { core::slice::from_raw_parts(sg, n) }.to_vec())
}

/// The linked list of send work requests, copied.
///
/// # Safety
/// `wr` is the head of a valid, NULL-terminated list (ibv_post_send's contract).
unsafe fn send_reqs(mut wr: *const ibv_send_wr) -> Res<Vec<SendReq>> {
    let mut v = Vec::new();
    while !wr.is_null() {
        if v.len() >= MAX_LIST {
            return Err(Errno::NOMEM);
        }
        // SAFETY: a list element, by this function's contract.
        let w = unsafe { wr.read() };
        // SAFETY: the element's gather list.
        let sg = unsafe { sges(w.sg_list, w.num_sge) }?;
        let inline = if w.send_flags & ibv_send_flags_IBV_SEND_INLINE != 0 {
            let mut bytes = Vec::new();
            for s in sg.iter().filter(|s| s.length > 0) {
                if s.addr == 0 {
                    return Err(Errno::INVAL);
                }
                // SAFETY: with IBV_SEND_INLINE the elements name the application's bytes,
                // readable for the call (their keys are not used); not NULL (checked).
                bytes.extend_from_slice(unsafe { core::slice::from_raw_parts(s.addr as *const u8, s.length as usize) });
            }
            Some(bytes)
        } else {
            None
        };
        // SAFETY: the unions are plain integers; which member is meant depends on the opcode
        // and every bit pattern is a valid value of each.
        let (imm, rdma, atomic) = unsafe { (w.__bindgen_anon_1.imm_data, w.wr.rdma, w.wr.atomic) };
        let atomic_op =
            matches!(w.opcode, ibv_wr_opcode_IBV_WR_ATOMIC_CMP_AND_SWP | ibv_wr_opcode_IBV_WR_ATOMIC_FETCH_AND_ADD);
        v.push(SendReq {
            wr_id: w.wr_id,
            opcode: w.opcode,
            flags: w.send_flags,
            sges: sg,
            inline,
            imm_or_inval: imm,
            remote_addr: if atomic_op { atomic.remote_addr } else { rdma.remote_addr },
            rkey: if atomic_op { atomic.rkey } else { rdma.rkey },
            compare_add: atomic.compare_add,
            swap: atomic.swap,
        });
        wr = w.next;
    }
    Ok(v)
}

/// The linked list of receive work requests, copied.
///
/// # Safety
/// `wr` is the head of a valid, NULL-terminated list.
unsafe fn recv_reqs(mut wr: *const ibv_recv_wr) -> Res<Vec<RecvReq>> {
    let mut v = Vec::new();
    while !wr.is_null() {
        if v.len() >= MAX_LIST {
            return Err(Errno::NOMEM);
        }
        // SAFETY: a list element, by this function's contract.
        let w = unsafe { wr.read() };
        // SAFETY: the element's scatter list.
        v.push(RecvReq { wr_id: w.wr_id, sges: unsafe { sges(w.sg_list, w.num_sge) }? });
        wr = w.next;
    }
    Ok(v)
}

/// Posting is all or none: on failure the first request is the bad one.
fn post_ret<W>(r: Res<()>, wr: *mut W, bad: *mut *mut W) -> c_int {
    if r.is_err() && !bad.is_null() {
        // SAFETY: the caller's output argument, not NULL.
        unsafe { bad.write(wr) };
    }
    ret(r)
}

unsafe extern "C" fn op_post_send(qp: *mut ibv_qp, wr: *mut ibv_send_wr, bad: *mut *mut ibv_send_wr) -> c_int {
    guard(libc::EIO, || {
        let r = state::qp(qp as usize).and_then(|(q, _)| {
            // SAFETY: ibv_post_send's contract: a valid list.
            let reqs = unsafe { send_reqs(wr) }?;
            match post::post_send(&q, &reqs) {
                Err(post::FLUSH) => {
                    post::flush_sends(&q, &reqs);
                    Ok(())
                }
                r => r,
            }
        });
        post_ret(r, wr, bad)
    })
}

unsafe extern "C" fn op_post_recv(qp: *mut ibv_qp, wr: *mut ibv_recv_wr, bad: *mut *mut ibv_recv_wr) -> c_int {
    guard(libc::EIO, || {
        let r = state::qp(qp as usize).and_then(|(q, _)| {
            if q.uses_srq {
                return Err(Errno::INVAL);
            }
            // SAFETY: ibv_post_recv's contract: a valid list.
            let reqs = unsafe { recv_reqs(wr) }?;
            match post::post_recv(&q, &reqs) {
                Err(post::FLUSH) => {
                    post::flush_recvs(&q, &reqs);
                    Ok(())
                }
                r => r,
            }
        });
        post_ret(r, wr, bad)
    })
}

unsafe extern "C" fn op_post_srq_recv(srq: *mut ibv_srq, wr: *mut ibv_recv_wr, bad: *mut *mut ibv_recv_wr) -> c_int {
    guard(libc::EIO, || {
        let r = state::srq(srq as usize).and_then(|(s, _)| {
            // SAFETY: ibv_post_srq_recv's contract: a valid list.
            let reqs = unsafe { recv_reqs(wr) }?;
            post::post_srq_recv(&s, &reqs)
        });
        post_ret(r, wr, bad)
    })
}

// ---------------------------------------------------------------------------------------------
// Refused: address handles and multicast (iWARP has neither UD nor multicast)

/// `ibv_create_ah`: NULL with `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_create_ah(_pd: *mut ibv_pd, _attr: *mut ibv_ah_attr) -> *mut ibv_ah {
    set_errno(libc::EOPNOTSUPP);
    core::ptr::null_mut()
}

/// `ibv_create_ah_from_wc`: NULL with `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_create_ah_from_wc(
    _pd: *mut ibv_pd,
    _wc: *mut ibv_wc,
    _grh: *mut c_void,
    _port: u8,
) -> *mut ibv_ah {
    set_errno(libc::EOPNOTSUPP);
    core::ptr::null_mut()
}

/// `ibv_destroy_ah`: no address handle can exist; `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_ah(_ah: *mut ibv_ah) -> c_int {
    set_errno(libc::EOPNOTSUPP);
    libc::EOPNOTSUPP
}

/// `ibv_attach_mcast`: `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_attach_mcast(_qp: *mut ibv_qp, _gid: *const ibv_gid, _lid: u16) -> c_int {
    set_errno(libc::EOPNOTSUPP);
    libc::EOPNOTSUPP
}

/// `ibv_detach_mcast`: `EOPNOTSUPP`.
///
/// # Safety
/// The C caller's side of the verbs contract: each pointer argument is NULL or valid for
/// the call (handles are checked against the registry before use; see the module docs).
#[no_mangle]
pub unsafe extern "C" fn ibv_detach_mcast(_qp: *mut ibv_qp, _gid: *const ibv_gid, _lid: u16) -> c_int {
    set_errno(libc::EOPNOTSUPP);
    libc::EOPNOTSUPP
}
