//! Two engines connected by in-memory pipes: every operation, every Terminate case.

use super::rx::{DIRECT_MIN, SCRATCH_MAX};
use super::*;
use crate::mem::{Access, MrRef, RawMem};
use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, Framer};
use iwarp_wire::rdmap::{AtomicOpcode, AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::{
    Mpa, RemoteOperation, RemoteProtection, TaggedBuffer, TerminateLayout, TerminateMessage, UntaggedBuffer,
};
use iwarp_wire::{Opcode, SegmentHeader, Stag, TaggedOffset};

fn link(startup: Startup) -> LinkParams {
    LinkParams {
        crc: true,
        send_markers: false,
        recv_markers: false,
        ird: 8,
        ord: 8,
        mulpdu: iwarp_wire::mpa::mulpdu(1460, false),
        large_fpdus: false,
        rfc7306: true,
        startup,
    }
}

fn cfg(qp_num: u32, pd: PdId) -> QpConfig {
    QpConfig { qp_num, pd, sq_depth: 256, rq_depth: 256, max_send_sge: 4, max_recv_sge: 4, max_inline: 256 }
}

struct Pair {
    a: Qp,
    b: Qp,
    stags: Arc<StagTable>,
    pd: PdId,
    chunk: usize,
    ab: Vec<u8>,
    ba: Vec<u8>,
}

impl Pair {
    fn with(a_link: LinkParams, b_link: LinkParams) -> Pair {
        let stags = Arc::new(StagTable::new(42));
        let pd = stags.new_pd();
        let mut a = Qp::new(cfg(1, pd), Arc::clone(&stags), None);
        let mut b = Qp::new(cfg(2, pd), Arc::clone(&stags), None);
        a.establish(a_link).unwrap();
        b.establish(b_link).unwrap();
        Pair { a, b, stags, pd, chunk: 1 << 20, ab: Vec::new(), ba: Vec::new() }
    }

    fn new() -> Pair {
        Pair::with(link(Startup::Initiator { rtr: None }), link(Startup::Responder { rtr: None, send_first: false }))
    }

    /// FPDUs as large as over loopback (MSS 65483): 64 KiB payloads in one FPDU but for a
    /// short tail.
    fn loopback_mss() -> Pair {
        Pair::with(
            LinkParams { mulpdu: 65474, ..link(Startup::Initiator { rtr: None }) },
            LinkParams { mulpdu: 65474, ..link(Startup::Responder { rtr: None, send_first: false }) },
        )
    }

    fn mr(&self, len: usize, access: Access) -> MrRef {
        self.stags.register(RawMem::alloc(len, false).unwrap(), self.pd, access, 0x10_0000).unwrap()
    }

    /// Moves bytes both ways, `chunk` at a time, until neither side has anything to send.
    fn drive(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = self.a.transmit_copy(&mut self.ab, self.chunk);
            moved += self.b.transmit_copy(&mut self.ba, self.chunk);
            if !self.ab.is_empty() {
                let n = self.ab.len().min(self.chunk);
                let used = self.b.receive_copy(&self.ab[..n]);
                self.ab.drain(..n);
                moved += used.max(1);
            }
            if !self.ba.is_empty() {
                let n = self.ba.len().min(self.chunk);
                let used = self.a.receive_copy(&self.ba[..n]);
                self.ba.drain(..n);
                moved += used.max(1);
            }
            if moved == 0 {
                return;
            }
        }
        panic!("drive did not settle");
    }

    fn completions(qp: &mut Qp) -> Vec<Completion> {
        std::iter::from_fn(|| qp.poll_completion()).collect()
    }

    fn events(qp: &mut Qp) -> Vec<QpEvent> {
        std::iter::from_fn(|| qp.poll_event()).collect()
    }
}

fn sge(mr: &MrRef, offset: usize, len: usize) -> Sge {
    Sge { mr: Arc::clone(mr), offset, len }
}

fn send_wr(wr_id: u64, op: SendOp, sges: Vec<Sge>) -> SendWqe {
    SendWqe { wr_id, op, payload: Payload::Sges(sges.into()), signaled: true, solicited: false, fence: false }
}

fn recv_wr(wr_id: u64, sges: Vec<Sge>) -> RecvWqe {
    RecvWqe { wr_id, sges: sges.into() }
}

fn pattern(mr: &MrRef, seed: u8) {
    let v: Vec<u8> = (0..mr.len()).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    assert!(mr.mem().write(0, &v));
}

fn contents(mr: &MrRef, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    assert!(mr.mem().read(off, &mut v));
    v
}

fn remote(mr: &MrRef, off: u64) -> RemoteAddr {
    RemoteAddr::unbounded(mr.stag(), mr.base() + off)
}

#[test]
fn send_of_many_sizes_arrives_intact_in_any_chunking() {
    for &size in &[0usize, 1, 7, 1453, 1454, 1455, 4096, 65_537, 1 << 20] {
        for &chunk in &[1usize, 13, 1460, 1 << 20] {
            if size > 70_000 && chunk < 1000 {
                continue;
            }
            let mut p = Pair::new();
            p.chunk = chunk;
            let src = p.mr(size.max(1), Access::empty());
            let dst = p.mr(size.max(1) + 10, Access::LOCAL_WRITE);
            pattern(&src, 3);
            p.b.post_recv([recv_wr(7, vec![sge(&dst, 0, size + 10)])]).unwrap();
            p.a.post_send([send_wr(9, SendOp::Send, vec![sge(&src, 0, size)])]).unwrap();
            p.drive();
            let ca = Pair::completions(&mut p.a);
            assert_eq!(ca.len(), 1);
            assert_eq!((ca[0].wr_id, ca[0].status, ca[0].opcode), (9, WcStatus::Success, WcOpcode::Send));
            let cb = Pair::completions(&mut p.b);
            assert_eq!(cb.len(), 1, "size {size} chunk {chunk}");
            assert_eq!((cb[0].wr_id, cb[0].status, cb[0].byte_len), (7, WcStatus::Success, size as u32));
            assert_eq!(contents(&dst, 0, size), contents(&src, 0, size), "size {size} chunk {chunk}");
        }
    }
}

#[test]
fn large_payload_is_placed_directly_and_sent_without_copy() {
    let mut p = Pair::loopback_mss();
    let size = 1 << 20;
    let src = p.mr(size, Access::empty());
    let dst = p.mr(size, Access::REMOTE_WRITE);
    pattern(&src, 5);
    // The responder must hear first; a zero-length Send would need a receive, so use a Write.
    p.a.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, size)])]).unwrap();
    p.drive();
    assert_eq!(contents(&dst, 0, size), contents(&src, 0, size));
    let (sa, sb) = (p.a.stats(), p.b.stats());
    // Every full FPDU leaves from the region; only the short tail is copied next to its header.
    assert_eq!(sa.tx_zero_copy_bytes + sa.tx_copied_bytes, size as u64);
    assert!(sa.tx_zero_copy_bytes > (size as u64) * 99 / 100, "{sa:?}");
    assert_eq!(sa.tx_fpdus, 17);
    assert!(sb.rx_direct_bytes > (size as u64) * 99 / 100, "{sb:?}");
}

/// Segment-sized FPDUs are copied into the transmit arena and join into few pieces, so a
/// connection whose socket never catches up (its batch never empties) used to grow the arena
/// without end, then shrink it and fault it in again. It stays under `ARENA_MAX` (plus one
/// FPDU), keeps its capacity from batch to batch, and every byte still arrives.
#[test]
fn a_streaming_connections_transmit_arena_stays_bounded_and_is_reused() {
    let mut p = Pair::new();
    let size = 64 << 10;
    let src = p.mr(size, Access::empty());
    let dst = p.mr(size, Access::REMOTE_WRITE);
    pattern(&src, 9);
    let (mut wire, mut max_len, mut caps) = (Vec::new(), 0, Vec::new());
    for round in 0..4u64 {
        // 24 MiB of Writes per round, taken 256 KiB at a time: more than the window is always
        // framed ahead of the "socket", so the batch empties only at the end of the round.
        let wrs: Vec<SendWqe> = (0..384)
            .map(|i| send_wr(round * 1000 + i, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, size)]))
            .collect();
        for chunk in wrs.chunks(128) {
            p.a.post_send(chunk.iter().cloned()).unwrap();
            loop {
                wire.clear();
                let n = p.a.transmit_copy(&mut wire, 256 << 10);
                max_len = max_len.max(p.a.tx_arena().0);
                if n == 0 {
                    break;
                }
                let mut off = 0;
                while off < wire.len() {
                    off += p.b.receive_copy(&wire[off..]);
                }
            }
            Pair::completions(&mut p.a);
            // The batch has just emptied: its arena is kept for the next one.
            caps.push(p.a.tx_arena().1);
        }
    }
    assert_eq!(contents(&dst, 0, size), contents(&src, 0, size));
    assert!(p.a.stats().tx_copied_bytes > 90 << 20, "segment-sized FPDUs are copied: {:?}", p.a.stats());
    assert!(max_len <= super::tx::ARENA_MAX + 2048 && super::tx::ARENA_MAX <= 4 << 20, "arena grew to {max_len}");
    assert!(caps.iter().all(|&c| c >= 1 << 20), "the capacity is kept from batch to batch: {caps:?}");
}

/// Receive plans: payloads shorter than `DIRECT_MIN` are copied out of the scratch read that
/// carries their neighbours, so a stream of 4 KiB Writes takes one read, not one or two per
/// FPDU (one `readv` each held 1–4 KiB messages at 0.8× of TCP's rate).
#[test]
fn short_payloads_arrive_in_bulk_reads() {
    let mut p = Pair::new();
    let src = p.mr(64 << 10, Access::empty());
    let dst = p.mr(64 << 10, Access::REMOTE_WRITE);
    let mut reads = Vec::new();
    let mut before = p.b.stats();
    for round in 0..2u8 {
        before = if round == 1 { p.b.stats() } else { before };
        pattern(&src, 3 + round);
        // 15 Writes of 4 KiB: 61.7 KB of stream, less than one scratch read.
        let wrs: Vec<_> = (0..15u64)
            .map(|i| send_wr(i, SendOp::Write(remote(&dst, i * 4096)), vec![sge(&src, i as usize * 4096, 4096)]))
            .collect();
        p.a.post_send(wrs).unwrap();
        let mut wire = Vec::new();
        p.a.transmit_copy(&mut wire, usize::MAX);
        assert!(wire.len() > 15 * 4096 && wire.len() < SCRATCH_MAX, "{}", wire.len());
        let (used, n) = p.b.receive_copy_reads(&wire);
        assert_eq!(used, wire.len());
        reads.push(n);
        assert_eq!(contents(&dst, 0, 15 * 4096), contents(&src, 0, 15 * 4096), "round {round}");
    }
    // A new connection takes its first 8 FPDUs for large ones (a read up to each next header,
    // two plans here where a socket's `readv` takes the payload and the lookahead together);
    // once its recent payloads were short, the whole stream comes in one read, copied.
    assert!(reads[0] <= 17, "{reads:?}");
    assert_eq!(reads[1], 1, "{reads:?}");
    let st = p.b.stats();
    assert_eq!(st.rx_direct_bytes, before.rx_direct_bytes);
    assert_eq!(st.rx_copied_bytes - before.rx_copied_bytes, 15 * 4096);
}

/// A stream of large FPDUs read in pieces of any size keeps going direct: a piece that ends
/// with a payload's short rest is followed by a read up to the next header, not by a bulk
/// read that would swallow the next payload (and leave its rest short again).
#[test]
fn large_payloads_go_direct_however_the_reads_end() {
    let mut p = Pair::loopback_mss();
    let size = 4 << 20;
    let src = p.mr(size, Access::empty());
    let dst = p.mr(size, Access::REMOTE_WRITE);
    pattern(&src, 1);
    p.a.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, size)])]).unwrap();
    let mut wire = Vec::new();
    p.a.transmit_copy(&mut wire, usize::MAX);
    // What a socket might hold at each read: 60,000 bytes (just under an FPDU) at a time.
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let k = rest.len().min(60_000);
        assert_eq!(p.b.receive_copy(&rest[..k]), k);
        rest = &rest[k..];
    }
    assert_eq!(contents(&dst, 0, size), contents(&src, 0, size));
    let st = p.b.stats();
    assert!(st.rx_direct_bytes > (size as u64) * 99 / 100, "{st:?}");
}

