//! The memory behind a region: the only module of this crate that uses `unsafe`.
//!
//! # Memory model
//!
//! A region's bytes are shared: the kernel writes them (direct placement, `readv`) and reads
//! them (zero-copy transmit, `writev`) on the stack's threads when a peer's bytes arrive or a
//! request is sent, while the application uses the region on its own threads. Under Rust's
//! memory model two threads may touch the same bytes at once only if both accesses are
//! atomic; so every access Rust code makes to a region's bytes happens under the region's
//! access lock ([`RawMem`] holds one), and no reference to them outlives it:
//!
//! - reading (the application's [`RawMem::read`], the CRC of an outgoing or just-placed
//!   payload, a payload copied into a small FPDU: [`MemSlice`]) holds the lock shared;
//! - writing (the application's [`RawMem::write`], the engine copying a peer's bytes in, an
//!   RFC 7306 atomic: [`RawMem::update_u64`]) holds it exclusively;
//! - the kernel's accesses, in system calls on ranges the engine validated, are outside the
//!   Rust program: like a device's DMA they race with nothing it does, and only make bytes
//!   indeterminate, as on any RDMA device (RFC 5040 §5: a Data Sink must not "peek" at an RDMA
//!   Write target before a later message says it is complete; a Data Source must not change a
//!   buffer a posted request is sending).
//!
//! A lock is held for one copy or one CRC pass, never across a system call, and a thread
//! holding it exclusively takes no other lock, so readers that hold several regions' locks at
//! once (a payload gathered from several regions) cannot deadlock. No Rust invariant lives in
//! the bytes themselves: they are plain `u8` values, any bit pattern is valid.
//!
//! # Revocation
//!
//! Memory the application owns ([`RawMem::external`]) is given back to it when the region is
//! deregistered, and may be freed at once. So deregistration revokes the block, in three steps
//! that together guarantee that nothing touches the bytes afterwards:
//!
//! 1. [`RawMem::revoke`] marks it revoked: no new [pin](RawMem::try_pin) is granted. The
//!    runtime pins a block for each system call that hands its bytes to the kernel (a `readv`
//!    placing into it, a `writev` sending from it), so the kernel only touches pinned blocks.
//! 2. The runtime waits until [`RawMem::pinned`] is zero: the system calls under way have
//!    returned.
//! 3. [`RawMem::try_seal`] takes the access lock exclusively (so the Rust copies under way have
//!    finished) and marks the block sealed: every later copy is refused ([`RawMem::read`] and
//!    [`RawMem::write`] return `false`, a [`MemSlice`] reads zeros), without touching it.
//!
//! The pin count and both marks are one atomic word: a pin is one atomic add and one atomic
//! subtract per system call, and the sealed mark is read under the lock a copy takes anyway.
#![allow(unsafe_code)]

use iwarp_wire::PayloadSource;
use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Alignment of heap-backed regions (a page, so that huge and small regions behave alike).
const ALIGN: usize = 4096;

/// [`RawMem::gate`]: revoked, no new pins.
const REVOKED: u32 = 1 << 31;
/// [`RawMem::gate`]: sealed, no more copies.
const SEALED: u32 = 1 << 30;
/// [`RawMem::gate`]: the pin count.
const PINS: u32 = SEALED - 1;

/// Zeros that a sealed block's slices read instead of its bytes.
static ZEROS: [u8; 4096] = [0; 4096];

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
    /// Held shared by Rust code reading the bytes, exclusively by Rust code writing them (see
    /// the module's memory model).
    access: RwLock<()>,
    /// [`REVOKED`] | [`SEALED`] | the number of pins (see the module's revocation steps).
    gate: AtomicU32,
}

// SAFETY: RawMem owns (or, for external memory, is promised by its creator) a block that stays
// valid for its whole life; every access from Rust holds the access lock (shared to read,
// exclusive to write, see the module's memory model), so sharing the handle between threads
// creates no data race.
unsafe impl Send for RawMem {}
// SAFETY: as for Send: references to the bytes exist only while the lock is held (shared for
// `&[u8]`), and writes happen only under the exclusive lock.
unsafe impl Sync for RawMem {}

