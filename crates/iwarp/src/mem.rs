//! Protection domains and memory regions.

use crate::error::{DeregisterError, RangeError, RegisterError};
use crate::shared::DeviceInner;
use iwarp_proto::mem::{MrRef, PdId, RawMem, ReadGuard, Region, WriteGuard};
use iwarp_proto::qp::RemoteAddr;
use iwarp_wire::Stag;
use std::ptr::NonNull;
use std::sync::Arc as StdArc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a deregistration waits for the system calls under way on a region's memory.
/// Each is one non-blocking `readv` or `writev` (microseconds); only a thread stopped in one
/// takes longer.
const QUIESCE_LIMIT: Duration = Duration::from_secs(10);

pub use iwarp_proto::mem::{Access, RekeyError};

/// A protection domain: regions and queue pairs of one domain may only be used together
/// (RFC 5041 §8.2). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProtectionDomain {
    pub(crate) dev: Arc<DeviceInner>,
    pub(crate) id: PdId,
}

impl ProtectionDomain {
    pub(crate) fn new(dev: Arc<DeviceInner>) -> Self {
        let id = dev.stags.new_pd();
        ProtectionDomain { dev, id }
    }

    /// Registers `len` bytes of zeroed memory owned by the region. Peers address it by its
    /// STag and by Tagged Offsets starting at [`MemoryRegion::addr`].
    ///
    /// # Errors
    /// [`RegisterError::NoMemory`] if the memory cannot be allocated;
    /// [`RegisterError::NoStag`] if no STag is free.
    pub fn reg_mr(&self, len: usize, access: Access) -> Result<MemoryRegion, RegisterError> {
        self.register(alloc(len, false)?, access)
    }

    /// As [`reg_mr`](Self::reg_mr), backed by huge pages when the system has them (falls
    /// back to ordinary pages).
    ///
    /// # Errors
    /// As [`reg_mr`](Self::reg_mr).
    pub fn reg_mr_huge(&self, len: usize, access: Access) -> Result<MemoryRegion, RegisterError> {
        self.register(alloc(len, true)?, access)
    }

