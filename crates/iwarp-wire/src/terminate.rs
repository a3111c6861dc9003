//! Terminate: the error code points of every layer (RFC 5040 §4.8 and §7, RFC 5041 §7.2,
//! RFC 5044 §8, RFC 6581 §8) and the Terminate message body.
//!
//! A Terminate names the layer that found an error (RDMAP 0, DDP 1, LLP 2), an error type and an
//! error code; [`TerminateCause`] is that triple as a typed value. [`TerminateRepr`] is the message
//! body that follows the untagged DDP header on queue 2.
//!
//! **Two bit layouts.** RFC 5040 puts the Layer in the high nibble of the first control byte and the
//! M/D/R flags in the top bits of the third. Linux siw declares the control word as a C bit-field
//! and, on little-endian hosts, sends Layer in the *low* nibble and M/D/R in the *low* bits of the
//! third byte. We always emit the RFC layout. [`TerminateMessage::parse`] reads a received body both
//! ways and says which reading is self-consistent, so a user can see what a Linux peer meant; see
//! `docs/deviations.md`.

use crate::ddp;
use crate::rdmap::READ_REQUEST_LEN;
use crate::Error;

enum_with_unknown! {
    /// The layer that detected the error (RFC 5040 Figure 9).
    pub enum Layer(u8) {
        /// RDMAP, layer 0.
        Rdmap = 0,
        /// DDP, layer 1.
        Ddp = 1,
        /// The lower layer protocol, i.e. MPA over TCP, layer 2.
        Llp = 2,
    }
}

enum_with_unknown! {
    /// RDMAP layer, error type 1 "Remote Protection Error" codes (RFC 5040 Figure 9).
    pub enum RemoteProtection(u8) {
        /// 0x00 Invalid STag.
        InvalidStag = 0x00,
        /// 0x01 Base or bounds violation.
        BaseOrBounds = 0x01,
        /// 0x02 Access rights violation.
        AccessRights = 0x02,
        /// 0x03 STag not associated with RDMAP Stream.
        StagNotAssociated = 0x03,
        /// 0x04 TO wrap.
        ToWrap = 0x04,
        /// 0x09 STag cannot be invalidated.
        CannotInvalidate = 0x09,
        /// 0xFF Unspecified error.
        Unspecified = 0xFF,
    }
}

enum_with_unknown! {
    /// RDMAP layer, error type 2 "Remote Operation Error" codes (RFC 5040 Figure 9, RFC 7306 §8).
    pub enum RemoteOperation(u8) {
        /// 0x05 Invalid RDMAP version.
        InvalidRdmapVersion = 0x05,
        /// 0x06 Unexpected OpCode (also: an RFC 7306 operation the receiver does not support).
        UnexpectedOpcode = 0x06,
        /// 0x07 Catastrophic error, localized to RDMAP Stream (also: misaligned atomic, IRD exceeded).
        CatastrophicStream = 0x07,
        /// 0x08 Catastrophic error, global.
        CatastrophicGlobal = 0x08,
        /// 0x09 STag cannot be invalidated.
        CannotInvalidate = 0x09,
        /// 0xFF Unspecified error.
        Unspecified = 0xFF,
    }
}

enum_with_unknown! {
    /// DDP layer, error type 1 "Tagged Buffer Error" codes (RFC 5041 §7.2).
    pub enum TaggedBuffer(u8) {
        /// 0x00 Invalid STag.
        InvalidStag = 0x00,
        /// 0x01 Base or bounds violation.
        BaseOrBounds = 0x01,
        /// 0x02 STag not associated with DDP Stream.
        StagNotAssociated = 0x02,
        /// 0x03 TO wrap.
        ToWrap = 0x03,
        /// 0x04 Invalid DDP version.
        InvalidDdpVersion = 0x04,
    }
}

