//! The limit of a shared receive queue (`SharedReceiveQueue::arm_limit`): once a receive
//! taken leaves fewer work requests queued than the limit, the queue pair that took it
//! reports `QpEvent::SrqLimitReached`, once, and the limit reads 0 until armed again.

mod common;
use common::*;
use iwarp::*;
use std::time::Duration;

/// The server's queue pair takes its receives from `srq`; the client is a plain end.
fn pair_on_srq(dev: &Device, pd: &ProtectionDomain, srq: &SharedReceiveQueue) -> (End, QueuePair, CompletionQueue) {
    let cfg = PairConfig::default();
    let listener = dev.listen(any_port(), 4).expect("listen");
    let addr = listener.local_addr();
    let (scq, rcq) = (dev.create_cq(256).unwrap(), dev.create_cq(256).unwrap());
    let mut init = QpInit::new(&scq, &rcq);
    init.srq = Some(srq);
    init.cap = cfg.cap;
    let sqp = pd.create_qp(&init).expect("qp");
    let client = End::new(dev, pd, cfg.cap, Progress::Thread);
    let accepting = sqp.clone();
    let t = std::thread::spawn(move || {
        let req = listener.get_request(Some(WAIT)).expect("request");
        req.accept(&accepting, &ConnParams::default()).expect("accept");
    });
    client.qp.connect(addr, &ConnParams::default()).expect("connect");
    t.join().unwrap();
    sqp.wait_established(WAIT).unwrap();
    (client, sqp, rcq)
}

/// Events other than `Established` queued on `qp` within `d`.
fn events_within(qp: &QueuePair, d: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(e) = next_non_established(qp, d) {
        out.push(format!("{e:?}"));
    }
    out
}

#[test]
fn the_limit_fires_once_below_it_and_can_be_armed_again() {
    init_log();
    let dev = device();
    let pd = dev.alloc_pd();
    let srq = pd.create_srq(8, 1).expect("srq");
    assert_eq!((srq.depth(), srq.max_sge(), srq.limit()), (8, 1, 0), "created unarmed");
    assert_eq!(srq.arm_limit(9), Err(CreateError::QueueTooDeep { requested: 9, max: 8 }));
    assert_eq!(srq.limit(), 0, "a refused limit arms nothing");
    let (client, sqp, rcq) = pair_on_srq(&dev, &pd, &srq);
    let dst = pd.reg_mr(8 * 64, Access::LOCAL_WRITE).unwrap();
    let src = pd.reg_mr(64, Access::empty()).unwrap();
    for i in 0..6 {
        srq.post_recv(&[RecvWr::new(i, &[dst.sge(i as usize * 64, 64)])]).unwrap();
    }
    srq.arm_limit(4).unwrap();
    assert_eq!(srq.limit(), 4);
    let send = |i: u64| {
        client.qp.post_send(&[SendWr::send(i, &[src.sge(0, 8)])]).unwrap();
        assert_ok(&wait_wcs(&rcq, 1, WAIT));
        assert_ok(&client.send_wcs(1));
    };
    // 6 -> 5 -> 4: not below 4 yet.
    send(0);
    send(1);
    assert_eq!(srq.len(), 4);
    assert!(events_within(&sqp, Duration::from_millis(100)).is_empty(), "at the limit, not below it");
    assert_eq!(srq.limit(), 4, "still armed");
    // 4 -> 3: below.
    send(2);
    let e = wait_event(&sqp, WAIT, |e| matches!(e, QpEvent::SrqLimitReached));
    assert!(matches!(e, QpEvent::SrqLimitReached));
    assert_eq!(srq.limit(), 0, "disarmed once reached");
    // 3 -> 2 -> 1: disarmed, nothing more.
    send(3);
    send(4);
    assert!(events_within(&sqp, Duration::from_millis(100)).is_empty(), "it fires once");
    // Re-armed above the count: the next receive taken reports it.
    for i in 0..3 {
        srq.post_recv(&[RecvWr::new(10 + i, &[dst.sge(i as usize * 64, 64)])]).unwrap();
    }
    assert_eq!(srq.len(), 4);
    srq.arm_limit(5).unwrap();
    send(5);
    let e = wait_event(&sqp, WAIT, |e| matches!(e, QpEvent::SrqLimitReached));
    assert!(matches!(e, QpEvent::SrqLimitReached));
    assert_eq!(srq.limit(), 0);
    // Armed and disarmed again (0): nothing.
    srq.arm_limit(3).unwrap();
    srq.arm_limit(0).unwrap();
    assert_eq!(srq.limit(), 0);
    send(6);
    assert!(events_within(&sqp, Duration::from_millis(100)).is_empty(), "0 disarms");
}
