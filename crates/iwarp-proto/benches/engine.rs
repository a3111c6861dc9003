//! The queue-pair engine's hot paths, without sockets:
//! - `segment`: RDMA Writes posted and framed into FPDUs (headers, CRC over the payload in
//!   place, I/O ranges pointing into registered memory), reported sent;
//! - `place`: a stream of Write FPDUs placed into a registered region (CRC check, validation,
//!   the copy a `readv` would do);
//! - `post_poll`: 64-byte Writes posted in batches of 32, framed, reported sent and their
//!   completions polled: the per-work-request overhead.
//!
//! Run with `cargo bench -p iwarp-proto --bench engine`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iwarp_proto::mem::{Access, MrRef, RawMem, StagTable};
use iwarp_proto::qp::{
    IoRange, LinkParams, Payload, Qp, QpConfig, RemoteAddr, SendOp, SendWqe, Sge, Startup, WcStatus,
};
use std::hint::black_box;
use std::sync::Arc;

/// The ULPDU size over loopback (MSS 65483), as the runtime sets it.
fn loopback_mulpdu() -> usize {
    iwarp_wire::mpa::mulpdu(65483, false)
}

fn link(startup: Startup, crc: bool) -> LinkParams {
    LinkParams {
        crc,
        send_markers: false,
        recv_markers: false,
        ird: 16,
        ord: 16,
        mulpdu: loopback_mulpdu(),
        large_fpdus: false,
        rfc7306: true,
        startup,
    }
}

struct Rig {
    stags: Arc<StagTable>,
    tx: Qp,
    rx: Qp,
    src: MrRef,
    dst: MrRef,
}

fn rig(len: usize, crc: bool) -> Rig {
    let stags = Arc::new(StagTable::new(7));
    let pd = stags.new_pd();
    let cfg = |qp_num| QpConfig {
        qp_num,
        pd,
        sq_depth: 1024,
        rq_depth: 16,
        max_send_sge: 2,
        max_recv_sge: 2,
        max_inline: 64,
    };
    let mut tx = Qp::new(cfg(1), Arc::clone(&stags), None);
    let mut rx = Qp::new(cfg(2), Arc::clone(&stags), None);
    tx.establish(link(Startup::Initiator { rtr: None }, crc)).expect("establish");
    rx.establish(link(Startup::Responder { rtr: None, send_first: false }, crc)).expect("establish");
    let src = stags.register(RawMem::alloc(len, false).expect("alloc"), pd, Access::LOCAL_WRITE, 0).expect("reg");
    let dst = stags
        .register(RawMem::alloc(len, false).expect("alloc"), pd, Access::LOCAL_WRITE | Access::REMOTE_WRITE, 0)
        .expect("reg");
    assert!(src.mem().write(0, &vec![0xa5; len]));
    Rig { stags, tx, rx, src, dst }
}

fn write_wr(r: &Rig, wr_id: u64, len: usize, signaled: bool) -> SendWqe {
    SendWqe {
        wr_id,
        op: SendOp::Write(RemoteAddr::unbounded(r.dst.stag(), r.dst.base())),
        payload: Payload::Sges([Sge { mr: Arc::clone(&r.src), offset: 0, len }].into_iter().collect()),
        signaled,
        solicited: false,
        fence: false,
    }
}

/// Frames everything pending and reports it all sent; returns the bytes framed.
fn drain_tx(qp: &mut Qp, ranges: &mut Vec<IoRange>) -> usize {
    let mut total = 0;
    loop {
        let n = qp.poll_transmit(ranges, 1023);
        if n == 0 {
            return total;
        }
        black_box(&ranges);
        qp.handle_sent(n);
        total += n;
    }
}

fn segment(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment");
    for &size in &[64 << 10, 1 << 20] {
        for crc in [true, false] {
            let mut r = rig(size, crc);
            let mut ranges = Vec::with_capacity(1024);
            g.throughput(Throughput::Bytes(size as u64));
            let name = if crc { "write_crc" } else { "write_nocrc" };
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter(|| {
                    let wr = write_wr(&r, 1, size, true);
                    r.tx.post_send([wr]).expect("post");
                    let n = drain_tx(&mut r.tx, &mut ranges);
                    let c = r.tx.poll_completion().expect("completion");
                    assert_eq!(c.status, WcStatus::Success);
                    n
                })
            });
        }
    }
    g.finish();
}

fn place(c: &mut Criterion) {
    let mut g = c.benchmark_group("place");
    for &size in &[64 << 10, 1 << 20] {
        for crc in [true, false] {
            let mut r = rig(size, crc);
            // One Write's FPDUs, fed again and again: tagged placement consumes no receive.
            let mut stream = Vec::new();
            let wr = write_wr(&r, 1, size, false);
            r.tx.post_send([wr]).expect("post");
            while r.tx.transmit_copy(&mut stream, usize::MAX) > 0 {}
            assert_eq!(r.rx.receive_copy(&stream), stream.len());
            let mut last = [0u8];
            assert!(r.dst.mem().read(size - 1, &mut last));
            assert_eq!(last[0], 0xa5, "the Writes were placed");
            g.throughput(Throughput::Bytes(size as u64));
            let name = if crc { "write_crc" } else { "write_nocrc" };
            g.bench_with_input(BenchmarkId::new(name, size), &stream, |b, s| {
                b.iter(|| {
                    let used = r.rx.receive_copy(black_box(s));
                    assert_eq!(used, s.len());
                })
            });
            drop(r.stags);
        }
    }
    g.finish();
}

fn post_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("post_poll");
    let mut r = rig(64, true);
    let mut ranges = Vec::with_capacity(1024);
    const BATCH: u64 = 32;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("write_64B_batch32", |b| {
        b.iter(|| {
            // perftest's pattern: one signalled Write per batch.
            let wrs: Vec<SendWqe> = (0..BATCH).map(|i| write_wr(&r, i, 64, i + 1 == BATCH)).collect();
            r.tx.post_send(wrs).expect("post");
            drain_tx(&mut r.tx, &mut ranges);
            let mut got = 0;
            while let Some(c) = r.tx.poll_completion() {
                assert_eq!(c.status, WcStatus::Success);
                got += 1;
            }
            assert_eq!(got, 1);
        })
    });
    g.finish();
}

criterion_group!(benches, segment, place, post_poll);
criterion_main!(benches);
