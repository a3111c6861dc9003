//! MPA connection setup (RFC 5044 §7.1, RFC 6581): the Request/Reply exchange as initiator and
//! responder, IRD/ORD and peer-to-peer RTR negotiation, CRC and marker agreement, timeouts.
//!
//! The engines consume stream bytes and produce the bytes to send; they never read past the
//! frame they expect, so the first FPDU after a Reply is left to the queue pair. The outcome is
//! a [`Negotiated`] value that the runtime hands to the queue pair; this module does not know
//! the queue pair.
//!
//! **RFC 7306 support** is announced with two reserved MPA flag bits, which RFC 5044 says are
//! sent as zero and not checked, so peers that do not know them ignore them:
//! [`FLAG_RFC7306_OFFER`] in a Request, [`FLAG_RFC7306_ACCEPT`] in a Reply. A different bit in
//! each direction keeps a responder that echoes the Request's flags (as Linux siw builds its
//! Reply) from appearing to accept.
//!
//! **FPDUs larger than the MSS** are announced the same way, between two copies of this
//! stack: [`FLAG_LARGE_FPDU_OFFER`] in a Request, [`FLAG_LARGE_FPDU_ACCEPT`] in a Reply. Where
//! both are set, each side sends FPDUs of up to 64 KiB whatever the TCP MSS (RFC 5044 §5.1
//! asks senders to fit an FPDU in one segment so that hardware can place each segment on its
//! own; a receiver in software reassembles the stream anyway, and a large FPDU lets it read a
//! payload straight into place instead of copying it out of many small ones). Linux siw and
//! hardware never set the accept bit, so they keep segment-sized FPDUs.

use iwarp_wire::mpa::rr::{FrameKind, FrameRepr, IRD_ORD_NO_NEGOTIATION, MAX_PRIVATE_DATA};
use iwarp_wire::mpa::{EnhancedParams, Framer, RtrType, RtrTypes};
use iwarp_wire::terminate::{Mpa, TerminateCause, TerminateRepr};
use iwarp_wire::{Msn, Opcode, SegmentHeader};
use std::time::{Duration, Instant};

/// Reserved MPA flag bit set in a Request by a side that supports RFC 7306.
pub const FLAG_RFC7306_OFFER: u8 = 0x01;
/// Reserved MPA flag bit set in a Reply by a responder that accepts RFC 7306 on this connection.
pub const FLAG_RFC7306_ACCEPT: u8 = 0x02;
/// Reserved MPA flag bit set in a Request by a side that receives FPDUs larger than the MSS
/// and would send them.
pub const FLAG_LARGE_FPDU_OFFER: u8 = 0x04;
/// Reserved MPA flag bit set in a Reply by a responder that agrees: both directions then send
/// FPDUs of up to 64 KiB whatever the MSS.
pub const FLAG_LARGE_FPDU_ACCEPT: u8 = 0x08;
/// Linux siw drops a connection whose MPA private data exceeds this (the RFC allows 512).
pub const LINUX_MAX_PRIVATE_DATA: usize = 256;

/// This side's MPA preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpaConfig {
    /// Revision to initiate with: 2 (RFC 6581, default) or 1.
    pub revision: u8,
    /// Ask for CRC (C flag). CRC is used if either side asks (RFC 5044 §4.4).
    pub crc: bool,
    /// Ask the peer to insert markers (M flag).
    pub markers: bool,
    /// Peer-to-peer mode: the RTR types this side can send (initiator) or accept (responder).
    /// `None` is the client/server model.
    pub peer_to_peer: Option<RtrTypes>,
    /// Offer (initiator) or accept (responder) RFC 7306 Immediate Data and atomics.
    pub rfc7306: bool,
    /// Offer (initiator) or accept (responder) FPDUs larger than the MSS in both directions
    /// (see the module docs).
    pub large_fpdus: bool,
    /// The largest IRD/ORD this side can provide (IRD may be raised up to it).
    pub max_rd_atomic: u16,
    /// How long to wait for the peer's Request or Reply.
    pub timeout: Duration,
}

