//! The memory behind a region: the only module of this crate that uses `unsafe`.
//!
//! # Memory model
//!
//! A region's bytes are shared memory: the kernel writes them (direct placement, `readv`) and
//! reads them (zero-copy transmit, `writev`) on the stack's threads, a peer decides when, and
//! the application reads and writes them on its own threads. Under Rust's memory model two
//! threads may touch the same bytes at the same time only if both accesses are atomic, so
//! nothing here ever forms a reference (`&[u8]` or `&mut [u8]`) to a region's bytes:
//!
//! - every copy into or out of a region ([`RawMem::read`], [`RawMem::write`], and the
//!   engine's own copies) is made of relaxed atomic loads and stores (8-byte words where
//!   aligned, single bytes at the ends);
//! - bytes the engine must look at (the CRC of an outgoing or just-placed payload, a payload
//!   framed into a small FPDU) are read the same way, chunk by chunk into a buffer of the
//!   engine's own ([`MemSlice`]), never borrowed where they lie;
//! - RFC 7306 atomics are `AtomicU64` operations on aligned words ([`RawMem::atomic_u64`]);
//! - the kernel's accesses, in system calls on addresses the engine validated, are outside
//!   the Rust program; like a device's DMA they race with nothing the program does.
//!
//! Concurrent access is therefore never undefined behaviour; it only makes the bytes
//! indeterminate, as on any RDMA device (RFC 5040 §5: a Data Sink must not "peek" at an RDMA
//! Write target before a later message says it is complete; a Data Source must not change a
//! buffer a posted request is sending). No Rust invariant lives in these bytes: they are plain
//! `u8` values, any bit pattern is valid.
#![allow(unsafe_code)]

use iwarp_wire::PayloadSource;
use std::alloc::{self, Layout};
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Alignment of heap-backed regions (a page, so that huge and small regions behave alike).
const ALIGN: usize = 4096;

#[derive(Debug)]
enum Backing {
    /// From the global allocator with this layout.
    Heap(Layout),
    /// An anonymous mapping of this many bytes.
    Mmap(usize),
    /// Caller-owned memory.
    External,
    /// A zero-length region (no allocation).
    Empty,
}

