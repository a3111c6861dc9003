//! RDMAP messages (RFC 5040 §4, RFC 7306 §4–5) and the opcode table.
//!
//! RDMAP rides in DDP's reserved-for-ULP bytes: its control byte (version, opcode) is DDP's first
//! RsvdULP byte and, on untagged segments, the next four bytes carry the Invalidate STag.
//! [`SegmentHeader`] is a validated DDP + RDMAP header; the fixed-size message bodies that follow
//! some of them ([`ReadRequest`], [`AtomicRequest`], [`AtomicResponse`], Immediate Data, and the
//! Terminate in [`crate::terminate`]) have their own codecs here.
//!
//! **The opcode table.** [`OPCODES`] has one row ([`OpDesc`]) per opcode, indexed by the 4-bit
//! opcode field: name, buffer model and untagged queue number with the receive handler
//! ([`Model`]), what follows the DDP header ([`Body`]), whether it is an RFC 7306 opcode, carries
//! an Invalidate STag or a Solicited Event, what it consumes at the receiver ([`Consumes`]) and
//! which way it flows ([`Direction`]). It follows RFC 5040 §4.1 (opcodes and the Invalidate
//! STag), Figure 4 (buffer model and queue of each message), §4.4 and §4.8 (the Read Request and
//! Terminate headers) and §5 (what each message does at its receiver), RFC 5041 §4–5 (buffer
//! models, queue numbers), and RFC 7306 §4.2 (Immediate Data), §5.2 (Atomic Request and Response)
//! and §9.1 (the opcodes it assigns). Header validation ([`SegmentHeader::parse_routed`]), the
//! predicates on [`Opcode`], the engine's receive dispatch and transmit framing and `iwdump` all
//! read it, so a new opcode is a new row (and a receive handler).

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
    /// This opcode's row of [`OPCODES`]: `None` for the reserved opcodes (0xC to 0xF) and for any
    /// value that does not fit the 4-bit field.
    #[inline]
    pub fn descriptor(self) -> Option<&'static OpDesc> {
        descriptor_of(u8::from(self))
    }

    /// The buffer model this opcode must use: `Some(true)` tagged, `Some(false)` untagged, `None`
    /// for a reserved opcode. Read from [`OPCODES`].
    pub fn tagged(self) -> Option<bool> {
        self.descriptor().map(|d| d.model.is_tagged())
    }

    /// The untagged queue this opcode travels on (`None` for tagged or reserved opcodes). Read
    /// from [`OPCODES`].
    pub fn queue(self) -> Option<QueueNumber> {
        self.descriptor().and_then(|d| d.model.queue())
    }

    /// `true` for the RFC 7306 extensions (opcodes 8 to 11). Read from [`OPCODES`].
    pub fn is_rfc7306(self) -> bool {
        self.descriptor().is_some_and(|d| d.rfc7306)
    }

    /// `true` for Send and Immediate Data with the Solicited Event bit. Read from [`OPCODES`].
    pub fn solicited(self) -> bool {
        self.descriptor().is_some_and(|d| d.solicited)
    }

    /// `true` for the two Send-with-Invalidate opcodes. Read from [`OPCODES`].
    pub fn invalidates(self) -> bool {
        self.descriptor().is_some_and(|d| d.invalidates)
    }

    /// The exact body length RFC 5040/7306 fix for this opcode, for those with a fixed one. Read
    /// from [`OPCODES`].
    pub fn fixed_body_len(self) -> Option<usize> {
        self.descriptor().and_then(|d| d.body.fixed_len())
    }
}

/// The row of [`OPCODES`] for the 4-bit opcode `code`; `None` for a reserved opcode or a value
/// wider than 4 bits. A bounds-checked lookup: no input makes it panic.
#[inline]
pub fn descriptor_of(code: u8) -> Option<&'static OpDesc> {
    OPCODES.get(usize::from(code)).and_then(Option::as_ref)
}

/// Every assigned opcode's row, in opcode order.
pub fn descriptors() -> impl Iterator<Item = &'static OpDesc> {
    OPCODES.iter().flatten()
}

