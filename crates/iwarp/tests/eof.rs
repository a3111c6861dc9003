//! The end of a peer's stream arriving together with its last bytes (data and FIN in one
//! segment, so one readiness event): the queue pair must see the end at once, not when
//! something else next wakes the connection. After a whole FPDU it is a clean close
//! (`Disconnected`), inside one an error; either way every receive still posted flushes.
mod common;

use common::*;
use iwarp::*;
use iwarp_wire::mpa::rr::{FrameKind, FrameRepr};
use iwarp_wire::mpa::EnhancedParams;
use iwarp_wire::{Msn, Opcode, SegmentHeader};
use std::time::{Duration, Instant};

/// How soon the end must be seen (the device's MPA timeout, whose stale timer would otherwise
/// wake the connection, is far longer).
const PROMPT: Duration = Duration::from_secs(2);

/// A stack queue pair accepted from a raw initiator, with `recvs` receives of 64 bytes posted.
fn victim(dev: &Device, recvs: u64) -> (End, RawPeer, MemoryRegion, Listener) {
    let pd = dev.alloc_pd();
    let listener = dev.listen(any_port(), 4).unwrap();
    let qp = End::new(dev, &pd, QpCap::default(), Progress::Thread);
    let rb = pd.reg_mr(64 * 8, all_access()).unwrap();
    for i in 0..recvs {
        post_recv(&qp.qp, 100 + i, &rb, 64 * i as usize, 64);
    }
    let req = FrameRepr::enhanced(FrameKind::Request, EnhancedParams::client_server(4, 4), b"raw");
    let mut raw = RawPeer::connect_frame(listener.local_addr(), &req);
    let r = listener.get_request(Some(WAIT)).unwrap();
    r.accept(&qp.qp, &ConnParams::default()).unwrap();
    raw.read_reply();
    (qp, raw, rb, listener)
}

/// Sends `bytes` and the FIN in one segment (corked until the FIN is queued behind them).
fn send_with_fin(raw: &mut RawPeer, bytes: &[u8]) {
    socket2::SockRef::from(&raw.sock).set_tcp_cork(true).unwrap();
    raw.send(bytes);
    raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
    socket2::SockRef::from(&raw.sock).set_tcp_cork(false).unwrap();
}

fn device() -> Device {
    Device::open(DeviceConfig { mpa_timeout: Duration::from_secs(60), ..DeviceConfig::default() }).unwrap()
}

#[test]
fn fin_in_the_same_segment_as_the_last_fpdu_is_a_prompt_clean_close() {
    let dev = device();
    for round in 0..5 {
        let (qp, mut raw, rb, _l) = victim(&dev, 3);
        let h = SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0);
        let (b, n) = h.to_bytes();
        let fpdu = raw.raw_fpdu(&b[..n], b"the last words");
        let t = Instant::now();
        send_with_fin(&mut raw, &fpdu);
        let ev = wait_event(&qp.qp, WAIT, |e| matches!(e, QpEvent::Disconnected | QpEvent::Error { .. }));
        let took = t.elapsed();
        assert!(matches!(ev, QpEvent::Disconnected), "round {round}: {ev:?}");
        assert!(took < PROMPT, "round {round}: the close was seen after {took:?}");
        let r = qp.recv_wcs(3);
        assert_eq!((r[0].wr_id, r[0].status, r[0].byte_len), (100, WcStatus::Success, 14), "round {round}");
        assert_eq!(rb.to_vec(0, 14).unwrap(), b"the last words");
        assert!(r[1..].iter().all(|c| c.status == WcStatus::WrFlush), "round {round}: {r:?}");
    }
}

#[test]
fn fin_in_the_middle_of_an_fpdu_is_a_prompt_error() {
    let dev = device();
    for round in 0..5 {
        let (qp, mut raw, _rb, _l) = victim(&dev, 3);
        let h = SegmentHeader::untagged(Opcode::Send, true, Msn(1), 0);
        let (b, n) = h.to_bytes();
        let fpdu = raw.raw_fpdu(&b[..n], &[7; 40]);
        let t = Instant::now();
        send_with_fin(&mut raw, &fpdu[..fpdu.len() / 2]);
        let ev = wait_event(&qp.qp, WAIT, |e| matches!(e, QpEvent::Disconnected | QpEvent::Error { .. }));
        let took = t.elapsed();
        assert!(matches!(ev, QpEvent::Error { .. }), "round {round}: {ev:?}");
        assert!(took < PROMPT, "round {round}: the end was seen after {took:?}");
        let r = qp.recv_wcs(3);
        assert!(r.iter().all(|c| c.status != WcStatus::Success), "round {round}: {r:?}");
    }
}
