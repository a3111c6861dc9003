//! A Send that arrives before its receive is posted (`ConnParams::recv_wait`): the receiver
//! stops reading until one is posted, instead of terminating the connection at once.

mod common;
use common::*;
use iwarp::*;
use iwarp_wire::terminate::{TerminateCause, UntaggedBuffer};
use std::time::{Duration, Instant};

/// Messages of the stream test.
const COUNT: u64 = 1000;
/// Longest message (sizes vary from 1 byte up).
const MAX_LEN: usize = 20_000;
/// Source slots: Sends outstanding at most.
const SEND_SLOTS: u64 = 64;
/// Receive slots: receives posted at most.
const RECV_SLOTS: u64 = 16;

fn len_of(i: u64) -> usize {
    (i as usize * 7919) % MAX_LEN + 1
}

/// Sends `COUNT` messages as fast as their completions allow (not as fast as the peer posts
/// receives), from another thread; returns its handle.
fn sender(client: End, src: MemoryRegion) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut done = 0;
        let mut buf = [WorkCompletion::default(); 64];
        let deadline = Instant::now() + WAIT * 3;
        let mut reap = |done: &mut u64, wait: bool| {
            let n = if wait {
                client.scq.wait(&mut buf, Some(Duration::from_millis(200)))
            } else {
                client.scq.poll(&mut buf)
            };
            for c in &buf[..n] {
                assert_eq!((c.wr_id, c.status), (*done, WcStatus::Success), "{c:?}");
                *done += 1;
            }
        };
        for i in 0..COUNT {
            while i >= done + SEND_SLOTS {
                assert!(Instant::now() < deadline, "sender stalled at {i}");
                reap(&mut done, true);
            }
            let off = (i % SEND_SLOTS) as usize * MAX_LEN;
            fill(&src, off, len_of(i), i as u32);
            client.qp.post_send(&[SendWr::send(i, &[src.sge(off, len_of(i))])]).expect("post_send");
            reap(&mut done, false);
        }
        while done < COUNT {
            assert!(Instant::now() < deadline, "sender stalled with {done} completions");
            reap(&mut done, true);
        }
    })
}

