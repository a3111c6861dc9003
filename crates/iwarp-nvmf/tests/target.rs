//! The target through a minimal host over real iWARP connections on 127.0.0.1.

mod common;

use common::*;
use iwarp::Stag;
use iwarp_nvmf::block::BlockDevice;
use iwarp_nvmf::wire::{
    self, admin_opcode, cns, feature, io_opcode, log_page, property, CmReject, Command, IdentifyController,
    IdentifyNamespace, PropertySize, RejectStatus, Sgl, Status, CNTLID_DYNAMIC, IDENTIFY_LEN,
};
use std::time::Duration;

const SIZE: usize = 1 << 20;
const BS: usize = 512;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn identify(q: &mut HostQueue, nsid: u32, cns: u8) -> (common::Rsp, Vec<u8>) {
    let cid = q.cid();
    q.exec_read(Command::identify(cid, nsid, cns, &Sgl::none()), IDENTIFY_LEN, false)
}

/// Admin queue connected and enabled, plus I/O queue 1.
fn session(addr: std::net::SocketAddr) -> (HostQueue, HostQueue, u16) {
    let mut admin = HostQueue::connect(addr, 0, 31);
    let cntlid = admin.admin_setup(0);
    let mut io = HostQueue::connect(addr, 1, 127);
    let r = io.fabrics_connect(127, 0, cntlid, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.cqe.dw0() as u16, cntlid);
    (admin, io, cntlid)
}