/// A contiguous block of memory that may be placed into by the network.
#[derive(Debug)]
pub struct RawMem {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: RawMem owns (or, for external memory, is promised by its creator) a block that stays
// valid for its whole life; every access from Rust is atomic (see the module's memory model),
// so sharing the handle between threads creates neither aliased references nor data races.
unsafe impl Send for RawMem {}
// SAFETY: as for Send: no method hands out a reference to the bytes (only to an aligned
// AtomicU64, itself Sync), and every access is atomic.
unsafe impl Sync for RawMem {}

impl RawMem {
    /// Allocates `len` zeroed bytes. With `huge`, tries a huge-page-backed anonymous mapping
    /// first and falls back to ordinary pages.
    ///
    /// # Errors
    /// `ENOMEM` if the memory cannot be had.
    pub fn alloc(len: usize, huge: bool) -> std::io::Result<RawMem> {
        if len == 0 {
            return Ok(RawMem { ptr: NonNull::dangling(), len: 0, backing: Backing::Empty });
        }
        if huge {
            // (Miri has no huge pages: it checks the fallback.)
            if !cfg!(miri) {
                if let Some(m) = Self::mmap(len, true) {
                    return Ok(m);
                }
            }
            if let Some(m) = Self::mmap(len, false) {
                return Ok(m);
            }
            return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let layout =
            Layout::from_size_align(len, ALIGN).map_err(|_| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: layout has a non-zero size (len > 0 checked above).
        let p = unsafe { alloc::alloc_zeroed(layout) };
        match NonNull::new(p) {
            Some(ptr) => Ok(RawMem { ptr, len, backing: Backing::Heap(layout) }),
            None => Err(std::io::Error::from_raw_os_error(libc::ENOMEM)),
        }
    }

    fn mmap(len: usize, huge: bool) -> Option<RawMem> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let mut map_len = len;
        if huge {
            flags |= libc::MAP_HUGETLB;
            // Huge mappings must be a whole number of (2 MiB) huge pages.
            map_len = len.div_ceil(2 << 20) * (2 << 20);
        }
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(p.cast::<u8>()).map(|ptr| RawMem { ptr, len, backing: Backing::Mmap(map_len) })
    }

    /// Wraps memory the caller owns.
    ///
    /// # Safety
    /// - `ptr` must be valid for reads and writes of `len` bytes for as long as the returned
    ///   value lives, and must not be freed, moved or unmapped before.
    /// - While it lives, the caller may access those bytes only atomically (as this type does),
    ///   or non-atomically (through references or plain reads and writes) at times when it
    ///   knows neither the stack nor a peer can access them: no work request naming them is in
    ///   flight, and no peer holds an STag with remote access to them. A plain access racing
    ///   with any other access of the same byte is a data race: undefined behaviour.
    pub unsafe fn external(ptr: NonNull<u8>, len: usize) -> RawMem {
        RawMem { ptr, len, backing: Backing::External }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for a zero-length block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of byte `offset` (may be one past the end). For building I/O vectors; only the
    /// runtime dereferences it, through the kernel.
    pub fn ptr_at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        self.ptr.as_ptr().wrapping_add(offset)
    }

    fn in_bounds(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the block, with atomic loads.
    /// Returns `false` (and copies nothing) if the range is out of bounds.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        if !self.in_bounds(offset, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the live block (checked), accessed only
        // atomically; `dst` is the caller's own buffer and cannot overlap it (it would need a
        // reference into the block, which this type never gives out).
        unsafe { load(self.ptr_at(offset), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the block at `offset`, with atomic stores. Returns `false` (and copies
    /// nothing) if the range is out of bounds.
    pub fn write(&self, offset: usize, src: &[u8]) -> bool {
        if !self.in_bounds(offset, src.len()) {
            return false;
        }
        // SAFETY: the destination range is inside the live block (checked), accessed only
        // atomically; `src` is a buffer of the caller's, outside the block.
        unsafe { store(src, self.ptr_at(offset)) };
        true
    }

    /// The bytes `offset..offset + len`, to be read as a [`PayloadSource`] (copied out in
    /// chunks, never borrowed). `None` if the range is out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> Option<MemSlice<'_>> {
        self.in_bounds(offset, len).then_some(MemSlice { mem: self, offset, len })
    }

    /// The 8-byte word at `offset` as an atomic, for RFC 7306 atomics. `None` unless the range
    /// is in bounds and the address is 8-byte aligned.
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        if !self.in_bounds(offset, 8) {
            return None;
        }
        let p = self.ptr_at(offset);
        if !(p as usize).is_multiple_of(std::mem::align_of::<AtomicU64>()) {
            return None;
        }
        // SAFETY: in bounds and aligned (checked); AtomicU64 has the layout of u64 and any bit
        // pattern is valid; every other Rust access to these bytes is atomic too (the module's
        // memory model), and the reference lives no longer than the block's borrow.
        Some(unsafe { AtomicU64::from_ptr(p.cast()) })
    }
}

impl Drop for RawMem {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: allocated by alloc_zeroed with exactly this layout.
            Backing::Heap(layout) => unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) },
            Backing::Mmap(map_len) => {
                // SAFETY: mapped by mmap with exactly this length; nothing refers to it any more.
                unsafe { libc::munmap(self.ptr.as_ptr().cast(), map_len) };
            }
            Backing::External | Backing::Empty => {}
        }
    }
}

/// A range of a block, read by copying: the form in which the engine hands registered bytes
/// to the codecs (a CRC over an outgoing or placed payload, a small FPDU's copied payload).
#[derive(Debug, Clone, Copy)]
pub struct MemSlice<'a> {
    mem: &'a RawMem,
    offset: usize,
    len: usize,
}

/// Bytes one chunk of [`MemSlice::for_each_chunk`] carries: a buffer on the stack that stays
/// in the first-level cache, large enough that a CRC runs at full speed over it.
const CHUNK: usize = 4096;

impl MemSlice<'_> {
    /// Panics unless `start..start + len` lies inside the slice (the [`PayloadSource`]
    /// contract: callers pass ranges inside the source).
    fn check(&self, start: usize, len: usize) {
        assert!(start.checked_add(len).is_some_and(|e| e <= self.len), "range outside the slice");
    }
}

