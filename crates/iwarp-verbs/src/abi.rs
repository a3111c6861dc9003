//! The C structures of rdma-core 44's `<infiniband/verbs.h>` (x86-64), as bindgen generates
//! them, and compile-time checks of the sizes and offsets that applications and the header's
//! inline functions read.
//!
//! `verbs.rs` is checked in rather than generated at build time: building the library then
//! needs no libclang and no headers, and the layout is pinned to the ABI the library claims
//! (rdma-core 44, Debian 12) whatever headers the build machine has. `abi/gen.sh` regenerates
//! it with Debian 12's `bindgen` (0.60.1); the test `tests/abi_bindings.rs` runs that script
//! and fails if the result differs from the checked-in file, so a drift of the installed
//! headers or of the generator is caught. The assertions below are independent of bindgen:
//! they restate the numbers of `/work/shared/verbs-abi-notes.md`, checked against the headers.

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all,
    unsafe_code,
    unsafe_op_in_unsafe_fn
)]
// bindgen's `Default` impls zero structs that hold unions: plain data for which all-zero bytes
// are a valid value (the C side initialises them with `= {}` too). That is the only `unsafe`
// in the generated file.
mod verbs {
    include!("abi/verbs.rs");
}
pub use verbs::*;

/// The structures of rdma-core 44's `<rdma/rdma_cma.h>` (librdmacm), generated the same way
/// (`src/abi/rdma_cma.rs`); the verbs types they point to are the ones above. Kept in their
/// own namespace: the generated file repeats a few C library typedefs of `verbs.rs`.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all,
    unsafe_code,
    unsafe_op_in_unsafe_fn
)]
// As above: bindgen's `Default` impls (all-zero plain data) and its union-field accessors
// are the only `unsafe` in the generated file.
pub mod cma {
    use super::verbs::*;
    include!("abi/rdma_cma.rs");
}

/// Bytes of `struct ibv_port_attr` that the exported (compat) `ibv_query_port` fills: the
/// fields up to `flags`, as applications built against headers before `port_cap_flags2` know
/// it. The header's inline `ibv_query_port` clears the rest.
pub const COMPAT_PORT_ATTR_LEN: usize = 48;

use core::mem::{offset_of, size_of};

/// `abi_compat` of an extended context (`__VERBS_ABI_IS_EXTENDED`): the header's inlines use
/// `struct verbs_context` only when this is set.
pub const VERBS_ABI_IS_EXTENDED: *mut libc::c_void = usize::MAX as *mut libc::c_void;

macro_rules! layout {
    ($t:ty, $size:expr $(, $field:ident @ $off:expr)* $(,)?) => {
        const _: () = assert!(size_of::<$t>() == $size, concat!("size of ", stringify!($t)));
        $(const _: () = assert!(offset_of!($t, $field) == $off,
            concat!("offset of ", stringify!($t), ".", stringify!($field)));)*
    };
}

layout!(ibv_device, 664, node_type @ 16, transport_type @ 20, name @ 24);
layout!(ibv_context, 328, device @ 0, ops @ 8, cmd_fd @ 264, async_fd @ 268, abi_compat @ 320);
layout!(ibv_context_ops, 256, poll_cq @ 88, req_notify_cq @ 96, post_srq_recv @ 160,
    post_send @ 200, post_recv @ 208);
layout!(verbs_context, 648, query_port @ 0, query_device_ex @ 216, create_qp_ex @ 264,
    sz @ 312, context @ 320);
layout!(ibv_pd, 16, context @ 0, handle @ 8);
layout!(ibv_mr, 48, context @ 0, pd @ 8, addr @ 16, length @ 24, handle @ 32, lkey @ 36, rkey @ 40);
layout!(ibv_cq, 128, context @ 0, channel @ 8, cq_context @ 16, handle @ 24, cqe @ 28);
layout!(ibv_comp_channel, 16, context @ 0, fd @ 8, refcnt @ 12);
layout!(ibv_srq, 128, context @ 0, srq_context @ 8, pd @ 16);
layout!(ibv_qp, 160, context @ 0, qp_context @ 8, pd @ 16, send_cq @ 24, recv_cq @ 32, srq @ 40,
    handle @ 48, qp_num @ 52, state @ 56, qp_type @ 60);
layout!(ibv_qp_ex, 352);
layout!(ibv_wc, 48, wr_id @ 0, status @ 8, opcode @ 12, vendor_err @ 16, byte_len @ 20,
    qp_num @ 28, src_qp @ 32, wc_flags @ 36);
layout!(ibv_send_wr, 128, wr_id @ 0, next @ 8, sg_list @ 16, num_sge @ 24, opcode @ 28,
    send_flags @ 32, wr @ 40);
layout!(ibv_recv_wr, 32, wr_id @ 0, next @ 8, sg_list @ 16, num_sge @ 24);
layout!(ibv_sge, 16, addr @ 0, length @ 8, lkey @ 12);
layout!(ibv_device_attr, 232, fw_ver @ 0, node_guid @ 64, max_qp_wr @ 112, atomic_cap @ 164,
    phys_port_cnt @ 227);
layout!(ibv_device_attr_ex, 400, orig_attr @ 0, comp_mask @ 232);
layout!(ibv_port_attr, 52, state @ 0, max_mtu @ 4, active_mtu @ 8, gid_tbl_len @ 12,
    port_cap_flags @ 16, phys_state @ 45, link_layer @ 46, flags @ 47, port_cap_flags2 @ 48);
layout!(ibv_qp_attr, 144, qp_state @ 0, cur_qp_state @ 4, qp_access_flags @ 32, cap @ 36);
layout!(ibv_qp_init_attr, 64, qp_context @ 0, send_cq @ 8, recv_cq @ 16, srq @ 24, cap @ 32,
    qp_type @ 52, sq_sig_all @ 56);
layout!(ibv_qp_init_attr_ex, 136, comp_mask @ 60, pd @ 64);
layout!(ibv_srq_init_attr, 24, srq_context @ 0, attr @ 8);
layout!(ibv_async_event, 16, element @ 0, event_type @ 8);
layout!(ibv_gid_entry, 32, gid @ 0, gid_index @ 16, port_num @ 20, gid_type @ 24, ndev_ifindex @ 28);

layout!(cma::rdma_cm_id, 416, verbs @ 0, channel @ 8, context @ 16, qp @ 24, route @ 32, ps @ 344,
    port_num @ 348, event @ 352, send_cq_channel @ 360, send_cq @ 368, recv_cq_channel @ 376,
    recv_cq @ 384, srq @ 392, pd @ 400, qp_type @ 408);
layout!(cma::rdma_cm_event, 80, id @ 0, listen_id @ 8, event @ 16, status @ 20, param @ 24);
layout!(cma::rdma_conn_param, 24, private_data @ 0, private_data_len @ 8, responder_resources @ 9,
    initiator_depth @ 10, qp_num @ 16);
layout!(cma::rdma_event_channel, 4, fd @ 0);
layout!(cma::rdma_addrinfo, 96, ai_flags @ 0, ai_family @ 4, ai_port_space @ 12, ai_src_addr @ 24,
    ai_dst_addr @ 32, ai_connect_len @ 72, ai_next @ 88);
layout!(cma::rdma_route, 312, addr @ 0, path_rec @ 296, num_paths @ 304);
layout!(cma::rdma_addr, 296);