#[test]
fn attach_like_a_linux_host_then_write_and_read_back() {
    let (target, _h, addr, mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);

    // Connect: a new controller, its id in dword 0.
    let r = admin.fabrics_connect(31, 5000, CNTLID_DYNAMIC, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::SUCCESS);
    let cntlid = r.cqe.dw0() as u16;
    assert_ne!(cntlid, 0);
    assert_eq!(target.controllers(), 1);

    // Property dance.
    let cap = admin.prop_get(PropertySize::Eight, property::CAP).cqe.result;
    assert_eq!(property::cap::mqes(cap), 127);
    assert_eq!(property::cap::mpsmin(cap), 0);
    assert_eq!(property::cap::css(cap) & 1, 1);
    let vs = admin.prop_get(PropertySize::Four, property::VS).cqe.dw0();
    assert!(vs >= property::vs(1, 3, 0));
    assert!(!property::csts::ready(admin.prop_get(PropertySize::Four, property::CSTS).cqe.dw0()));
    assert_eq!(admin.prop_set(property::CC, property::cc::enable_value()).status(), Status::SUCCESS);
    assert_eq!(admin.prop_get(PropertySize::Four, property::CC).cqe.dw0(), property::cc::enable_value());
    assert!(property::csts::ready(admin.prop_get(PropertySize::Four, property::CSTS).cqe.dw0()));

    // Identify Controller.
    let (r, page) = identify(&mut admin, 0, cns::CONTROLLER);
    assert_eq!(r.status(), Status::SUCCESS);
    let id = IdentifyController::parse(&page).unwrap();
    assert_eq!(id.cntlid, cntlid);
    assert_eq!(id.subnqn, NQN);
    assert_ne!(id.kas, 0);
    assert_eq!(id.sgls & wire::sgls::KEYED, wire::sgls::KEYED);
    assert_eq!(id.sgls & wire::sgls::OFFSET, wire::sgls::OFFSET);
    assert_eq!(id.iorcsz, 1);
    assert_eq!(id.ioccsz, (64 + 4096) / 16);
    assert_eq!(id.nn, 1);
    assert_eq!(u16::from_le_bytes([page[1800], page[1801]]), 0, "ICDOFF");
    // CNS 6 and other unknown CNS values: Invalid Field.
    assert_eq!(identify(&mut admin, 0, cns::CS_CONTROLLER).0.status(), Status::INVALID_FIELD);
    assert_eq!(identify(&mut admin, 0, 0x1F).0.status(), Status::INVALID_FIELD);
    // Namespace list, descriptors, namespace.
    let (r, page) = identify(&mut admin, 0, cns::ACTIVE_NS_LIST);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(wire::parse_active_ns_list(&page), vec![1]);
    assert_eq!(wire::parse_active_ns_list(&identify(&mut admin, 1, cns::ACTIVE_NS_LIST).1), Vec::<u32>::new());
    let (r, page) = identify(&mut admin, 1, cns::NS_DESC_LIST);
    assert_eq!(r.status(), Status::SUCCESS);
    let descs = wire::parse_ns_desc_list(&page);
    assert!(descs.iter().any(|(t, v)| *t == wire::nidt::UUID && v.len() == 16));
    let (r, page) = identify(&mut admin, 1, cns::NAMESPACE);
    assert_eq!(r.status(), Status::SUCCESS);
    let ns = IdentifyNamespace::parse(&page).unwrap();
    assert_eq!(ns.blocks, (SIZE / BS) as u64);
    assert_eq!(ns.lbads, 9);
    assert_eq!(identify(&mut admin, 2, cns::NAMESPACE).0.status(), Status::INVALID_NAMESPACE);
    assert_eq!(identify(&mut admin, 2, cns::NS_DESC_LIST).0.status(), Status::INVALID_NAMESPACE);

    // Log pages and features.
    let mut cmd = Command::new(admin_opcode::GET_LOG_PAGE, admin.cid());
    cmd.set_cdw(10, u32::from(log_page::SMART) | (127 << 16));
    let (r, page) = admin.exec_read(cmd, 512, false);
    assert_eq!(r.status(), Status::SUCCESS);
    assert!(page.iter().all(|&b| b == 0));
    let mut cmd = Command::new(admin_opcode::SET_FEATURES, admin.cid());
    cmd.set_cdw(10, u32::from(feature::NUMBER_OF_QUEUES));
    cmd.set_cdw(11, 3 | (3 << 16));
    let r = admin.exec(&cmd);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.cqe.dw0(), 3 | (3 << 16));
    let mut cmd = Command::new(admin_opcode::GET_FEATURES, admin.cid());
    cmd.set_cdw(10, u32::from(feature::KEEP_ALIVE_TIMER));
    assert_eq!(admin.exec(&cmd).cqe.dw0(), 5000);
    let cmd = Command::new(admin_opcode::KEEP_ALIVE, admin.cid());
    assert_eq!(admin.exec(&cmd).status(), Status::SUCCESS);
    // An Asynchronous Event Request is held: no completion.
    let aer = Command::new(admin_opcode::ASYNC_EVENT_REQUEST, admin.cid());
    admin.send(&aer, &[]);
    let cmd = Command::new(admin_opcode::KEEP_ALIVE, admin.cid());
    let r = admin.exec(&cmd);
    assert_eq!(r.status(), Status::SUCCESS);

    // I/O queue.
    let mut io = HostQueue::connect(addr, 1, 127);
    let r = io.fabrics_connect(127, 0, cntlid, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::SUCCESS);

    // Write 8 blocks in the capsule at LBA 0.
    let a = pattern(8 * BS, 1);
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 0, 7, &Sgl::InCapsule { offset: 0, length: a.len() as u32 });
    assert_eq!(io.exec_with(&cmd, &a).status(), Status::SUCCESS);
    let mut got = vec![0u8; a.len()];
    mem.read_at(&mut got, 0).unwrap();
    assert_eq!(got, a);

    // Write 64 blocks through a keyed SGL at LBA 100.
    let b = pattern(64 * BS, 7);
    let src = io.data(b.len());
    src.write(0, &b).unwrap();
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 100, 63, &HostQueue::keyed(&src, b.len(), false));
    assert_eq!(io.exec(&cmd).status(), Status::SUCCESS);
    let mut got = vec![0u8; b.len()];
    mem.read_at(&mut got, 100 * BS as u64).unwrap();
    assert_eq!(got, b);

    // Read both back; the keyed read asking for invalidation completes by Send with Invalidate.
    let cid = io.cid();
    let (r, data) = io.exec_read(Command::rw(io_opcode::READ, cid, 1, 100, 63, &Sgl::none()), b.len(), true);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(data, b);
    assert!(r.wc.invalidated_stag.is_some(), "Send with Invalidate expected");
    let cid = io.cid();
    let dst = io.data(a.len());
    let cmd = Command::rw(io_opcode::READ, cid, 1, 0, 7, &HostQueue::keyed(&dst, a.len(), false));
    let r = io.exec(&cmd);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(r.wc.invalidated_stag, None);
    assert_eq!(dst.to_vec(0, a.len()).unwrap(), a);
    let cid = io.cid();
    let dst = io.data(BS);
    let cmd = Command::rw(io_opcode::READ, cid, 1, 0, 0, &HostQueue::keyed(&dst, BS, true));
    let r = io.exec(&cmd);
    assert_eq!(r.wc.invalidated_stag, Some(Stag(dst.rkey())));

    // Flush, Write Zeroes.
    let cid = io.cid();
    let mut cmd = Command::new(io_opcode::FLUSH, cid);
    cmd.set_nsid(1);
    assert_eq!(io.exec(&cmd).status(), Status::SUCCESS);
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE_ZEROES, cid, 1, 100, 3, &Sgl::none());
    assert_eq!(io.exec(&cmd).status(), Status::SUCCESS);
    let mut got = vec![1u8; 4 * BS];
    mem.read_at(&mut got, 100 * BS as u64).unwrap();
    assert!(got.iter().all(|&x| x == 0));
    let mut got = vec![0u8; BS];
    mem.read_at(&mut got, 104 * BS as u64).unwrap();
    assert_eq!(got, b[4 * BS..5 * BS]);

    // Normal shutdown.
    assert_eq!(
        admin.prop_set(property::CC, property::cc::enable_value() | property::cc::SHN_NORMAL).status(),
        Status::SUCCESS
    );
    let csts = admin.prop_get(PropertySize::Four, property::CSTS).cqe.dw0();
    assert!(property::csts::shutdown_complete(csts));
    // The held AER never completed.
    assert!(admin.recv_within(Duration::from_millis(100)).is_none());
}

