//! Completion channels and pollable descriptors: an armed completion queue makes its channel's
//! descriptor readable and `get_event` name it after the next completion (one notification per
//! arming); solicited-only arming fires for a solicited Send (or an error) and not for an
//! unsolicited one. Listener and queue pair descriptors signal queued requests and events.
mod common;

use common::*;
use iwarp::*;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// `true` if `fd` is readable within `timeout` (a level-triggered look through mio's epoll: a
/// fresh registration reports a descriptor that is readable already).
fn readable(fd: &impl AsFd, timeout: Duration) -> bool {
    let mut poll = mio::Poll::new().expect("epoll");
    let raw = fd.as_fd().as_raw_fd();
    poll.registry().register(&mut mio::unix::SourceFd(&raw), mio::Token(0), mio::Interest::READABLE).expect("register");
    let mut events = mio::Events::with_capacity(1);
    poll.poll(&mut events, Some(timeout)).expect("poll");
    !events.is_empty()
}

#[test]
fn armed_queue_signals_its_channel_once_per_arming() {
    let p0 = Pair::new();
    let ch = p0.dev.create_comp_channel().unwrap();
    let cq = p0.dev.create_cq_with_channel(64, &ch).unwrap();
    let other = p0.dev.create_cq_with_channel(64, &ch).unwrap();
    assert_ne!(cq.id(), other.id());
    // A queue pair whose receives complete on `cq` and sends on `other`, both on the channel.
    let mut init = QpInit::new(&other, &cq);
    init.cap.max_recv_wr = 64;
    let server = p0.pd.create_qp(&init).unwrap();
    let listener = p0.dev.listen(any_port(), 4).unwrap();
    let client = End::new(&p0.dev, &p0.pd, QpCap::default(), Progress::Thread);
    let l = listener.clone();
    let s2 = server.clone();
    let t = std::thread::spawn(move || l.get_request(Some(WAIT)).unwrap().accept(&s2, &ConnParams::default()));
    client.qp.connect(listener.local_addr(), &ConnParams::default()).unwrap();
    t.join().unwrap().unwrap();
    let rb = p0.mr(4096, all_access());
    for i in 0..8 {
        post_recv(&server, i, &rb, 0, 64);
    }
    let mut wc = [WorkCompletion::default(); 8];

    assert!(!readable(&ch, Duration::ZERO), "nothing before any arming");
    assert_eq!(ch.get_event(Some(Duration::from_millis(20))), None);

    // Unarmed: a completion arrives, no notification.
    client.qp.post_send(&[SendWr::send(1, &[])]).unwrap();
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert!(!readable(&ch, Duration::from_millis(100)));

    // Armed: the next completion makes the descriptor readable and names the queue.
    cq.req_notify(false);
    client.qp.post_send(&[SendWr::send(2, &[])]).unwrap();
    assert!(readable(&ch, WAIT), "the channel becomes readable");
    assert_eq!(ch.get_event(Some(Duration::ZERO)), Some(cq.id()));
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert_eq!(wc[0].wr_id, 1);

    // One notification per arming.
    client.qp.post_send(&[SendWr::send(3, &[])]).unwrap();
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert_eq!(ch.get_event(Some(Duration::from_millis(100))), None);
    assert!(!readable(&ch, Duration::ZERO));

    // Re-armed, with `get_event` doing the waiting.
    cq.req_notify(false);
    client.qp.post_send(&[SendWr::send(4, &[])]).unwrap();
    assert_eq!(ch.get_event(Some(WAIT)), Some(cq.id()));
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);

    // Two queues on one channel: each notification names its own queue.
    other.req_notify(false);
    cq.req_notify(false);
    let src = p0.mr(64, all_access());
    let crb = p0.mr(64, all_access());
    post_recv(&client.qp, 60, &crb, 0, 64);
    server.post_send(&[SendWr::send(50, &[src.sge(0, 8)])]).unwrap();
    assert_eq!(ch.get_event(Some(WAIT)), Some(other.id()));
    assert_eq!(other.wait(&mut wc, Some(WAIT)), 1);
    assert_eq!(wc[0].wr_id, 50);
    client.qp.post_send(&[SendWr::send(5, &[])]).unwrap();
    assert_eq!(ch.get_event(Some(WAIT)), Some(cq.id()));
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert_eq!(ch.get_event(Some(Duration::from_millis(50))), None);
}

