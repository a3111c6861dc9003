//! The initiator against a small scripted target (tests/mock): the attach sequence, data
//! through keyed SGLs and in-capsule, concurrency, and misbehaving targets.

mod mock;

use iwarp_nvmf::block::BlockDevice;
use iwarp_nvmf::host::{Controller, HostError, HostOptions};
use mock::MockTarget;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2026-12.io.example:mock";

fn opts() -> HostOptions {
    HostOptions {
        io_queues: 2,
        queue_size: 16,
        kato: Duration::from_millis(400),
        command_timeout: Duration::from_secs(5),
        ..HostOptions::default()
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn attach_reads_identify_and_moves_data_both_ways() {
    let t = MockTarget::start(NQN, 4 << 20);
    let ctrl = Controller::connect(t.addr, NQN, &opts()).unwrap();
    let info = ctrl.info().clone();
    assert_eq!(info.cntlid, 1);
    assert_eq!(info.subnqn, NQN);
    assert_eq!(info.serial, "MOCK0001");
    assert_eq!(info.max_transfer, 128 << 10);
    assert_eq!(info.in_capsule, mock::ICD);
    assert_eq!(info.io_queues, 2);
    assert_eq!(info.queue_size, 16);
    let ns = ctrl.namespace();
    assert_eq!(ns.size(), 4 << 20);
    assert_eq!(ns.block_size(), 512);
    assert_eq!(ns.info().uuid, Some(mock::MOCK_UUID));

    // A write larger than MDTS (split, keyed), a small one (in-capsule), read back.
    let big = pattern(1, 300 << 10);
    ns.write_at(&big, 4096).unwrap();
    let small = pattern(2, 1024);
    ns.write_at(&small, 1 << 20).unwrap();
    assert!(t.script.in_capsule_writes.load(Ordering::Relaxed) >= 1);
    let mut back = vec![0u8; big.len()];
    ns.read_at(&mut back, 4096).unwrap();
    assert!(back == big, "read back differs");
    assert_eq!(&t.disk.lock().unwrap()[4096..4096 + big.len()], &big[..]);
    let mut back = vec![0u8; small.len()];
    ns.read_at(&mut back, 1 << 20).unwrap();
    assert_eq!(back, small);

    // Unaligned: read-modify-write of partial blocks.
    let odd = pattern(3, 1000);
    ns.write_at(&odd, 100_003).unwrap();
    let mut back = vec![0u8; 1000];
    ns.read_at(&mut back, 100_003).unwrap();
    assert_eq!(back, odd);
    assert_eq!(&t.disk.lock().unwrap()[100_003..101_003], &odd[..]);

    // Out of range: refused locally.
    assert_eq!(ns.read_at(&mut [0u8; 512], 4 << 20).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    ns.flush().unwrap();

    // Keep Alive goes out every kato/2.
    std::thread::sleep(Duration::from_millis(700));
    assert!(t.script.keep_alives.load(Ordering::Relaxed) >= 2);

    ctrl.disconnect().unwrap();
    assert!(t.script.shutdown.load(Ordering::Acquire), "CC.SHN not written");
    assert_eq!(ns.read_at(&mut [0u8; 512], 0).unwrap_err().kind(), io::ErrorKind::NotConnected);
    assert!(t.script.violations.lock().unwrap().is_empty(), "{:?}", t.script.violations.lock().unwrap());
}

#[test]
fn wrong_nqn_is_rejected_with_the_connect_status() {
    let t = MockTarget::start(NQN, 1 << 20);
    let err = Controller::connect(t.addr, "nqn.2026-12.io.example:nope", &opts()).unwrap_err();
    match &err {
        HostError::Connect { qid: 0, status } => {
            assert_eq!((status.sct, status.sc), (1, 0x82));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("Connect Invalid Parameters"), "{err}");
}

#[test]
fn invalidation_of_another_stag_fails_the_command() {
    let t = MockTarget::start(NQN, 1 << 20);
    // One I/O queue: the two halves of a read above MDTS go to the same connection, and the
    // target answers each with an invalidation of the other's STag.
    let ctrl = Controller::connect(t.addr, NQN, &HostOptions { io_queues: 1, ..opts() }).unwrap();
    let ns = ctrl.namespace();
    t.script.bogus_invalidate.store(true, Ordering::Release);
    let err = ns.read_at(&mut vec![0u8; 256 << 10], 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("invalidated STag"), "{err}");
    t.script.bogus_invalidate.store(false, Ordering::Release);
    ns.read_at(&mut [0u8; 4096], 0).unwrap();
}

#[test]
fn a_command_that_gets_no_answer_times_out() {
    let t = MockTarget::start(NQN, 1 << 20);
    let o = HostOptions { command_timeout: Duration::from_millis(500), ..opts() };
    let ctrl = Controller::connect(t.addr, NQN, &o).unwrap();
    let ns = ctrl.namespace();
    t.script.stall_io.store(true, Ordering::Release);
    let start = Instant::now();
    let err = ns.read_at(&mut [0u8; 4096], 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn target_gone_fails_io_instead_of_hanging() {
    let t = MockTarget::start(NQN, 1 << 20);
    let o = HostOptions { command_timeout: Duration::from_secs(20), ..opts() };
    let ctrl = Controller::connect(t.addr, NQN, &o).unwrap();
    let ns = ctrl.namespace();
    ns.write_at(&[7u8; 4096], 0).unwrap();
    drop(t); // its connections close
    let start = Instant::now();
    let mut failed = false;
    while start.elapsed() < Duration::from_secs(10) {
        if ns.read_at(&mut [0u8; 4096], 0).is_err() {
            failed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(failed, "I/O kept succeeding after the target went away");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let err = ns.read_at(&mut [0u8; 4096], 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    let t0 = Instant::now();
    drop(ns);
    drop(ctrl); // the last handle: shutdown against a dead target must not hang
    assert!(t0.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t0.elapsed());
}

/// Data buffers are registered once and rekeyed per command: successive reads name a new
/// STag each, all of one registered buffer (one index); a target that writes to an earlier
/// command's STag is refused by the host's stack (Terminate, invalid STag) and the command
/// fails with the connection.
#[test]
fn each_read_names_a_fresh_stag_of_one_reused_buffer_and_a_late_write_to_an_old_stag_is_refused() {
    let t = MockTarget::start(NQN, 4 << 20);
    let ctrl = Controller::connect(t.addr, NQN, &HostOptions { io_queues: 1, ..opts() }).unwrap();
    let ns = ctrl.namespace();
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..20u64 {
        ns.read_at(&mut buf, i * (64 << 10)).unwrap();
    }
    let sgls = t.script.read_sgls.lock().unwrap().clone();
    assert_eq!(sgls.len(), 20);
    let stags: std::collections::HashSet<u32> = sgls.iter().map(|r| r.stag.0).collect();
    assert_eq!(stags.len(), 20, "a fresh STag per command");
    let indexes: std::collections::HashSet<u32> = sgls.iter().map(|r| r.stag.index()).collect();
    assert_eq!(indexes.len(), 1, "one registered buffer, rekeyed");
    for w in sgls.windows(2) {
        assert_eq!(w[1].stag.key(), w[0].stag.key().wrapping_add(1));
    }

    t.script.late_write.store(true, Ordering::Release);
    let e = ns.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
    assert!(e.to_string().contains("invalid STag"), "{e}");
    assert!(t.script.violations.lock().unwrap().is_empty(), "{:?}", t.script.violations.lock().unwrap());
}
