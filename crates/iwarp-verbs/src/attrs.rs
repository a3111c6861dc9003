//! The device as the verbs describe it: its `struct ibv_device`, device and port attributes,
//! GUID and GID. Limits come from [`iwarp::Capabilities`]; the rest says what the device is:
//! an RNIC, transport iWARP, one Ethernet port that is always up.

use crate::abi::*;
use iwarp::Capabilities;
use std::sync::OnceLock;

/// The device's name.
pub(crate) const DEVICE_NAME: &str = "iwarp0";
/// A vendor id no vendor-specific code path knows (perftest, for one, then takes its
/// generic paths): "iwp" in ASCII.
pub(crate) const VENDOR_ID: u32 = 0x69_77_70;
/// The part id (one product).
pub(crate) const VENDOR_PART_ID: u32 = 1;
/// The only port.
pub(crate) const PORT: u8 = 1;
/// Completion vectors (`num_comp_vectors`).
pub(crate) const COMP_VECTORS: i32 = 1;

/// Copies `s` into a C string field, truncated to leave the terminating NUL.
pub(crate) fn set_cstr<const N: usize>(dst: &mut [libc::c_char; N], s: &str) {
    dst.fill(0);
    for (d, b) in dst.iter_mut().zip(s.bytes().take(N.saturating_sub(1))) {
        *d = b as libc::c_char;
    }
}

/// The MAC address the GID and GUIDs are made from: the first interface (by name) with a
/// non-zero address that is not loopback; a fixed locally administered address if there is
/// none (a machine with only loopback).
pub(crate) fn mac() -> [u8; 6] {
    static MAC: OnceLock<[u8; 6]> = OnceLock::new();
    *MAC.get_or_init(|| {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter(|n| n.as_str() != "lo")
            .filter_map(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok())
            .filter_map(|s| parse_mac(s.trim()))
            .find(|m| m.iter().any(|&b| b != 0))
            .unwrap_or([0x02, 0x69, 0x77, 0x70, 0x00, 0x01])
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The node GUID in network byte order (`__be64` as C code sees it): the EUI-64 of the MAC.
pub(crate) fn node_guid_be() -> u64 {
    let m = mac();
    let eui = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    u64::from_ne_bytes(eui)
}

/// GID 0 of the port: the MAC in the first six bytes, as iWARP devices report it.
pub(crate) fn gid() -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..6].copy_from_slice(&mac());
    g
}

/// `struct ibv_device` of `iwarp0`.
pub(crate) fn device_struct() -> ibv_device {
    let mut d = ibv_device {
        node_type: ibv_node_type_IBV_NODE_RNIC,
        transport_type: ibv_transport_type_IBV_TRANSPORT_IWARP,
        ..Default::default()
    };
    set_cstr(&mut d.name, DEVICE_NAME);
    set_cstr(&mut d.dev_name, DEVICE_NAME);
    d
}

fn int(v: usize) -> libc::c_int {
    libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX)
}

/// `struct ibv_device_attr` from the stack's capabilities.
pub(crate) fn device_attr(caps: &Capabilities) -> ibv_device_attr {
    let mut a = ibv_device_attr {
        node_guid: node_guid_be(),
        sys_image_guid: node_guid_be(),
        max_mr_size: u64::MAX,
        page_size_cap: 4096,
        vendor_id: VENDOR_ID,
        vendor_part_id: VENDOR_PART_ID,
        hw_ver: 0,
        max_qp: int(caps.max_qp),
        max_qp_wr: int(caps.max_qp_wr),
        device_cap_flags: 0,
        max_sge: int(caps.max_sge),
        max_sge_rd: int(caps.max_sge_rd),
        max_cq: int(caps.max_qp),
        max_cqe: int(caps.max_cqe),
        max_mr: int(1 << 20),
        max_pd: int(1 << 20),
        max_qp_rd_atom: caps.max_qp_rd_atom.into(),
        max_res_rd_atom: int(caps.max_qp * usize::from(caps.max_qp_rd_atom)),
        max_qp_init_rd_atom: caps.max_qp_init_rd_atom.into(),
        // RFC 7306 atomics are executed by the responder's stack, atomically with respect to
        // every other atomic it executes (one device per process).
        atomic_cap: if caps.rfc7306 { ibv_atomic_cap_IBV_ATOMIC_HCA } else { ibv_atomic_cap_IBV_ATOMIC_NONE },
        max_srq: int(caps.max_qp),
        max_srq_wr: int(caps.max_qp_wr),
        max_srq_sge: int(caps.max_sge),
        max_pkeys: 1,
        phys_port_cnt: 1,
        ..Default::default()
    };
    set_cstr(&mut a.fw_ver, env!("CARGO_PKG_VERSION"));
    a
}

/// `struct ibv_device_attr_ex`: the plain attributes, no extension (comp_mask 0).
pub(crate) fn device_attr_ex(caps: &Capabilities) -> ibv_device_attr_ex {
    ibv_device_attr_ex { orig_attr: device_attr(caps), phys_port_cnt_ex: 1, ..Default::default() }
}

// Values of `ibv_port_attr` fields that verbs.h gives no names (the IBTA's encodings). The
// link is loopback TCP, not a real wire: width and speed are the smallest values.
const PHYS_STATE_LINK_UP: u8 = 5;
const WIDTH_1X: u8 = 1;
const SPEED_SDR: u8 = 1;

/// `struct ibv_port_attr` of port 1.
pub(crate) fn port_attr() -> ibv_port_attr {
    ibv_port_attr {
        state: ibv_port_state_IBV_PORT_ACTIVE,
        // The stack sizes FPDUs from the TCP MSS; the verbs MTU only informs applications.
        max_mtu: ibv_mtu_IBV_MTU_4096,
        active_mtu: ibv_mtu_IBV_MTU_4096,
        gid_tbl_len: 1,
        port_cap_flags: ibv_port_cap_flags_IBV_PORT_CM_SUP,
        // A DDP message is at most 2^32 - 1 bytes (its offsets are 32 bits).
        max_msg_sz: u32::MAX,
        pkey_tbl_len: 1,
        max_vl_num: 1,
        active_width: WIDTH_1X,
        active_speed: SPEED_SDR,
        phys_state: PHYS_STATE_LINK_UP,
        link_layer: IBV_LINK_LAYER_ETHERNET as u8,
        ..Default::default()
    }
}

/// `ibv_gid_type_sysfs` of GID 0: the IB/RoCE v1 kind (a raw 16-byte GID; iWARP has no
/// type of its own in this enum).
pub(crate) const GID_TYPE_SYSFS: u32 = 0;