impl RawMem {
    /// Allocates `len` zeroed bytes. With `huge`, tries a huge-page-backed anonymous mapping
    /// first and falls back to ordinary pages.
    ///
    /// # Errors
    /// `ENOMEM` if the memory cannot be had.
    pub fn alloc(len: usize, huge: bool) -> std::io::Result<RawMem> {
        if len == 0 {
            return Ok(RawMem {
                ptr: NonNull::dangling(),
                len: 0,
                backing: Backing::Empty,
                access: RwLock::new(()),
                gate: AtomicU32::new(0),
            });
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
            Some(ptr) => Ok(RawMem {
                ptr,
                len,
                backing: Backing::Heap(layout),
                access: RwLock::new(()),
                gate: AtomicU32::new(0),
            }),
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
        NonNull::new(p.cast::<u8>()).map(|ptr| RawMem {
            ptr,
            len,
            backing: Backing::Mmap(map_len),
            access: RwLock::new(()),
            gate: AtomicU32::new(0),
        })
    }

    /// Wraps memory the caller owns.
    ///
    /// # Safety
    /// - `ptr` must be valid for reads and writes of `len` bytes for as long as the returned
    ///   value lives, and must not be freed, moved or unmapped before.
    /// - While it lives, the caller accesses those bytes only through this value (whose
    ///   methods take its access lock), or directly at times when it knows that neither the
    ///   stack nor a peer can access them: no work request naming them is in flight, and no
    ///   peer holds an STag with remote access to them. A direct access racing with the stack's
    ///   is a data race: undefined behaviour.
    pub unsafe fn external(ptr: NonNull<u8>, len: usize) -> RawMem {
        RawMem { ptr, len, backing: Backing::External, access: RwLock::new(()), gate: AtomicU32::new(0) }
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

    /// The lock readers hold (see the module's memory model).
    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.access.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock writers hold.
    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.access.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `true` once sealed. Read under the access lock, it says whether the bytes may be
    /// touched under that lock.
    fn sealed(&self) -> bool {
        self.gate.load(Ordering::Relaxed) & SEALED != 0
    }

    /// Pins the block for one system call on its bytes: `false` (nothing pinned) once it is
    /// revoked. Every successful call must be matched by one [`unpin`](Self::unpin) once the
    /// system call has returned.
    pub(super) fn try_pin(&self) -> bool {
        // One word: either this add comes before the revoking `fetch_or` in the word's
        // modification order (and the revoker waits for the matching unpin), or it sees the mark.
        let before = self.gate.fetch_add(1, Ordering::Acquire);
        if before & REVOKED != 0 {
            self.unpin();
            return false;
        }
        debug_assert!(before & PINS < PINS, "pin count overflow");
        true
    }

    /// Ends a pin taken with [`try_pin`](Self::try_pin). Release: what the pinning thread (and
    /// the kernel, on its behalf) did with the bytes happens before the revoker sees the count.
    pub(super) fn unpin(&self) {
        let before = self.gate.fetch_sub(1, Ordering::Release);
        debug_assert!(before & PINS != 0, "unbalanced unpin");
    }

    /// Step 1 of the revocation: no new pins.
    pub fn revoke(&self) {
        self.gate.fetch_or(REVOKED, Ordering::AcqRel);
    }

    /// `true` once [`revoke`](Self::revoke) was called.
    pub fn is_revoked(&self) -> bool {
        self.gate.load(Ordering::Acquire) & REVOKED != 0
    }

    /// The pins held now (step 2 of the revocation waits for zero).
    pub fn pinned(&self) -> u32 {
        self.gate.load(Ordering::Acquire) & PINS
    }

    /// Step 3 of the revocation: if the block is revoked and no pin is held, waits for the
    /// copies under way and refuses all later ones; returns `true` once sealed (then no part
    /// of this program touches the bytes again). `false`: not revoked, or still pinned.
    pub fn try_seal(&self) -> bool {
        let gate = self.gate.load(Ordering::Acquire);
        if gate & SEALED != 0 {
            return true;
        }
        if gate & REVOKED == 0 || gate & PINS != 0 {
            return false;
        }
        let _g = self.exclusive();
        self.gate.fetch_or(SEALED, Ordering::AcqRel);
        true
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the block. Returns `false` (and
    /// copies nothing) if the range is out of bounds or the block is sealed.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        if !self.in_bounds(offset, dst.len()) {
            return false;
        }
        let _g = self.shared();
        if self.sealed() {
            return false;
        }
        // SAFETY: the source range is inside the live block (checked) and no Rust code writes
        // it while the shared lock is held; `dst` is the caller's own buffer, which cannot
        // overlap the block (a reference into it exists only under its lock, inside this
        // module).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr_at(offset), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the block at `offset`. Returns `false` (and copies nothing) if the
    /// range is out of bounds or the block is sealed.
    pub fn write(&self, offset: usize, src: &[u8]) -> bool {
        if !self.in_bounds(offset, src.len()) {
            return false;
        }
        let _g = self.exclusive();
        if self.sealed() {
            return false;
        }
        // SAFETY: the destination range is inside the live block (checked) and no other Rust
        // code reads or writes it while the exclusive lock is held; `src` is a buffer of the
        // caller's, outside the block.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr_at(offset), src.len()) };
        true
    }

    /// The bytes `offset..offset + len`, to be read as a [`PayloadSource`] (each read holds
    /// the access lock shared). `None` if the range is out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> Option<MemSlice<'_>> {
        self.in_bounds(offset, len).then_some(MemSlice { mem: self, offset, len, held: false })
    }

    /// Holds the block readable for a run of reads (see [`SharedView`]).
    pub fn view(&self) -> SharedView<'_> {
        SharedView { mem: self, _guard: self.shared() }
    }

    /// The bytes `offset..offset + len` held readable: the access lock is held shared until
    /// the guard is dropped, so no Rust code writes them meanwhile (placements copied from
    /// scratch, atomics and [`write`](Self::write)s wait). `None` if the range is out of
    /// bounds or the block is sealed. Do not take the block's lock again on the same thread
    /// while the guard lives (a waiting writer would block the second reader).
    pub fn lock_read(&self, offset: usize, len: usize) -> Option<ReadGuard<'_>> {
        if !self.in_bounds(offset, len) {
            return None;
        }
        let guard = self.shared();
        if self.sealed() {
            return None;
        }
        Some(ReadGuard { mem: self, offset, len, _guard: guard })
    }

