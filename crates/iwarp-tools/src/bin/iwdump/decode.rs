//! Turns a reassembled TCP connection into what iwdump prints: the MPA Request and Reply, every
//! FPDU with its checked CRC and decoded body, and the problems found on the way.

use iwarp_pcap::{Connection, Direction};
use iwarp_wire::crc;
use iwarp_wire::mpa::{rr, Deframer, DeframerConfig, Event, FrameKind, FrameRepr, Need};
use iwarp_wire::rdmap::{self, AtomicRequest, AtomicResponse, Model, ReadRequest, UntaggedKind};
use iwarp_wire::terminate::{TerminateLayout, TerminateMessage, TerminateRepr};
use iwarp_wire::{Error, Opcode, SegmentHeader};

/// An MPA Request or Reply as found.
#[derive(Debug, Clone)]
pub struct MpaFrame {
    pub dir: Direction,
    pub frame: u64,
    pub kind: FrameKind,
    pub revision: u8,
    pub markers: bool,
    pub crc: bool,
    pub reject: bool,
    pub reserved_flags: u8,
    pub enhanced: Option<rr::EnhancedParams>,
    /// The ULP's private data (after the RFC 6581 block).
    pub private_data: Vec<u8>,
}

/// The CRC field of an FPDU, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcStatus {
    /// CRC negotiated and the field matches.
    Good { wire: [u8; 4] },
    /// CRC negotiated and the field does not match.
    Bad { wire: [u8; 4], expected: [u8; 4] },
    /// CRC not negotiated; the field is not checked.
    Off { wire: [u8; 4] },
    /// Some of the FPDU's bytes were not captured (snap length): the CRC cannot be checked.
    NotCaptured,
}

/// A Terminate body read both ways.
#[derive(Debug, Clone)]
pub struct Terminate {
    pub layout: TerminateLayout,
    pub rfc: String,
    pub siw: String,
    /// The reading acted on, with its copied headers.
    pub preferred: String,
    pub ddp_header: Option<Vec<u8>>,
    pub segment_length: Option<u16>,
    pub rdma_header: Option<Vec<u8>>,
}

/// A message body decoded from an FPDU's payload.
#[derive(Debug, Clone)]
pub enum Body {
    Read(ReadRequest),
    AtomicRequest(AtomicRequest),
    AtomicResponse(AtomicResponse),
    Immediate(u64),
    Terminate(Terminate),
    /// The body does not have the length its opcode needs.
    Malformed(String),
}

/// One FPDU.
#[derive(Debug, Clone)]
pub struct Fpdu {
    pub dir: Direction,
    /// Frames holding its first and last byte.
    pub frames: (u64, u64),
    /// Frame holding the first byte of its trailer (the pad and the 4-byte CRC), and how many
    /// trailer bytes that frame holds: fewer than the whole trailer when it is split across TCP
    /// segments, which Linux siw 6.1 reassembles wrongly (docs/interop.md §2). Without markers.
    pub trailer_frame: u64,
    pub trailer_head: usize,
    /// Stream offset of its length field (from the start of the direction's stream).
    pub offset: u64,
    pub ulpdu_len: u16,
    /// The DDP header bytes as received.
    pub raw_header: Vec<u8>,
    pub header: Result<SegmentHeader, Error>,
    pub payload_len: usize,
    pub crc: CrcStatus,
    pub body: Option<Body>,
}

impl Fpdu {
    /// A bad CRC, a header that does not parse or a malformed body.
    pub fn is_bad(&self) -> bool {
        matches!(self.crc, CrcStatus::Bad { .. })
            || self.header.is_err()
            || matches!(self.body, Some(Body::Malformed(_)))
    }
}

/// Something wrong or noteworthy in a direction's stream.
#[derive(Debug, Clone)]
pub struct Problem {
    pub dir: Direction,
    pub frame: Option<u64>,
    pub message: String,
    /// A malformed frame (as opposed to a capture that stops early).
    pub malformed: bool,
}

