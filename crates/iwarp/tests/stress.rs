//! Multi-threaded stress over loopback: dozens of queue pairs driven by several application
//! threads at once, with every byte verified (with the event loops' progress, and assisted by
//! the polling threads); the same with application-driven progress
//! (`Progress::Poll`, one shared completion queue per thread, across two devices); and a
//! shared receive queue feeding several queue pairs. Bounded in iterations and time.
mod common;

use common::*;
use iwarp::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wall-clock bound for each stress test's work.
const BUDGET: Duration = Duration::from_secs(60);
/// Writes per pair and iteration (distinct 16 KiB slots of the target).
const SLOTS: usize = 4;
const SLOT: usize = 16 << 10;

/// One pair's memory: the client's source and read sink, the server's target and receive
/// buffer.
struct Mem {
    src: MemoryRegion,
    sink: MemoryRegion,
    target: MemoryRegion,
    rbuf: MemoryRegion,
}

impl Mem {
    fn new(cpd: &ProtectionDomain, spd: &ProtectionDomain) -> Mem {
        Mem {
            src: cpd.reg_mr(SLOTS * SLOT + 8, all_access()).unwrap(),
            sink: cpd.reg_mr(SLOT, all_access()).unwrap(),
            target: spd.reg_mr(SLOTS * SLOT, all_access()).unwrap(),
            rbuf: spd.reg_mr(1024, all_access()).unwrap(),
        }
    }
}

/// Posts one iteration on a pair: SLOTS Writes (only the last signaled), a Send carrying the
/// iteration number, and a Read of slot 0 back. Returns the bytes written.
fn post_iteration(client: &QueuePair, server: &QueuePair, m: &Mem, pair: usize, it: usize) -> Vec<Vec<u8>> {
    let seed = (pair * 10_000 + it) as u32;
    let mut written = Vec::new();
    let mut wrs = Vec::new();
    for s in 0..SLOTS {
        let len = 1 + (seed as usize * 7919 + s * 104_729) % SLOT;
        written.push(fill(&m.src, s * SLOT, len, seed * 8 + s as u32));
        let wr = SendWr::write(s as u64, &[m.src.sge(s * SLOT, len)], m.target.remote((s * SLOT) as u64));
        wrs.push(if s + 1 == SLOTS { wr } else { wr.unsignaled() });
    }
    m.src.write(SLOTS * SLOT, &(it as u64).to_le_bytes()).unwrap();
    server.post_recv(&[RecvWr::new(it as u64, &[m.rbuf.sge(0, 1024)])]).unwrap();
    wrs.push(SendWr::send(100, &[m.src.sge(SLOTS * SLOT, 8)]));
    wrs.push(SendWr::read(200, m.sink.sge(0, written[0].len()), m.target.remote(0)));
    client.post_send(&wrs).unwrap();
    written
}

/// Checks what an iteration left at the server and in the client's Read sink.
fn verify_iteration(m: &Mem, written: &[Vec<u8>], it: usize, recv: &WorkCompletion, read: &WorkCompletion) {
    assert_eq!((recv.status, recv.wr_id, recv.byte_len), (WcStatus::Success, it as u64, 8), "{recv:?}");
    assert_eq!(m.rbuf.to_vec(0, 8).unwrap(), (it as u64).to_le_bytes());
    for (s, w) in written.iter().enumerate() {
        assert!(m.target.to_vec(s * SLOT, w.len()).unwrap() == *w, "slot {s} of iteration {it}");
    }
    assert_eq!((read.status, read.byte_len as usize), (WcStatus::Success, written[0].len()));
    assert!(m.sink.to_vec(0, written[0].len()).unwrap() == written[0], "read-back of iteration {it}");
}