    /// Registers memory the caller owns.
    ///
    /// The memory is the caller's again once [`MemoryRegion::deregister`] returns `Ok`, or
    /// once the last clone of the region is dropped (which deregisters the same way and
    /// waits): from then on the stack never reads or writes it, whatever work requests or
    /// peers still named it. Work requests that still did fail (see
    /// [`MemoryRegion::deregister`]).
    ///
    /// # Safety
    /// - `ptr` must be valid for reads and writes of `len` bytes, and must stay allocated,
    ///   mapped and unmoved until [`MemoryRegion::deregister`] returned `Ok` for the region, or
    ///   the region and every clone of it are dropped (the stack reads and writes it from its
    ///   own threads until then).
    /// - Until then the caller accesses those bytes only through the region's methods (which
    ///   hold its access lock, see the crate's memory model), except at times when it knows
    ///   that neither the stack nor a peer can touch them: no work request naming them is in
    ///   flight, and no peer was given the region's STag with remote access. Holding a
    ///   `&[u8]`/`&mut [u8]` to them, or reading or writing them through the pointer, while
    ///   the stack may access them is a data race, which is undefined behaviour.
    ///
    /// # Errors
    /// [`RegisterError::NullPointer`] for a null pointer; [`RegisterError::NoStag`] if no STag
    /// is free.
    // The one `unsafe` item outside `sys`: the public entry point whose contract the caller
    // upholds; it only forwards to `RawMem::external`.
    #[allow(unsafe_code)]
    pub unsafe fn reg_mr_external(
        &self,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<MemoryRegion, RegisterError> {
        let ptr = NonNull::new(ptr).ok_or(RegisterError::NullPointer)?;
        // SAFETY: the caller upholds RawMem::external's contract, restated in this function's
        // # Safety section.
        let mem = unsafe { RawMem::external(ptr, len) };
        self.register_as(mem, access, true)
    }

    /// Registers a buffer the caller owns and moves in (`Vec<u8>`, `Box<[u8]>`, and
    /// `bytes::BytesMut` with the `bytes` feature), with no `unsafe`: the region covers the
    /// buffer's `len()` bytes (not a vector's spare capacity), in place, and
    /// [`OwnedRegion::into_inner`] gives the buffer back once the stack no longer uses it.
    ///
    /// ```
    /// # use iwarp::{Access, Device, DeviceConfig};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dev = Device::open(DeviceConfig::default())?;
    /// let pd = dev.alloc_pd();
    /// let mr = pd.reg_owned(b"hello".to_vec(), Access::LOCAL_WRITE | Access::REMOTE_READ)?;
    /// assert_eq!(&*mr.bytes(0, 5)?, b"hello"); // a region's bytes in place (see MemoryRegion)
    /// mr.bytes_mut(0, 1)?[0] = b'j';
    /// let v: Vec<u8> = mr.into_inner().map_err(|(_, e)| e)?; // deregistered, given back
    /// assert_eq!(v, b"jello");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`RegisterError::NoStag`] if no STag is free (the buffer is dropped).
    pub fn reg_owned<B: OwnedBuf>(&self, buf: B, access: Access) -> Result<OwnedRegion<B>, RegisterError> {
        let (mr, parts) = owned::register(buf, |mem| self.register_as(mem, access, true))?;
        Ok(OwnedRegion { mr, parts: Some(parts) })
    }

    fn register(&self, mem: RawMem, access: Access) -> Result<MemoryRegion, RegisterError> {
        self.register_as(mem, access, false)
    }

    fn register_as(&self, mem: RawMem, access: Access, external: bool) -> Result<MemoryRegion, RegisterError> {
        // Tagged Offsets are the region's address, as Linux peers use virtual addresses (so
        // they cannot run past the top of the offset space: the only failure left is running
        // out of STags).
        let base = mem.ptr_at(0) as u64;
        let region = self.dev.stags.register(mem, self.id, access, base).map_err(|_| RegisterError::NoStag)?;
        Ok(MemoryRegion { inner: Arc::new(MrInner { region, dev: Arc::clone(&self.dev), external }) })
    }

    /// The domain's identifier.
    pub fn id(&self) -> u32 {
        self.id.0
    }
}

/// `len` bytes of zeroed memory (`huge`: huge pages if the system has them).
fn alloc(len: usize, huge: bool) -> Result<RawMem, RegisterError> {
    RawMem::alloc(len, huge).map_err(|e| RegisterError::NoMemory { len, source: StdArc::new(e) })
}

#[derive(Debug)]
pub(crate) struct MrInner {
    pub(crate) region: MrRef,
    dev: Arc<DeviceInner>,
    /// Caller-owned memory ([`ProtectionDomain::reg_mr_external`]): revoked when dropped.
    external: bool,
}

impl Drop for MrInner {
    fn drop(&mut self) {
        self.dev.stags.deregister(&self.region);
        if self.external {
            // The caller may free the memory once the last handle is gone.
            if let Err(e) = quiesce(&self.region) {
                tracing::error!(stag = ?self.region.stag(), error = %e, "dropped region still in use");
            }
        }
    }
}

/// Revokes `region`'s memory and waits until nothing in the stack uses it: system calls
/// under way on it return (their pins are dropped), then copies under way finish, and later
/// ones are refused (see `iwarp_proto::mem::RawMem`'s revocation steps). Spins briefly, then
/// yields, then sleeps, for at most [`QUIESCE_LIMIT`].
fn quiesce(region: &Region) -> Result<(), DeregisterError> {
    region.revoke();
    let start = Instant::now();
    let mut turns = 0u32;
    loop {
        if region.mem().try_seal() {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited > QUIESCE_LIMIT {
            return Err(DeregisterError::Busy { pinned: region.mem().pinned(), waited });
        }
        turns += 1;
        if turns < 100 {
            std::hint::spin_loop();
        } else if turns < 200 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// A registered memory region. Cheap to clone; deregistered when the last clone is dropped,
/// or by [`deregister`](Self::deregister). Memory the region owns lives on while a work
/// request still uses it when the last clone is dropped; caller-owned memory
/// ([`ProtectionDomain::reg_mr_external`]) and an explicit deregistration follow the verbs:
/// see [`deregister`](Self::deregister).
///
/// The region's bytes are shared with the network: read and write them with
/// [`read`](Self::read) and [`write`](Self::write), which copy under the region's access lock,
/// so they are safe at any time (see the crate's memory model). Bytes a peer writes while you read them
/// are indeterminate: look at an RDMA Write target only after a later message says it is
/// complete (RFC 5040's "no peeking" rule).
#[derive(Debug, Clone)]
pub struct MemoryRegion {
    pub(crate) inner: Arc<MrInner>,
}

/// A scatter/gather element: `len` bytes at `offset` of a region.
#[derive(Debug, Clone, Copy)]
pub struct Sge<'a> {
    /// The region.
    pub mr: &'a MemoryRegion,
    /// Offset within it.
    pub offset: usize,
    /// Length.
    pub len: usize,
}

impl MemoryRegion {
    /// The STag: used both as local key and as the remote key peers name it by.
    pub fn stag(&self) -> Stag {
        self.inner.region.stag()
    }
    /// The remote key (same as [`stag`](Self::stag)).
    pub fn rkey(&self) -> u32 {
        self.stag().0
    }
    /// The local key (same as [`stag`](Self::stag)).
    pub fn lkey(&self) -> u32 {
        self.stag().0
    }
    /// The Tagged Offset of the first byte (its address).
    pub fn addr(&self) -> u64 {
        self.inner.region.base()
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.inner.region.len()
    }
    /// `true` for a zero-length region.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Access rights.
    pub fn access(&self) -> Access {
        self.inner.region.access()
    }
    /// `false` once invalidated (by a peer's Send with Invalidate or a Local Invalidate) or
    /// deregistered.
    pub fn is_valid(&self) -> bool {
        self.inner.region.is_valid()
    }
    /// Invalidates the region now, as a Local Invalidate work request would once executed:
    /// its STag stops passing peers' access checks (a later RDMA Write, Read or Send with
    /// Invalidate naming it terminates the connection as for any invalid STag). The memory
    /// stays registered and readable and writable through [`read`](Self::read) and
    /// [`write`](Self::write); [`rekey`](Self::rekey) makes it usable again under a new STag.
    /// Returns `false` if it was already invalid (or deregistered).
    pub fn invalidate(&self) -> bool {
        self.inner.dev.stags.invalidate_region(&self.inner.region)
    }

    /// Validates an invalidated region again under a new STag and returns it: the same index
    /// with the next 8-bit key, as a fast-register work request (`IBV_WR_REG_MR`) does on
    /// RDMA hardware. A region that a peer's Send with Invalidate (or
    /// [`invalidate`](Self::invalidate)) invalidated can so be handed out for the next
    /// operation without registering memory again.
    ///
    /// The old STag stays stale: a peer's late access with it fails its access check and the
    /// connection terminates (RFC 5040/5041 Terminate, invalid STag), and a Send with
    /// Invalidate naming it invalidates nothing. Only after 255 further rekeys does a key
    /// repeat. Rekeying only an invalid region means that nothing that was given the old
    /// STag can reach the memory any more; which local work requests still name the region
    /// through [`Sge`]s (they hold the region itself, not its STag) is the application's to
    /// track, as with any reuse of a buffer.
    ///
    /// ```
    /// # use iwarp::{Access, Device, DeviceConfig, RekeyError};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dev = Device::open(DeviceConfig::default())?;
    /// let pd = dev.alloc_pd();
    /// let mr = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
    /// let old = mr.stag();
    /// assert_eq!(mr.rekey(), Err(RekeyError::Valid));
    /// assert!(mr.invalidate()); // or a peer's Send with Invalidate
    /// let new = mr.rekey()?;
    /// assert_eq!((new.index(), new.key()), (old.index(), old.key().wrapping_add(1)));
    /// assert!(mr.is_valid() && mr.stag() == new);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`RekeyError::Valid`] if the region is still valid (invalidate it first);
    /// [`RekeyError::Deregistered`] once deregistered.
    pub fn rekey(&self) -> Result<Stag, RekeyError> {
        self.inner.dev.stags.rekey(&self.inner.region)
    }

    /// Deregisters the region now (`ibv_dereg_mr`), for every clone of this handle, and waits
    /// until the stack no longer touches its memory: when it returns `Ok`, no placement, no
    /// receive plan and no transmit reads or writes the bytes any more, nor will they, so
    /// caller-owned memory may be freed.
    ///
    /// The STag stops naming the region at once: a peer's later RDMA Write or Read with it
    /// fails its access check (the connection terminates with an invalid-STag error). A
    /// placement or a send from the region's bytes already under way is waited for (one
    /// system call, microseconds). Work that still names the region afterwards is the
    /// application's error, as in the verbs (deregistering a region that posted work requests
    /// use); the stack does not crash or touch the memory, and the work fails:
    ///
    /// - a send-queue request not yet started completes with
    ///   [`WcStatus::LocalProtection`](crate::WcStatus::LocalProtection);
    /// - a Send, Write or Read Response partly framed or sent from the region, a receive
    ///   being filled, a Read whose response is arriving into it: the queue pair fails with a
    ///   local catastrophic error ([`QpEvent::Error`](crate::QpEvent::Error) with
    ///   [`TerminateCause::RdmapCatastrophic`](crate::TerminateCause::RdmapCatastrophic)); a
    ///   receive being filled completes with a local protection error, everything else
    ///   outstanding completes flushed;
    /// - a posted receive not yet started fails the same way when a Send arrives for it.
    ///
    /// Afterwards [`read`](Self::read) and [`write`](Self::write) fail on every clone.
    /// Calling it again returns `Ok` at once.
    ///
    /// # Errors
    /// [`DeregisterError::Busy`] if a system call on the region's bytes is still under way
    /// after 10 seconds (a thread of the stack stopped inside it); the region stays revoked.
    pub fn deregister(&self) -> Result<(), DeregisterError> {
        self.inner.dev.stags.deregister(&self.inner.region);
        quiesce(&self.inner.region)
    }
    /// Copies bytes out of the region.
    ///
    /// # Errors
    /// [`RangeError`] if the range is outside the region, or the region was deregistered.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), RangeError> {
        if self.inner.region.mem().read(offset, dst) {
            Ok(())
        } else {
            Err(RangeError { offset, len: dst.len(), region_len: self.len() })
        }
    }
    /// Copies bytes into the region.
    ///
    /// # Errors
    /// [`RangeError`] if the range is outside the region, or the region was deregistered.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), RangeError> {
        if self.inner.region.mem().write(offset, src) {
            Ok(())
        } else {
            Err(RangeError { offset, len: src.len(), region_len: self.len() })
        }
    }
    /// The bytes `offset..offset + len` in place, without a copy: the guard dereferences to
    /// them and holds the region's access lock shared until it is dropped (see the crate's
    /// memory model), so the stack writes none of them meanwhile (no placement copied in, no
    /// atomic) and deregistration waits for it.
    ///
    /// The kernel may still place a peer's RDMA Write, a Read Response or a Send directly
    /// into the region while you look: as with [`read`](Self::read), bytes a peer or posted
    /// work may be writing are indeterminate until a completion or a later message says the
    /// write is over.
    ///
    /// Hold it briefly, as a copy would: while it lives the stack's copies into this region
    /// wait for it (an event-loop thread among them). Do not wait for the stack
    /// (a completion, a connection) and do not take another guard or call
    /// [`write`](Self::write) on the same region while holding it.
    ///
    /// # Errors
    /// [`RangeError`] if the range is outside the region, or the region was deregistered.
    pub fn bytes(&self, offset: usize, len: usize) -> Result<RegionBytes<'_>, RangeError> {
        match self.inner.region.mem().lock_read(offset, len) {
            Some(g) => Ok(RegionBytes(g)),
            None => Err(RangeError { offset, len, region_len: self.len() }),
        }
    }

