//! The deframer's two ways in, pinned to exact values: `feed` taking a whole header at once,
//! and `feed_whole` taking a complete FPDU, with every case in which it must decline and leave
//! the bytes to `feed`.

use iwarp_wire::crc;
use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, Framer, Need, MAX_HEADER_LEN};
use iwarp_wire::Error;

/// Untagged Send, L = 1, queue 0, MSN 1, MO 0.
const SEND_HDR: [u8; 18] = [0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
/// Tagged Write, L = 1, STag 0x100, TO 0.
const WRITE_HDR: [u8; 14] = [0xc1, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn fpdu(crc: bool, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Framer::new(crc, false).frame_to_vec(header, &[payload], &mut out).unwrap();
    out
}

#[test]
fn need_and_config_report_what_they_hold() {
    let cfg = DeframerConfig { crc: false, markers: true, max_ulpdu: 1000 };
    assert_eq!(Deframer::new(cfg).config(), cfg);
    assert_eq!(MAX_HEADER_LEN, 20);
    for need in [Need::Header(3), Need::Payload(4096), Need::Marker(2), Need::Trailer(7)] {
        let n = match need {
            Need::Header(n) | Need::Payload(n) | Need::Marker(n) | Need::Trailer(n) => n,
        };
        assert_eq!(need.len(), n);
        assert!(!need.is_empty());
    }
    assert!(Need::Payload(0).is_empty());
    // Between FPDUs the deframer asks for the length field and the DDP control byte.
    assert_eq!(Deframer::new(DeframerConfig::default()).need(), Need::Header(3));
}

#[test]
fn fpdu_header_says_tagged_or_untagged() {
    for (hdr, tagged) in [(&WRITE_HDR[..], true), (&SEND_HDR[..], false)] {
        let s = fpdu(true, hdr, b"data");
        let mut d = Deframer::new(DeframerConfig::default());
        let (n, ev) = d.feed(&s).unwrap();
        let Event::Header(h) = ev else { panic!("{ev:?}") };
        // Without markers a header whose control byte is in the input is taken in one piece.
        assert_eq!(n, 2 + hdr.len());
        assert_eq!(h.tagged(), tagged);
        assert_eq!(h.ddp_header(), hdr);
        assert_eq!(h.payload_len(), 4);
    }
}

#[test]
fn feed_whole_takes_a_complete_fpdu() {
    for crc_on in [true, false] {
        let mut stream = fpdu(crc_on, &SEND_HDR, b"hello");
        let first = stream.len();
        // 2 + 18 + 5 = 25 bytes of length and ULPDU, 3 of pad, 4 of CRC.
        assert_eq!(first, 32);
        stream.extend_from_slice(&fpdu(crc_on, &WRITE_HDR, b""));
        let mut d = Deframer::new(DeframerConfig { crc: crc_on, ..Default::default() });
        let (n, h, payload, end) = d.feed_whole(&stream).unwrap();
        assert_eq!(n, 32);
        assert_eq!(h.ulpdu_len(), 23);
        assert_eq!(h.ddp_header(), &SEND_HDR);
        assert_eq!(payload, b"hello");
        assert_eq!(end.wire_len, 32);
        let want_crc = if crc_on { crc::crc32c(&stream[..28]) } else { 0 };
        assert_eq!(end.crc, want_crc);
        assert_eq!(d.stream_offset(), 32);
        assert!(d.is_idle());
        // The next one has no payload: its ULPDU is exactly its header.
        let (n, h, payload, end) = d.feed_whole(&stream[first..]).unwrap();
        assert_eq!((n, h.ulpdu_len(), payload.len(), end.wire_len), (20, 14, 0, 20));
        assert_eq!(d.stream_offset(), 52);
    }
}

#[test]
fn feed_whole_takes_a_ulpdu_of_exactly_the_maximum() {
    let s = fpdu(true, &SEND_HDR, &[7u8; 10]);
    let mut d = Deframer::new(DeframerConfig { max_ulpdu: 28, ..Default::default() });
    assert_eq!(d.feed_whole(&s).map(|(n, ..)| n), Some(s.len()));
}

#[test]
fn feed_whole_declines_and_feed_reports_the_error() {
    let good = fpdu(true, &SEND_HDR, b"hello");

    // Incomplete input: nothing consumed, nothing reported.
    let mut d = Deframer::new(DeframerConfig::default());
    assert!(d.feed_whole(&good[..good.len() - 1]).is_none());
    assert!(d.feed_whole(&good[..2]).is_none());
    assert_eq!(d.stream_offset(), 0);

    // Longer than the receiver accepts.
    let mut d = Deframer::new(DeframerConfig { max_ulpdu: 22, ..Default::default() });
    assert!(d.feed_whole(&good).is_none());
    assert_eq!(d.feed(&good).unwrap_err(), Error::UlpduTooLong { len: 23, max: 22, tagged: false });

    // A ULPDU_Length shorter than the DDP header, with plenty of bytes behind it.
    let mut short = good.clone();
    short[..2].copy_from_slice(&10u16.to_be_bytes());
    for crc in [true, false] {
        let mut d = Deframer::new(DeframerConfig { crc, ..Default::default() });
        assert!(d.feed_whole(&short).is_none());
        assert_eq!(d.feed(&short).unwrap_err(), Error::UlpduTooShort { len: 10, needed: 18 });
    }

    // A bad CRC is left to `feed`, which reports it; with CRC off the same bytes are taken.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    let mut d = Deframer::new(DeframerConfig::default());
    assert!(d.feed_whole(&bad).is_none());
    let mut d = Deframer::new(DeframerConfig { crc: false, ..Default::default() });
    assert!(d.feed_whole(&bad).is_some());
}

#[test]
fn feed_whole_declines_unless_between_fpdus_without_markers() {
    let good = fpdu(true, &SEND_HDR, b"hello");

    // Markers on.
    let mut d = Deframer::new(DeframerConfig { markers: true, ..Default::default() });
    assert!(d.feed_whole(&good).is_none());

    // After an error.
    let mut d = Deframer::new(DeframerConfig { max_ulpdu: 22, ..Default::default() });
    assert!(d.feed(&good).is_err());
    let mut d2 = d.clone();
    assert!(d2.feed_whole(&good).is_none());

    // Part of a header already taken.
    let mut d = Deframer::new(DeframerConfig::default());
    assert_eq!(d.feed(&good[..1]).unwrap(), (1, Event::None));
    assert!(d.feed_whole(&good[1..]).is_none());

    // In the middle of an FPDU (its header taken, payload next).
    let mut d = Deframer::new(DeframerConfig::default());
    let (n, _) = d.feed(&good).unwrap();
    assert_eq!(n, 20);
    let mut again = good.clone();
    again.extend_from_slice(&good);
    assert!(d.feed_whole(&again[n..]).is_none());
    assert_eq!(d.stream_offset(), 20);
}

/// Header bytes and payload of one FPDU.
type Fpdu = (Vec<u8>, Vec<u8>);

/// Feeds `stream` in `chunk`-byte pieces; returns each FPDU.
fn feed_all(d: &mut Deframer, stream: &[u8], chunk: usize) -> Result<Vec<Fpdu>, Error> {
    let mut out = Vec::new();
    let mut cur: Option<Fpdu> = None;
    for piece in stream.chunks(chunk) {
        let mut rest = piece;
        while !rest.is_empty() {
            let (n, ev) = d.feed(rest)?;
            assert!(n > 0, "the deframer took no byte");
            match ev {
                Event::Header(h) => cur = Some((h.as_bytes().to_vec(), Vec::new())),
                Event::Payload(p) => cur.as_mut().unwrap().1.extend_from_slice(p),
                Event::End(_) => out.push(cur.take().unwrap()),
                Event::None => {}
            }
            rest = &rest[n..];
        }
    }
    Ok(out)
}

#[test]
fn feed_takes_a_ulpdu_of_exactly_the_maximum() {
    let s = fpdu(true, &SEND_HDR, b"hello");
    for chunk in [1, 3, 4, 64] {
        let mut d = Deframer::new(DeframerConfig { max_ulpdu: 23, ..Default::default() });
        let got = feed_all(&mut d, &s, chunk).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"hello");
        let mut d = Deframer::new(DeframerConfig { max_ulpdu: 22, ..Default::default() });
        assert_eq!(feed_all(&mut d, &s, chunk), Err(Error::UlpduTooLong { len: 23, max: 22, tagged: false }));
    }
}

#[test]
fn feed_reports_each_fpdus_wire_length_and_crc() {
    let mut s = fpdu(true, &SEND_HDR, b"hello");
    let second = fpdu(true, &WRITE_HDR, b"");
    s.extend_from_slice(&second);
    let mut d = Deframer::new(DeframerConfig::default());
    let mut ends = Vec::new();
    let mut rest = &s[..];
    while !rest.is_empty() {
        let (n, ev) = d.feed(rest).unwrap();
        assert!(n > 0, "the deframer took no byte");
        if let Event::End(e) = ev {
            ends.push(e);
        }
        rest = &rest[n..];
    }
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[0].wire_len, 32);
    assert_eq!(ends[1].wire_len, 20);
    assert_eq!(ends[1].crc, crc::from_wire(second[16..20].try_into().unwrap()));
    assert_eq!(d.stream_offset(), 52);
}