/// After large payloads (which make the read at the next header small, so that the payload
/// behind it can go direct), a short FPDU costs at most that small read and one bulk read: its
/// remainder is never read in `LOOKAHEAD`-sized pieces. Large payloads still go direct.
#[test]
fn short_payloads_after_large_ones_take_at_most_two_reads() {
    let mut p = Pair::loopback_mss();
    let src = p.mr(1 << 20, Access::empty());
    let dst = p.mr(1 << 20, Access::REMOTE_WRITE);
    pattern(&src, 9);
    // Per round: a 64 KiB Write (a full FPDU and a short one), then a 300-byte and a
    // DIRECT_MIN + 100-byte Write.
    let mut total_reads = 0;
    for round in 0..4u64 {
        let base = round * 128 * 1024;
        let wrs = vec![
            send_wr(1, SendOp::Write(remote(&dst, base)), vec![sge(&src, base as usize, 65536)]),
            send_wr(2, SendOp::Write(remote(&dst, base + 65536)), vec![sge(&src, base as usize + 65536, 300)]),
            send_wr(
                3,
                SendOp::Write(remote(&dst, base + 70000)),
                vec![sge(&src, base as usize + 70000, DIRECT_MIN + 100)],
            ),
        ];
        p.a.post_send(wrs).unwrap();
        let mut wire = Vec::new();
        p.a.transmit_copy(&mut wire, usize::MAX);
        let (used, reads) = p.b.receive_copy_reads(&wire);
        assert_eq!(used, wire.len());
        total_reads += reads;
    }
    // Per round at most: the 64 KiB payload (a read to its header, one direct), the short
    // FPDU, the 300-byte one and the last one, two reads each.
    assert!(total_reads <= 4 * 8, "{total_reads} reads");
    for round in 0..4usize {
        let base = round * 128 * 1024;
        for (off, len) in [(0, 65536), (65536, 300), (70000, DIRECT_MIN + 100)] {
            assert_eq!(contents(&dst, base + off, len), contents(&src, base + off, len), "round {round} at {off}");
        }
    }
    let st = p.b.stats();
    assert!(st.rx_direct_bytes >= 4 * 65000, "{st:?}");
}

#[test]
fn multi_sge_send_scatters_and_gathers() {
    let mut p = Pair::new();
    let s1 = p.mr(100, Access::empty());
    let s2 = p.mr(3000, Access::empty());
    pattern(&s1, 1);
    pattern(&s2, 2);
    let d1 = p.mr(50, Access::LOCAL_WRITE);
    let d2 = p.mr(5000, Access::LOCAL_WRITE);
    p.b.post_recv([recv_wr(1, vec![sge(&d1, 0, 50), sge(&d2, 10, 4000)])]).unwrap();
    p.a.post_send([send_wr(2, SendOp::Send, vec![sge(&s1, 0, 100), sge(&s2, 0, 3000)])]).unwrap();
    p.drive();
    let mut sent = contents(&s1, 0, 100);
    sent.extend(contents(&s2, 0, 3000));
    let mut got = contents(&d1, 0, 50);
    got.extend(contents(&d2, 10, 3050));
    assert_eq!(got, sent);
    assert_eq!(Pair::completions(&mut p.b)[0].byte_len, 3100);
}

#[test]
fn rdma_read_returns_peer_memory_in_order_within_ord() {
    let mut p = Pair::with(
        LinkParams { ord: 2, ..link(Startup::Initiator { rtr: None }) },
        LinkParams { ird: 2, ..link(Startup::Responder { rtr: None, send_first: false }) },
    );
    let src = p.mr(200_000, Access::REMOTE_READ);
    pattern(&src, 9);
    let sink = p.mr(200_000, Access::LOCAL_WRITE);
    let wrs: Vec<SendWqe> = (0..5u64)
        .map(|i| send_wr(i, SendOp::Read(remote(&src, i * 40_000)), vec![sge(&sink, (i * 40_000) as usize, 40_000)]))
        .collect();
    p.a.post_send(wrs).unwrap();
    p.drive();
    let c = Pair::completions(&mut p.a);
    assert_eq!(c.iter().map(|c| c.wr_id).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert!(c.iter().all(|c| c.status == WcStatus::Success && c.opcode == WcOpcode::RdmaRead && c.byte_len == 40_000));
    assert_eq!(contents(&sink, 0, 200_000), contents(&src, 0, 200_000));
}

#[test]
fn send_completions_wait_for_an_earlier_read() {
    let mut p = Pair::new();
    let src = p.mr(64, Access::REMOTE_READ);
    let sink = p.mr(64, Access::LOCAL_WRITE);
    let wsrc = p.mr(64, Access::empty());
    let wdst = p.mr(64, Access::REMOTE_WRITE);
    p.a.post_send([
        send_wr(1, SendOp::Read(remote(&src, 0)), vec![sge(&sink, 0, 64)]),
        send_wr(2, SendOp::Write(remote(&wdst, 0)), vec![sge(&wsrc, 0, 64)]),
    ])
    .unwrap();
    // Send the request and the Write, but do not deliver the response yet.
    let mut out = Vec::new();
    p.a.transmit_copy(&mut out, usize::MAX);
    assert!(Pair::completions(&mut p.a).is_empty(), "the Write must not complete before the Read");
    p.b.receive_copy(&out);
    p.drive();
    let ids: Vec<u64> = Pair::completions(&mut p.a).iter().map(|c| c.wr_id).collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn unsignaled_runs_complete_silently_and_free_their_slots() {
    let mut p = Pair::new();
    let src = p.mr(8, Access::empty());
    let dst = p.mr(8 * 1000, Access::REMOTE_WRITE);
    for round in 0..4u64 {
        let wrs: Vec<SendWqe> = (0..200u64)
            .map(|i| {
                let mut w = send_wr(round * 1000 + i, SendOp::Write(remote(&dst, i * 8)), vec![sge(&src, 0, 8)]);
                w.signaled = i == 199;
                w
            })
            .collect();
        p.a.post_send(wrs).unwrap();
        p.drive();
        let c = Pair::completions(&mut p.a);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].wr_id, round * 1000 + 199);
        assert_eq!(p.a.send_outstanding(), 0);
    }
}

#[test]
fn agreed_large_fpdus_ignore_the_mss_and_go_direct() {
    // Two copies of this stack that agreed to FPDUs larger than the MSS send a 256 KiB Write
    // in FPDUs of up to 64 KiB even after the MSS is reported as an Ethernet one, and the
    // receiver reads their payloads straight into place; without the agreement, FPDUs follow
    // the MSS and every payload is copied.
    for large in [true, false] {
        let mulpdu = if large { iwarp_wire::mpa::MAX_ULPDU } else { iwarp_wire::mpa::mulpdu(1448, false) };
        let mut p = Pair::with(
            LinkParams { mulpdu, large_fpdus: large, ..link(Startup::Initiator { rtr: None }) },
            LinkParams { mulpdu, large_fpdus: large, ..link(Startup::Responder { rtr: None, send_first: false }) },
        );
        p.a.handle_mss(1448);
        let src = p.mr(256 << 10, Access::empty());
        pattern(&src, 5);
        let dst = p.mr(256 << 10, Access::REMOTE_WRITE);
        p.a.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 256 << 10)])]).unwrap();
        p.drive();
        assert!(contents(&dst, 0, 256 << 10) == contents(&src, 0, 256 << 10), "large {large}");
        let (tx, rx) = (p.a.stats(), p.b.stats());
        if large {
            assert!(tx.tx_fpdus <= 5, "{} FPDUs for 256 KiB", tx.tx_fpdus);
            assert!(rx.rx_direct_bytes > rx.rx_copied_bytes * 10, "{rx:?}");
        } else {
            assert!(tx.tx_fpdus >= 180, "{} FPDUs for 256 KiB at MSS 1448", tx.tx_fpdus);
            assert!(rx.rx_direct_bytes * 10 < rx.rx_copied_bytes, "{rx:?}");
        }
    }
}

#[test]
fn small_writes_from_mixed_regions_keep_their_bytes_and_order() {
    // Runs of small requests from one region are framed under one view of it; a request from
    // another region, an inline one, a large one or a Read ends the run. Every byte lands
    // where its Write said and completions come in posting order.
    let mut p = Pair::new();
    let (a, b) = (p.mr(4096, Access::empty()), p.mr(4096, Access::empty()));
    pattern(&a, 1);
    pattern(&b, 2);
    let sink = p.mr(4096, Access::LOCAL_WRITE);
    let dst = p.mr(256 * 1024, Access::REMOTE_WRITE | Access::REMOTE_READ);
    pattern(&dst, 9);
    let mut wrs = Vec::new();
    let mut expect = Vec::new();
    for i in 0..40u64 {
        let (src, off, len) = match i % 8 {
            0..=3 => (&a, (i * 37 % 2000) as usize, 64),
            4 => (&b, (i * 11 % 2000) as usize, 100),
            5 => (&a, 0, 3000), // beyond the small-message size: a job of its own
            _ => (&a, (i * 13 % 2000) as usize, 1 + i as usize),
        };
        let at = i * 4096;
        wrs.push(send_wr(i, SendOp::Write(remote(&dst, at)), vec![sge(src, off, len)]));
        expect.push((at as usize, contents(src, off, len)));
    }
    let mut inline = send_wr(100, SendOp::Write(remote(&dst, 40 * 4096)), vec![]);
    inline.payload = Payload::Inline(SmallVec::from_slice(b"inline bytes"));
    wrs.insert(10, inline);
    expect.push((40 * 4096, b"inline bytes".to_vec()));
    wrs.insert(20, send_wr(101, SendOp::Read(remote(&dst, 0)), vec![sge(&sink, 0, 256)]));
    p.a.post_send(wrs).unwrap();
    p.drive();
    let ids: Vec<u64> = Pair::completions(&mut p.a).iter().map(|c| c.wr_id).collect();
    let mut want: Vec<u64> = (0..40).collect();
    want.insert(10, 100);
    want.insert(20, 101);
    assert_eq!(ids, want);
    for (at, bytes) in expect {
        assert!(contents(&dst, at, bytes.len()) == bytes, "Write at {at}");
    }
    assert_eq!(p.a.send_outstanding(), 0);
}

#[test]
fn queue_depth_and_post_errors_are_clear() {
    let mut p = Pair::new();
    let m = p.mr(64, Access::empty());
    let w = |i| send_wr(i, SendOp::Send, vec![sge(&m, 0, 1)]);
    p.a.post_send((0..256).map(w)).unwrap();
    assert_eq!(p.a.post_send([w(999)]), Err(PostError::QueueFull));
    let mut q = Pair::with(
        LinkParams { rfc7306: false, ..link(Startup::Initiator { rtr: None }) },
        link(Startup::Responder { rtr: None, send_first: false }),
    );
    let m = q.mr(64, Access::LOCAL_WRITE);
    let fa = send_wr(1, SendOp::FetchAdd { remote: remote(&m, 0), add: 1 }, vec![sge(&m, 0, 8)]);
    assert_eq!(q.a.post_send([fa]), Err(PostError::NotSupportedByPeer));
    assert_eq!(q.a.post_send([send_wr(1, SendOp::Send, vec![sge(&m, 60, 8)])]), Err(PostError::LocalProtection));
    let too_many: Vec<Sge> = (0..5).map(|_| sge(&m, 0, 1)).collect();
    assert_eq!(q.a.post_send([send_wr(1, SendOp::Send, too_many)]), Err(PostError::TooManySges));
    let ro = q.mr(64, Access::empty());
    assert_eq!(q.b.post_recv([recv_wr(1, vec![sge(&ro, 0, 8)])]), Err(PostError::LocalProtection));
    let inline = SendWqe {
        wr_id: 1,
        op: SendOp::Send,
        payload: Payload::Inline(smallvec::SmallVec::from_vec(vec![0; 257])),
        signaled: true,
        solicited: false,
        fence: false,
    };
    assert_eq!(q.a.post_send([inline]), Err(PostError::InlineTooLong));
}

/// RFC 7306 operations are exactly those that send an opcode the opcode table marks RFC 7306
/// (Write with Immediate: its Immediate Data), and only they are refused without RFC 7306.
#[test]
fn rfc7306_operations_are_those_that_send_rfc7306_opcodes() {
    let r = RemoteAddr::unbounded(Stag(0x100), 0);
    let ops = [
        (SendOp::Send, false),
        (SendOp::SendWithInvalidate(Stag(1)), false),
        (SendOp::Write(r), false),
        (SendOp::WriteWithImmediate(r, 1), true),
        (SendOp::Immediate(1), true),
        (SendOp::Read(r), false),
        (SendOp::FetchAdd { remote: r, add: 1 }, true),
        (SendOp::CompareSwap { remote: r, compare: 1, swap: 2 }, true),
        (SendOp::LocalInvalidate(Stag(1)), false),
    ];
    for (op, rfc7306) in ops {
        assert_eq!(op.is_rfc7306(), rfc7306, "{op:?}");
    }
}

#[test]
fn atomics_and_immediate_data() {
    let mut p = Pair::new();
    let target = p.mr(64, Access::REMOTE_ATOMIC);
    target.mem().write(8, &100u64.to_ne_bytes());
    let res = p.mr(16, Access::LOCAL_WRITE);
    let recv = p.mr(8, Access::LOCAL_WRITE);
    p.b.post_recv([recv_wr(50, vec![sge(&recv, 0, 8)])]).unwrap();
    p.a.post_send([
        send_wr(1, SendOp::FetchAdd { remote: remote(&target, 8), add: 5 }, vec![sge(&res, 0, 8)]),
        send_wr(2, SendOp::CompareSwap { remote: remote(&target, 8), compare: 105, swap: 7 }, vec![sge(&res, 8, 8)]),
        send_wr(3, SendOp::Immediate(0xdead_beef_0000_0001), vec![]),
    ])
    .unwrap();
    p.drive();
    let c = Pair::completions(&mut p.a);
    assert_eq!(
        c.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
        vec![(1, WcStatus::Success), (2, WcStatus::Success), (3, WcStatus::Success)]
    );
    assert_eq!(contents(&res, 0, 8), 100u64.to_ne_bytes());
    assert_eq!(contents(&res, 8, 8), 105u64.to_ne_bytes());
    assert_eq!(contents(&target, 8, 8), 7u64.to_ne_bytes());
    let r = Pair::completions(&mut p.b);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].opcode, r[0].imm_data), (WcOpcode::RecvImmediate, Some(0xdead_beef_0000_0001)));
}

