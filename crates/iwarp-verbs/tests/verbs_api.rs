//! The built libibverbs.so.1, loaded with dlopen and called through its versioned symbols as
//! a C program would: devices, contexts, queries, objects and their teardown orders, and every
//! misuse the library must refuse with an errno instead of crashing.
#![allow(unsafe_code, non_upper_case_globals)]

mod common;

use common::{errno, lib};
use iwarp_verbs::abi::*;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

type P<T> = *mut T;

/// The library's functions, by their C signatures.
struct V {
    get_device_list: unsafe extern "C" fn(*mut c_int) -> P<P<ibv_device>>,
    free_device_list: unsafe extern "C" fn(P<P<ibv_device>>),
    get_device_name: unsafe extern "C" fn(P<ibv_device>) -> *const c_char,
    get_device_guid: unsafe extern "C" fn(P<ibv_device>) -> u64,
    open_device: unsafe extern "C" fn(P<ibv_device>) -> P<ibv_context>,
    close_device: unsafe extern "C" fn(P<ibv_context>) -> c_int,
    query_device: unsafe extern "C" fn(P<ibv_context>, P<ibv_device_attr>) -> c_int,
    query_port: unsafe extern "C" fn(P<ibv_context>, u8, P<ibv_port_attr>) -> c_int,
    query_gid: unsafe extern "C" fn(P<ibv_context>, u8, c_int, P<ibv_gid>) -> c_int,
    query_gid_ex: unsafe extern "C" fn(P<ibv_context>, u32, u32, P<ibv_gid_entry>, u32, usize) -> c_int,
    query_gid_type: unsafe extern "C" fn(P<ibv_context>, u8, c_uint, P<u32>) -> c_int,
    query_pkey: unsafe extern "C" fn(P<ibv_context>, u8, c_int, P<u16>) -> c_int,
    alloc_pd: unsafe extern "C" fn(P<ibv_context>) -> P<ibv_pd>,
    dealloc_pd: unsafe extern "C" fn(P<ibv_pd>) -> c_int,
    reg_mr: unsafe extern "C" fn(P<ibv_pd>, *mut c_void, usize, c_int) -> P<ibv_mr>,
    reg_mr_iova2: unsafe extern "C" fn(P<ibv_pd>, *mut c_void, usize, u64, c_uint) -> P<ibv_mr>,
    dereg_mr: unsafe extern "C" fn(P<ibv_mr>) -> c_int,
    create_comp_channel: unsafe extern "C" fn(P<ibv_context>) -> P<ibv_comp_channel>,
    destroy_comp_channel: unsafe extern "C" fn(P<ibv_comp_channel>) -> c_int,
    create_cq: unsafe extern "C" fn(P<ibv_context>, c_int, *mut c_void, P<ibv_comp_channel>, c_int) -> P<ibv_cq>,
    destroy_cq: unsafe extern "C" fn(P<ibv_cq>) -> c_int,
    get_cq_event: unsafe extern "C" fn(P<ibv_comp_channel>, P<P<ibv_cq>>, P<*mut c_void>) -> c_int,
    ack_cq_events: unsafe extern "C" fn(P<ibv_cq>, c_uint),
    create_srq: unsafe extern "C" fn(P<ibv_pd>, P<ibv_srq_init_attr>) -> P<ibv_srq>,
    destroy_srq: unsafe extern "C" fn(P<ibv_srq>) -> c_int,
    create_qp: unsafe extern "C" fn(P<ibv_pd>, P<ibv_qp_init_attr>) -> P<ibv_qp>,
    destroy_qp: unsafe extern "C" fn(P<ibv_qp>) -> c_int,
    modify_qp: unsafe extern "C" fn(P<ibv_qp>, P<ibv_qp_attr>, c_int) -> c_int,
    query_qp: unsafe extern "C" fn(P<ibv_qp>, P<ibv_qp_attr>, c_int, P<ibv_qp_init_attr>) -> c_int,
    qp_to_qp_ex: unsafe extern "C" fn(P<ibv_qp>) -> P<ibv_qp_ex>,
    create_ah: unsafe extern "C" fn(P<ibv_pd>, *mut c_void) -> *mut c_void,
    destroy_ah: unsafe extern "C" fn(*mut c_void) -> c_int,
    attach_mcast: unsafe extern "C" fn(P<ibv_qp>, *const ibv_gid, u16) -> c_int,
    read_sysfs_file: unsafe extern "C" fn(*const c_char, *const c_char, *mut c_char, usize) -> c_int,
    wc_status_str: unsafe extern "C" fn(c_int) -> *const c_char,
    port_state_str: unsafe extern "C" fn(c_int) -> *const c_char,
    event_type_str: unsafe extern "C" fn(c_int) -> *const c_char,
    fork_init: unsafe extern "C" fn() -> c_int,
}

