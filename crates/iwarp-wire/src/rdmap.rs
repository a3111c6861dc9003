//! RDMAP messages (RFC 5040 §4, RFC 7306 §4–5).
//!
//! RDMAP rides in DDP's reserved-for-ULP bytes: its control byte (version, opcode) is DDP's first
//! RsvdULP byte and, on untagged segments, the next four bytes carry the Invalidate STag.
//! [`SegmentHeader`] is a validated DDP + RDMAP header; the fixed-size message bodies that follow
//! some of them ([`ReadRequest`], [`AtomicRequest`], [`AtomicResponse`], Immediate Data, and the
//! Terminate in [`crate::terminate`]) have their own codecs here.

use crate::ddp::{self, be32, be64, flags, Msn, Placement, QueueNumber, Segment, Stag, TaggedOffset};
use crate::Error;

/// The RDMAP version this crate speaks (RFC 5040 §4.1: 01b for IETF RDMAP).
pub const VERSION: u8 = 1;
/// Mask of the version bits in the RDMAP control byte.
pub const VERSION_MASK: u8 = 0xC0;
/// Mask of the opcode bits in the RDMAP control byte.
pub const OPCODE_MASK: u8 = 0x0F;
/// Length of the RDMA Read Request header (RFC 5040 §4.4).
pub const READ_REQUEST_LEN: usize = 28;
/// Length of the Atomic Request header (RFC 7306 §5.2.1).
pub const ATOMIC_REQUEST_LEN: usize = 52;
/// Length of the Atomic Response header (RFC 7306 §5.2.2: the figure's fields total 12 bytes).
pub const ATOMIC_RESPONSE_LEN: usize = 12;
/// Length of the Immediate Data payload (RFC 7306 §4.2).
pub const IMMEDIATE_DATA_LEN: usize = 8;

enum_with_unknown! {
    /// RDMAP opcodes (RFC 5040 Figure 4, RFC 7306 §9.1).
    pub enum Opcode(u8) {
        /// RDMA Write (tagged).
        Write = 0x0,
        /// RDMA Read Request (untagged, queue 1).
        ReadRequest = 0x1,
        /// RDMA Read Response (tagged).
        ReadResponse = 0x2,
        /// Send (untagged, queue 0).
        Send = 0x3,
        /// Send with Invalidate.
        SendInvalidate = 0x4,
        /// Send with Solicited Event.
        SendSe = 0x5,
        /// Send with Solicited Event and Invalidate.
        SendSeInvalidate = 0x6,
        /// Terminate (untagged, queue 2).
        Terminate = 0x7,
        /// Immediate Data (RFC 7306; untagged, queue 0).
        ImmediateData = 0x8,
        /// Immediate Data with Solicited Event (RFC 7306).
        ImmediateDataSe = 0x9,
        /// Atomic Request (RFC 7306; untagged, queue 1).
        AtomicRequest = 0xA,
        /// Atomic Response (RFC 7306; untagged, queue 3).
        AtomicResponse = 0xB,
    }
}

impl Opcode {
    /// The buffer model this opcode must use: `Some(true)` tagged, `Some(false)` untagged, `None`
    /// for a reserved opcode.
    pub fn tagged(self) -> Option<bool> {
        match self {
            Opcode::Write | Opcode::ReadResponse => Some(true),
            Opcode::Unknown(_) => None,
            _ => Some(false),
        }
    }

    /// The untagged queue this opcode travels on (`None` for tagged or reserved opcodes).
    pub fn queue(self) -> Option<QueueNumber> {
        match self {
            Opcode::Send
            | Opcode::SendInvalidate
            | Opcode::SendSe
            | Opcode::SendSeInvalidate
            | Opcode::ImmediateData
            | Opcode::ImmediateDataSe => Some(QueueNumber::SEND),
            Opcode::ReadRequest | Opcode::AtomicRequest => Some(QueueNumber::READ_REQUEST),
            Opcode::Terminate => Some(QueueNumber::TERMINATE),
            Opcode::AtomicResponse => Some(QueueNumber::ATOMIC_RESPONSE),
            Opcode::Write | Opcode::ReadResponse | Opcode::Unknown(_) => None,
        }
    }