#[test]
fn io_commands_with_bad_ranges_lengths_and_descriptors_fail_with_their_status() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let (_admin, mut io, _) = session(addr);
    let blocks = (SIZE / BS) as u64;
    let buf = io.data(128 * 1024 + BS);
    let k = |len: usize| HostQueue::keyed(&buf, len, false);

    // LBA range past the end (and wrapping).
    let cid = io.cid();
    assert_eq!(
        io.exec(&Command::rw(io_opcode::READ, cid, 1, blocks - 1, 1, &k(2 * BS))).status(),
        Status::LBA_OUT_OF_RANGE
    );
    let cid = io.cid();
    assert_eq!(io.exec(&Command::rw(io_opcode::WRITE, cid, 1, u64::MAX, 0, &k(BS))).status(), Status::LBA_OUT_OF_RANGE);
    let cid = io.cid();
    assert_eq!(
        io.exec(&Command::rw(io_opcode::WRITE_ZEROES, cid, 1, blocks, 0, &Sgl::none())).status(),
        Status::LBA_OUT_OF_RANGE
    );
    // SGL length not (nlb + 1) blocks.
    let cid = io.cid();
    assert_eq!(io.exec(&Command::rw(io_opcode::READ, cid, 1, 0, 1, &k(BS))).status(), Status::DATA_SGL_LENGTH_INVALID);
    let cid = io.cid();
    assert_eq!(
        io.exec(&Command::rw(io_opcode::WRITE, cid, 1, 0, 0, &k(2 * BS))).status(),
        Status::DATA_SGL_LENGTH_INVALID
    );
    // In-capsule data shorter than its descriptor says, or at an offset.
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 0, 0, &Sgl::InCapsule { offset: 0, length: BS as u32 });
    assert_eq!(io.exec_with(&cmd, &[0u8; 100]).status(), Status::DATA_SGL_LENGTH_INVALID);
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 0, 0, &Sgl::InCapsule { offset: 16, length: BS as u32 });
    assert_eq!(io.exec_with(&cmd, &[0u8; BS + 16]).status(), Status::SGL_OFFSET_INVALID);
    // More in-capsule data than the target takes (IOCCSZ).
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 0, 15, &Sgl::InCapsule { offset: 0, length: 16 * BS as u32 });
    let big = vec![0u8; 4096];
    assert_eq!(io.exec_with(&cmd, &big).status(), Status::DATA_SGL_LENGTH_INVALID);
    // A read into the capsule, and an SGL type the transport does not know.
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::READ, cid, 1, 0, 0, &Sgl::InCapsule { offset: 0, length: BS as u32 });
    assert_eq!(io.exec(&cmd).status(), Status::SGL_DESCRIPTOR_TYPE_INVALID);
    let cid = io.cid();
    let mut cmd = Command::rw(io_opcode::READ, cid, 1, 0, 0, &Sgl::none());
    let mut raw = *cmd.as_bytes();
    raw[39] = 0x20; // segment descriptor
    raw[32] = 0x00;
    raw[33] = 0x02; // length 512
    cmd = Command::from_bytes(&raw).unwrap();
    assert_eq!(io.exec(&cmd).status(), Status::SGL_DESCRIPTOR_TYPE_INVALID);
    let cid = io.cid();
    let cmd = Command::rw(io_opcode::WRITE, cid, 1, 0, 0, &Sgl::Address { addr: 0, length: BS as u32 });
    assert_eq!(io.exec(&cmd).status(), Status::SGL_DESCRIPTOR_TYPE_INVALID);
    // Beyond MDTS (128 KiB).
    let cid = io.cid();
    let len = 128 * 1024 + BS;
    assert_eq!(
        io.exec(&Command::rw(io_opcode::READ, cid, 1, 0, (len / BS - 1) as u16, &k(len))).status(),
        Status::INVALID_FIELD
    );
    // Another namespace, another opcode.
    let cid = io.cid();
    assert_eq!(io.exec(&Command::rw(io_opcode::READ, cid, 2, 0, 0, &k(BS))).status(), Status::INVALID_NAMESPACE);
    let cid = io.cid();
    let mut cmd = Command::new(0x05, cid);
    cmd.set_nsid(1);
    assert_eq!(io.exec(&cmd).status(), Status::INVALID_OPCODE);
    // Property Get on an I/O queue is not an I/O command; Connect again is out of sequence.
    let cid = io.cid();
    let cmd =
        wire::Fabrics::PropertyGet { size: PropertySize::Four, offset: property::VS }.to_command(cid, &Sgl::none());
    assert_eq!(io.exec(&cmd).status(), Status::INVALID_OPCODE);
    let r = io.fabrics_connect(127, 0, 1, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::COMMAND_SEQUENCE_ERROR);
    // The queue still works.
    let cid = io.cid();
    assert_eq!(io.exec(&Command::rw(io_opcode::READ, cid, 1, 0, 0, &k(BS))).status(), Status::SUCCESS);
}