#[test]
fn send_with_invalidate_invalidates_the_named_stag() {
    let mut p = Pair::new();
    let victim = p.mr(64, Access::REMOTE_WRITE);
    let src = p.mr(4, Access::empty());
    let dst = p.mr(4, Access::LOCAL_WRITE);
    p.b.post_recv([recv_wr(1, vec![sge(&dst, 0, 4)])]).unwrap();
    p.a.post_send([send_wr(2, SendOp::SendWithInvalidate(victim.stag()), vec![sge(&src, 0, 4)])]).unwrap();
    p.drive();
    let c = Pair::completions(&mut p.b);
    assert_eq!(c[0].invalidated_stag, Some(victim.stag()));
    assert!(!victim.is_valid());
}

#[test]
fn markers_and_crc_off_still_deliver() {
    for (crc, markers) in [(false, false), (true, true), (false, true)] {
        let mut a_link = link(Startup::Initiator { rtr: None });
        let mut b_link = link(Startup::Responder { rtr: None, send_first: false });
        a_link.crc = crc;
        b_link.crc = crc;
        a_link.send_markers = markers;
        b_link.recv_markers = markers;
        b_link.send_markers = markers;
        a_link.recv_markers = markers;
        let mut p = Pair::with(a_link, b_link);
        p.chunk = 700;
        let src = p.mr(10_000, Access::REMOTE_READ);
        let dst = p.mr(10_000, Access::REMOTE_WRITE | Access::LOCAL_WRITE);
        pattern(&src, 4);
        p.a.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 5000)])]).unwrap();
        p.drive();
        p.b.post_send([send_wr(2, SendOp::Read(remote(&src, 5000)), vec![sge(&dst, 5000, 5000)])]).unwrap();
        p.drive();
        assert_eq!(contents(&dst, 0, 10_000), contents(&src, 0, 10_000), "crc {crc} markers {markers}");
        assert_eq!(p.a.state(), QpState::Rts);
    }
}

#[test]
fn responder_sends_nothing_before_the_first_fpdu() {
    let mut p = Pair::new();
    let src = p.mr(4, Access::empty());
    let dst = p.mr(4, Access::REMOTE_WRITE);
    p.b.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 4)])]).unwrap();
    let mut out = Vec::new();
    assert_eq!(p.b.transmit_copy(&mut out, usize::MAX), 0);
    // The initiator's first FPDU unblocks it.
    p.a.post_send([send_wr(2, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 0)])]).unwrap();
    p.drive();
    assert_eq!(Pair::completions(&mut p.b).len(), 1);
}

#[test]
fn every_rtr_type_unblocks_the_responder() {
    for kind in [RtrType::Write, RtrType::Read, RtrType::Send] {
        let allowed =
            RtrTypes { send: kind == RtrType::Send, write: kind == RtrType::Write, read: kind == RtrType::Read };
        let mut p = Pair::with(
            link(Startup::Initiator { rtr: Some(kind) }),
            link(Startup::Responder { rtr: Some(allowed), send_first: false }),
        );
        assert!(!Pair::events(&mut p.b).contains(&QpEvent::Ready));
        p.drive();
        assert!(Pair::events(&mut p.b).contains(&QpEvent::Ready), "{kind:?}");
        // The RTR consumed no posted receive and left the MSNs in step.
        let src = p.mr(4, Access::empty());
        let dst = p.mr(4, Access::LOCAL_WRITE);
        p.b.post_recv([recv_wr(1, vec![sge(&dst, 0, 4)])]).unwrap();
        p.a.post_send([send_wr(1, SendOp::Send, vec![sge(&src, 0, 4)])]).unwrap();
        p.drive();
        assert_eq!(Pair::completions(&mut p.b).len(), 1, "{kind:?}");
        assert_eq!(p.a.state(), QpState::Rts);
        assert_eq!(p.b.state(), QpState::Rts);
    }
}

#[test]
fn wrong_rtr_is_terminated_with_mpa_code_7() {
    let mut p = Pair::with(
        link(Startup::Initiator { rtr: Some(RtrType::Write) }),
        link(Startup::Responder { rtr: Some(RtrTypes { send: false, write: false, read: true }), send_first: false }),
    );
    p.drive();
    assert_eq!(p.b.error_cause(), Some(TerminateCause::Mpa(Mpa::NoMatchingRtr)));
    assert!(matches!(Pair::events(&mut p.a).as_slice(), [.., QpEvent::RemoteTerminate { .. }, QpEvent::Flushed]));
}

/// A raw peer: frames FPDUs by hand and decodes what comes back.
struct RawPeer {
    framer: Framer,
    deframer: Deframer,
}

impl RawPeer {
    fn new() -> Self {
        RawPeer { framer: Framer::new(true, false), deframer: Deframer::new(DeframerConfig::default()) }
    }
    fn fpdu(&mut self, h: SegmentHeader, body: &[u8], payload: &[u8]) -> Vec<u8> {
        let (b, n) = h.to_bytes();
        let mut hdr = b[..n].to_vec();
        hdr.extend_from_slice(body);
        let mut out = Vec::new();
        self.framer.frame_to_vec(&hdr, &[payload], &mut out).unwrap();
        out
    }
    /// Every (header, payload) the engine sent.
    fn decode(&mut self, bytes: &[u8]) -> Vec<(SegmentHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut cur = None;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (n, ev) = self.deframer.feed(rest).unwrap();
            assert!(n > 0, "no progress");
            match ev {
                Event::Header(h) => cur = Some((h.segment().unwrap(), Vec::new())),
                Event::Payload(p) => cur.as_mut().unwrap().1.extend_from_slice(p),
                Event::End(_) => out.push(cur.take().unwrap()),
                Event::None => {}
            }
            rest = &rest[n..];
        }
        out
    }
}

/// Feeds `bytes` from a raw peer to a fresh responder; returns it and the Terminate it sent.
fn provoke(
    setup: impl FnOnce(&mut Pair),
    bytes: impl FnOnce(&mut RawPeer, &Pair) -> Vec<u8>,
) -> (Pair, TerminateCause, Vec<u8>) {
    let mut p = Pair::new();
    setup(&mut p);
    let mut peer = RawPeer::new();
    let input = bytes(&mut peer, &p);
    let (cause, body) = terminate_for(&mut p.b, &mut peer, &input);
    (p, cause, body)
}

/// Feeds `input` to `qp`; returns the cause (read in the RFC 5040 layout) and body of the
/// Terminate it sends back as its last FPDU (QN 2, MSN 1), after which it is in
/// [`QpState::Error`].
fn terminate_for(qp: &mut Qp, peer: &mut RawPeer, input: &[u8]) -> (TerminateCause, Vec<u8>) {
    qp.receive_copy(input);
    let mut out = Vec::new();
    qp.transmit_copy(&mut out, usize::MAX);
    let frames = peer.decode(&out);
    let (h, body) = frames.last().expect("a Terminate").clone();
    assert_eq!(h.opcode, Opcode::Terminate);
    assert_eq!(h.placement, iwarp_wire::Placement::Untagged { qn: iwarp_wire::QueueNumber(2), msn: Msn(1), mo: 0 });
    let m = TerminateMessage::parse(&body).unwrap();
    // Some short bodies (e.g. 20 07 00 00) also read as Linux siw's layout; the RFC one is taken.
    assert!(matches!(m.layout, TerminateLayout::Rfc5040 | TerminateLayout::Ambiguous), "{body:02x?}");
    assert_eq!(qp.state(), QpState::Error, "the Terminate drained");
    (m.rfc.cause, body)
}

fn write_hdr(stag: Stag, to: u64) -> SegmentHeader {
    SegmentHeader::tagged(Opcode::Write, true, stag, TaggedOffset(to))
}

#[test]
fn send_without_posted_receive_terminates_with_ddp_untagged_no_buffer() {
    let (mut p, cause, body) =
        provoke(|_| {}, |peer, _| peer.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], b"hi"));
    assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer));
    // M and D set, segment length = ULPDU length (18 + 2), the untagged header copied.
    assert_eq!(&body[..6], &[0x12, 0x02, 0xC0, 0x00, 0x00, 20]);
    assert_eq!(body.len(), 4 + 2 + 18);
    assert!(Pair::events(&mut p.b).contains(&QpEvent::LocalError(cause)));
}

#[test]
fn send_longer_than_the_buffer_terminates_with_too_long_and_local_length_error() {
    let (mut p, cause, _) = provoke(
        |p| {
            let d = p.mr(4, Access::LOCAL_WRITE);
            p.b.post_recv([recv_wr(77, vec![sge(&d, 0, 4)])]).unwrap();
        },
        |peer, _| peer.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], b"too long"),
    );
    assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::TooLong));
    let c = Pair::completions(&mut p.b);
    assert_eq!((c[0].wr_id, c[0].status), (77, WcStatus::LocalLength));
}

#[test]
fn wrong_msn_and_qn_terminate_with_their_codes() {
    let (_, cause, _) = provoke(
        |p| {
            let d = p.mr(4, Access::LOCAL_WRITE);
            p.b.post_recv([recv_wr(1, vec![sge(&d, 0, 4)])]).unwrap();
        },
        |peer, _| peer.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(5), 0), &[], b"x"),
    );
    assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange));
    let (_, cause, _) = provoke(
        |_| {},
        |peer, _| {
            let mut h = SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0);
            h.placement = iwarp_wire::Placement::Untagged { qn: iwarp_wire::QueueNumber(9), msn: Msn(1), mo: 0 };
            peer.fpdu(h, &[], b"x")
        },
    );
    assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidQn));
}

#[test]
fn tagged_violations_terminate_with_ddp_and_rdmap_codes() {
    // Unknown STag.
    let (_, cause, body) = provoke(|_| {}, |peer, _| peer.fpdu(write_hdr(Stag(0x1234_5600), 0), &[], b"data"));
    assert_eq!(cause, TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag));
    assert_eq!(body.len(), 4 + 2 + 14, "tagged header copied");
    // Another protection domain.
    let (_, cause, _) = provoke(
        |_| {},
        |peer, p| {
            let other = p.stags.new_pd();
            let m = p.stags.register(RawMem::alloc(64, false).unwrap(), other, Access::REMOTE_WRITE, 0).unwrap();
            peer.fpdu(write_hdr(m.stag(), 0), &[], b"data")
        },
    );
    assert_eq!(cause, TerminateCause::TaggedBuffer(TaggedBuffer::StagNotAssociated));
    // Access rights: remote read only.
    let (_, cause, _) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_READ);
            peer.fpdu(write_hdr(m.stag(), m.base()), &[], b"data")
        },
    );
    assert_eq!(cause, TerminateCause::RemoteProtection(RemoteProtection::AccessRights));
    // Bounds.
    let (_, cause, _) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_WRITE);
            peer.fpdu(write_hdr(m.stag(), m.base() + 62), &[], b"data")
        },
    );
    assert_eq!(cause, TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds));
}

#[test]
fn bad_read_request_terminates_with_remote_protection_and_copies_the_read_header() {
    let (_, cause, body) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_WRITE);
            let rr = ReadRequest {
                sink_stag: Stag(0x100),
                sink_to: TaggedOffset(0),
                size: 8,
                src_stag: m.stag(),
                src_to: TaggedOffset(m.base()),
            };
            peer.fpdu(SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0), &rr.to_bytes(), &[])
        },
    );
    assert_eq!(cause, TerminateCause::RemoteProtection(RemoteProtection::AccessRights));
    // M, D and R: control, length, untagged header, Read Request header.
    assert_eq!(body[2], 0xE0);
    assert_eq!(body.len(), 4 + 2 + 18 + 28);
}

#[test]
fn read_beyond_ird_terminates_with_remote_operation_code_7() {
    let (_, cause, _) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_READ);
            let mut bytes = Vec::new();
            for i in 0..9 {
                let rr = ReadRequest {
                    sink_stag: Stag(0x100),
                    sink_to: TaggedOffset(0),
                    size: 8,
                    src_stag: m.stag(),
                    src_to: TaggedOffset(m.base()),
                };
                bytes.extend(peer.fpdu(
                    SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1 + i), 0),
                    &rr.to_bytes(),
                    &[],
                ));
            }
            bytes
        },
    );
    assert_eq!(cause, TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream));
}

