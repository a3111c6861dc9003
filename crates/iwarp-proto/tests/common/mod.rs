//! Helpers shared by the engine's integration tests.

use iwarp_wire::mpa::{Deframer, DeframerConfig, Event};
use iwarp_wire::SegmentHeader;

/// Every (DDP/RDMAP header, ULPDU payload) in `wire`, a stream framed as `cfg` says; panics on
/// anything the deframer refuses (the tests frame their streams themselves).
pub fn deframe(cfg: DeframerConfig, wire: &[u8]) -> Vec<(SegmentHeader, Vec<u8>)> {
    let mut d = Deframer::new(cfg);
    let (mut out, mut cur, mut rest) = (Vec::new(), None, wire);
    while !rest.is_empty() {
        let (n, ev) = d.feed(rest).unwrap();
        assert!(n > 0, "the deframer took no byte");
        match ev {
            Event::Header(h) => cur = Some((h.segment().unwrap(), Vec::new())),
            Event::Payload(p) => cur.as_mut().unwrap().1.extend_from_slice(p),
            Event::End(_) => out.push(cur.take().unwrap()),
            Event::None => {}
        }
        rest = &rest[n..];
    }
    out
}