#[test]
fn solicited_only_arming_fires_for_solicited_sends_and_errors() {
    let dev = device();
    let ch = dev.create_comp_channel().unwrap();
    let cq = dev.create_cq_with_channel(64, &ch).unwrap();
    // The server's receives complete on `cq`.
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let scq = dev.create_cq(64).unwrap();
    let server = pd.create_qp(&QpInit::new(&scq, &cq)).unwrap();
    let client = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let l = listener.clone();
    let s2 = server.clone();
    let t = std::thread::spawn(move || l.get_request(Some(WAIT)).unwrap().accept(&s2, &ConnParams::default()));
    client.qp.connect(listener.local_addr(), &ConnParams::default()).unwrap();
    t.join().unwrap().unwrap();
    let rb = pd.reg_mr(4096, all_access()).unwrap();
    for i in 0..8 {
        post_recv(&server, i, &rb, 64 * i as usize, 64);
    }
    let mut wc = [WorkCompletion::default(); 8];

    cq.req_notify(true);
    // An unsolicited Send completes a receive but does not fire the solicited-only arming.
    client.qp.post_send(&[SendWr::send(1, &[])]).unwrap();
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert!(!wc[0].solicited);
    assert_eq!(ch.get_event(Some(Duration::from_millis(150))), None);
    assert!(!readable(&ch, Duration::ZERO));
    // A solicited one does (the arming is still in place).
    client.qp.post_send(&[SendWr::send(2, &[]).solicited()]).unwrap();
    assert!(readable(&ch, WAIT));
    assert_eq!(ch.get_event(Some(Duration::ZERO)), Some(cq.id()));
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert!(wc[0].solicited);
    // Solicited Immediate Data too.
    cq.req_notify(true);
    client.qp.post_send(&[SendWr::immediate(3, 9)]).unwrap();
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert_eq!(ch.get_event(Some(Duration::from_millis(100))), None);
    client.qp.post_send(&[SendWr::immediate(4, 10).solicited()]).unwrap();
    assert_eq!(ch.get_event(Some(WAIT)), Some(cq.id()));
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
    assert_eq!((wc[0].imm_data, wc[0].solicited), (Some(10), true));
    // An error completion (receives flushed by a disconnect) fires it as well.
    cq.req_notify(true);
    client.qp.disconnect();
    assert_eq!(ch.get_event(Some(WAIT)), Some(cq.id()));
    let n = cq.wait(&mut wc, Some(WAIT));
    assert!(n >= 1 && wc[..n].iter().all(|c| c.status == WcStatus::WrFlush), "{:?}", &wc[..n]);
}

#[test]
fn listener_and_queue_pair_descriptors_signal_requests_and_events() {
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    assert!(!readable(&listener, Duration::ZERO));
    let client = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    let server = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
    assert!(!readable(&client.qp.event_fd().unwrap(), Duration::ZERO));
    client.qp.connect_start(listener.local_addr(), &ConnParams::default()).unwrap();
    assert!(readable(&listener, WAIT), "a queued request makes the listener readable");
    let req = listener.try_get_request().expect("a request");
    req.accept(&server.qp, &ConnParams::default()).unwrap();
    assert!(readable(&client.qp.event_fd().unwrap(), WAIT), "Established makes the queue pair readable");
    assert!(matches!(client.qp.poll_event(), Some(QpEvent::Established)));
    client.qp.wait_established(WAIT).unwrap();
    server.qp.wait_established(WAIT).unwrap();
    assert!(readable(&server.qp.event_fd().unwrap(), WAIT));
    assert!(matches!(server.qp.poll_event(), Some(QpEvent::Established)));
    client.qp.disconnect();
    assert!(readable(&server.qp.event_fd().unwrap(), WAIT), "Disconnected makes it readable again");
    assert!(matches!(next_non_established(&server.qp, WAIT), Some(QpEvent::Disconnected)));
    // Taking every queued event makes the descriptors unreadable again (level-triggered).
    while client.qp.poll_event().is_some() {}
    while server.qp.poll_event().is_some() {}
    assert!(!readable(&client.qp.event_fd().unwrap(), Duration::ZERO), "drained: not readable");
    assert!(!readable(&server.qp.event_fd().unwrap(), Duration::ZERO), "drained: not readable");
}

