//! The incremental deframer on arbitrary streams.
//!
//! Input layout: byte 0 configures the deframer (bit 0 CRC, bit 1 markers, bit 2 take payload
//! through `need()` + `payload_placed`, bits 3-7 the largest ULPDU in units of 512 bytes, 0 for
//! 65535); bytes 1-4 are the sizes (plus one) of the chunks the stream is fed in, in turn; the
//! rest is the stream. Every other chunk, whole FPDUs are taken with `feed_whole` first. Every
//! FPDU found has its header and body parsed.
#![no_main]

use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, FpduHeader, Need};
use iwarp_wire::rdmap::{self, AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::TerminateMessage;
use iwarp_wire::{Opcode, SegmentHeader};
use libfuzzer_sys::fuzz_target;

fn inspect(h: &FpduHeader, payload: &[u8]) {
    assert_eq!(payload.len(), h.payload_len());
    let Ok(seg) = h.segment() else { return };
    let (bytes, len) = seg.to_bytes();
    assert_eq!(len, h.ddp_header().len());
    assert_eq!(SegmentHeader::parse(&bytes[..len]), Ok(seg));
    match seg.opcode {
        Opcode::ReadRequest => {
            if let Ok(r) = ReadRequest::parse(payload) {
                assert_eq!(r.to_bytes(), payload);
            }
        }
        Opcode::AtomicRequest => {
            let _ = AtomicRequest::parse(payload);
        }
        Opcode::AtomicResponse => {
            let _ = AtomicResponse::parse(payload);
        }
        Opcode::Terminate => {
            if let Ok(m) = TerminateMessage::parse(payload) {
                let _ = m.preferred().cause.to_string();
            }
        }
        Opcode::ImmediateData | Opcode::ImmediateDataSe => {
            let _ = rdmap::parse_immediate(payload);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else { return };
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let max_ulpdu = if cfg >> 3 == 0 { u16::MAX } else { u16::from(cfg >> 3) * 512 };
    let placed = cfg & 4 != 0;
    let mut d = Deframer::new(DeframerConfig { crc: cfg & 1 != 0, markers: cfg & 2 != 0, max_ulpdu });
    let mut header: Option<FpduHeader> = None;
    let mut payload = Vec::new();
    let mut at = 0;
    let mut turn = 0;
    while at < stream.len() {
        let chunk = sizes.get(turn % sizes.len().max(1)).map_or(stream.len(), |&s| usize::from(s) + 1);
        turn += 1;
        let end = (at + chunk).min(stream.len());
        while at < end {
            let need = d.need();
            assert!(!need.is_empty());
            if let (true, Need::Payload(n)) = (placed, need) {
                let k = d.payload_placed(&stream[at..end]);
                assert_eq!(k, n.min(end - at));
                payload.extend_from_slice(&stream[at..at + k]);
                at += k;
                continue;
            }
            // Every other chunk, whole FPDUs are taken in one call where possible.
            if turn % 2 == 1 {
                if let Some((n, h, p, _)) = d.feed_whole(&stream[at..end]) {
                    assert!(n <= end - at);
                    inspect(&h, p);
                    at += n;
                    continue;
                }
            }
            match d.feed(&stream[at..end]) {
                Ok((n, ev)) => {
                    // A header may be taken whole although `need` announced only its first bytes.
                    let most = match need {
                        Need::Header(k) => k.max(iwarp_wire::mpa::MAX_HEADER_LEN),
                        other => other.len(),
                    };
                    assert!(n > 0 && n <= most);
                    match ev {
                        Event::Header(h) => {
                            header = Some(h);
                            payload.clear();
                        }
                        Event::Payload(p) => payload.extend_from_slice(p),
                        Event::End(_) => {
                            let h = header.take().expect("a header before the end");
                            inspect(&h, &payload);
                            assert!(d.is_idle());
                        }
                        Event::None => {}
                    }
                    at += n;
                    assert_eq!(d.stream_offset(), at as u64);
                }
                Err(e) => {
                    assert_eq!(d.feed(b"more"), Err(e));
                    assert_eq!(d.payload_placed(b"more"), 0);
                    let _ = e.terminate_cause();
                    return;
                }
            }
        }
    }
});
