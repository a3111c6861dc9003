//! MPA: Marker PDU Aligned framing for TCP (RFC 5044, enhanced connection setup of RFC 6581).
//!
//! - [`rr`]: the Request and Reply frames of the startup phase.
//! - [`Framer`]: builds FPDUs (length, ULPDU, pad, CRC, markers) as pieces, leaving payload
//!   where it is so the caller can hand it to `writev` without copying it.
//! - [`Deframer`]: takes the received stream in any chunks and says what its next bytes are
//!   (header, payload, marker, trailer), so payload can be read straight into its destination.
//!
//! Sizes: an FPDU is `ULPDU_Length (2) ‖ ULPDU ‖ pad (0..3) ‖ CRC (4)`, a multiple of 4 bytes,
//! plus a 4-byte marker every 512 bytes of the stream when the receiver asked for markers.

mod deframer;
mod framer;
pub mod rr;

pub use deframer::{Deframer, DeframerConfig, Event, FpduEnd, FpduHeader, Need, MAX_HEADER_LEN};
pub use framer::{Framer, Piece, NO_PAYLOAD};
pub use rr::{EnhancedParams, FrameKind, FrameRepr, RtrType, RtrTypes};

/// Length of the ULPDU_Length field.
pub const LENGTH_FIELD_LEN: usize = 2;
/// Length of the CRC field (present even when CRC is off).
pub const CRC_LEN: usize = 4;
/// Length of a marker.
pub const MARKER_LEN: usize = 4;
/// Markers sit every this many bytes of the stream (RFC 5044 §4.3).
pub const MARKER_INTERVAL: u64 = 512;
/// The largest ULPDU the 16-bit length field can describe.
pub const MAX_ULPDU: usize = u16::MAX as usize;
/// MULPDU is never shrunk below this (RFC 5044 §5.1: "MULPDU MUST NOT be less than 128").
pub const MIN_MULPDU: usize = 128;

/// Pad bytes after a ULPDU of `ulpdu_len` bytes, so that the FPDU is a multiple of 4
/// (RFC 5044 §4.1).
#[inline]
pub fn pad_len(ulpdu_len: usize) -> usize {
    (4 - (ulpdu_len + LENGTH_FIELD_LEN) % 4) % 4
}

/// Bytes of an FPDU carrying `ulpdu_len` bytes of ULPDU, not counting markers.
#[inline]
pub fn fpdu_len(ulpdu_len: usize) -> usize {
    LENGTH_FIELD_LEN + ulpdu_len + pad_len(ulpdu_len) + CRC_LEN
}

/// The largest ULPDU that keeps an FPDU within one TCP segment of `emss` bytes
/// (RFC 5044 §5.1 formulas), never below [`MIN_MULPDU`] nor above [`MAX_ULPDU`].
pub fn mulpdu(emss: usize, markers: bool) -> usize {
    let overhead = if markers { 6 + 4 * emss.div_ceil(512) + emss % 4 } else { 6 + emss % 4 };
    emss.saturating_sub(overhead).clamp(MIN_MULPDU, MAX_ULPDU)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_and_fpdu_lengths() {
        assert_eq!(pad_len(0), 2);
        assert_eq!(pad_len(2), 0);
        assert_eq!(pad_len(22), 0);
        assert_eq!(pad_len(23), 3);
        assert_eq!(pad_len(46), 0);
        assert_eq!(fpdu_len(0), 8);
        assert_eq!(fpdu_len(22), 28);
        assert_eq!(fpdu_len(78), 84);
        for n in 0..100 {
            assert_eq!(fpdu_len(n) % 4, 0);
        }
    }

    #[test]
    fn mulpdu_follows_rfc5044_section_5_1() {
        assert_eq!(mulpdu(1460, false), 1454);
        assert_eq!(mulpdu(1460, true), 1442);
        // Loopback MSS seen with Linux siw: 65474-byte ULPDUs.
        assert_eq!(mulpdu(65483, false), 65474);
        assert_eq!(mulpdu(100, false), MIN_MULPDU);
        assert_eq!(mulpdu(1 << 20, false), MAX_ULPDU);
    }
}
