//! Exact values from the parsing and checking paths that the other tests leave open: what a
//! malformed or unusual input is reported as (the error variant and the Terminate it maps to),
//! and the exact fields a valid input parses to. Each test pins down one decision the code makes
//! about peer input.

use iwarp_wire::{Error, Msn, Opcode, TerminateCause};

#[test]
fn msn_next_counts_up_by_one() {
    assert_eq!(Msn::FIRST.next(), Msn(2));
    assert_eq!(Msn(0x1234_5678).next(), Msn(0x1234_5679));
}

#[test]
fn segment_payload_is_the_bytes_after_the_header() {
    use iwarp_wire::ddp::Segment;
    // An untagged Send header (18 bytes) followed by 3 payload bytes.
    let mut seg = vec![0x41u8, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    seg.extend_from_slice(b"abc");
    assert_eq!(Segment::new_checked(&seg[..]).unwrap().payload(), b"abc");
    // A tagged Write header (14 bytes) followed by 2 payload bytes.
    let mut seg = vec![0xc1u8, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    seg.extend_from_slice(b"xy");
    assert_eq!(Segment::new_checked(&seg[..]).unwrap().payload(), b"xy");
}

/// Every opcode, assigned and not.
fn all_opcodes() -> impl Iterator<Item = Opcode> {
    (0u8..16).map(Opcode::from)
}

#[test]
fn opcode_classification_is_exact() {
    for op in all_opcodes() {
        let code = u8::from(op);
        // RFC 7306 §9.1: Immediate Data, Immediate Data with SE, Atomic Request, Atomic Response.
        assert_eq!(op.is_rfc7306(), (0x8..=0xB).contains(&code), "{op:?}");
        // The solicited-event variants of Send and Immediate Data.
        assert_eq!(op.solicited(), matches!(code, 0x5 | 0x6 | 0x9), "{op:?}");
        assert_eq!(op.invalidates(), matches!(code, 0x4 | 0x6), "{op:?}");
    }
}

#[test]
fn fixed_body_lengths_are_the_rfc_sizes() {
    for op in all_opcodes() {
        let want = match op {
            Opcode::ReadRequest => Some(28),
            Opcode::AtomicRequest => Some(52),
            Opcode::AtomicResponse => Some(12),
            Opcode::ImmediateData | Opcode::ImmediateDataSe => Some(8),
            _ => None,
        };
        assert_eq!(op.fixed_body_len(), want, "{op:?}");
    }
}

#[test]
fn masked_fetch_add_keeps_every_bit_of_each_field() {
    use iwarp_wire::rdmap::{AtomicOpcode, AtomicRequest};
    use iwarp_wire::{Stag, TaggedOffset};
    // RFC 7306 §5.1: mask bits 31 and 63 make two 32-bit fields; each field's top bit is part of
    // it and survives an add that does not carry out of it.
    let mut req = AtomicRequest::fetch_add(1, Stag(0x100), TaggedOffset(0), 0x0000_0001_0000_0002);
    req.add_or_swap_mask = (1 << 31) | (1 << 63);
    assert_eq!(req.opcode, AtomicOpcode::FetchAdd);
    assert_eq!(req.apply(0x8000_0005_8000_0001), Some(0x8000_0006_8000_0003));
    // Carries out of the low field are dropped, out of the high one too.
    assert_eq!(req.apply(0xFFFF_FFFF_FFFF_FFFF), Some(0x0000_0000_0000_0001));
}

#[test]
fn catastrophic_error_types_take_any_code() {
    use iwarp_wire::terminate::{TerminateCode, TerminateLayout, TerminateMessage};
    // RFC 5040 Figure 9: error type 0 of RDMAP and DDP has no code; any value is acceptable.
    for ecode in [0x00, 0x12, 0xFF] {
        let rdmap = TerminateCause::from_code(TerminateCode { layer: 0, etype: 0, ecode });
        assert_eq!(rdmap, TerminateCause::RdmapCatastrophic);
        assert!(rdmap.is_known());
        let ddp = TerminateCause::from_code(TerminateCode { layer: 1, etype: 0, ecode });
        assert_eq!(ddp, TerminateCause::DdpCatastrophic);
        assert!(ddp.is_known());
    }
    // Received: a bare RDMAP catastrophic Terminate reads the same in both layouts.
    let m = TerminateMessage::parse(&[0x00, 0x33, 0x00, 0x00]).unwrap();
    assert_eq!(m.layout, TerminateLayout::Ambiguous);
    assert_eq!(m.preferred().cause, TerminateCause::RdmapCatastrophic);
    // DDP catastrophic in the RFC layout (layer 1 in the high nibble); read the siw way it is
    // RDMAP remote protection code 5, which is unassigned.
    let m = TerminateMessage::parse(&[0x10, 0x05, 0x00, 0x00]).unwrap();
    assert_eq!(m.layout, TerminateLayout::Rfc5040);
    assert_eq!(m.preferred().cause, TerminateCause::DdpCatastrophic);
}

#[test]
fn copied_headers_follow_rfc5040_figure_10() {
    use iwarp_wire::terminate::{Mpa, RemoteOperation, RemoteProtection, TaggedBuffer, TerminateCode, UntaggedBuffer};
    let cases = [
        (TerminateCause::RdmapCatastrophic, (false, false)),
        (TerminateCause::RemoteProtection(RemoteProtection::InvalidStag), (true, true)),
        (TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode), (true, false)),
        (TerminateCause::DdpCatastrophic, (false, false)),
        (TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds), (true, false)),
        (TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer), (true, false)),
        (TerminateCause::Mpa(Mpa::Crc), (false, false)),
        (TerminateCause::Other(TerminateCode { layer: 3, etype: 0, ecode: 0 }), (false, false)),
    ];
    for (cause, want) in cases {
        assert_eq!(cause.carries_headers(), want, "{cause:?}");
    }
}