/// What a connection turned out to be.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Its client stream does not start with an MPA Request.
    NotIwarp,
    /// MPA, with whatever was found.
    Iwarp {
        request: Option<MpaFrame>,
        reply: Option<MpaFrame>,
        /// Negotiated: CRC on (either side set C), and markers per direction (c>s, s>c).
        crc: bool,
        markers: (bool, bool),
        /// Full operation was reached (an accepting Reply).
        full_operation: bool,
    },
}

/// One decoded connection.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub kind: Kind,
    pub fpdus: Vec<Fpdu>,
    pub problems: Vec<Problem>,
}

impl Decoded {
    /// Any bad CRC or malformed frame.
    pub fn has_errors(&self) -> bool {
        self.fpdus.iter().any(Fpdu::is_bad) || self.problems.iter().any(|p| p.malformed)
    }
}

fn mpa_frame(dir: Direction, frame: u64, r: &FrameRepr<'_>) -> MpaFrame {
    MpaFrame {
        dir,
        frame,
        kind: r.kind,
        revision: r.revision,
        markers: r.markers,
        crc: r.crc,
        reject: r.reject,
        reserved_flags: r.reserved_flags,
        enhanced: r.enhanced,
        private_data: r.private_data.to_vec(),
    }
}

/// Parses the MPA frame at the start of one direction. Returns the frame and its length.
fn parse_mpa(
    conn: &Connection,
    dir: Direction,
    kind: FrameKind,
    problems: &mut Vec<Problem>,
) -> Option<(MpaFrame, usize)> {
    let s = conn.stream(dir);
    let frame = s.frame_at(0);
    match FrameRepr::parse(s.data(), kind) {
        Ok(Some((r, used))) => Some((mpa_frame(dir, frame.unwrap_or(0), &r), used)),
        Ok(None) => {
            if !s.data().is_empty() {
                problems.push(Problem {
                    dir,
                    frame,
                    message: format!("incomplete MPA {kind:?}: the stream ends after {} bytes", s.data().len()),
                    malformed: false,
                });
            }
            None
        }
        Err(e) => {
            problems.push(Problem { dir, frame, message: format!("malformed MPA {kind:?}: {e}"), malformed: true });
            None
        }
    }
}

/// Decodes a connection.
pub fn decode(conn: &Connection) -> Decoded {
    let mut problems = Vec::new();
    let c = conn.client_to_server.data();
    let key = FrameKind::Request.key();
    let n = c.len().min(key.len());
    if n == 0 || c[..n] != key[..n] {
        return Decoded { kind: Kind::NotIwarp, fpdus: Vec::new(), problems };
    }
    let request = parse_mpa(conn, Direction::ClientToServer, FrameKind::Request, &mut problems);
    let reply = if request.is_some() {
        parse_mpa(conn, Direction::ServerToClient, FrameKind::Reply, &mut problems)
    } else {
        None
    };
    let mut fpdus = Vec::new();
    let (mut crc, mut markers, mut full_operation) = (false, (false, false), false);
    if let (Some((req, req_len)), Some((rep, rep_len))) = (&request, &reply) {
        // RFC 5044 §7.1: CRC if either side asks; markers toward a side that asks.
        crc = req.crc || rep.crc;
        markers = (rep.markers, req.markers);
        full_operation = !rep.reject;
        if full_operation {
            deframe(conn, Direction::ClientToServer, *req_len, crc, markers.0, &mut fpdus, &mut problems);
            deframe(conn, Direction::ServerToClient, *rep_len, crc, markers.1, &mut fpdus, &mut problems);
        } else {
            for (dir, used) in [(Direction::ClientToServer, *req_len), (Direction::ServerToClient, *rep_len)] {
                let extra = conn.stream(dir).data().len() - used;
                if extra > 0 {
                    problems.push(Problem {
                        dir,
                        frame: conn.stream(dir).frame_at(used as u64),
                        message: format!("{extra} bytes after a rejected MPA exchange"),
                        malformed: true,
                    });
                }
            }
        }
    }
    for dir in [Direction::ClientToServer, Direction::ServerToClient] {
        let lost = conn.stream(dir).uncaptured();
        if !lost.is_empty() {
            let bytes: u64 = lost.iter().map(|r| r.end - r.start).sum();
            problems.push(Problem {
                dir,
                frame: None,
                message: format!(
                    "{bytes} bytes in {} runs were not captured (snap length): they read as zeros and the CRCs \
                     of their FPDUs are not checked",
                    lost.len()
                ),
                malformed: false,
            });
        }
        if let Some(gap) = conn.stream(dir).gap() {
            let from = gap.next_frame.map(|f| format!(" (next data in frame {f})")).unwrap_or_default();
            problems.push(Problem {
                dir,
                frame: gap.next_frame,
                message: format!("TCP data missing after stream byte {}{from}; decoding stops there", gap.offset),
                malformed: false,
            });
        }
    }
    fpdus.sort_by_key(|f| (f.frames.0, f.offset));
    Decoded {
        kind: Kind::Iwarp { request: request.map(|r| r.0), reply: reply.map(|r| r.0), crc, markers, full_operation },
        fpdus,
        problems,
    }
}

