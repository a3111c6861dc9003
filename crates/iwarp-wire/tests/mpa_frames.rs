//! MPA Request/Reply views and RFC 6581 RTR sets, pinned to exact values.

use iwarp_wire::mpa::rr::{Frame, REPLY_KEY, REQUEST_KEY};
use iwarp_wire::mpa::{FrameKind, RtrType, RtrTypes};

const TYPES: [RtrType; 3] = [RtrType::Send, RtrType::Write, RtrType::Read];

/// Every subset of the three RTR types.
fn all_sets() -> impl Iterator<Item = RtrTypes> {
    (0u8..8).map(|b| RtrTypes { send: b & 1 != 0, write: b & 2 != 0, read: b & 4 != 0 })
}

#[test]
fn rtr_sets_intersect_contain_and_prefer_write_then_read_then_send() {
    for a in all_sets() {
        assert_eq!(a.contains(RtrType::Send), a.send);
        assert_eq!(a.contains(RtrType::Write), a.write);
        assert_eq!(a.contains(RtrType::Read), a.read);
        assert_eq!(a.is_empty(), !(a.send || a.write || a.read), "{a:?}");
        let want = if a.write {
            Some(RtrType::Write)
        } else if a.read {
            Some(RtrType::Read)
        } else if a.send {
            Some(RtrType::Send)
        } else {
            None
        };
        assert_eq!(a.preferred(), want, "{a:?}");
        for b in all_sets() {
            let i = a.intersect(b);
            for t in TYPES {
                assert_eq!(i.contains(t), a.contains(t) && b.contains(t), "{a:?} ∩ {b:?}");
            }
        }
    }
    assert!(RtrTypes::NONE.is_empty());
    assert!(!RtrTypes::ALL.is_empty());
    for t in TYPES {
        let only = RtrTypes::only(t);
        for u in TYPES {
            assert_eq!(only.contains(u), t == u);
        }
        assert_eq!(only.preferred(), Some(t));
    }
}

#[test]
fn frame_view_names_its_key_and_takes_a_bare_header() {
    let mut f = [0u8; 20];
    f[..16].copy_from_slice(&REQUEST_KEY);
    f[17] = 1;
    // A 20-byte frame without private data is whole.
    let view = Frame::new_checked(&f[..]).unwrap();
    assert_eq!(view.kind(), Some(FrameKind::Request));
    assert!(view.private_data().is_empty());
    f[..16].copy_from_slice(&REPLY_KEY);
    assert_eq!(Frame::new_checked(&f[..]).unwrap().kind(), Some(FrameKind::Reply));
    f[..16].copy_from_slice(b"MPA ID Xyz Frame");
    assert_eq!(Frame::new_checked(&f[..]).unwrap().kind(), None);
}

/// A revision-1 Request with `pd` bytes of private data, all 0xAB.
fn request_with_pd(pd: usize) -> Vec<u8> {
    let mut f = REQUEST_KEY.to_vec();
    f.extend_from_slice(&[0x40, 1]);
    f.extend_from_slice(&(pd as u16).to_be_bytes());
    f.extend(std::iter::repeat_n(0xAB, pd));
    f
}

#[test]
fn private_data_of_exactly_512_bytes_is_accepted() {
    use iwarp_wire::mpa::FrameRepr;
    use iwarp_wire::Error;
    // RFC 5044 §7.1: PD_Length "MUST NOT exceed 512".
    let f = request_with_pd(512);
    let (r, used) = FrameRepr::parse(&f, FrameKind::Request).unwrap().unwrap();
    assert_eq!((used, r.private_data.len()), (532, 512));
    let f = request_with_pd(513);
    assert_eq!(FrameRepr::parse(&f, FrameKind::Request), Err(Error::PrivateDataTooLong(513)));
}

#[test]
fn parse_exact_says_how_many_bytes_a_truncated_frame_needs() {
    use iwarp_wire::mpa::FrameRepr;
    use iwarp_wire::Error;
    let f = request_with_pd(4);
    // Inside the key and inside the fixed header: the 20-byte header is needed.
    for n in [10, 16, 19] {
        assert_eq!(
            FrameRepr::parse_exact(&f[..n], FrameKind::Request),
            Err(Error::Truncated { needed: 20, available: n })
        );
    }
    // The header is in: header and private data are needed.
    for n in [20, 23] {
        assert_eq!(
            FrameRepr::parse_exact(&f[..n], FrameKind::Request),
            Err(Error::Truncated { needed: 24, available: n })
        );
    }
    assert_eq!(FrameRepr::parse_exact(&f, FrameKind::Request).unwrap().private_data, &[0xAB; 4]);
}

#[test]
fn pieces_cover_the_fpdu_exactly() {
    use iwarp_wire::mpa::{Framer, Piece};
    let payload = [7u8; 1000];
    let header = [0xc1u8, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for markers in [false, true] {
        let mut f = Framer::new(true, markers);
        let (mut arena, mut pieces) = (Vec::new(), Vec::new());
        let n = f.frame(&header, &[&payload], &mut arena, &mut pieces).unwrap();
        assert_eq!(pieces.iter().map(Piece::len).sum::<usize>(), n);
        assert!(pieces.iter().all(|p| !p.is_empty()));
        let payload_len: usize = pieces.iter().filter(|p| matches!(p, Piece::Payload { .. })).map(Piece::len).sum();
        assert_eq!(payload_len, 1000);
    }
    assert!(Piece::Inline { start: 3, len: 0 }.is_empty());
    assert_eq!(Piece::Payload { index: 1, start: 2, len: 5 }.len(), 5);
}

#[test]
fn framer_reports_its_settings() {
    use iwarp_wire::mpa::Framer;
    for crc in [false, true] {
        for markers in [false, true] {
            let f = Framer::new(crc, markers);
            assert_eq!((f.crc_enabled(), f.markers_enabled()), (crc, markers));
        }
    }
}

#[test]
fn framer_takes_ulpdus_up_to_65535_bytes_and_counts_what_it_wrote() {
    use iwarp_wire::mpa::Framer;
    use iwarp_wire::Error;
    let untagged = [0x41u8, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let tagged = [0xc1u8, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let big = vec![0u8; 65535 - 18];
    let mut f = Framer::new(true, false);
    let mut out = Vec::new();
    // 2 + 65535 + 3 pad + 4 CRC.
    assert_eq!(f.frame_to_vec(&untagged, &[&big], &mut out), Ok(65544));
    assert_eq!(out.len(), 65544);
    // Length field, ULPDU, pad to a multiple of 4, CRC.
    for (ulpdu, len) in [(0usize, 8usize), (1, 8), (2, 8), (3, 12), (7, 16)] {
        let before = out.len();
        let wrote = f.frame_to_vec(&[], &[&vec![7u8; ulpdu]], &mut out).unwrap();
        assert_eq!((wrote, out.len() - before), (len, len), "{ulpdu}");
    }
    assert_eq!(f.stream_offset(), out.len() as u64);
    // One byte more does not fit the length field; the error says which buffer model.
    let one_more = [&big[..], &[0u8]];
    let e = f.frame_to_vec(&untagged, &one_more, &mut Vec::new()).unwrap_err();
    assert_eq!(e, Error::UlpduTooLong { len: 65535, max: 65535, tagged: false });
    let big_t = vec![0u8; 65535 - 14 + 1];
    let e = f.frame_to_vec(&tagged, &[&big_t], &mut Vec::new()).unwrap_err();
    assert_eq!(e, Error::UlpduTooLong { len: 65535, max: 65535, tagged: true });
}