#[test]
fn admin_commands_with_bad_fields_fail_with_their_status() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);
    let r = admin.fabrics_connect(31, 0, CNTLID_DYNAMIC, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::SUCCESS);
    // Before CC.EN: admin commands other than Fabrics are out of sequence.
    assert_eq!(identify(&mut admin, 0, cns::CONTROLLER).0.status(), Status::COMMAND_SEQUENCE_ERROR);
    // Properties: unknown offset, read-only property, wrong size, bad size code.
    assert_eq!(admin.prop_get(PropertySize::Four, 0x40).status(), Status::INVALID_FIELD);
    assert_eq!(admin.prop_get(PropertySize::Eight, property::CSTS).status(), Status::INVALID_FIELD);
    assert_eq!(admin.prop_set(property::CSTS, 1).status(), Status::INVALID_FIELD);
    let cid = admin.cid();
    let mut raw =
        *wire::Fabrics::PropertyGet { size: PropertySize::Four, offset: 0 }.to_command(cid, &Sgl::none()).as_bytes();
    raw[40] = 5;
    assert_eq!(admin.exec(&Command::from_bytes(&raw).unwrap()).status(), Status::INVALID_FIELD);
    // An unknown Fabrics command type.
    let cid = admin.cid();
    let cmd = wire::Fabrics::Other(0x05).to_command(cid, &Sgl::none());
    assert_eq!(admin.exec(&cmd).status(), Status::INVALID_OPCODE);
    // Enabling with queue entry sizes other than 64/16 bytes is a controller fatal status.
    assert_eq!(admin.prop_set(property::CC, property::cc::EN).status(), Status::SUCCESS);
    let csts = admin.prop_get(PropertySize::Four, property::CSTS).cqe.dw0();
    assert_ne!(csts & property::csts::CFS, 0);
    assert!(!property::csts::ready(csts));
    assert_eq!(admin.prop_set(property::CC, 0).status(), Status::SUCCESS);
    assert_eq!(admin.prop_set(property::CC, property::cc::enable_value()).status(), Status::SUCCESS);
    assert!(property::csts::ready(admin.prop_get(PropertySize::Four, property::CSTS).cqe.dw0()));

    // Unknown admin opcode, log page, feature; bad Number of Queues; Identify with a short SGL
    // or in-capsule SGL.
    let cid = admin.cid();
    assert_eq!(admin.exec(&Command::new(0x81, cid)).status(), Status::INVALID_OPCODE);
    let mut cmd = Command::new(admin_opcode::GET_LOG_PAGE, admin.cid());
    cmd.set_cdw(10, 0x70 | (127 << 16));
    assert_eq!(admin.exec_read(cmd, 512, false).0.status(), Status::INVALID_LOG_PAGE);
    let mut cmd = Command::new(admin_opcode::GET_LOG_PAGE, admin.cid());
    cmd.set_cdw(10, u32::from(log_page::ERROR) | (15 << 16));
    assert_eq!(admin.exec_read(cmd, 32, false).0.status(), Status::DATA_SGL_LENGTH_INVALID);
    let mut cmd = Command::new(admin_opcode::SET_FEATURES, admin.cid());
    cmd.set_cdw(10, 0x7E);
    assert_eq!(admin.exec(&cmd).status(), Status::INVALID_FIELD);
    let mut cmd = Command::new(admin_opcode::SET_FEATURES, admin.cid());
    cmd.set_cdw(10, u32::from(feature::NUMBER_OF_QUEUES));
    cmd.set_cdw(11, 0xFFFF);
    assert_eq!(admin.exec(&cmd).status(), Status::INVALID_FIELD);
    let mut cmd = Command::new(admin_opcode::GET_FEATURES, admin.cid());
    cmd.set_cdw(10, 0x7E);
    assert_eq!(admin.exec(&cmd).status(), Status::INVALID_FIELD);
    let cid = admin.cid();
    let buf = admin.data(IDENTIFY_LEN);
    let cmd = Command::identify(cid, 0, cns::CONTROLLER, &HostQueue::keyed(&buf, 1024, false));
    assert_eq!(admin.exec(&cmd).status(), Status::DATA_SGL_LENGTH_INVALID);
    let cid = admin.cid();
    let cmd = Command::identify(cid, 0, cns::CONTROLLER, &Sgl::InCapsule { offset: 0, length: 4096 });
    assert_eq!(admin.exec(&cmd).status(), Status::SGL_DESCRIPTOR_TYPE_INVALID);
    assert_eq!(identify(&mut admin, 0xFFFF_FFFF, cns::ACTIVE_NS_LIST).0.status(), Status::INVALID_NAMESPACE);
    // Asynchronous Event Requests beyond AERL + 1 fail at once.
    for _ in 0..4 {
        let cmd = Command::new(admin_opcode::ASYNC_EVENT_REQUEST, admin.cid());
        admin.send(&cmd, &[]);
    }
    let cid = admin.cid();
    let r = admin.exec(&Command::new(admin_opcode::ASYNC_EVENT_REQUEST, cid));
    assert_eq!(r.status(), Status::AER_LIMIT_EXCEEDED);
}

