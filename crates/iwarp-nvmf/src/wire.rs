//! The NVMe over Fabrics RDMA transport binding on the wire: RDMA CM private data, 64-byte
//! command capsules (SQEs), 16-byte completions (CQEs), SGL descriptors, Fabrics commands
//! (Connect, Property Get/Set), the Identify data structures and the controller properties.
//!
//! Everything is little-endian, as in the NVMe base specification (§4 "Data Structures") and
//! the NVMe over Fabrics specification (§3 "Fabrics Command Set", the RDMA transport binding's
//! "RDMA CM private data" layouts).
//!
//! Decoding never panics and never allocates more than a fixed size: bytes from a peer go
//! through `parse`/`from_bytes`, which check the length once; after that every accessor reads
//! inside the checked buffer. Unknown code points decode to a value (`Unknown(..)` arms or
//! [`SglError`]), never a panic.

use core::fmt;

/// Bytes in a command capsule's submission queue entry.
pub const SQE_LEN: usize = 64;
/// Bytes in a completion queue entry (the response capsule on RDMA).
pub const CQE_LEN: usize = 16;
/// Bytes of data a Fabrics Connect command carries.
pub const CONNECT_DATA_LEN: usize = 1024;
/// Bytes of an Identify data structure (one 4 KiB page).
pub const IDENTIFY_LEN: usize = 4096;
/// Bytes in an NQN field (NUL-padded UTF-8).
pub const NQN_LEN: usize = 256;
/// Bytes of RDMA CM request private data.
pub const CM_REQUEST_LEN: usize = 32;
/// Bytes of RDMA CM accept private data.
pub const CM_ACCEPT_LEN: usize = 32;
/// Bytes of RDMA CM reject private data.
pub const CM_REJECT_LEN: usize = 4;
/// The one record format (`recfmt`) of the RDMA CM private data and of Connect.
pub const RECFMT: u16 = 0;
/// The controller id a host puts in Connect data to ask for a new (dynamic) controller.
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// The opcode of every Fabrics command.
pub const FABRICS_OPCODE: u8 = 0x7F;

/// Why bytes failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than the structure.
    #[error("truncated: {need} bytes needed, {got} given")]
    Truncated {
        /// Bytes the structure needs.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// A record format other than 0.
    #[error("unknown record format {0}")]
    Recfmt(u16),
    /// The command is not the kind asked for (e.g. not a Fabrics command).
    #[error("opcode {0:#04x} is not the expected command")]
    Opcode(u8),
    /// A field holds a value the structure does not allow (e.g. a property size other than 4 or 8).
    #[error("invalid value in field {0}")]
    Field(&'static str),
}

fn check(buf: &[u8], need: usize) -> Result<(), WireError> {
    if buf.len() < need {
        Err(WireError::Truncated { need, got: buf.len() })
    } else {
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// RDMA CM private data
// ---------------------------------------------------------------------------------------------

/// RDMA CM request private data (host → controller, 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmRequest {
    /// Record format, 0.
    pub recfmt: u16,
    /// Queue id: 0 for the admin queue, 1.. for I/O queues.
    pub qid: u16,
    /// Host receive queue size: completions the host can receive.
    pub hrqsize: u16,
    /// Host send queue size (0-based, as SQSIZE in Connect).
    pub hsqsize: u16,
}

/// Why a CM request private data is refused, with the reject status it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmRequestError {
    /// Fewer than 32 bytes.
    #[error("private data of {0} bytes, 32 needed")]
    Length(usize),
    /// A record format other than 0.
    #[error("record format {0}")]
    Recfmt(u16),
}

impl CmRequestError {
    /// The reject status a controller answers this with.
    pub fn reject_status(self) -> RejectStatus {
        match self {
            CmRequestError::Length(_) => RejectStatus::InvalidLength,
            CmRequestError::Recfmt(_) => RejectStatus::InvalidRecfmt,
        }
    }
}

impl CmRequest {
    /// Decodes request private data; bytes past the 32 are ignored.
    ///
    /// # Errors
    /// [`CmRequestError::Length`] below 32 bytes, [`CmRequestError::Recfmt`] for a format other than 0.
    pub fn parse(b: &[u8]) -> Result<Self, CmRequestError> {
        if b.len() < CM_REQUEST_LEN {
            return Err(CmRequestError::Length(b.len()));
        }
        let recfmt = u16_at(b, 0);
        if recfmt != RECFMT {
            return Err(CmRequestError::Recfmt(recfmt));
        }
        Ok(CmRequest { recfmt, qid: u16_at(b, 2), hrqsize: u16_at(b, 4), hsqsize: u16_at(b, 6) })
    }

    /// Encodes the 32 bytes (reserved bytes zero).
    pub fn to_bytes(&self) -> [u8; CM_REQUEST_LEN] {
        let mut b = [0u8; CM_REQUEST_LEN];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.qid);
        put_u16(&mut b, 4, self.hrqsize);
        put_u16(&mut b, 6, self.hsqsize);
        b
    }
}

/// RDMA CM accept private data (controller → host, 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmAccept {
    /// Record format, 0.
    pub recfmt: u16,
    /// Controller receive queue size: commands the controller can receive at once.
    pub crqsize: u16,
}

impl CmAccept {
    /// Decodes accept private data.
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 32 bytes, [`WireError::Recfmt`] for a format other than 0.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check(b, CM_ACCEPT_LEN)?;
        let recfmt = u16_at(b, 0);
        if recfmt != RECFMT {
            return Err(WireError::Recfmt(recfmt));
        }
        Ok(CmAccept { recfmt, crqsize: u16_at(b, 2) })
    }

    /// Encodes the 32 bytes.
    pub fn to_bytes(&self) -> [u8; CM_ACCEPT_LEN] {
        let mut b = [0u8; CM_ACCEPT_LEN];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.crqsize);
        b
    }
}

macro_rules! code_enum {
    ($(#[$m:meta])* pub enum $name:ident : $ty:ty { $($(#[$vm:meta])* $var:ident = $val:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value this codec does not name.
            Unknown($ty),
        }
        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v { $($val => $name::$var,)* other => $name::Unknown(other) }
            }
        }
        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                match v { $($name::$var => $val,)* $name::Unknown(other) => other }
            }
        }
    };
}

code_enum! {
    /// The status in RDMA CM reject private data (NVMe-oF RDMA transport binding).
    pub enum RejectStatus: u16 {
        /// Invalid private data length.
        InvalidLength = 0x01,
        /// Invalid record format.
        InvalidRecfmt = 0x02,
        /// Invalid queue id.
        InvalidQid = 0x03,
        /// Invalid host send queue size.
        InvalidHsqsize = 0x04,
        /// Invalid host receive queue size.
        InvalidHrqsize = 0x05,
        /// No resources.
        NoResources = 0x06,
        /// Invalid IRD.
        InvalidIrd = 0x07,
        /// Invalid ORD.
        InvalidOrd = 0x08,
        /// Invalid controller id.
        InvalidCntlid = 0x09,
    }
}

/// RDMA CM reject private data (controller → host, 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmReject {
    /// Record format, 0.
    pub recfmt: u16,
    /// Why.
    pub status: RejectStatus,
}

impl CmReject {
    /// A reject of format 0 with `status`.
    pub fn new(status: RejectStatus) -> Self {
        CmReject { recfmt: RECFMT, status }
    }

    /// Decodes reject private data (any record format is returned as is).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 4 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check(b, CM_REJECT_LEN)?;
        Ok(CmReject { recfmt: u16_at(b, 0), status: u16_at(b, 2).into() })
    }

    /// Encodes the 4 bytes.
    pub fn to_bytes(&self) -> [u8; CM_REJECT_LEN] {
        let mut b = [0u8; CM_REJECT_LEN];
        put_u16(&mut b, 0, self.recfmt);
        put_u16(&mut b, 2, self.status.into());
        b
    }
}

// ---------------------------------------------------------------------------------------------
// SGL descriptors
// ---------------------------------------------------------------------------------------------

/// Bytes of an SGL descriptor.
pub const SGL_LEN: usize = 16;

/// SGL descriptor types (the high nibble of byte 15).
pub mod sgl_type {
    /// Data Block.
    pub const DATA_BLOCK: u8 = 0x0;
    /// Keyed SGL Data Block.
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
}

/// SGL descriptor subtypes (the low nibble of byte 15).
pub mod sgl_subtype {
    /// The address field is a memory address.
    pub const ADDRESS: u8 = 0x0;
    /// The address field is an offset (into the command capsule's data).
    pub const OFFSET: u8 = 0x1;
    /// Keyed: the host asks the controller to invalidate the key with the completion.
    pub const INVALIDATE: u8 = 0xF;
}

