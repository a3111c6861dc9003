//! MPA Request/Reply parsing: arbitrary bytes parsed as both frames never panic, and a frame
//! that parses re-emits to the same bytes (reserved flag bits aside).
#![no_main]

use iwarp_wire::mpa::rr::flags;
use iwarp_wire::mpa::{FrameKind, FrameRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [FrameKind::Request, FrameKind::Reply] {
        let _ = FrameRepr::parse_exact(data, kind);
        let Ok(Some((repr, used))) = FrameRepr::parse(data, kind) else { continue };
        assert_eq!(used, repr.buffer_len());
        assert!(used <= data.len());
        let out = repr.to_vec().expect("a parsed frame can be emitted");
        assert_eq!(out.len(), used);
        // Key, revision, length and private data come back unchanged; of the flags byte, the
        // bits with a meaning do.
        assert_eq!(out[..16], data[..16]);
        assert_eq!(out[17..], data[17..used]);
        let meaning =
            flags::MARKERS | flags::CRC | flags::REJECT | if repr.revision >= 2 { flags::ENHANCED } else { 0 };
        assert_eq!(out[16] & meaning, data[16] & meaning);
        let (again, n) = FrameRepr::parse(&out, kind).expect("re-parse").expect("whole frame");
        assert_eq!(n, used);
        assert_eq!(FrameRepr { reserved_flags: 0, ..again }, FrameRepr { reserved_flags: 0, ..repr });
    }
});
