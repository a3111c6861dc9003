//! The data path through the C entry points, in process: a queue pair made with
//! `ibv_create_qp` is connected through the Rust API (librdmacm's job in the next phase) to a
//! peer of the same stack, then driven with `ops.post_send`, `ops.post_recv`, `ops.poll_cq`,
//! `ibv_req_notify_cq` and `ibv_get_cq_event` as a C program would.
#![allow(unsafe_code, non_upper_case_globals)]

use crate::abi::*;
use crate::ffi;
use crate::state;
use iwarp::{Access, ConnParams, QpInit, RecvWr, SendWr, WcOpcode, WcStatus, WorkCompletion};
use std::ptr::null_mut;
use std::time::{Duration, Instant};

/// Polls `cq` through the context's operations table until `n` completions came (5 s at most).
///
/// # Safety
/// `ctx` and `cq` are live objects of this library.
unsafe fn poll_n(ctx: *mut ibv_context, cq: *mut ibv_cq, n: usize) -> Vec<ibv_wc> {
    // SAFETY: a live context (the caller's contract).
    let poll = unsafe { (*ctx).ops.poll_cq }.expect("poll_cq");
    let mut out = vec![ibv_wc::default(); n];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < n && Instant::now() < deadline {
        // SAFETY: `out` has room for `n - got` more entries.
        let r = unsafe { poll(cq, (n - got) as i32, out.as_mut_ptr().add(got)) };
        assert!(r >= 0, "poll_cq failed");
        got += r as usize;
    }
    assert_eq!(got, n, "completions within 5 s");
    out
}

