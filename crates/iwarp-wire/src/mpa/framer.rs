//! Building FPDUs for transmission (RFC 5044 §4), with markers (§4.3) when the peer asked.

use super::{pad_len, CRC_LEN, LENGTH_FIELD_LEN, MARKER_INTERVAL, MARKER_LEN, MAX_ULPDU};
use crate::crc::{self, Crc32c};
use crate::payload::PayloadSource;
use crate::Error;

/// One piece of an FPDU as it goes on the wire: bytes the framer produced, or a range of one of
/// the payload slices the caller passed in (which the framer never copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes at `start` of the arena the framer wrote into.
    Inline {
        /// Offset in the arena.
        start: usize,
        /// Length.
        len: usize,
    },
    /// `len` bytes at `start` of payload slice number `index`.
    Payload {
        /// Which payload slice.
        index: usize,
        /// Offset in that slice.
        start: usize,
        /// Length.
        len: usize,
    },
}

impl Piece {
    /// Length of the piece.
    pub fn len(&self) -> usize {
        match *self {
            Piece::Inline { len, .. } | Piece::Payload { len, .. } => len,
        }
    }

    /// `true` for an empty piece.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The payload of an FPDU that carries none (its ULPDU is the header alone).
pub const NO_PAYLOAD: &[&[u8]] = &[];

/// Frames ULPDUs into FPDUs for one direction of one connection.
///
/// It remembers how many bytes of full operation it has produced, so that markers (when the peer
/// asked for them with M = 1) land every 512 bytes of the stream, the first one just before the
/// first FPDU (RFC 5044 §4.3).
#[derive(Debug, Clone)]
pub struct Framer {
    crc: bool,
    markers: bool,
    pos: u64,
}

/// Where framed bytes go.
trait Sink {
    fn inline(&mut self, bytes: &[u8]);
    /// Payload bytes `start..start + len` of payload source number `index`: referenced as a
    /// piece, or copied. Returns the copied bytes, if the sink copied them (the CRC then reads
    /// them there instead of reading the source a second time).
    fn payload<P: PayloadSource + ?Sized>(&mut self, index: usize, src: &P, start: usize, len: usize) -> Option<&[u8]>;
}

struct PieceSink<'a> {
    arena: &'a mut Vec<u8>,
    pieces: &'a mut Vec<Piece>,
}

impl Sink for PieceSink<'_> {
    fn inline(&mut self, bytes: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        // Merge with the previous piece when it ends where this one starts in the arena.
        if let Some(Piece::Inline { start: s, len }) = self.pieces.last_mut() {
            if *s + *len == start {
                *len += bytes.len();
                return;
            }
        }
        self.pieces.push(Piece::Inline { start, len: bytes.len() });
    }

    fn payload<P: PayloadSource + ?Sized>(
        &mut self,
        index: usize,
        _src: &P,
        start: usize,
        len: usize,
    ) -> Option<&[u8]> {
        if let Some(Piece::Payload { index: i, start: s, len: l }) = self.pieces.last_mut() {
            if *i == index && *s + *l == start {
                *l += len;
                return None;
            }
        }
        self.pieces.push(Piece::Payload { index, start, len });
        None
    }
}

struct VecSink<'a>(&'a mut Vec<u8>);

impl Sink for VecSink<'_> {
    fn inline(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn payload<P: PayloadSource + ?Sized>(
        &mut self,
        _index: usize,
        src: &P,
        start: usize,
        len: usize,
    ) -> Option<&[u8]> {
        let at = self.0.len();
        src.copy_to(start, len, self.0);
        Some(&self.0[at..])
    }
}

/// The state of one FPDU being framed.
struct Emit<'s, S: Sink> {
    sink: &'s mut S,
    crc: Crc32c,
    /// CRCs in use (else the field is zero and nothing is folded).
    crc_on: bool,
    pos: u64,
    markers: bool,
    fpdu_start: u64,
}

