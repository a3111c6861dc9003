//! Hostile peers on live connections: while two queue pairs of one client device carry
//! verified traffic to a server, other connections to the same server process (same device,
//! same protection domain, same listener) break the protocol — a bad CRC, a Write outside the
//! advertised region, a Send with an MSN far ahead, a Terminate out of the blue, half an
//! FPDU and a FIN. Only the
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

/// An attack: its name, the Terminate the server must answer it with (`None`: none), and the
/// cause of the server's error event (`None`: a transport error, no cause) with whether the
/// peer sent it.
struct Attack {
    name: &'static str,
    answer: Option<Code>,
    cause: Option<(u64, Code)>,
}

const ATTACKS: [Attack; 5] = [
    // RFC 5044 §8: LLP layer (2), MPA (0), CRC error (2).
    Attack { name: "crc", answer: Some((2, 0, 2)), cause: Some((0, (2, 0, 2))) },
    // RFC 5041 §7.2: DDP layer (1), tagged buffer (1), base or bounds violation (1).
    Attack { name: "window", answer: Some((1, 1, 1)), cause: Some((0, (1, 1, 1))) },
    // RFC 5041 §7.2: DDP layer (1), untagged buffer (2), MSN range not valid (3).
    Attack { name: "msn", answer: Some((1, 2, 3)), cause: Some((0, (1, 2, 3))) },
    // The peer's own Terminate (RDMAP, local catastrophic) is not answered with one.
    Attack { name: "terminate", answer: None, cause: Some((1, (0, 0, 0))) },
    // Half an FPDU, then a FIN: the stream ended inside an FPDU, an error with no Terminate.
    Attack { name: "truncate", answer: None, cause: None },
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
    for attack in &ATTACKS {
        let a = format!("attack={}", attack.name);
        // The server must close within 5 s (a stream cut inside an FPDU once went unnoticed
        // until the MPA timeout's stale timer woke the connection, 10 s later).
        let mut h = initiator(&lab, "hostile", 7000, &[&a, &region, "msgs=5", "wait=5"]);
        reports.push(h.wait_line("hostile", Duration::from_secs(20)).expect("hostile report"));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Traffic goes on after the last attack.
    good.tell("mark");
    std::thread::sleep(Duration::from_millis(300));
    good.tell("stop");
    let lines = good.finish("result", Duration::from_secs(30));
    for (line, attack) in reports.iter().zip(&ATTACKS) {
        assert_eq!(field(line, "attack"), Some(attack.name));
        assert_eq!(num(line, "acked"), Some(5), "the hostile peer's good messages were answered first: {line}");
        assert_eq!(num(line, "eof"), Some(1), "the server closed the connection: {line}");
        match attack.answer {
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
    // The server's view: connections 1 and 2 are the good ones, 3 to 7 the attacks in order.
    let n = srv.wait_count("server_conn", 2 + ATTACKS.len(), Duration::from_secs(10));
    assert_eq!(n, 2 + ATTACKS.len());
    let conns = srv.seen("server_conn");
    let by_n = |k: u64| conns.iter().find(|l| num(l, "n") == Some(k)).cloned().unwrap_or_default();
    let terms = srv.seen("server_terminate");
    for (i, attack) in ATTACKS.iter().enumerate() {
        let (k, name) = (3 + i as u64, attack.name);
        let s = by_n(k);
        assert_eq!(field(&s, "end"), Some("error"), "{name}: {s}");
        assert_eq!(num(&s, "bad"), Some(0), "{name}: the good messages before the attack: {s}");
        assert_eq!(num(&s, "msgs"), Some(5), "{name}: {s}");
        assert_eq!(num(&s, "outstanding"), Some(0), "{name}: {s}");
        assert_eq!(num(&s, "in_order"), Some(1), "{name}: {s}");
        let t = terms.iter().find(|l| num(l, "n") == Some(k)).cloned();
        match (attack.cause, t) {
            (Some((remote, code)), Some(t)) => {
                assert_eq!(num(&t, "remote"), Some(remote), "{name}: {t}");
                assert_eq!(
                    (num(&t, "layer"), num(&t, "etype"), num(&t, "ecode")),
                    (Some(code.0), Some(code.1), Some(code.2)),
                    "{name}: {t}"
                );
            }
            (None, None) => {}
            (want, got) => panic!("{name}: cause {want:?}, server reported {got:?}"),
        }
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

#[test]
fn a_message_dribbled_one_byte_per_segment_is_placed_verified_and_answered() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab(false, 1500) else { return };
    let region = format!("region={REGION}");
    let mut srv = server(&lab, 7000, &[&region]);
    // After 5 messages, a Write and a Send one byte per segment, 1 ms apart: every FPDU
    // header, payload and CRC arrives in pieces, each its own readiness event.
    let mut h = initiator(&lab, "hostile", 7000, &["attack=dribble", &region, "msgs=5"]);
    let line = h.wait_line("hostile", Duration::from_secs(30)).expect("dribble report");
    assert_eq!(num(&line, "acked"), Some(6), "{line}");
    let s = srv.wait_line("server_conn", Duration::from_secs(10)).expect("server report");
    assert_eq!(num(&s, "msgs"), Some(6), "{s}");
    assert_eq!(num(&s, "bad"), Some(0), "{s}");
    assert_eq!(field(&s, "end"), Some("disconnected"), "{s}");
    assert_eq!(num(&s, "outstanding"), Some(0), "{s}");
    eprintln!("dribble: {line}\n  {s}");
}