/// Receives the stream, posting receives a few at a time with pauses (the first after the
/// sender has started), and checks every message; `post` posts one receive.
fn receive_slowly(rcq: &CompletionQueue, dst: &MemoryRegion, post: impl Fn(u64, Sge<'_>)) {
    // The first Sends find nothing posted.
    std::thread::sleep(Duration::from_millis(100));
    let (mut posted, mut got) = (0u64, 0u64);
    let deadline = Instant::now() + WAIT * 3;
    let mut buf = [WorkCompletion::default(); 32];
    while got < COUNT {
        assert!(Instant::now() < deadline, "stalled at {got} of {COUNT}");
        // A few receives, then a pause: slower than the sender.
        for _ in 0..4 {
            if posted < COUNT && posted < got + RECV_SLOTS {
                post(posted, dst.sge((posted % RECV_SLOTS) as usize * MAX_LEN, MAX_LEN));
                posted += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
        let n = rcq.poll(&mut buf);
        for c in &buf[..n] {
            assert_eq!((c.wr_id, c.status, c.opcode), (got, WcStatus::Success, WcOpcode::Recv), "{c:?}");
            assert_eq!(c.byte_len as usize, len_of(got));
            let off = (got % RECV_SLOTS) as usize * MAX_LEN;
            assert_mr_eq(dst, off, &pattern(len_of(got), got as u32), &format!("message {got}"));
            got += 1;
        }
    }
}

/// No `Error` event queued on `qp`.
fn assert_no_error(qp: &QueuePair) {
    while let Some(e) = qp.poll_event() {
        assert!(!matches!(e, QpEvent::Error { .. } | QpEvent::Disconnected), "{e:?}");
    }
}

fn stream_test(progress: Progress) {
    let p = Pair::with(PairConfig { progress, ..PairConfig::default() });
    let src = p.mr(SEND_SLOTS as usize * MAX_LEN, Access::empty());
    let dst = p.mr(RECV_SLOTS as usize * MAX_LEN, Access::LOCAL_WRITE);
    let t = sender(p.client.clone(), src);
    let qp = p.server.qp.clone();
    receive_slowly(&p.server.rcq, &dst, |i, sge| qp.post_recv(&[RecvWr::new(i, &[sge])]).expect("post_recv"));
    t.join().expect("sender");
    assert_no_error(&p.client.qp);
    assert_no_error(&p.server.qp);
    assert_eq!(p.server.qp.state(), QpState::Rts);
}

/// 1,000 Sends posted faster than the receiver posts receives all arrive, in order and
/// intact, with no Terminate: each that finds no receive waits for one.
#[test]
fn a_thousand_sends_faster_than_the_receives_arrive_in_order_and_intact() {
    stream_test(Progress::Thread);
}

/// The same with the progress mode the verbs library uses.
#[test]
fn a_thousand_sends_faster_than_the_receives_arrive_with_assisted_progress() {
    stream_test(Progress::Assisted);
}

/// The same through a shared receive queue: a post to it resumes the queue pair.
#[test]
fn sends_waiting_on_a_shared_receive_queue_go_on_when_it_is_refilled() {
    init_log();
    let dev = device();
    let pd = dev.alloc_pd();
    let srq = pd.create_srq(1024, 1).expect("srq");
    let cfg = PairConfig::default();
    let listener = dev.listen(any_port(), 4).expect("listen");
    let addr = listener.local_addr();
    let (scq, rcq) = (dev.create_cq(4096).unwrap(), dev.create_cq(4096).unwrap());
    let mut init = QpInit::new(&scq, &rcq);
    init.srq = Some(&srq);
    init.cap = cfg.cap;
    let sqp = pd.create_qp(&init).expect("qp");
    let client = End::new(&dev, &pd, cfg.cap, Progress::Thread);
    let accepting = sqp.clone();
    let t = std::thread::spawn(move || {
        let req = listener.get_request(Some(WAIT)).expect("request");
        req.accept(&accepting, &ConnParams::default()).expect("accept");
    });
    client.qp.connect(addr, &ConnParams::default()).expect("connect");
    t.join().unwrap();
    sqp.wait_established(WAIT).unwrap();
    let src = pd.reg_mr(SEND_SLOTS as usize * MAX_LEN, Access::empty()).unwrap();
    let dst = pd.reg_mr(RECV_SLOTS as usize * MAX_LEN, Access::LOCAL_WRITE).unwrap();
    let s = sender(client.clone(), src);
    receive_slowly(&rcq, &dst, |i, sge| srq.post_recv(&[RecvWr::new(i, &[sge])]).expect("post_recv"));
    s.join().expect("sender");
    assert_no_error(&client.qp);
    assert_no_error(&sqp);
}

/// Sends one message to a server that never posts a receive, waiting `recv_wait`; returns
/// the time until the server reported its error, after checking both sides' causes.
fn unreceived_send(recv_wait: Option<Duration>) -> Duration {
    let p =
        Pair::with(PairConfig { server: ConnParams { recv_wait, ..ConnParams::default() }, ..PairConfig::default() });
    let src = p.mr(64, Access::empty());
    let t0 = Instant::now();
    p.client.qp.post_send(&[SendWr::send(1, &[src.sge(0, 8)])]).unwrap();
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer);
    let e = wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    let took = t0.elapsed();
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, .. } if c == cause), "{e:?}");
    let e = wait_event(&p.client.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: true, .. } if c == cause), "{e:?}");
    for qp in [&p.client.qp, &p.server.qp] {
        wait_event(qp, WAIT, |e| matches!(e, QpEvent::Disconnected));
    }
    took
}

/// With the wait off, the old behaviour: the Terminate at once (RFC 5041 §7.2).
#[test]
fn with_the_wait_off_a_send_without_a_receive_terminates_at_once() {
    let took = unreceived_send(None);
    assert!(took < DEFAULT_RECV_WAIT, "{took:?}");
}

/// A wait that runs out ends in the same Terminate, no sooner.
#[test]
fn a_send_whose_receive_never_comes_terminates_after_the_wait() {
    let took = unreceived_send(Some(Duration::from_millis(300)));
    assert!(took >= Duration::from_millis(300), "{took:?}");
}