    /// `true` for the RFC 7306 extensions (opcodes 8 to 11).
    pub fn is_rfc7306(self) -> bool {
        matches!(self, Opcode::ImmediateData | Opcode::ImmediateDataSe | Opcode::AtomicRequest | Opcode::AtomicResponse)
    }

    /// `true` for Send and Immediate Data with the Solicited Event bit.
    pub fn solicited(self) -> bool {
        matches!(self, Opcode::SendSe | Opcode::SendSeInvalidate | Opcode::ImmediateDataSe)
    }

    /// `true` for the two Send-with-Invalidate opcodes.
    pub fn invalidates(self) -> bool {
        matches!(self, Opcode::SendInvalidate | Opcode::SendSeInvalidate)
    }

    /// The exact body length RFC 5040/7306 fix for this opcode, for those with a fixed one.
    pub fn fixed_body_len(self) -> Option<usize> {
        match self {
            Opcode::ReadRequest => Some(READ_REQUEST_LEN),
            Opcode::AtomicRequest => Some(ATOMIC_REQUEST_LEN),
            Opcode::AtomicResponse => Some(ATOMIC_RESPONSE_LEN),
            Opcode::ImmediateData | Opcode::ImmediateDataSe => Some(IMMEDIATE_DATA_LEN),
            _ => None,
        }
    }
}

/// The DDP and RDMAP header of one segment, validated: the header fields that say what a segment
/// is and where its payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    /// The RDMAP opcode.
    pub opcode: Opcode,
    /// DDP L flag: the last segment of its message.
    pub last: bool,
    /// Tagged (STag, TO) or untagged (QN, MSN, MO) placement.
    pub placement: Placement,
    /// The Invalidate STag (Send with Invalidate); zero otherwise. Untagged segments only.
    pub inval_stag: Stag,
}

impl SegmentHeader {
    /// Length of the DDP header this header emits.
    pub fn header_len(&self) -> usize {
        self.placement.header_len()
    }

    /// A tagged header (Write or Read Response).
    pub fn tagged(opcode: Opcode, last: bool, stag: Stag, to: TaggedOffset) -> Self {
        SegmentHeader { opcode, last, placement: Placement::Tagged { stag, to }, inval_stag: Stag(0) }
    }

    /// An untagged header on the queue `opcode` uses.
    pub fn untagged(opcode: Opcode, last: bool, msn: Msn, mo: u32) -> Self {
        let qn = opcode.queue().unwrap_or(QueueNumber::SEND);
        SegmentHeader { opcode, last, placement: Placement::Untagged { qn, msn, mo }, inval_stag: Stag(0) }
    }