impl<S: Sink> Emit<'_, S> {
    fn fold_crc(&mut self, bytes: &[u8]) {
        if self.crc_on {
            self.crc.update(bytes);
        }
    }

    /// Bytes until the next marker position (`u64::MAX` without markers).
    fn room(&self) -> u64 {
        if self.markers {
            MARKER_INTERVAL - self.pos % MARKER_INTERVAL
        } else {
            u64::MAX
        }
    }

    /// Inserts a marker if the stream is at a marker position.
    fn marker_if_due(&mut self) {
        if self.markers && self.pos.is_multiple_of(MARKER_INTERVAL) {
            // RFC 5044 §4.3: FPDUPTR is the distance back to the ULPDU_Length field; 0 when
            // the marker falls between FPDUs (then it belongs to the following one).
            let ptr = (self.pos.saturating_sub(self.fpdu_start)) as u16;
            let m = [0, 0, (ptr >> 8) as u8, ptr as u8];
            self.fold_crc(&m);
            self.sink.inline(&m);
            self.pos += MARKER_LEN as u64;
        }
    }

    fn inline(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.marker_if_due();
            let n = (bytes.len() as u64).min(self.room()) as usize;
            self.fold_crc(&bytes[..n]);
            self.sink.inline(&bytes[..n]);
            self.pos += n as u64;
            bytes = &bytes[n..];
        }
    }

    fn payload<P: PayloadSource + ?Sized>(&mut self, index: usize, src: &P) {
        let mut at = 0;
        let total = src.len();
        while at < total {
            self.marker_if_due();
            let n = ((total - at) as u64).min(self.room()) as usize;
            fold_payload(self.sink, &mut self.crc, self.crc_on, index, src, at, n);
            self.pos += n as u64;
            at += n;
        }
    }
}

/// Hands payload `start..start + len` of source `index` to `sink` and folds it into `crc` (when
/// CRCs are on): from the sink's copy if it made one, else read from the source.
fn fold_payload<S: Sink, P: PayloadSource + ?Sized>(
    sink: &mut S,
    crc: &mut Crc32c,
    crc_on: bool,
    index: usize,
    src: &P,
    start: usize,
    len: usize,
) {
    match sink.payload(index, src, start, len) {
        Some(copied) if crc_on => crc.update(copied),
        Some(_) => {}
        None if crc_on => src.for_each_chunk(start, len, &mut |c| crc.update(c)),
        None => {}
    }
}

impl Framer {
    /// A framer for a stream that has not sent any FPDU yet. `crc`: compute CRCs (else the
    /// field is sent as zero); `markers`: the peer asked for markers (M = 1 in its frame).
    pub fn new(crc: bool, markers: bool) -> Self {
        Framer { crc, markers, pos: 0 }
    }

    /// Whether CRCs are computed.
    pub fn crc_enabled(&self) -> bool {
        self.crc
    }

    /// Whether markers are inserted.
    pub fn markers_enabled(&self) -> bool {
        self.markers
    }

    /// Bytes framed since the start of full operation, markers included.
    pub fn stream_offset(&self) -> u64 {
        self.pos
    }

    /// Wire length of the next FPDU with `ulpdu_len` bytes of ULPDU, markers included.
    pub fn next_fpdu_len(&self, ulpdu_len: usize) -> usize {
        let body = super::fpdu_len(ulpdu_len) as u64;
        if !self.markers {
            return body as usize;
        }
        // Count marker positions in [pos, pos + body + markers): iterate, since each marker
        // pushes the end further.
        let mut end = self.pos + body;
        let mut markers = 0u64;
        loop {
            let first = self.pos.div_ceil(MARKER_INTERVAL) * MARKER_INTERVAL;
            let n = if end > first { (end - first).div_ceil(MARKER_INTERVAL) } else { 0 };
            if n == markers {
                break;
            }
            markers = n;
            end = self.pos + body + markers * MARKER_LEN as u64;
        }
        (body + markers * MARKER_LEN as u64) as usize
    }

    /// Frames one FPDU whose ULPDU is `header` followed by the `payload` slices, appending
    /// what the framer writes (length, header, markers, pad, CRC) to `arena` and describing
    /// the whole FPDU, in wire order, as `pieces`. Payload is referenced, not copied. Returns
    /// the FPDU's wire length.
    ///
    /// # Errors
    /// [`Error::UlpduTooLong`] if the ULPDU exceeds 65535 bytes (nothing is appended).
    pub fn frame<P: PayloadSource>(
        &mut self,
        header: &[u8],
        payload: &[P],
        arena: &mut Vec<u8>,
        pieces: &mut Vec<Piece>,
    ) -> Result<usize, Error> {
        let mut sink = PieceSink { arena, pieces };
        self.frame_into(header, payload, &mut sink)
    }

