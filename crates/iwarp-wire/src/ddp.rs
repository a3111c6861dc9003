//! DDP segment headers (RFC 5041 §5).
//!
//! Every DDP segment starts with a control byte (T, L, reserved, DV) and a byte reserved for the
//! ULP (RDMAP's control byte). A tagged segment (T = 1) then carries the sink's STag and Tagged
//! Offset; an untagged one carries 4 more ULP bytes (RDMAP's Invalidate STag), the queue number,
//! the message sequence number and the message offset. [`Segment`] is a checked view over those
//! bytes; [`crate::rdmap::SegmentHeader`] is the validated DDP + RDMAP header as a value.

use crate::Error;

/// Length of a tagged DDP header.
pub const TAGGED_HEADER_LEN: usize = 14;
/// Length of an untagged DDP header.
pub const UNTAGGED_HEADER_LEN: usize = 18;
/// The DDP version this crate speaks (RFC 5041 §5.1: "MUST be set to 01b").
pub const VERSION: u8 = 1;

/// Bit masks of the DDP control byte.
pub mod flags {
    /// Tagged flag.
    pub const TAGGED: u8 = 0x80;
    /// Last flag: the last segment of a DDP message.
    pub const LAST: u8 = 0x40;
    /// Reserved bits: sent as zero, ignored on receive.
    pub const RESERVED: u8 = 0x3C;
    /// DDP version.
    pub const VERSION: u8 = 0x03;
}

mod field {
    use core::ops::Range;
    pub const CONTROL: usize = 0;
    pub const RSVD_ULP: usize = 1;
    // Tagged
    pub const STAG: Range<usize> = 2..6;
    pub const TO: Range<usize> = 6..14;
    // Untagged
    pub const RSVD_ULP_EXT: Range<usize> = 2..6;
    pub const QN: Range<usize> = 6..10;
    pub const MSN: Range<usize> = 10..14;
    pub const MO: Range<usize> = 14..18;
}

/// A Steering Tag: names a tagged buffer at the data sink. Linux peers build it as a 24-bit index
/// shifted left by 8, or'ed with an 8-bit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Stag(pub u32);

impl Stag {
    /// Builds an STag from a 24-bit index and an 8-bit key.
    pub fn from_parts(index: u32, key: u8) -> Stag {
        Stag((index << 8) | u32::from(key))
    }
    /// The 24-bit index part.
    pub fn index(self) -> u32 {
        self.0 >> 8
    }
    /// The 8-bit key part.
    pub fn key(self) -> u8 {
        self.0 as u8
    }
}

impl core::fmt::Display for Stag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A Tagged Offset: the 64-bit address of a byte in a tagged buffer. Linux peers use the
/// buffer's virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TaggedOffset(pub u64);

/// A Message Sequence Number: counts the messages of one untagged queue, starting at 1 and
/// wrapping from 2^32 - 1 to 0 (RFC 5041 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Msn(pub u32);

impl Msn {
    /// The MSN of the first message on every queue.
    pub const FIRST: Msn = Msn(1);
    /// The next MSN, wrapping.
    pub fn next(self) -> Msn {
        Msn(self.0.wrapping_add(1))
    }
}

/// An untagged queue number. RDMAP uses queues 0 to 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct QueueNumber(pub u32);

impl QueueNumber {
    /// Queue 0: Send family and RFC 7306 Immediate Data.
    pub const SEND: QueueNumber = QueueNumber(0);
    /// Queue 1: RDMA Read Requests and RFC 7306 Atomic Requests.
    pub const READ_REQUEST: QueueNumber = QueueNumber(1);
    /// Queue 2: Terminate.
    pub const TERMINATE: QueueNumber = QueueNumber(2);
    /// Queue 3: RFC 7306 Atomic Responses.
    pub const ATOMIC_RESPONSE: QueueNumber = QueueNumber(3);
}

/// Where a segment's payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Tagged buffer model: the sink buffer is named by STag and Tagged Offset.
    Tagged {
        /// The sink's STag.
        stag: Stag,
        /// Offset of the first payload byte.
        to: TaggedOffset,
    },
    /// Untagged buffer model: the next buffer posted on a queue.
    Untagged {
        /// The queue.
        qn: QueueNumber,
        /// The message on that queue.
        msn: Msn,
        /// Offset of the first payload byte within the message.
        mo: u32,
    },
}