impl Default for MpaConfig {
    fn default() -> Self {
        MpaConfig {
            revision: 2,
            crc: true,
            markers: false,
            peer_to_peer: None,
            rfc7306: true,
            large_fpdus: true,
            max_rd_atomic: 128,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Which side of the MPA exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent the Request.
    Initiator,
    /// Sent the Reply.
    Responder,
}

/// What the exchange settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// This side's role.
    pub role: Role,
    /// The revision in use.
    pub revision: u8,
    /// CRC generated and checked.
    pub crc: bool,
    /// Insert markers in what this side sends.
    pub send_markers: bool,
    /// Expect markers in what this side receives.
    pub recv_markers: bool,
    /// Inbound Read/atomic depth of this side.
    pub ird: u16,
    /// Outbound Read/atomic depth of this side.
    pub ord: u16,
    /// Initiator: the RTR to send first. Responder: unused.
    pub send_rtr: Option<RtrType>,
    /// Responder: the RTR types the first FPDU may be. Initiator: unused.
    pub expect_rtr: Option<RtrTypes>,
    /// RFC 7306 usable on this connection.
    pub rfc7306: bool,
    /// Both sides send FPDUs larger than the MSS (see the module docs).
    pub large_fpdus: bool,
    /// The peer's private data (ULP part).
    pub peer_private_data: Vec<u8>,
}

/// Why connection setup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmError {
    /// The peer's frame is malformed (RFC 5044 §7.1.2: close the connection).
    #[error("invalid MPA frame from the peer: {0}")]
    Malformed(iwarp_wire::Error),
    /// The peer sent bytes after its Request before seeing our Reply.
    #[error("the peer sent {0} bytes after its MPA Request")]
    UnexpectedData(usize),
    /// The peer did not complete its frame in time.
    #[error("MPA {0:?} not received within the timeout")]
    Timeout(FrameKind),
    /// Our private data exceeds the RFC's 512 bytes.
    #[error("private data of {0} bytes exceeds MPA's 512-byte limit")]
    PrivateDataTooLong(usize),
    /// The responder wants more outstanding Reads than we can serve (RFC 6581, MPA code 6);
    /// `terminate` holds the FPDU to send before closing.
    #[error("peer's ORD {peer_ord} exceeds our IRD limit {max}")]
    InsufficientIrd {
        /// Peer's ORD.
        peer_ord: u16,
        /// Our maximum.
        max: u16,
        /// The Terminate FPDU to send.
        terminate: Vec<u8>,
    },
    /// No RTR type both sides support (RFC 6581, MPA code 7).
    #[error("no RTR type both sides support")]
    NoMatchingRtr {
        /// The Terminate FPDU to send.
        terminate: Vec<u8>,
    },
    /// The engine was used out of order.
    #[error("connection setup already finished")]
    Finished,
}

/// The outcome for the initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorOutcome {
    /// The responder accepted.
    Accepted(Negotiated),
    /// The responder rejected (R = 1), with its private data.
    Rejected {
        /// The responder's private data.
        private_data: Vec<u8>,
    },
}

/// The initiator's half of the exchange.
#[derive(Debug)]
pub struct Initiator {
    cfg: MpaConfig,
    sent_ird: u16,
    sent_ord: u16,
    buf: Vec<u8>,
    deadline: Instant,
    done: bool,
}

fn check_pd(pd: &[u8]) -> Result<(), CmError> {
    // RFC 5044 §7.1: private data "MUST NOT exceed 512 bytes" (less the RFC 6581 block).
    if pd.len() + 4 > MAX_PRIVATE_DATA {
        return Err(CmError::PrivateDataTooLong(pd.len()));
    }
    Ok(())
}

/// An FPDU carrying a bare Terminate (no copied headers), for errors found before the queue
/// pair exists.
pub fn terminate_fpdu(cause: TerminateCause, crc: bool, markers: bool) -> Vec<u8> {
    let h = SegmentHeader::untagged(Opcode::Terminate, true, Msn::FIRST, 0);
    let (b, n) = h.to_bytes();
    let mut ulpdu = b[..n].to_vec();
    let mut body = [0u8; 4];
    // A bare Terminate always fits its 4-byte body.
    let _ = TerminateRepr::bare(cause).emit(&mut body);
    ulpdu.extend_from_slice(&body);
    let mut out = Vec::new();
    let _ = Framer::new(crc, markers).frame_to_vec(&ulpdu, iwarp_wire::mpa::NO_PAYLOAD, &mut out);
    out
}

