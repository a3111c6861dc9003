//! Incremental FPDU deframing of a received stream (RFC 5044 §4, markers §4.3, CRC §4.4).

use super::{pad_len, CRC_LEN, LENGTH_FIELD_LEN, MARKER_INTERVAL, MARKER_LEN};
use crate::crc::{self, Crc32c};
use crate::ddp;
use crate::payload::PayloadSource;
use crate::rdmap::{Routed, SegmentHeader};
use crate::Error;

/// Longest FPDU header the deframer collects: the length field and an untagged DDP header.
pub const MAX_HEADER_LEN: usize = LENGTH_FIELD_LEN + ddp::UNTAGGED_HEADER_LEN;
/// Bytes of header needed to know the header's length: the length field and the DDP control byte.
const PROBE_LEN: usize = LENGTH_FIELD_LEN + 1;

/// How a connection's received FPDUs are framed, fixed when MPA negotiation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeframerConfig {
    /// Check CRCs (on unless both ends sent C = 0).
    pub crc: bool,
    /// The peer inserts markers (we sent M = 1).
    pub markers: bool,
    /// The longest ULPDU accepted; longer ones are an error.
    pub max_ulpdu: u16,
}

impl Default for DeframerConfig {
    fn default() -> Self {
        DeframerConfig { crc: true, markers: false, max_ulpdu: u16::MAX }
    }
}

/// What the next bytes of the stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The next `n` bytes are FPDU header (length field and DDP header). More header may follow
    /// once these are in.
    Header(usize),
    /// The next `n` bytes are payload of the current FPDU (no marker among them): they may be
    /// read straight into the payload's destination and reported with
    /// [`Deframer::payload_placed`].
    Payload(usize),
    /// The next `n` bytes are (the rest of) a marker.
    Marker(usize),
    /// The next `n` bytes are pad and CRC.
    Trailer(usize),
}

impl Need {
    /// The byte count.
    pub fn len(self) -> usize {
        match self {
            Need::Header(n) | Need::Payload(n) | Need::Marker(n) | Need::Trailer(n) => n,
        }
    }

    /// `true` if the count is zero (never returned by [`Deframer::need`]).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// The header of a received FPDU: its length field and DDP header, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpduHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl FpduHeader {
    /// ULPDU_Length.
    pub fn ulpdu_len(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }
    /// The DDP header bytes (14 or 18).
    pub fn ddp_header(&self) -> &[u8] {
        &self.bytes[LENGTH_FIELD_LEN..usize::from(self.len)]
    }
    /// Length field and DDP header, as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
    /// `true` for a tagged segment.
    pub fn tagged(&self) -> bool {
        self.bytes[LENGTH_FIELD_LEN] & ddp::flags::TAGGED != 0
    }
    /// Bytes of DDP payload after the header.
    pub fn payload_len(&self) -> usize {
        // Only the deframer builds an FpduHeader, and only once ULPDU_Length is known to cover
        // the DDP header (`UlpduTooShort` otherwise), so this does not underflow.
        usize::from(self.ulpdu_len()) - self.ddp_header().len()
    }
    /// The validated DDP + RDMAP header.
    ///
    /// # Errors
    /// As [`SegmentHeader::parse`].
    pub fn segment(&self) -> Result<SegmentHeader, Error> {
        SegmentHeader::parse(self.ddp_header())
    }
    /// The validated header with its opcode's row and route: what a receiver dispatches on.
    ///
    /// # Errors
    /// As [`SegmentHeader::parse_routed`].
    #[inline]
    pub fn routed(&self) -> Result<Routed, Error> {
        SegmentHeader::parse_routed(self.ddp_header())
    }
}

/// The end of a received FPDU, after its CRC (if checked) matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpduEnd {
    /// The CRC field as received.
    pub crc: u32,
    /// Bytes the FPDU took on the wire, markers included.
    pub wire_len: u64,
}