/// Connects `n` pairs: clients on `cdev`, servers on `sdev`.
fn connect_pairs(
    cdev: &Device,
    sdev: &Device,
    n: usize,
    progress: Progress,
    shared: Option<&[CompletionQueue]>,
) -> Vec<(End, End, Mem)> {
    let cpd = cdev.alloc_pd();
    let spd = sdev.alloc_pd();
    let listener = sdev.listen(any_port(), 128).unwrap();
    let addr = listener.local_addr();
    let cap = QpCap { max_send_wr: 64, max_recv_wr: 64, max_send_sge: 2, max_recv_sge: 2, max_inline_data: 0 };
    let mut out = Vec::new();
    for i in 0..n {
        let make = |dev: &Device, pd: &ProtectionDomain| match shared {
            Some(cqs) => {
                let cq = &cqs[i % cqs.len()];
                let mut init = QpInit::new(cq, cq);
                init.cap = cap;
                init.progress = progress;
                End { qp: pd.create_qp(&init).unwrap(), scq: cq.clone(), rcq: cq.clone() }
            }
            None => End::new(dev, pd, cap, progress),
        };
        let server = make(sdev, &spd);
        let client = make(cdev, &cpd);
        client.qp.connect_start(addr, &ConnParams::default()).unwrap();
        let req = listener.get_request(Some(WAIT)).unwrap();
        req.accept(&server.qp, &ConnParams::default()).unwrap();
        client.qp.wait_established(WAIT).unwrap();
        server.qp.wait_established(WAIT).unwrap();
        out.push((client, server, Mem::new(&cpd, &spd)));
    }
    out
}

#[test]
fn dozens_of_pairs_on_one_device_driven_by_several_threads() {
    dozens_of_pairs(Progress::Thread, 100);
}

/// The same with assisted progress: the threads' polls and the event loops contend for the
/// same queue pairs.
#[test]
fn dozens_of_assisted_pairs_driven_by_the_event_loops_and_the_polling_threads() {
    dozens_of_pairs(Progress::Assisted, 50);
}

fn dozens_of_pairs(progress: Progress, iters: usize) {
    init_log();
    let dev = Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).unwrap();
    let (threads, per_thread) = (4, 12);
    let pairs = connect_pairs(&dev, &dev, threads * per_thread, progress, None);
    let start = Instant::now();
    let mut groups: Vec<Vec<(End, End, Mem)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, p) in pairs.into_iter().enumerate() {
        groups[i % threads].push(p);
    }
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, group)| {
            std::thread::spawn(move || {
                for it in 0..iters {
                    let written: Vec<Vec<Vec<u8>>> = group
                        .iter()
                        .enumerate()
                        .map(|(k, (c, s, m))| post_iteration(&c.qp, &s.qp, m, t * 100 + k, it))
                        .collect();
                    for ((c, s, m), w) in group.iter().zip(&written) {
                        let sc = wait_wcs(&c.scq, 3, WAIT);
                        let ids: Vec<u64> = sc.iter().map(|c| c.wr_id).collect();
                        assert_eq!(ids, [SLOTS as u64 - 1, 100, 200], "only signaled work completes, in order");
                        assert_ok(&sc);
                        let r = wait_wcs(&s.rcq, 1, WAIT);
                        verify_iteration(m, w, it, &r[0], &sc[2]);
                    }
                    assert!(start.elapsed() < BUDGET, "over budget at iteration {it}");
                }
                group.len() * iters
            })
        })
        .collect();
    let done: usize = handles.into_iter().map(|h| h.join().expect("stress thread")).sum();
    assert_eq!(done, threads * per_thread * iters);
}

