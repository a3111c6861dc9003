//! The commands the host sends, built with the codec ([`crate::wire`]). The command
//! identifier and the data descriptor are filled in when a command is issued.

use crate::wire::{self, admin_opcode, feature, io_opcode, Command, Fabrics, PropertySize, Sgl};

/// Fabrics Connect of queue `qid` with `sqsize` (0's based) and the keep-alive timeout.
pub(crate) fn connect(qid: u16, sqsize: u16, kato_ms: u32) -> Command {
    let c = wire::Connect { recfmt: wire::RECFMT, qid, sqsize, cattr: 0, kato: kato_ms };
    Fabrics::Connect(c).to_command(0, &Sgl::none())
}

fn size(eight: bool) -> PropertySize {
    if eight {
        PropertySize::Eight
    } else {
        PropertySize::Four
    }
}

/// Fabrics Property Get.
pub(crate) fn property_get(offset: u32, eight: bool) -> Command {
    Fabrics::PropertyGet { size: size(eight), offset }.to_command(0, &Sgl::none())
}

/// Fabrics Property Set.
pub(crate) fn property_set(offset: u32, eight: bool, value: u64) -> Command {
    Fabrics::PropertySet { size: size(eight), offset, value }.to_command(0, &Sgl::none())
}

/// Identify with `cns` for `nsid`.
pub(crate) fn identify(cns: u8, nsid: u32) -> Command {
    Command::identify(0, nsid, cns, &Sgl::none())
}

/// Set Features, Number of Queues (0's based counts).
pub(crate) fn set_features_num_queues(nsqr: u16, ncqr: u16) -> Command {
    let mut c = Command::new(admin_opcode::SET_FEATURES, 0);
    c.set_cdw(10, u32::from(feature::NUMBER_OF_QUEUES));
    c.set_cdw(11, u32::from(nsqr) | u32::from(ncqr) << 16);
    c
}

/// Get Log Page `lid` for every namespace, `len` bytes (a multiple of 4).
pub(crate) fn get_log_page(lid: u8, len: u32) -> Command {
    let mut c = Command::new(admin_opcode::GET_LOG_PAGE, 0);
    c.set_nsid(0xFFFF_FFFF);
    let numd = len / 4 - 1;
    c.set_cdw(10, u32::from(lid) | (numd & 0xFFFF) << 16);
    c.set_cdw(11, numd >> 16);
    c
}

/// Asynchronous Event Request.
pub(crate) fn async_event_request() -> Command {
    Command::new(admin_opcode::ASYNC_EVENT_REQUEST, 0)
}

/// Keep Alive.
pub(crate) fn keep_alive() -> Command {
    Command::new(admin_opcode::KEEP_ALIVE, 0)
}

/// Read `nlb + 1` blocks at `slba`.
pub(crate) fn read(nsid: u32, slba: u64, nlb: u16) -> Command {
    Command::rw(io_opcode::READ, 0, nsid, slba, nlb, &Sgl::none())
}

/// Write `nlb + 1` blocks at `slba`.
pub(crate) fn write(nsid: u32, slba: u64, nlb: u16) -> Command {
    Command::rw(io_opcode::WRITE, 0, nsid, slba, nlb, &Sgl::none())
}

/// Write Zeroes of `nlb + 1` blocks at `slba`.
pub(crate) fn write_zeroes(nsid: u32, slba: u64, nlb: u16) -> Command {
    Command::rw(io_opcode::WRITE_ZEROES, 0, nsid, slba, nlb, &Sgl::none())
}

/// Flush.
pub(crate) fn flush(nsid: u32) -> Command {
    let mut c = Command::new(io_opcode::FLUSH, 0);
    c.set_nsid(nsid);
    c
}

/// A status as an error message names it: the specification's name, then the codes.
pub(crate) fn status_text(s: wire::Status) -> String {
    match s.name() {
        Some(n) => format!("{n} ({s})"),
        None => format!("unknown status ({s})"),
    }
}
