//! The initiator against this crate's target over 127.0.0.1: attach, a concurrent random
//! read/write verifier over several I/O queues, a wrong NQN, and a target that goes away.

use iwarp::{Device, DeviceConfig};
use iwarp_nvmf::block::{BlockDevice, MemDevice};
use iwarp_nvmf::host::{Controller, HostError, HostOptions};
use iwarp_nvmf::target::{Target, TargetConfig, TargetHandle};
use iwarp_nvmf::wire::Status;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2026-12.io.example:host-tests";

fn serve(size: usize) -> (TargetHandle, Arc<MemDevice>, Device) {
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    let disk = Arc::new(MemDevice::new(size));
    let handle = Target::new(TargetConfig::new(NQN), disk.clone()).serve(&dev, listener).unwrap();
    (handle, disk, dev)
}

fn opts(io_queues: u16) -> HostOptions {
    HostOptions {
        io_queues,
        queue_size: 32,
        kato: Duration::from_secs(2),
        command_timeout: Duration::from_secs(10),
        ..HostOptions::default()
    }
}

/// Deterministic bytes for a (block, version) pair: every byte depends on both.
fn block_pattern(block: u64, version: u64, out: &mut [u8]) {
    let mut x = (block.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version.wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1;
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

#[test]
fn attach_to_the_target_and_read_back_what_was_written() {
    let (handle, disk, _dev) = serve(8 << 20);
    let ctrl = Controller::connect(handle.local_addr(), NQN, &opts(3)).unwrap();
    let info = ctrl.info().clone();
    assert_eq!(info.subnqn, NQN);
    assert_eq!(info.io_queues, 3);
    assert!(info.in_capsule > 0, "the target offers in-capsule data");
    assert_eq!(info.max_transfer, TargetConfig::new(NQN).max_transfer());
    let ns = ctrl.namespace();
    assert_eq!((ns.size(), ns.block_size(), ns.info().nsid), (8 << 20, 512, 1));

    let mut data = vec![0u8; 1 << 20];
    block_pattern(1, 1, &mut data);
    ns.write_at(&data, 3 * 512).unwrap(); // eight commands at 128 KiB each, over 3 queues
    let mut small = vec![0u8; 2048];
    block_pattern(2, 2, &mut small);
    ns.write_at(&small, 4 << 20).unwrap(); // in-capsule
    let mut back = vec![0u8; data.len()];
    ns.read_at(&mut back, 3 * 512).unwrap();
    assert!(back == data, "namespace read differs");
    let mut on_disk = vec![0u8; data.len()];
    disk.read_at(&mut on_disk, 3 * 512).unwrap();
    assert!(on_disk == data, "target's device differs");
    let mut back = vec![0u8; small.len()];
    ns.read_at(&mut back, 4 << 20).unwrap();
    assert_eq!(back, small);
    ns.write_zeroes(4 << 20, 1024).unwrap();
    ns.read_at(&mut back, 4 << 20).unwrap();
    assert!(back[..1024].iter().all(|&b| b == 0) && back[1024..] == small[1024..]);
    ns.flush().unwrap();
    ctrl.disconnect().unwrap();
    assert_eq!(ns.read_at(&mut back, 0).unwrap_err().kind(), io::ErrorKind::NotConnected);
}

#[test]
fn concurrent_random_reads_and_writes_over_several_queues_verify_every_byte() {
    const BS: u64 = 512;
    const BLOCKS: u64 = 8192; // 4 MiB
    let (handle, _disk, _dev) = serve((BLOCKS * BS) as usize);
    let ctrl = Controller::connect(handle.local_addr(), NQN, &opts(4)).unwrap();
    let ns = ctrl.namespace();
    // The model: the version last written to each block (0: never written, zeros). Writers
    // lock the blocks they cover (a stripe lock per 64 blocks) for the write and the model
    // update; readers lock them too, so that each read sees the model's versions.
    let stripes: Arc<Vec<Mutex<()>>> = Arc::new((0..BLOCKS / 64).map(|_| Mutex::new(())).collect());
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..BLOCKS).map(|_| AtomicU64::new(0)).collect());
    let bytes_checked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(6);
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let (ns, stripes, versions, checked) =
                (ns.clone(), Arc::clone(&stripes), Arc::clone(&versions), Arc::clone(&bytes_checked));
            std::thread::spawn(move || {
                let mut rng = 0x1234_5678_9abc_def0u64 ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut ops = 0u32;
                while ops < 400 && Instant::now() < deadline {
                    ops += 1;
                    // Up to 512 blocks (256 KiB: two commands at the target's MDTS), within one
                    // or a few stripes.
                    let len = 1 + next() % if next() % 4 == 0 { 512 } else { 16 };
                    let first = next() % (BLOCKS - len);
                    let (s0, s1) = (first / 64, (first + len - 1) / 64);
                    let _guards: Vec<_> = (s0..=s1).map(|s| stripes[s as usize].lock().unwrap()).collect();
                    let mut buf = vec![0u8; (len * BS) as usize];
                    if next() % 2 == 0 {
                        let version = (t << 32) | u64::from(ops);
                        for (i, chunk) in buf.chunks_mut(BS as usize).enumerate() {
                            block_pattern(first + i as u64, version, chunk);
                        }
                        ns.write_at(&buf, first * BS).unwrap();
                        for b in first..first + len {
                            versions[b as usize].store(version, Ordering::Relaxed);
                        }
                    } else {
                        ns.read_at(&mut buf, first * BS).unwrap();
                        let mut want = vec![0u8; BS as usize];
                        for (i, chunk) in buf.chunks(BS as usize).enumerate() {
                            let b = first + i as u64;
                            let v = versions[b as usize].load(Ordering::Relaxed);
                            if v == 0 {
                                want.fill(0);
                            } else {
                                block_pattern(b, v, &mut want);
                            }
                            assert!(chunk == &want[..], "block {b}: not version {v:#x}");
                        }
                        checked.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    }
                }
                ops
            })
        })
        .collect();
    let ops: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(ops >= 60, "only {ops} operations");
    // Finally every block, in one read, against the model.
    let mut all = vec![0u8; (BLOCKS * BS) as usize];
    ns.read_at(&mut all, 0).unwrap();
    let mut want = vec![0u8; BS as usize];
    for (b, chunk) in all.chunks(BS as usize).enumerate() {
        let v = versions[b].load(Ordering::Relaxed);
        if v == 0 {
            want.fill(0);
        } else {
            block_pattern(b as u64, v, &mut want);
        }
        assert!(chunk == &want[..], "block {b}: not version {v:#x} at the end");
    }
    assert!(bytes_checked.load(Ordering::Relaxed) > 0);
    ctrl.disconnect().unwrap();
}