impl Initiator {
    /// Starts the exchange: returns the engine and the Request to send. `ird`/`ord` are this
    /// side's inbound and outbound Read depths (rdma_cm's responder_resources and
    /// initiator_depth).
    ///
    /// # Errors
    /// [`CmError::PrivateDataTooLong`].
    pub fn new(
        cfg: MpaConfig,
        ird: u16,
        ord: u16,
        private_data: &[u8],
        now: Instant,
    ) -> Result<(Self, Vec<u8>), CmError> {
        check_pd(private_data)?;
        let rtr = cfg.peer_to_peer.unwrap_or_default();
        // RFC 6581 §9.2: a zero-length Read RTR is an RDMA Read, so an initiator offering it
        // announces an ORD of at least 1 (siw terminates a Read RTR where its IRD is 0). The
        // queue pair keeps the ORD asked for: the RTR does not count against it.
        let wire_ord = if cfg.peer_to_peer.is_some() && rtr.read { ord.max(1) } else { ord };
        let enhanced = (cfg.revision >= 2).then(|| EnhancedParams {
            peer_to_peer: cfg.peer_to_peer.is_some(),
            ird,
            ord: wire_ord,
            rtr,
        });
        let req = FrameRepr {
            kind: FrameKind::Request,
            markers: cfg.markers,
            crc: cfg.crc,
            reject: false,
            revision: if cfg.revision >= 2 { 2 } else { 1 },
            enhanced,
            private_data,
            reserved_flags: if cfg.rfc7306 { FLAG_RFC7306_OFFER } else { 0 }
                | if cfg.large_fpdus { FLAG_LARGE_FPDU_OFFER } else { 0 },
        };
        let bytes = req.to_vec().map_err(CmError::Malformed)?;
        let deadline = now + cfg.timeout;
        Ok((Initiator { cfg, sent_ird: ird, sent_ord: ord, buf: Vec::new(), deadline, done: false }, bytes))
    }

    /// Bytes received; returns the outcome once the Reply is whole, with the number of bytes
    /// of `data` it used (the rest belongs to the queue pair).
    ///
    /// # Errors
    /// [`CmError`] for a malformed Reply or failed negotiation.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<(InitiatorOutcome, usize)>, CmError> {
        if self.done {
            return Err(CmError::Finished);
        }
        let before = self.buf.len();
        self.buf.extend_from_slice(data);
        let (reply, used) = match FrameRepr::parse(&self.buf, FrameKind::Reply) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => {
                // RFC 5044 §7.1.2: a badly formatted Reply ends the exchange (close the connection).
                self.done = true;
                return Err(CmError::Malformed(e));
            }
        };
        self.done = true;
        let used_of_data = used - before;
        // RFC 5044 §7.1.2: receivers check Rev and close if they cannot interoperate. A responder
        // answers in the Request's revision (Linux siw mirrors it); a Reply above it would carry
        // parameters this side never offered.
        let offered = if self.cfg.revision >= 2 { 2 } else { 1 };
        if reply.revision > offered {
            return Err(CmError::Malformed(iwarp_wire::Error::UnsupportedRevision(reply.revision)));
        }
        if reply.reject {
            return Ok(Some((InitiatorOutcome::Rejected { private_data: reply.private_data.to_vec() }, used_of_data)));
        }
        let crc = self.cfg.crc || reply.crc;
        let (mut ird, mut ord) = (self.sent_ird, self.sent_ord);
        let mut send_rtr = None;
        if let Some(p) = reply.enhanced {
            // RFC 6581 §9.1: initiator ORD ≤ responder IRD (0x3FFF: not negotiated).
            if p.ird != IRD_ORD_NO_NEGOTIATION {
                ord = ord.min(p.ird);
            }
            // Responder ORD ≤ initiator IRD: raise our IRD if we can, else code 6.
            if p.ord != IRD_ORD_NO_NEGOTIATION && p.ord > ird {
                if p.ord > self.cfg.max_rd_atomic {
                    let terminate = terminate_fpdu(TerminateCause::Mpa(Mpa::InsufficientIrd), crc, reply.markers);
                    return Err(CmError::InsufficientIrd { peer_ord: p.ord, max: self.cfg.max_rd_atomic, terminate });
                }
                ird = p.ord;
            }
            if let Some(ours) = self.cfg.peer_to_peer {
                // RFC 6581 §9.2: the responder echoes A; with it, send one RTR of a common type.
                if p.peer_to_peer {
                    let mut common = ours.intersect(p.rtr);
                    // No Read RTR into a responder that takes no Reads (IRD 0).
                    if p.ird == 0 {
                        common.read = false;
                    }
                    send_rtr = common.preferred();
                    if send_rtr.is_none() {
                        let terminate = terminate_fpdu(TerminateCause::Mpa(Mpa::NoMatchingRtr), crc, reply.markers);
                        return Err(CmError::NoMatchingRtr { terminate });
                    }
                }
            }
        }
        let rfc7306 = self.cfg.rfc7306 && reply.reserved_flags & FLAG_RFC7306_ACCEPT != 0;
        let large_fpdus = self.cfg.large_fpdus && reply.reserved_flags & FLAG_LARGE_FPDU_ACCEPT != 0;
        Ok(Some((
            InitiatorOutcome::Accepted(Negotiated {
                role: Role::Initiator,
                revision: reply.revision,
                crc,
                send_markers: reply.markers,
                recv_markers: self.cfg.markers,
                ird,
                ord,
                send_rtr,
                expect_rtr: None,
                rfc7306,
                large_fpdus,
                peer_private_data: reply.private_data.to_vec(),
            }),
            used_of_data,
        )))
    }

    /// When the Reply is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }

    /// Checks the deadline.
    ///
    /// # Errors
    /// [`CmError::Timeout`] once it has passed without a Reply.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CmError> {
        if !self.done && now >= self.deadline {
            self.done = true;
            return Err(CmError::Timeout(FrameKind::Reply));
        }
        Ok(())
    }
}