    /// The bytes `offset..offset + len` held writable: the access lock is held exclusively
    /// until the guard is dropped, so no other Rust code reads or writes them meanwhile (the
    /// stack's copies and CRC passes over the block wait). `None` if the range is out of
    /// bounds or the block is sealed.
    pub fn lock_write(&self, offset: usize, len: usize) -> Option<WriteGuard<'_>> {
        if !self.in_bounds(offset, len) {
            return None;
        }
        let guard = self.exclusive();
        if self.sealed() {
            return None;
        }
        Some(WriteGuard { mem: self, offset, len, _guard: guard })
    }

    /// Applies `f` to the native-endian 8-byte word at `offset` (an RFC 7306 atomic) under the
    /// exclusive lock, and returns the word's original value. `None` unless the range is in
    /// bounds and 8-byte aligned and the block is not sealed.
    pub fn update_u64(&self, offset: usize, f: impl FnOnce(u64) -> u64) -> Option<u64> {
        if !self.in_bounds(offset, 8) {
            return None;
        }
        let p = self.ptr_at(offset);
        if !(p as usize).is_multiple_of(std::mem::align_of::<AtomicU64>()) {
            return None;
        }
        let _g = self.exclusive();
        if self.sealed() {
            return None;
        }
        // SAFETY: in bounds and aligned (checked); AtomicU64 has the layout of u64 and any bit
        // pattern is valid; no other Rust code touches these bytes under the exclusive lock.
        // (An atomic, so that the kernel's copies of the same bytes see whole words.)
        let word = unsafe { AtomicU64::from_ptr(p.cast()) };
        let original = word.load(Ordering::Acquire);
        word.store(f(original), Ordering::Release);
        Some(original)
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

/// A range of a block held readable ([`RawMem::lock_read`]): dereferences to its bytes
/// while the block's access lock is held shared.
#[derive(Debug)]
pub struct ReadGuard<'a> {
    mem: &'a RawMem,
    offset: usize,
    len: usize,
    _guard: RwLockReadGuard<'a, ()>,
}