/// The SGL descriptor in a command's DPTR, as the RDMA transport uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sgl {
    /// Keyed SGL Data Block: data in host memory behind an RDMA key.
    Keyed {
        /// The remote address (tagged offset).
        addr: u64,
        /// Length in bytes (24 bits).
        length: u32,
        /// The remote key (STag).
        key: u32,
        /// Subtype 0xF: the host asks for Send with Invalidate of `key` with the completion.
        invalidate: bool,
    },
    /// Data Block with an offset: data inside the command capsule, after the 64-byte SQE.
    InCapsule {
        /// Offset of the data from the start of the capsule's data area.
        offset: u64,
        /// Length in bytes.
        length: u32,
    },
    /// Data Block with a memory address (no meaning on RDMA; decoded so that it can be refused).
    Address {
        /// The address.
        addr: u64,
        /// Length in bytes.
        length: u32,
    },
}

/// An SGL descriptor of a type/subtype this codec does not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unsupported SGL descriptor type {sgl_type:#x} subtype {subtype:#x}")]
pub struct SglError {
    /// The descriptor type (high nibble of byte 15).
    pub sgl_type: u8,
    /// The descriptor subtype (low nibble of byte 15).
    pub subtype: u8,
}

impl Sgl {
    /// The largest length of a keyed descriptor (24 bits).
    pub const KEYED_MAX_LEN: u32 = 0x00FF_FFFF;

    /// A keyed descriptor that transfers no data (type 0x40, length 0).
    pub fn none() -> Self {
        Sgl::Keyed { addr: 0, length: 0, key: 0, invalidate: false }
    }

    /// Decodes the 16 bytes of a descriptor.
    ///
    /// # Errors
    /// [`SglError`] for types other than (keyed) data block, or a subtype without a meaning here.
    pub fn parse(b: &[u8; SGL_LEN]) -> Result<Self, SglError> {
        let id = b[15];
        let (t, s) = (id >> 4, id & 0xF);
        let addr = u64_at(b, 0);
        match (t, s) {
            (sgl_type::KEYED_DATA_BLOCK, sgl_subtype::ADDRESS | sgl_subtype::INVALIDATE) => Ok(Sgl::Keyed {
                addr,
                length: u32::from_le_bytes([b[8], b[9], b[10], 0]),
                key: u32_at(b, 11),
                invalidate: s == sgl_subtype::INVALIDATE,
            }),
            (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET) => Ok(Sgl::InCapsule { offset: addr, length: u32_at(b, 8) }),
            (sgl_type::DATA_BLOCK, sgl_subtype::ADDRESS) => Ok(Sgl::Address { addr, length: u32_at(b, 8) }),
            _ => Err(SglError { sgl_type: t, subtype: s }),
        }
    }

    /// Encodes the 16 bytes. A keyed length above 24 bits is truncated to its low 24 bits.
    pub fn to_bytes(&self) -> [u8; SGL_LEN] {
        let mut b = [0u8; SGL_LEN];
        match *self {
            Sgl::Keyed { addr, length, key, invalidate } => {
                put_u64(&mut b, 0, addr);
                b[8..11].copy_from_slice(&length.to_le_bytes()[..3]);
                put_u32(&mut b, 11, key);
                let sub = if invalidate { sgl_subtype::INVALIDATE } else { sgl_subtype::ADDRESS };
                b[15] = sgl_type::KEYED_DATA_BLOCK << 4 | sub;
            }
            Sgl::InCapsule { offset, length } => {
                put_u64(&mut b, 0, offset);
                put_u32(&mut b, 8, length);
                b[15] = sgl_type::DATA_BLOCK << 4 | sgl_subtype::OFFSET;
            }
            Sgl::Address { addr, length } => {
                put_u64(&mut b, 0, addr);
                put_u32(&mut b, 8, length);
                b[15] = sgl_type::DATA_BLOCK << 4 | sgl_subtype::ADDRESS;
            }
        }
        b
    }

    /// The data length the descriptor describes.
    pub fn length(&self) -> u32 {
        match *self {
            Sgl::Keyed { length, .. } | Sgl::InCapsule { length, .. } | Sgl::Address { length, .. } => length,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command (SQE)
// ---------------------------------------------------------------------------------------------

/// Admin command opcodes used here.
pub mod admin_opcode {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics commands.
    pub const FABRICS: u8 = super::FABRICS_OPCODE;
}

/// NVM command set I/O opcodes used here.
pub mod io_opcode {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
}

/// Fabrics command types (byte 4 of a Fabrics command).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
}

/// Feature identifiers used here.
pub mod feature {
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
}

/// Log page identifiers used here.
pub mod log_page {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
}

/// Identify CNS values used here.
pub mod cns {
    /// Identify Namespace.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NS_DESC_LIST: u8 = 0x03;
    /// I/O command set specific Identify Controller (not supported by this target).
    pub const CS_CONTROLLER: u8 = 0x06;
}

/// Flag bits of command byte 1.
pub mod cmd_flags {
    /// FUSE: bits 1:0.
    pub const FUSE_MASK: u8 = 0x03;
    /// PSDT: bits 7:6.
    pub const PSDT_MASK: u8 = 0xC0;
    /// PSDT = 01b: SGLs, metadata in one contiguous buffer.
    pub const PSDT_SGL: u8 = 0x40;
}

/// A 64-byte command (SQE): the view over its bytes, with accessors and setters.
///
/// `cdw(n)` is command dword `n` (bytes `4n..4n+4`): cdw10..cdw15 carry the command's parameters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Command {
    bytes: [u8; SQE_LEN],
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("opcode", &format_args!("{:#04x}", self.opcode()))
            .field("flags", &format_args!("{:#04x}", self.flags()))
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .field("sgl", &self.sgl())
            .field("cdw10_15", &[self.cdw(10), self.cdw(11), self.cdw(12), self.cdw(13), self.cdw(14), self.cdw(15)])
            .finish()
    }
}

impl Command {
    /// A zeroed command with `opcode`, `cid`, and PSDT set to SGL.
    pub fn new(opcode: u8, cid: u16) -> Self {
        let mut c = Command { bytes: [0; SQE_LEN] };
        c.bytes[0] = opcode;
        c.bytes[1] = cmd_flags::PSDT_SGL;
        c.set_cid(cid);
        c
    }