    /// The bytes `offset..offset + len` in place, writable without a copy: the guard
    /// dereferences to them mutably and holds the region's access lock exclusively until it
    /// is dropped, so no copy or CRC pass of the stack over the region runs meanwhile.
    ///
    /// What you write is sent by work requests posted after the guard is dropped. Changing
    /// bytes that posted, uncompleted work is sending makes what it sends indeterminate
    /// (with CRC on, the peer may see a CRC error), and the kernel may place a peer's bytes
    /// into the region at any time, as with [`write`](Self::write). The same rules as for
    /// [`bytes`](Self::bytes) apply to holding it.
    ///
    /// # Errors
    /// [`RangeError`] if the range is outside the region, or the region was deregistered.
    pub fn bytes_mut(&self, offset: usize, len: usize) -> Result<RegionBytesMut<'_>, RangeError> {
        match self.inner.region.mem().lock_write(offset, len) {
            Some(g) => Ok(RegionBytesMut(g)),
            None => Err(RangeError { offset, len, region_len: self.len() }),
        }
    }

    /// The bytes `offset..offset + len` as a new vector.
    ///
    /// # Errors
    /// [`RangeError`] if the range is outside the region.
    pub fn to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>, RangeError> {
        let mut v = vec![0; len];
        self.read(offset, &mut v)?;
        Ok(v)
    }
    /// A scatter/gather element over `len` bytes at `offset`.
    pub fn sge(&self, offset: usize, len: usize) -> Sge<'_> {
        Sge { mr: self, offset, len }
    }
    /// The whole region as one element.
    pub fn sge_all(&self) -> Sge<'_> {
        self.sge(0, self.len())
    }
    /// How a peer names the bytes from `offset` to the end of this region: STag, Tagged
    /// Offset and length (at most `u32::MAX`, the longest RDMA message; 0 if `offset` is
    /// at or past the end). Send it to the peer with [`RemoteAddr::to_bytes`].
    pub fn remote(&self, offset: u64) -> RemoteAddr {
        let left = (self.len() as u64).saturating_sub(offset);
        RemoteAddr::new(self.stag(), self.addr() + offset, left.min(u64::from(u32::MAX)) as u32)
    }
    /// Raw address of the first byte, e.g. to hand to code that fills the buffer.
    /// Dereferencing it is `unsafe` and subject to the contract of
    /// [`ProtectionDomain::reg_mr_external`]: only while neither the stack nor a peer can be
    /// touching those bytes.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.region.mem().ptr_at(0)
    }
    pub(crate) fn region(&self) -> &MrRef {
        &self.inner.region
    }
}

