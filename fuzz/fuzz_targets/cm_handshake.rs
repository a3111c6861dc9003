//! MPA connection setup (`iwarp_proto::cm`): our initiator or our responder fed arbitrary peer
//! bytes in input-chosen chunks, or our initiator against our responder with the bytes in
//! flight cut where the input says.
//!
//! # Input
//! Decoded by `format/cm_handshake.rs` (shared with the seed writer). Integers are
//! little-endian; a read past the end of the input yields zeros, so every byte string is an
//! input. Cut at 16 KiB and 512 commands.
//!
//! Byte 0, the mode (`% 3`): 0 our initiator against the input, 1 our responder against the
//! input, 2 our initiator against our responder. Then one side's configuration (two in mode 2:
//! the initiator's, then the responder's): `revision: u8`, `flags: u8` (bit 0 CRC, bit 1
//! markers, bit 2 RFC 7306, bit 3 peer-to-peer, bits 4-6 its RTR types Send, Write, Read),
//! `max_rd_atomic: u16`, `ird: u16`, `ord: u16`, `timeout_ms: u16`, private data (`len: u16`
//! taken `% 600`, then the bytes). Then commands, a tag byte (`% 6`) and its arguments:
//!
//! | tag | command | arguments |
//! |---|---|---|
//! | 0 | peer bytes to our engine (mode 2: slipped into the bytes in flight) | `len: u16`, `len` bytes |
//! | 1 | clock + `handle_timeout` on each engine | `ms: u16` |
//! | 2 | responder `accept` | `ird: u16`, `ord: u16`, private data |
//! | 3 | responder `reject` | private data |
//! | 4 | mode 2: deliver bytes in flight | `n: u16` (0: all) |
//! | 5 | responder `config_mut` | `flags: u8` |
//!
//! # Oracles
//! - No panic, whatever the peer sends.
//! - Bounded: a frame we emit is at most 532 bytes (a Terminate FPDU at most 64); an engine
//!   still waiting for a frame has been given fewer bytes than the largest frame (it never
//!   buffers without bound); it never claims to have used more bytes than it was given.
//! - Once: an outcome (accepted, rejected, error, timeout) is reached once; afterwards every
//!   input is refused with `Finished` (an empty read before the responder answers still returns
//!   the request), no deadline is pending, and no second Reply can be had.
//! - Consistent: our Request and Reply parse back and say what our preferences and the
//!   negotiated values say; the request the responder reports, the Reply the initiator judged
//!   and the private data are the bytes on the wire; a completed negotiation stays within what
//!   was offered (ORD never above what we asked nor above the peer's IRD, IRD raised only up to
//!   our limit, CRC on if we asked, RTR of a type we offered and the peer accepted, RFC 7306
//!   only if both offered, revision not above ours); a timeout fires exactly when its deadline
//!   has passed. In loopback, both ends agree (CRC, revision, RFC 7306, markers each way, the
//!   initiator's RTR among the responder's, each side's reads within the other's IRD, private
//!   data each way).
#![no_main]

#[path = "format/cm_handshake.rs"]
mod format;
#[path = "format/reader.rs"]
mod reader;

use format::{flag, Cmd, Mode, SideCfg};
use iwarp_proto::cm::{
    CmError, ConnectRequest, Initiator, InitiatorOutcome, MpaConfig, Negotiated, Responder, Role, FLAG_RFC7306_ACCEPT,
    FLAG_RFC7306_OFFER,
};
use iwarp_wire::mpa::rr::{IRD_ORD_MAX, IRD_ORD_NO_NEGOTIATION, MAX_PRIVATE_DATA};
use iwarp_wire::mpa::{Deframer, DeframerConfig, Event, FrameKind, FrameRepr, RtrTypes};
use iwarp_wire::Opcode;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

/// The largest Request or Reply.
const MAX_FRAME: usize = 20 + MAX_PRIVATE_DATA;

fn mpa_config(s: &SideCfg) -> MpaConfig {
    MpaConfig {
        revision: s.revision,
        crc: s.flags & flag::CRC != 0,
        markers: s.flags & flag::MARKERS != 0,
        peer_to_peer: (s.flags & flag::P2P != 0).then_some(RtrTypes {
            send: s.flags & flag::RTR_SEND != 0,
            write: s.flags & flag::RTR_WRITE != 0,
            read: s.flags & flag::RTR_READ != 0,
        }),
        rfc7306: s.flags & flag::RFC7306 != 0,
        large_fpdus: s.flags & flag::LARGE_FPDUS != 0,
        max_rd_atomic: s.max_rd_atomic,
        timeout: Duration::from_millis(u64::from(s.timeout_ms)),
    }
}

