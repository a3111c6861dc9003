//! Deregistration of caller-owned memory: once `MemoryRegion::deregister` returns (or the
//! last handle of an external region is dropped), the stack never reads or writes the bytes
//! again, whatever a peer or a posted work request still does with the region.
mod common;

use common::*;
use iwarp::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Anonymous memory from `mmap`, unmapped when dropped: what a C program registers and then
/// frees.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain block of memory; the tests touch its bytes only while the stack cannot
// (before registration or after deregistration returned).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize) -> Mapping {
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Mapping { ptr: p.cast(), len }
    }

    /// Registers the mapping with `pd`.
    fn register(&self, pd: &ProtectionDomain, access: Access) -> MemoryRegion {
        // SAFETY: the mapping lives until `self` is dropped, which each test does only after
        // deregistration returned; the test touches the bytes only before registering and after
        // deregistering (`fill`, `bytes`).
        unsafe { pd.reg_mr_external(self.ptr, self.len, access) }.expect("reg_mr_external")
    }

    /// Sets every byte to `b`. Only while the stack cannot touch them.
    fn fill(&self, b: u8) {
        // SAFETY: the mapping is live and `len` long; the caller guarantees no one else
        // accesses it now.
        unsafe { std::ptr::write_bytes(self.ptr, b, self.len) };
    }

    /// A copy of the bytes. Only while the stack cannot touch them.
    fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        // SAFETY: as in `fill`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), self.len) };
        v
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `new` with this length; the region registered on it is gone.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The offset of the first byte of `got` that is not `b`, if any.
fn first_not(got: &[u8], b: u8) -> Option<usize> {
    got.iter().position(|&x| x != b)
}

const CANARY: u8 = 0x5A;
const TARGET_LEN: usize = 1 << 20;

