//! MPA Request and Reply frames (RFC 5044 §7.1, RFC 6581 §5 and §9).
//!
//! ```text
//! 0      16       17     18          20
//! | Key  | M C R S Res | Rev | PD_Length | Private Data (PD_Length bytes) |
//! ```
//! With revision 2 and the S ("enhanced") flag, private data starts with the 4-byte RFC 6581
//! block `A B IRD(14) | C D ORD(14)`: A = peer-to-peer, B/C/D = zero-length Send/Write/Read RTR.
//! [`FrameRepr::private_data`] is the ULP's part after that block.

use crate::Error;

/// Length of the key.
pub const KEY_LEN: usize = 16;
/// The Request key, "MPA ID Req Frame".
pub const REQUEST_KEY: [u8; KEY_LEN] = *b"MPA ID Req Frame";
/// The Reply key, "MPA ID Rep Frame".
pub const REPLY_KEY: [u8; KEY_LEN] = *b"MPA ID Rep Frame";
/// Length of the fixed header (key, flags, revision, private data length).
pub const HEADER_LEN: usize = 20;
/// RFC 5044 §7.1: private data "MUST NOT exceed 512 bytes".
pub const MAX_PRIVATE_DATA: usize = 512;
/// Length of the RFC 6581 IRD/ORD block.
pub const ENHANCED_PARAMS_LEN: usize = 4;
/// RFC 6581 §9.1: an IRD or ORD of 0x3FFF means "no automatic negotiation".
pub const IRD_ORD_NO_NEGOTIATION: u16 = 0x3FFF;
/// The largest IRD or ORD the 14-bit fields hold.
pub const IRD_ORD_MAX: u16 = 0x3FFF;

/// Bit masks of the flags byte.
pub mod flags {
    /// M: the sender wants markers in the FPDUs sent to it.
    pub const MARKERS: u8 = 0x80;
    /// C: the sender prefers CRC.
    pub const CRC: u8 = 0x40;
    /// R: the Reply rejects the connection.
    pub const REJECT: u8 = 0x20;
    /// S: RFC 6581 enhanced connection setup (revision 2).
    pub const ENHANCED: u8 = 0x10;
    /// Reserved bits (Linux siw uses 0x08 for its private GSO flag).
    pub const RESERVED: u8 = 0x0F;
}

mod field {
    use core::ops::Range;
    pub const KEY: Range<usize> = 0..16;
    pub const FLAGS: usize = 16;
    pub const REV: usize = 17;
    pub const PD_LEN: Range<usize> = 18..20;
    pub const PD: usize = 20;
}

/// Which startup frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// MPA Request, sent by the initiator.
    Request,
    /// MPA Reply, sent by the responder.
    Reply,
}

impl FrameKind {
    /// The key this frame starts with.
    pub fn key(self) -> &'static [u8; KEY_LEN] {
        match self {
            FrameKind::Request => &REQUEST_KEY,
            FrameKind::Reply => &REPLY_KEY,
        }
    }
}

/// How far the start of a byte stream matches a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMatch {
    /// All bytes so far match, but fewer than 16 are present.
    Prefix,
    /// The 16-byte key is present.
    Full,
    /// Some byte differs.
    Mismatch,
}

/// Compares the start of `stream` with the key of `kind`.
pub fn match_key(stream: &[u8], kind: FrameKind) -> KeyMatch {
    let key = kind.key();
    let n = stream.len().min(KEY_LEN);
    if stream[..n] != key[..n] {
        KeyMatch::Mismatch
    } else if n == KEY_LEN {
        KeyMatch::Full
    } else {
        KeyMatch::Prefix
    }
}

/// One RFC 6581 ready-to-receive message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtrType {
    /// Zero-length Send (flag B).
    Send,
    /// Zero-length RDMA Write (flag C).
    Write,
    /// Zero-length RDMA Read (flag D).
    Read,
}

/// RFC 6581 RTR types (B, C, D flags): which zero-length message may serve as the
/// ready-to-receive indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RtrTypes {
    /// B: zero-length Send.
    pub send: bool,
    /// C: zero-length RDMA Write.
    pub write: bool,
    /// D: zero-length RDMA Read.
    pub read: bool,
}