impl std::ops::Deref for ReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the range is inside the live block (checked when the guard was made) and the
        // block is not sealed (checked under the lock, which sealing takes exclusively); the
        // guard holds the shared lock, so no Rust code writes the bytes, and the reference
        // borrows the guard, so it does not outlive the lock. The kernel's placements are
        // outside the program (the module's memory model).
        unsafe { std::slice::from_raw_parts(self.mem.ptr_at(self.offset), self.len) }
    }
}

/// A range of a block held writable ([`RawMem::lock_write`]): dereferences to its bytes
/// while the block's access lock is held exclusively.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    mem: &'a RawMem,
    offset: usize,
    len: usize,
    _guard: RwLockWriteGuard<'a, ()>,
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: as for ReadGuard::deref; the exclusive lock excludes every other Rust access.
        unsafe { std::slice::from_raw_parts(self.mem.ptr_at(self.offset), self.len) }
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: the range is inside the live, unsealed block (checked when the guard was made,
        // under the lock); the guard holds the lock exclusively, so no other Rust code reads or
        // writes the bytes, and the reference borrows the guard mutably, so it is the only one
        // and does not outlive the lock.
        unsafe { std::slice::from_raw_parts_mut(self.mem.ptr_at(self.offset), self.len) }
    }
}

/// A range of a block, as the codecs read it (a CRC over an outgoing or placed payload, a
/// small FPDU's copied payload): each read holds the block's access lock shared, or is made
/// under a [`SharedView`] that holds it. A sealed block reads as zeros (the codecs cannot
/// fail a read): whoever framed from it checks [`RawMem::is_revoked`] afterwards.
#[derive(Debug, Clone, Copy)]
pub struct MemSlice<'a> {
    mem: &'a RawMem,
    offset: usize,
    len: usize,
    /// Made by a [`SharedView`]: the lock is held for as long as the slice lives.
    held: bool,
}

/// A block held readable for a run of reads (the payloads of many small FPDUs framed one
/// after another), so that the access lock is taken once rather than once per read. Held for
/// one pass of framing, never across a system call; writers of the block wait for it.
#[derive(Debug)]
pub struct SharedView<'a> {
    mem: &'a RawMem,
    _guard: RwLockReadGuard<'a, ()>,
}

impl SharedView<'_> {
    /// The block this view holds.
    pub fn mem(&self) -> &RawMem {
        self.mem
    }

    /// `len` bytes at `offset`, read under this view's lock (do not take the block's lock
    /// again while the view lives: a waiting writer would block the second reader). `None`
    /// if the range is out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> Option<MemSlice<'_>> {
        self.mem.in_bounds(offset, len).then_some(MemSlice { mem: self.mem, offset, len, held: true })
    }
}

