//! The commands the host sends and the structures it reads, as bytes.

use std::fmt;

/// Identify CNS values.
pub const CNS_NAMESPACE: u8 = 0x00;
pub const CNS_CONTROLLER: u8 = 0x01;
pub const CNS_ACTIVE_NS_LIST: u8 = 0x02;

/// Controller properties (registers) and their fields.
pub mod reg {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1c;
    pub const CC_EN: u32 = 1;
    pub const CC_SHN_NORMAL: u32 = 1 << 14;
    pub const CC_IOSQES_64: u32 = 6 << 16;
    pub const CC_IOCQES_16: u32 = 4 << 20;
    pub const CSTS_RDY: u32 = 1;
    pub const CSTS_CFS: u32 = 1 << 1;
    pub const CSTS_SHST_MASK: u32 = 3 << 2;
    pub const CSTS_SHST_COMPLETE: u32 = 2 << 2;
}

/// A 64-byte command capsule's command (the SGL and command identifier are filled in when
/// it is issued).
#[derive(Clone, PartialEq, Eq)]
pub struct Command(pub [u8; 64]);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command(opcode {:#04x}", self.0[0])?;
        if self.0[0] == 0x7f {
            write!(f, ", fctype {:#04x}", self.0[4])?;
        }
        write!(f, ")")
    }
}

/// SGL descriptor type bytes.
const SGL_KEYED_INVALIDATE: u8 = 0x4f;
const SGL_KEYED: u8 = 0x40;
const SGL_IN_CAPSULE_OFFSET: u8 = 0x01;
/// PSDT = 01b: SGLs for data.
const FLAGS_SGL: u8 = 1 << 6;

impl Command {
    fn new(opcode: u8) -> Self {
        let mut b = [0u8; 64];
        b[0] = opcode;
        b[1] = FLAGS_SGL;
        Command(b)
    }
    fn fabrics(fctype: u8) -> Self {
        let mut c = Command::new(0x7f);
        c.0[4] = fctype;
        c
    }
    fn put16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn cdw(&mut self, n: usize, v: u32) {
        self.put32(n * 4, v);
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }
    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.put16(2, cid);
    }
    /// SGL 1: a keyed data block (invalidate the key when `invalidate`).
    pub fn set_keyed_sgl(&mut self, addr: u64, len: u32, key: u32, invalidate: bool) {
        self.put64(24, addr);
        self.0[32..35].copy_from_slice(&len.to_le_bytes()[..3]);
        self.put32(35, key);
        self.0[39] = if invalidate { SGL_KEYED_INVALIDATE } else { SGL_KEYED };
    }
    /// SGL 1: data in the capsule, right after the command.
    pub fn set_in_capsule_sgl(&mut self, len: u32) {
        self.put64(24, 0);
        self.put32(32, len);
        self.0[36..39].fill(0);
        self.0[39] = SGL_IN_CAPSULE_OFFSET;
    }

    /// Fabrics Connect of queue `qid` with `sqsize` (0's based) and the keep-alive timeout.
    pub fn connect(qid: u16, sqsize: u16, kato_ms: u32) -> Self {
        let mut c = Command::fabrics(0x01);
        c.put16(40, 0); // record format 0
        c.put16(42, qid);
        c.put16(44, sqsize);
        c.put32(48, kato_ms);
        c
    }
    /// Fabrics Property Get.
    pub fn property_get(offset: u32, eight: bool) -> Self {
        let mut c = Command::fabrics(0x04);
        c.0[40] = u8::from(eight);
        c.put32(44, offset);
        c
    }
    /// Fabrics Property Set.
    pub fn property_set(offset: u32, eight: bool, value: u64) -> Self {
        let mut c = Command::fabrics(0x00);
        c.0[40] = u8::from(eight);
        c.put32(44, offset);
        c.put64(48, value);
        c
    }
    /// Identify with `cns` for `nsid`.
    pub fn identify(cns: u8, nsid: u32) -> Self {
        let mut c = Command::new(0x06);
        c.put32(4, nsid);
        c.cdw(10, u32::from(cns));
        c
    }
    /// Set Features, Number of Queues (0's based counts).
    pub fn set_features_num_queues(nsqr: u16, ncqr: u16) -> Self {
        let mut c = Command::new(0x09);
        c.cdw(10, 0x07);
        c.cdw(11, u32::from(nsqr) | u32::from(ncqr) << 16);
        c
    }
    /// Keep Alive.
    pub fn keep_alive() -> Self {
        Command::new(0x18)
    }
    fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u16) -> Self {
        let mut c = Command::new(opcode);
        c.put32(4, nsid);
        c.put64(40, slba);
        c.cdw(12, u32::from(nlb));
        c
    }
    /// Read `nlb + 1` blocks at `slba`.
    pub fn read(nsid: u32, slba: u64, nlb: u16) -> Self {
        Command::rw(0x02, nsid, slba, nlb)
    }
    /// Write `nlb + 1` blocks at `slba`.
    pub fn write(nsid: u32, slba: u64, nlb: u16) -> Self {
        Command::rw(0x01, nsid, slba, nlb)
    }
    /// Write Zeroes of `nlb + 1` blocks at `slba`.
    pub fn write_zeroes(nsid: u32, slba: u64, nlb: u16) -> Self {
        Command::rw(0x08, nsid, slba, nlb)
    }
    /// Flush.
    pub fn flush(nsid: u32) -> Self {
        let mut c = Command::new(0x00);
        c.put32(4, nsid);
        c
    }
}

