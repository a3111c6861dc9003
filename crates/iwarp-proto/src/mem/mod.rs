//! Memory: protection domains, registered regions, the STag table and the one access check.
//!
//! An STag is a 24-bit index (allocated cyclically from a random start, so a freed index is
//! reused only after the other 2^24 - 2 have been handed out) and an 8-bit random key, like
//! Linux siw's. STag 0 is never issued. A region is invalidated (deregistered or invalidated by
//! a Send with Invalidate or a Local Invalidate) by clearing its valid flag: a stale STag then
//! fails the check even when a cached handle to the region is still held.
//!
//! An invalidated (not deregistered) region can be validated again under a new STag with
//! [`StagTable::rekey`]: same index, the next 8-bit key, as a fast-register work request
//! does on RDMA hardware. The STag and the valid flag are one atomic word, so a check sees
//! either the old STag invalid or the new one valid, never the old one valid again: a late
//! access with the old STag fails as after an invalidation.
//!
//! Deregistration also *revokes* a region's memory ([`Region::revoke`], the steps are in
//! [`RawMem`]'s docs): the runtime [pins](Region::pin) a region for each system call on its
//! bytes, and a revoked region grants no pins and, once sealed, no copies, so that the stack
//! never touches memory its owner took back. A work request or placement that finds its
//! memory revoked fails instead (see the `qp` module).
//!
//! [`check`] is the single function that turns a peer's (STag, TO, length) into a placement
//! [`Window`]: valid → protection domain → access rights → bounds, in that order. Its
//! [`AccessError`] knows the Terminate codes of the DDP layer (for placement of Writes and Read
//! Responses) and of the RDMAP layer (for Read Request sources and invalidation).

mod raw;

pub use raw::{MemSlice, RawMem, ReadGuard, SharedView, WriteGuard};

use iwarp_wire::terminate::{RemoteProtection, TaggedBuffer, TerminateCause};
use iwarp_wire::Stag;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

bitflags::bitflags! {
    /// Access rights of a memory region.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Access: u8 {
        /// The local side may write into it (receive buffers, RDMA Read sinks, atomic results).
        const LOCAL_WRITE = 0x01;
        /// A peer may RDMA Read from it.
        const REMOTE_READ = 0x02;
        /// A peer may RDMA Write into it.
        const REMOTE_WRITE = 0x04;
        /// A peer may run RFC 7306 atomics on it.
        const REMOTE_ATOMIC = 0x08;
    }
}

/// Identifies a protection domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PdId(pub u32);

/// A registered memory region: memory, the STag naming it, its protection domain, rights and
/// the Tagged Offset of its first byte.
#[derive(Debug)]
pub struct Region {
    mem: RawMem,
    /// The STag (low 32 bits), [`VALID`] and [`DEREGISTERED`]: one word, so that the STag
    /// and its validity change together (see [`StagTable::rekey`]).
    state: AtomicU64,
    pd: PdId,
    access: Access,
    base: u64,
}

/// [`Region::state`]: the STag passes the check.
const VALID: u64 = 1 << 32;
/// [`Region::state`]: deregistered; never valid again.
const DEREGISTERED: u64 = 1 << 33;

/// A shared handle to a region. Holding one keeps the memory alive.
pub type MrRef = Arc<Region>;