    /// Parses and validates a DDP header (14 or 18 bytes; longer input is ignored past the header).
    ///
    /// Checks, in order: DDP version (RFC 5041 §7.2), RDMAP version (RFC 5040 §7.2), opcode
    /// assigned and of the right buffer model (RFC 5040 §7.2 "unexpected opcode"), and for
    /// untagged segments the queue number the opcode uses (RFC 5041 §7.2 "invalid QN").
    ///
    /// # Errors
    /// The first violation found, as an [`Error`] that knows its Terminate cause.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let seg = Segment::new_checked(bytes)?;
        let tagged = seg.tagged();
        // RFC 5041 §5.1: DV "MUST be set to 01b"; a mismatch is an invalid DDP version (§7.2).
        if seg.version() != ddp::VERSION {
            return Err(Error::DdpVersion { version: seg.version(), tagged });
        }
        let ctrl = seg.rsvd_ulp();
        // RFC 5040 §7.2: an RDMAP version other than 01b is "Invalid RDMAP version".
        let rv = (ctrl & VERSION_MASK) >> 6;
        if rv != VERSION {
            return Err(Error::RdmapVersion(rv));
        }
        let opcode = Opcode::from(ctrl & OPCODE_MASK);
        // RFC 5040 §7.2: reserved opcodes and opcodes on the wrong buffer model are unexpected.
        if opcode.tagged() != Some(tagged) {
            return Err(Error::UnexpectedOpcode { opcode, tagged });
        }
        let placement = seg.placement();
        let mut inval_stag = Stag(0);
        if let Placement::Untagged { qn, .. } = placement {
            // RFC 5040 Figure 4 fixes each untagged opcode's queue; RFC 5041 §7.2: invalid QN.
            if opcode.queue() != Some(qn) {
                return Err(Error::InvalidQueueNumber { qn: qn.0, opcode });
            }
            // RFC 5040 §4.1: the Invalidate STag is only valid on Send with Invalidate; ignored otherwise.
            if opcode.invalidates() {
                inval_stag = Stag(seg.rsvd_ulp_ext());
            }
        }
        Ok(SegmentHeader { opcode, last: seg.last(), placement, inval_stag })
    }

    /// Writes the DDP header into the first [`header_len`](Self::header_len) bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than the header.
    pub fn emit(&self, out: &mut [u8]) {
        let len = self.header_len();
        let mut seg = Segment::new_unchecked(&mut out[..len]);
        let mut ctrl = ddp::VERSION;
        if self.last {
            ctrl |= flags::LAST;
        }
        seg.set_rsvd_ulp((VERSION << 6) | (u8::from(self.opcode) & OPCODE_MASK));
        match self.placement {
            Placement::Tagged { stag, to } => {
                seg.set_control(ctrl | flags::TAGGED);
                seg.set_stag(stag);
                seg.set_tagged_offset(to);
            }
            Placement::Untagged { qn, msn, mo } => {
                seg.set_control(ctrl);
                seg.set_rsvd_ulp_ext(if self.opcode.invalidates() { self.inval_stag.0 } else { 0 });
                seg.set_queue_number(qn);
                seg.set_msn(msn);
                seg.set_message_offset(mo);
            }
        }
    }

    /// The header as bytes, with its length.
    pub fn to_bytes(&self) -> ([u8; ddp::UNTAGGED_HEADER_LEN], usize) {
        let mut b = [0u8; ddp::UNTAGGED_HEADER_LEN];
        self.emit(&mut b);
        (b, self.header_len())
    }
}

/// The RDMA Read Request header (RFC 5040 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadRequest {
    /// Data Sink STag: copied into the Read Response.
    pub sink_stag: Stag,
    /// Data Sink Tagged Offset.
    pub sink_to: TaggedOffset,
    /// RDMA Read Message Size in bytes.
    pub size: u32,
    /// Data Source STag.
    pub src_stag: Stag,
    /// Data Source Tagged Offset.
    pub src_to: TaggedOffset,
}

impl ReadRequest {
    /// Parses the 28-byte header.
    ///
    /// # Errors
    /// [`Error::BadMessageLength`] if `body` is not 28 bytes.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() != READ_REQUEST_LEN {
            return Err(Error::BadMessageLength { what: "RDMA Read Request", len: body.len() });
        }
        Ok(ReadRequest {
            sink_stag: Stag(be32(&body[0..4])),
            sink_to: TaggedOffset(be64(&body[4..12])),
            size: be32(&body[12..16]),
            src_stag: Stag(be32(&body[16..20])),
            src_to: TaggedOffset(be64(&body[20..28])),
        })
    }

    /// The 28 wire bytes.
    pub fn to_bytes(&self) -> [u8; READ_REQUEST_LEN] {
        let mut b = [0u8; READ_REQUEST_LEN];
        b[0..4].copy_from_slice(&self.sink_stag.0.to_be_bytes());
        b[4..12].copy_from_slice(&self.sink_to.0.to_be_bytes());
        b[12..16].copy_from_slice(&self.size.to_be_bytes());
        b[16..20].copy_from_slice(&self.src_stag.0.to_be_bytes());
        b[20..28].copy_from_slice(&self.src_to.0.to_be_bytes());
        b
    }
}

enum_with_unknown! {
    /// RFC 7306 atomic operation codes (AOpCode).
    pub enum AtomicOpcode(u8) {
        /// Fetch and add.
        FetchAdd = 0x0,
        /// Compare and swap.
        CompareSwap = 0x2,
    }
}