#[test]
fn commands_before_connect_are_sequence_errors() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);
    let r = admin.prop_get(PropertySize::Eight, property::CAP);
    assert_eq!(r.status(), Status::COMMAND_SEQUENCE_ERROR);
    let cid = admin.cid();
    let r = admin.exec(&Command::identify(cid, 0, cns::CONTROLLER, &Sgl::none()));
    assert_eq!(r.status(), Status::COMMAND_SEQUENCE_ERROR);
    // Connect still works after that.
    assert_ne!(admin.admin_setup(0), 0);
    // An I/O queue of a controller: I/O before its Connect.
    let mut io = HostQueue::connect(addr, 1, 15);
    let cid = io.cid();
    let r = io.exec(&Command::rw(io_opcode::READ, cid, 1, 0, 0, &Sgl::none()));
    assert_eq!(r.status(), Status::COMMAND_SEQUENCE_ERROR);
}

#[test]
fn connect_with_bad_parameters_is_refused() {
    let mut cfg = small_config();
    cfg.hosts = vec![HOSTNQN.to_owned(), "nqn.2014-08.org.example:other-host".to_owned()];
    let (target, _h, addr, _mem, _d) = start_target(cfg, SIZE);
    let bad_data = |r: &common::Rsp, offset: u64| {
        assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(r.cqe.dw0() as u64, wire::connect_invalid_param_result(true, offset as u16));
    };
    let mut admin = HostQueue::connect(addr, 0, 31);
    // Another subsystem's NQN.
    let r = admin.fabrics_connect(31, 0, CNTLID_DYNAMIC, "nqn.2014-08.org.example:nothing", HOSTNQN);
    bad_data(&r, 256);
    // A static controller id.
    let r = admin.fabrics_connect(31, 0, 7, NQN, HOSTNQN);
    bad_data(&r, 16);
    // A host not on the list.
    let r = admin.fabrics_connect(31, 0, CNTLID_DYNAMIC, NQN, "nqn.2014-08.org.example:stranger");
    assert_eq!(r.status(), Status::CONNECT_INVALID_HOST);
    // SQSIZE larger than the connection's queue, or zero.
    let r = admin.fabrics_connect(32, 0, CNTLID_DYNAMIC, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(r.cqe.dw0() as u64, wire::connect_invalid_param_result(false, 44));
    let r = admin.fabrics_connect(0, 0, CNTLID_DYNAMIC, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    // Connect data of the wrong length, and a record format other than 0.
    let cid = admin.cid();
    let buf = admin.data(1024);
    let k = wire::Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato: 0 };
    let cmd = wire::Fabrics::Connect(k).to_command(cid, &HostQueue::keyed(&buf, 512, false));
    assert_eq!(admin.exec(&cmd).status(), Status::DATA_SGL_LENGTH_INVALID);
    let cid = admin.cid();
    let cmd =
        wire::Fabrics::Connect(wire::Connect { recfmt: 1, ..k }).to_command(cid, &HostQueue::keyed(&buf, 1024, false));
    assert_eq!(admin.exec(&cmd).status(), Status::CONNECT_INCOMPATIBLE_FORMAT);
    // The qid must be the connection's.
    let cid = admin.cid();
    let cmd =
        wire::Fabrics::Connect(wire::Connect { qid: 1, ..k }).to_command(cid, &HostQueue::keyed(&buf, 1024, false));
    let r = admin.exec(&cmd);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(r.cqe.dw0() as u64, wire::connect_invalid_param_result(false, 42));
    assert_eq!(target.controllers(), 0);

    // Now a good one.
    let r = admin.fabrics_connect(31, 0, CNTLID_DYNAMIC, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::SUCCESS);
    let cntlid = r.cqe.dw0() as u16;
    // An I/O queue before the controller is enabled: out of sequence.
    let mut io = HostQueue::connect(addr, 1, 31);
    let r = io.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::COMMAND_SEQUENCE_ERROR);
    assert_eq!(admin.prop_set(property::CC, property::cc::enable_value()).status(), Status::SUCCESS);
    // An unknown controller, another host's NQN.
    let r = io.fabrics_connect(31, 0, cntlid.wrapping_add(100), NQN, HOSTNQN);
    bad_data(&r, 16);
    let r = io.fabrics_connect(31, 0, cntlid, NQN, "nqn.2014-08.org.example:other-host");
    assert_eq!(r.status(), Status::CONNECT_INVALID_HOST);
    // The right one; then the same qid again on another connection.
    assert_eq!(io.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN).status(), Status::SUCCESS);
    let mut again = HostQueue::connect(addr, 1, 31);
    let r = again.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    // A qid beyond the queues Set Features granted.
    let mut cmd = Command::new(admin_opcode::SET_FEATURES, admin.cid());
    cmd.set_cdw(10, u32::from(feature::NUMBER_OF_QUEUES));
    cmd.set_cdw(11, 1 | (1 << 16));
    assert_eq!(admin.exec(&cmd).cqe.dw0(), 1 | (1 << 16));
    let mut q3 = HostQueue::connect(addr, 3, 31);
    let r = q3.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(r.cqe.dw0() as u64, wire::connect_invalid_param_result(false, 42));
}