/// A region's bytes held readable ([`MemoryRegion::bytes`]): dereferences to `&[u8]`.
#[derive(Debug)]
pub struct RegionBytes<'a>(ReadGuard<'a>);

impl std::ops::Deref for RegionBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for RegionBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A region's bytes held writable ([`MemoryRegion::bytes_mut`]): dereferences to
/// `&mut [u8]`.
#[derive(Debug)]
pub struct RegionBytesMut<'a>(WriteGuard<'a>);

impl std::ops::Deref for RegionBytesMut<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for RegionBytesMut<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl AsRef<[u8]> for RegionBytesMut<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for RegionBytesMut<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Sge<'_> {
    pub(crate) fn to_proto(self) -> iwarp_proto::qp::Sge {
        iwarp_proto::qp::Sge { mr: Arc::clone(self.mr.region()), offset: self.offset, len: self.len }
    }
}

/// A buffer [`ProtectionDomain::reg_owned`] can register and give back: `Vec<u8>`,
/// `Box<[u8]>`, and `bytes::BytesMut` with the `bytes` feature. Sealed: the stack relies on
/// how each keeps its bytes (one heap block that stays put while the buffer is moved).
pub trait OwnedBuf: owned::Sealed + Send + 'static {}

impl OwnedBuf for Vec<u8> {}
impl OwnedBuf for Box<[u8]> {}
#[cfg(feature = "bytes")]
impl OwnedBuf for bytes::BytesMut {}