    /// Takes the first 64 bytes of `b` (the rest is in-capsule data).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 64 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        check(b, SQE_LEN)?;
        let mut bytes = [0u8; SQE_LEN];
        bytes.copy_from_slice(&b[..SQE_LEN]);
        Ok(Command { bytes })
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; SQE_LEN] {
        &self.bytes
    }

    /// Opcode (byte 0).
    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }
    /// Flags byte (byte 1: FUSE bits 1:0, PSDT bits 7:6).
    pub fn flags(&self) -> u8 {
        self.bytes[1]
    }
    /// FUSE (bits 1:0 of byte 1).
    pub fn fuse(&self) -> u8 {
        self.bytes[1] & cmd_flags::FUSE_MASK
    }
    /// PSDT (bits 7:6 of byte 1).
    pub fn psdt(&self) -> u8 {
        (self.bytes[1] & cmd_flags::PSDT_MASK) >> 6
    }
    /// Command identifier (bytes 2..4).
    pub fn cid(&self) -> u16 {
        u16_at(&self.bytes, 2)
    }
    /// Namespace id (bytes 4..8).
    pub fn nsid(&self) -> u32 {
        u32_at(&self.bytes, 4)
    }
    /// Metadata pointer (bytes 16..24).
    pub fn mptr(&self) -> u64 {
        u64_at(&self.bytes, 16)
    }
    /// The raw DPTR (bytes 24..40).
    pub fn dptr(&self) -> [u8; SGL_LEN] {
        let mut d = [0u8; SGL_LEN];
        d.copy_from_slice(&self.bytes[24..40]);
        d
    }
    /// DPTR decoded as SGL descriptor 1.
    ///
    /// # Errors
    /// [`SglError`] for a descriptor type this codec does not handle.
    pub fn sgl(&self) -> Result<Sgl, SglError> {
        Sgl::parse(&self.dptr())
    }
    /// Command dword `n` (0..16); out of range reads 0.
    pub fn cdw(&self, n: usize) -> u32 {
        if n < 16 {
            u32_at(&self.bytes, n * 4)
        } else {
            0
        }
    }
    /// Fabrics command type (byte 4), meaningful when the opcode is 0x7F.
    pub fn fctype(&self) -> u8 {
        self.bytes[4]
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, v: u8) {
        self.bytes[1] = v;
    }
    /// Sets the command identifier.
    pub fn set_cid(&mut self, v: u16) {
        put_u16(&mut self.bytes, 2, v);
    }
    /// Sets the namespace id.
    pub fn set_nsid(&mut self, v: u32) {
        put_u32(&mut self.bytes, 4, v);
    }
    /// Sets the metadata pointer.
    pub fn set_mptr(&mut self, v: u64) {
        put_u64(&mut self.bytes, 16, v);
    }
    /// Sets DPTR to `sgl`.
    pub fn set_sgl(&mut self, sgl: &Sgl) {
        self.bytes[24..40].copy_from_slice(&sgl.to_bytes());
    }
    /// Sets command dword `n` (10..16 are the parameters; 0..10 overwrite header fields; 16+ is ignored).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        if n < 16 {
            put_u32(&mut self.bytes, n * 4, v);
        }
    }
    /// Sets the Fabrics command type (byte 4).
    pub fn set_fctype(&mut self, v: u8) {
        self.bytes[4] = v;
    }

    /// Starting LBA of an NVM Read/Write/Write Zeroes (cdw10..11).
    pub fn slba(&self) -> u64 {
        u64_at(&self.bytes, 40)
    }
    /// Number of logical blocks, 0-based, of an NVM Read/Write/Write Zeroes (cdw12 bits 15:0).
    pub fn nlb(&self) -> u16 {
        u16_at(&self.bytes, 48)
    }

    /// An NVM Read, Write or Write Zeroes of `nlb` (0-based) blocks at `slba`.
    pub fn rw(opcode: u8, cid: u16, nsid: u32, slba: u64, nlb: u16, sgl: &Sgl) -> Self {
        let mut c = Command::new(opcode, cid);
        c.set_nsid(nsid);
        put_u64(&mut c.bytes, 40, slba);
        c.set_cdw(12, u32::from(nlb));
        c.set_sgl(sgl);
        c
    }

    /// Identify with `cns` (cdw10 bits 7:0) and `cntid` (bits 31:16), data to `sgl`.
    pub fn identify(cid: u16, nsid: u32, cns: u8, sgl: &Sgl) -> Self {
        let mut c = Command::new(admin_opcode::IDENTIFY, cid);
        c.set_nsid(nsid);
        c.set_cdw(10, u32::from(cns));
        c.set_sgl(sgl);
        c
    }

    /// Get Log Page of log `lid` for `len` bytes (a multiple of 4, at least 4) into `sgl`:
    /// NUMD (0-based dwords) split into NUMDL (cdw10 bits 31:16) and NUMDU (cdw11 bits 15:0).
    pub fn get_log_page(cid: u16, nsid: u32, lid: u8, len: u32, sgl: &Sgl) -> Self {
        let numd = (len / 4).saturating_sub(1);
        let mut c = Command::new(admin_opcode::GET_LOG_PAGE, cid);
        c.set_nsid(nsid);
        c.set_cdw(10, u32::from(lid) | (numd & 0xFFFF) << 16);
        c.set_cdw(11, numd >> 16);
        c.set_sgl(sgl);
        c
    }

    /// Set Features (`set`) or Get Features of feature `fid`, with `cdw11` (the value for Set).
    pub fn features(set: bool, cid: u16, fid: u8, cdw11: u32) -> Self {
        let op = if set { admin_opcode::SET_FEATURES } else { admin_opcode::GET_FEATURES };
        let mut c = Command::new(op, cid);
        c.set_cdw(10, u32::from(fid));
        c.set_cdw(11, cdw11);
        c.set_sgl(&Sgl::none());
        c
    }

    /// Identify's CNS (cdw10 bits 7:0).
    pub fn cns(&self) -> u8 {
        self.bytes[40]
    }
    /// Feature identifier of Get/Set Features (cdw10 bits 7:0).
    pub fn fid(&self) -> u8 {
        self.bytes[40]
    }
    /// Log page id of Get Log Page (cdw10 bits 7:0).
    pub fn lid(&self) -> u8 {
        self.bytes[40]
    }
    /// Bytes a Get Log Page asks for: (NUMDU:NUMDL + 1) dwords × 4.
    pub fn log_page_len(&self) -> u64 {
        let numdl = u64::from(self.cdw(10) >> 16);
        let numdu = u64::from(self.cdw(11) & 0xFFFF);
        ((numdu << 16 | numdl) + 1) * 4
    }
    /// Log page offset of Get Log Page (cdw12..13).
    pub fn log_page_offset(&self) -> u64 {
        u64_at(&self.bytes, 48)
    }
}

// ---------------------------------------------------------------------------------------------
// Fabrics commands
// ---------------------------------------------------------------------------------------------

/// The size field of Property Get/Set (ATTRIB bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertySize {
    /// 4 bytes.
    Four,
    /// 8 bytes.
    Eight,
}

impl PropertySize {
    fn parse(attrib: u8) -> Result<Self, WireError> {
        match attrib & 0x7 {
            0 => Ok(PropertySize::Four),
            1 => Ok(PropertySize::Eight),
            _ => Err(WireError::Field("attrib")),
        }
    }
    fn code(self) -> u8 {
        match self {
            PropertySize::Four => 0,
            PropertySize::Eight => 1,
        }
    }
}

/// Fabrics Connect (command part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    /// Record format, 0.
    pub recfmt: u16,
    /// Queue id.
    pub qid: u16,
    /// Submission queue size, 0-based.
    pub sqsize: u16,
    /// Connect attributes (bits 1:0 priority class, bit 2 SQ flow control disable).
    pub cattr: u8,
    /// Keep-alive timeout in milliseconds (0: none).
    pub kato: u32,
}

/// A Fabrics command, decoded from a [`Command`] with opcode 0x7F.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fabrics {
    /// Connect (fctype 0x01). Its data ([`ConnectData`]) comes through the SGL.
    Connect(Connect),
    /// Property Get (fctype 0x04).
    PropertyGet {
        /// Size of the property.
        size: PropertySize,
        /// Property offset.
        offset: u32,
    },
    /// Property Set (fctype 0x00).
    PropertySet {
        /// Size of the property.
        size: PropertySize,
        /// Property offset.
        offset: u32,
        /// The value (the low 4 bytes for a 4-byte property).
        value: u64,
    },
    /// Another fctype.
    Other(u8),
}

impl Fabrics {
    /// Decodes the Fabrics view of `c`.
    ///
    /// # Errors
    /// [`WireError::Opcode`] unless the opcode is 0x7F; [`WireError::Field`] for a property size
    /// other than 4 or 8.
    pub fn parse(c: &Command) -> Result<Self, WireError> {
        if c.opcode() != FABRICS_OPCODE {
            return Err(WireError::Opcode(c.opcode()));
        }
        let b = &c.bytes;
        Ok(match c.fctype() {
            fctype::CONNECT => Fabrics::Connect(Connect {
                recfmt: u16_at(b, 40),
                qid: u16_at(b, 42),
                sqsize: u16_at(b, 44),
                cattr: b[46],
                kato: u32_at(b, 48),
            }),
            fctype::PROPERTY_GET => Fabrics::PropertyGet { size: PropertySize::parse(b[40])?, offset: u32_at(b, 44) },
            fctype::PROPERTY_SET => {
                Fabrics::PropertySet { size: PropertySize::parse(b[40])?, offset: u32_at(b, 44), value: u64_at(b, 48) }
            }
            other => Fabrics::Other(other),
        })
    }

    /// Encodes as a command with `cid` and data descriptor `sgl` (Connect: where its data is).
    pub fn to_command(&self, cid: u16, sgl: &Sgl) -> Command {
        let mut c = Command::new(FABRICS_OPCODE, cid);
        c.set_sgl(sgl);
        let b = &mut c.bytes;
        match *self {
            Fabrics::Connect(k) => {
                b[4] = fctype::CONNECT;
                put_u16(b, 40, k.recfmt);
                put_u16(b, 42, k.qid);
                put_u16(b, 44, k.sqsize);
                b[46] = k.cattr;
                put_u32(b, 48, k.kato);
            }
            Fabrics::PropertyGet { size, offset } => {
                b[4] = fctype::PROPERTY_GET;
                b[40] = size.code();
                put_u32(b, 44, offset);
            }
            Fabrics::PropertySet { size, offset, value } => {
                b[4] = fctype::PROPERTY_SET;
                b[40] = size.code();
                put_u32(b, 44, offset);
                put_u64(b, 48, value);
            }
            Fabrics::Other(t) => b[4] = t,
        }
        c
    }
}

/// The 1024 bytes of data of a Fabrics Connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Controller id: 0xFFFF asks for a new controller (admin queue); an I/O queue names the
    /// controller its admin Connect returned.
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
}

/// An NQN field: UTF-8 ending with a NUL inside the field (NVMe-oF: NQNs are null-terminated).
fn nqn_field(b: &[u8]) -> Result<String, WireError> {
    let end = b.iter().position(|&c| c == 0).ok_or(WireError::Field("nqn"))?;
    core::str::from_utf8(&b[..end]).map(str::to_owned).map_err(|_| WireError::Field("nqn"))
}