/// The FPDU being read.
struct Open {
    wire_start: usize,
    header_start: usize,
    ulpdu_len: u16,
    raw_header: Vec<u8>,
    payload_len: usize,
    keep_payload: bool,
    payload: Vec<u8>,
}

fn deframe(
    conn: &Connection,
    dir: Direction,
    start: usize,
    crc_on: bool,
    markers: bool,
    out: &mut Vec<Fpdu>,
    problems: &mut Vec<Problem>,
) {
    let stream = conn.stream(dir);
    let data = stream.data();
    // CRCs are checked here rather than by the deframer, so that a bad one does not stop the
    // decoding of what follows.
    let mut d = Deframer::new(DeframerConfig { crc: false, markers, max_ulpdu: u16::MAX });
    let mut open: Option<Open> = None;
    let mut wire_start: Option<usize> = None;
    let mut header_start: Option<usize> = None;
    let mut at = start;
    while at < data.len() {
        wire_start.get_or_insert(at);
        if header_start.is_none() && matches!(d.need(), Need::Header(_)) {
            header_start = Some(at);
        }
        let (n, ev) = match d.feed(&data[at..]) {
            Ok(x) => x,
            Err(e) => {
                problems.push(Problem {
                    dir,
                    frame: stream.frame_at(header_start.unwrap_or(at) as u64),
                    message: format!(
                        "malformed FPDU at stream byte {}: {e}; decoding of this direction stops",
                        header_start.unwrap_or(at)
                    ),
                    malformed: true,
                });
                return;
            }
        };
        match ev {
            Event::Header(h) => {
                let header = h.segment();
                let keep_payload = header.as_ref().is_ok_and(|s| has_body(s.opcode));
                open = Some(Open {
                    wire_start: wire_start.unwrap_or(at),
                    header_start: header_start.unwrap_or(at),
                    ulpdu_len: h.ulpdu_len(),
                    raw_header: h.ddp_header().to_vec(),
                    payload_len: h.payload_len(),
                    keep_payload,
                    payload: Vec::new(),
                });
            }
            Event::Payload(p) => {
                if let Some(o) = open.as_mut().filter(|o| o.keep_payload) {
                    o.payload.extend_from_slice(p);
                }
            }
            Event::End(end) => {
                if let Some(o) = open.take() {
                    let wire_end = at + n;
                    let received = crc::to_wire(end.crc);
                    let crc = if !stream.is_captured(o.wire_start as u64..wire_end as u64) {
                        CrcStatus::NotCaptured
                    } else if crc_on {
                        let expected = crc::to_wire(crc::crc32c(&data[o.wire_start..wire_end - 4]));
                        if expected == received {
                            CrcStatus::Good { wire: received }
                        } else {
                            CrcStatus::Bad { wire: received, expected }
                        }
                    } else {
                        CrcStatus::Off { wire: received }
                    };
                    let header = SegmentHeader::parse(&o.raw_header);
                    let pad = (4 - (o.ulpdu_len as usize + 2) % 4) % 4;
                    let trailer = (wire_end - 4 - pad) as u64..wire_end as u64;
                    let trailer_frame = stream.frame_at(trailer.start).unwrap_or(0);
                    let trailer_head = trailer.filter(|&b| stream.frame_at(b) == Some(trailer_frame)).count();
                    let body = header.as_ref().ok().and_then(|h| body(h.opcode, &o.payload));
                    out.push(Fpdu {
                        dir,
                        frames: (
                            stream.frame_at(o.header_start as u64).unwrap_or(0),
                            stream.frame_at(wire_end as u64 - 1).unwrap_or(0),
                        ),
                        trailer_frame,
                        trailer_head,
                        offset: o.header_start as u64,
                        ulpdu_len: o.ulpdu_len,
                        raw_header: o.raw_header,
                        header,
                        payload_len: o.payload_len,
                        crc,
                        body,
                    });
                }
                wire_start = None;
                header_start = None;
            }
            Event::None => {}
        }
        at += n;
    }
    if !d.is_idle() {
        problems.push(Problem {
            dir,
            frame: stream.frame_at(data.len() as u64 - 1),
            message: format!(
                "the capture ends inside an FPDU (started at stream byte {})",
                header_start.or(wire_start).unwrap_or(at)
            ),
            malformed: false,
        });
    }
}

