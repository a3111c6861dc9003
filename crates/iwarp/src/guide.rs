//! A guide for programmers who know rdma-core (libibverbs and librdmacm): where each call
//! went, what is different on iWARP, and what the compiler checks for you. This module has
//! no items; it is documentation only.
//!
//! # rdma-core names in this API
//!
//! | rdma-core | here | notes |
//! |---|---|---|
//! | `ibv_open_device`, `ibv_query_device` | [`Device::open`](crate::Device::open), [`Device::capabilities`](crate::Device::capabilities) | a device is a set of event-loop threads, not hardware |
//! | `ibv_alloc_pd` / `ibv_dealloc_pd` | [`Device::alloc_pd`](crate::Device::alloc_pd) / drop | |
//! | `ibv_reg_mr` | [`ProtectionDomain::reg_mr`](crate::ProtectionDomain::reg_mr) (memory owned by the region), [`reg_owned`](crate::ProtectionDomain::reg_owned) (your `Vec`/`Box`), [`reg_mr_external`](crate::ProtectionDomain::reg_mr_external) (`unsafe`, your pointer) | `access` flags: [`Access`](crate::Access) |
//! | `ibv_dereg_mr` | [`MemoryRegion::deregister`](crate::MemoryRegion::deregister) or dropping the last handle; [`OwnedRegion::into_inner`](crate::OwnedRegion::into_inner) | waits for copies under way; later work naming it fails |
//! | `mr->lkey`, `mr->rkey`, `mr->addr` | [`MemoryRegion::stag`](crate::MemoryRegion::stag) (`lkey`/`rkey` are the same STag), [`addr`](crate::MemoryRegion::addr), [`remote`](crate::MemoryRegion::remote) | [`RemoteAddr`](crate::RemoteAddr) bundles rkey, address and length |
//! | `struct ibv_sge` | [`Sge`](crate::Sge), from [`MemoryRegion::sge`](crate::MemoryRegion::sge) | borrows the region: see below |
//! | `ibv_create_comp_channel` | [`Device::create_comp_channel`](crate::Device::create_comp_channel) | [`CompletionChannel`](crate::CompletionChannel) is `AsFd` |
//! | `ibv_create_cq` | [`Device::create_cq`](crate::Device::create_cq), [`create_cq_with_channel`](crate::Device::create_cq_with_channel) | |
//! | `ibv_poll_cq` | [`CompletionQueue::poll`](crate::CompletionQueue::poll); [`wait`](crate::CompletionQueue::wait) blocks up to a timeout | fills a `&mut [WorkCompletion]` |
//! | `ibv_req_notify_cq` | [`CompletionQueue::req_notify`](crate::CompletionQueue::req_notify) | one notification per arming, as in verbs |
//! | `ibv_get_cq_event` | [`CompletionChannel::get_event`](crate::CompletionChannel::get_event), [`try_get_event`](crate::CompletionChannel::try_get_event) | returns the CQ's [`id`](crate::CompletionQueue::id); nothing to `ibv_ack_cq_events` |
//! | `ibv_create_qp` (`struct ibv_qp_init_attr`) | [`ProtectionDomain::create_qp`](crate::ProtectionDomain::create_qp) with [`QpInit`](crate::QpInit) / [`QpCap`](crate::QpCap) | RC only; no `ibv_modify_qp`: connection setup moves the state |
//! | `ibv_create_srq`, `ibv_post_srq_recv` | [`ProtectionDomain::create_srq`](crate::ProtectionDomain::create_srq), [`SharedReceiveQueue::post_recv`](crate::SharedReceiveQueue::post_recv) | attach with [`QpInit::srq`](crate::QpInit::srq) |
//! | `ibv_modify_srq` (`IBV_SRQ_LIMIT`), `ibv_query_srq` | [`SharedReceiveQueue::arm_limit`](crate::SharedReceiveQueue::arm_limit), [`SharedReceiveQueue::limit`](crate::SharedReceiveQueue::limit) | `IBV_EVENT_SRQ_LIMIT_REACHED` is [`QpEvent::SrqLimitReached`](crate::QpEvent::SrqLimitReached) on the queue pair that took the receive |
//! | `ibv_post_send` (`struct ibv_send_wr`) | [`QueuePair::post_send`](crate::QueuePair::post_send) with [`SendWr`](crate::SendWr) constructors: `send`, `write`, `read`, `fetch_add`, `compare_swap`, `write_with_imm`, `send_with_invalidate`, `local_invalidate` | `IBV_SEND_INLINE`: `send_inline`/`write_inline`; `IBV_SEND_SIGNALED`: on by default, [`unsignaled`](crate::SendWr::unsignaled) |
//! | `ibv_post_recv` | [`QueuePair::post_recv`](crate::QueuePair::post_recv) with [`RecvWr`](crate::RecvWr) | post before the peer sends (below) |
//! | `bad_wr` | [`PostError::index`](crate::PostError::index) | all or none: nothing of a refused list was posted |
//! | `ibv_query_qp` | [`QueuePair::state`](crate::QueuePair::state), [`conn_info`](crate::QueuePair::conn_info) | |
//! | `ibv_destroy_qp`, `ibv_destroy_cq`, ... | drop | handles are reference-counted; teardown order is not yours to get wrong |
//! | `rdma_create_event_channel`, `rdma_get_cm_event` | active side: [`QueuePair::poll_event`](crate::QueuePair::poll_event) / [`next_event`](crate::QueuePair::next_event) ([`QpEvent`](crate::QpEvent)); passive side: the [`Listener`](crate::Listener) | no `rdma_ack_cm_event` |
//! | `rdma_create_id`, `rdma_bind_addr` | none needed; [`ConnParams::source`](crate::ConnParams::source) binds the client | a queue pair is its own connection id |
//! | `rdma_resolve_addr`, `rdma_resolve_route` | none: the host's TCP routes | |
//! | `rdma_listen` | [`Device::listen`](crate::Device::listen) (or [`listen_shared`](crate::Device::listen_shared) to share the port with plain TCP) | |
//! | `rdma_get_request` | [`Listener::get_request`](crate::Listener::get_request), [`try_get_request`](crate::Listener::try_get_request) | a [`ConnectRequest`](crate::ConnectRequest) with the peer's private data and IRD/ORD |
//! | `rdma_accept` | [`ConnectRequest::accept`](crate::ConnectRequest::accept) onto a queue pair you created | [`ConnParams`](crate::ConnParams): private data, IRD/ORD, MPA options |
//! | `rdma_reject` | [`ConnectRequest::reject`](crate::ConnectRequest::reject) | the peer sees [`QpEvent::Rejected`](crate::QpEvent::Rejected) or a [`ConnectError`](crate::ConnectError) |
//! | `rdma_connect` | [`QueuePair::connect`](crate::QueuePair::connect) (blocking) or [`connect_start`](crate::QueuePair::connect_start) | resolves, connects TCP and runs the MPA exchange |
//! | `rdma_disconnect` | [`QueuePair::disconnect`](crate::QueuePair::disconnect) | graceful; [`QpEvent::Disconnected`](crate::QpEvent::Disconnected) follows |
//! | `RDMA_CM_EVENT_ESTABLISHED`, `..._DISCONNECTED` | [`QpEvent::Established`](crate::QpEvent::Established), [`QpEvent::Disconnected`](crate::QpEvent::Disconnected) | [`QueuePair::wait_established`](crate::QueuePair::wait_established) on the passive side |
//! | `enum ibv_wc_status`, `ibv_wc_status_str` | [`WcStatus`](crate::WcStatus) and its `Display` | a failed request is a completion, never `Err` |
//! | `wc.qp_num`, `wc.byte_len`, `wc.imm_data` | the same fields of [`WorkCompletion`](crate::WorkCompletion) | |
//!
//! # What is different on iWARP
//!
//! - **No receiver-not-ready retry.** InfiniBand and RoCE retry a Send that finds no receive
//!   posted (RNR NAK); iWARP has nothing of the kind, and RFC 5041 ends the connection
//!   instead. This stack holds such a Send for up to
//!   [`ConnParams::recv_wait`](crate::ConnParams::recv_wait) (2 s by default) before doing
//!   so, but a program must still keep receives posted ahead of the peer's Sends: post them
//!   before `connect`/`accept`, and re-post as each completes (or use a
//!   [`SharedReceiveQueue`](crate::SharedReceiveQueue)).
//! - **The initiator speaks first.** A responder sends nothing until the initiator's first
//!   message has arrived (RFC 5044 §7.1.2); a protocol where the server talks first needs the
//!   client to send something, or peer-to-peer mode ([`MpaOptions::peer_to_peer`](crate::MpaOptions::peer_to_peer)).
//! - **A Write or Send completes when TCP has it**, not when the peer acknowledged it: use a
//!   later message or an RDMA Read to know data has landed.
//! - **Connections are TCP connections** on the host's port space; addresses are
//!   [`SocketAddr`](std::net::SocketAddr)s, IPv4 or IPv6.
//!
//! # What the compiler checks
//!
//! A scatter/gather element borrows its region ([`Sge<'a>`](crate::Sge) holds a
//! `&'a MemoryRegion`), and a work request borrows its elements
//! ([`SendWr<'a>`](crate::SendWr), [`RecvWr<'a>`](crate::RecvWr)). Posting clones the
//! region's handle into the queue pair, which holds it until the request completes. So
//! safe code cannot hand the stack a work request whose memory is already gone. Each block
//! below fails to compile with the error code shown.
//!
//! A work request cannot outlive the region it names (`E0597`: `buf` does not live long
//! enough):
//!
//! ```compile_fail,E0597
//! use iwarp::{Access, Device, DeviceConfig, QpInit, SendWr};
//! let dev = Device::open(DeviceConfig::default()).unwrap();
//! let pd = dev.alloc_pd();
//! let cq = dev.create_cq(4).unwrap();
//! let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
//! let wr = {
//!     let buf = pd.reg_mr(64, Access::LOCAL_WRITE).unwrap();
//!     SendWr::send(1, &[buf.sge(0, 64)])
//! };
//! let _ = qp.post_send(&[wr]);
//! ```
//!
//! A region cannot be dropped while a work request borrows it (`E0505`: cannot move out of
//! `buf` because it is borrowed):
//!
//! ```compile_fail,E0505
//! use iwarp::{Access, Device, DeviceConfig, QpInit, SendWr};
//! let dev = Device::open(DeviceConfig::default()).unwrap();
//! let pd = dev.alloc_pd();
//! let cq = dev.create_cq(4).unwrap();
//! let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
//! let buf = pd.reg_mr(64, Access::LOCAL_WRITE).unwrap();
//! let wr = SendWr::send(1, &[buf.sge(0, 64)]);
//! drop(buf);
//! let _ = qp.post_send(&[wr]);
//! ```
//!
//! A registered buffer cannot be taken back while a work request borrows its region
//! (`E0505`: cannot move out of `region`):
//!
//! ```compile_fail,E0505
//! use iwarp::{Access, Device, DeviceConfig, QpInit, RecvWr};
//! let dev = Device::open(DeviceConfig::default()).unwrap();
//! let pd = dev.alloc_pd();
//! let cq = dev.create_cq(4).unwrap();
//! let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
//! let region = pd.reg_owned(vec![0u8; 64], Access::LOCAL_WRITE).unwrap();
//! let wr = RecvWr::new(1, &[region.sge(0, 64)]);
//! let vec = region.into_inner();
//! let _ = qp.post_recv(&[wr]);
//! ```
//!
//! Nor can it be touched through its old name once registered: it moved into the region
//! (`E0382`: borrow of moved value `v`):
//!
//! ```compile_fail,E0382
//! use iwarp::{Access, Device, DeviceConfig};
//! let dev = Device::open(DeviceConfig::default()).unwrap();
//! let pd = dev.alloc_pd();
//! let mut v = vec![0u8; 64];
//! let region = pd.reg_owned(v, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
//! v[0] = 1;
//! ```
//!
//! A slice of a region's bytes cannot outlive the guard that holds the region's access lock
//! (`E0597`: `guard` does not live long enough), so no reference to the bytes escapes the
//! lock the stack's own copies take:
//!
//! ```compile_fail,E0597
//! use iwarp::{Access, Device, DeviceConfig};
//! let dev = Device::open(DeviceConfig::default()).unwrap();
//! let pd = dev.alloc_pd();
//! let mr = pd.reg_mr(64, Access::LOCAL_WRITE).unwrap();
//! let bytes: &mut [u8] = {
//!     let mut guard = mr.bytes_mut(0, 8).unwrap();
//!     &mut guard[..]
//! };
//! bytes[0] = 1;
//! ```
//!
//! Registering memory the region does not own needs `unsafe` (`E0133`), because only the
//! caller can promise it stays valid and in place while registered:
//!
//! ```compile_fail,E0133
//! use iwarp::{Access, Device, DeviceConfig};
//! let dev = Device::open(DeviceConfig::default()).unwrap();
//! let pd = dev.alloc_pd();
//! let mut mem = vec![0u8; 64];
//! let mr = pd.reg_mr_external(mem.as_mut_ptr(), mem.len(), Access::LOCAL_WRITE);
//! ```
//!
//! What the compiler does *not* check: writing into a region (with
//! [`MemoryRegion::write`](crate::MemoryRegion::write) or a
//! [`bytes_mut`](crate::MemoryRegion::bytes_mut) guard) while a posted request sends from it
//! or a peer writes into it. Every handle is shared (`&self`), as in verbs; such a write is
//! never undefined behaviour (the crate docs' "Memory model"), but the bytes sent or read
//! are indeterminate until the request completes or a later message says the peer is done.
