//! Hostile peers on live connections: while two queue pairs of one client device carry
//! verified traffic to a server, other connections to the same server process (same device,
//! same protection domain, same listener) break the protocol — a bad CRC, a Write outside the
//! advertised region, a Send with an MSN far ahead, a Terminate out of the blue. Only the
//! attacked queue pair dies, with the Terminate RFC 5040/5041/5044 call for; the others keep
//! every byte verified. The single-connection cases, byte for byte, are in
//! `crates/iwarp/tests/terminate.rs`. Needs root and `ip netns`.

mod common;

use common::*;
use iwarp_faults::{field, num};
use std::time::Duration;

/// The server's region per connection (the hostile Write aims past its end).
const REGION: u64 = 4 << 20;

/// A Terminate's layer, error type and code.
type Code = (u64, u64, u64);

/// An attack, and the Terminate the server must answer it with (`None`: no Terminate; a
/// Terminate is not answered with one).
const ATTACKS: [(&str, Option<Code>); 4] = [
    // RFC 5044 §8: LLP layer (2), MPA (0), CRC error (2).
    ("crc", Some((2, 0, 2))),
    // RFC 5041 §7.2: DDP layer (1), tagged buffer (1), base or bounds violation (1).
    ("window", Some((1, 1, 1))),
    // RFC 5041 §7.2: DDP layer (1), untagged buffer (2), MSN range not valid (3).
    ("msn", Some((1, 2, 3))),
    ("terminate", None),
];

#[test]
fn hostile_peers_terminate_only_their_own_queue_pair_while_others_keep_verified_traffic() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 9000) else { return };
    let region = format!("region={REGION}");
    let mut srv = server(&lab, 7000, &[&region]);
    // Two well-behaved queue pairs on one client device, both to the attacked server.
    let mut good = client(&lab, &[7000, 7000], &["secs=120", "maxwrite=262144", "slot=262144", "maxsend=8192"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut reports = Vec::new();
    for (attack, _) in ATTACKS {
        let a = format!("attack={attack}");
        let mut h = initiator(&lab, "hostile", 7000, &[&a, &region, "msgs=5"]);
        reports.push(h.wait_line("hostile", Duration::from_secs(20)).expect("hostile report"));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Traffic goes on after the last attack.
    good.tell("mark");
    std::thread::sleep(Duration::from_millis(300));
    good.tell("stop");
    let lines = good.finish("result", Duration::from_secs(30));
    for (line, (attack, want)) in reports.iter().zip(ATTACKS) {
        assert_eq!(field(line, "attack"), Some(attack));
        assert_eq!(num(line, "acked"), Some(5), "the hostile peer's good messages were answered first: {line}");
        assert_eq!(num(line, "eof"), Some(1), "the server closed the connection: {line}");
        match want {
            Some((layer, etype, ecode)) => {
                assert_eq!(num(line, "terminate"), Some(1), "no Terminate: {line}");
                assert_eq!(
                    (num(line, "layer"), num(line, "etype"), num(line, "ecode")),
                    (Some(layer), Some(etype), Some(ecode)),
                    "{line}"
                );
            }
            None => assert_eq!(num(line, "terminate"), Some(0), "a Terminate answered with one: {line}"),
        }
    }
    // The server's view: connections 1 and 2 are the good ones, 3 to 6 the attacks in order.
    let n = srv.wait_count("server_conn", 6, Duration::from_secs(10));
    assert_eq!(n, 6);
    let conns = srv.seen("server_conn");
    let by_n = |k: u64| conns.iter().find(|l| num(l, "n") == Some(k)).cloned().unwrap_or_default();
    let terms = srv.seen("server_terminate");
    for (i, (attack, want)) in ATTACKS.iter().enumerate() {
        let k = 3 + i as u64;
        let s = by_n(k);
        assert_eq!(field(&s, "end"), Some("error"), "{attack}: {s}");
        assert_eq!(num(&s, "bad"), Some(0), "{attack}: the good messages before the attack: {s}");
        assert_eq!(num(&s, "msgs"), Some(5), "{attack}: {s}");
        assert_eq!(num(&s, "outstanding"), Some(0), "{attack}: {s}");
        assert_eq!(num(&s, "in_order"), Some(1), "{attack}: {s}");
        let t = terms.iter().find(|l| num(l, "n") == Some(k)).cloned().unwrap_or_default();
        let (remote, code) = match want {
            Some(c) => (0, *c),
            // The peer's Terminate: RDMAP (0), local catastrophic (0), code 0.
            None => (1, (0, 0, 0)),
        };
        assert_eq!(num(&t, "remote"), Some(remote), "{attack}: {t}");
        assert_eq!((num(&t, "layer"), num(&t, "etype"), num(&t, "ecode")), (Some(code.0), Some(code.1), Some(code.2)));
    }
    let mut verified = 0;
    for qp in [0, 1] {
        let r = result(&lines, qp);
        assert_clean(&r);
        assert!(num(&r, "after_mark").unwrap_or(0) > 0, "no traffic after the attacks: {r}");
        let s = by_n(qp as u64 + 1);
        assert_eq!(num(&s, "bad"), Some(0), "{s}");
        assert_eq!(num(&s, "verified"), num(&r, "bytes"), "{s}");
        verified += num(&s, "verified").unwrap_or(0);
    }
    eprintln!("hostile: {reports:#?}\n  the good queue pairs: {verified} bytes verified at the server, no error");
}