impl RtrTypes {
    /// No RTR type.
    pub const NONE: RtrTypes = RtrTypes { send: false, write: false, read: false };
    /// Every RTR type.
    pub const ALL: RtrTypes = RtrTypes { send: true, write: true, read: true };

    /// The types both sets contain.
    pub fn intersect(self, other: RtrTypes) -> RtrTypes {
        RtrTypes { send: self.send && other.send, write: self.write && other.write, read: self.read && other.read }
    }

    /// `true` if no type is set.
    pub fn is_empty(self) -> bool {
        !(self.send || self.write || self.read)
    }

    /// `true` if `t` is in the set.
    pub fn contains(self, t: RtrType) -> bool {
        match t {
            RtrType::Send => self.send,
            RtrType::Write => self.write,
            RtrType::Read => self.read,
        }
    }

    /// The set holding only `t`.
    pub fn only(t: RtrType) -> RtrTypes {
        RtrTypes { send: t == RtrType::Send, write: t == RtrType::Write, read: t == RtrType::Read }
    }

    /// The type to use from this set: Write first (what Linux siw and most peers prefer),
    /// then Read, then Send.
    pub fn preferred(self) -> Option<RtrType> {
        [RtrType::Write, RtrType::Read, RtrType::Send].into_iter().find(|&t| self.contains(t))
    }
}

/// The RFC 6581 enhanced connection parameters carried at the start of private data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedParams {
    /// A: peer-to-peer model (an RTR message will be sent).
    pub peer_to_peer: bool,
    /// Inbound RDMA Read queue depth (14 bits).
    pub ird: u16,
    /// Outbound RDMA Read queue depth (14 bits).
    pub ord: u16,
    /// RTR types offered (Request) or chosen (Reply).
    pub rtr: RtrTypes,
}

mod enh {
    pub const A: u16 = 0x8000;
    pub const B: u16 = 0x4000;
    pub const C: u16 = 0x8000;
    pub const D: u16 = 0x4000;
    pub const VALUE: u16 = 0x3FFF;
}

impl EnhancedParams {
    /// Client/server parameters with the given depths and no RTR.
    pub fn client_server(ird: u16, ord: u16) -> Self {
        EnhancedParams { peer_to_peer: false, ird, ord, rtr: RtrTypes::NONE }
    }

    /// Reads the 4-byte block.
    pub fn from_bytes(b: [u8; ENHANCED_PARAMS_LEN]) -> Self {
        let ird = u16::from_be_bytes([b[0], b[1]]);
        let ord = u16::from_be_bytes([b[2], b[3]]);
        EnhancedParams {
            peer_to_peer: ird & enh::A != 0,
            ird: ird & enh::VALUE,
            ord: ord & enh::VALUE,
            rtr: RtrTypes { send: ird & enh::B != 0, write: ord & enh::C != 0, read: ord & enh::D != 0 },
        }
    }

    /// The 4-byte block. IRD and ORD are clamped to 14 bits.
    pub fn to_bytes(&self) -> [u8; ENHANCED_PARAMS_LEN] {
        let mut ird = self.ird.min(IRD_ORD_MAX);
        let mut ord = self.ord.min(IRD_ORD_MAX);
        if self.peer_to_peer {
            ird |= enh::A;
        }
        if self.rtr.send {
            ird |= enh::B;
        }
        if self.rtr.write {
            ord |= enh::C;
        }
        if self.rtr.read {
            ord |= enh::D;
        }
        let i = ird.to_be_bytes();
        let o = ord.to_be_bytes();
        [i[0], i[1], o[0], o[1]]
    }
}