/// A memory region over a buffer the application moved in ([`ProtectionDomain::reg_owned`]).
/// Dereferences to its [`MemoryRegion`] for everything else (posting, [`MemoryRegion::remote`],
/// the zero-copy [`MemoryRegion::bytes`] and [`MemoryRegion::bytes_mut`]).
///
/// [`into_inner`](Self::into_inner) deregisters the region (for every clone of the
/// `MemoryRegion`, which fail their accesses afterwards), waits until the stack no longer
/// touches the memory, and returns the buffer. Dropping it does the same and drops the buffer.
/// Posted work that still names the region then fails as [`MemoryRegion::deregister`]
/// describes; the buffer is never freed while the stack may touch it.
#[derive(Debug)]
pub struct OwnedRegion<B: OwnedBuf> {
    mr: MemoryRegion,
    /// What rebuilds the buffer (`None` once given back).
    parts: Option<<B as owned::Sealed>::Parts>,
}

impl<B: OwnedBuf> OwnedRegion<B> {
    /// The region (cheap to clone; clones stop working once the buffer is given back).
    pub fn region(&self) -> &MemoryRegion {
        &self.mr
    }

    /// Deregisters the region and returns the buffer, with what the network and the
    /// application wrote into it.
    ///
    /// # Errors
    /// [`DeregisterError::Busy`] if a system call on the memory is still under way after 10
    /// seconds; the region is revoked and handed back with the error, to retry or drop (a
    /// buffer whose release never succeeds is leaked, never freed under the stack).
    pub fn into_inner(mut self) -> Result<B, (Self, DeregisterError)> {
        // Present until given back, and given back only here (which consumes self) or on drop.
        let Some(parts) = self.parts.take() else { unreachable!("an owned region without its buffer") };
        match owned::reclaim::<B>(&self.mr, parts) {
            Ok(buf) => Ok(buf),
            Err((parts, e)) => {
                self.parts = Some(parts);
                Err((self, e))
            }
        }
    }
}