    /// Frames one FPDU (as [`frame`](Self::frame)) and appends all its bytes, payload
    /// included, to `out`. For control messages and small payloads.
    ///
    /// # Errors
    /// As [`frame`](Self::frame).
    pub fn frame_to_vec<P: PayloadSource>(
        &mut self,
        header: &[u8],
        payload: &[P],
        out: &mut Vec<u8>,
    ) -> Result<usize, Error> {
        if self.markers {
            return self.frame_into(header, payload, &mut VecSink(out));
        }
        // Without markers the FPDU is one contiguous run of `out`: copy everything first, then
        // one CRC pass over the bytes just written, in cache (one call instead of one per
        // piece, which is most of the CRC's cost for a small FPDU).
        let ulpdu_len = header.len() + payload.iter().map(PayloadSource::len).sum::<usize>();
        let Ok(ulpdu_len16) = u16::try_from(ulpdu_len) else {
            return self.frame_into(header, payload, &mut VecSink(out));
        };
        let pad = pad_len(ulpdu_len);
        let n = LENGTH_FIELD_LEN + ulpdu_len + pad + CRC_LEN;
        let start = out.len();
        out.reserve(n);
        out.extend_from_slice(&ulpdu_len16.to_be_bytes());
        out.extend_from_slice(header);
        for p in payload {
            p.copy_to(0, p.len(), out);
        }
        // RFC 5044 §4.1: the pad is zeros and covered by the CRC.
        out.extend_from_slice(&[0u8; 3][..pad]);
        let value = if self.crc { crc::crc32c(&out[start..]) } else { 0 };
        out.extend_from_slice(&crc::to_wire(value));
        debug_assert_eq!(out.len() - start, n);
        self.pos += n as u64;
        Ok(n)
    }

    fn frame_into<S: Sink, P: PayloadSource>(
        &mut self,
        header: &[u8],
        payload: &[P],
        sink: &mut S,
    ) -> Result<usize, Error> {
        let ulpdu_len = header.len() + payload.iter().map(PayloadSource::len).sum::<usize>();
        if ulpdu_len > MAX_ULPDU {
            return Err(Error::UlpduTooLong {
                len: u16::MAX,
                max: u16::MAX,
                tagged: header.first().is_some_and(|c| c & crate::ddp::flags::TAGGED != 0),
            });
        }
        if self.markers {
            Ok(self.frame_general(header, payload, ulpdu_len, sink))
        } else {
            Ok(self.frame_unmarked(header, payload, ulpdu_len, sink))
        }
    }

    /// Any FPDU, markers (RFC 5044 §4.3) inserted wherever the stream reaches a multiple of 512.
    fn frame_general<S: Sink, P: PayloadSource>(
        &mut self,
        header: &[u8],
        payload: &[P],
        ulpdu_len: usize,
        sink: &mut S,
    ) -> usize {
        let start = self.pos;
        let mut e = Emit {
            sink,
            crc: Crc32c::new(),
            crc_on: self.crc,
            pos: self.pos,
            markers: self.markers,
            fpdu_start: self.pos,
        };
        // A marker due exactly here falls between FPDUs and is covered by this one's CRC.
        e.marker_if_due();
        e.fpdu_start = e.pos;
        e.inline(&(ulpdu_len as u16).to_be_bytes());
        e.inline(header);
        for (index, p) in payload.iter().enumerate() {
            e.payload(index, p);
        }
        e.inline(&[0u8; 3][..pad_len(ulpdu_len)]);
        // A marker right after the pad is covered by this FPDU's CRC (RFC 5044 §4.4 rule 1).
        e.marker_if_due();
        let crc_value = if self.crc { e.crc.value() } else { 0 };
        e.sink.inline(&crc::to_wire(crc_value));
        e.pos += CRC_LEN as u64;
        self.pos = e.pos;
        (self.pos - start) as usize
    }