/// A view over an MPA Request or Reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without checks; for emission into a buffer of the right size.
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps `buffer` after checking it holds the header and all the private data it announces.
    ///
    /// # Errors
    /// [`Error::Truncated`] otherwise.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks the length. After it succeeds no accessor panics.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the header or the announced private data is incomplete.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { needed: HEADER_LEN, available: len });
        }
        let needed = HEADER_LEN + usize::from(self.pd_length());
        if len < needed {
            return Err(Error::Truncated { needed, available: len });
        }
        Ok(())
    }

    /// The 16-byte key.
    pub fn key(&self) -> &[u8] {
        &self.buffer.as_ref()[field::KEY]
    }
    /// Which frame the key names, if any.
    pub fn kind(&self) -> Option<FrameKind> {
        match self.key() {
            k if k == REQUEST_KEY => Some(FrameKind::Request),
            k if k == REPLY_KEY => Some(FrameKind::Reply),
            _ => None,
        }
    }
    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// The revision.
    pub fn revision(&self) -> u8 {
        self.buffer.as_ref()[field::REV]
    }
    /// PD_Length.
    pub fn pd_length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PD_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }
    /// All private data, including an RFC 6581 block if present.
    pub fn private_data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PD..field::PD + usize::from(self.pd_length())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the key.
    pub fn set_key(&mut self, key: &[u8; KEY_LEN]) {
        self.buffer.as_mut()[field::KEY].copy_from_slice(key);
    }
    /// Sets the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }
    /// Sets the revision.
    pub fn set_revision(&mut self, value: u8) {
        self.buffer.as_mut()[field::REV] = value;
    }
    /// Sets PD_Length.
    pub fn set_pd_length(&mut self, value: u16) {
        self.buffer.as_mut()[field::PD_LEN].copy_from_slice(&value.to_be_bytes());
    }
    /// The private data area (PD_Length must be set first).
    pub fn private_data_mut(&mut self) -> &mut [u8] {
        let n = usize::from(self.pd_length());
        &mut self.buffer.as_mut()[field::PD..field::PD + n]
    }
}

/// An MPA Request or Reply as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRepr<'a> {
    /// Request or Reply.
    pub kind: FrameKind,
    /// M: the sender wants markers in the FPDUs it receives.
    pub markers: bool,
    /// C: the sender prefers CRC.
    pub crc: bool,
    /// R: rejection (Replies only; sent 0 and ignored in Requests).
    pub reject: bool,
    /// The revision: 1 or 2.
    pub revision: u8,
    /// RFC 6581 parameters: `Some` exactly when the S flag is set on a revision-2 frame.
    pub enhanced: Option<EnhancedParams>,
    /// The ULP's private data (after the RFC 6581 block, if any).
    pub private_data: &'a [u8],
    /// Reserved flag bits (RFC 5044: "set to zero on transmit, not checked on receive"). Kept
    /// as received (e.g. siw's 0x08 GSO flag); emitted as given, so an extension two
    /// implementations agree on can use them.
    pub reserved_flags: u8,
}

impl<'a> FrameRepr<'a> {
    /// A revision-2 enhanced frame with CRC requested and no markers.
    pub fn enhanced(kind: FrameKind, params: EnhancedParams, private_data: &'a [u8]) -> Self {
        FrameRepr {
            kind,
            markers: false,
            crc: true,
            reject: false,
            revision: 2,
            enhanced: Some(params),
            private_data,
            reserved_flags: 0,
        }
    }

