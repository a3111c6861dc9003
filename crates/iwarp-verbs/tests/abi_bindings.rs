//! The checked-in bindings are what bindgen makes of the installed rdma-core headers, and the
//! sizes and offsets Rust sees are the C compiler's.
//!
//! Needs `bindgen` and `libibverbs-dev` (and `cc`); under `CI=true` their absence fails.

mod common;

use std::path::Path;
use std::process::Command;

fn tokens(s: &str) -> String {
    // Formatting (rustfmt's version, line width) may differ; the tokens may not. The first
    // two lines name the generator and package versions, compared separately.
    s.lines().skip(2).flat_map(|l| l.split_whitespace()).collect()
}

#[test]
fn checked_in_bindings_match_the_installed_headers() {
    if common::tool("bindgen", "bindgen").is_none() || !Path::new("/usr/include/infiniband/verbs.h").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI needs libibverbs-dev");
        return;
    }
    if !Path::new("/usr/include/rdma/rdma_cma.h").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI needs librdmacm-dev");
        return;
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("iwarp-verbs-bindings-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("sh").arg(format!("{dir}/abi/gen.sh")).arg(&out).status().expect("gen.sh runs");
    assert!(status.success());
    for file in ["verbs.rs", "rdma_cma.rs"] {
        let fresh = std::fs::read_to_string(out.join(file)).unwrap();
        let checked_in = std::fs::read_to_string(format!("{dir}/src/abi/{file}")).unwrap();
        assert_eq!(
            fresh.lines().next(),
            checked_in.lines().next(),
            "generator or header package changed: run abi/gen.sh and review the diff of {file}"
        );
        assert!(tokens(&fresh) == tokens(&checked_in), "src/abi/{file} is stale: run crates/iwarp-verbs/abi/gen.sh");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Sizes and offsets from the C compiler, against what Rust computes for the bindings.
#[test]
fn layouts_agree_with_the_c_compiler() {
    let Some(cc) = common::tool("cc", "gcc") else { return };
    if !Path::new("/usr/include/infiniband/verbs.h").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI needs libibverbs-dev");
        return;
    }
    use core::mem::{offset_of, size_of};
    use iwarp_verbs::abi::*;
    let rust: Vec<(&str, usize)> = vec![
        ("sizeof ibv_device", size_of::<ibv_device>()),
        ("sizeof ibv_context", size_of::<ibv_context>()),
        ("sizeof verbs_context", size_of::<verbs_context>()),
        ("sizeof ibv_pd", size_of::<ibv_pd>()),
        ("sizeof ibv_mr", size_of::<ibv_mr>()),
        ("sizeof ibv_cq", size_of::<ibv_cq>()),
        ("sizeof ibv_comp_channel", size_of::<ibv_comp_channel>()),
        ("sizeof ibv_srq", size_of::<ibv_srq>()),
        ("sizeof ibv_qp", size_of::<ibv_qp>()),
        ("sizeof ibv_qp_ex", size_of::<ibv_qp_ex>()),
        ("sizeof ibv_wc", size_of::<ibv_wc>()),
        ("sizeof ibv_send_wr", size_of::<ibv_send_wr>()),
        ("sizeof ibv_recv_wr", size_of::<ibv_recv_wr>()),
        ("sizeof ibv_device_attr", size_of::<ibv_device_attr>()),
        ("sizeof ibv_device_attr_ex", size_of::<ibv_device_attr_ex>()),
        ("sizeof ibv_port_attr", size_of::<ibv_port_attr>()),
        ("sizeof ibv_qp_attr", size_of::<ibv_qp_attr>()),
        ("sizeof ibv_qp_init_attr", size_of::<ibv_qp_init_attr>()),
        ("sizeof ibv_qp_init_attr_ex", size_of::<ibv_qp_init_attr_ex>()),
        ("sizeof ibv_gid_entry", size_of::<ibv_gid_entry>()),
        ("sizeof ibv_async_event", size_of::<ibv_async_event>()),
        ("ibv_context.abi_compat", offset_of!(ibv_context, abi_compat)),
        ("ibv_context_ops.poll_cq", offset_of!(ibv_context_ops, poll_cq)),
        ("ibv_context_ops.req_notify_cq", offset_of!(ibv_context_ops, req_notify_cq)),
        ("ibv_context_ops.post_srq_recv", offset_of!(ibv_context_ops, post_srq_recv)),
        ("ibv_context_ops.post_send", offset_of!(ibv_context_ops, post_send)),
        ("ibv_context_ops.post_recv", offset_of!(ibv_context_ops, post_recv)),
        ("verbs_context.query_port", offset_of!(verbs_context, query_port)),
        ("verbs_context.query_device_ex", offset_of!(verbs_context, query_device_ex)),
        ("verbs_context.create_qp_ex", offset_of!(verbs_context, create_qp_ex)),
        ("verbs_context.sz", offset_of!(verbs_context, sz)),
        ("verbs_context.context", offset_of!(verbs_context, context)),
        ("ibv_mr.lkey", offset_of!(ibv_mr, lkey)),
        ("ibv_mr.rkey", offset_of!(ibv_mr, rkey)),
        ("ibv_qp.qp_num", offset_of!(ibv_qp, qp_num)),
        ("ibv_qp.state", offset_of!(ibv_qp, state)),
        ("ibv_cq.cqe", offset_of!(ibv_cq, cqe)),
        ("ibv_comp_channel.fd", offset_of!(ibv_comp_channel, fd)),
        ("ibv_device.transport_type", offset_of!(ibv_device, transport_type)),
        ("ibv_port_attr.link_layer", offset_of!(ibv_port_attr, link_layer)),
        ("ibv_wc.wc_flags", offset_of!(ibv_wc, wc_flags)),
        ("ibv_send_wr.wr", offset_of!(ibv_send_wr, wr)),
        ("sizeof rdma_cm_id", size_of::<cma::rdma_cm_id>()),
        ("sizeof rdma_cm_event", size_of::<cma::rdma_cm_event>()),
        ("sizeof rdma_conn_param", size_of::<cma::rdma_conn_param>()),
        ("sizeof rdma_event_channel", size_of::<cma::rdma_event_channel>()),
        ("sizeof rdma_addrinfo", size_of::<cma::rdma_addrinfo>()),
        ("rdma_cm_id.verbs", offset_of!(cma::rdma_cm_id, verbs)),
        ("rdma_cm_id.qp", offset_of!(cma::rdma_cm_id, qp)),
        ("rdma_cm_id.route", offset_of!(cma::rdma_cm_id, route)),
        ("rdma_cm_id.port_num", offset_of!(cma::rdma_cm_id, port_num)),
        ("rdma_cm_id.event", offset_of!(cma::rdma_cm_id, event)),
        ("rdma_cm_id.send_cq", offset_of!(cma::rdma_cm_id, send_cq)),
        ("rdma_cm_id.pd", offset_of!(cma::rdma_cm_id, pd)),
        ("rdma_cm_id.qp_type", offset_of!(cma::rdma_cm_id, qp_type)),
        ("rdma_cm_event.status", offset_of!(cma::rdma_cm_event, status)),
        ("rdma_cm_event.param", offset_of!(cma::rdma_cm_event, param)),
        ("rdma_conn_param.qp_num", offset_of!(cma::rdma_conn_param, qp_num)),
        ("rdma_addrinfo.ai_connect", offset_of!(cma::rdma_addrinfo, ai_connect)),
    ];
    let mut c =
        String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <infiniband/verbs.h>\n#include <rdma/rdma_cma.h>\nint main(void) {\n",
    );
    for (what, _) in &rust {
        let expr = match what.strip_prefix("sizeof ") {
            Some(t) => format!("sizeof(struct {t})"),
            None => {
                let (t, f) = what.split_once('.').unwrap();
                format!("offsetof(struct {t}, {f})")
            }
        };
        c.push_str(&format!("    printf(\"%zu\\n\", (size_t){expr});\n"));
    }
    c.push_str("    return 0;\n}\n");
    let dir = std::env::temp_dir().join(format!("iwarp-verbs-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.c"), c).unwrap();
    let st = Command::new(cc).arg("-o").arg(dir.join("layout")).arg(dir.join("layout.c")).status().unwrap();
    assert!(st.success(), "compiling the layout probe");
    let out = Command::new(dir.join("layout")).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let c_values: Vec<usize> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(c_values.len(), rust.len());
    for ((what, r), c) in rust.iter().zip(c_values) {
        assert_eq!(*r, c, "{what}: Rust {r}, C {c}");
    }
}
