//! DDP/RDMAP headers and RDMAP message bodies on raw bytes: no panic, and whatever parses
//! survives emit → parse.
#![no_main]

use iwarp_wire::rdmap::{self, AtomicRequest, AtomicResponse, ReadRequest};
use iwarp_wire::terminate::TerminateMessage;
use iwarp_wire::{Opcode, SegmentHeader};
use libfuzzer_sys::fuzz_target;

fn body(opcode: Opcode, b: &[u8]) {
    match opcode {
        Opcode::ReadRequest => {
            if let Ok(r) = ReadRequest::parse(b) {
                assert_eq!(r.to_bytes(), b);
            }
        }
        Opcode::AtomicRequest => {
            if let Ok(r) = AtomicRequest::parse(b) {
                assert_eq!(AtomicRequest::parse(&r.to_bytes()), Ok(r));
            }
        }
        Opcode::AtomicResponse => {
            if let Ok(r) = AtomicResponse::parse(b) {
                assert_eq!(r.to_bytes(), b);
            }
        }
        Opcode::Terminate => terminate(b),
        Opcode::ImmediateData | Opcode::ImmediateDataSe => {
            let _ = rdmap::parse_immediate(b);
        }
        _ => {}
    }
}

fn terminate(b: &[u8]) {
    let Ok(m) = TerminateMessage::parse(b) else { return };
    let _ = m.preferred().cause.to_string();
    // Both readings re-emit in RFC order and read back the same.
    for t in [m.rfc, m.siw] {
        let mut out = vec![0u8; t.buffer_len()];
        if t.emit(&mut out).is_ok() {
            assert_eq!(TerminateMessage::parse(&out).map(|r| r.rfc), Ok(t));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = SegmentHeader::parse(data) {
        let (bytes, len) = h.to_bytes();
        assert_eq!(SegmentHeader::parse(&bytes[..len]), Ok(h));
        body(h.opcode, &data[len..]);
    }
    for op in
        [Opcode::ReadRequest, Opcode::AtomicRequest, Opcode::AtomicResponse, Opcode::Terminate, Opcode::ImmediateData]
    {
        body(op, data);
    }
});