impl Placement {
    /// `true` for the tagged model.
    pub fn is_tagged(&self) -> bool {
        matches!(self, Placement::Tagged { .. })
    }
    /// Length of the DDP header for this model.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            TAGGED_HEADER_LEN
        } else {
            UNTAGGED_HEADER_LEN
        }
    }
}

/// Length of the DDP header that starts with control byte `control`.
#[inline]
pub fn header_len_for(control: u8) -> usize {
    if control & flags::TAGGED != 0 {
        TAGGED_HEADER_LEN
    } else {
        UNTAGGED_HEADER_LEN
    }
}

/// A view over a DDP segment (header and payload), starting at its control byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    /// Wraps `buffer` without checking its length. Accessors may panic if it is too short; use
    /// this only for emission into a buffer sized for the header.
    pub fn new_unchecked(buffer: T) -> Segment<T> {
        Segment { buffer }
    }

    /// Wraps `buffer` after checking that it holds the whole header its T bit announces.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it does not.
    pub fn new_checked(buffer: T) -> Result<Segment<T>, Error> {
        let s = Segment::new_unchecked(buffer);
        s.check_len()?;
        Ok(s)
    }

    /// Checks that the buffer holds the whole header. After this succeeds no accessor panics.
    ///
    /// # Errors
    /// [`Error::Truncated`] if it does not.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        let needed = match b.first() {
            None => 1,
            Some(&c) => header_len_for(c),
        };
        if b.len() < needed {
            Err(Error::Truncated { needed, available: b.len() })
        } else {
            Ok(())
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The DDP control byte.
    pub fn control(&self) -> u8 {
        self.buffer.as_ref()[field::CONTROL]
    }
    /// The T flag.
    pub fn tagged(&self) -> bool {
        self.control() & flags::TAGGED != 0
    }
    /// The L flag.
    pub fn last(&self) -> bool {
        self.control() & flags::LAST != 0
    }
    /// The DV field.
    pub fn version(&self) -> u8 {
        self.control() & flags::VERSION
    }
    /// The first RsvdULP byte (RDMAP's control byte).
    pub fn rsvd_ulp(&self) -> u8 {
        self.buffer.as_ref()[field::RSVD_ULP]
    }
    /// Length of this segment's DDP header.
    pub fn header_len(&self) -> usize {
        header_len_for(self.control())
    }
    /// The STag (tagged segments).
    pub fn stag(&self) -> Stag {
        Stag(be32(&self.buffer.as_ref()[field::STAG]))
    }
    /// The Tagged Offset (tagged segments).
    pub fn tagged_offset(&self) -> TaggedOffset {
        TaggedOffset(be64(&self.buffer.as_ref()[field::TO]))
    }
    /// RsvdULP bytes 1 to 4 (untagged segments; RDMAP's Invalidate STag).
    pub fn rsvd_ulp_ext(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::RSVD_ULP_EXT])
    }
    /// The queue number (untagged segments).
    pub fn queue_number(&self) -> QueueNumber {
        QueueNumber(be32(&self.buffer.as_ref()[field::QN]))
    }
    /// The MSN (untagged segments).
    pub fn msn(&self) -> Msn {
        Msn(be32(&self.buffer.as_ref()[field::MSN]))
    }
    /// The message offset (untagged segments).
    pub fn message_offset(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::MO])
    }
    /// The placement fields of whichever model the T bit selects.
    pub fn placement(&self) -> Placement {
        if self.tagged() {
            Placement::Tagged { stag: self.stag(), to: self.tagged_offset() }
        } else {
            Placement::Untagged { qn: self.queue_number(), msn: self.msn(), mo: self.message_offset() }
        }
    }
    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    /// Sets the control byte.
    pub fn set_control(&mut self, value: u8) {
        self.buffer.as_mut()[field::CONTROL] = value;
    }
    /// Sets the first RsvdULP byte.
    pub fn set_rsvd_ulp(&mut self, value: u8) {
        self.buffer.as_mut()[field::RSVD_ULP] = value;
    }
    /// Sets the STag (tagged).
    pub fn set_stag(&mut self, value: Stag) {
        self.buffer.as_mut()[field::STAG].copy_from_slice(&value.0.to_be_bytes());
    }
    /// Sets the Tagged Offset (tagged).
    pub fn set_tagged_offset(&mut self, value: TaggedOffset) {
        self.buffer.as_mut()[field::TO].copy_from_slice(&value.0.to_be_bytes());
    }
    /// Sets RsvdULP bytes 1 to 4 (untagged).
    pub fn set_rsvd_ulp_ext(&mut self, value: u32) {
        self.buffer.as_mut()[field::RSVD_ULP_EXT].copy_from_slice(&value.to_be_bytes());
    }
    /// Sets the queue number (untagged).
    pub fn set_queue_number(&mut self, value: QueueNumber) {
        self.buffer.as_mut()[field::QN].copy_from_slice(&value.0.to_be_bytes());
    }
    /// Sets the MSN (untagged).
    pub fn set_msn(&mut self, value: Msn) {
        self.buffer.as_mut()[field::MSN].copy_from_slice(&value.0.to_be_bytes());
    }
    /// Sets the message offset (untagged).
    pub fn set_message_offset(&mut self, value: u32) {
        self.buffer.as_mut()[field::MO].copy_from_slice(&value.to_be_bytes());
    }
}