/// A Terminate FPDU the engine hands over: small, one FPDU, a Terminate.
fn check_terminate(t: &[u8], crc: bool, markers: bool) {
    assert!(t.len() <= 64, "Terminate FPDU of {} bytes", t.len());
    let mut d = Deframer::new(DeframerConfig { crc, markers, max_ulpdu: u16::MAX });
    let mut rest = t;
    let mut ended = false;
    while !rest.is_empty() {
        let (n, ev) = d.feed(rest).expect("our Terminate deframes");
        assert!(n > 0);
        match ev {
            Event::Header(h) => assert_eq!(h.segment().expect("a DDP header").opcode, Opcode::Terminate),
            Event::End(_) => ended = true,
            _ => {}
        }
        rest = &rest[n..];
    }
    assert!(ended && d.is_idle(), "the Terminate is one whole FPDU");
}

// ---------------------------------------------------------------------------------------------
// Initiator

struct Init {
    eng: Initiator,
    cfg: MpaConfig,
    ird: u16,
    ord: u16,
    pd: Vec<u8>,
    /// Every byte given to the engine.
    fed: Vec<u8>,
    deadline: Instant,
    finished: bool,
    result: Option<Result<InitiatorOutcome, CmError>>,
}

impl Init {
    /// Starts one, checking the Request it emits; `None` if its private data is too long.
    fn start(s: &SideCfg, now: Instant) -> Option<(Init, Vec<u8>)> {
        let cfg = mpa_config(s);
        let (eng, req) = match Initiator::new(cfg.clone(), s.ird, s.ord, &s.private_data, now) {
            Ok(v) => v,
            Err(CmError::PrivateDataTooLong(n)) => {
                assert_eq!(n, s.private_data.len());
                assert!(n + 4 > MAX_PRIVATE_DATA, "private data of {n} bytes refused");
                return None;
            }
            Err(e) => panic!("Initiator::new failed: {e}"),
        };
        assert!(s.private_data.len() + 4 <= MAX_PRIVATE_DATA, "private data of {} accepted", s.private_data.len());
        assert!(req.len() <= MAX_FRAME);
        let r = FrameRepr::parse_exact(&req, FrameKind::Request).expect("our Request parses");
        let rev = if cfg.revision >= 2 { 2 } else { 1 };
        assert_eq!((r.revision, r.crc, r.markers, r.reject), (rev, cfg.crc, cfg.markers, false));
        assert_eq!(r.private_data, &s.private_data[..]);
        assert_eq!(r.reserved_flags & FLAG_RFC7306_OFFER != 0, cfg.rfc7306);
        match r.enhanced {
            Some(p) => {
                assert_eq!(rev, 2);
                assert_eq!(p.ird, s.ird.min(IRD_ORD_MAX));
                assert!(p.ord == s.ord.min(IRD_ORD_MAX) || (p.ord == 1 && s.ord == 0), "ORD {} for {}", p.ord, s.ord);
                assert_eq!(p.peer_to_peer, cfg.peer_to_peer.is_some());
                assert_eq!(p.rtr, cfg.peer_to_peer.unwrap_or_default());
            }
            None => assert_eq!(rev, 1),
        }
        let i = Init {
            eng,
            cfg: cfg.clone(),
            ird: s.ird,
            ord: s.ord,
            pd: s.private_data.clone(),
            fed: Vec::new(),
            deadline: now + cfg.timeout,
            finished: false,
            result: None,
        };
        assert_eq!(i.eng.poll_timeout(), Some(i.deadline));
        Some((i, req))
    }

