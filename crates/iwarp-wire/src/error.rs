//! The one error type of the codecs; every variant knows the Terminate an RFC assigns to it.

use crate::mpa::FrameKind;
use crate::rdmap::Opcode;
use crate::terminate::{Mpa, RemoteOperation, TaggedBuffer, TerminateCause, UntaggedBuffer};

/// A malformed frame, header or message.
///
/// [`Error::terminate_cause`] gives the (layer, error type, code) a Terminate for it must carry.
/// Where no RFC names a code for a malformation (a segment too short for its own header, a
/// message body of the wrong size), the cause is RDMAP Remote Operation "Unspecified" (0xFF);
/// `docs/deviations.md` lists these choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A header or frame is shorter than its fixed part.
    #[error("truncated: {needed} bytes needed, {available} present")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The first 16 bytes are neither MPA key, or the wrong one.
    #[error("not an MPA {expected:?} frame: wrong key")]
    BadKey {
        /// The frame that was expected.
        expected: FrameKind,
    },
    /// An MPA revision this implementation cannot interoperate with (it speaks 1 and 2).
    #[error("unsupported MPA revision {0}")]
    UnsupportedRevision(u8),
    /// MPA private data longer than RFC 5044's 512-byte limit.
    #[error("MPA private data length {0} exceeds 512")]
    PrivateDataTooLong(u16),
    /// Bytes follow an MPA Request or Reply before the peer could have seen the answer to it.
    #[error("{extra} bytes follow the MPA {kind:?} frame")]
    TrailingBytes {
        /// The frame.
        kind: FrameKind,
        /// How many bytes followed it.
        extra: usize,
    },
    /// An enhanced (RFC 6581) frame whose private data is too short for the IRD/ORD block.
    #[error("enhanced MPA frame has {0} bytes of private data, fewer than the 4-byte IRD/ORD block")]
    MissingEnhancedParams(u16),
    /// The FPDU's CRC does not match.
    #[error("MPA CRC mismatch: received {received:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC carried by the FPDU.
        received: u32,
        /// CRC computed over it.
        computed: u32,
    },
    /// A marker's FPDU pointer does not point at the start of the FPDU that holds it.
    #[error("MPA marker at stream offset {offset} points {found} bytes back; the FPDU starts {expected} bytes back")]
    Marker {
        /// Stream offset of the marker (since the start of full operation).
        offset: u64,
        /// FPDUPTR the marker should carry.
        expected: u16,
        /// FPDUPTR it carries.
        found: u16,
    },
    /// A ULPDU longer than this receiver accepts.
    #[error("ULPDU length {len} exceeds the maximum {max}")]
    UlpduTooLong {
        /// ULPDU_Length of the FPDU.
        len: u16,
        /// The largest this receiver accepts.
        max: u16,
        /// Whether the segment is tagged.
        tagged: bool,
    },
    /// A ULPDU shorter than the DDP header its control byte announces.
    #[error("ULPDU length {len} is shorter than its {needed}-byte DDP header")]
    UlpduTooShort {
        /// ULPDU_Length of the FPDU.
        len: u16,
        /// Length of the announced DDP header.
        needed: u16,
    },
    /// DDP version other than 1.
    #[error("DDP version {version} (expected 1)")]
    DdpVersion {
        /// The version received.
        version: u8,
        /// Whether the segment is tagged.
        tagged: bool,
    },
    /// RDMAP version other than 1.
    #[error("RDMAP version {0} (expected 1)")]
    RdmapVersion(u8),
    /// A reserved opcode, or an opcode on the wrong buffer model.
    #[error("unexpected RDMAP opcode {opcode:?} on a {} segment", if *tagged { "tagged" } else { "untagged" })]
    UnexpectedOpcode {
        /// The opcode.
        opcode: Opcode,
        /// Whether the segment is tagged.
        tagged: bool,
    },
    /// An untagged segment on a queue its opcode does not use.
    #[error("invalid queue number {qn} for {opcode:?}")]
    InvalidQueueNumber {
        /// The queue number.
        qn: u32,
        /// The opcode.
        opcode: Opcode,
    },
    /// A message body of the wrong size for its kind.
    #[error("{what} body of {len} bytes has the wrong length")]
    BadMessageLength {
        /// Which body.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

impl Error {
    /// The Terminate cause an RFC assigns to this error.
    pub fn terminate_cause(&self) -> TerminateCause {
        match *self {
            // RFC 5044 §8 / RFC 6581 §8: every request/reply format error is code 4.
            Error::BadKey { .. }
            | Error::UnsupportedRevision(_)
            | Error::PrivateDataTooLong(_)
            | Error::TrailingBytes { .. }
            | Error::MissingEnhancedParams(_) => TerminateCause::Mpa(Mpa::InvalidRequestReply),
            // RFC 5044 §8: "Received MPA CRC does not match".
            Error::Crc { .. } => TerminateCause::Mpa(Mpa::Crc),
            // RFC 5044 §8: "Marker and ULPDU_Length disagree on FPDU start".
            Error::Marker { .. } => TerminateCause::Mpa(Mpa::Marker),
            // RFC 5041 §7.2 has no "segment too long" code; a tagged one cannot be placed within
            // bounds, an untagged one is a message too long for any buffer.
            Error::UlpduTooLong { tagged: true, .. } => TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds),
            Error::UlpduTooLong { tagged: false, .. } => TerminateCause::UntaggedBuffer(UntaggedBuffer::TooLong),
            // RFC 5041 §7.2: Invalid DDP version, per buffer model.
            Error::DdpVersion { tagged: true, .. } => TerminateCause::TaggedBuffer(TaggedBuffer::InvalidDdpVersion),
            Error::DdpVersion { tagged: false, .. } => {
                TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidDdpVersion)
            }
            // RFC 5040 §7.2: Invalid RDMAP version / Unexpected OpCode.
            Error::RdmapVersion(_) => TerminateCause::RemoteOperation(RemoteOperation::InvalidRdmapVersion),
            Error::UnexpectedOpcode { .. } => TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode),
            // RFC 5041 §7.2: Invalid QN.
            Error::InvalidQueueNumber { .. } => TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidQn),
            // No RFC code: see the type's documentation.
            Error::Truncated { .. } | Error::UlpduTooShort { .. } | Error::BadMessageLength { .. } => {
                TerminateCause::RemoteOperation(RemoteOperation::Unspecified)
            }
        }
    }
}