/// `CompletionQueue::wait`: on an empty queue it waits out its timeout and returns 0; a
/// completion already queued comes back at once, even with a zero timeout; one that arrives
/// while it waits ends the wait early.
#[test]
fn wait_times_out_when_empty_and_returns_completions_without_waiting() {
    let p = Pair::new();
    let mut wc = [WorkCompletion::default(); 4];
    let t0 = std::time::Instant::now();
    assert_eq!(p.client.scq.wait(&mut wc, Some(Duration::from_millis(50))), 0);
    assert!(t0.elapsed() >= Duration::from_millis(50), "returned after {:?}", t0.elapsed());
    assert_eq!(p.client.scq.wait(&mut wc, Some(Duration::ZERO)), 0);

    // A Send with nothing to receive it would fail the peer; a zero-length Write needs no
    // buffer and completes locally once handed to TCP.
    let dst = p.mr(64, all_access());
    p.client.qp.post_send(&[SendWr::write(7, &[], dst.remote(0))]).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while p.client.scq.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the Write never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.client.scq.wait(&mut wc, Some(Duration::ZERO)), 1);
    assert_eq!((wc[0].wr_id, wc[0].status), (7, WcStatus::Success));

    // Posted from another thread while this one waits (up to WAIT).
    let qp = p.client.qp.clone();
    let remote = dst.remote(0);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        qp.post_send(&[SendWr::write(8, &[], remote)]).unwrap();
    });
    let t0 = std::time::Instant::now();
    assert_eq!(p.client.scq.wait(&mut wc, Some(WAIT)), 1);
    assert!(t0.elapsed() < WAIT, "waited the whole timeout");
    assert_eq!(wc[0].wr_id, 8);
    t.join().unwrap();
}

/// A channel whose descriptor was never handed out: `get_event` sleeps without the descriptor
/// (woken by the next armed completion from another thread, or timing out), and once the
/// descriptor is handed out, later notifications make it readable as well.
#[test]
fn a_channel_waited_on_in_process_wakes_without_its_descriptor_until_it_is_handed_out() {
    let p = Pair::new();
    let ch = p.dev.create_comp_channel().unwrap();
    let cq = p.dev.create_cq_with_channel(64, &ch).unwrap();
    let mut init = QpInit::new(&cq, &cq);
    init.cap.max_recv_wr = 64;
    let server = p.pd.create_qp(&init).unwrap();
    let listener = p.dev.listen(any_port(), 4).unwrap();
    let client = End::new(&p.dev, &p.pd, QpCap::default(), Progress::Thread);
    let l = listener.clone();
    let s2 = server.clone();
    let t = std::thread::spawn(move || l.get_request(Some(WAIT)).unwrap().accept(&s2, &ConnParams::default()));
    client.qp.connect(listener.local_addr(), &ConnParams::default()).unwrap();
    t.join().unwrap().unwrap();
    let rb = p.mr(4096, all_access());
    for i in 0..8 {
        post_recv(&server, i, &rb, 0, 64);
    }
    let mut wc = [WorkCompletion::default(); 8];
    let start = std::time::Instant::now();
    assert_eq!(ch.get_event(Some(Duration::from_millis(30))), None);
    assert!(start.elapsed() >= Duration::from_millis(30), "waited out its timeout");

    // Woken from the sleep by a completion another thread's Send causes.
    for round in 0..3u64 {
        cq.req_notify(false);
        let qp = client.qp.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            qp.post_send(&[SendWr::send(round, &[])]).unwrap();
        });
        assert_eq!(ch.get_event(Some(WAIT)), Some(cq.id()), "round {round}");
        sender.join().unwrap();
        assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
        assert_eq!(ch.try_get_event(), None, "one notification per arming");
    }

    // Handed out: the next notification makes the descriptor readable too.
    assert!(!readable(&ch, Duration::ZERO));
    cq.req_notify(false);
    client.qp.post_send(&[SendWr::send(9, &[])]).unwrap();
    assert!(readable(&ch, WAIT));
    assert_eq!(ch.get_event(Some(WAIT)), Some(cq.id()));
    assert_eq!(cq.wait(&mut wc, Some(WAIT)), 1);
}
