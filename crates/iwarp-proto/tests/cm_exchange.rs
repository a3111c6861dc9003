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
