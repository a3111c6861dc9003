//! Rekeying a region (`MemoryRegion::rekey`): a region a peer's Send with Invalidate
//! invalidated is used again under a new STag without registering memory again, as a
//! storage initiator does per command; a late access with the old STag is refused with the
//! RFC 5040/5041 Terminate and places nothing.
mod common;

use common::*;
use iwarp::*;
use iwarp_wire::terminate::{RemoteProtection, TaggedBuffer};

/// Invalidates `buf` by a Send with Invalidate from `from`, received at `to`.
fn remote_invalidate(from: &End, to: &End, buf: &MemoryRegion, scratch: &MemoryRegion, wr_id: u64) {
    post_recv(&to.qp, wr_id, scratch, 0, scratch.len());
    from.qp.post_send(&[SendWr::send_with_invalidate(wr_id, &[], buf.stag())]).unwrap();
    assert_ok(&from.send_wcs(1));
    let r = to.recv_wcs(1);
    assert_ok(&r);
    assert_eq!(r[0].invalidated_stag, Some(buf.stag()));
    assert!(!buf.is_valid());
}

#[test]
fn a_region_invalidated_by_the_peer_is_used_again_under_the_next_key_and_the_old_stag_terminates() {
    let p = Pair::new();
    let buf = p.mr(8192, all_access());
    let src = p.mr(8192, all_access());
    let scratch = p.mr(64, all_access());
    let first = buf.stag();
    write_and_verify(&p.client, &p.server, &src, &buf, 8192, 1);

    // Many commands' worth: invalidated by the peer, rekeyed, written and read under the new
    // STag each time; the index never changes, the key steps on.
    let mut stags = vec![first];
    for round in 0..300u32 {
        remote_invalidate(&p.client, &p.server, &buf, &scratch, 100 + u64::from(round));
        assert_eq!(
            buf.rekey(),
            Ok(Stag::from_parts(first.index(), first.key().wrapping_add((round as u8).wrapping_add(1))))
        );
        assert!(buf.is_valid());
        if round % 50 == 0 {
            write_and_verify(&p.client, &p.server, &src, &buf, 4096 + round as usize, round + 2);
            read_and_verify(&p.client, &src, &buf, 4096, round + 7);
        }
        stags.push(buf.stag());
    }
    // A rekey of a valid region is refused: whoever holds its STag may still be using it.
    assert_eq!(buf.rekey(), Err(RekeyError::Valid));

    // A late RDMA Write with the previous STag: the responder refuses it (DDP tagged buffer,
    // invalid STag) and nothing of it lands in the buffer.
    let before = buf.to_vec(0, 8192).unwrap();
    let stale = stags[stags.len() - 2];
    fill(&src, 0, 4096, 99);
    let late = RemoteAddr::new(stale, buf.addr(), 4096);
    p.client.qp.post_send(&[SendWr::write(1, &[src.sge(0, 4096)], late)]).unwrap();
    let cause = TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag);
    let e = wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, .. } if c == cause), "{e:?}");
    let e = wait_event(&p.client.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
    assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: true, .. } if c == cause), "{e:?}");
    assert_eq!(buf.to_vec(0, 8192).unwrap(), before, "the stale write placed nothing");
    assert!(buf.is_valid(), "the current STag is untouched");
}

#[test]
fn a_late_read_with_the_old_stag_is_a_remote_protection_error_and_deregistered_regions_are_never_rekeyed() {
    let p = Pair::new();
    let buf = p.mr(4096, all_access());
    let sink = p.mr(4096, all_access());
    let old = buf.stag();
    // Local invalidation (no peer involved), then the next key.
    assert!(buf.invalidate());
    assert!(!buf.invalidate(), "already invalid");
    let new = buf.rekey().unwrap();
    read_and_verify(&p.client, &sink, &buf, 4096, 3);
    p.client.qp.post_send(&[SendWr::read(9, sink.sge(0, 64), RemoteAddr::new(old, buf.addr(), 64))]).unwrap();
    let cause = TerminateCause::RemoteProtection(RemoteProtection::InvalidStag);
    let s = p.client.send_wcs(1);
    assert_eq!((s[0].wr_id, s[0].status, s[0].cause), (9, WcStatus::RemoteAccess, Some(cause)));
    assert_eq!(buf.stag(), new);

    buf.deregister().unwrap();
    assert_eq!(buf.rekey(), Err(RekeyError::Deregistered));
    assert!(!buf.invalidate());
    let owned = p.pd.reg_owned(vec![7u8; 512], all_access()).unwrap();
    assert!(owned.invalidate());
    owned.rekey().unwrap();
    assert_eq!(owned.into_inner().unwrap(), vec![7u8; 512]);
}