#[test]
fn connect_data_in_the_capsule_is_accepted() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);
    let data =
        wire::ConnectData { hostid: [1; 16], cntlid: CNTLID_DYNAMIC, subnqn: NQN.into(), hostnqn: HOSTNQN.into() };
    let cid = admin.cid();
    let k = wire::Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato: 0 };
    let cmd = wire::Fabrics::Connect(k).to_command(cid, &Sgl::InCapsule { offset: 0, length: 1024 });
    let r = admin.exec_with(&cmd, &data.to_bytes());
    assert_eq!(r.status(), Status::SUCCESS);
    assert_ne!(r.cqe.dw0(), 0);
}

fn rejected_with(r: Result<HostQueue, iwarp::ConnectError>) -> RejectStatus {
    match r {
        Err(iwarp::ConnectError::Rejected { private_data }) => CmReject::parse(&private_data).unwrap().status,
        Err(e) => panic!("expected a reject, got {e}"),
        Ok(_) => panic!("expected a reject, got a connection"),
    }
}

#[test]
fn bad_private_data_is_rejected_with_its_status() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    assert_eq!(rejected_with(connect_raw(addr, &[], true)), RejectStatus::InvalidLength);
    assert_eq!(rejected_with(connect_raw(addr, &[0u8; 16], true)), RejectStatus::InvalidLength);
    let mut b = cm_request(0, 31);
    b[0] = 1;
    assert_eq!(rejected_with(connect_raw(addr, &b, true)), RejectStatus::InvalidRecfmt);
    assert_eq!(rejected_with(connect_raw(addr, &cm_request(0, 128), true)), RejectStatus::InvalidHsqsize);
    assert_eq!(rejected_with(connect_raw(addr, &cm_request(0, 0), true)), RejectStatus::InvalidHsqsize);
    let mut b = cm_request(0, 31);
    b[4] = 0;
    b[5] = 0;
    assert_eq!(rejected_with(connect_raw(addr, &b, true)), RejectStatus::InvalidHrqsize);
    // An I/O queue while no controller exists, and a qid beyond the I/O queue limit.
    assert_eq!(rejected_with(connect_raw(addr, &cm_request(1, 31), true)), RejectStatus::InvalidQid);
    let mut admin = HostQueue::connect(addr, 0, 31);
    admin.admin_setup(0);
    assert_eq!(rejected_with(connect_raw(addr, &cm_request(9, 31), true)), RejectStatus::InvalidQid);
    // An initiator that takes no RDMA Reads (IRD 0) cannot be served.
    let dev = iwarp::Device::open(iwarp::DeviceConfig::default()).unwrap();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(8).unwrap();
    let qp = pd.create_qp(&iwarp::QpInit::new(&cq, &cq)).unwrap();
    let params = iwarp::ConnParams {
        private_data: cm_request(0, 31).to_vec(),
        responder_resources: 0,
        initiator_depth: 0,
        ..iwarp::ConnParams::default()
    };
    match qp.connect(addr, &params) {
        Err(iwarp::ConnectError::Rejected { private_data }) => {
            assert_eq!(CmReject::parse(&private_data).unwrap().status, RejectStatus::InvalidIrd)
        }
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[test]
fn crc_can_be_required() {
    let mut cfg = small_config();
    cfg.crc = iwarp_nvmf::target::CrcPolicy::Require;
    let (_t, _h, addr, _mem, _d) = start_target(cfg, SIZE);
    assert!(matches!(connect_raw(addr, &cm_request(0, 31), false), Err(iwarp::ConnectError::Rejected { .. })));
    let mut q = connect_raw(addr, &cm_request(0, 31), true).unwrap();
    assert!(q.qp.conn_info().unwrap().crc);
    assert_ne!(q.admin_setup(0), 0);
}

#[test]
fn keep_alive_expiry_tears_the_controller_down() {
    let (target, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);
    let cntlid = admin.admin_setup(600);
    let mut io = HostQueue::connect(addr, 1, 31);
    assert_eq!(io.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN).status(), Status::SUCCESS);
    // Keep Alive in time keeps it.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        let cmd = Command::new(admin_opcode::KEEP_ALIVE, admin.cid());
        assert_eq!(admin.exec(&cmd).status(), Status::SUCCESS);
    }
    assert_eq!(target.controllers(), 1);
    // Silence: both queues are disconnected and the controller is gone.
    assert!(admin.wait_closed(Duration::from_secs(3)), "admin queue still up");
    assert!(io.wait_closed(Duration::from_secs(3)), "I/O queue still up");
    assert_eq!(target.controllers(), 0);
    // Its id no longer names a controller.
    let mut io2 = HostQueue::connect(addr, 0, 31);
    assert_ne!(io2.admin_setup(0), 0);
    let mut io3 = HostQueue::connect(addr, 1, 31);
    let r = io3.fabrics_connect(31, 0, cntlid, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn more_outstanding_commands_than_the_queue_holds_tear_it_down() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 3);
    let r = admin.fabrics_connect(3, 0, CNTLID_DYNAMIC, NQN, HOSTNQN);
    assert_eq!(r.status(), Status::SUCCESS);
    assert_eq!(admin.prop_set(property::CC, property::cc::enable_value()).status(), Status::SUCCESS);
    // Four held AERs fill the four entries; a fifth command overruns the queue.
    for _ in 0..4 {
        let cmd = Command::new(admin_opcode::ASYNC_EVENT_REQUEST, admin.cid());
        admin.send(&cmd, &[]);
    }
    let cmd = Command::new(admin_opcode::KEEP_ALIVE, admin.cid());
    admin.send(&cmd, &[]);
    assert!(admin.recv_within(Duration::from_millis(500)).is_none());
    assert!(admin.wait_closed(Duration::from_secs(3)));
}