#[test]
fn terminate_body_limit_is_52_bytes() {
    use iwarp_wire::terminate::{TerminateLayout, TerminateMessage, MAX_BODY_LEN};
    // Control (4), segment length (2), untagged DDP header (18), Read Request header (28).
    assert_eq!(MAX_BODY_LEN, 52);
    let mut body = vec![0x01u8, 0x00, 0xE0, 0x00, 0x00, 46];
    body.extend_from_slice(&[0x41, 0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    body.extend_from_slice(&[0x11; 28]);
    assert_eq!(body.len(), 52);
    assert_eq!(TerminateMessage::parse(&body).unwrap().layout, TerminateLayout::Rfc5040);
    body.push(0);
    assert_eq!(TerminateMessage::parse(&body), Err(Error::BadMessageLength { what: "terminate", len: 53 }));
}

#[test]
fn reserved_terminate_bits_make_a_reading_inconsistent() {
    use iwarp_wire::terminate::{TerminateLayout, TerminateMessage};
    // siw layout, MPA CRC error, with reserved bit 0x08 of byte 2 set.
    let m = TerminateMessage::parse(&[0x02, 0x02, 0x08, 0x00]).unwrap();
    assert_eq!(m.layout, TerminateLayout::Inconsistent);
    // RFC layout, MPA CRC error, with reserved bit 0x01 of byte 2 set.
    let m = TerminateMessage::parse(&[0x20, 0x02, 0x01, 0x00]).unwrap();
    assert_eq!(m.layout, TerminateLayout::Inconsistent);
    // Either layout, with the reserved fourth byte non-zero.
    let m = TerminateMessage::parse(&[0x20, 0x02, 0x00, 0x01]).unwrap();
    assert_eq!(m.layout, TerminateLayout::Inconsistent);
    let m = TerminateMessage::parse(&[0x02, 0x02, 0x00, 0x01]).unwrap();
    assert_eq!(m.layout, TerminateLayout::Inconsistent);
}