fn v() -> &'static V {
    static VV: OnceLock<V> = OnceLock::new();
    VV.get_or_init(|| {
        let l = lib();
        // SAFETY: each type is the C prototype of the symbol in rdma-core 44's verbs.h (or
        // driver.h for ibv_query_gid_type, and void * for the refused AH types).
        unsafe {
            V {
                get_device_list: l.func("ibv_get_device_list", "IBVERBS_1.1"),
                free_device_list: l.func("ibv_free_device_list", "IBVERBS_1.1"),
                get_device_name: l.func("ibv_get_device_name", "IBVERBS_1.1"),
                get_device_guid: l.func("ibv_get_device_guid", "IBVERBS_1.1"),
                open_device: l.func("ibv_open_device", "IBVERBS_1.1"),
                close_device: l.func("ibv_close_device", "IBVERBS_1.1"),
                query_device: l.func("ibv_query_device", "IBVERBS_1.1"),
                query_port: l.func("ibv_query_port", "IBVERBS_1.1"),
                query_gid: l.func("ibv_query_gid", "IBVERBS_1.1"),
                query_gid_ex: l.func("_ibv_query_gid_ex", "IBVERBS_1.11"),
                query_gid_type: l.func("ibv_query_gid_type", "IBVERBS_PRIVATE_34"),
                query_pkey: l.func("ibv_query_pkey", "IBVERBS_1.1"),
                alloc_pd: l.func("ibv_alloc_pd", "IBVERBS_1.1"),
                dealloc_pd: l.func("ibv_dealloc_pd", "IBVERBS_1.1"),
                reg_mr: l.func("ibv_reg_mr", "IBVERBS_1.1"),
                reg_mr_iova2: l.func("ibv_reg_mr_iova2", "IBVERBS_1.8"),
                dereg_mr: l.func("ibv_dereg_mr", "IBVERBS_1.1"),
                create_comp_channel: l.func("ibv_create_comp_channel", "IBVERBS_1.0"),
                destroy_comp_channel: l.func("ibv_destroy_comp_channel", "IBVERBS_1.0"),
                create_cq: l.func("ibv_create_cq", "IBVERBS_1.1"),
                destroy_cq: l.func("ibv_destroy_cq", "IBVERBS_1.1"),
                get_cq_event: l.func("ibv_get_cq_event", "IBVERBS_1.1"),
                ack_cq_events: l.func("ibv_ack_cq_events", "IBVERBS_1.1"),
                create_srq: l.func("ibv_create_srq", "IBVERBS_1.1"),
                destroy_srq: l.func("ibv_destroy_srq", "IBVERBS_1.1"),
                create_qp: l.func("ibv_create_qp", "IBVERBS_1.1"),
                destroy_qp: l.func("ibv_destroy_qp", "IBVERBS_1.1"),
                modify_qp: l.func("ibv_modify_qp", "IBVERBS_1.1"),
                query_qp: l.func("ibv_query_qp", "IBVERBS_1.1"),
                qp_to_qp_ex: l.func("ibv_qp_to_qp_ex", "IBVERBS_1.6"),
                create_ah: l.func("ibv_create_ah", "IBVERBS_1.1"),
                destroy_ah: l.func("ibv_destroy_ah", "IBVERBS_1.1"),
                attach_mcast: l.func("ibv_attach_mcast", "IBVERBS_1.1"),
                read_sysfs_file: l.func("ibv_read_sysfs_file", "IBVERBS_1.0"),
                wc_status_str: l.func("ibv_wc_status_str", "IBVERBS_1.1"),
                port_state_str: l.func("ibv_port_state_str", "IBVERBS_1.1"),
                event_type_str: l.func("ibv_event_type_str", "IBVERBS_1.1"),
                fork_init: l.func("ibv_fork_init", "IBVERBS_1.1"),
            }
        }
    })
}

fn cstr(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the library returns NUL-terminated static or device-owned strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A context on the one device, closed on drop.
struct Ctx(P<ibv_context>);

impl Ctx {
    fn open() -> Ctx {
        let v = v();
        // SAFETY: C calls with valid arguments (the list is freed after opening, as
        // applications do; device pointers stay valid).
        unsafe {
            let mut n = 0;
            let list = (v.get_device_list)(&mut n);
            assert_eq!(n, 1);
            let ctx = (v.open_device)(*list);
            (v.free_device_list)(list);
            assert!(!ctx.is_null(), "open_device: errno {}", errno());
            Ctx(ctx)
        }
    }
    /// The extended context around it (the header's `verbs_get_ctx`).
    fn verbs(&self) -> &verbs_context {
        // SAFETY: checked below that abi_compat marks an extended context, which embeds the
        // ibv_context at this offset.
        unsafe {
            assert_eq!((*self.0).abi_compat, VERBS_ABI_IS_EXTENDED);
            &*self.0.cast::<u8>().sub(core::mem::offset_of!(verbs_context, context)).cast::<verbs_context>()
        }
    }
    fn ops(&self) -> ibv_context_ops {
        // SAFETY: a live context.
        unsafe { (*self.0).ops }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: a context we opened.
        let r = unsafe { (v().close_device)(self.0) };
        if !std::thread::panicking() {
            assert_eq!(r, 0);
        }
    }
}

fn rc_init(send_cq: P<ibv_cq>, recv_cq: P<ibv_cq>) -> ibv_qp_init_attr {
    ibv_qp_init_attr {
        send_cq,
        recv_cq,
        cap: ibv_qp_cap { max_send_wr: 16, max_recv_wr: 16, max_send_sge: 2, max_recv_sge: 2, max_inline_data: 64 },
        qp_type: ibv_qp_type_IBV_QPT_RC,
        ..Default::default()
    }
}

#[test]
fn the_one_device_is_an_iwarp_rnic_named_iwarp0() {
    let v = v();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let list = (v.get_device_list)(null_mut());
        assert!(!list.is_null());
        let dev = *list;
        assert!(!dev.is_null());
        assert!((*list.add(1)).is_null(), "NULL-terminated, one device");
        assert_eq!(cstr((v.get_device_name)(dev)), "iwarp0");
        assert_eq!((*dev).node_type, ibv_node_type_IBV_NODE_RNIC);
        assert_eq!((*dev).transport_type, ibv_transport_type_IBV_TRANSPORT_IWARP);
        let guid = u64::from_be((v.get_device_guid)(dev));
        assert_eq!(guid >> 24 & 0xffff, 0xfffe, "an EUI-64 made from a MAC: {guid:#x}");
        (v.free_device_list)(list);
        // Misuse: unknown device pointers and lists.
        assert!((v.get_device_name)(null_mut()).is_null());
        assert_eq!(errno(), libc::EINVAL);
        let mut fake = ibv_device::default();
        assert!((v.open_device)(&mut fake).is_null());
        assert_eq!(errno(), libc::EINVAL);
        (v.free_device_list)(list); // twice: ignored, not a double free
        (v.free_device_list)(null_mut());
    }
}