enum_with_unknown! {
    /// DDP layer, error type 2 "Untagged Buffer Error" codes (RFC 5041 §7.2).
    pub enum UntaggedBuffer(u8) {
        /// 0x01 Invalid QN.
        InvalidQn = 0x01,
        /// 0x02 Invalid MSN, no buffer available.
        NoBuffer = 0x02,
        /// 0x03 Invalid MSN, MSN range is not valid.
        MsnRange = 0x03,
        /// 0x04 Invalid MO.
        InvalidMo = 0x04,
        /// 0x05 DDP message too long for available buffer.
        TooLong = 0x05,
        /// 0x06 Invalid DDP version.
        InvalidDdpVersion = 0x06,
    }
}

enum_with_unknown! {
    /// LLP layer, error type 0 (MPA) codes (RFC 5044 §8, RFC 6581 §8).
    pub enum Mpa(u8) {
        /// 0x01 TCP connection closed, terminated or lost.
        ConnectionLost = 0x01,
        /// 0x02 Received MPA CRC does not match the computed one.
        Crc = 0x02,
        /// 0x03 Marker and ULPDU_Length disagree on where the FPDU starts (CRC valid).
        Marker = 0x03,
        /// 0x04 Invalid MPA Request or Reply frame.
        InvalidRequestReply = 0x04,
        /// 0x05 Local catastrophic error (RFC 6581).
        LocalCatastrophic = 0x05,
        /// 0x06 Insufficient IRD resources (RFC 6581).
        InsufficientIrd = 0x06,
        /// 0x07 No matching RTR option (RFC 6581).
        NoMatchingRtr = 0x07,
    }
}

/// The raw (layer, error type, error code) triple of a Terminate control field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TerminateCode {
    /// Layer, 4 bits.
    pub layer: u8,
    /// Error type, 4 bits.
    pub etype: u8,
    /// Error code, 8 bits.
    pub ecode: u8,
}

/// Why a Terminate is sent: a typed (layer, error type, error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TerminateCause {
    /// RDMAP layer, error type 0: local catastrophic error (the code is meaningless and sent as 0).
    RdmapCatastrophic,
    /// RDMAP layer, error type 1.
    RemoteProtection(RemoteProtection),
    /// RDMAP layer, error type 2.
    RemoteOperation(RemoteOperation),
    /// DDP layer, error type 0: local catastrophic error.
    DdpCatastrophic,
    /// DDP layer, error type 1.
    TaggedBuffer(TaggedBuffer),
    /// DDP layer, error type 2.
    UntaggedBuffer(UntaggedBuffer),
    /// LLP layer, error type 0 (MPA).
    Mpa(Mpa),
    /// A (layer, error type) pair no RFC assigns.
    Other(TerminateCode),
}

impl TerminateCause {
    /// The wire triple.
    pub fn code(self) -> TerminateCode {
        let (layer, etype, ecode) = match self {
            TerminateCause::RdmapCatastrophic => (0, 0, 0),
            TerminateCause::RemoteProtection(c) => (0, 1, c.into()),
            TerminateCause::RemoteOperation(c) => (0, 2, c.into()),
            TerminateCause::DdpCatastrophic => (1, 0, 0),
            TerminateCause::TaggedBuffer(c) => (1, 1, c.into()),
            TerminateCause::UntaggedBuffer(c) => (1, 2, c.into()),
            TerminateCause::Mpa(c) => (2, 0, c.into()),
            TerminateCause::Other(code) => return code,
        };
        TerminateCode { layer, etype, ecode }
    }

    /// Names a wire triple. Layer and error type values must fit in 4 bits; larger ones are masked.
    pub fn from_code(code: TerminateCode) -> Self {
        let (layer, etype, ecode) = (code.layer & 0xF, code.etype & 0xF, code.ecode);
        match (layer, etype) {
            // RFC 5040 Figure 9: "This error type does not have an error code. Any value ... is acceptable."
            (0, 0) => TerminateCause::RdmapCatastrophic,
            (0, 1) => TerminateCause::RemoteProtection(ecode.into()),
            (0, 2) => TerminateCause::RemoteOperation(ecode.into()),
            (1, 0) => TerminateCause::DdpCatastrophic,
            (1, 1) => TerminateCause::TaggedBuffer(ecode.into()),
            (1, 2) => TerminateCause::UntaggedBuffer(ecode.into()),
            (2, 0) => TerminateCause::Mpa(ecode.into()),
            _ => TerminateCause::Other(TerminateCode { layer, etype, ecode }),
        }
    }

