//! Deframing plus CRC verification of a stream of 64 KiB FPDUs, next to the raw CRC32c speed of
//! the same bytes. Run with `cargo bench -p iwarp-wire --bench deframe`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iwarp_wire::crc::crc32c;
use iwarp_wire::mpa::{mulpdu, Deframer, DeframerConfig, Event, Framer};
use iwarp_wire::{Opcode, SegmentHeader, Stag, TaggedOffset};
use std::hint::black_box;

/// A stream of `count` RDMA Write FPDUs of `payload` bytes each.
fn stream(payload: usize, count: usize, markers: bool) -> Vec<u8> {
    let data = vec![0x5au8; payload];
    let mut f = Framer::new(true, markers);
    let mut out = Vec::new();
    for i in 0..count {
        let h = SegmentHeader::tagged(Opcode::Write, true, Stag(0x1234_5600), TaggedOffset((i * payload) as u64));
        let (b, n) = h.to_bytes();
        f.frame_to_vec(&b[..n], &[&data], &mut out).unwrap();
    }
    out
}

fn deframe_all(bytes: &[u8], markers: bool) -> usize {
    let mut d = Deframer::new(DeframerConfig { crc: true, markers, max_ulpdu: u16::MAX });
    let mut rest = bytes;
    let mut fpdus = 0;
    while !rest.is_empty() {
        let (n, ev) = d.feed(rest).expect("valid stream");
        if let Event::End(_) = ev {
            fpdus += 1;
        }
        rest = &rest[n..];
    }
    fpdus
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("deframe_64k");
    // The ULPDU size Linux siw uses over loopback (MSS 65483).
    let payload = mulpdu(65483, false) - 14;
    for markers in [false, true] {
        let s = stream(payload, 64, markers);
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_with_input(BenchmarkId::new("deframe_crc", if markers { "markers" } else { "plain" }), &s, |b, s| {
            b.iter(|| deframe_all(black_box(s), markers))
        });
        if !markers {
            g.bench_with_input(BenchmarkId::new("crc32c_raw", "plain"), &s, |b, s| b.iter(|| crc32c(black_box(s))));
        }
    }
    g.finish();

    let mut g = c.benchmark_group("deframe_small");
    let s = stream(64, 4096, false);
    g.throughput(Throughput::Elements(4096));
    g.bench_function("deframe_crc_64B_writes", |b| b.iter(|| deframe_all(black_box(&s), false)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