#[test]
fn a_capsule_shorter_than_a_command_tears_the_queue_down() {
    let (target, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);
    admin.admin_setup(0);
    admin.send_raw(&[0x18; 20]);
    assert!(admin.wait_closed(Duration::from_secs(3)));
    // The admin queue's end ends its controller.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while target.controllers() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(target.controllers(), 0);
}

#[test]
fn many_commands_in_flight_at_once_complete() {
    let (_t, _h, addr, mem, _d) = start_target(small_config(), SIZE);
    let (_admin, mut io, _) = session(addr);
    // 32 keyed writes of 16 KiB posted back to back, then all completions.
    let n = 32usize;
    let len = 32 * BS;
    let srcs: Vec<_> = (0..n)
        .map(|i| {
            let mr = io.data(len);
            mr.write(0, &pattern(len, i as u8)).unwrap();
            mr
        })
        .collect();
    let mut cids = Vec::new();
    for (i, mr) in srcs.iter().enumerate() {
        let cid = io.cid();
        cids.push(cid);
        let cmd = Command::rw(io_opcode::WRITE, cid, 1, (i * 32) as u64, 31, &HostQueue::keyed(mr, len, false));
        io.send(&cmd, &[]);
    }
    let mut done = Vec::new();
    for _ in 0..n {
        let r = io.recv();
        assert_eq!(r.status(), Status::SUCCESS);
        done.push(r.cqe.cid);
    }
    done.sort_unstable();
    cids.sort_unstable();
    assert_eq!(done, cids);
    for i in 0..n {
        let mut got = vec![0u8; len];
        mem.read_at(&mut got, (i * len) as u64).unwrap();
        assert_eq!(got, pattern(len, i as u8), "write {i}");
    }
}

#[test]
fn crc_can_be_declined_unless_the_host_asks() {
    let mut cfg = small_config();
    cfg.crc = iwarp_nvmf::target::CrcPolicy::Follow;
    let (_t, _h, addr, _mem, _d) = start_target(cfg, SIZE);
    let mut q = connect_raw(addr, &cm_request(0, 31), false).unwrap();
    assert!(!q.qp.conn_info().unwrap().crc);
    assert_ne!(q.admin_setup(0), 0);
    // RFC 5044 §4.4: CRC is off only if both sides decline it.
    let q = connect_raw(addr, &cm_request(0, 31), true).unwrap();
    assert!(q.qp.conn_info().unwrap().crc);
}

#[test]
fn crc_is_on_for_every_connection_when_the_target_asks() {
    let mut cfg = small_config();
    cfg.crc = iwarp_nvmf::target::CrcPolicy::Ask;
    let (_t, _h, addr, _mem, _d) = start_target(cfg, SIZE);
    let mut q = connect_raw(addr, &cm_request(0, 31), false).unwrap();
    assert!(q.qp.conn_info().unwrap().crc, "a host that declines still gets CRC from a target that asks");
    assert_ne!(q.admin_setup(0), 0);
}

#[test]
fn the_default_follows_the_host_on_crc() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    assert_eq!(iwarp_nvmf::target::TargetConfig::new("nqn.x").crc, iwarp_nvmf::target::CrcPolicy::Follow);
    let q = connect_raw(addr, &cm_request(0, 31), false).unwrap();
    assert!(!q.qp.conn_info().unwrap().crc);
    let q = connect_raw(addr, &cm_request(0, 31), true).unwrap();
    assert!(q.qp.conn_info().unwrap().crc);
}