    /// `true` if every part of the triple is a code point an RFC assigns.
    pub fn is_known(self) -> bool {
        match self {
            TerminateCause::RdmapCatastrophic | TerminateCause::DdpCatastrophic => true,
            TerminateCause::RemoteProtection(c) => c.is_known(),
            TerminateCause::RemoteOperation(c) => c.is_known(),
            TerminateCause::TaggedBuffer(c) => c.is_known(),
            TerminateCause::UntaggedBuffer(c) => c.is_known(),
            TerminateCause::Mpa(c) => c.is_known(),
            TerminateCause::Other(_) => false,
        }
    }

    /// The layer of this cause.
    pub fn layer(self) -> Layer {
        self.code().layer.into()
    }

    /// Which headers RFC 5040 Figure 10 says a Terminate for this cause carries:
    /// `(DDP header and segment length, RDMA Read Request header)`. The RDMA header is only
    /// carried for Remote Protection errors of a Read Request or a Send with Invalidate, which
    /// the caller knows; this returns whether the cause allows it.
    pub fn carries_headers(self) -> (bool, bool) {
        match self {
            TerminateCause::RdmapCatastrophic => (false, false),
            TerminateCause::RemoteProtection(_) => (true, true),
            TerminateCause::RemoteOperation(_) => (true, false),
            TerminateCause::DdpCatastrophic => (false, false),
            TerminateCause::TaggedBuffer(_) | TerminateCause::UntaggedBuffer(_) => (true, false),
            TerminateCause::Mpa(_) | TerminateCause::Other(_) => (false, false),
        }
    }
}

impl core::fmt::Display for TerminateCause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let c = self.code();
        let what: &str = match *self {
            TerminateCause::RdmapCatastrophic => "RDMAP local catastrophic error",
            TerminateCause::RemoteProtection(p) => match p {
                RemoteProtection::InvalidStag => "RDMAP remote protection: invalid STag",
                RemoteProtection::BaseOrBounds => "RDMAP remote protection: base or bounds violation",
                RemoteProtection::AccessRights => "RDMAP remote protection: access rights violation",
                RemoteProtection::StagNotAssociated => "RDMAP remote protection: STag not associated with RDMAP stream",
                RemoteProtection::ToWrap => "RDMAP remote protection: TO wrap",
                RemoteProtection::CannotInvalidate => "RDMAP remote protection: STag cannot be invalidated",
                RemoteProtection::Unspecified => "RDMAP remote protection: unspecified error",
                RemoteProtection::Unknown(_) => "RDMAP remote protection: unassigned code",
            },
            TerminateCause::RemoteOperation(o) => match o {
                RemoteOperation::InvalidRdmapVersion => "RDMAP remote operation: invalid RDMAP version",
                RemoteOperation::UnexpectedOpcode => "RDMAP remote operation: unexpected opcode",
                RemoteOperation::CatastrophicStream => {
                    "RDMAP remote operation: catastrophic error, localized to RDMAP stream"
                }
                RemoteOperation::CatastrophicGlobal => "RDMAP remote operation: catastrophic error, global",
                RemoteOperation::CannotInvalidate => "RDMAP remote operation: STag cannot be invalidated",
                RemoteOperation::Unspecified => "RDMAP remote operation: unspecified error",
                RemoteOperation::Unknown(_) => "RDMAP remote operation: unassigned code",
            },
            TerminateCause::DdpCatastrophic => "DDP local catastrophic error",
            TerminateCause::TaggedBuffer(t) => match t {
                TaggedBuffer::InvalidStag => "DDP tagged buffer: invalid STag",
                TaggedBuffer::BaseOrBounds => "DDP tagged buffer: base or bounds violation",
                TaggedBuffer::StagNotAssociated => "DDP tagged buffer: STag not associated with DDP stream",
                TaggedBuffer::ToWrap => "DDP tagged buffer: TO wrap",
                TaggedBuffer::InvalidDdpVersion => "DDP tagged buffer: invalid DDP version",
                TaggedBuffer::Unknown(_) => "DDP tagged buffer: unassigned code",
            },
            TerminateCause::UntaggedBuffer(u) => match u {
                UntaggedBuffer::InvalidQn => "DDP untagged buffer: invalid QN",
                UntaggedBuffer::NoBuffer => "DDP untagged buffer: invalid MSN, no buffer available",
                UntaggedBuffer::MsnRange => "DDP untagged buffer: invalid MSN, MSN range not valid",
                UntaggedBuffer::InvalidMo => "DDP untagged buffer: invalid MO",
                UntaggedBuffer::TooLong => "DDP untagged buffer: message too long for available buffer",
                UntaggedBuffer::InvalidDdpVersion => "DDP untagged buffer: invalid DDP version",
                UntaggedBuffer::Unknown(_) => "DDP untagged buffer: unassigned code",
            },
            TerminateCause::Mpa(m) => match m {
                Mpa::ConnectionLost => "MPA: TCP connection closed or lost",
                Mpa::Crc => "MPA: CRC error",
                Mpa::Marker => "MPA: marker and ULPDU_Length disagree",
                Mpa::InvalidRequestReply => "MPA: invalid request or reply frame",
                Mpa::LocalCatastrophic => "MPA: local catastrophic error",
                Mpa::InsufficientIrd => "MPA: insufficient IRD resources",
                Mpa::NoMatchingRtr => "MPA: no matching RTR option",
                Mpa::Unknown(_) => "MPA: unassigned code",
            },
            TerminateCause::Other(_) => "unassigned layer or error type",
        };
        write!(f, "{what} (layer {}, etype {}, code {:#04x})", c.layer, c.etype, c.ecode)
    }
}