#[test]
fn posted_work_moves_data_and_completes_through_the_c_entry_points() {
    let rights = ibv_access_flags_IBV_ACCESS_LOCAL_WRITE
        | ibv_access_flags_IBV_ACCESS_REMOTE_WRITE
        | ibv_access_flags_IBV_ACCESS_REMOTE_READ;
    let mut buf = vec![0u8; 4096];
    // SAFETY: C calls with valid arguments; `buf` outlives its registration (deregistered
    // below, after every request naming it completed).
    let (ctx, pd, ch, cq, qp, mr) = unsafe {
        let list = ffi::ibv_get_device_list(null_mut());
        let ctx = ffi::ibv_open_device(*list);
        ffi::ibv_free_device_list(list);
        assert!(!ctx.is_null());
        let pd = ffi::ibv_alloc_pd(ctx);
        let ch = ffi::ibv_create_comp_channel(ctx);
        let cq = ffi::ibv_create_cq(ctx, 64, null_mut(), ch, 0);
        let mut init = ibv_qp_init_attr {
            send_cq: cq,
            recv_cq: cq,
            cap: ibv_qp_cap { max_send_wr: 16, max_recv_wr: 16, max_send_sge: 2, max_recv_sge: 2, max_inline_data: 64 },
            qp_type: ibv_qp_type_IBV_QPT_RC,
            ..Default::default()
        };
        let qp = ffi::ibv_create_qp(pd, &mut init);
        assert!(!qp.is_null());
        let mr = ffi::ibv_reg_mr(pd, buf.as_mut_ptr().cast(), buf.len(), rights as i32);
        assert!(!mr.is_null());
        (ctx, pd, ch, cq, qp, mr)
    };

    // The peer: plain Rust on the same stack.
    let dev = state::device().unwrap();
    let ppd = dev.alloc_pd();
    let pcq = dev.create_cq(64).unwrap();
    let pqp = ppd.create_qp(&QpInit::new(&pcq, &pcq)).unwrap();
    let target = ppd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ).unwrap();
    target.write(100, b"bytes to read").unwrap();
    let inbox = ppd.reg_mr(256, Access::LOCAL_WRITE).unwrap();
    pqp.post_recv(&[RecvWr::new(100, &[inbox.sge(0, 256)])]).unwrap();
    let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 4).unwrap();
    let addr = listener.local_addr();
    let server = std::thread::spawn(move || {
        let req = listener.get_request(Some(Duration::from_secs(5))).unwrap();
        req.accept(&pqp, &ConnParams::default()).unwrap();
        pqp
    });
    let (q, _) = state::qp(qp as usize).unwrap();
    q.qp.connect(addr, &ConnParams::default()).unwrap();
    let pqp = server.join().unwrap();
    pqp.wait_established(Duration::from_secs(5)).unwrap();

    // SAFETY: C calls with valid arguments and C-shaped work requests that live across the
    // calls; `buf` is read only after the completions of the requests that wrote it.
    unsafe {
        let mut attr = ibv_qp_attr::default();
        let mut init = ibv_qp_init_attr::default();
        assert_eq!(ffi::ibv_query_qp(qp, &mut attr, 0, &mut init), 0);
        assert_eq!(attr.qp_state, ibv_qp_state_IBV_QPS_RTS, "connected");
        assert_eq!((attr.max_rd_atomic, attr.max_dest_rd_atomic), (16, 16), "the negotiated ORD and IRD");
        attr.qp_state = ibv_qp_state_IBV_QPS_RTS;
        let state_mask = ibv_qp_attr_mask_IBV_QP_STATE as i32;
        assert_eq!(ffi::ibv_modify_qp(qp, &mut attr, state_mask), 0, "RTS once connected: nothing to do");

        let lkey = (*mr).lkey;
        let base = buf.as_ptr() as u64;
        buf[..5].copy_from_slice(b"hello");
        let mut write_sge = ibv_sge { addr: base, length: 5, lkey };
        let mut read_sge = ibv_sge { addr: base + 1024, length: 13, lkey };
        let ping = *b"ping";
        let mut inline_sge = ibv_sge { addr: ping.as_ptr() as u64, length: 4, lkey: 0 };
        let mut read = ibv_send_wr {
            wr_id: 3,
            sg_list: &mut read_sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_RDMA_READ,
            send_flags: ibv_send_flags_IBV_SEND_SIGNALED,
            ..Default::default()
        };
        read.wr.rdma =
            ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr: target.addr() + 100, rkey: target.rkey() };
        let mut send = ibv_send_wr {
            wr_id: 2,
            next: &mut read,
            sg_list: &mut inline_sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_SEND,
            send_flags: ibv_send_flags_IBV_SEND_SIGNALED | ibv_send_flags_IBV_SEND_INLINE,
            ..Default::default()
        };
        let mut write = ibv_send_wr {
            wr_id: 1,
            next: &mut send,
            sg_list: &mut write_sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_RDMA_WRITE,
            send_flags: ibv_send_flags_IBV_SEND_SIGNALED,
            ..Default::default()
        };
        write.wr.rdma = ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr: target.addr(), rkey: target.rkey() };
        let mut bad = null_mut();
        let post_send = (*ctx).ops.post_send.unwrap();
        assert_eq!(post_send(qp, &mut write, &mut bad), 0);
        let wcs = poll_n(ctx, cq, 3);
        let got: Vec<_> = wcs.iter().map(|w| (w.wr_id, w.status, w.opcode)).collect();
        assert_eq!(
            got,
            [
                (1, ibv_wc_status_IBV_WC_SUCCESS, ibv_wc_opcode_IBV_WC_RDMA_WRITE),
                (2, ibv_wc_status_IBV_WC_SUCCESS, ibv_wc_opcode_IBV_WC_SEND),
                (3, ibv_wc_status_IBV_WC_SUCCESS, ibv_wc_opcode_IBV_WC_RDMA_READ),
            ]
        );
        assert_eq!(wcs[2].byte_len, 13);
        assert!(wcs.iter().all(|w| w.qp_num == (*qp).qp_num));
        assert_eq!(&buf[1024..1037], b"bytes to read", "the Read landed in the application's buffer");

        // The peer got the inline Send; the Write's bytes are there once the Send is.
        let mut pwc = [WorkCompletion::default(); 1];
        assert_eq!(pcq.wait(&mut pwc, Some(Duration::from_secs(5))), 1);
        assert_eq!(
            (pwc[0].wr_id, pwc[0].status, pwc[0].opcode, pwc[0].byte_len),
            (100, WcStatus::Success, WcOpcode::Recv, 4)
        );
        assert_eq!(inbox.to_vec(0, 4).unwrap(), b"ping");
        assert_eq!(target.to_vec(0, 5).unwrap(), b"hello");

        // A receive into the application's buffer, reported through the armed channel.
        let mut recv_sge = ibv_sge { addr: base + 2048, length: 64, lkey };
        let mut recv = ibv_recv_wr { wr_id: 9, sg_list: &mut recv_sge, num_sge: 1, next: null_mut() };
        let mut bad_r = null_mut();
        assert_eq!((*ctx).ops.post_recv.unwrap()(qp, &mut recv, &mut bad_r), 0);
        assert_eq!((*ctx).ops.req_notify_cq.unwrap()(cq, 0), 0);
        let pong = ppd.reg_mr(16, Access::LOCAL_WRITE).unwrap();
        pong.write(0, b"pong").unwrap();
        // The peer sends only once this thread is (very likely) asleep in ibv_get_cq_event.
        let sender = {
            let (pqp, pong) = (pqp.clone(), pong.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                pqp.post_send(&[SendWr::send(5, &[pong.sge(0, 4)])]).unwrap();
            })
        };
        let (mut ev_cq, mut ev_ctx) = (null_mut(), null_mut());
        assert_eq!(ffi::ibv_get_cq_event(ch, &mut ev_cq, &mut ev_ctx), 0, "waits for the notification");
        sender.join().unwrap();
        assert_eq!(ev_cq, cq);
        let wcs = poll_n(ctx, cq, 1);
        assert_eq!((wcs[0].wr_id, wcs[0].status, wcs[0].opcode, wcs[0].byte_len), (9, 0, ibv_wc_opcode_IBV_WC_RECV, 4));
        assert_eq!(&buf[2048..2052], b"pong");
        assert_eq!(ffi::ibv_destroy_cq(cq), libc::EBUSY, "in use, and one notification unacknowledged");
        ffi::ibv_ack_cq_events(cq, 1);

        assert_eq!(ffi::ibv_destroy_qp(qp), 0);
        assert_eq!(ffi::ibv_dereg_mr(mr), 0);
        assert_eq!(ffi::ibv_destroy_cq(cq), 0);
        assert_eq!(ffi::ibv_destroy_comp_channel(ch), 0);
        assert_eq!(ffi::ibv_dealloc_pd(pd), 0);
        assert_eq!(ffi::ibv_close_device(ctx), 0);
    }
    drop(pqp);
}