#[test]
fn connect_with_unusable_data_descriptors_is_refused() {
    let (target, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let mut admin = HostQueue::connect(addr, 0, 31);
    let k = wire::Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato: 0 };
    // A plain address SGL has no meaning on RDMA.
    let cid = admin.cid();
    let cmd = wire::Fabrics::Connect(k).to_command(cid, &Sgl::Address { addr: 0, length: 1024 });
    assert_eq!(admin.exec(&cmd).status(), Status::SGL_DESCRIPTOR_TYPE_INVALID);
    // In-capsule data of the wrong length, or missing from the capsule.
    let data =
        wire::ConnectData { hostid: [1; 16], cntlid: CNTLID_DYNAMIC, subnqn: NQN.into(), hostnqn: HOSTNQN.into() };
    let cid = admin.cid();
    let cmd = wire::Fabrics::Connect(k).to_command(cid, &Sgl::InCapsule { offset: 0, length: 512 });
    assert_eq!(admin.exec_with(&cmd, &data.to_bytes()[..512]).status(), Status::DATA_SGL_LENGTH_INVALID);
    let cid = admin.cid();
    let cmd = wire::Fabrics::Connect(k).to_command(cid, &Sgl::InCapsule { offset: 0, length: 1024 });
    assert_eq!(admin.exec_with(&cmd, &data.to_bytes()[..100]).status(), Status::DATA_SGL_LENGTH_INVALID);
    // A subsystem NQN that is not UTF-8.
    let mut raw = data.to_bytes();
    raw[256] = 0xFF;
    let cid = admin.cid();
    let cmd = wire::Fabrics::Connect(k).to_command(cid, &Sgl::InCapsule { offset: 0, length: 1024 });
    let r = admin.exec_with(&cmd, &raw);
    assert_eq!(r.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(r.cqe.dw0() as u64, wire::connect_invalid_param_result(true, 256));
    assert_eq!(target.controllers(), 0);
}

#[test]
fn io_after_a_controller_reset_and_odd_namespaces_and_log_lengths_fail() {
    let (_t, _h, addr, _mem, _d) = start_target(small_config(), SIZE);
    let (mut admin, mut io, _) = session(addr);
    // Flush of another namespace.
    let cid = io.cid();
    let mut cmd = Command::new(io_opcode::FLUSH, cid);
    cmd.set_nsid(2);
    assert_eq!(io.exec(&cmd).status(), Status::INVALID_NAMESPACE);
    // A log page longer than the largest transfer.
    let mut cmd = Command::new(admin_opcode::GET_LOG_PAGE, admin.cid());
    cmd.set_cdw(10, u32::from(log_page::ERROR) | (0xFFFF << 16));
    cmd.set_cdw(11, 0xFFFF);
    assert_eq!(admin.exec(&cmd).status(), Status::INVALID_FIELD);
    // CC.EN cleared: the controller is no longer ready and I/O is out of sequence.
    assert_eq!(admin.prop_set(property::CC, 0).status(), Status::SUCCESS);
    assert!(!property::csts::ready(admin.prop_get(PropertySize::Four, property::CSTS).cqe.dw0()));
    let cid = io.cid();
    let buf = io.data(BS);
    let cmd = Command::rw(io_opcode::READ, cid, 1, 0, 0, &HostQueue::keyed(&buf, BS, false));
    assert_eq!(io.exec(&cmd).status(), Status::COMMAND_SEQUENCE_ERROR);
}

#[test]
fn a_write_whose_data_cannot_be_read_tears_the_queue_down() {
    let (_t, _h, addr, mem, _d) = start_target(small_config(), SIZE);
    let (_admin, mut io, _) = session(addr);
    // A key the host never registered: the target's RDMA Read fails.
    let cid = io.cid();
    let cmd = Command::rw(
        io_opcode::WRITE,
        cid,
        1,
        0,
        0,
        &Sgl::Keyed { addr: 0x1000, length: BS as u32, key: 0x00DE_AD00, invalidate: false },
    );
    io.send(&cmd, &[]);
    assert!(io.recv_within(Duration::from_millis(500)).is_none());
    assert!(io.wait_closed(Duration::from_secs(3)));
    let mut got = vec![1u8; BS];
    mem.read_at(&mut got, 0).unwrap();
    assert!(got.iter().all(|&b| b == 0), "nothing was written");
}

#[test]
fn stopping_the_target_disconnects_its_queues_and_stops_listening() {
    let (_t, handle, addr, _mem, _d) = start_target(small_config(), SIZE);
    let (admin, io, _) = session(addr);
    handle.stop();
    assert!(admin.wait_closed(Duration::from_secs(3)));
    assert!(io.wait_closed(Duration::from_secs(3)));
    assert!(connect_raw(addr, &cm_request(0, 31), true).is_err());
}

#[test]
fn unusable_configurations_are_refused() {
    let dev = iwarp::Device::open(iwarp::DeviceConfig::default()).unwrap();
    for change in [
        (|c: &mut iwarp_nvmf::target::TargetConfig| c.max_queue_entries = 1) as fn(&mut _),
        |c| c.max_queue_entries = 2000,
        |c| c.mdts = 0,
        |c| c.mdts = 13,
    ] {
        let mut cfg = small_config();
        change(&mut cfg);
        let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 4).unwrap();
        let t = iwarp_nvmf::target::Target::new(cfg, std::sync::Arc::new(iwarp_nvmf::block::MemDevice::new(4096)));
        assert!(matches!(t.serve(&dev, listener), Err(iwarp_nvmf::target::TargetError::Config(_))));
    }
}

#[test]
fn a_queue_without_connect_in_time_is_disconnected() {
    let mut cfg = small_config();
    cfg.connect_timeout = Duration::from_millis(300);
    let (_t, _h, addr, _mem, _d) = start_target(cfg, SIZE);
    let idle = HostQueue::connect(addr, 0, 31);
    let mut busy = HostQueue::connect(addr, 0, 31);
    assert_ne!(busy.admin_setup(0), 0);
    assert!(idle.wait_closed(Duration::from_secs(3)));
    // A connected queue stays.
    let cmd = Command::new(admin_opcode::KEEP_ALIVE, busy.cid());
    assert_eq!(busy.exec(&cmd).status(), Status::SUCCESS);
}