    /// Parses a frame at the start of a byte stream.
    ///
    /// Returns `Ok(None)` while the frame is incomplete (more bytes are needed), and
    /// `Ok(Some((frame, consumed)))` once it is whole. Bytes after `consumed` are not looked at.
    ///
    /// Checks (RFC 5044 §7.1.2, RFC 6581): the key of `expected` (a mismatch is reported as soon
    /// as one byte differs), revision 1 or 2, PD_Length at most 512 (reported as soon as the
    /// header is in, without waiting for the data), and for an enhanced frame room for the
    /// IRD/ORD block.
    ///
    /// # Errors
    /// An [`Error`] whose Terminate cause is MPA "invalid Request or Reply" (code 4).
    pub fn parse(stream: &'a [u8], expected: FrameKind) -> Result<Option<(Self, usize)>, Error> {
        match match_key(stream, expected) {
            KeyMatch::Mismatch => return Err(Error::BadKey { expected }),
            KeyMatch::Prefix => return Ok(None),
            KeyMatch::Full => {}
        }
        if stream.len() < HEADER_LEN {
            return Ok(None);
        }
        let f = Frame::new_unchecked(stream);
        let revision = f.revision();
        // RFC 5044 §7.1.2: receivers MUST check Rev; RFC 6581 §4: revisions 1 and 2 interoperate.
        if revision != 1 && revision != 2 {
            return Err(Error::UnsupportedRevision(revision));
        }
        let pd_len = f.pd_length();
        // RFC 5044 §7.1: PD_Length "MUST NOT exceed 512".
        if usize::from(pd_len) > MAX_PRIVATE_DATA {
            return Err(Error::PrivateDataTooLong(pd_len));
        }
        let flags_byte = f.flags();
        let enhanced_flag = revision >= 2 && flags_byte & flags::ENHANCED != 0;
        // RFC 6581 §5: with S set the private data begins with the 4-byte IRD/ORD block.
        if enhanced_flag && usize::from(pd_len) < ENHANCED_PARAMS_LEN {
            return Err(Error::MissingEnhancedParams(pd_len));
        }
        let total = HEADER_LEN + usize::from(pd_len);
        if stream.len() < total {
            return Ok(None);
        }
        let pd = &stream[HEADER_LEN..total];
        let (enhanced, private_data) = if enhanced_flag {
            let block = [pd[0], pd[1], pd[2], pd[3]];
            (Some(EnhancedParams::from_bytes(block)), &pd[ENHANCED_PARAMS_LEN..])
        } else {
            (None, pd)
        };
        // On revision 1 the S bit is RFC 5044's reserved bit: kept with the other reserved bits.
        let reserved_mask = if revision >= 2 { flags::RESERVED } else { flags::RESERVED | flags::ENHANCED };
        let repr = FrameRepr {
            kind: expected,
            markers: flags_byte & flags::MARKERS != 0,
            crc: flags_byte & flags::CRC != 0,
            reject: flags_byte & flags::REJECT != 0,
            revision,
            enhanced,
            private_data,
            reserved_flags: flags_byte & reserved_mask,
        };
        Ok(Some((repr, total)))
    }

    /// Parses a frame that must fill `bytes` exactly: the whole frame is present and nothing
    /// follows it.
    ///
    /// # Errors
    /// As [`parse`](Self::parse), plus [`Error::Truncated`] when incomplete and
    /// [`Error::TrailingBytes`] when bytes follow.
    pub fn parse_exact(bytes: &'a [u8], expected: FrameKind) -> Result<Self, Error> {
        match Self::parse(bytes, expected)? {
            None => {
                let needed = if bytes.len() < HEADER_LEN {
                    HEADER_LEN
                } else {
                    HEADER_LEN + usize::from(Frame::new_unchecked(bytes).pd_length())
                };
                Err(Error::Truncated { needed, available: bytes.len() })
            }
            Some((repr, used)) if used == bytes.len() => Ok(repr),
            Some((_, used)) => Err(Error::TrailingBytes { kind: expected, extra: bytes.len() - used }),
        }
    }

    /// Bytes of private data on the wire, including the RFC 6581 block.
    pub fn pd_length(&self) -> usize {
        self.private_data.len() + if self.enhanced.is_some() { ENHANCED_PARAMS_LEN } else { 0 }
    }