/// Length of the Terminate control field (control bits plus reserved).
pub const CONTROL_LEN: usize = 4;
/// Length of the DDP Segment Length field, present when the D bit is set.
pub const SEGMENT_LENGTH_LEN: usize = 2;
/// The longest Terminate body: control, segment length, untagged DDP header, Read Request header.
pub const MAX_BODY_LEN: usize = CONTROL_LEN + SEGMENT_LENGTH_LEN + ddp::UNTAGGED_HEADER_LEN + READ_REQUEST_LEN;

mod flags {
    // RFC 5040 Figure 8: M bit 16, D bit 17, R bit 18 of the control word, i.e. the top bits of byte 2.
    pub const RFC_M: u8 = 0x80;
    pub const RFC_D: u8 = 0x40;
    pub const RFC_R: u8 = 0x20;
    pub const RFC_RESERVED: u8 = 0x1F;
    // Linux siw's little-endian bit-field: M, D, R in bits 0, 1, 2 of byte 2.
    pub const SIW_M: u8 = 0x01;
    pub const SIW_D: u8 = 0x02;
    pub const SIW_R: u8 = 0x04;
    pub const SIW_RESERVED: u8 = 0xF8;
}

/// The DDP header a Terminate copies back, with the length DDP handed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedDdpHeader<'a> {
    /// The DDP Segment Length field; `Some` when the M bit says it is valid.
    pub segment_length: Option<u16>,
    /// The terminated DDP header, 14 (tagged) or 18 (untagged) bytes from its control byte on.
    pub header: &'a [u8],
}

/// A Terminate message body (RFC 5040 §4.8), the bytes after the untagged DDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminateRepr<'a> {
    /// Layer, error type and code.
    pub cause: TerminateCause,
    /// The offending DDP header, if included (D bit; M bit when its length is valid).
    pub ddp: Option<CopiedDdpHeader<'a>>,
    /// The offending RDMA Read Request header, if included (R bit): 28 bytes.
    pub rdmap_header: Option<&'a [u8]>,
}

impl<'a> TerminateRepr<'a> {
    /// A Terminate with no copied headers.
    pub fn bare(cause: TerminateCause) -> Self {
        TerminateRepr { cause, ddp: None, rdmap_header: None }
    }

    /// Length of the emitted body.
    pub fn buffer_len(&self) -> usize {
        CONTROL_LEN
            + self.ddp.map_or(0, |d| SEGMENT_LENGTH_LEN + d.header.len())
            + self.rdmap_header.map_or(0, <[u8]>::len)
    }