#[test]
fn device_and_port_attributes_describe_an_iwarp_port_that_is_up() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let mut a = ibv_device_attr::default();
        assert_eq!((v.query_device)(ctx.0, &mut a), 0);
        assert_eq!(a.phys_port_cnt, 1);
        assert_eq!(a.vendor_id, 0x697770);
        assert_eq!(a.max_sge_rd, 1, "an RDMA Read has one sink on iWARP");
        assert!(a.max_qp_wr >= 1024 && a.max_sge >= 1 && a.max_cqe > 0);
        assert_eq!(a.atomic_cap, ibv_atomic_cap_IBV_ATOMIC_HCA);
        assert_eq!(a.node_guid, (v.get_device_guid)((*ctx.0).device));

        // The exported (compat) query_port fills 48 bytes and leaves the rest alone.
        let mut p = ibv_port_attr { port_cap_flags2: 0xabcd, ..Default::default() };
        assert_eq!((v.query_port)(ctx.0, 1, &mut p), 0);
        assert_eq!(p.state, ibv_port_state_IBV_PORT_ACTIVE);
        assert_eq!(p.link_layer, IBV_LINK_LAYER_ETHERNET as u8);
        assert_eq!(p.phys_state, 5, "LINK_UP");
        assert_eq!(p.gid_tbl_len, 1);
        assert_ne!(p.port_cap_flags & ibv_port_cap_flags_IBV_PORT_CM_SUP, 0);
        assert_eq!(p.port_cap_flags2, 0xabcd);
        assert_eq!(cstr((v.port_state_str)(p.state as c_int)), "PORT_ACTIVE");

        // The extended context's ops, as the header's inlines call them.
        let vc = ctx.verbs();
        assert_eq!(vc.sz as usize, core::mem::size_of::<verbs_context>());
        let mut p2 = ibv_port_attr::default();
        let qp_op = vc.query_port.expect("query_port op");
        assert_eq!(qp_op(ctx.0, 1, &mut p2, core::mem::size_of::<ibv_port_attr>() as size_t), 0);
        assert_eq!(p2.state, ibv_port_state_IBV_PORT_ACTIVE);
        assert_eq!(qp_op(ctx.0, 2, &mut p2, core::mem::size_of::<ibv_port_attr>() as size_t), libc::EINVAL);
        let mut ax = ibv_device_attr_ex::default();
        let qd = vc.query_device_ex.expect("query_device_ex op");
        assert_eq!(qd(ctx.0, null(), &mut ax, core::mem::size_of::<ibv_device_attr_ex>() as size_t), 0);
        assert_eq!(ax.orig_attr.max_qp_wr, a.max_qp_wr);
        assert_eq!(qd(ctx.0, null(), &mut ax, 8), libc::EINVAL, "smaller than the base attributes");
        assert!(vc.create_qp_ex.is_some());
        let ops = ctx.ops();
        assert!(ops.poll_cq.is_some() && ops.req_notify_cq.is_some());
        assert!(ops.post_send.is_some() && ops.post_recv.is_some() && ops.post_srq_recv.is_some());

        // Port 2 and a NULL output are refused.
        assert_eq!((v.query_port)(ctx.0, 2, &mut p), libc::EINVAL);
        assert_eq!((v.query_port)(ctx.0, 1, null_mut()), libc::EINVAL);
        assert_eq!((v.query_device)(null_mut(), &mut a), libc::EINVAL);
    }
}

#[test]
fn the_gid_holds_the_mac_and_the_pkey_is_the_default() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let mut g = ibv_gid::default();
        assert_eq!((v.query_gid)(ctx.0, 1, 0, &mut g), 0);
        let raw = g.raw;
        assert!(raw[..6].iter().any(|&b| b != 0), "a MAC in the first six bytes: {raw:02x?}");
        assert_eq!(&raw[6..], &[0; 10]);
        let guid = u64::from_be((v.get_device_guid)((*ctx.0).device)).to_be_bytes();
        assert_eq!([guid[0] ^ 2, guid[1], guid[2], guid[5], guid[6], guid[7]], raw[..6], "GUID and GID agree");
        assert_eq!((v.query_gid)(ctx.0, 1, 1, &mut g), -1);
        assert_eq!(errno(), libc::EINVAL);

        let mut e = ibv_gid_entry::default();
        assert_eq!((v.query_gid_ex)(ctx.0, 1, 0, &mut e, 0, core::mem::size_of::<ibv_gid_entry>()), 0);
        assert_eq!(e.gid.raw, raw);
        assert_eq!(e.port_num, 1);
        assert_eq!((v.query_gid_ex)(ctx.0, 1, 1, &mut e, 0, core::mem::size_of::<ibv_gid_entry>()), libc::ENODATA);

        let mut ty = 7u32;
        assert_eq!((v.query_gid_type)(ctx.0, 1, 0, &mut ty), 0);
        assert_eq!(ty, 0);

        let mut pkey = 0u16;
        assert_eq!((v.query_pkey)(ctx.0, 1, 0, &mut pkey), 0);
        assert_eq!(u16::from_be(pkey), 0xffff);
        assert_eq!((v.query_pkey)(ctx.0, 1, 1, &mut pkey), -1);
    }
}