#[test]
fn bad_crc_unknown_opcode_and_unsupported_rfc7306_terminate() {
    let (_, cause, body) = provoke(
        |_| {},
        |peer, _| {
            let mut b = peer.fpdu(write_hdr(Stag(1), 0), &[], &[]);
            let last = b.len() - 1;
            b[last] ^= 0xff;
            b
        },
    );
    assert_eq!(cause, TerminateCause::Mpa(Mpa::Crc));
    assert_eq!(body, [0x20, 0x02, 0x00, 0x00], "LLP errors carry no headers");
    let (_, cause, _) = provoke(
        |_| {},
        |peer, _| {
            let mut b = peer.fpdu(write_hdr(Stag(1), 0), &[], &[]);
            // Rewrite the opcode to reserved 0xC and fix the CRC.
            b[3] = 0x4C;
            let n = b.len() - 4;
            let crc = iwarp_wire::crc::crc32c(&b[..n]);
            b[n..].copy_from_slice(&iwarp_wire::crc::to_wire(crc));
            b
        },
    );
    assert_eq!(cause, TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode));
    // RFC 7306 not negotiated on this side.
    let mut p = Pair::with(
        link(Startup::Initiator { rtr: None }),
        LinkParams { rfc7306: false, ..link(Startup::Responder { rtr: None, send_first: false }) },
    );
    let mut peer = RawPeer::new();
    let d = p.mr(8, Access::LOCAL_WRITE);
    p.b.post_recv([recv_wr(1, vec![sge(&d, 0, 8)])]).unwrap();
    p.b.receive_copy(&peer.fpdu(
        SegmentHeader::untagged(Opcode::ImmediateData, true, Msn(1), 0),
        &[],
        &7u64.to_be_bytes(),
    ));
    assert_eq!(p.b.error_cause(), Some(TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode)));
}

#[test]
fn terminate_flushes_both_sides_in_order() {
    let mut p = Pair::new();
    let src = p.mr(64, Access::empty());
    let sink = p.mr(64, Access::LOCAL_WRITE);
    let d = p.mr(64, Access::LOCAL_WRITE);
    p.a.post_recv([recv_wr(100, vec![sge(&d, 0, 64)]), recv_wr(101, vec![sge(&d, 0, 64)])]).unwrap();
    // A Read of an STag the peer never registered, then two more requests.
    p.a.post_send([
        send_wr(1, SendOp::Read(RemoteAddr::unbounded(Stag(0x4242_4200), 0)), vec![sge(&sink, 0, 8)]),
        send_wr(2, SendOp::Send, vec![sge(&src, 0, 8)]),
        send_wr(3, SendOp::Send, vec![sge(&src, 0, 8)]),
    ])
    .unwrap();
    p.drive();
    let c = Pair::completions(&mut p.a);
    let got: Vec<(u64, WcStatus)> = c.iter().map(|c| (c.wr_id, c.status)).collect();
    // The Read gets the remote access status; the Sends were handed to TCP before the
    // Terminate came back, so they completed successfully; the receives are flushed.
    assert_eq!(got[0], (1, WcStatus::RemoteAccess));
    assert!(got.contains(&(100, WcStatus::WrFlush)) && got.contains(&(101, WcStatus::WrFlush)));
    assert_eq!(p.a.state(), QpState::Error);
    assert_eq!(p.b.state(), QpState::Error);
    assert_eq!(p.a.post_send([send_wr(9, SendOp::Send, vec![])]), Err(PostError::InvalidState(QpState::Error)));
}

#[test]
fn disconnect_flushes_and_peer_sees_a_clean_close() {
    let mut p = Pair::new();
    let d = p.mr(64, Access::LOCAL_WRITE);
    p.b.post_recv([recv_wr(5, vec![sge(&d, 0, 64)])]).unwrap();
    p.a.disconnect();
    assert_eq!(p.a.state(), QpState::Error);
    assert!(p.a.wants_shutdown());
    p.b.handle_transport(TransportEvent::Eof);
    assert_eq!(p.b.state(), QpState::Error);
    let c = Pair::completions(&mut p.b);
    assert_eq!((c[0].wr_id, c[0].status), (5, WcStatus::WrFlush));
    assert!(Pair::events(&mut p.b).contains(&QpEvent::PeerClosed));
}

#[test]
fn disconnecting_a_queue_pair_never_connected_flushes_its_receives() {
    let stags = Arc::new(StagTable::new(7));
    let pd = stags.new_pd();
    let mut qp = Qp::new(cfg(3, pd), Arc::clone(&stags), None);
    let d = stags.register(RawMem::alloc(64, false).unwrap(), pd, Access::LOCAL_WRITE, 0x10_0000).unwrap();
    qp.post_recv([recv_wr(5, vec![sge(&d, 0, 32)]), recv_wr(6, vec![sge(&d, 32, 32)])]).unwrap();
    // Sends wait for the connection: none can be posted yet.
    assert_eq!(
        qp.post_send([send_wr(7, SendOp::Send, vec![sge(&d, 0, 8)])]),
        Err(PostError::InvalidState(QpState::Idle))
    );
    assert_eq!(qp.state(), QpState::Idle);
    qp.disconnect();
    assert_eq!(qp.state(), QpState::Error);
    let got: Vec<(u64, WcStatus, WcOpcode)> =
        Pair::completions(&mut qp).iter().map(|c| (c.wr_id, c.status, c.opcode)).collect();
    assert_eq!(got, [(5, WcStatus::WrFlush, WcOpcode::Recv), (6, WcStatus::WrFlush, WcOpcode::Recv),]);
    assert!(Pair::events(&mut qp).contains(&QpEvent::Flushed));
    assert_eq!((qp.recv_queued(), qp.send_outstanding()), (0, 0));
    assert_eq!(qp.post_recv([recv_wr(8, vec![sge(&d, 0, 8)])]), Err(PostError::InvalidState(QpState::Error)));
    // A second disconnect has nothing left to do.
    qp.disconnect();
    assert!(Pair::completions(&mut qp).is_empty());
}

#[test]
fn eof_inside_an_fpdu_is_a_transport_error() {
    let mut p = Pair::new();
    let mut peer = RawPeer::new();
    let b = peer.fpdu(write_hdr(Stag(1), 0), &[], &[]);
    p.b.receive_copy(&b[..5]);
    p.b.handle_transport(TransportEvent::Eof);
    assert!(Pair::events(&mut p.b).contains(&QpEvent::TransportError));
}

#[test]
fn disconnect_flushes_unstarted_work_after_framed_work_still_unsent() {
    let mut p = Pair::new();
    let src = p.mr(64, Access::empty());
    p.a.post_send([send_wr(1, SendOp::Send, vec![sge(&src, 0, 8)]), send_wr(2, SendOp::Send, vec![sge(&src, 0, 8)])])
        .unwrap();
    // Both are framed, neither handed to TCP yet.
    let mut ranges = Vec::new();
    assert!(p.a.poll_transmit(&mut ranges, usize::MAX) > 0);
    p.a.post_send([send_wr(3, SendOp::Send, vec![sge(&src, 0, 8)])]).unwrap();
    p.a.disconnect();
    assert!(Pair::completions(&mut p.a).is_empty(), "nothing may complete ahead of 1 and 2");
    let mut out = Vec::new();
    p.a.transmit_copy(&mut out, usize::MAX);
    let got: Vec<(u64, WcStatus)> = Pair::completions(&mut p.a).iter().map(|c| (c.wr_id, c.status)).collect();
    assert_eq!(got, [(1, WcStatus::Success), (2, WcStatus::Success), (3, WcStatus::WrFlush)]);
    assert_eq!(p.a.state(), QpState::Error);
    assert_eq!(p.a.send_outstanding(), 0);
}

#[test]
fn ird_and_ord_of_zero_allow_no_reads() {
    // ORD 0: posting a Read or an atomic fails at once.
    let mut p = Pair::with(
        LinkParams { ord: 0, ..link(Startup::Initiator { rtr: None }) },
        link(Startup::Responder { rtr: None, send_first: false }),
    );
    let m = p.mr(64, Access::LOCAL_WRITE | Access::REMOTE_READ);
    let rd = send_wr(1, SendOp::Read(remote(&m, 0)), vec![sge(&m, 0, 8)]);
    assert_eq!(p.a.post_send([rd]), Err(PostError::NoReadCredits));
    // IRD 0: an inbound Read Request is beyond IRD.
    let (_, cause, _) = {
        let mut q = Pair::with(
            link(Startup::Initiator { rtr: None }),
            LinkParams { ird: 0, ..link(Startup::Responder { rtr: None, send_first: false }) },
        );
        let src = q.mr(64, Access::REMOTE_READ);
        let mut peer = RawPeer::new();
        let rr = ReadRequest {
            sink_stag: Stag(0x100),
            sink_to: TaggedOffset(0),
            size: 8,
            src_stag: src.stag(),
            src_to: TaggedOffset(src.base()),
        };
        q.b.receive_copy(&peer.fpdu(
            SegmentHeader::untagged(Opcode::ReadRequest, true, Msn(1), 0),
            &rr.to_bytes(),
            &[],
        ));
        let mut out = Vec::new();
        q.b.transmit_copy(&mut out, usize::MAX);
        let (h, body) = peer.decode(&out).last().cloned().unwrap();
        assert_eq!(h.opcode, Opcode::Terminate);
        (q, TerminateMessage::parse(&body).unwrap().rfc.cause, body)
    };
    assert_eq!(cause, TerminateCause::RemoteOperation(RemoteOperation::CatastrophicStream));
}

#[test]
fn a_silent_responder_is_woken_by_zero_length_writes_until_it_speaks() {
    use std::time::{Duration, Instant};
    let mut p = Pair::new();
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    p.a.wake_silent_peer(ms(50), 3);
    // Nothing has gone out yet: no clock.
    assert!(!p.a.handle_timeout(t0));
    assert_eq!(p.a.poll_timeout(), None);
    // The initiator's first message goes out; the responder has no receive posted, so the
    // test moves bytes one way only and the responder stays silent.
    let src = p.mr(64, Access::LOCAL_WRITE);
    let dst = p.mr(64, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
    p.a.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 64)])]).unwrap();
    let mut wire = Vec::new();
    p.a.transmit_copy(&mut wire, usize::MAX);
    assert!(!p.a.handle_timeout(t0));
    assert_eq!(p.a.poll_timeout(), Some(t0 + ms(50)));
    assert!(!p.a.handle_timeout(t0 + ms(49)));
    assert_eq!(p.a.transmit_copy(&mut wire, usize::MAX), 0, "not yet due");
    assert!(p.a.handle_timeout(t0 + ms(50)), "a wake-up is queued");
    let n = p.a.transmit_copy(&mut wire, usize::MAX);
    // A zero-length tagged FPDU: 2 + 14 + 4 bytes.
    assert_eq!(n, 20);
    assert_eq!(p.a.poll_timeout(), Some(t0 + ms(150)), "the gap doubles");
    // The responder takes the Write and the wake-up without complaint or completion.
    assert_eq!(p.b.receive_copy(&wire), wire.len());
    assert!(Pair::events(&mut p.b).iter().all(|e| matches!(e, QpEvent::Ready)));
    assert!(Pair::completions(&mut p.b).is_empty());
    assert_eq!(p.b.stats().rx_fpdus, 2);
    // Once the responder has sent an FPDU, the initiator stops.
    p.b.post_send([send_wr(2, SendOp::Write(remote(&src, 0)), vec![sge(&dst, 0, 8)])]).unwrap();
    p.drive();
    assert!(!p.a.handle_timeout(t0 + ms(150)));
    assert_eq!(p.a.poll_timeout(), None);
    assert!(!p.a.poll_interest().timer);
    assert_eq!(p.a.stats().wake_writes, 1);
}

#[test]
fn wake_ups_stop_after_the_count() {
    use std::time::{Duration, Instant};
    let mut p = Pair::new();
    let t0 = Instant::now();
    p.a.wake_silent_peer(Duration::from_millis(10), 2);
    let src = p.mr(8, Access::LOCAL_WRITE);
    let dst = p.mr(8, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
    p.a.post_send([send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 8)])]).unwrap();
    let mut wire = Vec::new();
    p.a.transmit_copy(&mut wire, usize::MAX);
    let mut t = t0;
    for _ in 0..10 {
        p.a.handle_timeout(t);
        p.a.transmit_copy(&mut wire, usize::MAX);
        t += Duration::from_secs(1);
    }
    assert_eq!(p.a.stats().wake_writes, 2);
    assert!(!p.a.poll_interest().timer);
}

/// The idle fast path of one small request: framed into `wire` at once and reported as all
/// sent; returns its completion.
fn send_now(qp: &mut Qp, w: &SendWqe, wire: &mut Vec<u8>) -> Option<Completion> {
    let mut buf = Vec::new();
    let f = qp.frame_now(w, &mut buf).unwrap().expect("idle and small: qualifies");
    wire.extend_from_slice(&buf);
    qp.sent_now(f, &buf, buf.len())
}