impl PayloadSource for MemSlice<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        self.check(start, len);
        let mut buf = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(CHUNK);
            let src = self.mem.ptr_at(self.offset + start + at);
            // SAFETY: `src..src + n` is inside the live block (the slice was bounds-checked
            // when made, and `start + len` against it above), read atomically; `buf` is ours
            // and holds at least `n` bytes.
            unsafe { load(src, buf.as_mut_ptr().cast(), n) };
            // SAFETY: `load` initialised the first `n` bytes of `buf`.
            f(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) });
            at += n;
        }
    }

    fn copy_to(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        self.check(start, len);
        out.reserve(len);
        let spare = out.spare_capacity_mut();
        // SAFETY: the source range is inside the live block (checked as above), read
        // atomically; `spare` has room for `len` bytes (reserved) and is not shared memory.
        unsafe { load(self.mem.ptr_at(self.offset + start), spare.as_mut_ptr().cast(), len) };
        // SAFETY: `load` initialised the `len` bytes after the vector's length.
        unsafe { out.set_len(out.len() + len) };
    }
}

/// Copies `n` bytes from shared memory at `src` to private memory at `dst` with relaxed atomic
/// loads: 8-byte words where `src` is aligned, single bytes before and after.
///
/// # Safety
/// `src..src + n` must be valid for reads and accessed by Rust code only atomically for the
/// duration; `dst..dst + n` must be valid for writes and not overlap it.
#[inline]
unsafe fn load(src: *const u8, dst: *mut u8, n: usize) {
    let head = src.align_offset(8).min(n);
    let words = (n - head) / 8;
    for i in 0..head {
        // SAFETY: in bounds of both ranges (i < n); every address is aligned for AtomicU8.
        unsafe { dst.add(i).write(AtomicU8::from_ptr(src.add(i).cast_mut()).load(Ordering::Relaxed)) };
    }
    for w in 0..words {
        let at = head + w * 8;
        // SAFETY: `src + at` is 8-aligned (after the head) and `at + 8 <= n`; the destination
        // may be unaligned, hence write_unaligned.
        unsafe {
            let v = AtomicU64::from_ptr(src.add(at).cast_mut().cast()).load(Ordering::Relaxed);
            dst.add(at).cast::<u64>().write_unaligned(v);
        }
    }
    for i in head + words * 8..n {
        // SAFETY: as for the head bytes.
        unsafe { dst.add(i).write(AtomicU8::from_ptr(src.add(i).cast_mut()).load(Ordering::Relaxed)) };
    }
}

