//! Requests an application posts one at a time in a burst are held back and joined
//! ([`PostBatching`]): they still arrive, whole and in order, whether the application drives
//! the queue pair again (a post, an empty poll, `req_notify`) or leaves them to the event
//! loop; posts apart are never held, and holding can be turned off.

use iwarp::testing::{connected_pair_with, Pair, PairConfig};
use iwarp::*;
use std::time::{Duration, Instant};

const SLOT: usize = 4096;

/// An assisted pair (as the C library makes them) with `gap` and `flush_after` set.
fn pair(gap: Duration, flush_after: Duration) -> Pair {
    let mut cfg = PairConfig::default();
    cfg.progress = Progress::Assisted;
    cfg.cap.max_send_wr = 256;
    cfg.cap.max_recv_wr = 16;
    // Its zero-length Writes (the first at 50 ms) would have the event loop drive the queue
    // pair, and write what is held, on their own schedule.
    cfg.client.wake_silent_responder = false;
    let p = connected_pair_with(cfg).expect("connected pair");
    let mut b = PostBatching::default();
    b.gap = gap;
    b.flush_after = flush_after;
    p.dev.set_post_batching(b);
    assert_eq!(p.dev.post_batching(), b);
    p
}

/// Regions for `n` Writes of `size` bytes: the source filled slot by slot with `k + 1`
/// (mod 251), the sink zeroed.
fn regions(p: &Pair, n: usize, size: usize) -> (MemoryRegion, MemoryRegion) {
    let src = p.pd.reg_mr(n * size, Access::LOCAL_WRITE).unwrap();
    let dst = p.pd.reg_mr(n * size, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
    for k in 0..n {
        src.write(k * size, &vec![(k % 251 + 1) as u8; size]).unwrap();
    }
    (src, dst)
}

/// Posts Writes `0..n` from `src` into `dst`, one `post_send` call each, as fast as they go;
/// only the last is signaled.
fn post_writes(p: &Pair, src: &MemoryRegion, dst: &MemoryRegion, n: usize, size: usize) {
    for k in 0..n {
        let wr = SendWr::write(k as u64, &[src.sge(k * size, size)], dst.remote((k * size) as u64));
        p.client.qp.post_send(&[wr.signaled(k + 1 == n)]).expect("post");
    }
}

/// An assisted pair whose event loop writes held requests after `flush_after`, and a burst
/// of `n` Writes of [`SLOT`] bytes posted into it, of which `held` (given
/// [`QueuePair::held_posts`]) says enough were held; with the source (which must outlive the
/// Writes) and the sink.
///
/// A post that finds the event loop driving the queue pair is queued for that turn, never
/// held (posting does not wait), and on a loaded machine a turn preempted for milliseconds
/// can take a whole burst that way; such a burst shows nothing, so the set-up starts over
/// on a new pair, a bounded number of times.
fn burst(n: usize, flush_after: Duration, held: impl Fn((usize, u64)) -> bool) -> (Pair, MemoryRegion, MemoryRegion) {
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        let p = pair(Duration::from_secs(1), flush_after);
        let (src, dst) = regions(&p, n, SLOT);
        post_writes(&p, &src, &dst, n, SLOT);
        if held(p.client.qp.held_posts()) {
            return (p, src, dst);
        }
    }
    panic!("{ATTEMPTS} bursts of {n} quick posts, none held");
}

/// [`burst`] with requests still held now, which the event loop would write only after a
/// minute.
fn held_burst(n: usize) -> (Pair, MemoryRegion, MemoryRegion) {
    burst(n, Duration::from_secs(60), |(now, _)| now > 0)
}