#[test]
fn memory_is_registered_in_place_and_a_domain_in_use_cannot_go() {
    let v = v();
    let ctx = Ctx::open();
    let mut buf = vec![0u8; 8192];
    let access = (ibv_access_flags_IBV_ACCESS_LOCAL_WRITE
        | ibv_access_flags_IBV_ACCESS_REMOTE_WRITE
        | ibv_access_flags_IBV_ACCESS_REMOTE_READ) as c_int;
    // SAFETY: C calls with valid arguments; `buf` outlives its registration.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        assert!(!pd.is_null());
        assert_eq!((*pd).context, ctx.0);
        let mr = (v.reg_mr)(pd, buf.as_mut_ptr().cast(), buf.len(), access);
        assert!(!mr.is_null(), "reg_mr: errno {}", errno());
        assert_eq!((*mr).addr, buf.as_mut_ptr().cast());
        assert_eq!((*mr).length as usize, buf.len());
        assert_eq!((*mr).pd, pd);
        assert_eq!((*mr).lkey, (*mr).rkey, "one STag names the region locally and remotely");
        // The same memory twice, through the iova entry point with relaxed ordering (a hint).
        let relaxed = ibv_access_flags_IBV_ACCESS_LOCAL_WRITE | ibv_access_flags_IBV_ACCESS_RELAXED_ORDERING;
        let mr2 = (v.reg_mr_iova2)(pd, buf.as_mut_ptr().cast(), 4096, buf.as_ptr() as u64, relaxed);
        assert!(!mr2.is_null());
        assert_ne!((*mr2).lkey, (*mr).lkey);

        assert_eq!((v.dealloc_pd)(pd), libc::EBUSY, "regions still use the domain");
        assert_eq!((v.dereg_mr)(mr2), 0);
        assert_eq!((v.dereg_mr)(mr), 0);
        assert_eq!((v.dereg_mr)(mr), libc::EINVAL, "twice");
        assert_eq!((v.dealloc_pd)(pd), 0);
        assert_eq!((v.dealloc_pd)(pd), libc::EINVAL, "twice");

        // Refusals.
        let pd = (v.alloc_pd)(ctx.0);
        assert!((v.reg_mr)(pd, null_mut(), 16, access).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert!((v.reg_mr)(null_mut(), buf.as_mut_ptr().cast(), 16, access).is_null());
        assert_eq!(errno(), libc::EINVAL);
        let rw_without_lw = ibv_access_flags_IBV_ACCESS_REMOTE_WRITE as c_int;
        assert!((v.reg_mr)(pd, buf.as_mut_ptr().cast(), 16, rw_without_lw).is_null());
        assert_eq!(errno(), libc::EINVAL);
        let mw = ibv_access_flags_IBV_ACCESS_MW_BIND as c_int;
        assert!((v.reg_mr)(pd, buf.as_mut_ptr().cast(), 16, mw).is_null());
        assert_eq!(errno(), libc::EOPNOTSUPP);
        assert!((v.reg_mr_iova2)(pd, buf.as_mut_ptr().cast(), 16, 0, 1).is_null());
        assert_eq!(errno(), libc::EOPNOTSUPP, "an iova other than the address");
        assert!((v.alloc_pd)(null_mut()).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn queues_follow_the_teardown_rules() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        let ch = (v.create_comp_channel)(ctx.0);
        assert!(!ch.is_null());
        assert!((*ch).fd >= 0);
        let mut marker = 5u8;
        let cq = (v.create_cq)(ctx.0, 32, (&raw mut marker).cast(), ch, 0);
        assert!(!cq.is_null(), "create_cq: errno {}", errno());
        assert_eq!((*cq).cqe, 32);
        assert_eq!((*cq).channel, ch);
        let cq2 = (v.create_cq)(ctx.0, 8, null_mut(), null_mut(), 0);
        assert!(!cq2.is_null());
        assert!((v.create_cq)(ctx.0, 0, null_mut(), null_mut(), 0).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert!((v.create_cq)(ctx.0, 8, null_mut(), null_mut(), 1).is_null(), "one completion vector");
        assert_eq!(errno(), libc::EINVAL);

        let mut init = rc_init(cq, cq2);
        let qp = (v.create_qp)(pd, &mut init);
        assert!(!qp.is_null(), "create_qp: errno {}", errno());
        assert_eq!((*qp).qp_type, ibv_qp_type_IBV_QPT_RC);
        assert_eq!((*qp).state, ibv_qp_state_IBV_QPS_RESET);
        assert!((*qp).qp_num > 0);
        assert_eq!(init.cap.max_send_wr, 16);

        assert_eq!((v.destroy_cq)(cq), libc::EBUSY, "the queue pair sends to it");
        assert_eq!((v.destroy_cq)(cq2), libc::EBUSY, "the queue pair receives to it");
        assert_eq!((v.destroy_comp_channel)(ch), libc::EBUSY, "a completion queue uses it");
        assert_eq!((v.dealloc_pd)(pd), libc::EBUSY, "a queue pair uses it");

        // No notification is armed or fired: a non-blocking channel says EAGAIN.
        let ops = ctx.ops();
        assert_eq!(ops.req_notify_cq.unwrap()(cq, 0), 0);
        let flags = libc::fcntl((*ch).fd, libc::F_GETFL);
        assert_eq!(flags & libc::O_NONBLOCK, 0, "a channel's descriptor starts blocking");
        libc::fcntl((*ch).fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let (mut got, mut got_ctx) = (null_mut(), null_mut());
        assert_eq!((v.get_cq_event)(ch, &mut got, &mut got_ctx), -1);
        assert_eq!(errno(), libc::EAGAIN);
        assert_eq!((v.get_cq_event)(ch, null_mut(), &mut got_ctx), -1);
        assert_eq!(errno(), libc::EINVAL);
        // Nothing to poll; acknowledging more than was handed out is refused.
        let mut wc = [ibv_wc::default(); 4];
        assert_eq!(ops.poll_cq.unwrap()(cq, 4, wc.as_mut_ptr()), 0);
        assert_eq!(ops.poll_cq.unwrap()(null_mut(), 4, wc.as_mut_ptr()), -1);
        (v.ack_cq_events)(cq, 1);
        assert_eq!(errno(), libc::EINVAL);
        (v.ack_cq_events)(cq, 0);

        assert_eq!((v.destroy_qp)(qp), 0);
        assert_eq!((v.destroy_qp)(qp), libc::EINVAL, "twice");
        assert_eq!((v.destroy_comp_channel)(ch), libc::EBUSY);
        assert_eq!((v.destroy_cq)(cq), 0);
        assert_eq!((v.destroy_cq)(cq2), 0);
        assert_eq!((v.destroy_cq)(cq2), libc::EINVAL, "twice");
        assert_eq!((v.destroy_comp_channel)(ch), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn queue_pairs_are_rc_only_and_reach_rts_through_the_cm_only() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        let cq = (v.create_cq)(ctx.0, 16, null_mut(), null_mut(), 0);
        let mut ud = ibv_qp_init_attr { qp_type: ibv_qp_type_IBV_QPT_UD, ..rc_init(cq, cq) };
        assert!((v.create_qp)(pd, &mut ud).is_null());
        assert_eq!(errno(), libc::EOPNOTSUPP);
        let mut no_cq = rc_init(null_mut(), cq);
        assert!((v.create_qp)(pd, &mut no_cq).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert!((v.create_qp)(pd, null_mut()).is_null());
        assert_eq!(errno(), libc::EINVAL);
        let mut deep = rc_init(cq, cq);
        deep.cap.max_send_wr = u32::MAX;
        assert!((v.create_qp)(pd, &mut deep).is_null());
        assert_eq!(errno(), libc::EINVAL);

        let mut init = rc_init(cq, cq);
        init.sq_sig_all = 1;
        let qp = (v.create_qp)(pd, &mut init);
        assert!(!qp.is_null());
        let mut attr = ibv_qp_attr {
            qp_state: ibv_qp_state_IBV_QPS_INIT,
            port_num: 1,
            qp_access_flags: ibv_access_flags_IBV_ACCESS_LOCAL_WRITE | ibv_access_flags_IBV_ACCESS_REMOTE_WRITE,
            ..Default::default()
        };
        let init_mask = (ibv_qp_attr_mask_IBV_QP_STATE
            | ibv_qp_attr_mask_IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask_IBV_QP_PORT
            | ibv_qp_attr_mask_IBV_QP_ACCESS_FLAGS) as c_int;
        assert_eq!((v.modify_qp)(qp, &mut attr, init_mask), 0);
        assert_eq!((*qp).state, ibv_qp_state_IBV_QPS_INIT);
        // RTR and RTS with InfiniBand addressing (what ibv_rc_pingpong sends): refused.
        let ib_rtr = (ibv_qp_attr_mask_IBV_QP_STATE
            | ibv_qp_attr_mask_IBV_QP_AV
            | ibv_qp_attr_mask_IBV_QP_PATH_MTU
            | ibv_qp_attr_mask_IBV_QP_DEST_QPN
            | ibv_qp_attr_mask_IBV_QP_RQ_PSN) as c_int;
        attr.qp_state = ibv_qp_state_IBV_QPS_RTR;
        assert_eq!((v.modify_qp)(qp, &mut attr, ib_rtr), libc::EINVAL);
        attr.qp_state = ibv_qp_state_IBV_QPS_RTS;
        let ib_rts = (ibv_qp_attr_mask_IBV_QP_STATE | ibv_qp_attr_mask_IBV_QP_SQ_PSN) as c_int;
        assert_eq!((v.modify_qp)(qp, &mut attr, ib_rts), libc::EINVAL);
        assert_eq!((*qp).state, ibv_qp_state_IBV_QPS_INIT, "unchanged by refused calls");
        attr.qp_state = ibv_qp_state_IBV_QPS_INIT;
        attr.port_num = 2;
        assert_eq!((v.modify_qp)(qp, &mut attr, init_mask), libc::EINVAL, "port 2");
        assert_eq!((v.modify_qp)(qp, null_mut(), init_mask), libc::EINVAL);

        let mut q = ibv_qp_attr::default();
        let mut qi = ibv_qp_init_attr::default();
        assert_eq!((v.query_qp)(qp, &mut q, 0, &mut qi), 0);
        assert_eq!(q.qp_state, ibv_qp_state_IBV_QPS_INIT);
        assert_eq!(q.port_num, 1);
        assert_eq!(q.qp_access_flags, attr.qp_access_flags);
        assert_eq!(q.cap.max_send_wr, 16);
        assert_eq!((qi.send_cq, qi.recv_cq, qi.sq_sig_all), (cq, cq, 1));
        assert!((v.qp_to_qp_ex)(qp).is_null());
        assert_eq!(errno(), libc::EOPNOTSUPP);

        // Receives may be posted before the connection; sends may not.
        let mut buf = vec![0u8; 256];
        let mr = (v.reg_mr)(pd, buf.as_mut_ptr().cast(), buf.len(), 1);
        let mut sge = ibv_sge { addr: buf.as_ptr() as u64, length: 256, lkey: (*mr).lkey };
        let mut rwr = ibv_recv_wr { wr_id: 7, sg_list: &mut sge, num_sge: 1, next: null_mut() };
        let mut bad_r = null_mut();
        let ops = ctx.ops();
        assert_eq!(ops.post_recv.unwrap()(qp, &mut rwr, &mut bad_r), 0);
        let mut wrong = ibv_sge { lkey: (*mr).lkey ^ 0x100, ..sge };
        let mut rwr2 = ibv_recv_wr { wr_id: 8, sg_list: &mut wrong, num_sge: 1, next: null_mut() };
        assert_eq!(ops.post_recv.unwrap()(qp, &mut rwr2, &mut bad_r), libc::EINVAL, "unknown lkey");
        assert_eq!(bad_r, &raw mut rwr2);
        let mut outside = ibv_sge { addr: buf.as_ptr() as u64 + 200, length: 100, ..sge };
        let mut rwr3 = ibv_recv_wr { wr_id: 9, sg_list: &mut outside, num_sge: 1, next: null_mut() };
        assert_eq!(ops.post_recv.unwrap()(qp, &mut rwr3, &mut bad_r), libc::EINVAL, "past the region");
        let mut swr = ibv_send_wr {
            wr_id: 1,
            sg_list: &mut sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_SEND,
            ..Default::default()
        };
        let mut bad_s = null_mut();
        assert_eq!(ops.post_send.unwrap()(qp, &mut swr, &mut bad_s), libc::EINVAL, "not connected");
        assert_eq!(bad_s, &raw mut swr);
        // A list that loops back on itself is refused, not followed forever.
        swr.next = &mut swr;
        assert_eq!(ops.post_send.unwrap()(qp, &mut swr, &mut bad_s), libc::ENOMEM, "a cyclic list");
        swr.next = null_mut();
        // Inline data at NULL.
        let mut null_sge = ibv_sge { addr: 0, length: 8, lkey: 0 };
        let mut inline_null = ibv_send_wr {
            sg_list: &mut null_sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_SEND,
            send_flags: ibv_send_flags_IBV_SEND_INLINE,
            ..Default::default()
        };
        assert_eq!(ops.post_send.unwrap()(qp, &mut inline_null, &mut bad_s), libc::EINVAL, "inline bytes at NULL");
        swr.opcode = ibv_wr_opcode_IBV_WR_SEND_WITH_IMM;
        assert_eq!(ops.post_send.unwrap()(qp, &mut swr, &mut bad_s), libc::EINVAL, "no iWARP message for it");

        // Error state is always reachable; RESET again while unconnected.
        attr.qp_state = ibv_qp_state_IBV_QPS_ERR;
        assert_eq!((v.modify_qp)(qp, &mut attr, ibv_qp_attr_mask_IBV_QP_STATE as c_int), 0);
        assert_eq!((*qp).state, ibv_qp_state_IBV_QPS_ERR);
        attr.qp_state = ibv_qp_state_IBV_QPS_RESET;
        assert_eq!((v.modify_qp)(qp, &mut attr, ibv_qp_attr_mask_IBV_QP_STATE as c_int), 0);

        assert_eq!((v.dereg_mr)(mr), 0);
        assert_eq!((v.destroy_qp)(qp), 0);
        assert_eq!((v.destroy_cq)(cq), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn create_qp_ex_takes_the_pd_form_and_refuses_extensions() {
    let ctx = Ctx::open();
    let v = v();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        let cq = (v.create_cq)(ctx.0, 16, null_mut(), null_mut(), 0);
        let op = ctx.verbs().create_qp_ex.unwrap();
        let base = rc_init(cq, cq);
        let mut ex = ibv_qp_init_attr_ex {
            send_cq: cq,
            recv_cq: cq,
            cap: base.cap,
            qp_type: base.qp_type,
            comp_mask: ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD,
            pd,
            ..Default::default()
        };
        let qp = op(ctx.0, &mut ex);
        assert!(!qp.is_null(), "create_qp_ex: errno {}", errno());
        ex.comp_mask |= ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
        assert!(op(ctx.0, &mut ex).is_null());
        assert_eq!(errno(), libc::EOPNOTSUPP);
        assert_eq!((v.destroy_qp)(qp), 0);
        assert_eq!((v.destroy_cq)(cq), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn shared_receive_queues_serve_queue_pairs_and_outlive_none() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        let cq = (v.create_cq)(ctx.0, 16, null_mut(), null_mut(), 0);
        let mut sattr =
            ibv_srq_init_attr { srq_context: null_mut(), attr: ibv_srq_attr { max_wr: 64, max_sge: 2, srq_limit: 0 } };
        let srq = (v.create_srq)(pd, &mut sattr);
        assert!(!srq.is_null(), "create_srq: errno {}", errno());
        assert_eq!((*srq).pd, pd);
        let mut init = ibv_qp_init_attr { srq, ..rc_init(cq, cq) };
        let qp = (v.create_qp)(pd, &mut init);
        assert!(!qp.is_null());
        assert_eq!(init.cap.max_recv_wr, 0, "receives come from the shared queue");
        assert_eq!((v.destroy_srq)(srq), libc::EBUSY);

        let mut buf = vec![0u8; 64];
        let mr = (v.reg_mr)(pd, buf.as_mut_ptr().cast(), buf.len(), 1);
        let mut sge = ibv_sge { addr: buf.as_ptr() as u64, length: 64, lkey: (*mr).lkey };
        let mut rwr = ibv_recv_wr { wr_id: 1, sg_list: &mut sge, num_sge: 1, next: null_mut() };
        let mut bad = null_mut();
        let ops = ctx.ops();
        assert_eq!(ops.post_srq_recv.unwrap()(srq, &mut rwr, &mut bad), 0);
        assert_eq!(ops.post_recv.unwrap()(qp, &mut rwr, &mut bad), libc::EINVAL, "post to the shared queue");

        let mut too_deep =
            ibv_srq_init_attr { attr: ibv_srq_attr { max_wr: u32::MAX, max_sge: 1, srq_limit: 0 }, ..sattr };
        assert!((v.create_srq)(pd, &mut too_deep).is_null());
        assert_eq!(errno(), libc::EINVAL);

        assert_eq!((v.destroy_qp)(qp), 0);
        assert_eq!((v.destroy_srq)(srq), 0);
        assert_eq!((v.dereg_mr)(mr), 0);
        assert_eq!((v.destroy_cq)(cq), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn closing_a_context_destroys_what_is_left_in_it() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments; handles used after close are only passed back to
    // the library, which must refuse them without reading them.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        let ch = (v.create_comp_channel)(ctx.0);
        let cq = (v.create_cq)(ctx.0, 16, null_mut(), ch, 0);
        let mut init = rc_init(cq, cq);
        let qp = (v.create_qp)(pd, &mut init);
        assert!(!qp.is_null());
        let c = ctx.0;
        std::mem::forget(ctx);
        assert_eq!((v.close_device)(c), 0);
        assert_eq!((v.destroy_qp)(qp), libc::EINVAL);
        assert_eq!((v.destroy_cq)(cq), libc::EINVAL);
        assert_eq!((v.dealloc_pd)(pd), libc::EINVAL);
        assert_eq!((v.close_device)(c), libc::EINVAL, "twice");
        assert!((v.alloc_pd)(c).is_null());
    }
}

#[test]
fn contexts_do_not_share_objects() {
    let v = v();
    let a = Ctx::open();
    let b = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let pd = (v.alloc_pd)(a.0);
        let cq_b = (v.create_cq)(b.0, 16, null_mut(), null_mut(), 0);
        let mut init = rc_init(cq_b, cq_b);
        assert!((v.create_qp)(pd, &mut init).is_null(), "a CQ of another context");
        assert_eq!(errno(), libc::EINVAL);
        let ch_a = (v.create_comp_channel)(a.0);
        assert!((v.create_cq)(b.0, 16, null_mut(), ch_a, 0).is_null(), "a channel of another context");
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((v.destroy_cq)(cq_b), 0);
        assert_eq!((v.destroy_comp_channel)(ch_a), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn what_iwarp_lacks_is_refused_with_eopnotsupp() {
    let v = v();
    let ctx = Ctx::open();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        assert!((v.create_ah)(pd, null_mut()).is_null());
        assert_eq!(errno(), libc::EOPNOTSUPP);
        assert_eq!((v.destroy_ah)(null_mut()), libc::EOPNOTSUPP);
        assert_eq!((v.attach_mcast)(null_mut(), null(), 0), libc::EOPNOTSUPP);
        let mut buf = [0 as c_char; 16];
        assert_eq!((v.read_sysfs_file)(c"/sys".as_ptr(), c"x".as_ptr(), buf.as_mut_ptr(), 16), -1);
        assert_eq!(errno(), libc::ENOSYS);
        assert_eq!((v.fork_init)(), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}

#[test]
fn asynchronous_events_wait_on_async_fd() {
    let ctx = Ctx::open();
    let l = lib();
    // SAFETY: the C prototypes of ibv_get_async_event and ibv_ack_async_event; valid
    // arguments.
    unsafe {
        let get: unsafe extern "C" fn(P<ibv_context>, P<ibv_async_event>) -> c_int =
            l.func("ibv_get_async_event", "IBVERBS_1.1");
        let ack: unsafe extern "C" fn(P<ibv_async_event>) = l.func("ibv_ack_async_event", "IBVERBS_1.1");
        let fd = (*ctx.0).async_fd;
        assert!(fd >= 0);
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        assert_eq!(libc::poll(&mut pfd, 1, 0), 0, "no event: not readable");
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert_eq!(flags & libc::O_NONBLOCK, 0, "async_fd starts blocking");
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let mut ev = ibv_async_event::default();
        assert_eq!(get(ctx.0, &mut ev), -1);
        assert_eq!(errno(), libc::EAGAIN);
        assert_eq!(get(ctx.0, null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(get(null_mut(), &mut ev), -1);
        assert_eq!(errno(), libc::EINVAL);
        ack(null_mut());
        assert_eq!(errno(), libc::EINVAL);
    }
}

#[test]
fn names_of_statuses_events_and_states() {
    let v = v();
    // SAFETY: C calls; the strings are static.
    unsafe {
        assert_eq!(cstr((v.wc_status_str)(ibv_wc_status_IBV_WC_SUCCESS as c_int)), "success");
        assert_eq!(cstr((v.wc_status_str)(ibv_wc_status_IBV_WC_WR_FLUSH_ERR as c_int)), "Work Request Flushed Error");
        assert_eq!(cstr((v.wc_status_str)(1000)), "unknown");
        assert_eq!(cstr((v.event_type_str)(ibv_event_type_IBV_EVENT_COMM_EST as c_int)), "communication established");
        assert_eq!(cstr((v.event_type_str)(-5)), "unknown");
        assert_eq!(cstr((v.port_state_str)(ibv_port_state_IBV_PORT_DOWN as c_int)), "PORT_DOWN");
    }
}

/// What rping, ucmatose, rdma_server/client, perftest, qperf, fio and ibverbs-utils import
/// from libibverbs (rdma-core 44, Debian 12), each at the version they name: with BIND_NOW,
/// one missing symbol or version node stops a program from loading.
#[test]
fn every_symbol_the_known_programs_import_exists_at_its_version() {
    let v1_1 = [
        "ibv_ack_async_event",
        "ibv_ack_cq_events",
        "ibv_alloc_pd",
        "ibv_attach_mcast",
        "ibv_close_device",
        "ibv_create_ah",
        "ibv_create_ah_from_wc",
        "ibv_create_cq",
        "ibv_create_qp",
        "ibv_create_srq",
        "ibv_dealloc_pd",
        "ibv_dereg_mr",
        "ibv_destroy_ah",
        "ibv_destroy_cq",
        "ibv_destroy_qp",
        "ibv_destroy_srq",
        "ibv_detach_mcast",
        "ibv_event_type_str",
        "ibv_fork_init",
        "ibv_free_device_list",
        "ibv_get_async_event",
        "ibv_get_cq_event",
        "ibv_get_device_list",
        "ibv_get_device_name",
        "ibv_get_device_guid",
        "ibv_modify_qp",
        "ibv_open_device",
        "ibv_port_state_str",
        "ibv_query_device",
        "ibv_query_gid",
        "ibv_query_pkey",
        "ibv_query_port",
        "ibv_query_qp",
        "ibv_reg_mr",
        "ibv_wc_status_str",
    ];
    let mut wanted: Vec<(&str, &str)> = v1_1.iter().map(|s| (*s, "IBVERBS_1.1")).collect();
    wanted.extend([
        ("ibv_create_comp_channel", "IBVERBS_1.0"),
        ("ibv_destroy_comp_channel", "IBVERBS_1.0"),
        ("ibv_read_sysfs_file", "IBVERBS_1.0"),
        ("ibv_qp_to_qp_ex", "IBVERBS_1.6"),
        ("ibv_reg_mr_iova2", "IBVERBS_1.8"),
        ("_ibv_query_gid_ex", "IBVERBS_1.11"),
        ("ibv_query_gid_type", "IBVERBS_PRIVATE_34"),
    ]);
    let l = lib();
    let missing: Vec<_> = wanted.iter().filter(|(s, ver)| l.raw(s, ver).is_null()).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    // Nothing else leaks out: std's unmangled entry points stay local (the version script
    // ends in `local: *`).
    for internal in ["rust_begin_unwind", "__rust_alloc", "rust_eh_personality"] {
        assert!(l.raw_any(internal).is_null(), "{internal} is exported");
    }
}

/// Threads creating, using and destroying their own objects at once: the registry keeps them
/// apart, and the rules (EBUSY) hold in each.
#[test]
fn objects_made_and_destroyed_from_many_threads_at_once() {
    let v = v();
    let ctx = Ctx::open();
    let c = ctx.0 as usize;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let ctx = c as P<ibv_context>;
                let mut buf = vec![0u8; 4096];
                for i in 0..50 {
                    // SAFETY: C calls with valid arguments; `buf` outlives its registrations.
                    unsafe {
                        let pd = (v.alloc_pd)(ctx);
                        assert!(!pd.is_null());
                        let cq = (v.create_cq)(ctx, 8, null_mut(), null_mut(), 0);
                        let mut init = rc_init(cq, cq);
                        let qp = (v.create_qp)(pd, &mut init);
                        assert!(!qp.is_null(), "thread {t} round {i}: errno {}", errno());
                        let mr = (v.reg_mr)(pd, buf.as_mut_ptr().cast(), buf.len(), 1);
                        assert!(!mr.is_null());
                        assert_eq!((v.dealloc_pd)(pd), libc::EBUSY);
                        assert_eq!((v.destroy_qp)(qp), 0);
                        assert_eq!((v.dereg_mr)(mr), 0);
                        assert_eq!((v.destroy_cq)(cq), 0);
                        assert_eq!((v.dealloc_pd)(pd), 0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A queue pair moved to ERR before it ever had a connection flushes what was posted to it
/// (`IBV_WC_WR_FLUSH_ERR`), as the verbs require; work posted afterwards completes flushed
/// too, and those completions, made by the library, wake an armed completion channel like
/// the stack's own.
#[test]
fn moving_an_unconnected_queue_pair_to_err_flushes_its_work_and_signals_the_channel() {
    let v = v();
    let ctx = Ctx::open();
    let ops = ctx.ops();
    // SAFETY: C calls with valid arguments; the buffer outlives its registration.
    unsafe {
        let pd = (v.alloc_pd)(ctx.0);
        let ch = (v.create_comp_channel)(ctx.0);
        let cq = (v.create_cq)(ctx.0, 16, 0x77 as *mut c_void, ch, 0);
        let mut init = rc_init(cq, cq);
        let qp = (v.create_qp)(pd, &mut init);
        assert!(!qp.is_null());
        let mut buf = [0u8; 64];
        let mr = (v.reg_mr)(pd, buf.as_mut_ptr().cast(), 64, ibv_access_flags_IBV_ACCESS_LOCAL_WRITE as c_int);
        let post_recv = |wr_id: u64| {
            let mut sge = ibv_sge { addr: (*mr).addr as u64, length: 64, lkey: (*mr).lkey };
            let mut wr = ibv_recv_wr { wr_id, sg_list: &mut sge, num_sge: 1, ..Default::default() };
            let mut bad = null_mut();
            assert_eq!(ops.post_recv.unwrap()(qp, &mut wr, &mut bad), 0);
        };
        let poll = |want: usize| {
            let mut got = Vec::new();
            let start = std::time::Instant::now();
            while got.len() < want && start.elapsed() < std::time::Duration::from_secs(10) {
                let mut wc = [ibv_wc::default(); 4];
                let n = ops.poll_cq.unwrap()(cq, 4, wc.as_mut_ptr());
                got.extend(wc[..n as usize].iter().map(|w| (w.wr_id, w.status, w.opcode, w.qp_num)));
            }
            got
        };
        let wait_event = || {
            let mut pfd = libc::pollfd { fd: (*ch).fd, events: libc::POLLIN, revents: 0 };
            assert_eq!(libc::poll(&mut pfd, 1, 10_000), 1, "the armed channel signals");
            let (mut got, mut context) = (null_mut(), null_mut());
            assert_eq!((v.get_cq_event)(ch, &mut got, &mut context), 0);
            assert_eq!((got, context), (cq, 0x77 as *mut c_void));
            (v.ack_cq_events)(cq, 1);
        };
        post_recv(1);
        post_recv(2);
        assert_eq!(ops.req_notify_cq.unwrap()(cq, 0), 0);
        let mut attr = ibv_qp_attr { qp_state: ibv_qp_state_IBV_QPS_ERR, ..Default::default() };
        assert_eq!((v.modify_qp)(qp, &mut attr, ibv_qp_attr_mask_IBV_QP_STATE as c_int), 0);
        let flush = ibv_wc_status_IBV_WC_WR_FLUSH_ERR;
        let recv = ibv_wc_opcode_IBV_WC_RECV;
        let n = (*qp).qp_num;
        assert_eq!(poll(2), [(1, flush, recv, n), (2, flush, recv, n)]);
        wait_event();
        let mut init_out = ibv_qp_init_attr::default();
        assert_eq!((v.query_qp)(qp, &mut attr, 0, &mut init_out), 0);
        assert_eq!(attr.qp_state, ibv_qp_state_IBV_QPS_ERR);

        // Posted in ERR: accepted and flushed by the library, signalling the channel too
        // (armed for solicited completions only: an error completion fires it).
        assert_eq!(ops.req_notify_cq.unwrap()(cq, 1), 0);
        post_recv(3);
        assert_eq!(poll(1), [(3, flush, recv, n)]);
        wait_event();

        assert_eq!((v.destroy_qp)(qp), 0);
        assert_eq!((v.dereg_mr)(mr), 0);
        assert_eq!((v.destroy_cq)(cq), 0);
        assert_eq!((v.destroy_comp_channel)(ch), 0);
        assert_eq!((v.dealloc_pd)(pd), 0);
    }
}