/// What an opcode is, as RFC 5040 §4 and RFC 7306 define it: one row of [`OPCODES`].
///
/// The receive path, the transmit path and `iwdump` read these rows instead of matching on
/// opcodes, so that adding an opcode is adding a row (and, when it needs one, a receive handler:
/// [`TaggedKind`] and [`UntaggedKind`] are matched exhaustively by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OpDesc {
    /// The opcode this row describes (its index in [`OPCODES`]).
    pub opcode: Opcode,
    /// A short name, the same as the opcode's `Debug` form ("ReadRequest").
    pub name: &'static str,
    /// Tagged or untagged, the untagged queue, and the receive handler.
    pub model: Model,
    /// What follows the DDP header: ULP payload, or an RDMAP header of a fixed or bounded length.
    pub body: Body,
    /// Defined by RFC 7306 (used only when both ends agreed to it).
    pub rfc7306: bool,
    /// Carries an STag to invalidate in the untagged header's Invalidate STag field.
    pub invalidates: bool,
    /// Asks for a Solicited Event at the receiver.
    pub solicited: bool,
    /// The resource a message of this opcode takes at its receiver.
    pub consumes: Consumes,
    /// Request, response, or either (Terminate).
    pub direction: Direction,
}

impl OpDesc {
    /// Length of the DDP header a segment of this opcode carries (14 tagged, 18 untagged).
    pub const fn ddp_header_len(&self) -> usize {
        match self.model {
            Model::Tagged(_) => ddp::TAGGED_HEADER_LEN,
            Model::Untagged(..) => ddp::UNTAGGED_HEADER_LEN,
        }
    }
}

/// The DDP buffer model of an opcode (RFC 5041 §4), with the receive handler its segments go to.
///
/// The handler kinds are not `#[non_exhaustive]`: a receiver matches them exhaustively, so a new
/// kind does not compile until it has a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// Tagged buffer model: placed at the STag and Tagged Offset the segment names.
    Tagged(TaggedKind),
    /// Untagged buffer model on this queue.
    Untagged(QueueNumber, UntaggedKind),
}

impl Model {
    /// `true` for the tagged model.
    pub const fn is_tagged(self) -> bool {
        matches!(self, Model::Tagged(_))
    }

    /// The untagged queue (`None` when tagged).
    pub const fn queue(self) -> Option<QueueNumber> {
        match self {
            Model::Tagged(_) => None,
            Model::Untagged(qn, _) => Some(qn),
        }
    }
}

/// The receive handlers of tagged opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaggedKind {
    /// RDMA Write: placed into a buffer the peer advertised.
    Write,
    /// RDMA Read Response: placed into the sink of the oldest outstanding Read.
    ReadResponse,
}

/// The receive handlers of untagged opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UntaggedKind {
    /// The Send family: ULP payload into a posted receive.
    Send,
    /// RFC 7306 Immediate Data (with or without SE): 8 bytes for a posted receive's completion.
    Immediate,
    /// RDMA Read Request: served from local memory by a Read Response.
    ReadRequest,
    /// RFC 7306 Atomic Request: executed on local memory, answered by an Atomic Response.
    AtomicRequest,
    /// RFC 7306 Atomic Response: completes the oldest outstanding atomic.
    AtomicResponse,
    /// Terminate: the peer's error report.
    Terminate,
}

/// What follows the DDP header of an opcode's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// No RDMAP header: everything after the DDP header is ULP payload, in any number of segments.
    Payload,
    /// An RDMAP header of exactly this many bytes and nothing else: the message is one segment
    /// (its last, at message offset 0).
    Fixed(usize),
    /// An RDMAP header of at most this many bytes, whose own fields say how long it is, and
    /// nothing else: the message is one segment (its last, at message offset 0).
    UpTo(usize),
}

impl Body {
    /// The exact length of a fixed-size RDMAP header.
    pub const fn fixed_len(self) -> Option<usize> {
        match self {
            Body::Fixed(n) => Some(n),
            Body::Payload | Body::UpTo(_) => None,
        }
    }