/// `frame_now` puts on the wire what the queued path does (headers, MSNs, CRC, markers) and
/// completes the same requests with the same results, and the peer takes the bytes.
#[test]
fn frame_now_sends_the_bytes_the_queued_path_sends() {
    for (crc, markers) in [(true, false), (false, false), (true, true)] {
        let mk = || {
            let mut a_link = link(Startup::Initiator { rtr: None });
            let mut b_link = link(Startup::Responder { rtr: None, send_first: false });
            (a_link.crc, b_link.crc) = (crc, crc);
            (a_link.send_markers, b_link.recv_markers) = (markers, markers);
            let mut p = Pair::with(a_link, b_link);
            // The established event, delivered (an undelivered one keeps the fast path off).
            Pair::events(&mut p.a);
            p
        };
        let (mut fast, mut queued) = (mk(), mk());
        let mut wire = (Vec::new(), Vec::new());
        let mut done = (Vec::new(), Vec::new());
        let mut regions = Vec::new();
        for (k, p) in [&mut fast, &mut queued].into_iter().enumerate() {
            let src = p.mr(4096, Access::empty());
            pattern(&src, 9);
            let dst = p.mr(4096, Access::REMOTE_WRITE | Access::LOCAL_WRITE);
            let victim = p.mr(64, Access::REMOTE_WRITE);
            for i in 0..4 {
                p.b.post_recv([recv_wr(100 + i, vec![sge(&dst, 1024 * i as usize, 1024)])]).unwrap();
            }
            let mut unsignaled = send_wr(5, SendOp::Write(remote(&dst, 3000)), vec![sge(&src, 7, 8)]);
            unsignaled.signaled = false;
            let wrs = vec![
                send_wr(1, SendOp::Write(remote(&dst, 2048)), vec![sge(&src, 0, 8)]),
                send_wr(2, SendOp::Send, vec![sge(&src, 100, 333)]),
                send_wr(3, SendOp::Send, vec![sge(&src, 0, 10), sge(&src, 50, 21)]),
                SendWqe {
                    wr_id: 4,
                    op: SendOp::Send,
                    payload: Payload::Inline(smallvec::SmallVec::from_slice(b"inline bytes")),
                    signaled: true,
                    solicited: true,
                    fence: false,
                },
                unsignaled,
                send_wr(6, SendOp::SendWithInvalidate(victim.stag()), vec![sge(&src, 0, 0)]),
                send_wr(7, SendOp::Write(remote(&dst, 4000)), vec![]),
            ];
            for w in wrs {
                if k == 0 {
                    done.0.extend(send_now(&mut p.a, &w, &mut wire.0));
                    assert!(!p.a.has_unsent());
                } else {
                    p.a.post_send([w]).unwrap();
                    p.a.transmit_copy(&mut wire.1, usize::MAX);
                    done.1.extend(Pair::completions(&mut p.a));
                }
            }
            assert_eq!(p.a.send_outstanding(), 0);
            regions.push((dst, victim));
        }
        assert_eq!(wire.0, wire.1, "crc {crc} markers {markers}");
        assert_eq!(done.0, done.1);
        assert_eq!(done.0.iter().map(|c| c.wr_id).collect::<Vec<_>>(), vec![1, 2, 3, 4, 6, 7]);
        assert_eq!(fast.a.stats(), queued.a.stats());
        // The peer takes the fast path's bytes as the queued path's.
        assert_eq!(fast.b.receive_copy(&wire.0), wire.0.len());
        assert_eq!(queued.b.receive_copy(&wire.1), wire.1.len());
        let recvd = (Pair::completions(&mut fast.b), Pair::completions(&mut queued.b));
        assert_eq!(recvd.0, recvd.1);
        assert_eq!(recvd.0.len(), 4);
        assert!(recvd.0.iter().all(|c| c.status == WcStatus::Success));
        assert_eq!(contents(&regions[0].0, 0, 4096), contents(&regions[1].0, 0, 4096));
        assert!(!regions[0].1.is_valid(), "Send with Invalidate took effect");
        assert_eq!(fast.b.state(), QpState::Rts);
    }
}

/// `frame_now` leaves to the queued path whatever is not one small Send or Write on an idle
/// queue pair, touching nothing; and it rejects an invalid request as `post_send` does.
#[test]
fn frame_now_declines_busy_queue_pairs_and_other_requests() {
    let mut p = Pair::new();
    // An event not yet delivered: not idle.
    assert!(p.a.has_output());
    let small = send_wr(1, SendOp::Send, vec![]);
    assert!(p.a.frame_now(&small, &mut Vec::new()).unwrap().is_none());
    Pair::events(&mut p.a);
    let src = p.mr(8192, Access::empty());
    let sink = p.mr(64, Access::LOCAL_WRITE | Access::REMOTE_READ);
    let dst = p.mr(8192, Access::REMOTE_WRITE);
    let mut buf = Vec::new();
    let write = |len| send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, len)]);
    // Not small: more than the copy limit, or more than one FPDU.
    assert!(p.a.frame_now(&write(4096), &mut buf).unwrap().is_none());
    // Not a Send or Write.
    let read = send_wr(2, SendOp::Read(remote(&sink, 0)), vec![sge(&sink, 0, 8)]);
    assert!(p.a.frame_now(&read, &mut buf).unwrap().is_none());
    let fa = send_wr(2, SendOp::FetchAdd { remote: remote(&sink, 0), add: 1 }, vec![sge(&sink, 0, 8)]);
    assert!(p.a.frame_now(&fa, &mut buf).unwrap().is_none());
    // Invalid: the error post_send gives, and nothing queued or framed.
    let bad = send_wr(3, SendOp::Send, vec![sge(&src, 8190, 8)]);
    assert_eq!(p.a.frame_now(&bad, &mut buf).map(|f| f.is_some()), Err(PostError::LocalProtection));
    assert_eq!(p.a.send_outstanding(), 0);
    assert!(!p.a.has_unsent());
    // Busy: a Read outstanding (its completion must come first)...
    p.a.post_send([read]).unwrap();
    assert!(p.a.frame_now(&write(8), &mut buf).unwrap().is_none());
    p.drive();
    assert_eq!(Pair::completions(&mut p.a).len(), 1);
    // ... or framed bytes the socket has not taken ...
    p.a.post_send([write(8192)]).unwrap();
    p.a.transmit_copy(&mut p.ab, 100);
    assert!(p.a.has_unsent());
    assert!(p.a.frame_now(&write(8), &mut buf).unwrap().is_none());
    p.drive();
    // ... or a completion not yet delivered.
    assert!(p.a.has_output());
    assert!(p.a.frame_now(&write(8), &mut buf).unwrap().is_none());
    Pair::completions(&mut p.a);
    assert!(p
        .a
        .frame_now(&write(8), &mut buf)
        .unwrap()
        .is_some_and(|f| { p.a.sent_now(f, &buf, buf.len()).is_some() }));
    // A responder that has not heard from its peer sends nothing, fast or not.
    assert!(p.b.frame_now(&write(8), &mut buf).unwrap().is_none());
}

/// An initiator's wake-ups of a silent responder and the fast path: its first FPDU may take
/// the fast path and starts the wake-up clock as any other; a due wake-up (a zero-length
/// Write) goes first, the fast path waiting behind it.
#[test]
fn the_fast_path_starts_the_wake_up_clock_and_waits_for_a_due_wake_up() {
    use std::time::{Duration, Instant};
    let mut p = Pair::new();
    Pair::events(&mut p.a);
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    p.a.wake_silent_peer(ms(50), 3);
    let src = p.mr(8, Access::empty());
    let dst = p.mr(64, Access::REMOTE_WRITE);
    let w = send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 8)]);
    let mut wire = Vec::new();
    assert!(send_now(&mut p.a, &w, &mut wire).is_some());
    assert!(!p.a.handle_timeout(t0));
    assert_eq!(p.a.poll_timeout(), Some(t0 + ms(50)), "the clock started");
    assert!(p.a.handle_timeout(t0 + ms(50)), "a wake-up is due");
    assert!(p.a.frame_now(&w, &mut Vec::new()).unwrap().is_none(), "the wake-up goes first");
    assert_eq!(p.a.transmit_copy(&mut wire, usize::MAX), 20, "a zero-length Write");
    assert!(send_now(&mut p.a, &w, &mut wire).is_some());
    assert_eq!(p.b.receive_copy(&wire), wire.len());
    assert_eq!(p.b.stats().rx_fpdus, 3);
    assert_eq!(p.a.stats().wake_writes, 1);
}

/// A fast-path FPDU the socket took only part of: the rest is sent as framed bytes are, the
/// request completes once it is, and later requests queue behind it in order.
#[test]
fn a_partly_written_fast_fpdu_completes_when_its_rest_is_sent() {
    for taken in [0usize, 1, 17] {
        let mut p = Pair::new();
        Pair::events(&mut p.a);
        let src = p.mr(64, Access::empty());
        pattern(&src, 1);
        let dst = p.mr(64, Access::REMOTE_WRITE);
        let mut buf = Vec::new();
        let w = send_wr(1, SendOp::Write(remote(&dst, 0)), vec![sge(&src, 0, 40)]);
        let f = p.a.frame_now(&w, &mut buf).unwrap().unwrap();
        p.ab.extend_from_slice(&buf[..taken]);
        assert_eq!(p.a.sent_now(f, &buf, taken), None, "not complete until all is sent");
        assert!(p.a.has_unsent());
        assert_eq!(p.a.send_outstanding(), 1);
        let w2 = send_wr(2, SendOp::Write(remote(&dst, 40)), vec![sge(&src, 40, 24)]);
        assert!(p.a.frame_now(&w2, &mut buf).unwrap().is_none(), "queued behind the rest");
        p.a.post_send([w2]).unwrap();
        p.drive();
        let c = Pair::completions(&mut p.a);
        assert_eq!(
            c.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
            vec![(1, WcStatus::Success), (2, WcStatus::Success)]
        );
        assert_eq!(contents(&dst, 0, 64), contents(&src, 0, 64), "taken {taken}");
        assert_eq!(p.b.state(), QpState::Rts);
    }
}

// Every receive check that rejects peer input, one case at a time: the Terminate's control
// word is spelled out as bytes from RFC 5040 §4.8 / RFC 5041 §7.2 / RFC 5044 §8 (independent
// of the emitter), with the offending segment's length and DDP header after it where Figure 10
// copies them.

/// Layer and EType (first byte of the Terminate control word).
const DDP_TAGGED: u8 = 0x11;
const DDP_UNTAGGED: u8 = 0x12;
const RDMAP_REMOTE_OP: u8 = 0x02;
const LLP_MPA: u8 = 0x20;

/// The Terminate body for an error in the segment `h` with `rest` bytes after its DDP header:
/// Layer/EType, Error Code, M and D set, the segment length, the DDP header as sent.
fn copied(layer_etype: u8, code: u8, h: SegmentHeader, rest: usize) -> Vec<u8> {
    let (b, n) = h.to_bytes();
    let mut v = vec![layer_etype, code, 0xC0, 0x00];
    v.extend_from_slice(&((n + rest) as u16).to_be_bytes());
    v.extend_from_slice(&b[..n]);
    v
}

fn untagged(opcode: Opcode, last: bool, msn: u32, mo: u32) -> SegmentHeader {
    SegmentHeader::untagged(opcode, last, Msn(msn), mo)
}

/// A responder with one 64-byte receive posted (wr_id 77) and a raw peer's `input`: the
/// Terminate body and what completed.
fn provoke_with_recv(input: impl FnOnce(&mut RawPeer, &Pair) -> Vec<u8>) -> (Vec<u8>, Vec<Completion>, MrRef) {
    let mut d = None;
    let (mut p, _, body) = provoke(
        |p| {
            let m = p.mr(64, Access::LOCAL_WRITE);
            p.b.post_recv([recv_wr(77, vec![sge(&m, 0, 64)])]).unwrap();
            d = Some(m);
        },
        input,
    );
    let c = Pair::completions(&mut p.b);
    (body, c, d.unwrap())
}

/// RFC 5041 §5.3/§7.2: every segment of an untagged message repeats its MSN, and each starts
/// where the one before it ended; the first starts at MO 0. A segment breaking that is an
/// untagged-buffer error naming that segment; the receive being filled completes in error.
#[test]
fn send_segments_must_continue_their_message() {
    // A second segment with the next message's MSN: invalid MSN range (1/2/3).
    let h2 = untagged(Opcode::Send, true, 2, 10);
    let (body, c, d) = provoke_with_recv(|peer, _| {
        let mut b = peer.fpdu(untagged(Opcode::Send, false, 1, 0), &[], &[1; 10]);
        b.extend(peer.fpdu(h2, &[], &[2; 10]));
        b
    });
    assert_eq!(body, copied(DDP_UNTAGGED, 0x03, h2, 10));
    let c: Vec<_> = c.iter().map(|c| (c.wr_id, c.status, c.cause)).collect();
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::MsnRange);
    assert_eq!(c, [(77, WcStatus::LocalQpOperation, Some(cause))]);
    assert_eq!(contents(&d, 0, 20), [[1; 10], [0; 10]].concat(), "the second segment was not placed");

    // A second segment that skips 2 bytes: invalid MO (1/2/4).
    let h2 = untagged(Opcode::Send, true, 1, 12);
    let (body, c, d) = provoke_with_recv(|peer, _| {
        let mut b = peer.fpdu(untagged(Opcode::Send, false, 1, 0), &[], &[1; 10]);
        b.extend(peer.fpdu(h2, &[], &[2; 10]));
        b
    });
    assert_eq!(body, copied(DDP_UNTAGGED, 0x04, h2, 10));
    assert_eq!((c[0].wr_id, c[0].status), (77, WcStatus::LocalQpOperation));
    assert_eq!(contents(&d, 0, 24), [&[1; 10][..], &[0; 14]].concat());

    // A message that starts at MO 4: invalid MO.
    let h = untagged(Opcode::Send, true, 1, 4);
    let (body, c, d) = provoke_with_recv(|peer, _| peer.fpdu(h, &[], &[3; 6]));
    assert_eq!(body, copied(DDP_UNTAGGED, 0x04, h, 6));
    assert!(c.iter().all(|c| c.status == WcStatus::WrFlush), "{c:?}");
    assert_eq!(contents(&d, 0, 10), [0; 10]);
}