/// Waits (without touching the client's queues) until `dst` holds every slot's pattern.
fn arrived(dst: &MemoryRegion, n: usize, size: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let all = (0..n).all(|k| dst.to_vec(k * size, size).unwrap().iter().all(|&b| b == (k % 251 + 1) as u8));
        if all {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_burst_left_alone_reaches_the_peer_through_the_event_loop() {
    // Every post after the first is "quick": posts 4.. are held (some may be written by the
    // 200 µs timer before this looks).
    let n = 16;
    let (p, _src, dst) = burst(n, Duration::from_micros(200), |(_, total)| total > 0);
    // The client's queues are never polled: only the event loop can write what is held.
    assert!(arrived(&dst, n, SLOT, Duration::from_secs(5)), "held Writes never reached the peer");
    let deadline = Instant::now() + Duration::from_secs(1);
    while p.client.qp.held_posts().0 != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.client.qp.held_posts().0, 0, "written, but still counted as held");
}

#[test]
fn an_empty_poll_of_the_send_queue_writes_what_is_held() {
    let n = 8;
    let (p, _src, dst) = held_burst(n);
    let mut wc = [WorkCompletion::default(); 4];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got == 0 && Instant::now() < deadline {
        got = p.client.send_cq.poll(&mut wc);
    }
    assert_eq!(got, 1, "the signaled last Write completes once polling writes it");
    assert_eq!((wc[0].wr_id, wc[0].status), ((n - 1) as u64, WcStatus::Success));
    assert_eq!(p.client.qp.held_posts().0, 0);
    assert!(arrived(&dst, n, SLOT, Duration::from_secs(5)));
}

#[test]
fn req_notify_writes_what_is_held() {
    let n = 8;
    let (p, _src, dst) = held_burst(n);
    // An application arms its queue before it sleeps on the channel.
    p.client.send_cq.req_notify(false);
    assert!(arrived(&dst, n, SLOT, Duration::from_secs(5)), "req_notify left the burst held");
    assert_eq!(p.client.qp.held_posts().0, 0);
}

#[test]
fn posts_apart_are_never_held_and_holding_can_be_turned_off() {
    // The default gap (2 µs) and posts a millisecond apart: no burst.
    let p = pair(PostBatching::default().gap, PostBatching::default().flush_after);
    let n = 8;
    let (src, dst) = regions(&p, n, SLOT);
    for k in 0..n {
        std::thread::sleep(Duration::from_millis(1));
        let wr = SendWr::write(k as u64, &[src.sge(k * SLOT, SLOT)], dst.remote((k * SLOT) as u64));
        p.client.qp.post_send(&[wr]).unwrap();
    }
    assert!(arrived(&dst, n, SLOT, Duration::from_secs(5)));
    assert_eq!(p.client.qp.held_posts(), (0, 0), "posts a millisecond apart were held");

    // Off: quick posts are written as they come.
    let p = pair(Duration::ZERO, Duration::from_secs(60));
    let (src, dst) = regions(&p, 32, SLOT);
    post_writes(&p, &src, &dst, 32, SLOT);
    assert_eq!(p.client.qp.held_posts(), (0, 0), "holding is off");
    assert!(arrived(&dst, 32, SLOT, Duration::from_secs(5)));
}

#[test]
fn a_held_burst_of_large_writes_and_a_send_arrives_whole_and_in_order() {
    // perftest's shape: 64 KiB Writes posted one by one, polling when the queue is full;
    // then a Send, which the peer sees only after every Write before it is placed.
    let p = pair(Duration::from_secs(1), Duration::from_micros(200));
    let (n, size, depth) = (96, 64 << 10, 32);
    let (src, dst) = regions(&p, n, size);
    let inbox = p.pd.reg_mr(64, Access::LOCAL_WRITE).unwrap();
    p.server.qp.post_recv(&[RecvWr::new(7, &[inbox.sge_all()])]).unwrap();
    let mut wc = [WorkCompletion::default(); 16];
    let (mut posted, mut done) = (0usize, 0usize);
    while done < n {
        while posted < n && posted - done < depth {
            let k = posted;
            // Every 8th signaled, as perftest signals every cq_mod-th.
            let wr = SendWr::write(k as u64, &[src.sge(k * size, size)], dst.remote((k * size) as u64));
            p.client.qp.post_send(&[wr.signaled(k % 8 == 7)]).unwrap();
            posted += 1;
        }
        let got = p.client.send_cq.poll(&mut wc);
        for c in &wc[..got] {
            assert_eq!(c.status, WcStatus::Success);
            assert_eq!(c.wr_id as usize % 8, 7);
            assert_eq!(c.wr_id as usize, done + 7, "completions in order");
            done = c.wr_id as usize + 1;
        }
    }
    p.client.qp.post_send(&[SendWr::send_inline(99, b"done").signaled(false)]).unwrap();
    let got = iwarp::testing::wait_completions(&p.server.recv_cq, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "the Send after the burst never arrived");
    assert_eq!((got[0].wr_id, got[0].status, got[0].byte_len), (7, WcStatus::Success, 4));
    // RDMAP ordering: a Send is placed after every Write posted before it.
    for k in 0..n {
        assert!(
            dst.to_vec(k * size, size).unwrap().iter().all(|&b| b == (k % 251 + 1) as u8),
            "Write {k} not placed when the Send after it arrived"
        );
    }
    assert!(p.client.qp.held_posts().1 > 0, "perftest's shape held nothing");
}

#[test]
fn a_disconnect_right_after_a_burst_sends_the_held_requests_first() {
    let n = 16;
    let (p, _src, dst) = held_burst(n);
    // Posted before the close: sent, not flushed.
    p.client.qp.disconnect();
    let got = iwarp::testing::wait_completions(&p.client.send_cq, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].wr_id, got[0].status), ((n - 1) as u64, WcStatus::Success));
    assert!(arrived(&dst, n, SLOT, Duration::from_secs(5)), "held Writes were lost to the close");
}

#[test]
fn reads_in_a_burst_are_never_held() {
    // A Read's answer comes back only once it is out: holding one would idle the responder.
    let p = pair(Duration::from_secs(1), Duration::from_secs(60));
    let n = 16;
    let (src, sink) = regions(&p, n, SLOT);
    let remote = p.pd.reg_mr(n * SLOT, Access::LOCAL_WRITE | Access::REMOTE_READ).unwrap();
    for k in 0..n {
        remote.write(k * SLOT, &src.to_vec(k * SLOT, SLOT).unwrap()).unwrap();
    }
    for k in 0..n {
        let wr = SendWr::read(k as u64, sink.sge(k * SLOT, SLOT), remote.remote((k * SLOT) as u64));
        p.client.qp.post_send(&[wr]).unwrap();
    }
    assert_eq!(p.client.qp.held_posts(), (0, 0), "Reads were held");
    // Their completions come without the application driving the queue pair.
    let got = iwarp::testing::wait_completions(&p.client.send_cq, n, Duration::from_secs(5));
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|c| c.status == WcStatus::Success));
    assert!(arrived(&sink, n, SLOT, Duration::from_secs(1)));
}