impl<B: OwnedBuf> std::ops::Deref for OwnedRegion<B> {
    type Target = MemoryRegion;
    fn deref(&self) -> &MemoryRegion {
        &self.mr
    }
}

impl<B: OwnedBuf> Drop for OwnedRegion<B> {
    fn drop(&mut self) {
        let Some(parts) = self.parts.take() else { return };
        match owned::reclaim::<B>(&self.mr, parts) {
            Ok(buf) => drop(buf),
            Err((parts, e)) => {
                // Freeing it could let the stack write freed memory: leak it instead.
                tracing::error!(stag = ?self.mr.stag(), error = %e, "owned buffer still in use: leaked");
                std::mem::forget(parts);
            }
        }
    }
}

/// Taking the supported buffers apart into a raw block and putting them together again. The
/// `unsafe` of owned registration lives here.
mod owned {
    #![allow(unsafe_code)]

    use super::{DeregisterError, MemoryRegion, RawMem, RegisterError};
    use std::mem::ManuallyDrop;
    use std::ptr::NonNull;

    /// How a buffer is taken apart and rebuilt; implemented only in this module.
    pub trait Sealed: Sized {
        /// What, besides the block's address and length, rebuilds the buffer.
        type Parts: Send + Sync + std::fmt::Debug;
        /// The buffer's bytes as a block and what rebuilds it. The block is the buffer's
        /// `len()` initialised bytes, which stay put and which nothing else refers to until
        /// [`rebuild`](Self::rebuild).
        fn take_apart(self) -> (NonNull<u8>, usize, Self::Parts);
        /// # Safety
        /// `ptr`, `len` and `parts` come from one [`take_apart`](Self::take_apart) of this type,
        /// used once.
        unsafe fn rebuild(ptr: NonNull<u8>, len: usize, parts: Self::Parts) -> Self;
    }