    /// The longest RDMAP header this body allows (0 for ULP payload).
    pub const fn max_header_len(self) -> usize {
        match self {
            Body::Payload => 0,
            Body::Fixed(n) | Body::UpTo(n) => n,
        }
    }

    /// Whether a segment with the L flag `last`, message offset `mo` and `len` bytes after its
    /// DDP header has the shape this body requires: anything for ULP payload; otherwise the
    /// whole message in that one segment, of an allowed length.
    pub const fn fits(self, last: bool, mo: u32, len: usize) -> bool {
        match self {
            Body::Payload => true,
            Body::Fixed(n) => last && mo == 0 && len == n,
            Body::UpTo(max) => last && mo == 0 && len <= max,
        }
    }
}

/// The resource a message takes at its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consumes {
    /// Nothing: placed into a buffer the receiver advertised (RDMA Write).
    Nothing,
    /// A posted receive (a queue 0 buffer), completed when the message is delivered.
    ReceiveWqe,
    /// An inbound request slot (a queue 1 buffer, bounded by the IRD the receiver announced).
    InboundRequest,
    /// The oldest outstanding Read or atomic the receiver issued (bounded by its ORD).
    OutstandingRequest,
    /// A Terminate buffer (queue 2): the stream ends.
    TerminateBuffer,
}

/// Which way a message flows relative to the operation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the side that starts the operation to its target.
    Request,
    /// Back from the target, answering the oldest outstanding request.
    Response,
    /// From whichever side detects an error (Terminate).
    Either,
}

/// The rows, `const` so that both [`OPCODES`] and the compile-time bounds below read them.
mod table {
    use super::{Body, Consumes, Direction, Model, OpDesc, Opcode, TaggedKind as T, UntaggedKind as U};
    use super::{ATOMIC_REQUEST_LEN, ATOMIC_RESPONSE_LEN, IMMEDIATE_DATA_LEN, READ_REQUEST_LEN};
    use crate::ddp::QueueNumber;
    use crate::terminate::MAX_BODY_LEN as TERMINATE_MAX;
    use Body::{Fixed, Payload, UpTo};
    use Consumes::{InboundRequest, Nothing, OutstandingRequest, ReceiveWqe, TerminateBuffer};
    use Direction::{Either, Request, Response};
    use Model::{Tagged, Untagged};

    /// One row: the flags are (RFC 7306, carries an Invalidate STag, Solicited Event).
    const fn row(
        opcode: Opcode,
        name: &'static str,
        model: Model,
        body: Body,
        (rfc7306, invalidates, solicited): (bool, bool, bool),
        consumes: Consumes,
        direction: Direction,
    ) -> Option<OpDesc> {
        Some(OpDesc { opcode, name, model, body, rfc7306, invalidates, solicited, consumes, direction })
    }

    const PLAIN: (bool, bool, bool) = (false, false, false);
    const INV: (bool, bool, bool) = (false, true, false);
    const SE: (bool, bool, bool) = (false, false, true);
    const SE_INV: (bool, bool, bool) = (false, true, true);
    const EXT: (bool, bool, bool) = (true, false, false);
    const EXT_SE: (bool, bool, bool) = (true, false, true);

    // RFC 5040 Figure 4: queue 0 Sends, 1 Read Requests, 2 Terminates; RFC 7306 adds queue 3
    // (Atomic Responses) and puts Immediate Data on queue 0, Atomic Requests on queue 1.
    const Q0: QueueNumber = QueueNumber::SEND;
    const Q1: QueueNumber = QueueNumber::READ_REQUEST;
    const Q2: QueueNumber = QueueNumber::TERMINATE;
    const Q3: QueueNumber = QueueNumber::ATOMIC_RESPONSE;

