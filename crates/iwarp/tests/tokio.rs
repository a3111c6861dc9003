//! The `tokio` feature on a multi-threaded runtime: connection setup as futures, the
//! completion stream, awaitable work requests, and cancellation at every await point.

use futures_core::Stream;
use iwarp::async_tokio::{AsyncQueuePair, CompletionStream};
use iwarp::*;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::timeout;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

fn device() -> Device {
    Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).expect("device")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    timeout(WAIT, f).await.expect("within the test's bound")
}

/// Polls `f` once, then drops it: cancellation right after the first await point.
async fn poll_once_then_drop<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// A connected pair of async queue pairs: (client, server, the server's listener).
async fn pair(dev: &Device, pd: &ProtectionDomain) -> (AsyncQueuePair, AsyncQueuePair) {
    let listener = dev.listen(any_port(), 16).expect("listen");
    let addr = listener.local_addr();
    let server = AsyncQueuePair::new(pd, QpCap::default()).expect("server qp");
    let client = AsyncQueuePair::new(pd, QpCap::default()).expect("client qp");
    let accepting = async {
        let req = listener.next_request().await.expect("request");
        server.accept(req, &ConnParams::default()).await.expect("accept");
    };
    let (c, ()) = within(async { tokio::join!(client.connect(addr, &ConnParams::default()), accepting) }).await;
    c.expect("connect");
    (client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_posted_on_an_async_queue_pair_resolves_with_its_completion() {
    let dev = device();
    let pd = dev.alloc_pd();
    let (client, server) = pair(&dev, &pd).await;
    let target = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE).expect("target");
    let src = pd.reg_mr(4096, Access::LOCAL_WRITE).expect("src");
    src.write(0, b"hello, async iWARP").expect("fill");
    let wc = within(client.post_send(&SendWr::write(77, &[src.sge(0, 18)], target.remote(0))).expect("post")).await;
    assert_eq!((wc.wr_id, wc.status, wc.opcode), (77, WcStatus::Success, WcOpcode::RdmaWrite));
    // A Send into a receive posted on the other side.
    let rbuf = pd.reg_mr(64, Access::LOCAL_WRITE).expect("rbuf");
    let recv = server.post_recv(&RecvWr::new(5, &[rbuf.sge_all()])).expect("post recv");
    let sent = client.post_send(&SendWr::send(6, &[src.sge(0, 5)])).expect("post send");
    let (r, s) = within(async { tokio::join!(recv, sent) }).await;
    assert_eq!((r.wr_id, r.status, r.byte_len), (5, WcStatus::Success, 5));
    assert_eq!((s.wr_id, s.status), (6, WcStatus::Success));
    assert_eq!(rbuf.to_vec(0, 5).expect("read"), b"hello");
    assert_eq!(target.to_vec(0, 18).expect("read"), b"hello, async iWARP");
    assert_eq!((client.outstanding(), server.outstanding()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_future_dropped_before_its_first_poll_starts_nothing() {
    let dev = device();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(16).expect("cq");
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    let listener = dev.listen(any_port(), 16).expect("listen");
    let params = ConnParams::default();
    drop(qp.connect_async(listener.local_addr(), &params));
    assert_eq!(qp.state(), QpState::Idle);
    assert!(timeout(Duration::from_millis(200), listener.next_request()).await.is_err(), "no request was sent");
    // The queue pair is still free to connect.
    let server_cq = dev.create_cq(16).expect("cq");
    let server_qp = pd.create_qp(&QpInit::new(&server_cq, &server_cq)).expect("qp");
    let accepting = async {
        let req = listener.next_request().await.expect("request");
        req.accept_async(&server_qp, &ConnParams::default()).await.expect("accept");
    };
    let (c, ()) = within(async { tokio::join!(qp.connect_async(listener.local_addr(), &params), accepting) }).await;
    c.expect("connect");
    assert_eq!(qp.state(), QpState::Rts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_future_dropped_while_pending_leaves_the_attempt_running() {
    let dev = device();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(16).expect("cq");
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    let listener = dev.listen(any_port(), 16).expect("listen");
    let params = ConnParams::default();
    // The listener does not answer yet: the first poll starts the attempt, and it is pending.
    assert!(poll_once_then_drop(qp.connect_async(listener.local_addr(), &params)).await.is_none());
    // A second connect is refused: the first attempt goes on.
    assert!(qp.connect_start(listener.local_addr(), &params).is_err());
    let server_cq = dev.create_cq(16).expect("cq");
    let server_qp = pd.create_qp(&QpInit::new(&server_cq, &server_cq)).expect("qp");
    let req = within(listener.next_request()).await.expect("request");
    // The accept future, dropped after its first poll, leaves the connection going too.
    let _ = poll_once_then_drop(req.accept_async(&server_qp, &ConnParams::default())).await;
    within(qp.established()).await.expect("established");
    within(server_qp.established()).await.expect("server established");
    assert!(matches!(qp.poll_event(), Some(QpEvent::Established)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_future_dropped_before_its_first_poll_closes_the_request() {
    let dev = device();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(16).expect("cq");
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    let listener = dev.listen(any_port(), 16).expect("listen");
    let server_qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    let params = ConnParams::default();
    let refusing = async {
        let req = listener.next_request().await.expect("request");
        drop(req.accept_async(&server_qp, &params));
    };
    let (c, ()) = within(async { tokio::join!(qp.connect_async(listener.local_addr(), &params), refusing) }).await;
    assert!(c.is_err(), "the dropped request closed the connection: {c:?}");
    assert_eq!(server_qp.state(), QpState::Idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_request_is_cancellation_safe_and_ends_when_the_listener_closes() {
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 16).expect("listen");
    // Cancelled while nothing is queued.
    assert!(timeout(Duration::from_millis(50), listener.next_request()).await.is_err());
    let cq = dev.create_cq(16).expect("cq");
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    qp.connect_start(listener.local_addr(), &ConnParams::default()).expect("start");
    // The request was queued meanwhile and is not lost to the cancelled future.
    let req = within(listener.next_request()).await.expect("request");
    let server_qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    within(req.accept_async(&server_qp, &ConnParams::default())).await.expect("accept");
    within(qp.established()).await.expect("established");
    // A waiting future learns of the close.
    let waiting = listener.next_request();
    let closer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        listener.close();
    };
    let (r, ()) = within(async { tokio::join!(waiting, closer) }).await;
    assert!(matches!(r, Err(Error::InvalidState(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_answers_without_waiting_and_the_initiator_gets_the_private_data() {
    let dev = device();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(16).expect("cq");
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).expect("qp");
    let listener = dev.listen(any_port(), 16).expect("listen");
    let rejecting = async {
        let req = listener.next_request().await.expect("request");
        req.reject(b"not today").expect("reject");
    };
    let (c, ()) =
        within(async { tokio::join!(qp.connect_async(listener.local_addr(), &ConnParams::default()), rejecting) })
            .await;
    match c {
        Err(ConnectError::Rejected { private_data }) => assert_eq!(private_data, b"not today"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Two connected plain queue pairs whose client side completes on `cq`.
async fn plain_pair(dev: &Device, pd: &ProtectionDomain, cq: &CompletionQueue) -> (QueuePair, QueuePair) {
    let listener = dev.listen(any_port(), 16).expect("listen");
    let server_cq = dev.create_cq(64).expect("cq");
    let server = pd.create_qp(&QpInit::new(&server_cq, &server_cq)).expect("qp");
    let client = pd.create_qp(&QpInit::new(cq, cq)).expect("qp");
    let accepting = async {
        let req = listener.next_request().await.expect("request");
        req.accept_async(&server, &ConnParams::default()).await.expect("accept");
    };
    let (c, ()) =
        within(async { tokio::join!(client.connect_async(listener.local_addr(), &ConnParams::default()), accepting) })
            .await;
    c.expect("connect");
    (client, server)
}

/// The stream's next completion, through the `Stream` trait.
async fn next(stream: &mut CompletionStream) -> WorkCompletion {
    let item = std::future::poll_fn(|cx: &mut Context<'_>| Pin::new(&mut *stream).poll_next(cx));
    within(item).await.expect("the stream never ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_takes_the_completions_of_many_queues_on_one_channel_and_loses_none_when_dropped() {
    let dev = device();
    let pd = dev.alloc_pd();
    let channel = dev.create_comp_channel().expect("channel");
    let cq_a = dev.create_cq_with_channel(64, &channel).expect("cq");
    let cq_b = dev.create_cq_with_channel(64, &channel).expect("cq");
    let (qp_a, _server_a) = plain_pair(&dev, &pd, &cq_a).await;
    let (qp_b, _server_b) = plain_pair(&dev, &pd, &cq_b).await;
    let target = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE).expect("target");
    let src = pd.reg_mr(4096, Access::LOCAL_WRITE).expect("src");

    let mut stream = CompletionStream::new(&channel, std::slice::from_ref(&cq_a)).expect("stream");
    stream.add(&cq_b).expect("add");
    let other = dev.create_cq(4).expect("cq");
    assert!(stream.add(&other).is_err(), "a queue of no channel is refused");

    // Nothing yet: the stream waits (and is cancelled while waiting).
    assert!(timeout(Duration::from_millis(50), stream.next_completion()).await.is_err());
    // Completions that come while the stream waits wake it, from either queue.
    let mut seen = Vec::new();
    for round in 0..3u64 {
        let posting = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            qp_a.post_send(&[SendWr::write(100 + round, &[src.sge(0, 8)], target.remote(0))]).expect("post a");
            qp_b.post_send(&[SendWr::write(200 + round, &[src.sge(0, 8)], target.remote(8))]).expect("post b");
        };
        let (first, ()) = tokio::join!(next(&mut stream), posting);
        seen.push(first.wr_id);
        seen.push(next(&mut stream).await.wr_id);
    }
    seen.sort_unstable();
    assert_eq!(seen, [100, 101, 102, 200, 201, 202]);

    // Dropped mid-stream: one completion taken of six, the other five are still queued.
    for i in 0..3 {
        qp_a.post_send(&[SendWr::write(300 + i, &[src.sge(0, 8)], target.remote(0))]).expect("post a");
        qp_b.post_send(&[SendWr::write(400 + i, &[src.sge(0, 8)], target.remote(8))]).expect("post b");
    }
    let first = next(&mut stream).await;
    drop(stream);
    let mut stream = CompletionStream::new(&channel, &[cq_a.clone(), cq_b.clone()]).expect("stream again");
    let mut rest = vec![first.wr_id];
    for _ in 0..5 {
        let wc = next(&mut stream).await;
        assert_eq!(wc.status, WcStatus::Success);
        rest.push(wc.wr_id);
    }
    rest.sort_unstable();
    assert_eq!(rest, [300, 301, 302, 400, 401, 402]);
    assert!(timeout(Duration::from_millis(50), stream.next_completion()).await.is_err(), "no extra completion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_receive_future_keeps_its_region_registered_until_the_completion_is_reaped() {
    let dev = device();
    let pd = dev.alloc_pd();
    let (client, server) = pair(&dev, &pd).await;
    // The receive's future and every application handle of its region are dropped before
    // anything arrives: the queue pair still holds the region, so the Send is placed.
    let rbuf = pd.reg_mr(64, Access::LOCAL_WRITE).expect("rbuf");
    drop(server.post_recv(&RecvWr::new(1, &[rbuf.sge_all()])).expect("post recv"));
    drop(rbuf);
    assert_eq!(server.outstanding(), 1);
    // A second receive whose future is awaited, to see that the first one was consumed well.
    let rbuf2 = pd.reg_mr(64, Access::LOCAL_WRITE).expect("rbuf2");
    let second = server.post_recv(&RecvWr::new(2, &[rbuf2.sge_all()])).expect("post recv");
    let src = pd.reg_mr(64, Access::LOCAL_WRITE).expect("src");
    src.write(0, b"first second").expect("fill");
    let s1 = client.post_send(&SendWr::send(10, &[src.sge(0, 5)])).expect("send 1");
    let s2 = client.post_send(&SendWr::send(11, &[src.sge(6, 6)])).expect("send 2");
    let (s1, s2, r2) = within(async { tokio::join!(s1, s2, second) }).await;
    assert_eq!((s1.status, s2.status), (WcStatus::Success, WcStatus::Success));
    assert_eq!((r2.wr_id, r2.status, r2.byte_len), (2, WcStatus::Success, 6));
    assert_eq!(rbuf2.to_vec(0, 6).expect("read"), b"second");
    // The first receive's completion was reaped (in order, before the second's), and then
    // its region was released: deregistered once no handle is left.
    within(async {
        while server.outstanding() != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(server.queue_pair().state() == QpState::Rts, "no protection error ended the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_read_future_keeps_its_sink_and_the_completion_is_still_accounted() {
    let dev = device();
    let pd = dev.alloc_pd();
    let (client, _server) = pair(&dev, &pd).await;
    let source = pd.reg_mr(1 << 20, Access::LOCAL_WRITE | Access::REMOTE_READ).expect("source");
    source.write(0, &[0x5a; 4096]).expect("fill");
    source.write((1 << 20) - 4096, &[0xa5; 4096]).expect("fill");
    // Many Reads into sinks whose handles and futures go at once: the responses land in
    // memory the queue pair still holds, and every completion is reaped.
    for i in 0..16 {
        let sink = pd.reg_mr(1 << 20, Access::LOCAL_WRITE).expect("sink");
        drop(client.post_send(&SendWr::read(i, sink.sge_all(), source.remote(0))).expect("read"));
    }
    // One more, awaited and checked, completes after them (send completions are in order).
    let sink = pd.reg_mr(1 << 20, Access::LOCAL_WRITE).expect("sink");
    let wc = within(client.post_send(&SendWr::read(99, sink.sge_all(), source.remote(0))).expect("read")).await;
    assert_eq!((wc.wr_id, wc.status, wc.byte_len), (99, WcStatus::Success, 1 << 20));
    assert_eq!(sink.to_vec((1 << 20) - 4096, 4096).expect("read"), vec![0xa5; 4096]);
    within(async {
        while client.outstanding() != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(client.queue_pair().state(), QpState::Rts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_async_queue_pair_flushes_its_requests_to_their_futures() {
    let dev = device();
    let pd = dev.alloc_pd();
    let (client, server) = pair(&dev, &pd).await;
    let rbuf = pd.reg_mr(4096, Access::LOCAL_WRITE).expect("rbuf");
    let futures: Vec<_> =
        (0..4).map(|i| server.post_recv(&RecvWr::new(i, &[rbuf.sge(i as usize * 64, 64)])).expect("recv")).collect();
    // One future dropped too: its completion is reaped all the same.
    let mut futures = futures.into_iter();
    drop(futures.next());
    drop(server);
    for (i, f) in futures.enumerate() {
        let wc = within(f).await;
        assert_eq!((wc.wr_id, wc.status), (i as u64 + 1, WcStatus::WrFlush));
    }
    // The peer sees the connection end.
    within(async {
        loop {
            if matches!(client.queue_pair().poll_event(), Some(QpEvent::Disconnected | QpEvent::Error { .. })) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_async_queue_pair_dropped_flushes_its_receives() {
    let dev = device();
    let pd = dev.alloc_pd();
    let qp = AsyncQueuePair::new(&pd, QpCap::default()).expect("qp");
    let rbuf = pd.reg_mr(64, Access::LOCAL_WRITE).expect("rbuf");
    let f = qp.post_recv(&RecvWr::new(9, &[rbuf.sge_all()])).expect("recv");
    drop(qp);
    let wc = within(f).await;
    assert_eq!((wc.wr_id, wc.status), (9, WcStatus::WrFlush));
}

#[test]
fn outside_a_runtime_the_async_types_refuse_to_be_made() {
    let dev = device();
    let pd = dev.alloc_pd();
    assert!(matches!(AsyncQueuePair::new(&pd, QpCap::default()), Err(Error::Io(_))));
    let channel = dev.create_comp_channel().expect("channel");
    assert!(matches!(CompletionStream::new(&channel, &[]), Err(Error::Io(_))));
}