/// The Atomic Request header (RFC 7306 §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicRequest {
    /// The operation.
    pub opcode: AtomicOpcode,
    /// Chosen by the requester and echoed in the response.
    pub request_id: u32,
    /// The target buffer.
    pub stag: Stag,
    /// The target offset; must be 8-byte aligned.
    pub to: TaggedOffset,
    /// Add Data (FetchAdd) or Swap Data (CompareSwap).
    pub add_or_swap: u64,
    /// Add Mask or Swap Mask.
    pub add_or_swap_mask: u64,
    /// Compare Data (CompareSwap; 0 for FetchAdd).
    pub compare: u64,
    /// Compare Mask (CompareSwap; all ones for FetchAdd).
    pub compare_mask: u64,
}

impl AtomicRequest {
    /// A verbs-style fetch-and-add of `add` (plain 64-bit add: mask 0).
    pub fn fetch_add(request_id: u32, stag: Stag, to: TaggedOffset, add: u64) -> Self {
        AtomicRequest {
            opcode: AtomicOpcode::FetchAdd,
            request_id,
            stag,
            to,
            add_or_swap: add,
            add_or_swap_mask: 0,
            compare: 0,
            compare_mask: u64::MAX,
        }
    }

    /// A verbs-style compare-and-swap (all compare and swap bits significant).
    pub fn compare_swap(request_id: u32, stag: Stag, to: TaggedOffset, compare: u64, swap: u64) -> Self {
        AtomicRequest {
            opcode: AtomicOpcode::CompareSwap,
            request_id,
            stag,
            to,
            add_or_swap: swap,
            add_or_swap_mask: u64::MAX,
            compare,
            compare_mask: u64::MAX,
        }
    }

    /// Parses the 52-byte header.
    ///
    /// # Errors
    /// [`Error::BadMessageLength`] if `body` is not 52 bytes.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() != ATOMIC_REQUEST_LEN {
            return Err(Error::BadMessageLength { what: "Atomic Request", len: body.len() });
        }
        Ok(AtomicRequest {
            opcode: AtomicOpcode::from((be32(&body[0..4]) & 0xF) as u8),
            request_id: be32(&body[4..8]),
            stag: Stag(be32(&body[8..12])),
            to: TaggedOffset(be64(&body[12..20])),
            add_or_swap: be64(&body[20..28]),
            add_or_swap_mask: be64(&body[28..36]),
            compare: be64(&body[36..44]),
            compare_mask: be64(&body[44..52]),
        })
    }

    /// The 52 wire bytes.
    pub fn to_bytes(&self) -> [u8; ATOMIC_REQUEST_LEN] {
        let mut b = [0u8; ATOMIC_REQUEST_LEN];
        b[0..4].copy_from_slice(&u32::from(u8::from(self.opcode) & 0xF).to_be_bytes());
        b[4..8].copy_from_slice(&self.request_id.to_be_bytes());
        b[8..12].copy_from_slice(&self.stag.0.to_be_bytes());
        b[12..20].copy_from_slice(&self.to.0.to_be_bytes());
        b[20..28].copy_from_slice(&self.add_or_swap.to_be_bytes());
        b[28..36].copy_from_slice(&self.add_or_swap_mask.to_be_bytes());
        b[36..44].copy_from_slice(&self.compare.to_be_bytes());
        b[44..52].copy_from_slice(&self.compare_mask.to_be_bytes());
        b
    }

    /// Applies the operation to `original` and returns the new value (RFC 7306 §5.1).
    /// Returns `None` for an unknown operation code.
    pub fn apply(&self, original: u64) -> Option<u64> {
        match self.opcode {
            AtomicOpcode::FetchAdd => Some(masked_add(original, self.add_or_swap, self.add_or_swap_mask)),
            AtomicOpcode::CompareSwap => {
                if (self.compare ^ original) & self.compare_mask == 0 {
                    Some((original & !self.add_or_swap_mask) | (self.add_or_swap & self.add_or_swap_mask))
                } else {
                    Some(original)
                }
            }
            AtomicOpcode::Unknown(_) => None,
        }
    }
}