impl ConnectData {
    /// Decodes the 1024 bytes; NQNs end at the first NUL, which must be inside their field.
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 1024 bytes; [`WireError::Field`] for an NQN that is not
    /// UTF-8 or has no terminating NUL.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check(b, CONNECT_DATA_LEN)?;
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&b[..16]);
        Ok(ConnectData {
            hostid,
            cntlid: u16_at(b, 16),
            subnqn: nqn_field(&b[256..512])?,
            hostnqn: nqn_field(&b[512..768])?,
        })
    }

    /// Encodes the 1024 bytes. An NQN longer than 255 bytes is cut to 255 (the field keeps a NUL).
    pub fn to_bytes(&self) -> [u8; CONNECT_DATA_LEN] {
        let mut b = [0u8; CONNECT_DATA_LEN];
        b[..16].copy_from_slice(&self.hostid);
        put_u16(&mut b, 16, self.cntlid);
        let s = self.subnqn.as_bytes();
        let n = s.len().min(NQN_LEN - 1);
        b[256..256 + n].copy_from_slice(&s[..n]);
        let h = self.hostnqn.as_bytes();
        let n = h.len().min(NQN_LEN - 1);
        b[512..512 + n].copy_from_slice(&h[..n]);
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Completion (CQE) and status
// ---------------------------------------------------------------------------------------------

/// Status code types (SCT).
pub mod sct {
    /// Generic command status.
    pub const GENERIC: u8 = 0x0;
    /// Command specific status.
    pub const COMMAND_SPECIFIC: u8 = 0x1;
    /// Media and data integrity errors.
    pub const MEDIA: u8 = 0x2;
}

/// A completion status: status code type, status code, Do Not Retry. The phase bit and the
/// More/CRD bits live in [`Completion::status_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status code type.
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
}

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status::generic(0x00);
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = Status::generic(0x01).dnr();
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status::generic(0x02).dnr();
    /// Command ID Conflict.
    pub const CID_CONFLICT: Status = Status::generic(0x03).dnr();
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04);
    /// Internal Error.
    pub const INTERNAL_ERROR: Status = Status::generic(0x06);
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: Status = Status::generic(0x07);
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = Status::generic(0x0B).dnr();
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0C).dnr();
    /// Invalid SGL Segment Descriptor.
    pub const INVALID_SGL_SEGMENT: Status = Status::generic(0x0D).dnr();
    /// Data SGL Length Invalid.
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::generic(0x0F).dnr();
    /// SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = Status::generic(0x11).dnr();
    /// SGL Offset Invalid.
    pub const SGL_OFFSET_INVALID: Status = Status::generic(0x16).dnr();
    /// Keep Alive Timer Expired.
    pub const KEEP_ALIVE_EXPIRED: Status = Status::generic(0x19);
    /// Keep Alive Timeout Invalid.
    pub const KEEP_ALIVE_INVALID: Status = Status::generic(0x1A).dnr();
    /// LBA Out of Range (NVM command set).
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80).dnr();
    /// Namespace Not Ready (NVM command set).
    pub const NAMESPACE_NOT_READY: Status = Status::generic(0x82);
    /// Invalid Queue Identifier.
    pub const INVALID_QUEUE_ID: Status = Status::specific(0x01).dnr();
    /// Invalid Queue Size.
    pub const INVALID_QUEUE_SIZE: Status = Status::specific(0x02).dnr();
    /// Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT_EXCEEDED: Status = Status::specific(0x05).dnr();
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: Status = Status::specific(0x09).dnr();
    /// Fabrics: Connect Incompatible Format.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::specific(0x80).dnr();
    /// Fabrics: Connect Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::specific(0x81);
    /// Fabrics: Connect Invalid Parameters.
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::specific(0x82).dnr();
    /// Fabrics: Connect Restart Discovery.
    pub const CONNECT_RESTART_DISCOVERY: Status = Status::specific(0x83).dnr();
    /// Fabrics: Connect Invalid Host.
    pub const CONNECT_INVALID_HOST: Status = Status::specific(0x84).dnr();

    /// A generic status (SCT 0) without DNR.
    pub const fn generic(sc: u8) -> Self {
        Status { sct: sct::GENERIC, sc, dnr: false }
    }
    /// A command-specific status (SCT 1) without DNR.
    pub const fn specific(sc: u8) -> Self {
        Status { sct: sct::COMMAND_SPECIFIC, sc, dnr: false }
    }
    /// The same status with DNR set.
    pub const fn dnr(self) -> Self {
        Status { dnr: true, ..self }
    }
    /// Whether this is a success.
    pub fn is_success(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
    /// The 15-bit status field without the phase bit: SC bits 8:1, SCT bits 11:9, DNR bit 15.
    pub fn to_field(self) -> u16 {
        (u16::from(self.sc) << 1) | (u16::from(self.sct & 0x7) << 9) | if self.dnr { 1 << 15 } else { 0 }
    }
    /// Decodes a 16-bit status field (the phase, CRD and More bits are ignored).
    pub fn from_field(f: u16) -> Self {
        Status { sc: (f >> 1) as u8, sct: ((f >> 9) & 0x7) as u8, dnr: f & (1 << 15) != 0 }
    }

    /// The specification's name of the status (SCT and SC; DNR aside), if this codec knows
    /// it: "LBA Out of Range", "Connect Invalid Parameters", ...
    pub fn name(&self) -> Option<&'static str> {
        Some(match (self.sct, self.sc) {
            (sct::GENERIC, 0x00) => "Successful Completion",
            (sct::GENERIC, 0x01) => "Invalid Command Opcode",
            (sct::GENERIC, 0x02) => "Invalid Field in Command",
            (sct::GENERIC, 0x03) => "Command ID Conflict",
            (sct::GENERIC, 0x04) => "Data Transfer Error",
            (sct::GENERIC, 0x05) => "Commands Aborted due to Power Loss Notification",
            (sct::GENERIC, 0x06) => "Internal Error",
            (sct::GENERIC, 0x07) => "Command Abort Requested",
            (sct::GENERIC, 0x08) => "Command Aborted due to SQ Deletion",
            (sct::GENERIC, 0x0B) => "Invalid Namespace or Format",
            (sct::GENERIC, 0x0C) => "Command Sequence Error",
            (sct::GENERIC, 0x0D) => "Invalid SGL Segment Descriptor",
            (sct::GENERIC, 0x0F) => "Data SGL Length Invalid",
            (sct::GENERIC, 0x11) => "SGL Descriptor Type Invalid",
            (sct::GENERIC, 0x16) => "SGL Offset Invalid",
            (sct::GENERIC, 0x19) => "Keep Alive Timer Expired",
            (sct::GENERIC, 0x1A) => "Keep Alive Timeout Invalid",
            (sct::GENERIC, 0x80) => "LBA Out of Range",
            (sct::GENERIC, 0x81) => "Capacity Exceeded",
            (sct::GENERIC, 0x82) => "Namespace Not Ready",
            (sct::COMMAND_SPECIFIC, 0x01) => "Invalid Queue Identifier",
            (sct::COMMAND_SPECIFIC, 0x02) => "Invalid Queue Size",
            (sct::COMMAND_SPECIFIC, 0x05) => "Asynchronous Event Request Limit Exceeded",
            (sct::COMMAND_SPECIFIC, 0x09) => "Invalid Log Page",
            (sct::COMMAND_SPECIFIC, 0x80) => "Connect Incompatible Format",
            (sct::COMMAND_SPECIFIC, 0x81) => "Connect Controller Busy",
            (sct::COMMAND_SPECIFIC, 0x82) => "Connect Invalid Parameters",
            (sct::COMMAND_SPECIFIC, 0x83) => "Connect Restart Discovery",
            (sct::COMMAND_SPECIFIC, 0x84) => "Connect Invalid Host",
            (sct::MEDIA, 0x81) => "Unrecovered Read Error",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sct {:#x} sc {:#04x}{}", self.sct, self.sc, if self.dnr { " dnr" } else { "" })
    }
}

/// A 16-byte completion (CQE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Command specific result, dwords 0 and 1 (Property Get returns an 8-byte value here).
    pub result: u64,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// The status field: phase bit 0, SC bits 8:1, SCT bits 11:9, CRD 13:12, More 14, DNR 15.
    pub status_field: u16,
}

impl Completion {
    /// A completion of `cid` with `status` and result 0.
    pub fn new(cid: u16, status: Status) -> Self {
        Completion { result: 0, sqhd: 0, sqid: 0, cid, status_field: status.to_field() }
    }
    /// The status (without phase).
    pub fn status(&self) -> Status {
        Status::from_field(self.status_field)
    }
    /// The phase tag (bit 0 of the status field).
    pub fn phase(&self) -> bool {
        self.status_field & 1 != 0
    }
    /// Result dword 0.
    pub fn dw0(&self) -> u32 {
        self.result as u32
    }
    /// Result dword 1.
    pub fn dw1(&self) -> u32 {
        (self.result >> 32) as u32
    }

    /// Decodes 16 bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 16 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check(b, CQE_LEN)?;
        Ok(Completion {
            result: u64_at(b, 0),
            sqhd: u16_at(b, 8),
            sqid: u16_at(b, 10),
            cid: u16_at(b, 12),
            status_field: u16_at(b, 14),
        })
    }

    /// Encodes the 16 bytes.
    pub fn to_bytes(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        put_u64(&mut b, 0, self.result);
        put_u16(&mut b, 8, self.sqhd);
        put_u16(&mut b, 10, self.sqid);
        put_u16(&mut b, 12, self.cid);
        put_u16(&mut b, 14, self.status_field);
        b
    }
}