/// Application-driven progress: each thread polls one shared completion queue that all its
/// queue pairs (clients on one device, servers on another) report to; nothing moves unless
/// it polls.
#[test]
fn poll_mode_pairs_across_two_devices_progress_through_their_threads_polling() {
    init_log();
    let cdev = Device::open(DeviceConfig { workers: 1, ..DeviceConfig::default() }).unwrap();
    let sdev = Device::open(DeviceConfig { workers: 1, ..DeviceConfig::default() }).unwrap();
    let (threads, per_thread, iters) = (4, 8, 100);
    let cqs: Vec<CompletionQueue> = (0..threads).map(|_| cdev.create_cq(4096).unwrap()).collect();
    let pairs = connect_pairs(&cdev, &sdev, threads * per_thread, Progress::Poll, Some(&cqs));
    let start = Instant::now();
    let mut groups: Vec<Vec<(End, End, Mem)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, p) in pairs.into_iter().enumerate() {
        groups[i % threads].push(p);
    }
    let handles: Vec<_> = groups
        .into_iter()
        .zip(cqs)
        .enumerate()
        .map(|(t, (group, cq))| {
            std::thread::spawn(move || {
                // Queue pair numbers are per device: tell clients and servers apart by queue.
                let clients: HashMap<u32, usize> =
                    group.iter().enumerate().map(|(k, (c, _, _))| (c.qp.qp_num(), k)).collect();
                let servers: HashMap<u32, usize> =
                    group.iter().enumerate().map(|(k, (_, s, _))| (s.qp.qp_num(), k)).collect();
                assert_eq!((clients.len(), servers.len()), (group.len(), group.len()));
                let mut polls = 0u64;
                for it in 0..iters {
                    let written: Vec<Vec<Vec<u8>>> = group
                        .iter()
                        .enumerate()
                        .map(|(k, (c, s, m))| post_iteration(&c.qp, &s.qp, m, t * 100 + k, it))
                        .collect();
                    // Per pair: three client completions and one receive, all on this queue.
                    let mut got: Vec<Vec<WorkCompletion>> = vec![Vec::new(); group.len()];
                    let mut n = 0;
                    let mut buf = [WorkCompletion::default(); 32];
                    while n < 4 * group.len() {
                        assert!(start.elapsed() < BUDGET, "over budget at iteration {it} with {n} completions");
                        polls += 1;
                        let k = if polls.is_multiple_of(2) {
                            cq.poll(&mut buf)
                        } else {
                            cq.wait(&mut buf, Some(Duration::from_millis(50)))
                        };
                        for c in &buf[..k] {
                            let owner = if c.opcode == WcOpcode::Recv { &servers } else { &clients };
                            got[owner[&c.qp_num]].push(*c);
                        }
                        n += k;
                    }
                    for ((m, w), g) in group.iter().map(|(_, _, m)| m).zip(&written).zip(&got) {
                        let sent: Vec<&WorkCompletion> = g.iter().filter(|x| x.opcode != WcOpcode::Recv).collect();
                        let ids: Vec<u64> = sent.iter().map(|c| c.wr_id).collect();
                        assert_eq!(ids, [SLOTS as u64 - 1, 100, 200]);
                        let recv = g.iter().find(|x| x.opcode == WcOpcode::Recv).expect("a receive");
                        verify_iteration(m, w, it, recv, sent[2]);
                    }
                }
                group.len() * iters
            })
        })
        .collect();
    let done: usize = handles.into_iter().map(|h| h.join().expect("poll thread")).sum();
    assert_eq!(done, threads * per_thread * iters);
}