/// RFC 7306 §5.1 masked add: each set bit of `mask` marks the most significant bit of an
/// independent field; carries out of a field are dropped. Mask 0 is a plain 64-bit add.
fn masked_add(original: u64, add: u64, mask: u64) -> u64 {
    if mask == 0 {
        return original.wrapping_add(add);
    }
    let mut result = 0u64;
    let mut low = 0u32;
    let mut m = mask;
    while low < 64 {
        // The field runs from `low` up to and including the next set mask bit (or bit 63).
        let high = if m == 0 { 63 } else { m.trailing_zeros() };
        let width = high - low + 1;
        let field_mask = if width == 64 { u64::MAX } else { ((1u64 << width) - 1) << low };
        let sum = ((original & field_mask) >> low).wrapping_add((add & field_mask) >> low);
        result |= (sum << low) & field_mask;
        if m != 0 {
            m &= m - 1;
        }
        low = high + 1;
    }
    result
}

/// The Atomic Response header (RFC 7306 §5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicResponse {
    /// The request's identifier.
    pub request_id: u32,
    /// The value at the target before the operation.
    pub original: u64,
}

impl AtomicResponse {
    /// Parses the 12-byte header.
    ///
    /// # Errors
    /// [`Error::BadMessageLength`] if `body` is not 12 bytes.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() != ATOMIC_RESPONSE_LEN {
            return Err(Error::BadMessageLength { what: "Atomic Response", len: body.len() });
        }
        Ok(AtomicResponse { request_id: be32(&body[0..4]), original: be64(&body[4..12]) })
    }

    /// The 12 wire bytes.
    pub fn to_bytes(&self) -> [u8; ATOMIC_RESPONSE_LEN] {
        let mut b = [0u8; ATOMIC_RESPONSE_LEN];
        b[0..4].copy_from_slice(&self.request_id.to_be_bytes());
        b[4..12].copy_from_slice(&self.original.to_be_bytes());
        b
    }
}