    impl Sealed for Vec<u8> {
        type Parts = usize;
        fn take_apart(self) -> (NonNull<u8>, usize, usize) {
            let mut v = ManuallyDrop::new(self);
            // A vector's pointer is never null (dangling when it has no capacity).
            let ptr = NonNull::new(v.as_mut_ptr()).unwrap_or(NonNull::dangling());
            (ptr, v.len(), v.capacity())
        }
        unsafe fn rebuild(ptr: NonNull<u8>, len: usize, capacity: usize) -> Self {
            // SAFETY: the pointer, length and capacity of a vector taken apart above, whose
            // allocation nothing freed (the caller's contract).
            unsafe { Vec::from_raw_parts(ptr.as_ptr(), len, capacity) }
        }
    }

    impl Sealed for Box<[u8]> {
        type Parts = ();
        fn take_apart(self) -> (NonNull<u8>, usize, ()) {
            let len = self.len();
            // Box::into_raw never returns null.
            let ptr = NonNull::new(Box::into_raw(self).cast::<u8>()).unwrap_or(NonNull::dangling());
            (ptr, len, ())
        }
        unsafe fn rebuild(ptr: NonNull<u8>, len: usize, (): ()) -> Self {
            // SAFETY: the pointer and length of a box taken apart with Box::into_raw above
            // (the caller's contract), not freed since.
            unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.as_ptr(), len)) }
        }
    }

    #[cfg(feature = "bytes")]
    impl Sealed for bytes::BytesMut {
        /// The buffer itself: it keeps its bytes behind a raw pointer, so moving it moves no
        /// byte and claims no exclusive access to them.
        type Parts = bytes::BytesMut;
        fn take_apart(mut self) -> (NonNull<u8>, usize, bytes::BytesMut) {
            let ptr = NonNull::new(self.as_mut_ptr()).unwrap_or(NonNull::dangling());
            (ptr, self.len(), self)
        }
        unsafe fn rebuild(_ptr: NonNull<u8>, _len: usize, parts: bytes::BytesMut) -> Self {
            parts
        }
    }

    /// Registers `buf`'s bytes in place with `register` (which gets them as caller-owned
    /// memory) and returns the region and what rebuilds the buffer ([`reclaim`]). If
    /// `register` fails, the buffer is rebuilt and dropped.
    pub(super) fn register<B: Sealed>(
        buf: B,
        register: impl FnOnce(RawMem) -> Result<MemoryRegion, RegisterError>,
    ) -> Result<(MemoryRegion, B::Parts), RegisterError> {
        let (ptr, len, parts) = buf.take_apart();
        // SAFETY: the block is the buffer's heap memory, valid for `len` bytes and referred to
        // by nothing else (the buffer was moved in and taken apart). It stays allocated and in
        // place until the buffer is rebuilt, which happens only below, after the block was
        // dropped unregistered, or in `reclaim`, after the region was deregistered (sealed: the
        // stack never touches it again); a region that cannot be deregistered leaks it.
        let mem = unsafe { RawMem::external(ptr, len) };
        match register(mem) {
            Ok(mr) => Ok((mr, parts)),
            Err(e) => {
                // SAFETY: from the take_apart above, used once; the block was dropped without
                // being registered, so nothing else refers to it.
                drop(unsafe { B::rebuild(ptr, len, parts) });
                Err(e)
            }
        }
    }

    /// Deregisters a region [`register`] made and rebuilds its buffer from `parts`; gives
    /// `parts` back if deregistration could not finish (then the buffer must stay unbuilt).
    pub(super) fn reclaim<B: Sealed>(mr: &MemoryRegion, parts: B::Parts) -> Result<B, (B::Parts, DeregisterError)> {
        if let Err(e) = mr.deregister() {
            return Err((parts, e));
        }
        let ptr = NonNull::new(mr.as_ptr()).unwrap_or(NonNull::dangling());
        // SAFETY: `mr` is the region `register` made over the block of one take_apart of this
        // type (its own address and length, as registered), and `parts` that take_apart's,
        // moved here once. Deregistration returned Ok: the memory is sealed and the stack
        // never touches it again, whatever clones of the region remain.
        Ok(unsafe { B::rebuild(ptr, mr.len(), parts) })
    }
}