/// Whether `opcode`'s row says an RDMAP header follows the DDP header (kept and decoded).
fn has_body(opcode: Opcode) -> bool {
    opcode.descriptor().is_some_and(|d| d.body != rdmap::Body::Payload)
}

/// The RDMAP header of an FPDU whose opcode's row has one, decoded by the row's handler kind.
fn body(opcode: Opcode, payload: &[u8]) -> Option<Body> {
    let b = match opcode.descriptor()?.model {
        Model::Untagged(_, UntaggedKind::ReadRequest) => ReadRequest::parse(payload).map(Body::Read),
        Model::Untagged(_, UntaggedKind::AtomicRequest) => AtomicRequest::parse(payload).map(Body::AtomicRequest),
        Model::Untagged(_, UntaggedKind::AtomicResponse) => AtomicResponse::parse(payload).map(Body::AtomicResponse),
        Model::Untagged(_, UntaggedKind::Immediate) => rdmap::parse_immediate(payload).map(Body::Immediate),
        Model::Untagged(_, UntaggedKind::Terminate) => {
            TerminateMessage::parse(payload).map(|m| Body::Terminate(terminate(&m)))
        }
        Model::Untagged(_, UntaggedKind::Send) | Model::Tagged(_) => return None,
    };
    Some(b.unwrap_or_else(|e| Body::Malformed(e.to_string())))
}

fn terminate(m: &TerminateMessage<'_>) -> Terminate {
    let p: &TerminateRepr<'_> = m.preferred();
    Terminate {
        layout: m.layout,
        rfc: m.rfc.cause.to_string(),
        siw: m.siw.cause.to_string(),
        preferred: p.cause.to_string(),
        ddp_header: p.ddp.map(|d| d.header.to_vec()),
        segment_length: p.ddp.and_then(|d| d.segment_length),
        rdma_header: p.rdmap_header.map(<[u8]>::to_vec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the opcode table: its payload is kept and decoded exactly when the row has an
    /// RDMAP header, and a header of the row's length decodes (a wrong length is shown as
    /// malformed, not dropped).
    #[test]
    fn bodies_are_kept_and_decoded_as_the_opcode_table_says() {
        for d in rdmap::descriptors() {
            let has = d.body != rdmap::Body::Payload;
            assert_eq!(has_body(d.opcode), has, "{}", d.name);
            let len = match d.body {
                rdmap::Body::Payload => 8,
                rdmap::Body::Fixed(n) => n,
                // A bare Terminate: RDMAP local catastrophic error.
                rdmap::Body::UpTo(_) => 4,
            };
            let decoded = body(d.opcode, &vec![0; len]);
            assert_eq!(decoded.is_some(), has, "{}", d.name);
            assert!(!matches!(decoded, Some(Body::Malformed(_))), "{}: {decoded:?}", d.name);
            if let rdmap::Body::Fixed(n) = d.body {
                assert!(matches!(body(d.opcode, &vec![0; n + 1]), Some(Body::Malformed(_))), "{}", d.name);
            }
        }
        assert!(!has_body(Opcode::Unknown(0xC)));
        assert!(body(Opcode::Unknown(0xC), &[0; 8]).is_none());
    }
}