/// A shared receive queue feeding eight queue pairs: two sender threads, one receiver thread
/// that reposts as it consumes; every message arrives once, intact, in per-connection order.
#[test]
fn shared_receive_queue_feeds_several_queue_pairs() {
    init_log();
    let dev = Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).unwrap();
    let pd = dev.alloc_pd();
    let (qps, msgs, slots) = (8usize, 500usize, 128usize);
    let srq = pd.create_srq(slots, 1).unwrap();
    let rcq = dev.create_cq(4096).unwrap();
    let rbuf = pd.reg_mr(slots * 1024, all_access()).unwrap();
    let rwrs: Vec<RecvWr<'_>> = (0..slots).map(|i| RecvWr::new(i as u64, &[rbuf.sge(i * 1024, 1024)])).collect();
    srq.post_recv(&rwrs).unwrap();
    assert_eq!(srq.len(), slots);
    let listener = dev.listen(any_port(), 16).unwrap();
    let mut clients = Vec::new();
    let mut servers = HashMap::new();
    for i in 0..qps {
        let scq = dev.create_cq(64).unwrap();
        let mut init = QpInit::new(&scq, &rcq);
        init.srq = Some(&srq);
        let server = pd.create_qp(&init).unwrap();
        // Receives go to the shared queue, not the queue pair.
        assert_eq!(
            server.post_recv(&[RecvWr::new(0, &[rbuf.sge(0, 8)])]).map_err(|e| e.reason),
            Err(PostReason::UsesSrq)
        );
        let client = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
        client.qp.connect_start(listener.local_addr(), &ConnParams::default()).unwrap();
        listener.get_request(Some(WAIT)).unwrap().accept(&server, &ConnParams::default()).unwrap();
        client.qp.wait_established(WAIT).unwrap();
        servers.insert(server.qp_num(), (i, server));
        clients.push(client);
    }
    // Credits: a Send may go out only while a receive is posted for it.
    let credits = Arc::new(AtomicIsize::new(slots as isize));
    let start = Instant::now();
    let msg = |i: usize, seq: usize| {
        let mut m = pattern(8 + (seq * 97 + i * 13) % 1000, (i * 1000 + seq) as u32);
        m[..8].copy_from_slice(&((i as u64) << 32 | seq as u64).to_le_bytes());
        m
    };
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let mine: Vec<(usize, End)> = clients.iter().cloned().enumerate().filter(|(i, _)| i % 2 == t).collect();
            let credits = Arc::clone(&credits);
            let pd = pd.clone();
            std::thread::spawn(move || {
                let src = pd.reg_mr(1024, all_access()).unwrap();
                for seq in 0..msgs {
                    for (i, c) in &mine {
                        while credits.fetch_sub(1, Ordering::AcqRel) <= 0 {
                            credits.fetch_add(1, Ordering::AcqRel);
                            assert!(start.elapsed() < BUDGET, "starved of credits");
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        let m = msg(*i, seq);
                        src.write(0, &m).unwrap();
                        c.qp.post_send(&[SendWr::send(seq as u64, &[src.sge(0, m.len())])]).unwrap();
                        // The source buffer is reused: wait until this Send was handed to TCP.
                        let s = wait_wcs(&c.scq, 1, WAIT);
                        assert_eq!((s[0].wr_id, s[0].status), (seq as u64, WcStatus::Success));
                    }
                }
            })
        })
        .collect();
    let mut next = vec![0usize; qps];
    let mut buf = [WorkCompletion::default(); 64];
    let mut total = 0;
    while total < qps * msgs {
        assert!(start.elapsed() < BUDGET, "received {total} of {}", qps * msgs);
        let n = rcq.wait(&mut buf, Some(Duration::from_millis(100)));
        for c in &buf[..n] {
            assert_eq!(c.status, WcStatus::Success, "{c:?}");
            let (i, _) = &servers[&c.qp_num];
            let slot = c.wr_id as usize;
            let got = rbuf.to_vec(slot * 1024, c.byte_len as usize).unwrap();
            let tag = u64::from_le_bytes(got[..8].try_into().unwrap());
            let (from, seq) = ((tag >> 32) as usize, (tag & 0xffff_ffff) as usize);
            assert_eq!(from, *i, "message on the right connection");
            assert_eq!(seq, next[from], "per-connection order");
            assert!(got == msg(from, seq), "payload of message {seq} from {from}");
            next[from] += 1;
            srq.post_recv(&[RecvWr::new(c.wr_id, &[rbuf.sge(slot * 1024, 1024)])]).unwrap();
            credits.fetch_add(1, Ordering::AcqRel);
        }
        total += n;
    }
    for s in senders {
        s.join().expect("sender");
    }
    assert_eq!(next, vec![msgs; qps]);
    assert_eq!(srq.len(), slots, "every consumed receive was reposted");
    for (_, server) in servers.values() {
        assert_eq!(server.state(), QpState::Rts);
    }
}