/// Result dword 0 of a Connect that failed with Connect Invalid Parameters: which byte was
/// wrong. `in_data` false: an offset in the command (SQE); true: an offset in the Connect data.
pub fn connect_invalid_param_result(in_data: bool, offset: u16) -> u64 {
    u64::from(offset) | (u64::from(in_data as u8) << 16)
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Controller property offsets and bit helpers.
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;

    /// CAP fields.
    pub mod cap {
        /// CAP for `mqes` (0-based max queue entries), timeout `to_500ms` units, with the NVM
        /// command set, MPSMIN = MPSMAX = 0 (4 KiB), contiguous queues required.
        pub fn build(mqes: u16, to_500ms: u8) -> u64 {
            u64::from(mqes) | (1 << 16) | (u64::from(to_500ms) << 24) | (1 << 37)
        }
        /// MQES: maximum queue entries, 0-based (bits 15:0).
        pub fn mqes(cap: u64) -> u16 {
            cap as u16
        }
        /// TO: ready timeout in 500 ms units (bits 31:24).
        pub fn timeout(cap: u64) -> u8 {
            (cap >> 24) as u8
        }
        /// CSS: command sets supported (bits 44:37).
        pub fn css(cap: u64) -> u8 {
            (cap >> 37) as u8
        }
        /// MPSMIN (bits 51:48): minimum page size is 2^(12+MPSMIN).
        pub fn mpsmin(cap: u64) -> u8 {
            ((cap >> 48) & 0xF) as u8
        }
    }

    /// VS value for major.minor.tertiary.
    pub fn vs(major: u16, minor: u8, tertiary: u8) -> u32 {
        u32::from(major) << 16 | u32::from(minor) << 8 | u32::from(tertiary)
    }

    /// CC fields.
    pub mod cc {
        /// Enable (bit 0).
        pub const EN: u32 = 1;
        /// Shutdown notification mask (bits 15:14).
        pub const SHN_MASK: u32 = 0x3 << 14;
        /// Shutdown notification: normal.
        pub const SHN_NORMAL: u32 = 0x1 << 14;
        /// Shutdown notification: abrupt.
        pub const SHN_ABRUPT: u32 = 0x2 << 14;
        /// Whether EN is set.
        pub fn enabled(cc: u32) -> bool {
            cc & EN != 0
        }
        /// The SHN field (0 none, 1 normal, 2 abrupt).
        pub fn shn(cc: u32) -> u32 {
            (cc & SHN_MASK) >> 14
        }
        /// IOSQES (bits 19:16): I/O SQ entry size 2^n.
        pub fn iosqes(cc: u32) -> u32 {
            (cc >> 16) & 0xF
        }
        /// IOCQES (bits 23:20): I/O CQ entry size 2^n.
        pub fn iocqes(cc: u32) -> u32 {
            (cc >> 20) & 0xF
        }
        /// The CC a Linux host writes to enable: EN, NVM command set, 4 KiB pages, 64-byte SQEs
        /// and 16-byte CQEs.
        pub fn enable_value() -> u32 {
            EN | (6 << 16) | (4 << 20)
        }
    }

    /// CSTS fields.
    pub mod csts {
        /// Ready (bit 0).
        pub const RDY: u32 = 1;
        /// Controller fatal status (bit 1).
        pub const CFS: u32 = 1 << 1;
        /// Shutdown status mask (bits 3:2).
        pub const SHST_MASK: u32 = 0x3 << 2;
        /// Shutdown status: processing occurring.
        pub const SHST_OCCURRING: u32 = 0x1 << 2;
        /// Shutdown status: complete.
        pub const SHST_COMPLETE: u32 = 0x2 << 2;
        /// Whether RDY is set.
        pub fn ready(csts: u32) -> bool {
            csts & RDY != 0
        }
        /// Whether SHST says shutdown is complete.
        pub fn shutdown_complete(csts: u32) -> bool {
            csts & SHST_MASK == SHST_COMPLETE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Identify data structures
// ---------------------------------------------------------------------------------------------

/// SGLS bits of Identify Controller.
pub mod sgls {
    /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 1;
    /// Keyed SGL Data Block descriptor supported (bit 2).
    pub const KEYED: u32 = 1 << 2;
    /// Address field as an offset supported: in-capsule data (bit 20).
    pub const OFFSET: u32 = 1 << 20;
}

/// Byte offsets of Identify Controller fields.
pub mod id_ctrl {
    /// PCI Vendor ID (u16).
    pub const VID: usize = 0;
    /// Serial number (20 ASCII bytes).
    pub const SN: usize = 4;
    /// Model number (40 ASCII bytes).
    pub const MN: usize = 24;
    /// Firmware revision (8 ASCII bytes).
    pub const FR: usize = 64;
    /// Recommended arbitration burst.
    pub const RAB: usize = 72;
    /// IEEE OUI (3 bytes).
    pub const IEEE: usize = 73;
    /// Multi-path / namespace sharing capabilities.
    pub const CMIC: usize = 76;
    /// Maximum data transfer size: 2^MDTS minimum pages (0 no limit).
    pub const MDTS: usize = 77;
    /// Controller id (u16).
    pub const CNTLID: usize = 78;
    /// Version (u32, as VS).
    pub const VER: usize = 80;
    /// Optional asynchronous events supported (u32).
    pub const OAES: usize = 92;
    /// Controller attributes (u32).
    pub const CTRATT: usize = 96;
    /// Controller type (1 = I/O controller).
    pub const CNTRLTYPE: usize = 111;
    /// Optional admin command support (u16).
    pub const OACS: usize = 256;
    /// Abort command limit (0-based).
    pub const ACL: usize = 258;
    /// Asynchronous event request limit (0-based).
    pub const AERL: usize = 259;
    /// Firmware updates.
    pub const FRMW: usize = 260;
    /// Log page attributes.
    pub const LPA: usize = 261;
    /// Error log page entries (0-based).
    pub const ELPE: usize = 262;
    /// Number of power states (0-based).
    pub const NPSS: usize = 263;
    /// Autonomous power state transition attributes.
    pub const APSTA: usize = 265;
    /// Keep alive support: granularity in 100 ms units (u16).
    pub const KAS: usize = 320;
    /// Submission queue entry size (max << 4 | min, as 2^n).
    pub const SQES: usize = 512;
    /// Completion queue entry size.
    pub const CQES: usize = 513;
    /// Maximum outstanding commands (u16).
    pub const MAXCMD: usize = 514;
    /// Number of namespaces (u32).
    pub const NN: usize = 516;
    /// Optional NVM command support (u16).
    pub const ONCS: usize = 520;
    /// Volatile write cache.
    pub const VWC: usize = 525;
    /// SGL support (u32).
    pub const SGLS: usize = 536;
    /// Subsystem NQN (256 bytes).
    pub const SUBNQN: usize = 768;
    /// I/O queue command capsule supported size in 16-byte units (u32).
    pub const IOCCSZ: usize = 1792;
    /// I/O queue response capsule supported size in 16-byte units (u32).
    pub const IORCSZ: usize = 1796;
    /// In-capsule data offset in 16-byte units (u16).
    pub const ICDOFF: usize = 1800;
    /// Fabrics controller attributes.
    pub const FCATT: usize = 1802;
    /// Maximum SGL data block descriptors.
    pub const MSDBD: usize = 1803;
    /// Power state descriptor 0 (32 bytes).
    pub const PSD0: usize = 2048;
}

/// Write-Zeroes support bit of ONCS.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;

/// What an Identify Controller page says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    /// Serial number (ASCII, space padded to 20).
    pub serial: String,
    /// Model number (ASCII, space padded to 40).
    pub model: String,
    /// Firmware revision (ASCII, space padded to 8).
    pub firmware: String,
    /// MDTS: transfers up to 2^mdts × 4 KiB.
    pub mdts: u8,
    /// Controller id.
    pub cntlid: u16,
    /// Version (VS encoding).
    pub ver: u32,
    /// Asynchronous event request limit, 0-based.
    pub aerl: u8,
    /// Keep alive granularity in 100 ms units (non-zero: keep alive supported).
    pub kas: u16,
    /// Maximum outstanding commands per queue.
    pub maxcmd: u16,
    /// Number of namespaces.
    pub nn: u32,
    /// Optional NVM command support.
    pub oncs: u16,
    /// Volatile write cache present (bit 0).
    pub vwc: u8,
    /// SGL support.
    pub sgls: u32,
    /// Subsystem NQN.
    pub subnqn: String,
    /// I/O command capsule size in 16-byte units (4 = the 64-byte SQE alone).
    pub ioccsz: u32,
    /// I/O response capsule size in 16-byte units (1 = the 16-byte CQE).
    pub iorcsz: u32,
}

fn put_ascii(b: &mut [u8], s: &str) {
    b.fill(b' ');
    for (d, c) in b.iter_mut().zip(s.bytes()) {
        *d = if c.is_ascii_graphic() || c == b' ' { c } else { b'?' };
    }
}

fn get_ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_owned()
}

fn put_nqn(b: &mut [u8], s: &str) {
    let n = s.len().min(b.len().saturating_sub(1));
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
}

impl IdentifyController {
    /// Encodes the 4096-byte page. Fields not named here are zero, except SQES/CQES (64/16
    /// bytes), controller type (I/O), one power state, and ICDOFF 0.
    pub fn to_page(&self) -> Box<[u8; IDENTIFY_LEN]> {
        use id_ctrl::*;
        let mut p = Box::new([0u8; IDENTIFY_LEN]);
        put_ascii(&mut p[SN..SN + 20], &self.serial);
        put_ascii(&mut p[MN..MN + 40], &self.model);
        put_ascii(&mut p[FR..FR + 8], &self.firmware);
        p[RAB] = 6;
        p[MDTS] = self.mdts;
        put_u16(&mut p[..], CNTLID, self.cntlid);
        put_u32(&mut p[..], VER, self.ver);
        p[CNTRLTYPE] = 1;
        p[AERL] = self.aerl;
        p[ACL] = 3;
        p[FRMW] = 1 << 1 | 1; // one slot, slot 1 read-only
        p[ELPE] = 0;
        p[NPSS] = 0;
        put_u16(&mut p[..], KAS, self.kas);
        p[SQES] = 0x66;
        p[CQES] = 0x44;
        put_u16(&mut p[..], MAXCMD, self.maxcmd);
        put_u32(&mut p[..], NN, self.nn);
        put_u16(&mut p[..], ONCS, self.oncs);
        p[VWC] = self.vwc;
        put_u32(&mut p[..], SGLS, self.sgls);
        put_nqn(&mut p[SUBNQN..SUBNQN + NQN_LEN], &self.subnqn);
        put_u32(&mut p[..], IOCCSZ, self.ioccsz);
        put_u32(&mut p[..], IORCSZ, self.iorcsz);
        put_u16(&mut p[..], ICDOFF, 0);
        p[MSDBD] = 1;
        // Power state 0: max power 25.00 W (centiwatts), entry/exit latency unknown.
        put_u16(&mut p[..], PSD0, 2500);
        p
    }

    /// Decodes the fields named here from a page (at least 4096 bytes).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 4096 bytes.
    pub fn parse(p: &[u8]) -> Result<Self, WireError> {
        use id_ctrl::*;
        check(p, IDENTIFY_LEN)?;
        Ok(IdentifyController {
            serial: get_ascii(&p[SN..SN + 20]),
            model: get_ascii(&p[MN..MN + 40]),
            firmware: get_ascii(&p[FR..FR + 8]),
            mdts: p[MDTS],
            cntlid: u16_at(p, CNTLID),
            ver: u32_at(p, VER),
            aerl: p[AERL],
            kas: u16_at(p, KAS),
            maxcmd: u16_at(p, MAXCMD),
            nn: u32_at(p, NN),
            oncs: u16_at(p, ONCS),
            vwc: p[VWC],
            sgls: u32_at(p, SGLS),
            subnqn: String::from_utf8_lossy(&p[SUBNQN..SUBNQN + NQN_LEN]).trim_end_matches('\0').to_owned(),
            ioccsz: u32_at(p, IOCCSZ),
            iorcsz: u32_at(p, IORCSZ),
        })
    }
}

/// Byte offsets of Identify Namespace fields.
pub mod id_ns {
    /// Namespace size in blocks (u64).
    pub const NSZE: usize = 0;
    /// Namespace capacity in blocks (u64).
    pub const NCAP: usize = 8;
    /// Namespace utilization in blocks (u64).
    pub const NUSE: usize = 16;
    /// Namespace features.
    pub const NSFEAT: usize = 24;
    /// Number of LBA formats (0-based).
    pub const NLBAF: usize = 25;
    /// Formatted LBA size (bits 3:0: the LBA format in use).
    pub const FLBAS: usize = 26;
    /// Namespace globally unique identifier (16 bytes).
    pub const NGUID: usize = 104;
    /// LBA format 0 (u32: MS bits 15:0, LBADS bits 23:16, RP bits 25:24).
    pub const LBAF0: usize = 128;
}

/// What an Identify Namespace page says (one LBA format, no metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// Size in logical blocks (NSZE = NCAP = NUSE).
    pub blocks: u64,
    /// log2 of the block size (LBADS of format 0; 9 for 512 bytes).
    pub lbads: u8,
    /// Namespace GUID.
    pub nguid: [u8; 16],
}