    #[rustfmt::skip]
    pub(super) const TABLE: [Option<OpDesc>; 16] = [
        // RFC 5040 §4.1, §5.1: RDMA Write is tagged and placed without taking a buffer at its sink.
        row(Opcode::Write,            "Write",            Tagged(T::Write),                Payload,                   PLAIN,  Nothing,            Request),
        // RFC 5040 §4.4, §5.2: RDMA Read Request, queue 1, the 28-byte Read Request header; takes an IRD slot.
        row(Opcode::ReadRequest,      "ReadRequest",      Untagged(Q1, U::ReadRequest),    Fixed(READ_REQUEST_LEN),   PLAIN,  InboundRequest,     Request),
        // RFC 5040 §5.2: RDMA Read Response, tagged, into the sink its Read Request named.
        row(Opcode::ReadResponse,     "ReadResponse",     Tagged(T::ReadResponse),         Payload,                   PLAIN,  OutstandingRequest, Response),
        // RFC 5040 §5.3: Send, queue 0, delivered into a posted receive.
        row(Opcode::Send,             "Send",             Untagged(Q0, U::Send),           Payload,                   PLAIN,  ReceiveWqe,         Request),
        // RFC 5040 §4.1, §5.3: Send with Invalidate carries the STag in the Invalidate STag field.
        row(Opcode::SendInvalidate,   "SendInvalidate",   Untagged(Q0, U::Send),           Payload,                   INV,    ReceiveWqe,         Request),
        // RFC 5040 §5.3: Send with Solicited Event.
        row(Opcode::SendSe,           "SendSe",           Untagged(Q0, U::Send),           Payload,                   SE,     ReceiveWqe,         Request),
        // RFC 5040 §4.1, §5.3: Send with Solicited Event and Invalidate.
        row(Opcode::SendSeInvalidate, "SendSeInvalidate", Untagged(Q0, U::Send),           Payload,                   SE_INV, ReceiveWqe,         Request),
        // RFC 5040 §4.8: Terminate, queue 2, a Terminate header whose M/D/R bits say how long it is.
        row(Opcode::Terminate,        "Terminate",        Untagged(Q2, U::Terminate),      UpTo(TERMINATE_MAX),       PLAIN,  TerminateBuffer,    Either),
        // RFC 7306 §4.2: Immediate Data, queue 0 (the Send MSN space), exactly 8 bytes, takes a posted receive.
        row(Opcode::ImmediateData,    "ImmediateData",    Untagged(Q0, U::Immediate),      Fixed(IMMEDIATE_DATA_LEN), EXT,    ReceiveWqe,         Request),
        // RFC 7306 §4.2: Immediate Data with Solicited Event.
        row(Opcode::ImmediateDataSe,  "ImmediateDataSe",  Untagged(Q0, U::Immediate),      Fixed(IMMEDIATE_DATA_LEN), EXT_SE, ReceiveWqe,         Request),
        // RFC 7306 §5.2.1: Atomic Request, queue 1 (shared with Read Requests and IRD), 52 bytes.
        row(Opcode::AtomicRequest,    "AtomicRequest",    Untagged(Q1, U::AtomicRequest),  Fixed(ATOMIC_REQUEST_LEN), EXT,    InboundRequest,     Request),
        // RFC 7306 §5.2.2: Atomic Response, queue 3, 12 bytes (the figure's fields).
        row(Opcode::AtomicResponse,   "AtomicResponse",   Untagged(Q3, U::AtomicResponse), Fixed(ATOMIC_RESPONSE_LEN), EXT,   OutstandingRequest, Response),
        // RFC 5040 §4.1, RFC 7306 §9.1: 1100b to 1111b are reserved.
        None,
        None,
        None,
        None,
    ];
}

/// The opcode table: row `i` describes opcode `i` (RFC 5040 §4.1 and §5, RFC 7306 §4, §5 and
/// §9.1), `None` where the opcode is reserved. Indexed by the 4-bit opcode field, so a lookup is
/// one bounds-checked array access ([`descriptor_of`]).
pub static OPCODES: [Option<OpDesc>; 16] = table::TABLE;

/// The longest fixed-size RDMAP header of any opcode (the Atomic Request's), computed from the
/// table: a buffer this long holds the header of every message that has one of fixed size.
pub const MAX_FIXED_BODY_LEN: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < table::TABLE.len() {
        if let Some(d) = &table::TABLE[i] {
            if let Some(n) = d.body.fixed_len() {
                if n > max {
                    max = n;
                }
            }
        }
        i += 1;
    }
    max
};

