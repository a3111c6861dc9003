//! `iwarp::testing`: the helper applications use in their own tests.

use iwarp::testing::{connected_pair, connected_pair_with, wait_completions, PairConfig};
use iwarp::{Access, Progress, QpState, RecvWr, SendWr, WcOpcode, WcStatus};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn connected_pair_is_connected_both_ways_on_one_protection_domain() {
    let pair = connected_pair().unwrap();
    assert_eq!(pair.client.qp.state(), QpState::Rts);
    assert_eq!(pair.server.qp.state(), QpState::Rts);
    // One region of the shared domain serves as Write target for either end.
    let target = pair.pd.reg_mr(64, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
    let inbox = pair.pd.reg_mr(64, Access::LOCAL_WRITE).unwrap();
    pair.server.qp.post_recv(&[RecvWr::new(10, &[inbox.sge(0, 32)])]).unwrap();
    pair.client.qp.post_recv(&[RecvWr::new(20, &[inbox.sge(32, 32)])]).unwrap();
    pair.client
        .qp
        .post_send(&[SendWr::write_inline(1, b"from client", target.remote(0)), SendWr::send_inline(2, b"c")])
        .unwrap();
    let wc = wait_completions(&pair.server.recv_cq, 1, WAIT);
    assert_eq!((wc[0].wr_id, wc[0].status, wc[0].opcode), (10, WcStatus::Success, WcOpcode::Recv));
    assert_eq!(target.to_vec(0, 11).unwrap(), b"from client");
    pair.server
        .qp
        .post_send(&[SendWr::write_inline(3, b"from server", target.remote(16)), SendWr::send_inline(4, b"s")])
        .unwrap();
    let wc = wait_completions(&pair.client.recv_cq, 1, WAIT);
    assert_eq!((wc[0].wr_id, wc[0].status), (20, WcStatus::Success));
    assert_eq!(target.to_vec(16, 11).unwrap(), b"from server");
    assert_eq!(wait_completions(&pair.client.send_cq, 2, WAIT).len(), 2);
    assert_eq!(wait_completions(&pair.server.send_cq, 2, WAIT).len(), 2);
}

#[test]
fn connected_pair_with_takes_ipv6_and_polled_progress() {
    let mut cfg = PairConfig::default();
    cfg.listen_addr = "[::1]:0".parse().unwrap();
    cfg.progress = Progress::Poll;
    let pair = connected_pair_with(cfg).unwrap();
    assert!(pair.client.qp.peer_addr().unwrap().is_ipv6());
    let inbox = pair.pd.reg_mr(8, Access::LOCAL_WRITE).unwrap();
    pair.server.qp.post_recv(&[RecvWr::new(1, &[inbox.sge_all()])]).unwrap();
    pair.client.qp.post_send(&[SendWr::send_inline(2, b"polled")]).unwrap();
    // With polled progress, waiting on either side's queues drives both queue pairs' I/O.
    let sent = wait_completions(&pair.client.send_cq, 1, WAIT);
    assert_eq!(sent[0].status, WcStatus::Success);
    let got = wait_completions(&pair.server.recv_cq, 1, WAIT);
    assert_eq!((got[0].byte_len, inbox.to_vec(0, 6).unwrap()), (6, b"polled".to_vec()));
}

#[test]
fn wait_completions_returns_what_it_got_when_time_runs_out() {
    let pair = connected_pair().unwrap();
    assert!(wait_completions(&pair.client.send_cq, 1, Duration::from_millis(20)).is_empty());
}