impl Region {
    /// The STag (local key and remote key alike).
    pub fn stag(&self) -> Stag {
        Stag(self.state.load(Ordering::Acquire) as u32)
    }
    /// The protection domain.
    pub fn pd(&self) -> PdId {
        self.pd
    }
    /// Access rights.
    pub fn access(&self) -> Access {
        self.access
    }
    /// Tagged Offset of the first byte (the address peers use).
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }
    /// `true` for a zero-length region.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }
    /// `false` once deregistered or invalidated.
    pub fn is_valid(&self) -> bool {
        self.state.load(Ordering::Acquire) & VALID != 0
    }
    /// `true` if `stag` names this region and the region is valid (one atomic read).
    fn is_valid_as(&self, stag: Stag) -> bool {
        (self.state.load(Ordering::Acquire) & !DEREGISTERED) == (u64::from(stag.0) | VALID)
    }
    /// The memory.
    pub fn mem(&self) -> &RawMem {
        &self.mem
    }
    /// Invalidates the region whatever its STag; `true` if it was valid.
    fn invalidate(&self) -> bool {
        self.state.fetch_and(!VALID, Ordering::AcqRel) & VALID != 0
    }
    /// Invalidates the region if `stag` is its STag and it is valid.
    fn invalidate_as(&self, stag: Stag) -> bool {
        let valid = u64::from(stag.0) | VALID;
        self.state.compare_exchange(valid, u64::from(stag.0), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
    /// Invalidates the region and revokes its memory: from now on no [`Pin`] is granted, so
    /// no new system call reaches its bytes (step 1 of [`RawMem`]'s revocation; the runtime
    /// then waits for [`RawMem::pinned`] to reach zero and calls [`RawMem::try_seal`]).
    pub fn revoke(&self) {
        self.invalidate();
        self.mem.revoke();
    }
    /// `true` once [`revoke`](Self::revoke)d.
    pub fn is_revoked(&self) -> bool {
        self.mem.is_revoked()
    }
    /// Pins the region's memory for one system call on its bytes (a `readv` placing into it,
    /// a `writev` sending from it): until the pin is dropped, a deregistration waits. `None`
    /// once the region is revoked: its bytes must not be touched.
    pub fn pin(self: &Arc<Self>) -> Option<Pin> {
        self.mem.try_pin().then(|| Pin { mr: Arc::clone(self) })
    }
}

/// A region pinned for a system call on its bytes (see [`Region::pin`]); dropping it unpins.
#[derive(Debug)]
pub struct Pin {
    mr: MrRef,
}

impl Pin {
    /// The pinned region.
    pub fn region(&self) -> &MrRef {
        &self.mr
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.mr.mem.unpin();
    }
}

/// A validated range of a region: where a peer's bytes may be placed or read from.
#[derive(Debug, Clone)]
pub struct Window {
    /// The region.
    pub mr: MrRef,
    /// Offset of the first byte in the region.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Why a peer's (STag, TO, length) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No valid region has this STag (unknown index, wrong key, or invalidated).
    #[error("invalid STag")]
    InvalidStag,
    /// The region belongs to another protection domain.
    #[error("STag belongs to another protection domain")]
    ProtectionDomain,
    /// The region does not grant the right asked for.
    #[error("access rights violation")]
    AccessRights,
    /// The range is not inside the region.
    #[error("base or bounds violation")]
    BaseOrBounds,
    /// TO + length wraps the 64-bit offset space.
    #[error("tagged offset wraps")]
    ToWrap,
}

impl AccessError {
    /// The Terminate for a tagged placement error (RDMA Write, Read Response; RFC 5041 §7.2).
    /// DDP has no access-rights code: that case is reported by RDMAP as a remote protection
    /// error (RFC 5040 §7.2), see `docs/deviations.md`.
    pub fn tagged_cause(self) -> TerminateCause {
        match self {
            AccessError::InvalidStag => TerminateCause::TaggedBuffer(TaggedBuffer::InvalidStag),
            AccessError::ProtectionDomain => TerminateCause::TaggedBuffer(TaggedBuffer::StagNotAssociated),
            AccessError::AccessRights => TerminateCause::RemoteProtection(RemoteProtection::AccessRights),
            AccessError::BaseOrBounds => TerminateCause::TaggedBuffer(TaggedBuffer::BaseOrBounds),
            AccessError::ToWrap => TerminateCause::TaggedBuffer(TaggedBuffer::ToWrap),
        }
    }

    /// The Terminate for an RDMAP-level check (Read Request source, atomics, Send with
    /// Invalidate; RFC 5040 §7.2 "Remote Protection Error").
    pub fn rdmap_cause(self) -> TerminateCause {
        TerminateCause::RemoteProtection(match self {
            AccessError::InvalidStag => RemoteProtection::InvalidStag,
            AccessError::ProtectionDomain => RemoteProtection::StagNotAssociated,
            AccessError::AccessRights => RemoteProtection::AccessRights,
            AccessError::BaseOrBounds => RemoteProtection::BaseOrBounds,
            AccessError::ToWrap => RemoteProtection::ToWrap,
        })
    }
}

/// The access check: a region (if the STag named one), the expected STag, the stream's
/// protection domain, the right needed, and the range. In the fixed order valid → PD →
/// rights → bounds (RFC 5041 §7.2, RFC 5040 §7.2).
///
/// # Errors
/// The first check that fails.
pub fn check(mr: Option<&MrRef>, stag: Stag, pd: PdId, need: Access, to: u64, len: u64) -> Result<Window, AccessError> {
    let mr = match mr {
        Some(mr) if mr.is_valid_as(stag) => mr,
        _ => return Err(AccessError::InvalidStag),
    };
    if mr.pd != pd {
        return Err(AccessError::ProtectionDomain);
    }
    if !mr.access.contains(need) {
        return Err(AccessError::AccessRights);
    }
    let end = to.checked_add(len).ok_or(AccessError::ToWrap)?;
    let region_end = mr.base + mr.len() as u64;
    if to < mr.base || end > region_end {
        return Err(AccessError::BaseOrBounds);
    }
    Ok(Window { mr: Arc::clone(mr), offset: (to - mr.base) as usize, len: len as usize })
}

/// Largest STag index (24 bits).
const INDEX_MAX: u32 = 0x00FF_FFFF;

/// The STags of one device.
///
/// Lookups take a read lock on a hash map; engines cache the region of the message they are
/// placing, so the lock is taken once per message, not per segment.
#[derive(Debug)]
pub struct StagTable {
    map: RwLock<HashMap<u32, MrRef>>,
    alloc: Mutex<IndexAlloc>,
    next_pd: AtomicU32,
}

#[derive(Debug)]
struct IndexAlloc {
    next: u32,
    rng: fastrand::Rng,
}

/// Why a registration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// All 2^24 - 1 indexes are in use.
    #[error("no free STag index")]
    Exhausted,
    /// The region's Tagged Offsets would run past 2^64 - 1.
    #[error("a region at Tagged Offset {base:#x} of {len} bytes runs past the end of the offset space")]
    ToWrap {
        /// The first byte's Tagged Offset.
        base: u64,
        /// The region's length.
        len: usize,
    },
}