#[inline]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
pub(crate) fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tagged Read Response from rping-v2-crc.pcap frame 10 (header only).
    static TAGGED: [u8; 14] = [0xc1, 0x42, 0x99, 0x98, 0x63, 0x00, 0x00, 0x00, 0x55, 0x56, 0xb7, 0x34, 0xc5, 0x50];
    // Untagged Read Request header from the same capture, frame 9.
    static UNTAGGED: [u8; 18] = [0x41, 0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];

    #[test]
    fn deconstruct_tagged() {
        let s = Segment::new_checked(&TAGGED[..]).unwrap();
        assert!(s.tagged());
        assert!(s.last());
        assert_eq!(s.version(), 1);
        assert_eq!(s.rsvd_ulp(), 0x42);
        assert_eq!(s.stag(), Stag(0x9998_6300));
        assert_eq!(s.stag().index(), 0x99_9863);
        assert_eq!(s.stag().key(), 0);
        assert_eq!(s.tagged_offset(), TaggedOffset(0x0000_5556_b734_c550));
        assert_eq!(s.header_len(), 14);
        assert!(s.payload().is_empty());
    }

    #[test]
    fn deconstruct_untagged() {
        let s = Segment::new_checked(&UNTAGGED[..]).unwrap();
        assert!(!s.tagged());
        assert!(s.last());
        assert_eq!(s.queue_number(), QueueNumber::READ_REQUEST);
        assert_eq!(s.msn(), Msn(1));
        assert_eq!(s.message_offset(), 0);
        assert_eq!(s.rsvd_ulp_ext(), 0);
        assert_eq!(s.placement(), Placement::Untagged { qn: QueueNumber(1), msn: Msn(1), mo: 0 });
    }

    #[test]
    fn construct_tagged_and_untagged() {
        let mut buf = [0xa5u8; 14];
        let mut s = Segment::new_unchecked(&mut buf[..]);
        s.set_control(flags::TAGGED | flags::LAST | VERSION);
        s.set_rsvd_ulp(0x42);
        s.set_stag(Stag(0x9998_6300));
        s.set_tagged_offset(TaggedOffset(0x0000_5556_b734_c550));
        assert_eq!(buf, TAGGED);

        let mut buf = [0xa5u8; 18];
        let mut s = Segment::new_unchecked(&mut buf[..]);
        s.set_control(flags::LAST | VERSION);
        s.set_rsvd_ulp(0x41);
        s.set_rsvd_ulp_ext(0);
        s.set_queue_number(QueueNumber(1));
        s.set_msn(Msn(1));
        s.set_message_offset(0);
        assert_eq!(buf, UNTAGGED);
    }

    #[test]
    fn truncated() {
        assert_eq!(Segment::new_checked(&[][..]), Err(Error::Truncated { needed: 1, available: 0 }));
        assert_eq!(Segment::new_checked(&TAGGED[..13]), Err(Error::Truncated { needed: 14, available: 13 }));
        assert_eq!(Segment::new_checked(&UNTAGGED[..17]), Err(Error::Truncated { needed: 18, available: 17 }));
        // A tagged header is long enough for the tagged model even though 18 would be untagged.
        assert!(Segment::new_checked(&TAGGED[..]).is_ok());
    }

    #[test]
    fn stag_parts_and_msn_wrap() {
        assert_eq!(Stag::from_parts(0xd7152e, 0x00), Stag(0xd715_2e00));
        assert_eq!(Stag::from_parts(0x123456, 0x78).key(), 0x78);
        assert_eq!(Msn(u32::MAX).next(), Msn(0));
        assert_eq!(Stag(0xd715_2e00).to_string(), "0xd7152e00");
    }
}
