//! Protection domains and memory regions.

use crate::error::{DeregisterError, RangeError, RegisterError};
use crate::shared::DeviceInner;
use iwarp_proto::mem::{MrRef, PdId, RawMem, Region};
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

pub use iwarp_proto::mem::Access;

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
    /// How a peer names byte `offset` of this region.
    pub fn remote(&self, offset: u64) -> RemoteAddr {
        RemoteAddr { stag: self.stag(), to: self.addr() + offset }
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

impl Sge<'_> {
    pub(crate) fn to_proto(self) -> iwarp_proto::qp::Sge {
        iwarp_proto::qp::Sge { mr: Arc::clone(self.mr.region()), offset: self.offset, len: self.len }
    }
}