    /// Length of the emitted frame.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.pd_length()
    }

    /// Writes the frame into `out`, which must be [`buffer_len`](Self::buffer_len) bytes long.
    /// Of the reserved flags, only the bits under [`flags::RESERVED`] are written.
    ///
    /// # Errors
    /// [`Error::PrivateDataTooLong`] above 512 bytes, [`Error::UnsupportedRevision`] for a
    /// revision other than 1 or 2 (or RFC 6581 parameters on revision 1), and
    /// [`Error::BadMessageLength`] if `out` has the wrong length.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), Error> {
        let pd_len = self.pd_length();
        if pd_len > MAX_PRIVATE_DATA {
            return Err(Error::PrivateDataTooLong(pd_len.min(usize::from(u16::MAX)) as u16));
        }
        if !(1..=2).contains(&self.revision) || (self.enhanced.is_some() && self.revision < 2) {
            return Err(Error::UnsupportedRevision(self.revision));
        }
        if out.len() != self.buffer_len() {
            return Err(Error::BadMessageLength { what: "MPA request/reply", len: out.len() });
        }
        let mut f = Frame::new_unchecked(out);
        f.set_key(self.kind.key());
        let mut fl = 0;
        if self.markers {
            fl |= flags::MARKERS;
        }
        if self.crc {
            fl |= flags::CRC;
        }
        if self.reject {
            fl |= flags::REJECT;
        }
        if self.enhanced.is_some() {
            fl |= flags::ENHANCED;
        }
        fl |= self.reserved_flags & flags::RESERVED;
        f.set_flags(fl);
        f.set_revision(self.revision);
        // Checked against MAX_PRIVATE_DATA above, so it fits in 16 bits.
        f.set_pd_length(pd_len as u16);
        let pd = f.private_data_mut();
        let mut at = 0;
        if let Some(e) = self.enhanced {
            pd[..ENHANCED_PARAMS_LEN].copy_from_slice(&e.to_bytes());
            at = ENHANCED_PARAMS_LEN;
        }
        pd[at..].copy_from_slice(self.private_data);
        Ok(())
    }

    /// The frame as a new vector.
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminate::{Mpa, TerminateCause};

    // rping-v2-crc.pcap frame 4: rev 2, C + S, PD 4 = IRD 1 / ORD 1.
    static REQUEST: [u8; 24] = [
        0x4d, 0x50, 0x41, 0x20, 0x49, 0x44, 0x20, 0x52, 0x65, 0x71, 0x20, 0x46, 0x72, 0x61, 0x6d, 0x65, //
        0x50, 0x02, 0x00, 0x04, 0x00, 0x01, 0x00, 0x01,
    ];

    #[test]
    fn deconstruct_request() {
        let f = Frame::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(f.kind(), Some(FrameKind::Request));
        assert_eq!(f.flags(), 0x50);
        assert_eq!(f.revision(), 2);
        assert_eq!(f.pd_length(), 4);
        assert_eq!(f.private_data(), &[0, 1, 0, 1]);
        let (r, used) = FrameRepr::parse(&REQUEST, FrameKind::Request).unwrap().unwrap();
        assert_eq!(used, 24);
        assert!(r.crc && !r.markers && !r.reject);
        assert_eq!(r.revision, 2);
        assert_eq!(r.enhanced, Some(EnhancedParams::client_server(1, 1)));
        assert!(r.private_data.is_empty());
    }

    #[test]
    fn construct_request() {
        let r = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(1, 1), &[]);
        let mut buf = [0xa5u8; 24];
        r.emit(&mut buf).unwrap();
        assert_eq!(buf, REQUEST);
        let reply = FrameRepr { kind: FrameKind::Reply, ..r };
        let v = reply.to_vec().unwrap();
        assert_eq!(&v[..16], b"MPA ID Rep Frame");
        assert_eq!(&v[16..], &REQUEST[16..]);
    }

    #[test]
    fn truncated_is_incomplete_not_error() {
        for n in 0..REQUEST.len() {
            assert_eq!(FrameRepr::parse(&REQUEST[..n], FrameKind::Request), Ok(None), "at {n}");
        }
        assert!(matches!(
            FrameRepr::parse_exact(&REQUEST[..23], FrameKind::Request),
            Err(Error::Truncated { needed: 24, available: 23 })
        ));
        assert!(Frame::new_checked(&REQUEST[..19]).is_err());
        assert!(Frame::new_checked(&REQUEST[..23]).is_err());
    }

    #[test]
    fn wrong_key_is_reported_at_the_first_differing_byte() {
        assert_eq!(
            FrameRepr::parse(b"MPA ID Rep", FrameKind::Request),
            Err(Error::BadKey { expected: FrameKind::Request })
        );
        assert_eq!(
            FrameRepr::parse(b"GET / HTTP/1.1\r\n", FrameKind::Request),
            Err(Error::BadKey { expected: FrameKind::Request })
        );
        assert_eq!(FrameRepr::parse(&REQUEST, FrameKind::Reply), Err(Error::BadKey { expected: FrameKind::Reply }));
        let e = FrameRepr::parse(&REQUEST, FrameKind::Reply).unwrap_err();
        assert_eq!(e.terminate_cause(), TerminateCause::Mpa(Mpa::InvalidRequestReply));
        assert_eq!(match_key(b"MPA", FrameKind::Request), KeyMatch::Prefix);
        assert_eq!(match_key(b"MPA ID Req Frame....", FrameKind::Request), KeyMatch::Full);
        assert_eq!(match_key(b"MPX", FrameKind::Request), KeyMatch::Mismatch);
    }

    #[test]
    fn bad_revision_and_lengths() {
        let mut b = REQUEST;
        b[17] = 3;
        assert_eq!(FrameRepr::parse(&b, FrameKind::Request), Err(Error::UnsupportedRevision(3)));
        b[17] = 0;
        assert_eq!(FrameRepr::parse(&b, FrameKind::Request), Err(Error::UnsupportedRevision(0)));
        // PD_Length 513 is rejected from the header alone.
        let mut h = REQUEST[..20].to_vec();
        h[18..20].copy_from_slice(&513u16.to_be_bytes());
        assert_eq!(FrameRepr::parse(&h, FrameKind::Request), Err(Error::PrivateDataTooLong(513)));
        // Enhanced flag with only 2 bytes of private data.
        let mut h = REQUEST[..22].to_vec();
        h[18..20].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(FrameRepr::parse(&h, FrameKind::Request), Err(Error::MissingEnhancedParams(2)));
        // Extra bytes after the frame.
        let mut x = REQUEST.to_vec();
        x.extend_from_slice(&[0, 0x12]);
        assert_eq!(
            FrameRepr::parse_exact(&x, FrameKind::Request),
            Err(Error::TrailingBytes { kind: FrameKind::Request, extra: 2 })
        );
    }

    #[test]
    fn rev1_frame_has_no_enhanced_params_and_keeps_s_as_reserved() {
        let mut b = REQUEST[..20].to_vec();
        b[17] = 1;
        b[18..20].copy_from_slice(&0u16.to_be_bytes());
        let (r, _) = FrameRepr::parse(&b, FrameKind::Request).unwrap().unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.reserved_flags, flags::ENHANCED);
    }

    #[test]
    fn enhanced_params_bits() {
        // rping-v2-p2p-crc.pcap: request 8001 c001, reply 8001 8001.
        let req = EnhancedParams::from_bytes([0x80, 0x01, 0xc0, 0x01]);
        assert_eq!(
            req,
            EnhancedParams {
                peer_to_peer: true,
                ird: 1,
                ord: 1,
                rtr: RtrTypes { send: false, write: true, read: true }
            }
        );
        assert_eq!(req.to_bytes(), [0x80, 0x01, 0xc0, 0x01]);
        let rep = EnhancedParams::from_bytes([0x80, 0x01, 0x80, 0x01]);
        assert_eq!(rep.rtr, RtrTypes { send: false, write: true, read: false });
        let b = EnhancedParams { peer_to_peer: true, ird: 0x3FFF, ord: 5, rtr: RtrTypes::ALL }.to_bytes();
        assert_eq!(b, [0xFF, 0xFF, 0xC0, 0x05]);
        assert_eq!(RtrTypes::ALL.intersect(rep.rtr), rep.rtr);
    }

    #[test]
    fn emit_limits() {
        let big = [0u8; 509];
        let r = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(1, 1), &big);
        assert_eq!(r.to_vec(), Err(Error::PrivateDataTooLong(513)));
        let ok = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(1, 1), &big[..508]);
        assert_eq!(ok.to_vec().unwrap().len(), 532);
        let bad = FrameRepr { revision: 1, ..ok };
        assert_eq!(bad.to_vec(), Err(Error::UnsupportedRevision(1)));
    }
}
