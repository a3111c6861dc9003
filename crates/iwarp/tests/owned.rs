//! Memory the application already has: owned buffers registered and given back, zero-copy
//! access to a region's bytes, and remote addresses with a length and a byte encoding.

mod common;

use common::*;
use iwarp::*;

/// A peer's RDMA Write lands in a registered `Vec<u8>`, and deregistration gives the vector
/// back with those bytes, without a copy (same allocation).
#[test]
fn an_owned_vec_receives_a_write_and_is_given_back_with_it() {
    let p = Pair::new();
    let buf = vec![0u8; 4096];
    let heap = buf.as_ptr();
    let dst = p.pd.reg_owned(buf, all_access()).unwrap();
    assert_eq!((dst.len(), dst.as_ptr().cast_const()), (4096, heap), "registered in place");
    let src = p.mr(4096, all_access());
    write_and_verify(&p.client, &p.server, &src, &dst, 3000, 7);
    let expect = src.to_vec(0, 3000).unwrap();
    let clone = dst.region().clone();
    let v = dst.into_inner().map_err(|(_, e)| e).unwrap();
    assert_eq!((v.as_ptr(), v.len(), v.capacity()), (heap, 4096, 4096), "the same vector");
    assert_eq!(&v[..3000], &expect[..]);
    assert!(!clone.is_valid(), "a clone of the region is deregistered too");
    assert!(clone.read(0, &mut [0; 8]).is_err(), "and refuses access");
}

/// A registered `Box<[u8]>` is the source of a Send, and comes back unchanged.
#[test]
fn an_owned_box_is_sent_from_and_given_back() {
    let p = Pair::new();
    let data: Box<[u8]> = pattern(1000, 3).into_boxed_slice();
    let src = p.pd.reg_owned(data.clone(), Access::LOCAL_WRITE).unwrap();
    let dst = p.mr(1000, all_access());
    post_recv(&p.server.qp, 1, &dst, 0, 1000);
    p.client.qp.post_send(&[SendWr::send(1, &[src.sge_all()])]).unwrap();
    assert_ok(&p.client.send_wcs(1));
    assert_ok(&p.server.recv_wcs(1));
    assert_eq!(dst.to_vec(0, 1000).unwrap(), &data[..]);
    let back: Box<[u8]> = src.into_inner().map_err(|(_, e)| e).unwrap();
    assert_eq!(back, data);
}

/// Dropping an owned region deregisters it: its STag no longer works.
#[test]
fn dropping_an_owned_region_deregisters_it() {
    let dev = device();
    let pd = dev.alloc_pd();
    let mr = pd.reg_owned(vec![1u8; 64], Access::LOCAL_WRITE).unwrap();
    let clone = mr.region().clone();
    drop(mr);
    assert!(!clone.is_valid());
    assert!(clone.bytes(0, 1).is_err());
    // Empty buffers register too.
    let empty = pd.reg_owned(Vec::new(), Access::LOCAL_WRITE).unwrap();
    assert!(empty.is_empty());
    assert!(empty.into_inner().map_err(|(_, e)| e).unwrap().is_empty());
}

/// `BytesMut` with the `bytes` feature.
#[cfg(feature = "bytes")]
#[test]
fn an_owned_bytes_mut_round_trips() {
    let dev = device();
    let pd = dev.alloc_pd();
    let mut b = bytes::BytesMut::with_capacity(128);
    b.extend_from_slice(&[5u8; 100]);
    let mr = pd.reg_owned(b, Access::LOCAL_WRITE).unwrap();
    assert_eq!(mr.len(), 100);
    mr.bytes_mut(0, 3).unwrap().copy_from_slice(b"abc");
    let b = mr.into_inner().map_err(|(_, e)| e).unwrap();
    assert_eq!(&b[..4], b"abc\x05");
}

/// The guards give the bytes in place; what is written through one is what a Write sends,
/// and what a peer wrote is what one reads.
#[test]
fn guards_read_and_write_a_region_in_place() {
    let p = Pair::new();
    let src = p.mr(256, all_access());
    {
        let mut g = src.bytes_mut(0, 256).unwrap();
        assert_eq!(g.as_ptr(), src.as_ptr().cast_const(), "no copy");
        for (i, b) in g.iter_mut().enumerate() {
            *b = i as u8;
        }
    }
    let dst = p.mr(256, all_access());
    post_recv(&p.server.qp, 1, &dst, 0, 0);
    p.client.qp.post_send(&[SendWr::write(1, &[src.sge_all()], dst.remote(0)), SendWr::send(2, &[])]).unwrap();
    assert_ok(&p.client.send_wcs(2));
    assert_ok(&p.server.recv_wcs(1));
    let g = dst.bytes(0, 256).unwrap();
    assert!(g.iter().enumerate().all(|(i, &b)| b == i as u8));
    drop(g);
    let e = dst.bytes(200, 100).unwrap_err();
    assert_eq!((e.offset, e.len, e.region_len), (200, 100, 256));
    assert!(dst.bytes_mut(usize::MAX, 2).is_err());
    dst.deregister().unwrap();
    assert!(dst.bytes(0, 1).is_err() && dst.bytes_mut(0, 1).is_err(), "no guard after deregistration");
}

/// A region's remote address carries its length, round-trips its 16-byte encoding, and a
/// Write or Read longer than it is refused at post time, naming the request.
#[test]
fn remote_addresses_carry_their_length_and_bound_posts() {
    let p = Pair::new();
    let dst = p.mr(4096, all_access());
    let r = dst.remote(96);
    assert_eq!((r.stag, r.to, r.len), (dst.stag(), dst.addr() + 96, 4000));
    assert_eq!(RemoteAddr::from_bytes(&r.to_bytes()), r);
    assert_eq!(&r.to_bytes()[..4], &dst.stag().0.to_be_bytes());
    assert_eq!(r.offset_by(1000), Some(RemoteAddr::new(r.stag, r.to + 1000, 3000)));
    assert_eq!(r.offset_by(4001), None);
    assert_eq!(dst.remote(5000).len, 0);
    let src = p.mr(4096, all_access());
    let ok = SendWr::write(1, &[src.sge(0, 4000)], r);
    let long = SendWr::write(2, &[src.sge(0, 4001)], r);
    let e = p.client.qp.post_send(&[ok.clone(), long]).unwrap_err();
    assert_eq!((e.index, e.reason), (1, PostReason::RemoteTooShort));
    let e = p.client.qp.post_send(&[SendWr::read(3, src.sge(0, 4001), r)]).unwrap_err();
    assert_eq!((e.index, e.reason), (0, PostReason::RemoteTooShort));
    p.client.qp.post_send(&[ok]).unwrap();
    assert_ok(&p.client.send_wcs(1));
}

#[cfg(feature = "serde")]
#[test]
fn remote_addresses_serialize_as_three_numbers() {
    let r = RemoteAddr::new(Stag(0x0102_0304), 0x1000, 64);
    let j = serde_json::to_string(&r).unwrap();
    assert_eq!(j, r#"{"stag":16909060,"to":4096,"len":64}"#);
    assert_eq!(serde_json::from_str::<RemoteAddr>(&j).unwrap(), r);
}