#[test]
fn a_wrong_subsystem_nqn_is_refused_with_the_connect_status() {
    let (handle, _disk, _dev) = serve(1 << 20);
    let err = Controller::connect(handle.local_addr(), "nqn.2026-12.io.example:no-such", &opts(1)).unwrap_err();
    match &err {
        HostError::Connect { qid: 0, status } => {
            assert_eq!(
                (status.sct, status.sc),
                (Status::CONNECT_INVALID_PARAMETERS.sct, Status::CONNECT_INVALID_PARAMETERS.sc)
            )
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("Connect Invalid Parameters"), "{err}");
}

#[test]
fn io_fails_instead_of_hanging_when_the_target_goes_away() {
    let (handle, _disk, _dev) = serve(1 << 20);
    let ctrl = Controller::connect(handle.local_addr(), NQN, &opts(2)).unwrap();
    let ns = ctrl.namespace();
    ns.write_at(&[5u8; 4096], 0).unwrap();
    handle.stop(); // every queue disconnected
    let start = Instant::now();
    // Every queue fails: a few reads hit each of them.
    for _ in 0..4 {
        let err = ns.read_at(&mut [0u8; 4096], 0).unwrap_err();
        assert!(
            matches!(err.kind(), io::ErrorKind::NotConnected | io::ErrorKind::TimedOut),
            "unexpected error kind: {err}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let t0 = Instant::now();
    drop(ns);
    drop(ctrl);
    assert!(t0.elapsed() < Duration::from_secs(6), "shutdown against a gone target took {:?}", t0.elapsed());
}

#[test]
fn keep_alive_holds_the_controller_past_its_timeout() {
    let (handle, _disk, _dev) = serve(1 << 20);
    let o = HostOptions { kato: Duration::from_secs(1), ..opts(1) };
    let ctrl = Controller::connect(handle.local_addr(), NQN, &o).unwrap();
    let ns = ctrl.namespace();
    // Idle for well over the keep-alive timeout: only Keep Alive keeps the controller.
    std::thread::sleep(Duration::from_millis(2500));
    ns.write_at(&[3u8; 512], 512).unwrap();
    let mut back = [0u8; 512];
    ns.read_at(&mut back, 512).unwrap();
    assert_eq!(back, [3u8; 512]);
    ctrl.disconnect().unwrap();
}

/// `HostOptions::crc = false` asks for no CRC: a target that requires CRC refuses the admin
/// queue's connection, one that declines it accepts, and one asked for CRC accepts too.
#[test]
fn the_host_asks_for_crc_only_when_told_to() {
    use iwarp_nvmf::target::CrcPolicy;
    let serve_with = |crc: CrcPolicy| {
        let dev = Device::open(DeviceConfig::default()).unwrap();
        let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        let mut config = TargetConfig::new(NQN);
        config.crc = crc;
        let handle = Target::new(config, Arc::new(MemDevice::new(1 << 20))).serve(&dev, listener).unwrap();
        (handle, dev)
    };
    let no_crc = HostOptions { crc: false, io_queues: 1, ..opts(1) };
    let (strict, _d1) = serve_with(CrcPolicy::Require);
    assert!(Controller::connect(strict.local_addr(), NQN, &no_crc).is_err(), "a CRC-requiring target refused us");
    let ctrl = Controller::connect(strict.local_addr(), NQN, &opts(1)).expect("asking for CRC satisfies it");
    ctrl.disconnect().expect("clean shutdown");
    let (lax, _d2) = serve_with(CrcPolicy::Follow);
    let ctrl = Controller::connect(lax.local_addr(), NQN, &no_crc).expect("no CRC either way");
    let mut buf = vec![0u8; 4096];
    ctrl.namespace().read_at(&mut buf, 0).unwrap();
    ctrl.disconnect().expect("clean shutdown");
}

/// One queue thread serves every queue: two controllers of four I/O queues each move data
/// at once; one disconnects (its queues torn down on the shared thread) and the other keeps
/// working.
#[test]
fn one_thread_serves_two_controllers_and_one_leaving_does_not_disturb_the_other() {
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 64).unwrap();
    let disk = Arc::new(MemDevice::new(4 << 20));
    let config = TargetConfig { threads: 1, ..TargetConfig::new(NQN) };
    let target = Target::new(config, disk.clone());
    let handle = target.serve(&dev, listener).unwrap();
    let a = Controller::connect(handle.local_addr(), NQN, &opts(4)).unwrap();
    let b = Controller::connect(handle.local_addr(), NQN, &opts(4)).unwrap();
    assert_eq!(target.controllers(), 2);
    let (na, nb) = (a.namespace(), b.namespace());
    let writers: Vec<_> = [(na.clone(), 0u64), (nb.clone(), 2 << 20)]
        .into_iter()
        .map(|(ns, base)| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                for i in 0..32u64 {
                    block_pattern(base + i, 1, &mut buf);
                    ns.write_at(&buf, base + i * (64 << 10) % (2 << 20)).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut back = vec![0u8; 64 << 10];
    let mut want = vec![0u8; 64 << 10];
    nb.read_at(&mut back, 0).unwrap();
    block_pattern(0, 1, &mut want);
    assert_eq!(back, want, "b reads what a wrote");

    a.disconnect().unwrap();
    drop((a, na));
    let deadline = Instant::now() + Duration::from_secs(5);
    while target.controllers() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(target.controllers(), 1);
    for i in 0..16u64 {
        nb.read_at(&mut back, (2 << 20) + i * (64 << 10)).unwrap();
        block_pattern((2 << 20) + i, 1, &mut want);
        assert_eq!(back, want, "extent {i}");
    }
}