/// An incoming connection request, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The Request's revision.
    pub revision: u8,
    /// The initiator asked for CRC.
    pub crc: bool,
    /// The initiator wants markers.
    pub markers: bool,
    /// The RFC 6581 block (revision 2 with S set).
    pub enhanced: Option<EnhancedParams>,
    /// The initiator's private data (ULP part).
    pub private_data: Vec<u8>,
    /// The initiator offered RFC 7306.
    pub rfc7306: bool,
    /// The initiator offered FPDUs larger than the MSS.
    pub large_fpdus: bool,
}

impl ConnectRequest {
    /// The initiator's IRD (responder_resources), if it sent one.
    pub fn ird(&self) -> Option<u16> {
        self.enhanced.map(|e| e.ird)
    }
    /// The initiator's ORD (initiator_depth), if it sent one.
    pub fn ord(&self) -> Option<u16> {
        self.enhanced.map(|e| e.ord)
    }
}

/// The responder's half of the exchange.
#[derive(Debug)]
pub struct Responder {
    cfg: MpaConfig,
    buf: Vec<u8>,
    deadline: Instant,
    request: Option<ConnectRequest>,
    done: bool,
}

impl Responder {
    /// Starts waiting for a Request.
    pub fn new(cfg: MpaConfig, now: Instant) -> Self {
        let deadline = now + cfg.timeout;
        Responder { cfg, buf: Vec::new(), deadline, request: None, done: false }
    }