/// The 1,024 bytes of Connect data.
pub struct ConnectData {
    hostid: [u8; 16],
    cntlid: u16,
    subnqn: String,
    hostnqn: String,
}

impl ConnectData {
    pub fn new(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Self {
        ConnectData { hostid, cntlid, subnqn: subnqn.into(), hostnqn: hostnqn.into() }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0..16].copy_from_slice(&self.hostid);
        b[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        let n = self.subnqn.len().min(255);
        b[256..256 + n].copy_from_slice(&self.subnqn.as_bytes()[..n]);
        let n = self.hostnqn.len().min(255);
        b[512..512 + n].copy_from_slice(&self.hostnqn.as_bytes()[..n]);
        b
    }
}

/// An NVMe completion's status field (SC, SCT, CRD, M, DNR; the phase bit dropped).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// Successful Completion (SCT 0, SC 0).
    pub fn is_success(self) -> bool {
        self.sc() == 0 && self.sct() == 0
    }
    /// Status Code.
    pub fn sc(self) -> u8 {
        self.0 as u8
    }
    /// Status Code Type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    /// LBA Out of Range (generic status 0x80).
    pub fn is_lba_out_of_range(self) -> bool {
        self.sct() == 0 && self.sc() == 0x80
    }
    fn name(self) -> &'static str {
        match (self.sct(), self.sc()) {
            (0, 0x00) => "Successful Completion",
            (0, 0x01) => "Invalid Command Opcode",
            (0, 0x02) => "Invalid Field in Command",
            (0, 0x04) => "Data Transfer Error",
            (0, 0x06) => "Internal Error",
            (0, 0x07) => "Command Abort Requested",
            (0, 0x0b) => "Invalid Namespace or Format",
            (0, 0x0d) => "Invalid SGL Segment Descriptor",
            (0, 0x0f) => "Data SGL Length Invalid",
            (0, 0x11) => "SGL Descriptor Type Invalid",
            (0, 0x16) => "SGL Offset Invalid",
            (0, 0x80) => "LBA Out of Range",
            (0, 0x81) => "Capacity Exceeded",
            (0, 0x82) => "Namespace Not Ready",
            (1, 0x80) => "Connect Incompatible Format",
            (1, 0x81) => "Connect Controller Busy",
            (1, 0x82) => "Connect Invalid Parameters",
            (1, 0x83) => "Connect Restart Discovery",
            (1, 0x84) => "Connect Invalid Host",
            _ => "unknown status",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SCT {:#x}, SC {:#04x})", self.name(), self.sct(), self.sc())
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A 16-byte completion, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    pub result: u64,
    pub sqhd: u16,
    pub cid: u16,
    pub status: Status,
}

impl Cqe {
    pub fn parse(b: &[u8; 16]) -> Self {
        Cqe {
            result: u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8])),
            sqhd: u16::from_le_bytes([b[8], b[9]]),
            cid: u16::from_le_bytes([b[12], b[13]]),
            status: Status(u16::from_le_bytes([b[14], b[15]]) >> 1),
        }
    }
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

/// The parts of Identify Controller the host uses.
#[derive(Debug, Clone)]
pub struct IdentifyController {
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub mdts: u8,
    pub oncs: u16,
    pub vwc: u8,
    pub sgls: u32,
    pub subnqn: String,
    pub ioccsz: u32,
}

impl IdentifyController {
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 4096 {
            return Err(format!("{} bytes, 4096 expected", b.len()));
        }
        Ok(IdentifyController {
            serial: text(&b[4..24]),
            model: text(&b[24..64]),
            firmware: text(&b[64..72]),
            mdts: b[77],
            oncs: u16::from_le_bytes([b[520], b[521]]),
            vwc: b[525],
            sgls: u32::from_le_bytes([b[536], b[537], b[538], b[539]]),
            subnqn: text(&b[768..1024]),
            ioccsz: u32::from_le_bytes([b[1792], b[1793], b[1794], b[1795]]),
        })
    }
    /// SGLS bit 2: keyed SGL data blocks.
    pub fn keyed_sgl(&self) -> bool {
        self.sgls & 3 != 0 && self.sgls & (1 << 2) != 0
    }
    /// SGLS bit 20: in-capsule data with an offset.
    pub fn in_capsule_sgl(&self) -> bool {
        self.sgls & (1 << 20) != 0
    }
}

/// The parts of Identify Namespace the host uses.
#[derive(Debug, Clone, Copy)]
pub struct IdentifyNamespace {
    pub nsze: u64,
    pub lbads: u8,
}

impl IdentifyNamespace {
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 4096 {
            return Err(format!("{} bytes, 4096 expected", b.len()));
        }
        let flbas = usize::from(b[26] & 0x0f);
        let lbaf = 128 + 4 * flbas;
        Ok(IdentifyNamespace { nsze: u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8])), lbads: b[lbaf + 2] })
    }
    pub fn block_size(&self) -> u32 {
        1u32.checked_shl(u32::from(self.lbads)).unwrap_or(0)
    }
}