impl IdentifyNamespace {
    /// Encodes the 4096-byte page.
    pub fn to_page(&self) -> Box<[u8; IDENTIFY_LEN]> {
        use id_ns::*;
        let mut p = Box::new([0u8; IDENTIFY_LEN]);
        put_u64(&mut p[..], NSZE, self.blocks);
        put_u64(&mut p[..], NCAP, self.blocks);
        put_u64(&mut p[..], NUSE, self.blocks);
        p[NLBAF] = 0;
        p[FLBAS] = 0;
        p[NGUID..NGUID + 16].copy_from_slice(&self.nguid);
        put_u32(&mut p[..], LBAF0, u32::from(self.lbads) << 16);
        p
    }

    /// Decodes from a page (at least 4096 bytes), reading the LBA format FLBAS names.
    ///
    /// # Errors
    /// [`WireError::Truncated`] below 4096 bytes.
    pub fn parse(p: &[u8]) -> Result<Self, WireError> {
        use id_ns::*;
        check(p, IDENTIFY_LEN)?;
        let fmt = usize::from(p[FLBAS] & 0xF);
        let mut nguid = [0u8; 16];
        nguid.copy_from_slice(&p[NGUID..NGUID + 16]);
        Ok(IdentifyNamespace { blocks: u64_at(p, NSZE), lbads: p[LBAF0 + fmt * 4 + 2], nguid })
    }
}

/// An Active Namespace ID list page: the ids greater than `after`, ascending, zero-terminated.
pub fn active_ns_list(ids: &[u32], after: u32) -> Box<[u8; IDENTIFY_LEN]> {
    let mut p = Box::new([0u8; IDENTIFY_LEN]);
    let mut sorted: Vec<u32> = ids.iter().copied().filter(|&id| id > after && id != 0).collect();
    sorted.sort_unstable();
    for (i, id) in sorted.iter().take(IDENTIFY_LEN / 4).enumerate() {
        put_u32(&mut p[..], i * 4, *id);
    }
    p
}

/// Decodes an Active Namespace ID list page (up to the first zero).
pub fn parse_active_ns_list(p: &[u8]) -> Vec<u32> {
    p.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).take_while(|&id| id != 0).collect()
}

/// Namespace identification descriptor types.
pub mod nidt {
    /// IEEE EUI-64 (8 bytes).
    pub const EUI64: u8 = 1;
    /// NGUID (16 bytes).
    pub const NGUID: u8 = 2;
    /// UUID (16 bytes).
    pub const UUID: u8 = 3;
    /// Command set identifier (1 byte).
    pub const CSI: u8 = 4;
}

/// A Namespace Identification Descriptor list page: a UUID, an NGUID and the NVM command set id.
pub fn ns_desc_list(uuid: &[u8; 16], nguid: &[u8; 16]) -> Box<[u8; IDENTIFY_LEN]> {
    let mut p = Box::new([0u8; IDENTIFY_LEN]);
    let mut at = 0;
    for (t, v) in [(nidt::UUID, &uuid[..]), (nidt::NGUID, &nguid[..]), (nidt::CSI, &[0u8][..])] {
        p[at] = t;
        p[at + 1] = v.len() as u8;
        p[at + 4..at + 4 + v.len()].copy_from_slice(v);
        at += 4 + v.len();
    }
    p
}