/// Why [`StagTable::rekey`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RekeyError {
    /// The region is still valid under its current STag.
    #[error("the region is still valid: invalidate it before rekeying")]
    Valid,
    /// The region was deregistered.
    #[error("the region was deregistered")]
    Deregistered,
}

impl StagTable {
    /// An empty table whose random choices (first index, keys) come from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let next = rng.u32(1..=INDEX_MAX);
        StagTable {
            map: RwLock::new(HashMap::new()),
            alloc: Mutex::new(IndexAlloc { next, rng }),
            next_pd: AtomicU32::new(1),
        }
    }

    /// A fresh protection domain identifier.
    pub fn new_pd(&self) -> PdId {
        PdId(self.next_pd.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers `mem` under a fresh STag. `base` is the Tagged Offset of its first byte.
    ///
    /// # Errors
    /// [`RegisterError::Exhausted`] when every index is taken.
    pub fn register(&self, mem: RawMem, pd: PdId, access: Access, base: u64) -> Result<MrRef, RegisterError> {
        // Every byte needs a Tagged Offset (RFC 5041 §3: TOs are 64-bit): the access check
        // computes the region's end as base + length.
        if base.checked_add(mem.len() as u64).is_none() {
            return Err(RegisterError::ToWrap { base, len: mem.len() });
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut alloc = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= INDEX_MAX as usize {
            return Err(RegisterError::Exhausted);
        }
        // Cyclic from a random start: a just-freed index comes back last.
        let mut index = alloc.next;
        while map.contains_key(&index) {
            index = if index == INDEX_MAX { 1 } else { index + 1 };
        }
        alloc.next = if index == INDEX_MAX { 1 } else { index + 1 };
        let key = alloc.rng.u8(..);
        // Index ≥ 1, so the STag is never 0.
        let stag = Stag::from_parts(index, key);
        let region = Arc::new(Region { mem, state: AtomicU64::new(u64::from(stag.0) | VALID), pd, access, base });
        map.insert(index, Arc::clone(&region));
        Ok(region)
    }

    /// The region an STag names, if its index is registered and its key matches. The
    /// region may still be invalid (use [`check`]).
    pub fn lookup(&self, stag: Stag) -> Option<MrRef> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&stag.index()).filter(|r| r.stag() == stag).cloned()
    }

    /// Invalidates and removes a region. Returns `false` if it was already gone.
    pub fn deregister(&self, mr: &MrRef) -> bool {
        // Invalid and never valid again (a rekey is refused from now on).
        mr.state.fetch_or(DEREGISTERED, Ordering::AcqRel);
        mr.invalidate();
        let index = mr.stag().index();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&index) {
            Some(r) if Arc::ptr_eq(r, mr) => {
                map.remove(&index);
                true
            }
            _ => false,
        }
    }

    /// Invalidates the region `stag` names on behalf of protection domain `pd` (Send with
    /// Invalidate, Local Invalidate). The STag stays registered but no longer passes [`check`].
    ///
    /// # Errors
    /// [`AccessError::InvalidStag`] if no valid region has this STag,
    /// [`AccessError::ProtectionDomain`] if it belongs to another domain.
    pub fn invalidate(&self, stag: Stag, pd: PdId) -> Result<(), AccessError> {
        let mr = self.lookup(stag).ok_or(AccessError::InvalidStag)?;
        if mr.pd != pd {
            return Err(AccessError::ProtectionDomain);
        }
        // Only the STag asked for: a region rekeyed meanwhile stays valid under its new one.
        if !mr.invalidate_as(stag) {
            return Err(AccessError::InvalidStag);
        }
        Ok(())
    }

    /// Invalidates `mr` locally, whatever its STag (a Local Invalidate done at once).
    /// Returns `false` if it was not valid.
    pub fn invalidate_region(&self, mr: &MrRef) -> bool {
        mr.invalidate()
    }

    /// Validates an invalidated region again under a new STag: the same index with the next
    /// 8-bit key (wrapping), as a fast-register work request does on RDMA hardware. The old
    /// STag keeps failing [`check`] and [`lookup`](Self::lookup) (it is 255 rekeys before a key
    /// repeats). Returns the new STag.
    ///
    /// # Errors
    /// [`RekeyError::Valid`] if the region is valid (invalidate it first, so that nothing can
    /// still be using the old STag); [`RekeyError::Deregistered`] once deregistered.
    pub fn rekey(&self, mr: &MrRef) -> Result<Stag, RekeyError> {
        let mut cur = mr.state.load(Ordering::Acquire);
        loop {
            if cur & DEREGISTERED != 0 || mr.is_revoked() {
                return Err(RekeyError::Deregistered);
            }
            if cur & VALID != 0 {
                return Err(RekeyError::Valid);
            }
            let old = Stag(cur as u32);
            let stag = Stag::from_parts(old.index(), old.key().wrapping_add(1));
            match mr.state.compare_exchange(cur, u64::from(stag.0) | VALID, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(stag),
                Err(now) => cur = now,
            }
        }
    }

    /// Number of registered regions.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// `true` if no region is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iwarp_wire::terminate::TaggedBuffer;

    fn table() -> StagTable {
        StagTable::new(7)
    }

    #[test]
    fn stags_are_never_zero_and_distinct() {
        let t = table();
        let pd = t.new_pd();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let r = t.register(RawMem::alloc(8, false).unwrap(), pd, Access::empty(), 0).unwrap();
            assert_ne!(r.stag().0, 0);
            assert_ne!(r.stag().index(), 0);
            assert!(seen.insert(r.stag().index()));
        }
        assert_eq!(t.len(), 1000);
    }

    #[test]
    fn check_order_is_valid_pd_rights_bounds() {
        let t = table();
        let pd = t.new_pd();
        let other = t.new_pd();
        let r = t.register(RawMem::alloc(4096, false).unwrap(), pd, Access::REMOTE_WRITE, 0x1000).unwrap();
        let s = r.stag();
        let m = Some(&r);
        assert_eq!(check(None, s, pd, Access::REMOTE_WRITE, 0x1000, 1).unwrap_err(), AccessError::InvalidStag);
        let wrong_key = Stag::from_parts(s.index(), s.key().wrapping_add(1));
        assert_eq!(check(m, wrong_key, pd, Access::REMOTE_WRITE, 0x1000, 1).unwrap_err(), AccessError::InvalidStag);
        // PD is checked before rights and bounds.
        assert_eq!(check(m, s, other, Access::REMOTE_READ, 0, u64::MAX).unwrap_err(), AccessError::ProtectionDomain);
        // Rights before bounds.
        assert_eq!(check(m, s, pd, Access::REMOTE_READ, 0, 1).unwrap_err(), AccessError::AccessRights);
        assert_eq!(check(m, s, pd, Access::REMOTE_WRITE, 0xFFF, 1).unwrap_err(), AccessError::BaseOrBounds);
        assert_eq!(check(m, s, pd, Access::REMOTE_WRITE, 0x1FFF, 2).unwrap_err(), AccessError::BaseOrBounds);
        assert_eq!(check(m, s, pd, Access::REMOTE_WRITE, u64::MAX, 2).unwrap_err(), AccessError::ToWrap);
        let w = check(m, s, pd, Access::REMOTE_WRITE, 0x1FFF, 1).unwrap();
        assert_eq!((w.offset, w.len), (0xFFF, 1));
        assert_eq!(check(m, s, pd, Access::REMOTE_WRITE, 0x2000, 0).unwrap().len, 0);
    }

    #[test]
    fn stale_stag_never_matches_after_deregistration() {
        let t = table();
        let pd = t.new_pd();
        let r = t.register(RawMem::alloc(64, false).unwrap(), pd, Access::REMOTE_READ, 0).unwrap();
        let s = r.stag();
        assert!(t.deregister(&r));
        assert!(t.lookup(s).is_none());
        // A cached handle fails the check too.
        assert_eq!(check(Some(&r), s, pd, Access::REMOTE_READ, 0, 1).unwrap_err(), AccessError::InvalidStag);
        // The next registrations do not reuse the index.
        for _ in 0..100 {
            let n = t.register(RawMem::alloc(8, false).unwrap(), pd, Access::REMOTE_READ, 0).unwrap();
            assert_ne!(n.stag().index(), s.index());
        }
    }

    #[test]
    fn a_revoked_region_fails_the_check_and_grants_no_pins() {
        let t = table();
        let pd = t.new_pd();
        let r = t.register(RawMem::alloc(64, false).unwrap(), pd, Access::REMOTE_WRITE, 0).unwrap();
        let pin = r.pin().expect("pinned");
        assert!(Arc::ptr_eq(pin.region(), &r));
        assert!(t.deregister(&r));
        r.revoke();
        assert!(r.is_revoked());
        assert_eq!(check(Some(&r), r.stag(), pd, Access::REMOTE_WRITE, 0, 1).unwrap_err(), AccessError::InvalidStag);
        assert!(r.pin().is_none());
        assert!(!r.mem().try_seal(), "pinned");
        drop(pin);
        assert!(r.mem().try_seal());
        assert!(!r.mem().write(0, b"x"));
    }

    #[test]
    fn invalidate_checks_pd_and_is_one_shot() {
        let t = table();
        let pd = t.new_pd();
        let r = t.register(RawMem::alloc(64, false).unwrap(), pd, Access::REMOTE_READ, 0).unwrap();
        assert_eq!(t.invalidate(r.stag(), PdId(999)), Err(AccessError::ProtectionDomain));
        assert_eq!(t.invalidate(r.stag(), pd), Ok(()));
        assert_eq!(t.invalidate(r.stag(), pd), Err(AccessError::InvalidStag));
        assert!(!r.is_valid());
    }

    #[test]
    fn rekey_validates_an_invalidated_region_under_the_next_key_only() {
        let t = table();
        let pd = t.new_pd();
        let r = t.register(RawMem::alloc(64, false).unwrap(), pd, Access::REMOTE_WRITE, 0).unwrap();
        let old = r.stag();
        assert_eq!(t.rekey(&r), Err(RekeyError::Valid));
        assert_eq!(t.invalidate(old, pd), Ok(()));
        let new = t.rekey(&r).unwrap();
        assert_eq!((new.index(), new.key()), (old.index(), old.key().wrapping_add(1)));
        assert_eq!(r.stag(), new);
        assert!(r.is_valid());
        // The old STag is stale: the check, the lookup and an invalidation by it all fail.
        assert_eq!(check(Some(&r), old, pd, Access::REMOTE_WRITE, 0, 1).unwrap_err(), AccessError::InvalidStag);
        assert!(t.lookup(old).is_none());
        assert_eq!(t.invalidate(old, pd), Err(AccessError::InvalidStag));
        assert!(r.is_valid(), "an invalidation with the old STag leaves the new one valid");
        assert_eq!(check(Some(&r), new, pd, Access::REMOTE_WRITE, 0, 1).unwrap().len, 1);
        assert!(Arc::ptr_eq(&t.lookup(new).unwrap(), &r));
        // Local invalidation, then 255 more rekeys before the first key comes back.
        let mut keys = std::collections::HashSet::from([old.key(), new.key()]);
        for _ in 0..254 {
            assert!(t.invalidate_region(&r));
            assert!(!t.invalidate_region(&r));
            assert!(keys.insert(t.rekey(&r).unwrap().key()));
        }
        assert!(t.invalidate_region(&r));
        assert_eq!(t.rekey(&r).unwrap(), old);
        // Never once deregistered.
        assert!(t.deregister(&r));
        assert_eq!(t.rekey(&r), Err(RekeyError::Deregistered));
        assert!(!r.is_valid());
    }

    #[test]
    fn a_region_must_fit_the_tagged_offset_space() {
        let t = StagTable::new(1);
        let pd = t.new_pd();
        let past = t.register(RawMem::alloc(16, false).unwrap(), pd, Access::REMOTE_WRITE, u64::MAX - 14);
        assert_eq!(past.err(), Some(RegisterError::ToWrap { base: u64::MAX - 14, len: 16 }));
        // Ending exactly at the top is fine, and the access check at the top does not overflow.
        let top = t.register(RawMem::alloc(16, false).unwrap(), pd, Access::REMOTE_WRITE, u64::MAX - 16).unwrap();
        let w = check(Some(&top), top.stag(), pd, Access::REMOTE_WRITE, u64::MAX - 1, 1).unwrap();
        assert_eq!((w.offset, w.len), (15, 1));
        assert_eq!(
            check(Some(&top), top.stag(), pd, Access::REMOTE_WRITE, u64::MAX - 1, 2).err(),
            Some(AccessError::ToWrap)
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            AccessError::ProtectionDomain.tagged_cause(),
            TerminateCause::TaggedBuffer(TaggedBuffer::StagNotAssociated)
        );
        assert_eq!(
            AccessError::ProtectionDomain.rdmap_cause(),
            TerminateCause::RemoteProtection(RemoteProtection::StagNotAssociated)
        );
        assert_eq!(
            AccessError::AccessRights.tagged_cause(),
            TerminateCause::RemoteProtection(RemoteProtection::AccessRights)
        );
    }
}