/// Copies `src` (private memory) to shared memory at `dst` with relaxed atomic stores, as
/// [`load`] reads.
///
/// # Safety
/// `dst..dst + src.len()` must be valid for writes and accessed by Rust code only atomically
/// for the duration, and must not overlap `src`.
#[inline]
unsafe fn store(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let head = dst.align_offset(8).min(n);
    let words = (n - head) / 8;
    for (i, &b) in src[..head].iter().enumerate() {
        // SAFETY: in bounds (i < n); every address is aligned for AtomicU8.
        unsafe { AtomicU8::from_ptr(dst.add(i)).store(b, Ordering::Relaxed) };
    }
    for w in 0..words {
        let at = head + w * 8;
        let mut v = [0u8; 8];
        v.copy_from_slice(&src[at..at + 8]);
        // SAFETY: `dst + at` is 8-aligned (after the head) and `at + 8 <= n`.
        unsafe { AtomicU64::from_ptr(dst.add(at).cast()).store(u64::from_ne_bytes(v), Ordering::Relaxed) };
    }
    for (i, &b) in src.iter().enumerate().skip(head + words * 8) {
        // SAFETY: as for the head bytes.
        unsafe { AtomicU8::from_ptr(dst.add(i)).store(b, Ordering::Relaxed) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn alloc_read_write_bounds() {
        let m = RawMem::alloc(100, false).unwrap();
        assert_eq!(m.len(), 100);
        let mut b = [1u8; 10];
        assert!(m.read(90, &mut b));
        assert_eq!(b, [0; 10], "zeroed");
        assert!(m.write(5, b"hello"));
        let mut h = [0u8; 5];
        assert!(m.read(5, &mut h));
        assert_eq!(&h, b"hello");
        assert!(!m.read(96, &mut h));
        assert!(!m.write(usize::MAX, b"x"));
        let mut v = Vec::new();
        m.slice(5, 5).unwrap().copy_to(0, 5, &mut v);
        assert_eq!(v, b"hello");
        assert!(m.slice(99, 2).is_none());
        assert!(m.slice(usize::MAX, 2).is_none());
    }

    /// Every alignment of start and length, across the word and chunk boundaries of the
    /// atomic copies, gives back exactly the bytes written, and touches nothing else.
    #[test]
    fn atomic_copies_are_exact_at_every_alignment() {
        let n = 2 * CHUNK + 64;
        let m = RawMem::alloc(n, false).unwrap();
        let pattern: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
        // Miri interprets every byte: fewer cases there, the same boundaries.
        let offsets: &[usize] = if cfg!(miri) { &[0, 3, 8] } else { &[0, 1, 2, 3, 4, 5, 6, 7, 8] };
        for &off in offsets {
            for len in [0, 1, 7, 8, 9, 15, 17, CHUNK - 1, CHUNK, CHUNK + 9, 2 * CHUNK + 3] {
                assert!(m.write(0, &vec![0xEE; n]));
                assert!(m.write(off, &pattern[..len]));
                let mut all = vec![0; n];
                assert!(m.read(0, &mut all));
                assert!(all[..off].iter().all(|&b| b == 0xEE), "before {off}+{len}");
                assert_eq!(&all[off..off + len], &pattern[..len], "at {off}+{len}");
                assert!(all[off + len..].iter().all(|&b| b == 0xEE), "after {off}+{len}");
                // Chunked reads and direct copies agree, from any start inside the slice.
                let sl = m.slice(off, len).unwrap();
                let mut chunked = Vec::new();
                sl.for_each_chunk(0, len, &mut |c| {
                    assert!(c.len() <= CHUNK);
                    chunked.extend_from_slice(c)
                });
                assert_eq!(chunked, &pattern[..len]);
                let mut copied = vec![1, 2, 3];
                sl.copy_to(len / 3, len - len / 3, &mut copied);
                assert_eq!(&copied[..3], &[1, 2, 3]);
                assert_eq!(&copied[3..], &pattern[len / 3..len]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "range outside the slice")]
    fn a_slice_refuses_a_range_beyond_its_end() {
        let m = RawMem::alloc(64, false).unwrap();
        m.slice(8, 16).unwrap().for_each_chunk(10, 7, &mut |_| {});
    }

    /// Application threads and the stack may touch a region at once: every access is atomic,
    /// so this is no data race (Miri checks it), only indeterminate bytes.
    #[test]
    fn concurrent_reads_and_writes_are_atomic() {
        let m = std::sync::Arc::new(RawMem::alloc(256, false).unwrap());
        let w = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || {
            for i in 0..8u8 {
                assert!(w.write(3, &[i; 200]));
            }
        });
        for _ in 0..8 {
            let mut b = [0u8; 200];
            assert!(m.read(3, &mut b));
            let mut crc = iwarp_wire::crc::Crc32c::new();
            m.slice(3, 200).unwrap().for_each_chunk(0, 200, &mut |c| crc.update(c));
        }
        t.join().unwrap();
        let mut b = [0u8; 200];
        assert!(m.read(3, &mut b));
        assert_eq!(b, [7; 200]);
    }

    #[test]
    fn atomics_need_alignment() {
        let m = RawMem::alloc(64, false).unwrap();
        assert!(m.atomic_u64(3).is_none());
        assert!(m.atomic_u64(60).is_none());
        let a = m.atomic_u64(8).unwrap();
        a.fetch_add(5, Ordering::SeqCst);
        let mut b = [0u8; 8];
        m.read(8, &mut b);
        assert_eq!(u64::from_ne_bytes(b), 5);
    }

    #[test]
    fn huge_falls_back_and_empty_is_fine() {
        let m = RawMem::alloc(3 << 20, true).unwrap();
        assert!(m.write((3 << 20) - 1, &[7]));
        let e = RawMem::alloc(0, false).unwrap();
        assert!(e.is_empty());
        assert!(e.read(0, &mut []));
    }
}