/// RFC 7306 §4: Immediate Data is one untagged segment on queue 0 (its MSN space), exactly 8
/// bytes, consuming a receive.
#[test]
fn immediate_data_must_be_one_whole_message_in_sequence() {
    let imm = 9u64.to_be_bytes();
    // MSN 2 where 1 is next, and MSN 1 while a Send with MSN 1 is still arriving: MSN range.
    let h = untagged(Opcode::ImmediateData, true, 2, 0);
    let (body, _, _) = provoke_with_recv(|peer, _| peer.fpdu(h, &[], &imm));
    assert_eq!(body, copied(DDP_UNTAGGED, 0x03, h, 8));
    let h = untagged(Opcode::ImmediateData, true, 1, 0);
    let (body, c, _) = provoke_with_recv(|peer, _| {
        let mut b = peer.fpdu(untagged(Opcode::Send, false, 1, 0), &[], &[1; 10]);
        b.extend(peer.fpdu(h, &[], &imm));
        b
    });
    assert_eq!(body, copied(DDP_UNTAGGED, 0x03, h, 8));
    assert_eq!((c.len(), c[0].wr_id, c[0].status), (1, 77, WcStatus::LocalQpOperation), "{c:?}");
    // Not the last segment, not at MO 0, not 8 bytes: RDMAP remote operation, unspecified.
    for (h, data) in [
        (untagged(Opcode::ImmediateData, false, 1, 0), &imm[..]),
        (untagged(Opcode::ImmediateDataSe, true, 1, 8), &imm[..]),
        (untagged(Opcode::ImmediateData, true, 1, 0), &imm[..4]),
    ] {
        let (body, c, _) = provoke_with_recv(|peer, _| peer.fpdu(h, &[], data));
        assert_eq!(body, copied(RDMAP_REMOTE_OP, 0xFF, h, data.len()), "{h:?}");
        assert!(c.iter().all(|c| c.status == WcStatus::WrFlush), "nothing received: {c:?}");
    }
    // No receive posted: no buffer (1/2/2).
    let h = untagged(Opcode::ImmediateData, true, 1, 0);
    let (_, _, body) = provoke(|_| {}, |peer, _| peer.fpdu(h, &[], &imm));
    assert_eq!(body, copied(DDP_UNTAGGED, 0x02, h, 8));
}

/// RFC 5040 §4.4 / RFC 7306 §5.2: a Read or Atomic Request is one segment on queue 1, in MSN
/// order, its header of fixed length, which is checked on the DDP header (the Terminate goes
/// out before the rest of the FPDU has arrived). An Atomic Request with an unassigned AOpCode
/// is an unexpected opcode (RFC 7306 §8).
#[test]
fn read_and_atomic_requests_must_be_one_segment_of_their_length() {
    fn read(p: &Pair) -> Vec<u8> {
        let m = p.mr(64, Access::REMOTE_READ);
        let src_to = TaggedOffset(m.base());
        ReadRequest { sink_stag: Stag(0x100), sink_to: TaggedOffset(0), size: 8, src_stag: m.stag(), src_to }
            .to_bytes()
            .to_vec()
    }
    fn fetch_add(p: &Pair) -> Vec<u8> {
        let m = p.mr(64, Access::REMOTE_ATOMIC);
        AtomicRequest::fetch_add(5, m.stag(), TaggedOffset(m.base()), 1).to_bytes().to_vec()
    }
    for (op, make) in [(Opcode::ReadRequest, read as fn(&Pair) -> Vec<u8>), (Opcode::AtomicRequest, fetch_add)] {
        let len = op.fixed_body_len().unwrap();
        // MSN 2 where 1 is next: MSN range.
        let h = untagged(op, true, 2, 0);
        let (_, _, body) = provoke(|_| {}, |peer, p| peer.fpdu(h, &make(p), &[]));
        assert_eq!(body, copied(DDP_UNTAGGED, 0x03, h, len), "{op:?}");
        // Not last, or not at MO 0: unspecified.
        for h in [untagged(op, false, 1, 0), untagged(op, true, 1, 4)] {
            let (_, _, body) = provoke(|_| {}, |peer, p| peer.fpdu(h, &make(p), &[]));
            assert_eq!(body, copied(RDMAP_REMOTE_OP, 0xFF, h, len), "{h:?}");
        }
        // One byte too many: unspecified, found on the length field and DDP header alone.
        let h = untagged(op, true, 1, 0);
        let (_, _, body) = provoke(
            |_| {},
            |peer, p| {
                let mut b = make(p);
                b.push(0);
                peer.fpdu(h, &b, &[])[..2 + 18].to_vec()
            },
        );
        assert_eq!(body, copied(RDMAP_REMOTE_OP, 0xFF, h, len + 1), "{op:?}");
    }
    // AOpCode 1 is reserved: unexpected opcode, the word untouched.
    let mut word = None;
    let h = untagged(Opcode::AtomicRequest, true, 1, 0);
    let (_, _, body) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_ATOMIC);
            assert!(m.mem().write(0, &40u64.to_ne_bytes()));
            let mut req = AtomicRequest::fetch_add(5, m.stag(), TaggedOffset(m.base()), 1);
            req.opcode = AtomicOpcode::from(1);
            word = Some(m);
            peer.fpdu(h, &req.to_bytes(), &[])
        },
    );
    assert_eq!(body, copied(RDMAP_REMOTE_OP, 0x06, h, 52));
    assert_eq!(contents(&word.unwrap(), 0, 8), 40u64.to_ne_bytes());
}

/// The initiator with `wrs` posted and sent; a raw peer standing in for the responder, and the
/// FPDUs it received.
fn requester(p: &mut Pair, wrs: Vec<SendWqe>) -> (RawPeer, Vec<(SegmentHeader, Vec<u8>)>) {
    p.a.post_send(wrs).unwrap();
    let mut out = Vec::new();
    p.a.transmit_copy(&mut out, usize::MAX);
    let mut peer = RawPeer::new();
    let f = peer.decode(&out);
    (peer, f)
}

/// RFC 5040 §5.2 / RFC 5041 §7.2: a Read Response carries exactly the bytes its Read asked for.
/// One longer than the Read is a tagged base-or-bounds error (layer 1, EType 1, code 1) found on
/// its header, before anything is placed: the bytes after the sink buffer, in the same region
/// (whose own bounds would allow the write), keep their value, on the copying path and on the
/// direct one. The Read completes flushed and the local error is reported.
#[test]
fn read_response_longer_than_the_read_places_nothing_past_the_sink() {
    for (size, extra, mut p) in [(100usize, 100usize, Pair::new()), (2 * DIRECT_MIN, DIRECT_MIN, Pair::loopback_mss())]
    {
        let sink = p.mr(size + extra + 64, Access::LOCAL_WRITE);
        assert!(sink.mem().write(0, &vec![0xA5; sink.len()]));
        let read = SendOp::Read(RemoteAddr::unbounded(Stag(0x7700), 0));
        let (mut peer, f) = requester(&mut p, vec![send_wr(1, read, vec![sge(&sink, 0, size)])]);
        assert_eq!(f.len(), 1);
        let rr = ReadRequest::parse(&f[0].1).unwrap();
        assert_eq!((rr.sink_stag, rr.sink_to.0, rr.size), (sink.stag(), sink.base(), size as u32));
        let h = SegmentHeader::tagged(Opcode::ReadResponse, true, rr.sink_stag, rr.sink_to);
        let resp = peer.fpdu(h, &[], &vec![0x5A; size + extra]);
        let (cause, body) = terminate_for(&mut p.a, &mut peer, &resp);
        assert_eq!(cause, TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds));
        assert_eq!(body, copied(DDP_TAGGED, 0x01, h, size + extra));
        assert_eq!(contents(&sink, size, extra + 64), vec![0xA5; extra + 64], "{size}: written past the sink");
        assert_eq!(contents(&sink, 0, size), vec![0xA5; size], "{size}: placed although rejected");
        let c: Vec<_> = Pair::completions(&mut p.a).iter().map(|c| (c.wr_id, c.status, c.opcode)).collect();
        assert_eq!(c, [(1, WcStatus::WrFlush, WcOpcode::RdmaRead)]);
        assert!(Pair::events(&mut p.a).contains(&QpEvent::LocalError(cause)));
    }
}

/// A Read Response needs an outstanding Read (else: unexpected opcode, RFC 5040 §7.2), and a
/// zero-length Read gets a zero-length Response (RFC 5040 §5.2; more is a bounds error).
#[test]
fn read_responses_answer_an_outstanding_read_of_their_size() {
    // Nothing outstanding.
    let mut p = Pair::new();
    let mut peer = RawPeer::new();
    let h = SegmentHeader::tagged(Opcode::ReadResponse, true, Stag(0x100), TaggedOffset(0));
    let resp = peer.fpdu(h, &[], &[1; 8]);
    let (_, body) = terminate_for(&mut p.a, &mut peer, &resp);
    assert_eq!(body, copied(RDMAP_REMOTE_OP, 0x06, h, 8));
    // The oldest outstanding request is an atomic.
    let mut p = Pair::new();
    let res = p.mr(8, Access::LOCAL_WRITE);
    let fa = SendOp::FetchAdd { remote: RemoteAddr::unbounded(Stag(0x7700), 0), add: 1 };
    let (mut peer, _) = requester(&mut p, vec![send_wr(1, fa, vec![sge(&res, 0, 8)])]);
    let h = SegmentHeader::tagged(Opcode::ReadResponse, true, res.stag(), TaggedOffset(res.base()));
    let resp = peer.fpdu(h, &[], &[1; 8]);
    let (_, body) = terminate_for(&mut p.a, &mut peer, &resp);
    assert_eq!(body, copied(RDMAP_REMOTE_OP, 0x06, h, 8));
    assert_eq!(contents(&res, 0, 8), [0; 8]);
    // A zero-length Read answered with 4 bytes.
    let mut p = Pair::new();
    let sink = p.mr(64, Access::LOCAL_WRITE);
    let read = SendOp::Read(RemoteAddr::unbounded(Stag(0x7700), 0));
    let (mut peer, f) = requester(&mut p, vec![send_wr(1, read, vec![sge(&sink, 0, 0)])]);
    let rr = ReadRequest::parse(&f[0].1).unwrap();
    assert_eq!(rr.size, 0);
    let h = SegmentHeader::tagged(Opcode::ReadResponse, true, rr.sink_stag, rr.sink_to);
    let resp = peer.fpdu(h, &[], &[1; 4]);
    let (_, body) = terminate_for(&mut p.a, &mut peer, &resp);
    assert_eq!(body, copied(DDP_TAGGED, 0x01, h, 4));
    let c: Vec<_> = Pair::completions(&mut p.a).iter().map(|c| (c.wr_id, c.status)).collect();
    assert_eq!(c, [(1, WcStatus::WrFlush)]);
}

/// RFC 5041 §5.2: the segments of a tagged message repeat its opcode. A Read Response segment
/// continuing a Write is an invalid-STag error for it (as siw reports a changed STag), and is
/// not placed.
#[test]
fn a_tagged_message_keeps_its_opcode() {
    let mut dst = None;
    let h = |m: &MrRef| SegmentHeader::tagged(Opcode::ReadResponse, true, m.stag(), TaggedOffset(m.base() + 10));
    let (_, _, body) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_WRITE | Access::LOCAL_WRITE);
            let mut b =
                peer.fpdu(SegmentHeader::tagged(Opcode::Write, false, m.stag(), TaggedOffset(m.base())), &[], &[1; 10]);
            b.extend(peer.fpdu(h(&m), &[], &[2; 10]));
            dst = Some(m);
            b
        },
    );
    let m = dst.unwrap();
    assert_eq!(body, copied(DDP_TAGGED, 0x00, h(&m), 10));
    assert_eq!(contents(&m, 0, 20), [[1; 10], [0; 10]].concat());
}