    /// Writes the body in RFC 5040 bit order into `out`, which must be exactly
    /// [`buffer_len`](Self::buffer_len) bytes.
    ///
    /// # Errors
    /// [`Error::BadMessageLength`] if `out` has the wrong size, or a copied header does not have a
    /// DDP header's length (14 or 18 bytes) or the Read Request header's (28 bytes).
    pub fn emit(&self, out: &mut [u8]) -> Result<(), Error> {
        if out.len() != self.buffer_len() {
            return Err(Error::BadMessageLength { what: "terminate", len: out.len() });
        }
        if let Some(d) = self.ddp {
            if d.header.len() != ddp::TAGGED_HEADER_LEN && d.header.len() != ddp::UNTAGGED_HEADER_LEN {
                return Err(Error::BadMessageLength { what: "terminated DDP header", len: d.header.len() });
            }
        }
        if let Some(r) = self.rdmap_header {
            if r.len() != READ_REQUEST_LEN {
                return Err(Error::BadMessageLength { what: "terminated RDMA header", len: r.len() });
            }
        }
        let code = self.cause.code();
        // RFC 5040 Figure 8: Layer bits 0-3, EType bits 4-7, Error Code bits 8-15, HdrCt bits 16-18.
        out[0] = (code.layer & 0xF) << 4 | (code.etype & 0xF);
        out[1] = code.ecode;
        let mut hdrct = 0;
        if let Some(d) = self.ddp {
            hdrct |= flags::RFC_D;
            if d.segment_length.is_some() {
                hdrct |= flags::RFC_M;
            }
        }
        if self.rdmap_header.is_some() {
            hdrct |= flags::RFC_R;
        }
        out[2] = hdrct;
        out[3] = 0;
        let mut at = CONTROL_LEN;
        if let Some(d) = self.ddp {
            out[at..at + 2].copy_from_slice(&d.segment_length.unwrap_or(0).to_be_bytes());
            at += 2;
            out[at..at + d.header.len()].copy_from_slice(d.header);
            at += d.header.len();
        }
        if let Some(r) = self.rdmap_header {
            out[at..at + r.len()].copy_from_slice(r);
        }
        Ok(())
    }
}

/// Which control-word layout a received Terminate was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminateLayout {
    /// Only the RFC 5040 reading is self-consistent.
    Rfc5040,
    /// Only Linux siw's swapped reading is self-consistent (a Linux peer sent it).
    LinuxSiw,
    /// Both readings are self-consistent; the RFC one is taken, the other is reported.
    Ambiguous,
    /// Neither reading is self-consistent; the RFC one is taken.
    Inconsistent,
}

/// A received Terminate body, read both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminateMessage<'a> {
    /// The body read in RFC 5040 bit order.
    pub rfc: TerminateRepr<'a>,
    /// The body read in Linux siw's little-endian bit-field order.
    pub siw: TerminateRepr<'a>,
    /// Which reading is self-consistent.
    pub layout: TerminateLayout,
}

impl<'a> TerminateMessage<'a> {
    /// Reads a Terminate body (the bytes after its untagged DDP header).
    ///
    /// A reading is self-consistent when its cause is a code point the RFCs assign, its reserved
    /// bits are zero and the headers its flags announce exactly fill the body.
    ///
    /// # Errors
    /// [`Error::BadMessageLength`] if the body is shorter than the control field or longer than
    /// the longest Terminate.
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        if body.len() < CONTROL_LEN || body.len() > MAX_BODY_LEN {
            return Err(Error::BadMessageLength { what: "terminate", len: body.len() });
        }
        let (rfc, rfc_ok) = read_layout(body, false);
        let (siw, siw_ok) = read_layout(body, true);
        let layout = match (rfc_ok, siw_ok) {
            (true, false) => TerminateLayout::Rfc5040,
            (false, true) => TerminateLayout::LinuxSiw,
            (true, true) => TerminateLayout::Ambiguous,
            (false, false) => TerminateLayout::Inconsistent,
        };
        Ok(TerminateMessage { rfc, siw, layout })
    }

    /// The reading to act on: siw's when only it is consistent, the RFC's otherwise.
    pub fn preferred(&self) -> &TerminateRepr<'a> {
        match self.layout {
            TerminateLayout::LinuxSiw => &self.siw,
            _ => &self.rfc,
        }
    }
}

