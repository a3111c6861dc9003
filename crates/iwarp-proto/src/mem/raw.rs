//! The memory behind a region: the only module of this crate that uses `unsafe`.
//!
//! A region's bytes are shared with the network: the runtime reads them with `writev` and writes
//! them with `readv` through raw pointers, while the application reads and writes them through
//! [`RawMem::read`] and [`RawMem::write`]. As on any RDMA device, bytes that a peer writes while
//! the application looks at them are indeterminate (RFC 5040 §5: a Data Sink must not "peek" at
//! an RDMA Write target before a later message says it is complete). Nothing here ever hands out
//! a reference that outlives a call, and no Rust invariant lives in these bytes: they are plain
//! `u8` values, any bit pattern is valid.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

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
// valid for its whole life; all access goes through raw-pointer copies or atomics, so sharing
// the handle between threads creates no reference aliasing. Concurrent writers race only on
// plain bytes, which is the documented RDMA semantics described in the module docs.
unsafe impl Send for RawMem {}
// SAFETY: as for Send: no method hands out a reference that lives beyond the call, and the
// contents are plain bytes.
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
            if let Some(m) = Self::mmap(len, true) {
                return Ok(m);
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
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as the returned value
    /// (and every clone of the region holding it) lives, and must not be freed or moved before.
    /// Concurrent writes by the caller race with the network; that race is the caller's.
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

    /// Copies `dst.len()` bytes starting at `offset` out of the block. Returns `false` (and
    /// copies nothing) if the range is out of bounds.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        if !self.in_bounds(offset, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the block (checked); dst is a distinct Rust
        // buffer, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr_at(offset), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the block at `offset`. Returns `false` (and copies nothing) if the
    /// range is out of bounds.
    pub fn write(&self, offset: usize, src: &[u8]) -> bool {
        if !self.in_bounds(offset, src.len()) {
            return false;
        }
        // SAFETY: the destination range is inside the block (checked). `src` may itself point
        // into this block (a caller copying within a region), hence `copy`, not
        // `copy_nonoverlapping`.
        unsafe { std::ptr::copy(src.as_ptr(), self.ptr_at(offset), src.len()) };
        true
    }

    /// Runs `f` over `len` bytes at `offset` (for computing a CRC over placed or outgoing
    /// bytes). Returns `None` if the range is out of bounds.
    pub fn with_slice<R>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if !self.in_bounds(offset, len) {
            return None;
        }
        if len == 0 {
            return Some(f(&[]));
        }
        // SAFETY: the range is inside the live block (checked); the slice does not escape `f`.
        // Its bytes may change under it only through the RDMA race described in the module
        // docs, which can make the result wrong but cannot break memory safety of Rust types.
        let s = unsafe { std::slice::from_raw_parts(self.ptr_at(offset), len) };
        Some(f(s))
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
        // pattern is valid; concurrent non-atomic access by the network is the documented race.
        Some(unsafe { &*p.cast::<AtomicU64>() })
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

/// Runs `f` over several ranges at once (`(memory, offset, len)` each), as slices. Returns
/// `None` if any range is out of bounds. Used to compute the CRC of an FPDU whose payload is
/// gathered from several regions.
pub fn with_slices<R>(parts: &[(&RawMem, usize, usize)], f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
    let mut slices: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
    for &(m, off, len) in parts {
        if !m.in_bounds(off, len) {
            return None;
        }
        if len == 0 {
            slices.push(&[]);
            continue;
        }
        // SAFETY: in bounds of a live block (checked; the caller's borrow of `m` keeps it alive
        // for the call); the slices do not escape `f`. Concurrent changes are the RDMA race
        // described in the module docs.
        slices.push(unsafe { std::slice::from_raw_parts(m.ptr_at(off), len) });
    }
    Some(f(&slices))
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
        assert_eq!(m.with_slice(5, 5, |s| s.to_vec()), Some(b"hello".to_vec()));
        assert_eq!(m.with_slice(99, 2, |s| s.len()), None);
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