/// Several threads posting on the same queue pair at once: every message arrives once and
/// intact, each thread's messages in the order it posted them.
#[test]
fn threads_sharing_one_queue_pair_keep_their_own_order() {
    let p = Pair::with(PairConfig::default());
    let (threads, per) = (4usize, 200usize);
    let rbuf = p.mr(threads * per * 256, all_access());
    let rwrs: Vec<RecvWr<'_>> = (0..threads * per).map(|i| RecvWr::new(i as u64, &[rbuf.sge(i * 256, 256)])).collect();
    p.server.qp.post_recv(&rwrs).unwrap();
    let start = Instant::now();
    let posters: Vec<_> = (0..threads)
        .map(|t| {
            let qp = p.client.qp.clone();
            let src = p.mr(per * 256, all_access());
            std::thread::spawn(move || {
                for seq in 0..per {
                    let m = pattern(8 + (seq * 31 + t) % 248, (t * 1000 + seq) as u32);
                    let mut m = m;
                    m[..8].copy_from_slice(&((t as u64) << 32 | seq as u64).to_le_bytes());
                    src.write(seq * 256, &m).unwrap();
                    qp.post_send(&[SendWr::send((t * per + seq) as u64, &[src.sge(seq * 256, m.len())])]).unwrap();
                    assert!(start.elapsed() < BUDGET);
                }
                src
            })
        })
        .collect();
    let srcs: Vec<MemoryRegion> = posters.into_iter().map(|h| h.join().expect("poster")).collect();
    let s = p.client.send_wcs(threads * per);
    assert_ok(&s);
    let r = p.server.recv_wcs(threads * per);
    let mut next = vec![0usize; threads];
    for (k, c) in r.iter().enumerate() {
        assert_eq!((c.status, c.wr_id), (WcStatus::Success, k as u64), "receives complete in order");
        let got = rbuf.to_vec(k * 256, c.byte_len as usize).unwrap();
        let tag = u64::from_le_bytes(got[..8].try_into().unwrap());
        let (t, seq) = ((tag >> 32) as usize, (tag & 0xffff_ffff) as usize);
        assert_eq!(seq, next[t], "thread {t}'s order");
        next[t] += 1;
        assert_eq!(got, srcs[t].to_vec(seq * 256, got.len()).unwrap());
    }
    assert_eq!(next, vec![per; threads]);
}

/// Many initiators connecting at once (each from its own thread) to one listener, accepted in
/// arrival order: every connection is established and carries its own data.
#[test]
fn concurrent_connects_to_one_listener_are_all_served() {
    let dev = Device::open(DeviceConfig { workers: 2, ..DeviceConfig::default() }).unwrap();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 64).unwrap();
    let addr = listener.local_addr();
    let n = 32usize;
    let start = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let (dev, pd) = (dev.clone(), pd.clone());
            std::thread::spawn(move || {
                let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
                let params = ConnParams { private_data: (i as u32).to_be_bytes().to_vec(), ..ConnParams::default() };
                end.qp.connect(addr, &params).expect("connect");
                let src = pd.reg_mr(4096, all_access()).unwrap();
                let data = fill(&src, 0, 4096, i as u32);
                end.qp.post_send(&[SendWr::send(1, &[src.sge(0, 4096)])]).unwrap();
                assert_ok(&end.send_wcs(1));
                (end, data)
            })
        })
        .collect();
    let mut servers = Vec::new();
    for _ in 0..n {
        let req = listener.get_request(Some(WAIT)).expect("request");
        let i = u32::from_be_bytes(req.private_data().try_into().unwrap()) as usize;
        let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
        let rb = pd.reg_mr(4096, all_access()).unwrap();
        post_recv(&end.qp, i as u64, &rb, 0, 4096);
        req.accept(&end.qp, &ConnParams::default()).unwrap();
        servers.push((i, end, rb));
        assert!(start.elapsed() < BUDGET);
    }
    let clients: Vec<(End, Vec<u8>)> = clients.into_iter().map(|h| h.join().expect("client")).collect();
    let mut seen = vec![false; n];
    for (i, end, rb) in &servers {
        let r = end.recv_wcs(1);
        assert_eq!((r[0].wr_id, r[0].status, r[0].byte_len), (*i as u64, WcStatus::Success, 4096));
        assert_mr_eq(rb, 0, &clients[*i].1, "each connection's own data");
        assert!(!std::mem::replace(&mut seen[*i], true), "one connection per client");
    }
    assert!(seen.iter().all(|s| *s));
}
