//! MPA connection setup from the initiator's side with the Reply arriving in pieces: the exact
//! count of bytes the engine takes from each piece.

use iwarp_proto::cm::{Initiator, InitiatorOutcome, MpaConfig, Responder};
use std::time::Instant;

#[test]
fn a_reply_in_pieces_is_counted_per_piece_and_leaves_the_first_fpdu() {
    let now = Instant::now();
    let (mut init, request) = Initiator::new(MpaConfig::default(), 4, 4, b"hello", now).unwrap();
    let mut resp = Responder::new(MpaConfig::default(), now);
    assert!(resp.handle_bytes(&request).unwrap().is_some());
    let (reply, _) = resp.accept(4, 4, b"world!").unwrap();
    // The Reply, then the first bytes of the responder's first FPDU.
    let mut stream = reply.clone();
    stream.extend_from_slice(&[0xAA; 10]);
    let cut = 7;
    assert_eq!(init.handle_bytes(&stream[..cut]).unwrap(), None);
    let (outcome, used) = init.handle_bytes(&stream[cut..]).unwrap().unwrap();
    assert_eq!(used, reply.len() - cut);
    let InitiatorOutcome::Accepted(n) = outcome else { panic!("{outcome:?}") };
    assert_eq!(n.peer_private_data, b"world!");
    assert_eq!((n.ird, n.ord), (4, 4));
}

use iwarp_proto::cm::{CmError, Negotiated};
use iwarp_wire::mpa::FrameKind;
use std::time::Duration;

/// A whole exchange: (initiator's result, responder's result).
fn exchange(
    ic: MpaConfig,
    rc: MpaConfig,
    i_rd: (u16, u16),
    r_rd: (u16, u16),
) -> Result<(Negotiated, Negotiated), CmError> {
    let now = Instant::now();
    let (mut init, request) = Initiator::new(ic, i_rd.0, i_rd.1, &[], now).unwrap();
    let mut resp = Responder::new(rc, now);
    resp.handle_bytes(&request).unwrap().unwrap();
    let (reply, r) = resp.accept(r_rd.0, r_rd.1, &[]).unwrap();
    match init.handle_bytes(&reply)? {
        Some((InitiatorOutcome::Accepted(i), _)) => Ok((i, r)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn crc_is_used_when_only_the_responder_asks() {
    let (i, r) =
        exchange(MpaConfig { crc: false, ..Default::default() }, MpaConfig::default(), (4, 4), (4, 4)).unwrap();
    assert!(i.crc && r.crc);
}

/// The initiator's result for a Reply carrying `ird`/`ord`, as any RFC 6581 peer may send it.
fn initiator_with_reply(ic: MpaConfig, i_rd: (u16, u16), r_rd: (u16, u16)) -> Result<Negotiated, CmError> {
    use iwarp_wire::mpa::{EnhancedParams, FrameRepr};
    let (mut init, _) = Initiator::new(ic, i_rd.0, i_rd.1, &[], Instant::now()).unwrap();
    let reply = FrameRepr::enhanced(FrameKind::Reply, EnhancedParams::client_server(r_rd.0, r_rd.1), &[]);
    match init.handle_bytes(&reply.to_vec().unwrap())? {
        Some((InitiatorOutcome::Accepted(i), _)) => Ok(i),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ird_and_ord_meet_rfc6581_rules_at_their_edges() {
    // Initiator ORD 4 against a responder that can take 2 Reads: 2 outstanding.
    let rc = MpaConfig { max_rd_atomic: 2, ..Default::default() };
    let (i, r) = exchange(MpaConfig::default(), rc, (4, 4), (2, 2)).unwrap();
    assert_eq!((i.ord, r.ird), (2, 2));
    // The responder's ORD is bounded by the initiator's IRD.
    let (_, r) = exchange(MpaConfig::default(), MpaConfig::default(), (4, 4), (4, 8)).unwrap();
    assert_eq!(r.ord, 4);
    // A peer's ORD above our IRD raises it, up to our maximum and no further (MPA code 6).
    let ic = MpaConfig { max_rd_atomic: 16, ..Default::default() };
    assert_eq!(initiator_with_reply(ic.clone(), (4, 4), (4, 8)).unwrap().ird, 8);
    assert_eq!(initiator_with_reply(ic.clone(), (4, 4), (4, 16)).unwrap().ird, 16);
    assert!(matches!(
        initiator_with_reply(ic.clone(), (4, 4), (4, 17)),
        Err(CmError::InsufficientIrd { peer_ord: 17, max: 16, .. })
    ));
    // A peer's ORD equal to our IRD, even one above our maximum, changes nothing.
    assert_eq!(initiator_with_reply(ic, (200, 4), (4, 200)).unwrap().ird, 200);
}

#[test]
fn the_responder_sees_the_request_and_can_change_its_answer() {
    let now = Instant::now();
    let (mut init, request) = Initiator::new(MpaConfig::default(), 5, 3, b"pd", now).unwrap();
    let mut resp = Responder::new(MpaConfig::default(), now);
    assert_eq!(resp.poll_timeout(), Some(now + Duration::from_secs(10)));
    assert!(resp.request().is_none());
    resp.handle_bytes(&request).unwrap().unwrap();
    assert_eq!(resp.poll_timeout(), None);
    let req = resp.request().unwrap();
    assert_eq!((req.ird(), req.ord()), (Some(5), Some(3)));
    assert_eq!(req.private_data, b"pd");
    assert!(req.rfc7306);
    // Turn RFC 7306 off after seeing the request.
    resp.config_mut().rfc7306 = false;
    let (reply, r) = resp.accept(8, 8, &[]).unwrap();
    assert!(!r.rfc7306);
    let Some((InitiatorOutcome::Accepted(i), _)) = init.handle_bytes(&reply).unwrap() else { panic!() };
    assert!(!i.rfc7306);
}

#[test]
fn the_initiator_waits_for_the_reply_until_its_deadline_only() {
    let now = Instant::now();
    let cfg = MpaConfig { timeout: Duration::from_millis(500), ..Default::default() };
    let deadline = now + Duration::from_millis(500);
    let (mut init, request) = Initiator::new(cfg.clone(), 4, 4, &[], now).unwrap();
    assert_eq!(init.poll_timeout(), Some(deadline));
    assert_eq!(init.handle_timeout(deadline - Duration::from_millis(1)), Ok(()));
    assert_eq!(init.handle_timeout(deadline), Err(CmError::Timeout(FrameKind::Reply)));
    assert_eq!(init.poll_timeout(), None);
    // Once the Reply is in, the deadline no longer applies.
    let (mut init, _) = Initiator::new(cfg.clone(), 4, 4, &[], now).unwrap();
    let mut resp = Responder::new(cfg, now);
    resp.handle_bytes(&request).unwrap().unwrap();
    let (reply, _) = resp.accept(4, 4, &[]).unwrap();
    init.handle_bytes(&reply).unwrap().unwrap();
    assert_eq!(init.poll_timeout(), None);
    assert_eq!(init.handle_timeout(deadline + Duration::from_secs(1)), Ok(()));
}