/// The longest RDMAP header of any opcode, fixed-size or bounded (the Terminate's or the Atomic
/// Request's), computed from the table.
pub const MAX_BODY_LEN: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < table::TABLE.len() {
        if let Some(d) = &table::TABLE[i] {
            let n = d.body.max_header_len();
            if n > max {
                max = n;
            }
        }
        i += 1;
    }
    max
};

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
    /// The same checks as [`parse_routed`](Self::parse_routed), which also returns the opcode's
    /// row of [`OPCODES`] and where the segment goes.
    ///
    /// # Errors
    /// The first violation found, as an [`Error`] that knows its Terminate cause.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        Self::parse_routed(bytes).map(|r| r.header())
    }

    /// Parses and validates a DDP header against the opcode table, and says where the segment
    /// goes: the one check of an incoming header's opcode, buffer model and queue.
    ///
    /// Checks, in order: DDP version (RFC 5041 §7.2), RDMAP version (RFC 5040 §7.2), opcode
    /// assigned and of the right buffer model (RFC 5040 §7.2 "unexpected opcode"), and for
    /// untagged segments the queue number the opcode uses (RFC 5041 §7.2 "invalid QN"). Whether
    /// an RFC 7306 opcode is allowed depends on the connection and is the receiver's check
    /// ([`OpDesc::rfc7306`]).
    ///
    /// # Errors
    /// The first violation found, as an [`Error`] that knows its Terminate cause.
    #[inline]
    pub fn parse_routed(bytes: &[u8]) -> Result<Routed, Error> {
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
        let code = ctrl & OPCODE_MASK;
        let opcode = Opcode::from(code);
        // RFC 5040 §7.2: a reserved opcode is an unexpected opcode.
        let Some(desc) = descriptor_of(code) else {
            return Err(Error::UnexpectedOpcode { opcode, tagged });
        };
        let (route, inval_stag) = match (desc.model, seg.placement()) {
            (Model::Tagged(kind), Placement::Tagged { stag, to }) => {
                (Route::Tagged(TaggedRoute { kind, stag, to }), Stag(0))
            }
            (Model::Untagged(queue, kind), Placement::Untagged { qn, msn, mo }) => {
                // RFC 5040 §4.1 (Figure 4) fixes each untagged opcode's queue; RFC 5041 §7.2: invalid QN.
                if qn != queue {
                    return Err(Error::InvalidQueueNumber { qn: qn.0, opcode });
                }
                // RFC 5040 §4.1: the Invalidate STag is only valid on Send with Invalidate; ignored otherwise.
                let inval = if desc.invalidates { Stag(seg.rsvd_ulp_ext()) } else { Stag(0) };
                (Route::Untagged(UntaggedRoute { kind, qn, msn, mo }), inval)
            }
            // RFC 5040 §7.2: an opcode on the other buffer model than its own is unexpected.
            (Model::Tagged(_), Placement::Untagged { .. }) | (Model::Untagged(..), Placement::Tagged { .. }) => {
                return Err(Error::UnexpectedOpcode { opcode, tagged });
            }
        };
        Ok(Routed { desc, route, last: seg.last(), inval_stag })
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

/// A header that passed [`SegmentHeader::parse_routed`]: its opcode's row of [`OPCODES`] and
/// where its payload goes under that row's buffer model, with the rest of the header. The route
/// carries the row's handler kind with the placement fields of the model the row names, so a
/// receiver that dispatches on it needs no arm for an opcode on the wrong model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// The opcode's row of the table (its `opcode` is the header's).
    pub desc: &'static OpDesc,
    /// The handler and placement.
    pub route: Route,
    /// DDP L flag: the last segment of its message.
    pub last: bool,
    /// The Invalidate STag (Send with Invalidate); zero otherwise.
    pub inval_stag: Stag,
}

impl Routed {
    /// The header as a [`SegmentHeader`].
    pub fn header(&self) -> SegmentHeader {
        let placement = match self.route {
            Route::Tagged(t) => Placement::Tagged { stag: t.stag, to: t.to },
            Route::Untagged(u) => Placement::Untagged { qn: u.qn, msn: u.msn, mo: u.mo },
        };
        SegmentHeader { opcode: self.desc.opcode, last: self.last, placement, inval_stag: self.inval_stag }
    }
}

