//! Peer bytes never make a queue pair panic. FPDUs built from the opcode table and then bent
//! (another buffer model, another queue, a wrong length, a foreign STag, reserved opcodes,
//! arbitrary bodies), framed with a valid length and CRC so that they reach the receive dispatch,
//! are fed in arbitrary pieces to a responder and to a requester with a Read, an atomic or both
//! outstanding, with RFC 7306 on or off. The queue pair goes on running or terminates, and what it
//! owes the peer is framed, without a panic (debug builds also catch arithmetic overflow).

use iwarp_proto::mem::{Access, MrRef, RawMem, StagTable};
use iwarp_proto::qp::{LinkParams, Payload, Qp, QpConfig, QpState, RecvWqe, RemoteAddr, SendOp, SendWqe, Sge, Startup};
use iwarp_wire::mpa::Framer;
use iwarp_wire::rdmap::{AtomicRequest, AtomicResponse, Body, ReadRequest, UntaggedKind};
use iwarp_wire::{Msn, Opcode, Placement, QueueNumber, SegmentHeader, Stag, TaggedOffset};
use proptest::prelude::*;
use std::sync::Arc;

/// What one FPDU is made of, before the region it may aim at is known.
#[derive(Debug, Clone)]
struct Spec {
    opcode: u8,
    /// Put it on the other buffer model than its row's.
    flip_model: bool,
    /// Put it on this queue instead of its row's.
    queue: Option<u32>,
    msn: u32,
    mo: u32,
    last: bool,
    /// Use the region's STag and an offset inside it (else `stag` and `to`).
    aim: bool,
    stag: u32,
    to: u64,
    /// Give a fixed-size header its exact length (else the length of `payload`).
    exact: bool,
    word: u32,
    payload: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (prop_oneof![4 => 0u8..12, 1 => 12u8..16], prop::bool::weighted(0.1), prop::option::weighted(0.1, 0u32..6)),
        (
            prop_oneof![3 => Just(1u32), 1 => 2u32..4],
            prop_oneof![4 => Just(0u32), 1 => 0u32..64, 1 => any::<u32>()],
            prop::bool::weighted(0.8),
        ),
        (prop::bool::weighted(0.7), any::<u32>(), prop_oneof![3 => Just(0u64), 2 => 0u64..72, 1 => any::<u64>()]),
        (
            prop::bool::weighted(0.8),
            0u32..8,
            prop_oneof![2 => Just(16usize), 1 => Just(8), 2 => 0usize..96]
                .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n)),
        ),
    )
        .prop_map(|((opcode, flip_model, queue), (msn, mo, last), (aim, stag, to), (exact, word, payload))| Spec {
            opcode,
            flip_model,
            queue,
            msn,
            mo,
            last,
            aim,
            stag,
            to,
            exact,
            word,
            payload,
        })
}

/// The ULPDU (DDP header, RDMAP header, payload) for `s`, aimed at `mr` where it says so.
fn build(s: &Spec, mr: &MrRef) -> Vec<u8> {
    let opcode = Opcode::from(s.opcode);
    let desc = opcode.descriptor();
    let stag = if s.aim { mr.stag() } else { Stag(s.stag) };
    let to = if s.aim { mr.base() + s.to % 72 } else { s.to };
    let tagged = desc.map_or(s.opcode.is_multiple_of(2), |d| d.model.is_tagged()) ^ s.flip_model;
    let placement = if tagged {
        Placement::Tagged { stag, to: TaggedOffset(to) }
    } else {
        let own = desc.and_then(|d| d.model.queue()).map_or(0, |q| q.0);
        Placement::Untagged { qn: QueueNumber(s.queue.unwrap_or(own)), msn: Msn(s.msn), mo: s.mo }
    };
    let h = SegmentHeader { opcode, last: s.last, placement, inval_stag: stag };
    let (hb, n) = h.to_bytes();
    let mut u = hb[..n].to_vec();
    let body = match desc.map(|d| (d.body, d.model)) {
        Some((Body::Fixed(_), iwarp_wire::rdmap::Model::Untagged(_, kind))) if s.exact => match kind {
            UntaggedKind::ReadRequest => ReadRequest {
                sink_stag: Stag(s.stag),
                sink_to: TaggedOffset(s.to),
                size: s.word * 8,
                src_stag: stag,
                src_to: TaggedOffset(to),
            }
            .to_bytes()
            .to_vec(),
            UntaggedKind::AtomicRequest => {
                AtomicRequest::fetch_add(s.word, stag, TaggedOffset(to & !7), 1).to_bytes().to_vec()
            }
            UntaggedKind::AtomicResponse => AtomicResponse { request_id: s.word % 2, original: 5 }.to_bytes().to_vec(),
            _ => {
                let mut b = s.payload.clone();
                b.resize(desc.and_then(|d| d.body.fixed_len()).unwrap_or(0), 0);
                b
            }
        },
        _ => s.payload.clone(),
    };
    u.extend_from_slice(&body);
    u
}