/// RFC 7306 §5.2.2: an Atomic Response is one segment on queue 3 in MSN order, 12 bytes
/// (checked on the header), answering the oldest outstanding request, which must be an atomic
/// with its request identifier. Anything else terminates, and the result buffer is untouched.
#[test]
fn atomic_responses_must_answer_the_oldest_atomic() {
    // What is outstanding: 0 nothing, 1 a FetchAdd, 2 a Read.
    let setup = |what: u8| {
        let mut p = Pair::new();
        let res = p.mr(8, Access::LOCAL_WRITE);
        assert!(res.mem().write(0, &[0xA5; 8]));
        let remote = RemoteAddr::unbounded(Stag(0x7700), 0);
        let wrs = match what {
            0 => vec![],
            1 => vec![send_wr(1, SendOp::FetchAdd { remote, add: 1 }, vec![sge(&res, 0, 8)])],
            _ => vec![send_wr(1, SendOp::Read(remote), vec![sge(&res, 0, 8)])],
        };
        let (peer, f) = requester(&mut p, wrs);
        let id = f.first().and_then(|(_, b)| AtomicRequest::parse(b).ok()).map_or(0, |r| r.request_id);
        (p, peer, res, id)
    };
    let resp = |id: u32| AtomicResponse { request_id: id, original: 3 }.to_bytes();
    type Case = (u8, SegmentHeader, Option<u32>, usize, u8, u8);
    let cases: [Case; 7] = [
        // (outstanding, header, id (None: the request's), feed this many bytes (0: all), Terminate)
        (1, untagged(Opcode::AtomicResponse, true, 2, 0), None, 0, DDP_UNTAGGED, 0x03),
        (1, untagged(Opcode::AtomicResponse, false, 1, 0), None, 0, RDMAP_REMOTE_OP, 0xFF),
        (1, untagged(Opcode::AtomicResponse, true, 1, 4), None, 0, RDMAP_REMOTE_OP, 0xFF),
        (1, untagged(Opcode::AtomicResponse, true, 1, 0), None, 2 + 18, RDMAP_REMOTE_OP, 0xFF),
        (1, untagged(Opcode::AtomicResponse, true, 1, 0), Some(0x5151), 0, RDMAP_REMOTE_OP, 0x06),
        (0, untagged(Opcode::AtomicResponse, true, 1, 0), Some(1), 0, RDMAP_REMOTE_OP, 0x06),
        (2, untagged(Opcode::AtomicResponse, true, 1, 0), Some(1), 0, RDMAP_REMOTE_OP, 0x06),
    ];
    for (i, (what, h, id, feed, layer_etype, code)) in cases.into_iter().enumerate() {
        let (mut p, mut peer, res, req_id) = setup(what);
        let mut b = resp(id.unwrap_or(req_id)).to_vec();
        if feed != 0 {
            b.push(0); // 13 bytes, sent only as far as the header
        }
        let mut fpdu = peer.fpdu(h, &b, &[]);
        if feed != 0 {
            fpdu.truncate(feed);
        }
        let (_, body) = terminate_for(&mut p.a, &mut peer, &fpdu);
        assert_eq!(body, copied(layer_etype, code, h, b.len()), "case {i}");
        assert_eq!(contents(&res, 0, 8), [0xA5; 8], "case {i}");
        let c = Pair::completions(&mut p.a);
        assert!(c.iter().all(|c| c.status == WcStatus::WrFlush), "case {i}: {c:?}");
    }
}

/// RFC 5040 §4.8: a Terminate is one untagged segment (MO 0, L set) of at most the largest
/// Terminate header; one that is not gets a Terminate back (remote operation, unspecified).
#[test]
fn a_malformed_terminate_is_answered_with_one() {
    let bare = [0x20u8, 0x02, 0x00, 0x00];
    let long = [0u8; iwarp_wire::terminate::MAX_BODY_LEN + 1];
    for (h, b) in [
        (untagged(Opcode::Terminate, false, 1, 0), &bare[..]),
        (untagged(Opcode::Terminate, true, 1, 4), &bare[..]),
        (untagged(Opcode::Terminate, true, 1, 0), &long[..]),
    ] {
        let (mut p, _, body) = provoke(|_| {}, |peer, _| peer.fpdu(h, b, &[]));
        assert_eq!(body, copied(RDMAP_REMOTE_OP, 0xFF, h, b.len()), "{h:?}");
        assert!(!Pair::events(&mut p.b).iter().any(|e| matches!(e, QpEvent::RemoteTerminate { .. })));
    }
}

/// RFC 6581 §9.2/§9.3: in peer-to-peer mode the responder's first FPDU must be an RTR: a
/// zero-length last segment of a type it accepts (a zero-size Read Request for a Read RTR).
/// Anything else is MPA code 7 (no headers); an RTR with a wrong MSN, MO or Read Request
/// length is rejected like any such segment.
#[test]
fn rtrs_must_be_zero_length_last_segments_of_an_accepted_type() {
    let only = |send, write, read| RtrTypes { send, write, read };
    let rtr_read = ReadRequest {
        sink_stag: Stag(1),
        sink_to: TaggedOffset(0),
        size: 0,
        src_stag: Stag(1),
        src_to: TaggedOffset(0),
    };
    let rr = rtr_read.to_bytes().to_vec();
    let mut rr_long = rr.clone();
    rr_long.push(0);
    let no_rtr = vec![LLP_MPA, 0x07, 0x00, 0x00];
    let w = |last| SegmentHeader::tagged(Opcode::Write, last, Stag(1), TaggedOffset(0));
    // (accepted types, header, header body, payload, bytes fed (0: all), expected Terminate body)
    type Case = (RtrTypes, SegmentHeader, Vec<u8>, Vec<u8>, usize, Vec<u8>);
    let cases: Vec<Case> = vec![
        (only(false, true, false), w(true), vec![], vec![7; 4], 0, no_rtr.clone()),
        (only(false, true, false), w(false), vec![], vec![], 0, no_rtr.clone()),
        (only(false, true, false), untagged(Opcode::Send, true, 1, 0), vec![], vec![], 0, no_rtr.clone()),
        (only(false, true, false), untagged(Opcode::ReadRequest, true, 1, 0), rr.clone(), vec![], 0, no_rtr.clone()),
        (only(false, false, true), untagged(Opcode::ReadRequest, false, 1, 0), rr.clone(), vec![], 0, no_rtr.clone()),
        (
            only(true, false, false),
            untagged(Opcode::Send, true, 2, 0),
            vec![],
            vec![],
            0,
            copied(DDP_UNTAGGED, 0x03, untagged(Opcode::Send, true, 2, 0), 0),
        ),
        (
            only(false, false, true),
            untagged(Opcode::ReadRequest, true, 2, 0),
            rr.clone(),
            vec![],
            0,
            copied(DDP_UNTAGGED, 0x03, untagged(Opcode::ReadRequest, true, 2, 0), 28),
        ),
        (
            only(false, false, true),
            untagged(Opcode::ReadRequest, true, 1, 4),
            rr.clone(),
            vec![],
            0,
            copied(RDMAP_REMOTE_OP, 0xFF, untagged(Opcode::ReadRequest, true, 1, 4), 28),
        ),
        (
            only(false, false, true),
            untagged(Opcode::ReadRequest, true, 1, 0),
            rr_long,
            vec![],
            2 + 18,
            copied(RDMAP_REMOTE_OP, 0xFF, untagged(Opcode::ReadRequest, true, 1, 0), 29),
        ),
    ];
    for (i, (types, h, b, payload, feed, want)) in cases.into_iter().enumerate() {
        let mut p = Pair::with(
            link(Startup::Initiator { rtr: None }),
            link(Startup::Responder { rtr: Some(types), send_first: false }),
        );
        let mut peer = RawPeer::new();
        let mut fpdu = peer.fpdu(h, &b, &payload);
        if feed != 0 {
            fpdu.truncate(feed);
        }
        let (_, body) = terminate_for(&mut p.b, &mut peer, &fpdu);
        if want == no_rtr {
            assert!(!Pair::events(&mut p.b).contains(&QpEvent::Ready), "case {i}: no RTR, never ready");
        }
        assert_eq!(body, want, "case {i}");
    }
}

/// RFC 5041 §7.2 / RFC 5040 §7.2: a tagged offset whose range wraps past 2^64 is a TO wrap
/// error, for a Write (DDP tagged buffer, code 3) and for a Read Request's source (RDMAP remote
/// protection, code 4, the Read Request header copied).
#[test]
fn tagged_ranges_that_wrap_are_to_wrap_errors() {
    let to = u64::MAX - 3;
    let (_, _, body) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_WRITE);
            peer.fpdu(write_hdr(m.stag(), to), &[], &[7; 8])
        },
    );
    assert_eq!(body[..4], [DDP_TAGGED, 0x03, 0xC0, 0x00]);
    let mut rr = None;
    let h = untagged(Opcode::ReadRequest, true, 1, 0);
    let (_, _, body) = provoke(
        |_| {},
        |peer, p| {
            let m = p.mr(64, Access::REMOTE_READ);
            let r = ReadRequest {
                sink_stag: Stag(0x100),
                sink_to: TaggedOffset(0),
                size: 8,
                src_stag: m.stag(),
                src_to: TaggedOffset(to),
            };
            rr = Some(r);
            peer.fpdu(h, &r.to_bytes(), &[])
        },
    );
    let mut want = copied(0x01, 0x04, h, 28);
    want[2] = 0xE0; // M, D and R
    want.extend_from_slice(&rr.unwrap().to_bytes());
    assert_eq!(body, want);
}

// Receive wait (`Qp::set_recv_wait`): a Send that finds no receive posted waits for one,
// with the stream unread behind it, instead of terminating at once.

/// What a receiver that follows the plans has not yet been handed of `wire`.
struct Inbox {
    wire: Vec<u8>,
    chunk: usize,
}

impl Inbox {
    /// Hands `qp` as much as its plans take, `chunk` bytes a read at most; returns how many.
    fn feed(&mut self, qp: &mut Qp) -> usize {
        let mut used = 0;
        while !self.wire.is_empty() {
            let n = self.wire.len().min(self.chunk);
            let k = qp.receive_copy(&self.wire[..n]);
            self.wire.drain(..k);
            used += k;
            if k < n {
                break;
            }
        }
        used
    }
}

fn waiting_pair(wait: Duration) -> Pair {
    let mut p = Pair::new();
    p.b.set_recv_wait(Some(wait));
    p
}

/// Messages behind a Send with no receive posted wait with it, and go on, in order and
/// intact, as receives are posted; the peer never hears of it.
#[test]
fn a_send_without_a_receive_waits_and_what_follows_it_goes_on_in_order_once_one_is_posted() {
    // One read of everything (whole FPDUs in the buffer), odd pieces, a read per segment.
    for chunk in [1 << 20, 7, 1000, 1460] {
        let mut p = waiting_pair(Duration::from_secs(2));
        let src = p.mr(256 << 10, Access::empty());
        pattern(&src, 9);
        let wdst = p.mr(64 << 10, Access::REMOTE_WRITE);
        let r1 = p.mr(100, Access::LOCAL_WRITE);
        let r2 = p.mr(100 << 10, Access::LOCAL_WRITE);
        let r3 = p.mr(16, Access::LOCAL_WRITE);
        let small = p.mr(64, Access::REMOTE_WRITE);
        // Eight small Writes first: then reads are no longer cut short for large payloads,
        // and with one read of everything the first Send arrives whole in the buffer.
        let writes: Vec<_> =
            (0..8u64).map(|i| send_wr(20 + i, SendOp::Write(remote(&small, i * 8)), vec![sge(&src, 0, 8)])).collect();
        p.a.post_send(writes).unwrap();
        // Send (100 B), Write (64 KiB), Send (100 KiB, many segments), Immediate Data.
        p.a.post_send([
            send_wr(1, SendOp::Send, vec![sge(&src, 0, 100)]),
            send_wr(2, SendOp::Write(remote(&wdst, 0)), vec![sge(&src, 100, 64 << 10)]),
            send_wr(3, SendOp::Send, vec![sge(&src, 1000, 100 << 10)]),
            send_wr(4, SendOp::Immediate(0x1122_3344_5566_7788), vec![]),
        ])
        .unwrap();
        let mut inbox = Inbox { wire: Vec::new(), chunk };
        p.a.transmit_copy(&mut inbox.wire, usize::MAX);
        let total = inbox.wire.len();

        // Nothing posted: the first Send waits, and what follows it is not read.
        let used = inbox.feed(&mut p.b);
        assert!(used < total, "chunk {chunk}: {used} of {total} bytes taken");
        assert_eq!(p.b.poll_recv_plan(), RecvPlan::Wait, "chunk {chunk}");
        assert!(p.b.poll_interest().recv_wait && p.b.poll_interest().timer);
        assert!(Pair::completions(&mut p.b).is_empty());
        assert!(Pair::events(&mut p.b).iter().all(|e| !matches!(e, QpEvent::LocalError(_))));
        assert_eq!(contents(&wdst, 0, 64 << 10), vec![0; 64 << 10], "chunk {chunk}: the Write waits too");
        let mut back = Vec::new();
        p.b.transmit_copy(&mut back, usize::MAX);
        assert!(back.is_empty(), "chunk {chunk}: nothing goes back (no Terminate)");
        // Asked again without a receive: still waiting, nothing more taken.
        assert_eq!(inbox.feed(&mut p.b), 0);

        // One receive: the first Send and the Write go through; the second Send waits.
        p.b.post_recv([recv_wr(11, vec![sge(&r1, 0, 100)])]).unwrap();
        assert!(p.b.posts().take_recv_waiter(), "the poster learns that the engine waits");
        inbox.feed(&mut p.b);
        let c = Pair::completions(&mut p.b);
        assert_eq!(c.len(), 1, "chunk {chunk}: {c:?}");
        assert_eq!((c[0].wr_id, c[0].status, c[0].byte_len), (11, WcStatus::Success, 100));
        assert_eq!(contents(&r1, 0, 100), contents(&src, 0, 100));
        assert_eq!(contents(&wdst, 0, 64 << 10), contents(&src, 100, 64 << 10), "chunk {chunk}");
        assert_eq!(p.b.poll_recv_plan(), RecvPlan::Wait, "chunk {chunk}: the second Send waits");

        // Two more: the rest, in order.
        p.b.post_recv([recv_wr(12, vec![sge(&r2, 0, 100 << 10)]), recv_wr(13, vec![sge(&r3, 0, 16)])]).unwrap();
        assert!(p.b.posts().take_recv_waiter());
        inbox.feed(&mut p.b);
        assert!(inbox.wire.is_empty(), "chunk {chunk}: everything read");
        let c = Pair::completions(&mut p.b);
        let got: Vec<_> = c.iter().map(|c| (c.wr_id, c.status, c.opcode, c.byte_len, c.imm_data)).collect();
        assert_eq!(
            got,
            [
                (12, WcStatus::Success, WcOpcode::Recv, 100 << 10, None),
                (13, WcStatus::Success, WcOpcode::RecvImmediate, 0, Some(0x1122_3344_5566_7788)),
            ],
            "chunk {chunk}"
        );
        assert_eq!(contents(&r2, 0, 100 << 10), contents(&src, 1000, 100 << 10), "chunk {chunk}");
        assert!(!p.b.poll_interest().recv_wait);
        assert_eq!(p.b.state(), QpState::Rts);
        assert_eq!(p.b.poll_timeout(), None);
    }
}