impl MemSlice<'_> {
    /// Runs `f` over the bytes `start..start + len` of the slice, under the shared lock.
    ///
    /// # Panics
    /// Unless the range lies inside the slice (the [`PayloadSource`] contract).
    /// `None` (and `f` not run) if the block is sealed.
    fn with_bytes<R>(&self, start: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        assert!(start.checked_add(len).is_some_and(|e| e <= self.len), "range outside the slice");
        if len == 0 {
            return Some(f(&[]));
        }
        // A slice of a view borrows the view, which holds the lock for as long as the slice lives.
        let _g = (!self.held).then(|| self.mem.shared());
        if self.mem.sealed() {
            return None;
        }
        // SAFETY: the range is inside the live block (the slice was bounds-checked when made,
        // and `start + len` against it above), which is not sealed (checked under the lock, which
        // sealing takes exclusively); no Rust code writes it while the shared lock is held
        // (here, or by the view the slice borrows), and the reference does not outlive the lock
        // (it lives only for `f`).
        Some(f(unsafe { std::slice::from_raw_parts(self.mem.ptr_at(self.offset + start), len) }))
    }
}

impl PayloadSource for MemSlice<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        if self.with_bytes(start, len, &mut *f).is_none() {
            let mut left = len;
            while left > 0 {
                let n = left.min(ZEROS.len());
                f(&ZEROS[..n]);
                left -= n;
            }
        }
    }

    fn copy_to(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        if self.with_bytes(start, len, |b| out.extend_from_slice(b)).is_none() {
            out.resize(out.len() + len, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Copies in and out at every alignment give back exactly the bytes written and touch
    /// nothing else; slices read the same bytes, from any start inside them.
    #[test]
    fn copies_are_exact_at_every_alignment() {
        let n = 300;
        let m = RawMem::alloc(n, false).unwrap();
        let pattern: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
        for off in 0..9 {
            for len in [0, 1, 7, 8, 9, 15, 17, 255, 291] {
                assert!(m.write(0, &vec![0xEE; n]));
                assert!(m.write(off, &pattern[..len]));
                let mut all = vec![0; n];
                assert!(m.read(0, &mut all));
                assert!(all[..off].iter().all(|&b| b == 0xEE), "before {off}+{len}");
                assert_eq!(&all[off..off + len], &pattern[..len], "at {off}+{len}");
                assert!(all[off + len..].iter().all(|&b| b == 0xEE), "after {off}+{len}");
                let sl = m.slice(off, len).unwrap();
                let mut chunked = Vec::new();
                sl.for_each_chunk(0, len, &mut |c| chunked.extend_from_slice(c));
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

    /// Application threads and the stack may touch a region at once: every access holds the
    /// region's lock, so this is no data race (Miri checks it), only indeterminate bytes.
    #[test]
    fn concurrent_reads_writes_and_atomics_do_not_race() {
        let m = std::sync::Arc::new(RawMem::alloc(256, false).unwrap());
        let w = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || {
            for i in 0..8u8 {
                assert!(w.write(3, &[i; 200]));
                assert_eq!(w.update_u64(216, |v| v + 1), Some(u64::from(i)));
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
    fn a_view_holds_writers_off_until_it_is_dropped() {
        let m = std::sync::Arc::new(RawMem::alloc(64, false).unwrap());
        assert!(m.write(0, &[1; 64]));
        let view = m.view();
        let w = std::sync::Arc::clone(&m);
        let (started, wait) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            started.send(()).unwrap();
            assert!(w.write(0, &[2; 64]));
        });
        wait.recv().unwrap();
        // The writer has started; whether or not it reached the lock, its bytes cannot land
        // while the view holds it, so every slice of the view reads the old ones throughout.
        for _ in 0..4 {
            let mut out = Vec::new();
            view.slice(8, 32).unwrap().copy_to(0, 32, &mut out);
            assert_eq!(out, [1; 32]);
            std::thread::yield_now();
        }
        assert!(view.slice(60, 8).is_none(), "bounds are checked");
        drop(view);
        t.join().unwrap();
        let mut b = [0u8; 64];
        assert!(m.read(0, &mut b));
        assert_eq!(b, [2; 64]);
    }

    #[test]
    fn guards_give_the_bytes_in_place_and_hold_the_other_side_off() {
        let m = std::sync::Arc::new(RawMem::alloc(64, false).unwrap());
        {
            let mut w = m.lock_write(8, 16).unwrap();
            w.copy_from_slice(&[7; 16]);
            w[0] = 1;
        }
        let r = m.lock_read(8, 16).unwrap();
        assert_eq!(r[0], 1);
        assert_eq!(&r[1..], &[7; 15]);
        assert_eq!(r.as_ptr(), m.ptr_at(8).cast_const(), "no copy");
        let w = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || assert!(w.write(8, &[2; 16])));
        for _ in 0..4 {
            assert_eq!(r[1], 7, "a writer waits for the read guard");
            std::thread::yield_now();
        }
        drop(r);
        t.join().unwrap();
        assert_eq!(&*m.lock_read(8, 16).unwrap(), &[2; 16]);
        assert!(m.lock_read(60, 8).is_none() && m.lock_write(usize::MAX, 2).is_none(), "bounds are checked");
        assert!(m.lock_read(64, 0).is_some_and(|g| g.is_empty()));
        m.revoke();
        assert!(m.try_seal());
        assert!(m.lock_read(0, 8).is_none() && m.lock_write(0, 8).is_none(), "a sealed block gives no guard");
    }

    #[test]
    fn atomics_need_alignment() {
        let m = RawMem::alloc(64, false).unwrap();
        assert!(m.update_u64(3, |v| v).is_none());
        assert!(m.update_u64(60, |v| v).is_none());
        assert_eq!(m.update_u64(8, |v| v + 5), Some(0));
        assert_eq!(m.update_u64(8, |v| v * 3), Some(5));
        let mut b = [0u8; 8];
        m.read(8, &mut b);
        assert_eq!(u64::from_ne_bytes(b), 15);
    }

    /// Revoking refuses new pins and waits for held ones; sealing then refuses every copy,
    /// and slices read zeros.
    #[test]
    fn a_revoked_block_is_sealed_once_unpinned_and_then_never_touched() {
        let m = RawMem::alloc(64, false).unwrap();
        assert!(m.write(0, &[9; 64]));
        assert!(m.try_pin());
        assert!(!m.try_seal(), "not revoked yet");
        m.revoke();
        assert!(m.is_revoked());
        assert!(!m.try_pin(), "no new pins once revoked");
        assert_eq!(m.pinned(), 1);
        assert!(!m.try_seal(), "a pin is held");
        // Copies still work until the block is sealed (a pinned system call's CRC needs them).
        let mut b = [0u8; 4];
        assert!(m.read(0, &mut b));
        m.unpin();
        assert_eq!(m.pinned(), 0);
        assert!(m.try_seal());
        assert!(m.try_seal(), "sealing twice is fine");
        assert!(!m.read(0, &mut b));
        assert!(!m.write(0, &b));
        assert!(m.update_u64(8, |v| v + 1).is_none());
        let mut out = Vec::new();
        m.slice(0, 10).unwrap().copy_to(0, 10, &mut out);
        assert_eq!(out, [0; 10]);
        let mut seen = Vec::new();
        m.view().slice(0, 64).unwrap().for_each_chunk(0, 64, &mut |c| seen.extend_from_slice(c));
        assert_eq!(seen, [0; 64]);
    }

    /// Pins taken and dropped on other threads while the block is revoked: sealing succeeds
    /// only once every granted pin is back (Miri checks the orderings).
    #[test]
    fn revocation_waits_for_pins_on_other_threads() {
        let m = std::sync::Arc::new(RawMem::alloc(64, false).unwrap());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        if m.try_pin() {
                            assert!(m.write(0, &[1; 8]), "a pinned block is not sealed");
                            m.unpin();
                        }
                    }
                })
            })
            .collect();
        m.revoke();
        while !m.try_seal() {
            std::thread::yield_now();
        }
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(m.pinned(), 0);
        assert!(!m.write(0, &[2; 8]));
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