/// Parses the 8-byte Immediate Data payload (RFC 7306 §4.2).
///
/// # Errors
/// [`Error::BadMessageLength`] if `body` is not 8 bytes.
pub fn parse_immediate(body: &[u8]) -> Result<u64, Error> {
    if body.len() != IMMEDIATE_DATA_LEN {
        return Err(Error::BadMessageLength { what: "Immediate Data", len: body.len() });
    }
    Ok(be64(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminate::{RemoteOperation, TaggedBuffer, TerminateCause, UntaggedBuffer};

    #[test]
    fn parse_send_write_readreq_headers() {
        let send = [0x41u8, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let h = SegmentHeader::parse(&send).unwrap();
        assert_eq!(h, SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0));

        let write = [0xc1u8, 0x40, 0xd7, 0x15, 0x2e, 0x00, 0, 0, 0x56, 0x3b, 0x39, 0xa4, 0x65, 0x50];
        let h = SegmentHeader::parse(&write).unwrap();
        assert_eq!(h, SegmentHeader::tagged(Opcode::Write, true, Stag(0xd715_2e00), TaggedOffset(0x563b_39a4_6550)));
        assert_eq!(h.to_bytes().0[..14], write);

        let mut inv = send;
        inv[1] = 0x44;
        inv[2..6].copy_from_slice(&[0x12, 0x34, 0x56, 0x00]);
        let h = SegmentHeader::parse(&inv).unwrap();
        assert_eq!(h.opcode, Opcode::SendInvalidate);
        assert_eq!(h.inval_stag, Stag(0x1234_5600));
        assert_eq!(h.to_bytes().0, inv);
    }

    #[test]
    fn header_violations_map_to_rfc_terminate_codes() {
        let send = [0x41u8, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut bad = send;
        bad[0] = 0x42; // DDP version 2
        let e = SegmentHeader::parse(&bad).unwrap_err();
        assert_eq!(e.terminate_cause(), TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidDdpVersion));
        let write = [0xc2u8, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let e = SegmentHeader::parse(&write).unwrap_err();
        assert_eq!(e.terminate_cause(), TerminateCause::TaggedBuffer(TaggedBuffer::InvalidDdpVersion));

        let mut bad = send;
        bad[1] = 0x03; // RDMAP version 0
        let e = SegmentHeader::parse(&bad).unwrap_err();
        assert_eq!(e, Error::RdmapVersion(0));
        assert_eq!(e.terminate_cause(), TerminateCause::RemoteOperation(RemoteOperation::InvalidRdmapVersion));

        let mut bad = send;
        bad[1] = 0x4C; // reserved opcode 0xC
        let e = SegmentHeader::parse(&bad).unwrap_err();
        assert_eq!(e.terminate_cause(), TerminateCause::RemoteOperation(RemoteOperation::UnexpectedOpcode));

        let mut bad = send;
        bad[1] = 0x40; // Write on an untagged segment
        let e = SegmentHeader::parse(&bad).unwrap_err();
        assert_eq!(e, Error::UnexpectedOpcode { opcode: Opcode::Write, tagged: false });

        let mut bad = send;
        bad[9] = 1; // Send on queue 1
        let e = SegmentHeader::parse(&bad).unwrap_err();
        assert_eq!(e.terminate_cause(), TerminateCause::UntaggedBuffer(UntaggedBuffer::InvalidQn));
        bad[6] = 0xff; // queue 0xff000001
        assert_eq!(
            SegmentHeader::parse(&bad).unwrap_err(),
            Error::InvalidQueueNumber { qn: 0xff00_0001, opcode: Opcode::Send }
        );

        assert!(matches!(SegmentHeader::parse(&send[..10]), Err(Error::Truncated { .. })));
    }

    #[test]
    fn read_request_round_trip_matches_capture() {
        // rping-v2-crc.pcap frame 9.
        let rr = ReadRequest {
            sink_stag: Stag(0x9998_6300),
            sink_to: TaggedOffset(0x0000_5556_b734_c550),
            size: 64,
            src_stag: Stag(0x5b41_7000),
            src_to: TaggedOffset(0x0000_563b_39a4_6370),
        };
        let b = rr.to_bytes();
        assert_eq!(&b[0..4], &[0x99, 0x98, 0x63, 0x00]);
        assert_eq!(&b[12..16], &[0, 0, 0, 64]);
        assert_eq!(ReadRequest::parse(&b).unwrap(), rr);
        assert!(ReadRequest::parse(&b[..27]).is_err());
    }

    #[test]
    fn atomics_round_trip_and_apply() {
        let fa = AtomicRequest::fetch_add(7, Stag(0x100), TaggedOffset(0x1000), 5);
        assert_eq!(AtomicRequest::parse(&fa.to_bytes()).unwrap(), fa);
        assert_eq!(fa.apply(10), Some(15));
        assert_eq!(fa.apply(u64::MAX), Some(4));
        let cs = AtomicRequest::compare_swap(8, Stag(0x100), TaggedOffset(0x1000), 10, 99);
        assert_eq!(cs.apply(10), Some(99));
        assert_eq!(cs.apply(11), Some(11));
        let resp = AtomicResponse { request_id: 8, original: 10 };
        assert_eq!(AtomicResponse::parse(&resp.to_bytes()).unwrap(), resp);
        assert_eq!(parse_immediate(&42u64.to_be_bytes()), Ok(42));
        assert!(parse_immediate(&[0; 7]).is_err());
    }

    #[test]
    fn masked_fetch_add_drops_carries_between_fields() {
        // Two 32-bit fields: mask marks bit 31 and bit 63.
        let mask = (1u64 << 31) | (1u64 << 63);
        let original = 0x0000_0001_FFFF_FFFF;
        let add = 0x0000_0001_0000_0001;
        // Low field wraps to 0 without carrying into the high field.
        assert_eq!(masked_add(original, add, mask), 0x0000_0002_0000_0000);
        assert_eq!(masked_add(1, 2, 0), 3);
    }
}