    /// Bytes from the responder; returns how many of them the engine used, once it used some.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let r = self.eng.handle_bytes(data);
        if self.finished {
            assert_eq!(r, Err(CmError::Finished), "a second outcome");
            return None;
        }
        self.fed.extend_from_slice(data);
        let used = match r {
            Ok(None) => {
                assert!(self.fed.len() < MAX_FRAME, "waits for a Reply after {} bytes", self.fed.len());
                None
            }
            Ok(Some((outcome, used))) => {
                assert!(used <= data.len(), "used {used} of {} bytes", data.len());
                let start = self.fed.len() - data.len();
                self.check_outcome(&outcome, &self.fed[..start + used]);
                self.result = Some(Ok(outcome));
                Some(used)
            }
            Err(e) => {
                assert_ne!(e, CmError::Finished, "Finished before finishing");
                if let CmError::InsufficientIrd { terminate, .. } | CmError::NoMatchingRtr { terminate } = &e {
                    let reply = FrameRepr::parse(&self.fed, FrameKind::Reply).ok().flatten().expect("a whole Reply");
                    check_terminate(terminate, self.cfg.crc || reply.0.crc, reply.0.markers);
                }
                self.result = Some(Err(e));
                None
            }
        };
        self.finished = self.result.is_some();
        if self.finished {
            assert_eq!(self.eng.poll_timeout(), None, "a deadline after the outcome");
        }
        used
    }

    /// The outcome against the Reply it was judged on and against what we offered.
    fn check_outcome(&self, o: &InitiatorOutcome, reply: &[u8]) {
        let (rep, used) = FrameRepr::parse(reply, FrameKind::Reply).ok().flatten().expect("the Reply parses");
        assert_eq!(used, reply.len());
        let n = match o {
            InitiatorOutcome::Rejected { private_data } => {
                assert!(rep.reject);
                assert_eq!(private_data, rep.private_data);
                return;
            }
            InitiatorOutcome::Accepted(n) => n,
        };
        assert!(!rep.reject, "accepted a rejecting Reply");
        assert_eq!(n.role, Role::Initiator);
        assert_eq!(n.revision, rep.revision);
        assert!(n.revision <= self.cfg.revision.clamp(1, 2), "revision {} above ours", n.revision);
        assert_eq!(n.crc, self.cfg.crc || rep.crc);
        assert_eq!((n.send_markers, n.recv_markers), (rep.markers, self.cfg.markers));
        assert_eq!(n.peer_private_data, rep.private_data);
        assert!(!n.rfc7306 || self.cfg.rfc7306, "RFC 7306 not offered");
        assert_eq!(n.rfc7306, self.cfg.rfc7306 && rep.reserved_flags & FLAG_RFC7306_ACCEPT != 0);
        assert_eq!(n.expect_rtr, None);
        assert!(n.ord <= self.ord, "ORD {} above the {} asked for", n.ord, self.ord);
        assert!(n.ird >= self.ird, "IRD {} below the {} asked for", n.ird, self.ird);
        assert!(n.ird <= self.ird.max(self.cfg.max_rd_atomic), "IRD {} above our limit", n.ird);
        match rep.enhanced {
            Some(p) if self.cfg.revision >= 2 => {
                if p.ird != IRD_ORD_NO_NEGOTIATION {
                    assert!(n.ord <= p.ird, "ORD {} above the responder's IRD {}", n.ord, p.ird);
                }
                if p.ord != IRD_ORD_NO_NEGOTIATION {
                    assert!(n.ird >= p.ord, "IRD {} below the responder's ORD {}", n.ird, p.ord);
                }
                match (self.cfg.peer_to_peer, p.peer_to_peer) {
                    (Some(ours), true) => {
                        let t = n.send_rtr.expect("peer-to-peer accepted: an RTR to send");
                        assert!(ours.contains(t) && p.rtr.contains(t), "RTR {t:?} not offered by both");
                    }
                    _ => assert_eq!(n.send_rtr, None),
                }
            }
            _ => {
                assert_eq!((n.ird, n.ord, n.send_rtr), (self.ird, self.ord, None), "no IRD/ORD offered");
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        let r = self.eng.handle_timeout(now);
        if self.finished {
            assert_eq!(r, Ok(()), "a timeout after the outcome");
            return;
        }
        if now >= self.deadline {
            assert_eq!(r, Err(CmError::Timeout(FrameKind::Reply)));
            self.finished = true;
            self.result = Some(Err(CmError::Timeout(FrameKind::Reply)));
            assert_eq!(self.eng.poll_timeout(), None);
        } else {
            assert_eq!(r, Ok(()), "timed out before the deadline");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responder

struct Resp {
    eng: Responder,
    /// Every byte given to the engine.
    fed: Vec<u8>,
    deadline: Instant,
    request: Option<ConnectRequest>,
    finished: bool,
    /// The Reply sent, and what was settled if it accepted.
    answer: Option<(Vec<u8>, Option<Negotiated>)>,
}

impl Resp {
    fn start(s: &SideCfg, now: Instant) -> Resp {
        let cfg = mpa_config(s);
        let eng = Responder::new(cfg.clone(), now);
        let r =
            Resp { eng, fed: Vec::new(), deadline: now + cfg.timeout, request: None, finished: false, answer: None };
        assert_eq!(r.eng.poll_timeout(), Some(r.deadline));
        r
    }

    fn feed(&mut self, data: &[u8]) {
        let r = self.eng.handle_bytes(data).map(|o| o.cloned());
        if self.finished {
            assert_eq!(r, Err(CmError::Finished), "input after the outcome");
            return;
        }
        if let Some(req) = &self.request {
            if data.is_empty() {
                assert_eq!(r.as_ref().ok().and_then(|o| o.as_ref()), Some(req), "the request again");
            } else {
                assert_eq!(r, Err(CmError::UnexpectedData(data.len())), "bytes after the Request");
                self.finish();
            }
            return;
        }
        self.fed.extend_from_slice(data);
        match r {
            Ok(None) => assert!(self.fed.len() < MAX_FRAME, "waits for a Request after {} bytes", self.fed.len()),
            Ok(Some(req)) => {
                let (f, used) = FrameRepr::parse(&self.fed, FrameKind::Request).ok().flatten().expect("a Request");
                assert_eq!(used, self.fed.len(), "a request reported with bytes after it");
                assert_eq!((req.revision, req.crc, req.markers), (f.revision, f.crc, f.markers));
                assert_eq!((req.enhanced, &req.private_data[..]), (f.enhanced, f.private_data));
                assert_eq!(req.rfc7306, f.reserved_flags & FLAG_RFC7306_OFFER != 0);
                assert_eq!(self.eng.request(), Some(&req));
                assert_eq!(self.eng.poll_timeout(), None, "still a deadline with the request in");
                self.request = Some(req);
            }
            Err(CmError::UnexpectedData(n)) => {
                let (_, used) = FrameRepr::parse(&self.fed, FrameKind::Request).ok().flatten().expect("a Request");
                assert_eq!(n, self.fed.len() - used);
                self.finish();
            }
            Err(CmError::Malformed(_)) => self.finish(),
            Err(e) => panic!("unexpected responder error {e:?}"),
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        assert_eq!(self.eng.poll_timeout(), None, "a deadline after the outcome");
    }

    fn accept(&mut self, ird: u16, ord: u16, pd: &[u8]) -> Option<Vec<u8>> {
        let cfg = self.eng.config_mut().clone();
        let r = self.eng.accept(ird, ord, pd);
        let (Some(req), false) = (self.request.clone(), self.finished) else {
            assert!(r.is_err(), "accepted with no request or after the outcome");
            return None;
        };
        if pd.len() + 4 > MAX_PRIVATE_DATA {
            assert_eq!(r, Err(CmError::PrivateDataTooLong(pd.len())));
            return None;
        }
        let (reply, n) = r.expect("accepting a request");
        self.finish();
        assert!(reply.len() <= MAX_FRAME);
        let q = FrameRepr::parse_exact(&reply, FrameKind::Reply).expect("our Reply parses");
        assert!(!q.reject);
        assert_eq!(q.revision, req.revision, "a Reply of another revision");
        assert_eq!(q.private_data, pd);
        assert_eq!((q.crc, n.crc), (cfg.crc || req.crc, cfg.crc || req.crc));
        assert_eq!((q.markers, n.recv_markers, n.send_markers), (cfg.markers, cfg.markers, req.markers));
        assert_eq!(n.rfc7306, cfg.rfc7306 && req.rfc7306);
        assert_eq!(q.reserved_flags & FLAG_RFC7306_ACCEPT != 0, n.rfc7306);
        assert_eq!((n.role, n.revision, n.send_rtr), (Role::Responder, req.revision, None));
        assert_eq!(n.peer_private_data, req.private_data);
        assert_eq!(q.enhanced.is_some(), req.enhanced.is_some(), "enhanced Reply iff enhanced Request");
        match (req.enhanced, q.enhanced) {
            (Some(p), Some(e)) => {
                assert_eq!(e.peer_to_peer, p.peer_to_peer, "A not echoed");
                if p.peer_to_peer {
                    assert!(!e.rtr.is_empty(), "peer-to-peer Reply without an RTR type");
                    assert_eq!(n.expect_rtr, Some(e.rtr));
                } else {
                    assert_eq!(n.expect_rtr, None);
                    assert!(e.rtr.is_empty());
                }
                if p.ird == IRD_ORD_NO_NEGOTIATION {
                    assert_eq!((e.ord, n.ord), (IRD_ORD_NO_NEGOTIATION, ord));
                } else {
                    assert_eq!(e.ord, n.ord.min(IRD_ORD_MAX));
                    assert!(
                        n.ord <= p.ird && n.ord <= ord,
                        "ORD {} above {ord} or the initiator's IRD {}",
                        n.ord,
                        p.ird
                    );
                }
                if p.ord == IRD_ORD_NO_NEGOTIATION {
                    assert_eq!((e.ird, n.ird), (IRD_ORD_NO_NEGOTIATION, ird));
                } else {
                    assert_eq!(e.ird, n.ird.min(IRD_ORD_MAX));
                    assert!(n.ird >= ird && n.ird >= p.ord.min(cfg.max_rd_atomic), "IRD {} too low", n.ird);
                    assert!(n.ird <= ird.max(cfg.max_rd_atomic), "IRD {} above {ird} and our limit", n.ird);
                }
            }
            _ => {
                assert_eq!(n.expect_rtr, None);
                assert_eq!((n.ird, n.ord), (ird.max(cfg.max_rd_atomic), ord));
            }
        }
        self.answer = Some((reply.clone(), Some(n)));
        Some(reply)
    }

    fn reject(&mut self, pd: &[u8]) -> Option<Vec<u8>> {
        let r = self.eng.reject(pd);
        let (Some(req), false) = (self.request.clone(), self.finished) else {
            assert!(r.is_err(), "a second answer, or one to no request: {r:?}");
            return None;
        };
        if pd.len() + 4 > MAX_PRIVATE_DATA {
            assert_eq!(r, Err(CmError::PrivateDataTooLong(pd.len())));
            return None;
        }
        let reply = r.expect("rejecting a request");
        self.finish();
        assert!(reply.len() <= MAX_FRAME);
        let q = FrameRepr::parse_exact(&reply, FrameKind::Reply).expect("our reject parses");
        assert!(q.reject);
        assert_eq!((q.revision, q.private_data), (req.revision, pd));
        self.answer = Some((reply.clone(), None));
        Some(reply)
    }

    fn timeout(&mut self, now: Instant) {
        let r = self.eng.handle_timeout(now);
        if self.finished || self.request.is_some() {
            assert_eq!(r, Ok(()), "a timeout after the request or the outcome");
            return;
        }
        if now >= self.deadline {
            assert_eq!(r, Err(CmError::Timeout(FrameKind::Request)));
            self.finish();
        } else {
            assert_eq!(r, Ok(()), "timed out before the deadline");
        }
    }

    fn prefs(&mut self, f: u8) {
        let c = self.eng.config_mut();
        let s = SideCfg {
            revision: c.revision,
            flags: f,
            max_rd_atomic: c.max_rd_atomic,
            ird: 0,
            ord: 0,
            timeout_ms: 0,
            private_data: Vec::new(),
        };
        let timeout = c.timeout;
        *c = MpaConfig { timeout, ..mpa_config(&s) };
    }
}

// ---------------------------------------------------------------------------------------------
// Modes

fn run_initiator(s: &SideCfg, cmds: &[Cmd], t0: Instant) {
    let Some((mut i, _req)) = Init::start(s, t0) else { return };
    let mut now = t0;
    for c in cmds {
        match c {
            Cmd::Feed(b) => {
                i.feed(b);
            }
            Cmd::Timeout(ms) => {
                now += Duration::from_millis(u64::from(*ms));
                i.timeout(now);
            }
            Cmd::Accept { .. } | Cmd::Reject(_) | Cmd::Deliver(_) | Cmd::Prefs(_) => {}
        }
    }
}

fn run_responder(s: &SideCfg, cmds: &[Cmd], t0: Instant) {
    let mut r = Resp::start(s, t0);
    let mut now = t0;
    for c in cmds {
        match c {
            Cmd::Feed(b) => r.feed(b),
            Cmd::Timeout(ms) => {
                now += Duration::from_millis(u64::from(*ms));
                r.timeout(now);
            }
            Cmd::Accept { ird, ord, private_data } => {
                r.accept(*ird, *ord, private_data);
            }
            Cmd::Reject(pd) => {
                r.reject(pd);
            }
            Cmd::Prefs(f) => r.prefs(*f),
            Cmd::Deliver(_) => {}
        }
    }
}

/// Our initiator against our responder; `Deliver` moves bytes in flight, `Feed` slips a third
/// party's bytes into them.
fn run_loopback(si: &SideCfg, sr: &SideCfg, cmds: &[Cmd], t0: Instant) {
    let Some((mut i, req)) = Init::start(si, t0) else { return };
    let mut r = Resp::start(sr, t0);
    // Bytes in flight toward the responder, then (once it answered) toward the initiator.
    let mut to_resp = req;
    let mut to_init: Vec<u8> = Vec::new();
    let mut meddled = false;
    let mut now = t0;
    for c in cmds {
        match c {
            Cmd::Deliver(n) => {
                let (buf, toward_init) = if r.answer.is_some() { (&mut to_init, true) } else { (&mut to_resp, false) };
                let k = if *n == 0 { buf.len() } else { usize::from(*n).min(buf.len()) };
                let chunk: Vec<u8> = buf.drain(..k).collect();
                if toward_init {
                    if let Some(used) = i.feed(&chunk) {
                        // What follows the Reply belongs to the queue pair.
                        meddled |= used < chunk.len() || !buf.is_empty();
                    }
                } else {
                    r.feed(&chunk);
                }
            }
            Cmd::Feed(b) => {
                meddled |= !b.is_empty();
                if r.answer.is_some() { &mut to_init } else { &mut to_resp }.extend_from_slice(b);
            }
            Cmd::Timeout(ms) => {
                now += Duration::from_millis(u64::from(*ms));
                i.timeout(now);
                r.timeout(now);
            }
            Cmd::Accept { ird, ord, private_data } => {
                if let Some(reply) = r.accept(*ird, *ord, private_data) {
                    to_init.extend_from_slice(&reply);
                }
            }
            Cmd::Reject(pd) => {
                if let Some(reply) = r.reject(pd) {
                    to_init.extend_from_slice(&reply);
                }
            }
            Cmd::Prefs(f) => r.prefs(*f),
        }
    }
    if meddled {
        return;
    }
    // Both ends finished on the same exchange: they must agree.
    let (Some(Ok(InitiatorOutcome::Accepted(a))), Some((_, Some(b)))) = (&i.result, &r.answer) else {
        if let (Some(Ok(InitiatorOutcome::Rejected { private_data })), Some((_, None))) = (&i.result, &r.answer) {
            assert_eq!(private_data, &r.pd_of_last_answer());
        }
        return;
    };
    assert_eq!((a.crc, a.revision, a.rfc7306), (b.crc, b.revision, b.rfc7306), "ends disagree");
    assert_eq!((a.send_markers, a.recv_markers), (b.recv_markers, b.send_markers), "markers disagree");
    assert_eq!(a.peer_private_data, r.pd_of_last_answer());
    assert_eq!(b.peer_private_data, i.pd);
    match (a.send_rtr, b.expect_rtr) {
        (Some(t), Some(types)) => assert!(types.contains(t), "RTR {t:?} not among {types:?}"),
        (None, None) => {}
        (x, y) => panic!("RTR sent {x:?}, expected {y:?}"),
    }
    // Each side's reads fit the other's IRD, where both negotiated real values.
    let real = |v: u16| v < IRD_ORD_NO_NEGOTIATION;
    if a.revision >= 2 && [a.ird, a.ord, b.ird, b.ord, i.ird, i.ord].into_iter().all(real) {
        assert!(a.ord <= b.ird, "initiator ORD {} above responder IRD {}", a.ord, b.ird);
        assert!(b.ord <= a.ird, "responder ORD {} above initiator IRD {}", b.ord, a.ird);
    }
}

impl Resp {
    /// The private data of the Reply sent.
    fn pd_of_last_answer(&self) -> Vec<u8> {
        let (reply, _) = self.answer.as_ref().expect("answered");
        FrameRepr::parse_exact(reply, FrameKind::Reply).expect("our Reply parses").private_data.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let (mode, sides, cmds) = format::decode(data);
    let t0 = Instant::now();
    match mode {
        Mode::Initiator => run_initiator(&sides[0], &cmds, t0),
        Mode::Responder => run_responder(&sides[0], &cmds, t0),
        Mode::Loopback => run_loopback(&sides[0], &sides[1], &cmds, t0),
    }
});