    /// RFC 5044 §4.1 without markers: length, ULPDU, pad and CRC back to back. The same bytes
    /// as the general path, without its per-piece marker arithmetic (this is every FPDU of a
    /// connection without markers, the common case).
    fn frame_unmarked<S: Sink, P: PayloadSource>(
        &mut self,
        header: &[u8],
        payload: &[P],
        ulpdu_len: usize,
        sink: &mut S,
    ) -> usize {
        let len = (ulpdu_len as u16).to_be_bytes();
        let pad = pad_len(ulpdu_len);
        let crc_on = self.crc;
        let mut crc = Crc32c::new();
        if crc_on {
            crc.update(&len);
            crc.update(header);
        }
        sink.inline(&len);
        sink.inline(header);
        for (index, p) in payload.iter().enumerate() {
            if !p.is_empty() {
                fold_payload(sink, &mut crc, crc_on, index, p, 0, p.len());
            }
        }
        // RFC 5044 §4.1: the pad is zeros and covered by the CRC.
        let mut trailer = [0u8; 3 + CRC_LEN];
        if crc_on {
            crc.update(&trailer[..pad]);
        }
        let value = if crc_on { crc.value() } else { 0 };
        trailer[pad..pad + CRC_LEN].copy_from_slice(&crc::to_wire(value));
        sink.inline(&trailer[..pad + CRC_LEN]);
        let n = LENGTH_FIELD_LEN + ulpdu_len + pad + CRC_LEN;
        self.pos += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn materialise(arena: &[u8], pieces: &[Piece], payload: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in pieces {
            match *p {
                Piece::Inline { start, len } => v.extend_from_slice(&arena[start..start + len]),
                Piece::Payload { index, start, len } => v.extend_from_slice(&payload[index][start..start + len]),
            }
        }
        v
    }

    #[test]
    fn contiguous_fpdus_are_the_piecewise_framers_bytes() {
        // frame_to_vec without markers copies first and runs one CRC over the copy: the same
        // bytes as the piecewise path, appended after whatever `out` held.
        for crc in [false, true] {
            let (mut flat, mut pieced) = (Framer::new(crc, false), Framer::new(crc, false));
            for (k, plen) in [0usize, 1, 2, 3, 4, 7, 64, 100, 2048].into_iter().enumerate() {
                let hdr: Vec<u8> = (0..14 + k % 5).map(|i| (i * 5 + k) as u8).collect();
                let data: Vec<u8> = (0..plen).map(|i| (i * 11 + k) as u8).collect();
                let parts: [&[u8]; 3] = [&data[..plen / 2], &[], &data[plen / 2..]];
                let mut out = vec![0xAA; k];
                let n = flat.frame_to_vec(&hdr, &parts, &mut out).unwrap();
                let (mut arena, mut pieces) = (Vec::new(), Vec::new());
                let m = pieced.frame(&hdr, &parts, &mut arena, &mut pieces).unwrap();
                assert_eq!(n, m);
                assert_eq!(&out[..k], &vec![0xAA; k][..], "bytes before the FPDU untouched");
                assert_eq!(&out[k..], &materialise(&arena, &pieces, &parts)[..], "crc {crc} len {plen}");
                assert_eq!(flat.stream_offset(), pieced.stream_offset());
            }
        }
    }

    #[test]
    fn unmarked_fpdus_are_the_general_framers_bytes() {
        // Every pad length, empty and split payloads, CRC on and off, a stream offset that is
        // not a multiple of 4: the unmarked path writes what the general one writes.
        for crc in [false, true] {
            let (mut fast, mut general) = (Framer::new(crc, false), Framer::new(crc, false));
            for (k, plen) in [0usize, 1, 2, 3, 4, 5, 8, 13, 100, 511, 512, 1500].into_iter().enumerate() {
                let hdr: Vec<u8> = (0..14 + k % 5).map(|i| (i * 7 + k) as u8).collect();
                let data: Vec<u8> = (0..plen).map(|i| (i * 13 + k) as u8).collect();
                let parts: [&[u8]; 3] = [&data[..plen / 3], &[], &data[plen / 3..]];
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let (mut pa, mut pb) = (Vec::new(), Vec::new());
                let n = fast.frame(&hdr, &parts, &mut a, &mut pa).unwrap();
                let ulpdu = hdr.len() + plen;
                let m = general.frame_general(&hdr, &parts, ulpdu, &mut PieceSink { arena: &mut b, pieces: &mut pb });
                assert_eq!(n, m);
                assert_eq!(materialise(&a, &pa, &parts), materialise(&b, &pb, &parts), "crc {crc} len {plen}");
                assert_eq!(pa, pb, "pieces, crc {crc} len {plen}");
                assert_eq!(fast.stream_offset(), general.stream_offset());
            }
        }
    }

    #[test]
    fn send_hello_matches_tshark_good_crc() {
        // protocol-notes §1.7: Send "hello" → CRC 0x0CB190B9 ("Good CRC32" in tshark).
        let hdr = hex("4143 00000000 00000000 00000001 00000000");
        let mut f = Framer::new(true, false);
        let mut out = Vec::new();
        let n = f.frame_to_vec(&hdr, &[b"hello"], &mut out).unwrap();
        assert_eq!(n, 32);
        assert_eq!(out, hex("0017 4143 00000000 00000000 00000001 00000000 68656c6c6f 000000 b990b10c"));
        assert_eq!(f.stream_offset(), 32);
    }

    #[test]
    fn rfc5044_figure5_first_fpdu_with_marker() {
        let hdr = hex("4143 00000000 00000000 00000001 00000000");
        let mut f = Framer::new(true, true);
        let mut out = Vec::new();
        f.frame_to_vec(&hdr, &[&[0u8; 24]], &mut out).unwrap();
        let mut expect = hex("00000000 002a 4143 00000000 00000000 00000001 00000000");
        expect.extend_from_slice(&[0u8; 24]);
        expect.extend_from_slice(&[0x52, 0x23, 0x99, 0x83]);
        assert_eq!(out, expect);
    }

    #[test]
    fn rfc5044_figure6_marker_inside_second_fpdu() {
        // The first FPDU, leading marker included, is 492 bytes long (482 bytes of ULPDU), so the
        // second starts at stream offset 0x1EC.
        let hdr1 = hex("4143 00000000 00000000 00000001 00000000");
        let mut f = Framer::new(true, true);
        let mut out = Vec::new();
        f.frame_to_vec(&hdr1, &[&[0u8; 482 - 18]], &mut out).unwrap();
        assert_eq!(out.len(), 0x1EC);
        let hdr2 = hex("4143 00000000 00000000 00000002 00000000");
        let mut second = Vec::new();
        f.frame_to_vec(&hdr2, &[&[0u8; 24]], &mut second).unwrap();
        // Marker at stream offset 0x200 = 0x14 bytes into this FPDU, right after MO.
        let mut expect = hex("002a 4143 00000000 00000000 00000002 00000000 00000014");
        expect.extend_from_slice(&[0u8; 24]);
        expect.extend_from_slice(&crc::to_wire(0x9858_9284));
        assert_eq!(second, expect);
    }

    #[test]
    fn pieces_reference_payload_without_copying() {
        let hdr = [0xc1u8, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let a = vec![1u8; 1000];
        let b = vec![2u8; 3];
        let mut f = Framer::new(true, false);
        let (mut arena, mut pieces) = (Vec::new(), Vec::new());
        let n = f.frame(&hdr, &[&a, &b], &mut arena, &mut pieces).unwrap();
        assert_eq!(
            pieces,
            vec![
                Piece::Inline { start: 0, len: 16 },
                Piece::Payload { index: 0, start: 0, len: 1000 },
                Piece::Payload { index: 1, start: 0, len: 3 },
                Piece::Inline { start: 16, len: 5 },
            ]
        );
        assert_eq!(arena.len(), 21, "only header, pad and CRC are written");
        let wire = materialise(&arena, &pieces, &[&a, &b]);
        assert_eq!(wire.len(), n);
        let mut g = Framer::new(true, false);
        let mut flat = Vec::new();
        g.frame_to_vec(&hdr, &[&a, &b], &mut flat).unwrap();
        assert_eq!(wire, flat);
    }

    #[test]
    fn markers_split_payload_and_next_len_predicts() {
        let hdr = [0xc1u8, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let payload = vec![7u8; 3000];
        let mut f = Framer::new(false, true);
        for _ in 0..5 {
            let predicted = f.next_fpdu_len(hdr.len() + payload.len());
            let (mut arena, mut pieces) = (Vec::new(), Vec::new());
            let before = f.stream_offset();
            let n = f.frame(&hdr, &[&payload], &mut arena, &mut pieces).unwrap();
            assert_eq!(n, predicted);
            let wire = materialise(&arena, &pieces, &[&payload]);
            // Every marker position in this FPDU holds a marker pointing back to its start.
            let mut fpdu_start = before;
            if before.is_multiple_of(512) {
                fpdu_start += 4;
            }
            for (i, _) in wire.iter().enumerate().step_by(4) {
                let pos = before + i as u64;
                if pos.is_multiple_of(512) {
                    let m = &wire[i..i + 4];
                    let ptr = u16::from_be_bytes([m[2], m[3]]) as u64;
                    let expected = pos.saturating_sub(fpdu_start);
                    assert_eq!(ptr, expected, "marker at {pos}");
                }
            }
            assert_eq!(wire.len() % 4, 0);
        }
    }

    #[test]
    fn crc_off_writes_zero_and_oversize_is_refused() {
        let hdr = [0x41u8, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut f = Framer::new(false, false);
        let mut out = Vec::new();
        f.frame_to_vec(&hdr, super::NO_PAYLOAD, &mut out).unwrap();
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 0]);
        let big = vec![0u8; MAX_ULPDU];
        let before = out.len();
        assert!(matches!(f.frame_to_vec(&hdr, &[&big], &mut out), Err(Error::UlpduTooLong { .. })));
        assert_eq!(out.len(), before);
    }
}