/// A wait that runs out ends the connection as an immediate Terminate would have: DDP
/// untagged buffer "no buffer available", the header copied, the local error.
#[test]
fn a_send_that_waits_in_vain_terminates_with_no_buffer_after_the_wait() {
    let mut p = waiting_pair(Duration::from_secs(2));
    let mut peer = RawPeer::new();
    let mut input = peer.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], b"hi");
    input.extend(peer.fpdu(write_hdr(Stag(0x1234), 0), &[], &[5; 8]));
    assert_eq!(p.b.receive_copy(&input), input.len());
    assert_eq!(p.b.poll_recv_plan(), RecvPlan::Wait);
    // The clock starts at the first timer call.
    let t0 = Instant::now();
    assert!(p.b.poll_interest().timer);
    assert!(!p.b.handle_timeout(t0));
    assert_eq!(p.b.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    assert!(!p.b.handle_timeout(t0 + Duration::from_millis(1999)));
    assert_eq!(p.b.state(), QpState::Rts);
    assert!(p.b.handle_timeout(t0 + Duration::from_secs(2)));
    let mut out = Vec::new();
    p.b.transmit_copy(&mut out, usize::MAX);
    let frames = peer.decode(&out);
    let (h, body) = frames.last().expect("a Terminate").clone();
    assert_eq!(h.opcode, Opcode::Terminate);
    let cause = TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer);
    assert_eq!(TerminateMessage::parse(&body).unwrap().rfc.cause, cause);
    // As without the wait: M and D set, segment length 20, the untagged header copied.
    assert_eq!(&body[..6], &[0x12, 0x02, 0xC0, 0x00, 0x00, 20]);
    assert_eq!(body.len(), 4 + 2 + 18);
    assert_eq!(p.b.state(), QpState::Error);
    assert!(Pair::events(&mut p.b).contains(&QpEvent::LocalError(cause)));
    assert!(!p.b.poll_interest().recv_wait);
    assert_eq!(p.b.poll_recv_plan(), RecvPlan::Stop);
}

/// A zero wait is no wait: the Terminate at once, as with none.
#[test]
fn a_zero_receive_wait_terminates_at_once() {
    let mut p = Pair::new();
    p.b.set_recv_wait(Some(Duration::ZERO));
    let mut peer = RawPeer::new();
    let input = peer.fpdu(SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0), &[], b"hi");
    let (cause, _) = terminate_for(&mut p.b, &mut peer, &input);
    assert_eq!(cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer));
}

/// A receive posted to the shared receive queue ends the wait too, and both flags tell the
/// poster so.
#[test]
fn a_receive_posted_to_the_shared_queue_ends_the_wait() {
    let stags = Arc::new(StagTable::new(7));
    let pd = stags.new_pd();
    let srq = Arc::new(Srq::new(16, 2));
    let mut a = Qp::new(cfg(1, pd), Arc::clone(&stags), None);
    let mut b = Qp::new(cfg(2, pd), Arc::clone(&stags), Some(Arc::clone(&srq)));
    a.establish(link(Startup::Initiator { rtr: None })).unwrap();
    b.establish(link(Startup::Responder { rtr: None, send_first: false })).unwrap();
    b.set_recv_wait(Some(Duration::from_secs(1)));
    let src = stags.register(RawMem::alloc(64, false).unwrap(), pd, Access::empty(), 0x1000).unwrap();
    let dst = stags.register(RawMem::alloc(64, false).unwrap(), pd, Access::LOCAL_WRITE, 0x2000).unwrap();
    pattern(&src, 1);
    a.post_send([send_wr(1, SendOp::Send, vec![sge(&src, 0, 64)])]).unwrap();
    let mut inbox = Inbox { wire: Vec::new(), chunk: 1 << 20 };
    a.transmit_copy(&mut inbox.wire, usize::MAX);
    inbox.feed(&mut b);
    assert_eq!(b.poll_recv_plan(), RecvPlan::Wait);
    srq.post(pd, [recv_wr(5, vec![sge(&dst, 0, 64)])]).unwrap();
    assert!(srq.take_waiter() && b.posts().take_recv_waiter());
    assert!(!srq.take_waiter(), "once");
    assert!(matches!(b.poll_recv_plan(), RecvPlan::Scratch { .. }));
    inbox.feed(&mut b);
    assert!(inbox.wire.is_empty());
    let c = Pair::completions(&mut b);
    assert_eq!((c[0].wr_id, c[0].status, c[0].byte_len), (5, WcStatus::Success, 64));
    assert_eq!(contents(&dst, 0, 64), contents(&src, 0, 64));
}

/// The shared receive queue's limit: the queue pair whose receive leaves fewer queued than
/// the armed limit reports it once (as output), and the limit disarms.
#[test]
fn the_queue_pair_that_crosses_the_shared_queue_limit_reports_it_once() {
    let stags = Arc::new(StagTable::new(7));
    let pd = stags.new_pd();
    let srq = Arc::new(Srq::new(4, 1));
    let mut a = Qp::new(cfg(1, pd), Arc::clone(&stags), None);
    let mut b = Qp::new(cfg(2, pd), Arc::clone(&stags), Some(Arc::clone(&srq)));
    a.establish(link(Startup::Initiator { rtr: None })).unwrap();
    b.establish(link(Startup::Responder { rtr: None, send_first: false })).unwrap();
    let src = stags.register(RawMem::alloc(8, false).unwrap(), pd, Access::empty(), 0x1000).unwrap();
    let dst = stags.register(RawMem::alloc(32, false).unwrap(), pd, Access::LOCAL_WRITE, 0x2000).unwrap();
    srq.post(pd, (0..3).map(|i| recv_wr(i, vec![sge(&dst, i as usize * 8, 8)]))).unwrap();
    assert_eq!(srq.limit(), 0);
    srq.set_limit(2);
    assert_eq!((srq.limit(), srq.depth(), srq.max_sge()), (2, 4, 1));
    let mut inbox = Inbox { wire: Vec::new(), chunk: 1 << 20 };
    let mut one = |a: &mut Qp, b: &mut Qp, id: u64| {
        a.post_send([send_wr(id, SendOp::Send, vec![sge(&src, 0, 8)])]).unwrap();
        a.transmit_copy(&mut inbox.wire, usize::MAX);
        inbox.feed(b);
    };
    one(&mut a, &mut b, 1);
    assert!(!b.take_srq_limit_reached(), "3 -> 2: at the limit");
    assert_eq!(srq.limit(), 2);
    one(&mut a, &mut b, 2);
    assert!(b.poll_interest().output);
    assert!(b.take_srq_limit_reached(), "2 -> 1: below it");
    assert!(!b.take_srq_limit_reached(), "once");
    assert_eq!(srq.limit(), 0, "disarmed");
    one(&mut a, &mut b, 3);
    assert!(!b.take_srq_limit_reached(), "disarmed: nothing");
    assert_eq!(Pair::completions(&mut b).len(), 3);
}

/// FPDU alignment (RFC 5044 §4): with `align_to_segments`, the send calls `transmit_calls`
/// plans, handed to a model of the kernel (a call marked at its end starts a new segment;
/// within a call, segments are cut every MSS bytes from its start; a call taken in part goes
/// on where it stopped), never cut an FPDU, however much each "send" takes; the bytes arrive
/// intact. Without alignment the same model cuts FPDUs (the plan is one unmarked call).
#[test]
fn aligned_send_calls_keep_every_fpdu_within_a_segment() {
    const MSS: usize = 1460;
    for (aligned, seed) in [(true, 0x9e37_79b9_u32), (true, 7), (true, 12345), (true, 99), (false, 1)] {
        let mut p = Pair::new();
        if aligned {
            p.a.align_to_segments(MSS);
        }
        let src = p.mr(1 << 20, Access::empty());
        let dst = p.mr(1 << 20, Access::REMOTE_WRITE);
        pattern(&src, 5);
        let mut sizes = vec![1usize, 100, 3000, 70_000, 5, 1500, 2900, 40, 1460, 200_000, 7, 1447, 64, 64, 64, 9000];
        // Runs of small messages, several to a segment.
        sizes.extend((0..200).map(|i| [100, 333, 20, 700][i % 4]));
        sizes.push(5000);
        let mut at = 0;
        let wrs: Vec<SendWqe> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let w = send_wr(i as u64, SendOp::Write(remote(&dst, at as u64)), vec![sge(&src, at, n)]);
                at += n;
                w
            })
            .collect();
        p.a.post_send(wrs).unwrap();
        let (mut wire, mut cuts, mut ranges, mut calls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // The kernel model: where the current call's segment grid started (stream offset), and
        // whether the last call was taken whole with its end mark.
        let mut grid = 0usize;
        let mut rng = seed;
        loop {
            let n = p.a.poll_transmit(&mut ranges, usize::MAX);
            if n == 0 {
                break;
            }
            p.a.transmit_calls(n, &mut calls);
            assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), n, "the calls cover what was offered");
            // Room in the "socket" this round: anything from 1 byte to all of it.
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let room = 1 + rng as usize % n;
            let mut taken = 0;
            for &(len, end) in &calls {
                let take = len.min(room - taken);
                let start = wire.len() + taken;
                // Segments are cut every MSS bytes from the grid's start.
                let mut cut = grid + MSS;
                while cut < start + take {
                    if cut > start {
                        cuts.push(cut);
                    }
                    cut += MSS;
                }
                taken += take;
                if take < len {
                    break;
                }
                if end {
                    cuts.push(start + take);
                    grid = start + take;
                }
            }
            let before = wire.len();
            assert_eq!(p.a.transmit_copy(&mut wire, taken), taken);
            assert_eq!(wire.len(), before + taken);
        }
        // The FPDU boundaries of the stream.
        let mut bounds = std::collections::BTreeSet::from([0usize]);
        let mut off = 0;
        while off + 2 <= wire.len() {
            off += iwarp_wire::mpa::fpdu_len(u16::from_be_bytes([wire[off], wire[off + 1]]) as usize);
            bounds.insert(off);
        }
        assert_eq!(off, wire.len(), "whole FPDUs");
        let split = cuts.iter().filter(|c| !bounds.contains(c)).count();
        if aligned {
            assert_eq!(
                split,
                0,
                "segment cuts inside FPDUs: {:?}",
                cuts.iter().filter(|c| !bounds.contains(c)).take(5).collect::<Vec<_>>()
            );
        } else {
            assert!(split > 10, "unaligned, the model should cut FPDUs: {split}");
        }
        let mut off = 0;
        while off < wire.len() {
            off += p.b.receive_copy(&wire[off..]);
        }
        assert_eq!(contents(&dst, 0, at), contents(&src, 0, at));
    }
}

/// Unaligned, `transmit_calls` cuts what was offered into calls of `SEND_CALL_MAX` bytes, and
/// a rest of up to a quarter of that joins the call before it instead of taking a system
/// call of its own (two 64 KiB Writes are 131,160 bytes: one call, not 131,072 and 88).
#[test]
fn unaligned_send_calls_are_capped_and_a_short_rest_joins_the_last() {
    use super::SEND_CALL_MAX as M;
    let mut p = Pair::new();
    let mut calls = Vec::new();
    let plan = |p: &mut Pair, calls: &mut Vec<(usize, bool)>, n: usize| {
        p.a.transmit_calls(n, calls);
        assert!(calls.iter().all(|&(_, end)| !end), "unaligned calls are never marked");
        assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), n);
        calls.iter().map(|c| c.0).collect::<Vec<_>>()
    };
    assert_eq!(plan(&mut p, &mut calls, 100), [100]);
    assert_eq!(plan(&mut p, &mut calls, 2 * 65_580), [131_160]);
    assert_eq!(plan(&mut p, &mut calls, M + M / 4), [M + M / 4]);
    assert_eq!(plan(&mut p, &mut calls, M + M / 4 + 1), [M, M / 4 + 1]);
    assert_eq!(plan(&mut p, &mut calls, 4 * 65_580), [M, 4 * 65_580 - M]);
    assert_eq!(plan(&mut p, &mut calls, 3 * M + 10), [M, M, M + 10]);
    assert_eq!(plan(&mut p, &mut calls, 4 << 20).len(), 32);
}
