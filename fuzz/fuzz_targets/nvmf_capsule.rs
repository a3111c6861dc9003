//! NVMe over Fabrics capsules and private data: arbitrary bytes decoded as a command (with its
//! SGL and Fabrics view), a completion, CM private data and Connect data never panic, and what
//! decodes re-encodes to the same bytes.
#![no_main]

use iwarp_nvmf::wire::{
    parse_active_ns_list, parse_ns_desc_list, CmAccept, CmReject, CmRequest, Command, Completion, ConnectData, Fabrics,
    IdentifyController, IdentifyNamespace, Sgl, SGL_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Command::from_bytes(data) {
        assert_eq!(&c.as_bytes()[..], &data[..64]);
        if let Ok(sgl) = c.sgl() {
            let again = Sgl::parse(&sgl.to_bytes()).expect("an encoded SGL decodes");
            assert_eq!(again, sgl);
            let mut raw = [0u8; SGL_LEN];
            raw.copy_from_slice(&data[24..40]);
            let out = sgl.to_bytes();
            if matches!(sgl, Sgl::Keyed { .. }) {
                // Every byte of a keyed descriptor has a meaning.
                assert_eq!(out, raw);
            } else {
                // A data block descriptor's bytes 12..15 are reserved.
                assert_eq!((&out[..12], out[15]), (&raw[..12], raw[15]));
            }
        }
        if let Ok(f) = Fabrics::parse(&c) {
            let out = f.to_command(c.cid(), &Sgl::none());
            assert_eq!(Fabrics::parse(&out), Ok(f));
        }
        let _ = (c.log_page_len(), c.slba(), c.nlb(), c.cns(), format!("{c:?}"));
    }
    if let Ok(k) = Completion::parse(data) {
        assert_eq!(k.to_bytes()[..], data[..16]);
        let _ = k.status();
    }
    if let Ok(r) = CmRequest::parse(data) {
        assert_eq!(CmRequest::parse(&r.to_bytes()), Ok(r));
    }
    if let Ok(d) = ConnectData::parse(data) {
        assert_eq!(ConnectData::parse(&d.to_bytes()), Ok(d));
    }
    if let Ok(a) = CmAccept::parse(data) {
        assert_eq!(CmAccept::parse(&a.to_bytes()), Ok(a));
    }
    if let Ok(j) = CmReject::parse(data) {
        assert_eq!(j.to_bytes()[..], data[..4]);
    }
    let _ = (IdentifyController::parse(data), IdentifyNamespace::parse(data));
    let _ = (parse_ns_desc_list(data), parse_active_ns_list(data));
});