/// A peer writes into caller-owned memory in a loop (large Writes placed directly by `readv`,
/// small ones copied) while the owner deregisters it: once deregistration returns, a canary
/// written over the memory stays intact, though the peer keeps writing until its queue pair
/// fails; then the memory is unmapped and nothing notices.
fn writes_stop_at_deregistration(explicit: bool) {
    let p = Pair::new();
    let target = Mapping::new(TARGET_LEN);
    target.fill(0);
    let dst = target.register(&p.pd, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
    let remote = dst.remote(0);
    let src = p.mr(TARGET_LEN, Access::LOCAL_WRITE);
    src.write(0, &vec![0xA5; TARGET_LEN]).expect("fill source");

    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, src, done, stop) = (p.client.clone(), src.clone(), Arc::clone(&done), Arc::clone(&stop));
        std::thread::spawn(move || {
            let deadline = Instant::now() + WAIT;
            let (mut posted, mut completed, mut failed) = (0u64, 0u64, 0u64);
            let mut wcs = [WorkCompletion::default(); 64];
            let mut rng = fastrand::Rng::with_seed(5);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                while posted - completed < 32 {
                    // Mostly large Writes (direct placement), some small (copied).
                    let len = if posted % 4 == 3 { 1000 } else { 192 << 10 };
                    let off = rng.usize(..=TARGET_LEN - len);
                    let wr = SendWr::write(
                        posted,
                        &[src.sge(0, len)],
                        RemoteAddr::unbounded(remote.stag, remote.to + off as u64),
                    );
                    if client.qp.post_send(&[wr]).is_err() {
                        return (completed, failed);
                    }
                    posted += 1;
                }
                let n = client.scq.wait(&mut wcs, Some(Duration::from_millis(20)));
                for c in &wcs[..n] {
                    completed += 1;
                    if c.status == WcStatus::Success {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed += 1;
                    }
                }
            }
            (completed, failed)
        })
    };

    // Deregister in the middle of the stream.
    let deadline = Instant::now() + WAIT;
    while done.load(Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "the Writes do not get through");
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    if explicit {
        dst.deregister().expect("deregister");
        drop(dst);
    } else {
        drop(dst);
    }
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "deregistration took {took:?}");

    // From here the memory is the test's: the stack must not write it any more.
    target.fill(CANARY);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(i) = first_not(&target.bytes(), CANARY) {
            panic!("byte {i} written after deregistration");
        }
    }
    // The peer's writes into the deregistered STag ended the connection.
    let ev = wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. } | QpEvent::Disconnected));
    if let QpEvent::Error { cause, remote, .. } = ev {
        assert!(!remote, "the owner ends the stream: {cause:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let (completed, failed) = writer.join().expect("writer");
    assert!(completed >= 40, "{completed} completions");
    // Unmapped: any later access by the stack would fault (Rust copies) or fail (EFAULT).
    drop(target);
    std::thread::sleep(Duration::from_millis(50));
    let _ = failed;
}

#[test]
fn after_deregister_returns_a_peer_writing_in_a_loop_never_changes_the_memory() {
    writes_stop_at_deregistration(true);
}

#[test]
fn dropping_the_last_handle_of_external_memory_waits_the_same_way() {
    writes_stop_at_deregistration(false);
}

/// A large Send gathers zero-copy from caller-owned memory while the peer does not read, so
/// that most of it waits to be transmitted; the memory is deregistered and overwritten with a
/// canary. The receiver then reads: none of the canary reaches it, the sender's queue pair
/// fails with a local catastrophic error and its Send completes with an error.
#[test]
fn a_send_gather_region_deregistered_while_transmitting_is_never_read_again() {
    const LEN: usize = 32 << 20;
    let p = Pair::with(PairConfig { server_progress: Some(Progress::Poll), ..PairConfig::default() });
    let source = Mapping::new(LEN);
    let data = pattern(LEN, 77);
    // SAFETY: not registered yet: the test's own memory.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), source.ptr, LEN) };
    let src = source.register(&p.pd, Access::LOCAL_WRITE);
    let dst = p.mr(LEN, Access::LOCAL_WRITE);
    post_recv(&p.server.qp, 1, &dst, 0, LEN);
    // Two elements, so that the gather crosses an element boundary too.
    let half = LEN / 2;
    p.client.qp.post_send(&[SendWr::send(2, &[src.sge(0, half), src.sge(half, LEN - half)])]).expect("post send");
    // The receiver is not polled: the socket buffers fill and the transmit stalls.
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    src.deregister().expect("deregister");
    assert!(t.elapsed() < Duration::from_secs(2), "deregistration took {:?}", t.elapsed());
    drop(src);
    source.fill(CANARY);

    // Now the receiver reads what comes.
    let deadline = Instant::now() + WAIT;
    let mut wcs = [WorkCompletion::default(); 4];
    let recv = loop {
        assert!(Instant::now() < deadline, "the receive never completes");
        let n = p.server.rcq.poll(&mut wcs);
        if n > 0 {
            break wcs[0];
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_ne!(recv.status, WcStatus::Success, "the Send cannot have arrived whole: {recv:?}");
    let got = dst.to_vec(0, LEN).expect("read");
    let leaked = got.iter().zip(&data).position(|(&g, &d)| g == CANARY && d != CANARY);
    assert_eq!(leaked, None, "bytes written after deregistration reached the peer");
    // Before the canary: the data, then nothing (the receive buffer started zeroed).
    let placed = got.iter().zip(&data).take_while(|(g, d)| g == d).count();
    assert!(got[placed..].iter().zip(&data[placed..]).all(|(&g, &d)| g == 0 || g == d), "stray bytes");

    let s = p.client.send_wcs(1);
    assert_eq!(s[0].wr_id, 2);
    assert_ne!(s[0].status, WcStatus::Success, "{:?}", s[0]);
    match wait_event(&p.client.qp, WAIT, |e| matches!(e, QpEvent::Error { .. })) {
        QpEvent::Error { cause, remote, .. } => {
            assert_eq!((cause, remote), (Some(TerminateCause::RdmapCatastrophic), false));
        }
        _ => unreachable!(),
    }
    assert_eq!(first_not(&source.bytes(), CANARY), None, "the stack wrote the source");
}

/// A receive posted on caller-owned memory that is then deregistered: the Send that arrives
/// for it is not placed there; the receive completes with a local protection error and the
/// queue pair fails.
#[test]
fn a_receive_whose_memory_was_deregistered_fails_and_places_nothing() {
    let p = Pair::new();
    let sink = Mapping::new(64 << 10);
    sink.fill(0);
    let dst = sink.register(&p.pd, Access::LOCAL_WRITE);
    post_recv(&p.server.qp, 1, &dst, 0, 64 << 10);
    dst.deregister().expect("deregister");
    drop(dst);
    sink.fill(CANARY);
    let src = p.mr(64 << 10, Access::LOCAL_WRITE);
    fill(&src, 0, 64 << 10, 3);
    p.client
        .qp
        .post_send(&[SendWr::send(2, &[src.sge(0, 32 << 10)]), SendWr::send(3, &[src.sge(0, 100)])])
        .expect("post");
    let r = p.server.recv_wcs(1);
    assert_eq!((r[0].wr_id, r[0].status), (1, WcStatus::LocalProtection), "{r:?}");
    match wait_event(&p.server.qp, WAIT, |e| matches!(e, QpEvent::Error { .. })) {
        QpEvent::Error { cause, remote, .. } => {
            assert_eq!((cause, remote), (Some(TerminateCause::RdmapCatastrophic), false));
        }
        _ => unreachable!(),
    }
    assert_eq!(first_not(&sink.bytes(), CANARY), None, "the stack wrote the deregistered receive buffer");
}

/// A raw peer sends the header and the first part of a Write's segment into caller-owned
/// memory and pauses, so that the segment is validated and its placement under way; the owner
/// deregisters the memory and overwrites it. The rest of the segment, sent afterwards, is not
/// placed: the stack ends the stream with an invalid-STag Terminate instead. Once with a
/// payload read straight into the memory (`readv`), once with one copied from scratch reads.
#[test]
fn a_write_segment_validated_before_deregistration_is_not_placed_after_it() {
    use iwarp_wire::mpa::EnhancedParams;
    use iwarp_wire::terminate::TaggedBuffer;
    use iwarp_wire::{Opcode, SegmentHeader, TaggedOffset};
    for len in [60_000usize, 400] {
        let dev = device();
        let pd = dev.alloc_pd();
        let l = std::net::TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let raw = std::thread::spawn(move || RawPeer::accept_on(&l, EnhancedParams::client_server(8, 8)));
        let end = End::new(&dev, &pd, QpCap::default(), Progress::Thread);
        let target = Mapping::new(64 << 10);
        target.fill(0);
        let mr = target.register(&pd, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
        end.qp.connect(addr, &ConnParams::default()).unwrap();
        let mut raw = raw.join().unwrap();
        let payload = vec![0xC3u8; len];
        let h = SegmentHeader::tagged(Opcode::Write, true, mr.stag(), TaggedOffset(mr.addr()));
        let fpdu = raw.fpdu(h, &[], &payload);
        // Header and the first half of the payload (the MPA header is 2 bytes, the tagged DDP
        // header 14).
        let cut = 16 + len / 2;
        raw.send(&fpdu[..cut]);
        let deadline = Instant::now() + WAIT;
        while mr.to_vec(0, len / 2).unwrap().iter().any(|&b| b != 0xC3) {
            assert!(Instant::now() < deadline, "the first half is not placed ({len} bytes)");
            std::thread::sleep(Duration::from_millis(1));
        }
        mr.deregister().expect("deregister");
        drop(mr);
        target.fill(CANARY);
        raw.send(&fpdu[cut..]);
        let (f, eof) = raw.read_until_eof(WAIT);
        assert!(eof, "{len} bytes: the stack closes the stream");
        let cause = TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].seg.opcode, Opcode::Terminate);
        let e = wait_event(&end.qp, WAIT, |e| matches!(e, QpEvent::Error { .. }));
        assert!(matches!(e, QpEvent::Error { cause: Some(c), remote: false, .. } if c == cause), "{e:?}");
        assert_eq!(first_not(&target.bytes(), CANARY), None, "{len} bytes: placed after deregistration");
    }
}