/// Decodes a Namespace Identification Descriptor list: (type, value) up to a type-0 entry.
pub fn parse_ns_desc_list(p: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= p.len() {
        let (t, len) = (p[at], usize::from(p[at + 1]));
        if t == 0 || at + 4 + len > p.len() {
            break;
        }
        out.push((t, p[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_names_come_from_sct_and_sc_not_dnr() {
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.name(), Some("Connect Invalid Parameters"));
        assert_eq!(Status::LBA_OUT_OF_RANGE.name(), Some("LBA Out of Range"));
        assert_eq!(Status::generic(0x80).name(), Some("LBA Out of Range"));
        assert_eq!(Status::SUCCESS.name(), Some("Successful Completion"));
        assert_eq!(Status::KEEP_ALIVE_EXPIRED.name(), Some("Keep Alive Timer Expired"));
        assert_eq!(Status::KEEP_ALIVE_INVALID.name(), Some("Keep Alive Timeout Invalid"));
        assert_eq!(Status::specific(0x7F).name(), None);
    }

    #[test]
    fn cm_request_layout_is_little_endian_at_the_binding_offsets() {
        let mut b = [0u8; 32];
        b[2] = 0x03; // qid 3
        b[4] = 0x80; // hrqsize 128
        b[6] = 0x7F; // hsqsize 127
        let r = CmRequest::parse(&b).unwrap();
        assert_eq!(r, CmRequest { recfmt: 0, qid: 3, hrqsize: 128, hsqsize: 127 });
        assert_eq!(r.to_bytes(), b);
    }

    #[test]
    fn cm_request_refuses_short_data_and_other_formats() {
        assert_eq!(CmRequest::parse(&[0u8; 31]), Err(CmRequestError::Length(31)));
        assert_eq!(CmRequestError::Length(0).reject_status(), RejectStatus::InvalidLength);
        let mut b = [0u8; 32];
        b[0] = 1;
        assert_eq!(CmRequest::parse(&b), Err(CmRequestError::Recfmt(1)));
        assert_eq!(CmRequestError::Recfmt(1).reject_status(), RejectStatus::InvalidRecfmt);
    }

    #[test]
    fn cm_accept_and_reject_layouts() {
        let a = CmAccept { recfmt: 0, crqsize: 0x0102 }.to_bytes();
        assert_eq!(&a[..4], &[0, 0, 0x02, 0x01]);
        assert!(a[4..].iter().all(|&x| x == 0));
        assert_eq!(CmAccept::parse(&a).unwrap().crqsize, 0x0102);
        let r = CmReject::new(RejectStatus::InvalidHsqsize).to_bytes();
        assert_eq!(r, [0, 0, 4, 0]);
        assert_eq!(CmReject::parse(&r).unwrap().status, RejectStatus::InvalidHsqsize);
        assert_eq!(CmReject::parse(&[0, 0, 0x42, 0]).unwrap().status, RejectStatus::Unknown(0x42));
        assert_eq!(u16::from(RejectStatus::NoResources), 6);
        assert_eq!(u16::from(RejectStatus::InvalidOrd), 8);
    }

    #[test]
    fn keyed_sgl_layout() {
        let b: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0x10, 0x00, 0xEF, 0xBE, 0xAD, 0xDE, 0x4F];
        let s = Sgl::parse(&b).unwrap();
        assert_eq!(s, Sgl::Keyed { addr: 0x0807060504030201, length: 0x1000, key: 0xDEADBEEF, invalidate: true });
        assert_eq!(s.to_bytes(), b);
        let mut plain = b;
        plain[15] = 0x40;
        assert!(matches!(Sgl::parse(&plain), Ok(Sgl::Keyed { invalidate: false, .. })));
        assert_eq!(Sgl::none().to_bytes()[15], 0x40);
    }

    #[test]
    fn in_capsule_sgl_layout() {
        let s = Sgl::InCapsule { offset: 0, length: 4096 };
        let b = s.to_bytes();
        assert_eq!(b[15], 0x01);
        assert_eq!(&b[8..12], &[0, 0x10, 0, 0]);
        assert_eq!(Sgl::parse(&b).unwrap(), s);
    }

    #[test]
    fn unknown_sgl_types_are_errors() {
        let mut b = [0u8; 16];
        b[15] = 0x20; // segment
        assert_eq!(Sgl::parse(&b), Err(SglError { sgl_type: 2, subtype: 0 }));
        b[15] = 0x4A; // keyed, transport specific subtype
        assert_eq!(Sgl::parse(&b), Err(SglError { sgl_type: 4, subtype: 0xA }));
    }

    #[test]
    fn command_header_offsets() {
        let mut b = [0u8; 64];
        b[0] = 0x02;
        b[1] = 0x40;
        b[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&0xAAu64.to_le_bytes());
        b[40..48].copy_from_slice(&0x1_0000_0002u64.to_le_bytes());
        b[48..50].copy_from_slice(&7u16.to_le_bytes());
        b[39] = 0x01;
        let c = Command::from_bytes(&b).unwrap();
        assert_eq!((c.opcode(), c.psdt(), c.fuse(), c.cid(), c.nsid(), c.mptr()), (2, 1, 0, 0x1234, 1, 0xAA));
        assert_eq!((c.slba(), c.nlb()), (0x1_0000_0002, 7));
        assert_eq!(c.cdw(10), 2);
        assert_eq!(c.cdw(11), 1);
        assert_eq!(c.cdw(16), 0);
        assert_eq!(c.sgl(), Ok(Sgl::InCapsule { offset: 0, length: 0 }));
        let rebuilt = Command::rw(2, 0x1234, 1, 0x1_0000_0002, 7, &Sgl::InCapsule { offset: 0, length: 0 });
        let mut expect = b;
        expect[16..24].fill(0);
        assert_eq!(rebuilt.as_bytes(), &expect);
        assert_eq!(Command::from_bytes(&b[..63]), Err(WireError::Truncated { need: 64, got: 63 }));
    }

    #[test]
    fn connect_command_layout() {
        let k = Connect { recfmt: 0, qid: 2, sqsize: 127, cattr: 0, kato: 15000 };
        let c = Fabrics::Connect(k).to_command(9, &Sgl::Keyed { addr: 0, length: 1024, key: 5, invalidate: true });
        let b = c.as_bytes();
        assert_eq!((b[0], b[4]), (0x7F, 0x01));
        assert_eq!(&b[42..44], &[2, 0]);
        assert_eq!(&b[44..46], &[127, 0]);
        assert_eq!(&b[48..52], &15000u32.to_le_bytes());
        assert_eq!(Fabrics::parse(&c), Ok(Fabrics::Connect(k)));
        assert_eq!(Fabrics::parse(&Command::new(1, 0)), Err(WireError::Opcode(1)));
    }

    #[test]
    fn property_commands_layout() {
        let g = Fabrics::PropertyGet { size: PropertySize::Eight, offset: property::CAP };
        let c = g.to_command(1, &Sgl::none());
        assert_eq!((c.as_bytes()[4], c.as_bytes()[40]), (0x04, 1));
        assert_eq!(Fabrics::parse(&c), Ok(g));
        let s = Fabrics::PropertySet { size: PropertySize::Four, offset: property::CC, value: 0x460001 };
        let c = s.to_command(2, &Sgl::none());
        assert_eq!(&c.as_bytes()[44..48], &0x14u32.to_le_bytes());
        assert_eq!(&c.as_bytes()[48..52], &0x460001u32.to_le_bytes());
        assert_eq!(Fabrics::parse(&c), Ok(s));
        let mut bad = *c.as_bytes();
        bad[40] = 2;
        assert_eq!(Fabrics::parse(&Command::from_bytes(&bad).unwrap()), Err(WireError::Field("attrib")));
    }

    #[test]
    fn connect_data_layout() {
        let d = ConnectData {
            hostid: [7; 16],
            cntlid: 0xFFFF,
            subnqn: "nqn.2014-08.org.example:disk".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
        };
        let b = d.to_bytes();
        assert_eq!(&b[16..18], &[0xFF, 0xFF]);
        assert_eq!(&b[256..260], b"nqn.");
        assert_eq!(&b[512..516], b"nqn.");
        assert_eq!(ConnectData::parse(&b).unwrap(), d);
        assert!(matches!(ConnectData::parse(&b[..1023]), Err(WireError::Truncated { .. })));
        let mut bad = b;
        bad[256] = 0xFF;
        assert_eq!(ConnectData::parse(&bad), Err(WireError::Field("nqn")));
        // An NQN filling its field leaves no room for the NUL.
        let mut full = b;
        full[512..768].fill(b'a');
        assert_eq!(ConnectData::parse(&full), Err(WireError::Field("nqn")));
        let long = ConnectData { hostnqn: "a".repeat(300), ..d.clone() };
        assert_eq!(ConnectData::parse(&long.to_bytes()).unwrap().hostnqn.len(), 255);
    }

    #[test]
    fn completion_layout_and_status_bits() {
        let c = Completion {
            result: 0x1122334455667788,
            sqhd: 3,
            sqid: 1,
            cid: 0xBEEF,
            status_field: Status::LBA_OUT_OF_RANGE.to_field() | 1,
        };
        let b = c.to_bytes();
        assert_eq!(&b[0..8], &0x1122334455667788u64.to_le_bytes());
        assert_eq!(&b[12..14], &[0xEF, 0xBE]);
        // SC 0x80 at bits 8:1, DNR at bit 15, phase at bit 0.
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 0x8101);
        let d = Completion::parse(&b).unwrap();
        assert_eq!(d, c);
        assert!(d.phase());
        assert_eq!(d.status(), Status::LBA_OUT_OF_RANGE);
        assert_eq!((d.dw0(), d.dw1()), (0x55667788, 0x11223344));
        // Fabrics Connect Invalid Host: SCT 1, SC 0x84, as Linux's 0x184 shifted left by one.
        assert_eq!(Status::CONNECT_INVALID_HOST.to_field() & 0x7FFF, 0x184 << 1);
        assert_eq!(Status::COMMAND_SEQUENCE_ERROR.to_field() & 0x7FFF, 0x0C << 1);
        assert_eq!(Status::KEEP_ALIVE_EXPIRED.sc, 0x19);
        assert_eq!((Status::SGL_OFFSET_INVALID.sc, Status::SGL_DESCRIPTOR_TYPE_INVALID.sc), (0x16, 0x11));
        assert_eq!((Status::DATA_SGL_LENGTH_INVALID.sc, Status::NAMESPACE_NOT_READY.sc), (0x0F, 0x82));
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.to_field() & 0x7FFF, 0x182 << 1);
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::INVALID_FIELD.is_success());
    }

    #[test]
    fn properties() {
        let cap = property::cap::build(127, 15);
        assert_eq!(property::cap::mqes(cap), 127);
        assert_eq!(property::cap::timeout(cap), 15);
        assert_eq!(property::cap::css(cap) & 1, 1);
        assert_eq!(property::cap::mpsmin(cap), 0);
        assert_eq!(property::vs(1, 3, 0), 0x0001_0300);
        let cc = property::cc::enable_value();
        assert!(property::cc::enabled(cc));
        assert_eq!((property::cc::iosqes(cc), property::cc::iocqes(cc)), (6, 4));
        assert_eq!(property::cc::shn(cc | property::cc::SHN_NORMAL), 1);
        assert!(property::csts::shutdown_complete(property::csts::SHST_COMPLETE | 1));
        assert!(!property::csts::shutdown_complete(property::csts::SHST_OCCURRING));
    }

    #[test]
    fn identify_controller_page() {
        let id = IdentifyController {
            serial: "abc".into(),
            model: "iwarp".into(),
            firmware: "0.1".into(),
            mdts: 5,
            cntlid: 1,
            ver: property::vs(1, 3, 0),
            aerl: 3,
            kas: 50,
            maxcmd: 128,
            nn: 1,
            oncs: ONCS_WRITE_ZEROES,
            vwc: 1,
            sgls: sgls::SUPPORTED | sgls::KEYED | sgls::OFFSET,
            subnqn: "nqn.x".into(),
            ioccsz: 4 + 512,
            iorcsz: 1,
        };
        let p = id.to_page();
        assert_eq!(&p[4..7], b"abc");
        assert_eq!(p[23], b' ');
        assert_eq!(p[77], 5);
        assert_eq!(&p[536..540], &0x0010_0005u32.to_le_bytes());
        assert_eq!((p[512], p[513]), (0x66, 0x44));
        assert_eq!(&p[768..773], b"nqn.x");
        assert_eq!(&p[1800..1802], &[0, 0]);
        assert_eq!(IdentifyController::parse(&p[..]).unwrap(), id);
    }

    #[test]
    fn identify_namespace_and_lists() {
        let ns = IdentifyNamespace { blocks: 2048, lbads: 9, nguid: [3; 16] };
        let p = ns.to_page();
        assert_eq!(&p[0..8], &2048u64.to_le_bytes());
        assert_eq!(&p[8..16], &2048u64.to_le_bytes());
        assert_eq!(p[130], 9);
        assert_eq!(IdentifyNamespace::parse(&p[..]).unwrap(), ns);
        let l = active_ns_list(&[3, 1, 2], 1);
        assert_eq!(parse_active_ns_list(&l[..]), vec![2, 3]);
        let d = ns_desc_list(&[1; 16], &[2; 16]);
        assert_eq!((d[0], d[1]), (nidt::UUID, 16));
        let parsed = parse_ns_desc_list(&d[..]);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[2], (nidt::CSI, vec![0]));
    }

    #[test]
    fn log_page_length() {
        let mut c = Command::new(admin_opcode::GET_LOG_PAGE, 1);
        c.set_cdw(10, u32::from(log_page::SMART) | (127 << 16));
        assert_eq!(c.lid(), 2);
        assert_eq!(c.log_page_len(), 512);
        let c = Command::get_log_page(3, 0xFFFF_FFFF, log_page::ERROR, 4 << 18, &Sgl::none());
        assert_eq!((c.lid(), c.log_page_len(), c.nsid()), (1, 4 << 18, 0xFFFF_FFFF));
        assert_eq!((c.cdw(10) >> 16, c.cdw(11)), (0xFFFF, 3));
        let f = Command::features(true, 4, feature::NUMBER_OF_QUEUES, 0x0003_0003);
        assert_eq!((f.opcode(), f.fid(), f.cdw(11)), (admin_opcode::SET_FEATURES, 7, 0x0003_0003));
        assert_eq!(Command::features(false, 4, feature::KEEP_ALIVE_TIMER, 0).opcode(), admin_opcode::GET_FEATURES);
    }

    fn arb_sgl() -> impl Strategy<Value = Sgl> {
        prop_oneof![
            (any::<u64>(), 0u32..=Sgl::KEYED_MAX_LEN, any::<u32>(), any::<bool>())
                .prop_map(|(addr, length, key, invalidate)| Sgl::Keyed { addr, length, key, invalidate }),
            (any::<u64>(), any::<u32>()).prop_map(|(offset, length)| Sgl::InCapsule { offset, length }),
            (any::<u64>(), any::<u32>()).prop_map(|(addr, length)| Sgl::Address { addr, length }),
        ]
    }

    proptest! {
        #[test]
        fn any_64_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(c) = Command::from_bytes(&b) {
                let _ = c.sgl();
                let _ = Fabrics::parse(&c);
                let _ = format!("{c:?}");
                let _ = (c.log_page_len(), c.slba(), c.nlb(), c.cns());
                prop_assert_eq!(&c.as_bytes()[..], &b[..64]);
            } else {
                prop_assert!(b.len() < 64);
            }
            let _ = CmRequest::parse(&b);
            let _ = CmAccept::parse(&b);
            let _ = CmReject::parse(&b);
            let _ = Completion::parse(&b);
            let _ = parse_ns_desc_list(&b);
        }

        #[test]
        fn sgl_round_trips(s in arb_sgl()) {
            prop_assert_eq!(Sgl::parse(&s.to_bytes()), Ok(s));
        }

        #[test]
        fn fabrics_round_trips(qid: u16, sqsize: u16, kato: u32, offset: u32, value: u64, eight: bool, cid: u16) {
            let size = if eight { PropertySize::Eight } else { PropertySize::Four };
            for f in [
                Fabrics::Connect(Connect { recfmt: 0, qid, sqsize, cattr: 0, kato }),
                Fabrics::PropertyGet { size, offset },
                Fabrics::PropertySet { size, offset, value },
            ] {
                let c = f.to_command(cid, &Sgl::none());
                prop_assert_eq!(c.cid(), cid);
                prop_assert_eq!(Fabrics::parse(&Command::from_bytes(c.as_bytes()).unwrap()), Ok(f));
            }
        }

        #[test]
        fn completion_round_trips(result: u64, sqhd: u16, sqid: u16, cid: u16, status_field: u16) {
            let c = Completion { result, sqhd, sqid, cid, status_field };
            prop_assert_eq!(Completion::parse(&c.to_bytes()), Ok(c));
            let s = c.status();
            prop_assert_eq!(Status::from_field(s.to_field()), s);
        }

        #[test]
        fn cm_private_data_round_trips(qid: u16, hrqsize: u16, hsqsize: u16, crqsize: u16, status: u16) {
            let r = CmRequest { recfmt: 0, qid, hrqsize, hsqsize };
            prop_assert_eq!(CmRequest::parse(&r.to_bytes()), Ok(r));
            let a = CmAccept { recfmt: 0, crqsize };
            prop_assert_eq!(CmAccept::parse(&a.to_bytes()), Ok(a));
            let j = CmReject::new(status.into());
            prop_assert_eq!(CmReject::parse(&j.to_bytes()), Ok(j));
            prop_assert_eq!(u16::from(j.status), status);
        }

        #[test]
        fn connect_data_round_trips(hostid: [u8; 16], cntlid: u16, sub in "[a-z0-9.:-]{0,255}", host in "[a-z0-9.:-]{0,255}") {
            let d = ConnectData { hostid, cntlid, subnqn: sub, hostnqn: host };
            prop_assert_eq!(ConnectData::parse(&d.to_bytes()), Ok(d));
        }
    }
}