fn link(startup: Startup, rfc7306: bool) -> LinkParams {
    LinkParams {
        crc: true,
        send_markers: false,
        recv_markers: false,
        ird: 2,
        ord: 2,
        mulpdu: iwarp_wire::mpa::mulpdu(1460, false),
        large_fpdus: false,
        rfc7306,
        startup,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn fpdus_bent_from_the_opcode_table_never_panic_a_queue_pair(
        requester in any::<bool>(),
        read_first in any::<bool>(),
        rfc7306 in any::<bool>(),
        specs in prop::collection::vec(spec(), 1..8),
        chunk in 1usize..200,
    ) {
        let stags = Arc::new(StagTable::new(7));
        let pd = stags.new_pd();
        let cfg = QpConfig { qp_num: 1, pd, sq_depth: 16, rq_depth: 16, max_send_sge: 2, max_recv_sge: 2, max_inline: 64 };
        let mut qp = Qp::new(cfg, Arc::clone(&stags), None);
        let startup = if requester { Startup::Initiator { rtr: None } } else { Startup::Responder { rtr: None, send_first: false } };
        qp.establish(link(startup, rfc7306)).unwrap();
        let all = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC;
        let mr = stags.register(RawMem::alloc(64, false).unwrap(), pd, all, 0x10_0000).unwrap();
        let sge = |offset, len| Sge { mr: Arc::clone(&mr), offset, len };
        let recv = |wr_id, offset| RecvWqe { wr_id, sges: vec![sge(offset, 32)].into() };
        qp.post_recv([recv(1, 0), recv(2, 32)]).unwrap();
        if requester {
            let remote = RemoteAddr::unbounded(Stag(0x100), 0);
            let wr = |wr_id, op, len| SendWqe {
                wr_id,
                op,
                payload: Payload::Sges(vec![sge(0, len)].into()),
                signaled: true,
                solicited: false,
                fence: false,
            };
            // A Read, an atomic, or both (RFC 7306 allowing).
            let read = wr(3, SendOp::Read(remote), 16);
            let atomic = wr(4, SendOp::FetchAdd { remote, add: 1 }, 8);
            let wrs = match (rfc7306, read_first) {
                (false, _) => vec![read],
                (true, true) => vec![read, atomic],
                (true, false) => vec![atomic],
            };
            qp.post_send(wrs).unwrap();
            qp.transmit_copy(&mut Vec::new(), usize::MAX);
        }
        let mut framer = Framer::new(true, false);
        let mut stream = Vec::new();
        for s in &specs {
            framer.frame_to_vec(&build(s, &mr), iwarp_wire::mpa::NO_PAYLOAD, &mut stream).unwrap();
        }
        for piece in stream.chunks(chunk) {
            qp.receive_copy(piece);
            qp.transmit_copy(&mut Vec::new(), usize::MAX);
        }
        while qp.poll_completion().is_some() {}
        while qp.poll_event().is_some() {}
        prop_assert_ne!(qp.state(), QpState::Idle);
    }
}