/// What [`Deframer::feed`] found in the bytes it consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Nothing to report (part of a header, a marker, pad).
    None,
    /// A whole FPDU header.
    Header(FpduHeader),
    /// Payload bytes of the current FPDU, borrowed from the input (no marker among them).
    Payload(&'a [u8]),
    /// The FPDU is complete and its CRC matched (or CRC is off).
    End(FpduEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Payload,
    Trailer,
}

/// Finds FPDUs in one direction of a connection's byte stream, whatever chunks it arrives in.
///
/// Drive it either way, or both:
/// - [`feed`](Self::feed) bytes you have in memory; it consumes up to the end of the current
///   item and reports a header, a payload slice (borrowed, not copied) or the end of an FPDU;
/// - ask [`need`](Self::need) what comes next and, when it is [`Need::Payload`], read that many
///   bytes from the socket straight into the payload's destination, then report them with
///   [`payload_placed`](Self::payload_placed), which folds them into the CRC.
///
/// Markers are checked and removed; CRCs are checked when enabled. The first error is sticky:
/// every later call returns it.
#[derive(Debug, Clone)]
pub struct Deframer {
    cfg: DeframerConfig,
    /// Stream offset of the next byte, since the start of full operation.
    pos: u64,
    state: State,
    hdr: [u8; MAX_HEADER_LEN],
    hdr_have: usize,
    hdr_len: usize,
    payload_left: usize,
    trailer: [u8; 3 + CRC_LEN],
    trailer_have: usize,
    trailer_len: usize,
    marker: [u8; MARKER_LEN],
    /// An FPDU (or the marker in front of it) has started.
    fpdu_open: bool,
    /// Stream offset of the current FPDU's ULPDU_Length field.
    fpdu_start: u64,
    /// Stream offset of the first byte counted in the current FPDU (a leading marker, if any).
    fpdu_wire_start: u64,
    crc: Crc32c,
    marker_fault: Option<Error>,
    error: Option<Error>,
}

impl Deframer {
    /// A deframer at the start of full operation.
    pub fn new(cfg: DeframerConfig) -> Self {
        Deframer {
            cfg,
            pos: 0,
            state: State::Header,
            hdr: [0; MAX_HEADER_LEN],
            hdr_have: 0,
            hdr_len: PROBE_LEN,
            payload_left: 0,
            trailer: [0; 3 + CRC_LEN],
            trailer_have: 0,
            trailer_len: 0,
            marker: [0; MARKER_LEN],
            fpdu_open: false,
            fpdu_start: 0,
            fpdu_wire_start: 0,
            crc: Crc32c::new(),
            marker_fault: None,
            error: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> DeframerConfig {
        self.cfg
    }

    /// Stream offset of the next byte (since full operation began), markers included.
    pub fn stream_offset(&self) -> u64 {
        self.pos
    }

    /// `true` between FPDUs: an end of stream here is a clean close.
    pub fn is_idle(&self) -> bool {
        !self.fpdu_open && self.error.is_none()
    }

    /// The sticky error, if one occurred.
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// What the next bytes of the stream are, and how many of them. Never zero.
    pub fn need(&self) -> Need {
        if self.cfg.markers {
            let in_interval = self.pos % MARKER_INTERVAL;
            if in_interval < MARKER_LEN as u64 {
                return Need::Marker(MARKER_LEN - in_interval as usize);
            }
        }
        let room = if self.cfg.markers { (MARKER_INTERVAL - self.pos % MARKER_INTERVAL) as usize } else { usize::MAX };
        match self.state {
            State::Header => Need::Header((self.hdr_len - self.hdr_have).min(room)),
            State::Payload => Need::Payload(self.payload_left.min(room)),
            State::Trailer => Need::Trailer((self.trailer_len - self.trailer_have).min(room)),
        }
    }

    /// Consumes bytes from the front of `input`, at most up to the end of the current item
    /// (header, payload run, marker, trailer; a header may be taken whole although
    /// [`need`](Self::need) announced only the bytes that tell its length). Returns how many
    /// bytes it consumed and what they completed. Call it again with the rest of the input.
    ///
    /// # Errors
    /// A malformed length field, a bad CRC or a misplaced marker; see [`Error`].
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Event<'a>), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if input.is_empty() {
            return Ok((0, Event::None));
        }
        let need = self.need();
        let mut k = need.len().min(input.len());
        // Without markers, a header whose DDP control byte is in the input is taken in one
        // piece (its length follows from that byte) rather than probed first.
        if !self.cfg.markers && self.state == State::Header && self.hdr_len == PROBE_LEN {
            if let Some(&ctrl) = input.get(PROBE_LEN - 1 - self.hdr_have) {
                k = (LENGTH_FIELD_LEN + ddp::header_len_for(ctrl) - self.hdr_have).min(input.len());
            }
        }
        let chunk = &input[..k];
        let event = match need {
            Need::Marker(_) => {
                self.take_marker(chunk);
                Event::None
            }
            Need::Header(_) => match self.take_header(chunk) {
                Ok(Some(h)) => Event::Header(h),
                Ok(None) => Event::None,
                Err(e) => return Err(self.fail(e)),
            },
            Need::Payload(_) => {
                self.take_payload(chunk);
                Event::Payload(chunk)
            }
            Need::Trailer(_) => match self.take_trailer(chunk) {
                Ok(Some(end)) => Event::End(end),
                Ok(None) => Event::None,
                Err(e) => return Err(self.fail(e)),
            },
        };
        Ok((k, event))
    }

    /// Takes a whole FPDU from the front of `input` in one call: when the stream is between
    /// FPDUs, carries no markers, and `input` holds the complete FPDU with a valid length and
    /// (if checked) a matching CRC. Returns its wire length, header, payload (borrowed from
    /// `input`) and end: what three [`feed`](Self::feed) calls would report, with the CRC
    /// checked before any of it is handed out. `None` in every other case, consuming nothing:
    /// then [`feed`](Self::feed) takes the bytes (and reports any error).
    pub fn feed_whole<'a>(&mut self, input: &'a [u8]) -> Option<(usize, FpduHeader, &'a [u8], FpduEnd)> {
        if self.cfg.markers || self.error.is_some() || self.state != State::Header || self.hdr_have != 0 {
            return None;
        }
        let (&[l0, l1, ctrl], _) = input.split_first_chunk::<PROBE_LEN>()?;
        let ulpdu_len = usize::from(u16::from_be_bytes([l0, l1]));
        let hdr_len = LENGTH_FIELD_LEN + ddp::header_len_for(ctrl);
        // RFC 5044 §4.1: length, ULPDU, pad to a multiple of four, CRC.
        let crc_at = LENGTH_FIELD_LEN + ulpdu_len + pad_len(ulpdu_len);
        let total = crc_at + CRC_LEN;
        if ulpdu_len + LENGTH_FIELD_LEN < hdr_len || ulpdu_len > usize::from(self.cfg.max_ulpdu) || input.len() < total
        {
            return None;
        }
        let received = crc::from_wire([input[crc_at], input[crc_at + 1], input[crc_at + 2], input[crc_at + 3]]);
        // RFC 5044 §4.4: length, ULPDU and pad are covered.
        if self.cfg.crc && crc::crc32c(&input[..crc_at]) != received {
            return None;
        }
        let mut header = FpduHeader { bytes: [0; MAX_HEADER_LEN], len: hdr_len as u8 };
        header.bytes[..hdr_len].copy_from_slice(&input[..hdr_len]);
        self.pos += total as u64;
        let end = FpduEnd { crc: received, wire_len: total as u64 };
        Some((total, header, &input[hdr_len..LENGTH_FIELD_LEN + ulpdu_len], end))
    }

    /// Reports payload bytes the caller read straight into their destination. Accepts at most
    /// what [`need`](Self::need) announced as [`Need::Payload`] and returns how many bytes it
    /// took (zero when the stream is not at payload, or after an error).
    pub fn payload_placed(&mut self, placed: &[u8]) -> usize {
        self.payload_placed_in(&placed)
    }

    /// [`payload_placed`](Self::payload_placed) for bytes that may not be borrowed (placed in
    /// memory shared with the network): they are read, in chunks, only when CRCs are in use.
    pub fn payload_placed_in<P: PayloadSource + ?Sized>(&mut self, placed: &P) -> usize {
        match (self.error, self.need()) {
            (None, Need::Payload(n)) => {
                let k = n.min(placed.len());
                if self.cfg.crc {
                    let crc = &mut self.crc;
                    placed.for_each_chunk(0, k, &mut |c| crc.update(c));
                }
                self.advance_payload(k);
                k
            }
            _ => 0,
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.error = Some(e);
        e
    }

    /// Folds bytes into the running CRC, only when CRCs are in use (a zero field is ignored).
    fn fold_crc(&mut self, bytes: &[u8]) {
        if self.cfg.crc {
            self.crc.update(bytes);
        }
    }

    fn open_fpdu(&mut self) {
        if !self.fpdu_open {
            self.fpdu_open = true;
            self.fpdu_wire_start = self.pos;
            self.crc.reset();
        }
    }

    fn take_marker(&mut self, chunk: &[u8]) {
        // A marker met between FPDUs belongs to the next one and is covered by its CRC.
        self.open_fpdu();
        let at = (self.pos % MARKER_INTERVAL) as usize;
        self.marker[at..at + chunk.len()].copy_from_slice(chunk);
        self.fold_crc(chunk);
        self.pos += chunk.len() as u64;
        if at + chunk.len() == MARKER_LEN {
            let marker_pos = self.pos - MARKER_LEN as u64;
            // RFC 5044 §4.2: the two low bits of FPDUPTR "MUST always be treated as zero".
            let found = u16::from_be_bytes([self.marker[2], self.marker[3]]) & !3;
            // RFC 5044 §4.3: 0 between FPDUs, else the distance back to ULPDU_Length.
            let between = self.state == State::Header && self.hdr_have == 0;
            let expected = if between { 0 } else { (marker_pos - self.fpdu_start) as u16 };
            if found != expected && self.marker_fault.is_none() {
                self.marker_fault = Some(Error::Marker { offset: marker_pos, expected, found });
            }
        }
    }

    fn take_header(&mut self, chunk: &[u8]) -> Result<Option<FpduHeader>, Error> {
        self.open_fpdu();
        if self.hdr_have == 0 {
            self.fpdu_start = self.pos;
        }
        self.hdr[self.hdr_have..self.hdr_have + chunk.len()].copy_from_slice(chunk);
        self.fold_crc(chunk);
        self.pos += chunk.len() as u64;
        self.hdr_have += chunk.len();
        if self.hdr_have >= PROBE_LEN && self.hdr_len == PROBE_LEN {
            let ulpdu_len = u16::from_be_bytes([self.hdr[0], self.hdr[1]]);
            let ctrl = self.hdr[LENGTH_FIELD_LEN];
            let ddp_len = ddp::header_len_for(ctrl);
            let tagged = ctrl & ddp::flags::TAGGED != 0;
            self.hdr_len = LENGTH_FIELD_LEN + ddp_len;
            // Checked before reading on, so a short FPDU is not waited for past its end.
            if usize::from(ulpdu_len) < ddp_len {
                return Err(Error::UlpduTooShort { len: ulpdu_len, needed: ddp_len as u16 });
            }
            if ulpdu_len > self.cfg.max_ulpdu {
                return Err(Error::UlpduTooLong { len: ulpdu_len, max: self.cfg.max_ulpdu, tagged });
            }
        }
        if self.hdr_have < self.hdr_len {
            return Ok(None);
        }
        let ulpdu_len = usize::from(u16::from_be_bytes([self.hdr[0], self.hdr[1]]));
        self.payload_left = ulpdu_len - (self.hdr_len - LENGTH_FIELD_LEN);
        self.trailer_len = pad_len(ulpdu_len) + CRC_LEN;
        self.trailer_have = 0;
        self.state = if self.payload_left == 0 { State::Trailer } else { State::Payload };
        Ok(Some(FpduHeader { bytes: self.hdr, len: self.hdr_len as u8 }))
    }

    fn take_payload(&mut self, chunk: &[u8]) {
        self.fold_crc(chunk);
        self.advance_payload(chunk.len());
    }

    /// Counts `n` payload bytes (at most what is left of the payload) as consumed.
    fn advance_payload(&mut self, n: usize) {
        self.pos += n as u64;
        self.payload_left -= n;
        if self.payload_left == 0 {
            self.state = State::Trailer;
        }
    }

    fn take_trailer(&mut self, chunk: &[u8]) -> Result<Option<FpduEnd>, Error> {
        let pad = self.trailer_len - CRC_LEN;
        // Pad bytes are covered by the CRC; the CRC field is not.
        let pad_part = pad.saturating_sub(self.trailer_have).min(chunk.len());
        self.fold_crc(&chunk[..pad_part]);
        self.trailer[self.trailer_have..self.trailer_have + chunk.len()].copy_from_slice(chunk);
        self.trailer_have += chunk.len();
        self.pos += chunk.len() as u64;
        if self.trailer_have < self.trailer_len {
            return Ok(None);
        }
        let received =
            crc::from_wire([self.trailer[pad], self.trailer[pad + 1], self.trailer[pad + 2], self.trailer[pad + 3]]);
        if self.cfg.crc {
            let computed = self.crc.value();
            // RFC 5044 §4.4: a mismatch makes the FPDU invalid (error code 2, §8).
            if computed != received {
                return Err(Error::Crc { received, computed });
            }
        }
        // RFC 5044 §8: a marker disagreeing with ULPDU_Length is reported when the CRC is valid.
        if let Some(e) = self.marker_fault.take() {
            return Err(e);
        }
        let end = FpduEnd { crc: received, wire_len: self.pos - self.fpdu_wire_start };
        self.state = State::Header;
        self.hdr_have = 0;
        self.hdr_len = PROBE_LEN;
        self.fpdu_open = false;
        Ok(Some(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpa::Framer;
    use crate::terminate::{Mpa, TerminateCause, UntaggedBuffer};

    const SEND_HDR: [u8; 18] = [0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];

    /// Header bytes and payload of one FPDU.
    type Fpdu = (Vec<u8>, Vec<u8>);

    /// Feeds `stream` in `chunk`-byte pieces; returns each FPDU.
    fn collect(cfg: DeframerConfig, stream: &[u8], chunk: usize) -> Result<Vec<Fpdu>, Error> {
        let mut d = Deframer::new(cfg);
        let mut out = Vec::new();
        let mut cur: Option<Fpdu> = None;
        for piece in stream.chunks(chunk.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (n, ev) = d.feed(rest)?;
                assert!(n > 0, "no progress");
                match ev {
                    Event::Header(h) => cur = Some((h.as_bytes().to_vec(), Vec::new())),
                    Event::Payload(p) => cur.as_mut().unwrap().1.extend_from_slice(p),
                    Event::End(_) => out.push(cur.take().unwrap()),
                    Event::None => {}
                }
                rest = &rest[n..];
            }
        }
        assert!(d.is_idle());
        Ok(out)
    }

    #[test]
    fn deframes_a_send_in_any_chunking() {
        let mut f = Framer::new(true, false);
        let mut s = Vec::new();
        f.frame_to_vec(&SEND_HDR, &[b"hello"], &mut s).unwrap();
        f.frame_to_vec(&SEND_HDR, &[b""], &mut s).unwrap();
        for chunk in 1..=s.len() {
            let got = collect(DeframerConfig::default(), &s, chunk).unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].1, b"hello");
            assert_eq!(&got[0].0[2..], &SEND_HDR);
            assert!(got[1].1.is_empty());
        }
    }

    #[test]
    fn bad_crc_is_llp_code_2_and_sticky() {
        let mut f = Framer::new(true, false);
        let mut s = Vec::new();
        f.frame_to_vec(&SEND_HDR, &[b"hello"], &mut s).unwrap();
        let last = s.len() - 1;
        s[last] ^= 1;
        let mut d = Deframer::new(DeframerConfig::default());
        let mut rest = &s[..];
        // Every call takes at least one byte or fails: at most `s.len()` rounds.
        let err = loop {
            assert!(!rest.is_empty(), "the whole FPDU was taken without a CRC error");
            match d.feed(rest) {
                Ok((n, _)) => {
                    assert!(n > 0, "no progress");
                    rest = &rest[n..];
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Crc { .. }));
        assert_eq!(err.terminate_cause(), TerminateCause::Mpa(Mpa::Crc));
        assert_eq!(d.feed(&[0]), Err(err));
        // With CRC off the same bytes pass.
        assert_eq!(collect(DeframerConfig { crc: false, ..Default::default() }, &s, 7).unwrap().len(), 1);
    }

    #[test]
    fn short_and_long_ulpdus_fail_after_three_bytes() {
        let mut d = Deframer::new(DeframerConfig::default());
        // ULPDU_Length 10 with an untagged control byte: shorter than its 18-byte header.
        let e = d.feed(&[0x00, 0x0a, 0x41, 0x43]).and_then(|(n, _)| {
            assert_eq!(n, 3);
            d.feed(&[0x43])
        });
        assert_eq!(e, Err(Error::UlpduTooShort { len: 10, needed: 18 }));
        // The whole short header in one piece: the same error, and asking what comes next
        // afterwards is still an answer, not a panic (fuzzing found an underflow here).
        let mut d = Deframer::new(DeframerConfig::default());
        let e = d.feed(&[0x00, 0x0a, 0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e, Err(Error::UlpduTooShort { len: 10, needed: 18 }));
        let _ = d.need();
        assert_eq!(d.feed(&[0]), e);
        let mut d = Deframer::new(DeframerConfig { max_ulpdu: 1000, ..Default::default() });
        let e = d.feed(&[0x03, 0xe9, 0x41]).unwrap_err();
        assert_eq!(e, Error::UlpduTooLong { len: 1001, max: 1000, tagged: false });
        assert_eq!(e.terminate_cause(), TerminateCause::UntaggedBuffer(UntaggedBuffer::TooLong));
    }

    #[test]
    fn direct_placement_path_matches_feed() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let hdr = [0xc1u8, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 0];
        let mut f = Framer::new(true, true);
        let mut s = Vec::new();
        f.frame_to_vec(&hdr, &[&payload], &mut s).unwrap();
        let mut d = Deframer::new(DeframerConfig { crc: true, markers: true, max_ulpdu: u16::MAX });
        let mut dest = Vec::new();
        let mut at = 0;
        let mut ended = false;
        while at < s.len() {
            let need = d.need();
            // Each round moves `at` by what the deframer asks for: never nothing.
            assert!(!need.is_empty(), "the deframer asks for nothing");
            match need {
                Need::Payload(n) => {
                    // "Read" n bytes straight into the destination.
                    let start = dest.len();
                    dest.extend_from_slice(&s[at..at + n]);
                    assert_eq!(d.payload_placed(&dest[start..]), n);
                    at += n;
                }
                other => {
                    let (k, ev) = d.feed(&s[at..at + other.len()]).unwrap();
                    assert_eq!(k, other.len());
                    ended |= matches!(ev, Event::End(_));
                    at += k;
                }
            }
        }
        assert!(ended);
        assert_eq!(dest, payload);
    }

    #[test]
    fn wrong_marker_pointer_is_code_3() {
        let payload = vec![0u8; 1000];
        let hdr = [0xc1u8, 0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut f = Framer::new(false, true);
        let mut s = Vec::new();
        f.frame_to_vec(&hdr, &[&payload], &mut s).unwrap();
        // The marker at stream offset 512 points back 508 bytes; make it point elsewhere.
        assert_eq!(&s[512..516], &[0, 0, 0x01, 0xfc]);
        s[515] = 0xf8;
        let e = collect(DeframerConfig { crc: false, markers: true, max_ulpdu: u16::MAX }, &s, 64).unwrap_err();
        assert_eq!(e, Error::Marker { offset: 512, expected: 508, found: 504 });
        assert_eq!(e.terminate_cause(), TerminateCause::Mpa(Mpa::Marker));
    }
}