/// Where a validated segment goes: its handler kind and the placement fields of its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// A tagged opcode on a tagged segment.
    Tagged(TaggedRoute),
    /// An untagged opcode on an untagged segment of its own queue.
    Untagged(UntaggedRoute),
}

/// A tagged segment's handler and placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaggedRoute {
    /// The handler.
    pub kind: TaggedKind,
    /// The sink's STag.
    pub stag: Stag,
    /// Offset of the first payload byte.
    pub to: TaggedOffset,
}

/// An untagged segment's handler and placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UntaggedRoute {
    /// The handler.
    pub kind: UntaggedKind,
    /// The queue (the one the opcode's row names).
    pub qn: QueueNumber,
    /// The message on that queue.
    pub msn: Msn,
    /// Offset of the first payload byte within the message.
    pub mo: u32,
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
        let Ok(b) = <&[u8; READ_REQUEST_LEN]>::try_from(body) else {
            return Err(Error::BadMessageLength { what: "RDMA Read Request", len: body.len() });
        };
        Ok(ReadRequest::from_bytes(b))
    }

    /// Reads the 28-byte header; it cannot fail: every field is in range of the array.
    pub fn from_bytes(body: &[u8; READ_REQUEST_LEN]) -> Self {
        ReadRequest {
            sink_stag: Stag(be32(&body[0..4])),
            sink_to: TaggedOffset(be64(&body[4..12])),
            size: be32(&body[12..16]),
            src_stag: Stag(be32(&body[16..20])),
            src_to: TaggedOffset(be64(&body[20..28])),
        }
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
        let Ok(b) = <&[u8; ATOMIC_REQUEST_LEN]>::try_from(body) else {
            return Err(Error::BadMessageLength { what: "Atomic Request", len: body.len() });
        };
        Ok(AtomicRequest::from_bytes(b))
    }

    /// Reads the 52-byte header; it cannot fail: every field is in range of the array.
    pub fn from_bytes(body: &[u8; ATOMIC_REQUEST_LEN]) -> Self {
        AtomicRequest {
            opcode: AtomicOpcode::from((be32(&body[0..4]) & 0xF) as u8),
            request_id: be32(&body[4..8]),
            stag: Stag(be32(&body[8..12])),
            to: TaggedOffset(be64(&body[12..20])),
            add_or_swap: be64(&body[20..28]),
            add_or_swap_mask: be64(&body[28..36]),
            compare: be64(&body[36..44]),
            compare_mask: be64(&body[44..52]),
        }
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
        let Ok(b) = <&[u8; ATOMIC_RESPONSE_LEN]>::try_from(body) else {
            return Err(Error::BadMessageLength { what: "Atomic Response", len: body.len() });
        };
        Ok(AtomicResponse::from_bytes(b))
    }

    /// Reads the 12-byte header; it cannot fail: every field is in range of the array.
    pub fn from_bytes(body: &[u8; ATOMIC_RESPONSE_LEN]) -> Self {
        AtomicResponse { request_id: be32(&body[0..4]), original: be64(&body[4..12]) }
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
    match <[u8; IMMEDIATE_DATA_LEN]>::try_from(body) {
        Ok(b) => Ok(u64::from_be_bytes(b)),
        Err(_) => Err(Error::BadMessageLength { what: "Immediate Data", len: body.len() }),
    }
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

    /// The table written out independently of it, from RFC 5040 §4.1/Figure 4 and RFC 7306:
    /// (code, tagged, queue, fixed header, 7306, invalidates, solicited, consumes, direction).
    #[allow(clippy::type_complexity)]
    const EXPECTED: [(u8, bool, Option<u32>, Option<usize>, bool, bool, bool, Consumes, Direction); 12] = [
        (0x0, true, None, None, false, false, false, Consumes::Nothing, Direction::Request),
        (0x1, false, Some(1), Some(28), false, false, false, Consumes::InboundRequest, Direction::Request),
        (0x2, true, None, None, false, false, false, Consumes::OutstandingRequest, Direction::Response),
        (0x3, false, Some(0), None, false, false, false, Consumes::ReceiveWqe, Direction::Request),
        (0x4, false, Some(0), None, false, true, false, Consumes::ReceiveWqe, Direction::Request),
        (0x5, false, Some(0), None, false, false, true, Consumes::ReceiveWqe, Direction::Request),
        (0x6, false, Some(0), None, false, true, true, Consumes::ReceiveWqe, Direction::Request),
        (0x7, false, Some(2), None, false, false, false, Consumes::TerminateBuffer, Direction::Either),
        (0x8, false, Some(0), Some(8), true, false, false, Consumes::ReceiveWqe, Direction::Request),
        (0x9, false, Some(0), Some(8), true, false, true, Consumes::ReceiveWqe, Direction::Request),
        (0xA, false, Some(1), Some(52), true, false, false, Consumes::InboundRequest, Direction::Request),
        (0xB, false, Some(3), Some(12), true, false, false, Consumes::OutstandingRequest, Direction::Response),
    ];

    #[test]
    fn opcode_table_rows_are_the_rfc_definitions() {
        for (code, tagged, qn, fixed, ext, inv, se, consumes, direction) in EXPECTED {
            let d = descriptor_of(code).unwrap();
            assert_eq!(u8::from(d.opcode), code);
            assert_eq!(d.name, format!("{:?}", d.opcode), "the name is the Debug form");
            assert_eq!(d.model.is_tagged(), tagged, "{}", d.name);
            assert_eq!(d.model.queue().map(|q| q.0), qn, "{}", d.name);
            assert_eq!(d.body.fixed_len(), fixed, "{}", d.name);
            assert_eq!((d.rfc7306, d.invalidates, d.solicited), (ext, inv, se), "{}", d.name);
            assert_eq!((d.consumes, d.direction), (consumes, direction), "{}", d.name);
            assert_eq!(d.ddp_header_len(), if tagged { 14 } else { 18 });
        }
        // Only the Terminate has a bounded header; the rest carry ULP payload.
        assert_eq!(Opcode::Terminate.descriptor().unwrap().body, Body::UpTo(crate::terminate::MAX_BODY_LEN));
        for d in descriptors().filter(|d| d.body.fixed_len().is_none() && d.opcode != Opcode::Terminate) {
            assert_eq!(d.body, Body::Payload, "{}", d.name);
        }
        assert_eq!(descriptors().count(), EXPECTED.len());
        assert_eq!((MAX_FIXED_BODY_LEN, MAX_BODY_LEN), (ATOMIC_REQUEST_LEN, crate::terminate::MAX_BODY_LEN));
    }

    #[test]
    fn every_assigned_opcode_has_a_row_and_no_other_value_does() {
        for v in 0..=u8::MAX {
            let op = Opcode::from(v);
            assert_eq!(op.descriptor().is_some(), op.is_known(), "{v:#x}");
            assert_eq!(descriptor_of(v).is_some(), v < 0xC, "{v:#x}");
        }
        // An Unknown carrying a value wider than the field has no row either.
        assert_eq!(Opcode::Unknown(0x13).descriptor(), None);
    }

    #[test]
    fn body_shapes_admit_only_one_whole_segment_of_their_length() {
        assert!(Body::Payload.fits(false, 12, 0));
        assert!(Body::Fixed(8).fits(true, 0, 8));
        for (last, mo, len) in [(false, 0, 8), (true, 1, 8), (true, 0, 7), (true, 0, 9)] {
            assert!(!Body::Fixed(8).fits(last, mo, len), "{last} {mo} {len}");
        }
        assert!(Body::UpTo(52).fits(true, 0, 0) && Body::UpTo(52).fits(true, 0, 52));
        assert!(!Body::UpTo(52).fits(true, 0, 53) && !Body::UpTo(52).fits(false, 0, 4));
        assert!(!Body::UpTo(52).fits(true, 4, 4));
    }

    /// A header for `d` on its own model and queue.
    fn header_for(d: &OpDesc) -> SegmentHeader {
        if d.model.is_tagged() {
            SegmentHeader::tagged(d.opcode, true, Stag(0x100), TaggedOffset(0x2000))
        } else {
            SegmentHeader::untagged(d.opcode, true, Msn(3), 0)
        }
    }

    #[test]
    fn every_row_routes_its_own_segments_to_its_handler() {
        for d in descriptors() {
            let h = header_for(d);
            let r = SegmentHeader::parse_routed(&h.to_bytes().0[..h.header_len()]).unwrap();
            assert_eq!((r.header(), r.desc), (h, d));
            let want = match (d.model, h.placement) {
                (Model::Tagged(kind), Placement::Tagged { stag, to }) => Route::Tagged(TaggedRoute { kind, stag, to }),
                (Model::Untagged(_, kind), Placement::Untagged { qn, msn, mo }) => {
                    Route::Untagged(UntaggedRoute { kind, qn, msn, mo })
                }
                _ => panic!("{} built on the wrong model", d.name),
            };
            assert_eq!(r.route, want);
        }
    }

    #[test]
    fn a_row_on_the_other_model_or_another_queue_is_rejected() {
        for d in descriptors() {
            let mut h = header_for(d);
            // The other buffer model: unexpected opcode.
            h.placement = match h.placement {
                Placement::Tagged { .. } => Placement::Untagged { qn: QueueNumber(0), msn: Msn(1), mo: 0 },
                Placement::Untagged { .. } => Placement::Tagged { stag: Stag(1), to: TaggedOffset(0) },
            };
            let e = SegmentHeader::parse(&h.to_bytes().0[..h.header_len()]).unwrap_err();
            assert_eq!(e, Error::UnexpectedOpcode { opcode: d.opcode, tagged: !d.model.is_tagged() }, "{}", d.name);
            // Every queue but its own: invalid QN.
            let Some(own) = d.model.queue() else { continue };
            for qn in [0, 1, 2, 3, 4, 0xff00_0001].into_iter().filter(|&q| q != own.0) {
                let h = SegmentHeader {
                    placement: Placement::Untagged { qn: QueueNumber(qn), msn: Msn(1), mo: 0 },
                    ..header_for(d)
                };
                let e = SegmentHeader::parse(&h.to_bytes().0).unwrap_err();
                assert_eq!(e, Error::InvalidQueueNumber { qn, opcode: d.opcode }, "{} on {qn}", d.name);
            }
        }
        // Reserved opcodes on either model.
        for code in 0xC..=0xF {
            let mut b = [0x41u8, 0x40 | code, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
            assert_eq!(
                SegmentHeader::parse(&b).unwrap_err(),
                Error::UnexpectedOpcode { opcode: Opcode::Unknown(code), tagged: false }
            );
            b[0] = 0xc1;
            assert_eq!(
                SegmentHeader::parse(&b[..14]).unwrap_err(),
                Error::UnexpectedOpcode { opcode: Opcode::Unknown(code), tagged: true }
            );
        }
    }

    #[test]
    fn fixed_size_bodies_read_from_arrays_as_parse_does() {
        let rr = ReadRequest {
            sink_stag: Stag(1),
            sink_to: TaggedOffset(2),
            size: 3,
            src_stag: Stag(4),
            src_to: TaggedOffset(5),
        };
        assert_eq!(ReadRequest::from_bytes(&rr.to_bytes()), rr);
        let cs = AtomicRequest::compare_swap(8, Stag(0x100), TaggedOffset(0x1000), 10, 99);
        assert_eq!(AtomicRequest::from_bytes(&cs.to_bytes()), cs);
        let resp = AtomicResponse { request_id: 8, original: 10 };
        assert_eq!(AtomicResponse::from_bytes(&resp.to_bytes()), resp);
        assert_eq!(
            AtomicResponse::parse(&resp.to_bytes()[..11]),
            Err(Error::BadMessageLength { what: "Atomic Response", len: 11 })
        );
        assert_eq!(AtomicRequest::parse(&[0; 53]), Err(Error::BadMessageLength { what: "Atomic Request", len: 53 }));
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
