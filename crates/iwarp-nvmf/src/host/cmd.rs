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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{cns, log_page, Status};

    #[test]
    fn fabrics_commands_decode_as_the_target_reads_them() {
        let c = connect(3, 127, 5000);
        assert_eq!(
            Fabrics::parse(&c).unwrap(),
            Fabrics::Connect(wire::Connect { recfmt: 0, qid: 3, sqsize: 127, cattr: 0, kato: 5000 })
        );
        assert_eq!(
            Fabrics::parse(&property_get(0x1c, false)).unwrap(),
            Fabrics::PropertyGet { size: PropertySize::Four, offset: 0x1c }
        );
        assert_eq!(
            Fabrics::parse(&property_set(0x14, false, 0x46_0001)).unwrap(),
            Fabrics::PropertySet { size: PropertySize::Four, offset: 0x14, value: 0x46_0001 }
        );
        assert_eq!(c.psdt(), 1, "SGLs for data");
    }

    #[test]
    fn admin_and_io_commands_carry_their_fields() {
        let c = identify(cns::NS_DESC_LIST, 1);
        assert_eq!((c.opcode(), c.nsid(), c.cns()), (admin_opcode::IDENTIFY, 1, cns::NS_DESC_LIST));
        let c = set_features_num_queues(3, 5);
        assert_eq!((c.fid(), c.cdw(11)), (feature::NUMBER_OF_QUEUES, 3 | 5 << 16));
        let c = get_log_page(log_page::SMART, 512);
        assert_eq!((c.lid(), c.log_page_len(), c.nsid()), (log_page::SMART, 512, 0xFFFF_FFFF));
        let c = write(1, 0x1_0000_0002, 7);
        assert_eq!((c.opcode(), c.nsid(), c.slba(), c.nlb()), (io_opcode::WRITE, 1, 0x1_0000_0002, 7));
        assert_eq!(read(1, 9, 0).opcode(), io_opcode::READ);
        assert_eq!(flush(1).nsid(), 1);
        assert_eq!(keep_alive().opcode(), admin_opcode::KEEP_ALIVE);
        assert_eq!(async_event_request().opcode(), admin_opcode::ASYNC_EVENT_REQUEST);
    }

    #[test]
    fn status_text_names_the_status_and_keeps_the_codes() {
        assert_eq!(status_text(Status::LBA_OUT_OF_RANGE), "LBA Out of Range (sct 0x0 sc 0x80 dnr)");
        assert_eq!(status_text(Status::specific(0x7e)), "unknown status (sct 0x1 sc 0x7e)");
    }
}