    /// Bytes received; returns the request once it is whole.
    ///
    /// # Errors
    /// [`CmError::Malformed`] for a malformed Request, [`CmError::UnexpectedData`] if bytes
    /// follow it (RFC 5044 §7.1.2: the initiator waits for the Reply).
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<&ConnectRequest>, CmError> {
        if self.done {
            return Err(CmError::Finished);
        }
        if self.request.is_some() {
            if data.is_empty() {
                return Ok(self.request.as_ref());
            }
            self.done = true;
            return Err(CmError::UnexpectedData(data.len()));
        }
        self.buf.extend_from_slice(data);
        let (req, used) = match FrameRepr::parse(&self.buf, FrameKind::Request) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.done = true;
                return Err(CmError::Malformed(e));
            }
        };
        if used < self.buf.len() {
            self.done = true;
            return Err(CmError::UnexpectedData(self.buf.len() - used));
        }
        self.request = Some(ConnectRequest {
            revision: req.revision,
            crc: req.crc,
            markers: req.markers,
            enhanced: req.enhanced,
            private_data: req.private_data.to_vec(),
            rfc7306: req.reserved_flags & FLAG_RFC7306_OFFER != 0,
            large_fpdus: req.reserved_flags & FLAG_LARGE_FPDU_OFFER != 0,
        });
        Ok(self.request.as_ref())
    }

    /// This side's preferences, which [`accept`](Self::accept) applies (the application may
    /// change them after seeing the request).
    pub fn config_mut(&mut self) -> &mut MpaConfig {
        &mut self.cfg
    }

    /// The request, once received.
    pub fn request(&self) -> Option<&ConnectRequest> {
        self.request.as_ref()
    }

    /// Accepts with this side's IRD/ORD and private data: returns the Reply to send and the
    /// settled parameters.
    ///
    /// # Errors
    /// [`CmError::Finished`] without a request or once the exchange has ended,
    /// [`CmError::PrivateDataTooLong`].
    pub fn accept(&mut self, ird: u16, ord: u16, private_data: &[u8]) -> Result<(Vec<u8>, Negotiated), CmError> {
        check_pd(private_data)?;
        let req = self.request.clone().ok_or(CmError::Finished)?;
        if self.done {
            return Err(CmError::Finished);
        }
        self.done = true;
        let crc = self.cfg.crc || req.crc;
        let rfc7306 = self.cfg.rfc7306 && req.rfc7306;
        let large_fpdus = self.cfg.large_fpdus && req.large_fpdus;
        let mut my_ird = ird;
        let mut my_ord = ord;
        let mut expect_rtr = None;
        let enhanced = match req.enhanced {
            Some(p) => {
                let mut out = EnhancedParams::client_server(0, 0);
                // RFC 6581 §9.1: responder ORD ≤ initiator IRD; responder IRD ≥ initiator ORD
                // (raised up to our maximum, as rdma_cm's relaxed negotiation does).
                if p.ird == IRD_ORD_NO_NEGOTIATION {
                    out.ord = IRD_ORD_NO_NEGOTIATION;
                } else {
                    my_ord = my_ord.min(p.ird);
                    out.ord = my_ord;
                }
                if p.ord == IRD_ORD_NO_NEGOTIATION {
                    out.ird = IRD_ORD_NO_NEGOTIATION;
                } else {
                    my_ird = my_ird.max(p.ord.min(self.cfg.max_rd_atomic));
                    out.ird = my_ird;
                }
                if p.peer_to_peer {
                    // RFC 6581 §9.2: echo A; set the supported types among those offered, and at
                    // least one supported type even if none was offered.
                    let ours = self.cfg.peer_to_peer.unwrap_or(RtrTypes::ALL);
                    let mut types = ours.intersect(p.rtr);
                    if types.is_empty() {
                        types = RtrTypes::only(ours.preferred().unwrap_or(RtrType::Write));
                    }
                    out.peer_to_peer = true;
                    out.rtr = types;
                    expect_rtr = Some(types);
                }
                Some(out)
            }
            // Revision 1 (or 2 without S): no IRD/ORD exchange; take Reads up to our maximum.
            None => {
                my_ird = my_ird.max(self.cfg.max_rd_atomic);
                None
            }
        };
        let reply = FrameRepr {
            kind: FrameKind::Reply,
            markers: self.cfg.markers,
            crc,
            reject: false,
            revision: req.revision,
            enhanced,
            private_data,
            reserved_flags: if rfc7306 { FLAG_RFC7306_ACCEPT } else { 0 }
                | if large_fpdus { FLAG_LARGE_FPDU_ACCEPT } else { 0 },
        };
        let bytes = reply.to_vec().map_err(CmError::Malformed)?;
        Ok((
            bytes,
            Negotiated {
                role: Role::Responder,
                revision: req.revision,
                crc,
                send_markers: req.markers,
                recv_markers: self.cfg.markers,
                ird: my_ird,
                ord: my_ord,
                send_rtr: None,
                expect_rtr,
                rfc7306,
                large_fpdus,
                peer_private_data: req.private_data,
            },
        ))
    }

    /// Rejects: returns the Reply (R = 1) carrying `private_data` (RFC 5044 §7.1.2: "SHOULD
    /// send a Reply with R set, then leave MPA").
    ///
    /// # Errors
    /// [`CmError::Finished`] without a request or once the exchange has ended,
    /// [`CmError::PrivateDataTooLong`].
    pub fn reject(&mut self, private_data: &[u8]) -> Result<Vec<u8>, CmError> {
        check_pd(private_data)?;
        let req = self.request.clone().ok_or(CmError::Finished)?;
        if self.done {
            return Err(CmError::Finished);
        }
        self.done = true;
        let reply = FrameRepr {
            kind: FrameKind::Reply,
            markers: false,
            crc: req.crc,
            reject: true,
            revision: req.revision,
            enhanced: req.enhanced.map(|_| EnhancedParams::client_server(0, 0)),
            private_data,
            reserved_flags: 0,
        };
        reply.to_vec().map_err(CmError::Malformed)
    }

    /// When the Request is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.request.is_none() && !self.done).then_some(self.deadline)
    }

    /// Checks the deadline.
    ///
    /// # Errors
    /// [`CmError::Timeout`] once it has passed without a whole Request.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CmError> {
        if self.request.is_none() && !self.done && now >= self.deadline {
            self.done = true;
            return Err(CmError::Timeout(FrameKind::Request));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iwarp_wire::mpa::Deframer;
    use iwarp_wire::terminate::TerminateMessage;

    fn exchange(ic: MpaConfig, rc: MpaConfig, i_rd: (u16, u16), r_rd: (u16, u16)) -> (Negotiated, Negotiated) {
        let now = Instant::now();
        let (mut i, req) = Initiator::new(ic, i_rd.0, i_rd.1, b"hello", now).unwrap();
        let mut r = Responder::new(rc, now);
        // Byte by byte: incomplete until the last byte.
        for b in &req[..req.len() - 1] {
            assert_eq!(r.handle_bytes(std::slice::from_ref(b)).unwrap(), None);
        }
        let cr = r.handle_bytes(&req[req.len() - 1..]).unwrap().unwrap().clone();
        assert_eq!(cr.private_data, b"hello");
        let (reply, rn) = r.accept(r_rd.0, r_rd.1, b"world").unwrap();
        let (out, used) = i.handle_bytes(&reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        let InitiatorOutcome::Accepted(inn) = out else { panic!("rejected") };
        assert_eq!(inn.peer_private_data, b"world");
        (inn, rn)
    }

    #[test]
    fn rev2_negotiates_crc_ird_ord_and_rfc7306() {
        let (i, r) = exchange(MpaConfig::default(), MpaConfig { crc: false, ..Default::default() }, (4, 16), (8, 2));
        assert!(i.crc && r.crc, "one side asking is enough");
        // Responder: ORD ≤ initiator IRD (2 ≤ 4), IRD raised to the initiator's ORD (16).
        assert_eq!((r.ird, r.ord), (16, 2));
        // Initiator: ORD ≤ responder IRD, IRD ≥ responder ORD.
        assert_eq!((i.ird, i.ord), (4, 16));
        assert!(i.rfc7306 && r.rfc7306);
        let (i, r) = exchange(MpaConfig { rfc7306: false, ..Default::default() }, MpaConfig::default(), (1, 1), (1, 1));
        assert!(!i.rfc7306 && !r.rfc7306);
    }

    #[test]
    fn crc_off_only_when_both_decline_and_rev1_works() {
        let off = MpaConfig { crc: false, revision: 1, ..Default::default() };
        let (i, r) = exchange(off.clone(), off, (1, 1), (1, 1));
        assert!(!i.crc && !r.crc);
        assert_eq!((i.revision, r.revision), (1, 1));
        assert_eq!(r.ird, 128, "rev 1 carries no IRD: take reads up to our maximum");
    }

    #[test]
    fn peer_to_peer_picks_a_common_rtr() {
        let write_read = RtrTypes { send: false, write: true, read: true };
        let read_only = RtrTypes { send: false, write: false, read: true };
        let (i, r) = exchange(
            MpaConfig { peer_to_peer: Some(write_read), ..Default::default() },
            MpaConfig { peer_to_peer: Some(read_only), ..Default::default() },
            (1, 1),
            (1, 1),
        );
        assert_eq!(i.send_rtr, Some(RtrType::Read));
        assert_eq!(r.expect_rtr, Some(read_only));
    }

    #[test]
    fn read_rtr_offer_announces_ord_one_even_when_asked_for_zero() {
        // perftest's control connection asks for IRD = ORD = 0.
        let read_only = RtrTypes { send: false, write: false, read: true };
        let cfg = MpaConfig { peer_to_peer: Some(read_only), ..Default::default() };
        let (_, req) = Initiator::new(cfg.clone(), 0, 0, &[], Instant::now()).unwrap();
        let (parsed, _) = FrameRepr::parse(&req, FrameKind::Request).unwrap().unwrap();
        assert_eq!(parsed.enhanced.map(|e| e.ord), Some(1));
        // Our responder with IRD 0 raises it to 1; the initiator's queue pair keeps ORD 0.
        let (i, r) = exchange(cfg, MpaConfig::default(), (0, 0), (0, 0));
        assert_eq!(i.send_rtr, Some(RtrType::Read));
        assert_eq!((i.ord, r.ird), (0, 1));
    }

    #[test]
    fn no_read_rtr_into_a_responder_with_ird_zero() {
        // An initiator offering `rtr` takes a P2P Reply with IRD = ORD = 0 offering the same.
        let answer = |rtr: RtrTypes| {
            let cfg = MpaConfig { peer_to_peer: Some(rtr), ..Default::default() };
            let (mut i, _) = Initiator::new(cfg, 0, 0, &[], Instant::now()).unwrap();
            let reply =
                FrameRepr::enhanced(FrameKind::Reply, EnhancedParams { peer_to_peer: true, ird: 0, ord: 0, rtr }, &[])
                    .to_vec()
                    .unwrap();
            i.handle_bytes(&reply)
        };
        let write_read = RtrTypes { send: false, write: true, read: true };
        let Ok(Some((InitiatorOutcome::Accepted(n), _))) = answer(write_read) else { panic!() };
        assert_eq!(n.send_rtr, Some(RtrType::Write));
        // Read the only common type: no RTR is possible, MPA code 7.
        let read_only = RtrTypes { send: false, write: false, read: true };
        assert!(matches!(answer(read_only), Err(CmError::NoMatchingRtr { .. })));
    }

    #[test]
    fn no_common_rtr_yields_terminate_code_7() {
        let now = Instant::now();
        let send_only = RtrTypes { send: true, write: false, read: false };
        let (mut i, _) =
            Initiator::new(MpaConfig { peer_to_peer: Some(send_only), ..Default::default() }, 1, 1, &[], now).unwrap();
        // A reply echoing A but choosing Write only.
        let reply = FrameRepr::enhanced(
            FrameKind::Reply,
            EnhancedParams { peer_to_peer: true, ird: 1, ord: 1, rtr: RtrTypes { write: true, ..RtrTypes::NONE } },
            &[],
        )
        .to_vec()
        .unwrap();
        let Err(CmError::NoMatchingRtr { terminate }) = i.handle_bytes(&reply) else { panic!() };
        let mut d = Deframer::new(Default::default());
        let mut body = Vec::new();
        let mut rest = &terminate[..];
        while !rest.is_empty() {
            let (n, ev) = d.feed(rest).unwrap();
            assert!(n > 0, "no progress");
            if let iwarp_wire::mpa::Event::Payload(p) = ev {
                body.extend_from_slice(p);
            }
            rest = &rest[n..];
        }
        assert_eq!(TerminateMessage::parse(&body).unwrap().rfc.cause, TerminateCause::Mpa(Mpa::NoMatchingRtr));
    }

    #[test]
    fn insufficient_ird_is_code_6() {
        let now = Instant::now();
        let (mut i, _) = Initiator::new(MpaConfig { max_rd_atomic: 4, ..Default::default() }, 1, 1, &[], now).unwrap();
        let reply = FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(1, 64), &[]).to_vec().unwrap();
        assert!(matches!(i.handle_bytes(&reply), Err(CmError::InsufficientIrd { peer_ord: 64, max: 4, .. })));
    }

    #[test]
    fn reject_carries_private_data() {
        let now = Instant::now();
        let (mut i, req) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
        let mut r = Responder::new(MpaConfig::default(), now);
        r.handle_bytes(&req).unwrap().unwrap();
        let rej = r.reject(b"go away").unwrap();
        let (out, _) = i.handle_bytes(&rej).unwrap().unwrap();
        assert_eq!(out, InitiatorOutcome::Rejected { private_data: b"go away".to_vec() });
    }

    #[test]
    fn malformed_extra_and_silent_peers_fail() {
        let now = Instant::now();
        let mut r = Responder::new(MpaConfig::default(), now);
        assert!(matches!(r.handle_bytes(b"GET / HTTP/1.1\r\n"), Err(CmError::Malformed(_))));
        let (_, mut req) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
        req.extend_from_slice(&[0, 0x12]);
        let mut r = Responder::new(MpaConfig::default(), now);
        assert_eq!(r.handle_bytes(&req), Err(CmError::UnexpectedData(2)));
        let mut r = Responder::new(MpaConfig { timeout: Duration::from_millis(100), ..Default::default() }, now);
        r.handle_bytes(b"MPA ID Req Frame").unwrap();
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_millis(100)));
        assert!(r.handle_timeout(now + Duration::from_millis(50)).is_ok());
        assert_eq!(r.handle_timeout(now + Duration::from_millis(100)), Err(CmError::Timeout(FrameKind::Request)));
        assert!(matches!(
            Initiator::new(MpaConfig::default(), 1, 1, &[0; 509], now),
            Err(CmError::PrivateDataTooLong(509))
        ));
        assert!(Initiator::new(MpaConfig::default(), 1, 1, &[0; 508], now).is_ok());
    }

    #[test]
    fn bytes_after_the_request_fail_the_responder_even_in_a_later_read() {
        // RFC 5044 §7.1.2: the initiator sends nothing more before the Reply.
        let now = Instant::now();
        let (_, req) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
        let mut r = Responder::new(MpaConfig::default(), now);
        assert!(r.handle_bytes(&req).unwrap().is_some());
        assert!(r.handle_bytes(&[]).unwrap().is_some(), "no bytes: still the request");
        assert_eq!(r.handle_bytes(&[0, 0x12, 0x41]), Err(CmError::UnexpectedData(3)));
        assert_eq!(r.accept(1, 1, &[]).unwrap_err(), CmError::Finished);
    }

    #[test]
    fn a_malformed_reply_fails_the_initiator() {
        // RFC 5044 §7.1.2: "MPA ID Rep Frame" is the only key a Reply may start with.
        let (mut i, req) = Initiator::new(MpaConfig::default(), 1, 1, &[], Instant::now()).unwrap();
        assert!(matches!(i.handle_bytes(&req), Err(CmError::Malformed(iwarp_wire::Error::BadKey { .. }))));
    }

    #[test]
    fn a_silent_responder_times_the_initiator_out() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let cfg = MpaConfig { timeout: ms(100), ..Default::default() };
        let (mut i, _) = Initiator::new(cfg.clone(), 1, 1, &[], now).unwrap();
        // Half a Reply does not stop the clock.
        let reply = FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(1, 1), &[]).to_vec().unwrap();
        assert_eq!(i.handle_bytes(&reply[..10]), Ok(None));
        assert_eq!(i.poll_timeout(), Some(now + ms(100)));
        assert_eq!(i.handle_timeout(now + ms(99)), Ok(()));
        assert_eq!(i.handle_timeout(now + ms(100)), Err(CmError::Timeout(FrameKind::Reply)));
        assert_eq!(i.poll_timeout(), None);
        assert_eq!(i.handle_bytes(&reply[10..]), Err(CmError::Finished), "too late");
        // A whole Reply in time stops it.
        let (mut i, _) = Initiator::new(cfg, 1, 1, &[], now).unwrap();
        assert!(i.handle_bytes(&reply).unwrap().is_some());
        assert_eq!(i.poll_timeout(), None);
        assert_eq!(i.handle_timeout(now + ms(500)), Ok(()));
    }

    #[test]
    fn a_siw_style_echo_of_our_offer_bit_does_not_enable_rfc7306() {
        let now = Instant::now();
        let (mut i, req) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
        // siw builds its Reply from our Request: same flags, key changed.
        let mut reply = req.clone();
        reply[..16].copy_from_slice(b"MPA ID Rep Frame");
        let (out, _) = i.handle_bytes(&reply).unwrap().unwrap();
        let InitiatorOutcome::Accepted(n) = out else { panic!() };
        assert!(!n.rfc7306);
        assert!(!n.large_fpdus, "an echoed offer is not an acceptance");
    }

    #[test]
    fn large_fpdus_need_the_offer_and_the_acceptance() {
        let off = MpaConfig { large_fpdus: false, ..Default::default() };
        let (i, r) = exchange(MpaConfig::default(), MpaConfig::default(), (1, 1), (1, 1));
        assert!(i.large_fpdus && r.large_fpdus);
        for (ic, rc) in [(off.clone(), MpaConfig::default()), (MpaConfig::default(), off.clone())] {
            let (i, r) = exchange(ic, rc, (1, 1), (1, 1));
            assert!(!i.large_fpdus && !r.large_fpdus);
        }
        // The bits on the wire: the offer in the Request, the acceptance in the Reply.
        let now = Instant::now();
        let (_, req) = Initiator::new(MpaConfig::default(), 1, 1, &[], now).unwrap();
        let parsed = FrameRepr::parse_exact(&req, FrameKind::Request).unwrap();
        assert_eq!(parsed.reserved_flags & FLAG_LARGE_FPDU_OFFER, FLAG_LARGE_FPDU_OFFER);
        let (_, req_off) = Initiator::new(off, 1, 1, &[], now).unwrap();
        assert_eq!(
            FrameRepr::parse_exact(&req_off, FrameKind::Request).unwrap().reserved_flags & FLAG_LARGE_FPDU_OFFER,
            0
        );
        // A Request that does not offer (siw, hardware) gets no acceptance.
        let mut r = Responder::new(MpaConfig::default(), now);
        r.handle_bytes(&req_off).unwrap();
        let (reply, n) = r.accept(1, 1, &[]).unwrap();
        assert!(!n.large_fpdus);
        assert_eq!(
            FrameRepr::parse_exact(&reply, FrameKind::Reply).unwrap().reserved_flags & FLAG_LARGE_FPDU_ACCEPT,
            0
        );
    }
}