/// Reads `body` with one layout; returns the reading and whether it is self-consistent.
/// `body` is at least [`CONTROL_LEN`] bytes ([`TerminateMessage::parse`] checks), so the
/// control-field indexes are in bounds; everything after them is read with `get`.
fn read_layout(body: &[u8], siw: bool) -> (TerminateRepr<'_>, bool) {
    let (layer, etype, m, d, r, reserved) = if siw {
        (
            body[0] & 0xF,
            body[0] >> 4,
            body[2] & flags::SIW_M != 0,
            body[2] & flags::SIW_D != 0,
            body[2] & flags::SIW_R != 0,
            body[2] & flags::SIW_RESERVED != 0 || body[3] != 0,
        )
    } else {
        (
            body[0] >> 4,
            body[0] & 0xF,
            body[2] & flags::RFC_M != 0,
            body[2] & flags::RFC_D != 0,
            body[2] & flags::RFC_R != 0,
            body[2] & flags::RFC_RESERVED != 0 || body[3] != 0,
        )
    };
    let cause = TerminateCause::from_code(TerminateCode { layer, etype, ecode: body[1] });
    let mut consistent = cause.is_known() && !reserved && (d || !m);
    let mut at = CONTROL_LEN;
    let mut ddp = None;
    if d {
        // RFC 5040 §4.8: the DDP Segment Length "MUST be present when the D bit is set".
        match body.get(at..at + SEGMENT_LENGTH_LEN) {
            Some(len) => {
                let seg_len = u16::from_be_bytes([len[0], len[1]]);
                at += SEGMENT_LENGTH_LEN;
                // The copied header's own T bit says whether it is tagged (14) or untagged (18).
                let hlen = match body.get(at) {
                    Some(ctrl) if ctrl & ddp::flags::TAGGED != 0 => ddp::TAGGED_HEADER_LEN,
                    _ => ddp::UNTAGGED_HEADER_LEN,
                };
                match body.get(at..at + hlen) {
                    Some(header) => {
                        ddp = Some(CopiedDdpHeader { segment_length: m.then_some(seg_len), header });
                        at += hlen;
                    }
                    None => consistent = false,
                }
            }
            None => consistent = false,
        }
    }
    let mut rdmap_header = None;
    if r {
        match body.get(at..at + READ_REQUEST_LEN) {
            Some(h) => {
                rdmap_header = Some(h);
                at += READ_REQUEST_LEN;
            }
            None => consistent = false,
        }
    }
    if at != body.len() {
        consistent = false;
    }
    (TerminateRepr { cause, ddp, rdmap_header }, consistent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_assigned_code_round_trips() {
        for layer in 0..3u8 {
            for etype in 0..4u8 {
                for ecode in 0..=255u8 {
                    let code = TerminateCode { layer, etype, ecode };
                    let cause = TerminateCause::from_code(code);
                    if matches!(cause, TerminateCause::RdmapCatastrophic | TerminateCause::DdpCatastrophic) {
                        assert_eq!(cause.code().ecode, 0);
                        continue;
                    }
                    assert_eq!(cause.code(), code, "{cause:?}");
                }
            }
        }
        assert!(TerminateCause::Mpa(Mpa::Crc).is_known());
        assert!(!TerminateCause::RemoteOperation(RemoteOperation::Unknown(2)).is_known());
        assert!(!TerminateCause::from_code(TerminateCode { layer: 3, etype: 0, ecode: 0 }).is_known());
    }

    #[test]
    fn bare_terminate_is_emitted_in_rfc_bit_order() {
        let t = TerminateRepr::bare(TerminateCause::Mpa(Mpa::Crc));
        let mut out = [0xa5u8; 4];
        t.emit(&mut out).unwrap();
        // Layer 2 in the high nibble, EType 0, code 2, no header flags.
        assert_eq!(out, [0x20, 0x02, 0x00, 0x00]);
    }

    #[test]
    fn terminate_with_headers_round_trips() {
        let ddp_hdr = [0x41u8, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0];
        let rr = [0x11u8; 28];
        let t = TerminateRepr {
            cause: TerminateCause::RemoteProtection(RemoteProtection::AccessRights),
            ddp: Some(CopiedDdpHeader { segment_length: Some(46), header: &ddp_hdr }),
            rdmap_header: Some(&rr),
        };
        let mut out = vec![0u8; t.buffer_len()];
        t.emit(&mut out).unwrap();
        assert_eq!(&out[..6], &[0x01, 0x02, 0xE0, 0x00, 0x00, 46]);
        let m = TerminateMessage::parse(&out).unwrap();
        assert_eq!(m.layout, TerminateLayout::Rfc5040);
        assert_eq!(m.rfc, t);
        assert_eq!(*m.preferred(), t);
    }

    #[test]
    fn linux_siw_crc_terminate_reads_as_llp_crc_error() {
        // Sent by siw after an MPA CRC error (interop capture host-probe-bad-crc-terminate.pcap).
        let body = [0x02u8, 0x02, 0x00, 0x00];
        let m = TerminateMessage::parse(&body).unwrap();
        assert_eq!(m.layout, TerminateLayout::LinuxSiw);
        assert_eq!(m.preferred().cause, TerminateCause::Mpa(Mpa::Crc));
        // The RFC reading is what Wireshark shows: RDMAP, remote operation, code 2 (unassigned).
        assert_eq!(m.rfc.cause, TerminateCause::RemoteOperation(RemoteOperation::Unknown(2)));
    }

    #[test]
    fn ambiguous_terminate_reports_both_readings() {
        // Layer 1 / EType 1 reads the same both ways; code 0 is assigned in both readings.
        let body = [0x11u8, 0x00, 0x00, 0x00];
        let m = TerminateMessage::parse(&body).unwrap();
        assert_eq!(m.layout, TerminateLayout::Ambiguous);
        assert_eq!(m.rfc.cause, TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag));
        assert_eq!(m.siw.cause, TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag));
        // 0x12: RFC = DDP untagged; siw = layer 2, etype 1 (unassigned).
        let m = TerminateMessage::parse(&[0x12, 0x02, 0, 0]).unwrap();
        assert_eq!(m.layout, TerminateLayout::Rfc5040);
    }

    #[test]
    fn siw_layout_with_copied_header_is_recognised() {
        // siw: DDP layer (low nibble 1), untagged etype (high nibble 2), code 2, M|D in bits 0-1.
        let mut body = vec![0x21u8, 0x02, 0x03, 0x00, 0x00, 0x10];
        body.extend_from_slice(&[0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        let m = TerminateMessage::parse(&body).unwrap();
        assert_eq!(m.layout, TerminateLayout::LinuxSiw);
        let p = m.preferred();
        assert_eq!(p.cause, TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer));
        assert_eq!(p.ddp.unwrap().segment_length, Some(16));
        assert_eq!(p.ddp.unwrap().header.len(), 18);
    }

    #[test]
    fn short_or_long_bodies_are_errors_not_panics() {
        for len in 0..CONTROL_LEN {
            assert!(TerminateMessage::parse(&vec![0u8; len]).is_err());
        }
        assert!(TerminateMessage::parse(&[0u8; MAX_BODY_LEN + 1]).is_err());
        // Flags announcing headers that are not there: parsed, but inconsistent.
        let m = TerminateMessage::parse(&[0x01, 0x00, 0xE0, 0x00]).unwrap();
        assert_eq!(m.rfc.ddp, None);
        assert_ne!(m.layout, TerminateLayout::Rfc5040);
    }

    #[test]
    fn display_names_layer_type_and_code() {
        let s = TerminateCause::UntaggedBuffer(UntaggedBuffer::NoBuffer).to_string();
        assert!(s.contains("no buffer") && s.contains("layer 1, etype 2, code 0x02"), "{s}");
    }
}