#[test]
fn a_list_longer_than_max_list_is_longer_than_any_queue() {
    let caps = state::device().unwrap().capabilities();
    assert!(ffi::MAX_LIST > caps.max_qp_wr, "{} work requests fit a queue", caps.max_qp_wr);
}

/// The context's event queue, as phase 2 will feed it: an event makes `async_fd` readable,
/// `ibv_get_async_event` hands it over (with its element), and acknowledging it is counted.
#[test]
fn a_queued_asynchronous_event_reaches_ibv_get_async_event() {
    // SAFETY: C calls with valid arguments.
    unsafe {
        let list = ffi::ibv_get_device_list(null_mut());
        let ctx = ffi::ibv_open_device(*list);
        ffi::ibv_free_device_list(list);
        let pd = ffi::ibv_alloc_pd(ctx);
        let cq = ffi::ibv_create_cq(ctx, 4, null_mut(), null_mut(), 0);
        let mut init =
            ibv_qp_init_attr { send_cq: cq, recv_cq: cq, qp_type: ibv_qp_type_IBV_QPT_RC, ..Default::default() };
        let qp = ffi::ibv_create_qp(pd, &mut init);
        let ev = state::AsyncEvent { event_type: ibv_event_type_IBV_EVENT_COMM_EST, element: qp as usize };
        crate::verbs::post_async_event(ctx as usize, ev).unwrap();
        let mut pfd = libc::pollfd { fd: (*ctx).async_fd, events: libc::POLLIN, revents: 0 };
        assert_eq!(libc::poll(&mut pfd, 1, 1000), 1, "async_fd readable");
        let mut got = ibv_async_event::default();
        assert_eq!(ffi::ibv_get_async_event(ctx, &mut got), 0);
        assert_eq!(got.event_type, ibv_event_type_IBV_EVENT_COMM_EST);
        assert_eq!(got.element.qp, qp);
        assert_eq!(libc::poll(&mut pfd, 1, 0), 0, "not readable once taken");
        let (c, _) = state::context(ctx as usize).unwrap();
        assert_eq!(c.unacked_events.load(std::sync::atomic::Ordering::Acquire), 1);
        ffi::ibv_ack_async_event(&mut got);
        assert_eq!(c.unacked_events.load(std::sync::atomic::Ordering::Acquire), 0);
        assert_eq!(ffi::ibv_close_device(ctx), 0);
    }
}

/// perftest's server destroys its control listener and, a few control messages later, binds
/// the same port for its data listener. The watcher thread holds a clone of a listener while
/// it hands out a request (the stack's event loop one while it queues it); on a busy machine
/// that clone outlived `rdma_destroy_id` and the new bind failed with `EADDRINUSE` ("Failed
/// to bind RDMA CM address on the server"). The port is free once `rdma_destroy_id` returns.
#[test]
fn a_destroyed_listeners_port_can_be_bound_again_while_the_watcher_holds_it() {
    // SAFETY: C calls with valid arguments, as a C program makes them.
    unsafe {
        let ch = ffi::cm::rdma_create_event_channel();
        assert!(!ch.is_null());
        let listen = |port: u16| -> (*mut cma::rdma_cm_id, i32) {
            let mut id = null_mut();
            assert_eq!(ffi::cm::rdma_create_id(ch, &mut id, null_mut(), cma::rdma_port_space_RDMA_PS_TCP), 0);
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
                sin_zero: [0; 8],
            };
            let mut sa = sin;
            if ffi::cm::rdma_bind_addr(id, (&mut sa as *mut libc::sockaddr_in).cast()) != 0 {
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                assert_eq!(ffi::cm::rdma_destroy_id(id), 0);
                return (null_mut(), e);
            }
            assert_eq!(ffi::cm::rdma_listen(id, 4), 0);
            (id, 0)
        };
        let (first, e) = listen(0);
        assert_eq!(e, 0);
        let port = u16::from_be(ffi::cm::rdma_get_src_port(first));
        let held = crate::cm::listener_of(first as usize).expect("a listening identifier");
        assert_eq!(ffi::cm::rdma_destroy_id(first), 0);
        let (second, e) = listen(port);
        assert_eq!(e, 0, "bind after rdma_destroy_id: errno {e}");
        drop(held);
        assert_eq!(ffi::cm::rdma_destroy_id(second), 0);
        ffi::cm::rdma_destroy_event_channel(ch);
    }
}
