//! Write → read round trips, disorder and loss, pcapng, and the project's real captures.

use std::net::SocketAddr;
use std::path::PathBuf;

use iwarp_pcap::{
    read_bytes, read_file, write_frames, Conversation, ConversationOptions, Direction, Frame, LinkType, Run,
};
use proptest::prelude::*;

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/captures/siw").join(name)
}

fn dir_strategy() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::ClientToServer), Just(Direction::ServerToClient)]
}

fn script_strategy() -> impl Strategy<Value = Vec<(Direction, Vec<u8>)>> {
    prop::collection::vec((dir_strategy(), prop::collection::vec(any::<u8>(), 0..3000)), 0..12)
}

fn link_strategy() -> impl Strategy<Value = LinkType> {
    prop_oneof![
        Just(LinkType::Ethernet),
        Just(LinkType::LinuxSll),
        Just(LinkType::LinuxSll2),
        Just(LinkType::Raw),
        Just(LinkType::Null),
    ]
}

fn expected(script: &[(Direction, Vec<u8>)], dir: Direction) -> Vec<u8> {
    script.iter().filter(|(d, _)| *d == dir).flat_map(|(_, b)| b.iter().copied()).collect()
}

fn to_pcap(c: &Conversation) -> Vec<u8> {
    let mut out = Vec::new();
    c.write(&mut out).unwrap();
    out
}

/// Runs must tile the data, in order, with no empty run.
fn assert_runs_tile(runs: &[Run], len: usize) {
    let mut at = 0;
    for r in runs {
        assert_eq!(r.offset, at);
        assert!(r.len > 0);
        at += r.len;
    }
    assert_eq!(at, len as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn written_conversation_reads_back_identically(
        script in script_strategy(),
        max_segment in 1usize..2000,
        link in link_strategy(),
        v6 in any::<bool>(),
        isns in any::<(u32, u32)>(),
        cport in 1024u16..,
    ) {
        let (client, server): (SocketAddr, SocketAddr) = if v6 {
            (SocketAddr::new("::1".parse().unwrap(), cport), "[::1]:7174".parse().unwrap())
        } else {
            (SocketAddr::from(([127, 0, 0, 1], cport)), "127.0.0.1:7174".parse().unwrap())
        };
        let opts = ConversationOptions {
            client, server, link, max_segment, client_isn: isns.0, server_isn: isns.1, ..Default::default()
        };
        let conv = Conversation::build(&opts, &script).unwrap();
        let cap = read_bytes(&to_pcap(&conv)).unwrap();
        prop_assert_eq!(cap.link, link);
        prop_assert_eq!(cap.frames, conv.frames.len() as u64);
        prop_assert_eq!(cap.non_tcp_frames, 0);
        prop_assert_eq!(cap.connections.len(), 1);
        let c = &cap.connections[0];
        prop_assert_eq!((c.client, c.server), (client, server));
        prop_assert!(c.handshake_seen());
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let s = c.stream(dir);
            prop_assert_eq!(s.data(), &expected(&script, dir)[..]);
            assert_runs_tile(s.runs(), s.data().len());
            prop_assert_eq!(s.gap(), None);
            prop_assert_eq!(s.retransmitted_bytes(), 0);
        }
        let n = conv.frames.len() as u64;
        prop_assert_eq!(c.client_to_server.fin_frame(), Some(n - 2));
        prop_assert_eq!(c.server_to_client.fin_frame(), Some(n - 1));
        // Every byte of a script entry comes from one of that entry's frames.
        let mut at = [0u64; 2];
        for ((dir, bytes), entry) in script.iter().zip(&conv.entries) {
            let i = usize::from(*dir == Direction::ServerToClient);
            let s = c.stream(*dir);
            match entry {
                None => prop_assert!(bytes.is_empty()),
                Some((first, last)) => {
                    prop_assert_eq!((last - first + 1) as usize, bytes.len().div_ceil(max_segment));
                    for k in 0..bytes.len() as u64 {
                        let f = s.frame_at(at[i] + k).unwrap();
                        prop_assert!(*first <= f && f <= *last);
                    }
                }
            }
            at[i] += bytes.len() as u64;
        }
    }

    #[test]
    fn reordered_and_duplicated_segments_give_the_same_streams(
        script in script_strategy(),
        max_segment in 1usize..700,
        swaps in prop::collection::vec((any::<prop::sample::Index>(), 1usize..6), 0..30),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let conv = Conversation::build(&ConversationOptions { max_segment, ..Default::default() }, &script).unwrap();
        let mut frames: Vec<Frame> = conv.frames.clone();
        // The handshake stays first; the rest is shuffled within a window and partly resent.
        let body = frames.len() - 3;
        for (i, dist) in &swaps {
            let a = 3 + i.index(body);
            let b = (a + dist).min(frames.len() - 1);
            frames.swap(a, b);
        }
        for d in &dups {
            let a = 3 + d.index(body);
            let copy = frames[a].clone();
            frames.push(copy);
        }
        let mut out = Vec::new();
        write_frames(&mut out, LinkType::Ethernet, &frames).unwrap();
        let cap = read_bytes(&out).unwrap();
        prop_assert_eq!(cap.connections.len(), 1);
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let s = cap.connections[0].stream(dir);
            prop_assert_eq!(s.data(), &expected(&script, dir)[..]);
            assert_runs_tile(s.runs(), s.data().len());
        }
    }

    #[test]
    fn a_lost_segment_ends_its_stream_at_the_hole(
        script in script_strategy(),
        max_segment in 1usize..700,
        lose in any::<prop::sample::Index>(),
    ) {
        let conv = Conversation::build(&ConversationOptions { max_segment, ..Default::default() }, &script).unwrap();
        // Data frames only: after the handshake, before the closing three.
        let data_frames: Vec<usize> = (3..conv.frames.len() - 3).collect();
        prop_assume!(!data_frames.is_empty());
        let lost = data_frames[lose.index(data_frames.len())];
        let full = read_bytes(&to_pcap(&conv)).unwrap();
        let c = &full.connections[0];
        let dir = if c.client_to_server.runs().iter().any(|r| r.frame == lost as u64 + 1) {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        let hole = c.stream(dir).runs().iter().find(|r| r.frame == lost as u64 + 1).unwrap().offset;
        let mut frames = conv.frames.clone();
        frames.remove(lost);
        let mut out = Vec::new();
        write_frames(&mut out, LinkType::Ethernet, &frames).unwrap();
        let cap = read_bytes(&out).unwrap();
        let s = cap.connections[0].stream(dir);
        prop_assert_eq!(s.data(), &expected(&script, dir)[..hole as usize]);
        let gap = s.gap();
        let last_data = s.data().len() as u64 + c.stream(dir).runs().iter().find(|r| r.offset == hole).unwrap().len
            == expected(&script, dir).len() as u64;
        // A hole with nothing after it is indistinguishable from the end of the stream.
        if !last_data {
            prop_assert_eq!(gap.map(|g| g.offset), Some(hole));
        }
        let other = cap.connections[0].stream(dir.reverse());
        prop_assert_eq!(other.data(), &expected(&script, dir.reverse())[..]);
    }
}

#[test]
fn pcapng_with_cooked_v2_headers_reads_like_pcap() {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::DataLink;

    let script = [(Direction::ClientToServer, b"MPA ID Req Frame".to_vec()), (Direction::ServerToClient, vec![7; 99])];
    let opts = ConversationOptions { link: LinkType::LinuxSll2, max_segment: 10, ..Default::default() };
    let conv = Conversation::build(&opts, &script).unwrap();
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL2, 0)).unwrap();
    for f in &conv.frames {
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: f.timestamp,
            original_len: f.data.len() as u32,
            data: std::borrow::Cow::Borrowed(&f.data),
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
    }
    let cap = read_bytes(&w.into_inner()).unwrap();
    assert_eq!(cap.link, LinkType::LinuxSll2);
    assert_eq!(cap.connections.len(), 1);
    assert_eq!(cap.connections[0].client_to_server.data(), b"MPA ID Req Frame");
    assert_eq!(cap.connections[0].server_to_client.data(), &[7; 99][..]);
    assert_eq!(cap.connections[0].server_to_client.runs().len(), 10);
}

#[test]
fn not_a_capture_is_an_error() {
    assert!(matches!(read_bytes(b"GIF89a.."), Err(iwarp_pcap::Error::NotPcap)));
    assert!(matches!(read_bytes(b""), Err(iwarp_pcap::Error::NotPcap)));
    assert!(read_file("/nonexistent/x.pcap").is_err());
    // A pcap header announcing an unsupported link type (LINKTYPE_IEEE802_11 = 105).
    let mut h = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0];
    h.extend_from_slice(&105u32.to_le_bytes());
    assert!(matches!(read_bytes(&h), Err(iwarp_pcap::Error::UnsupportedLinkType(105))));
}

#[test]
fn siw_capture_on_ethernet() {
    let cap = read_file(capture("rping-v2-crc.pcap")).unwrap();
    assert_eq!(cap.link, LinkType::Ethernet);
    assert_eq!(cap.frames, 34);
    assert_eq!(cap.connections.len(), 1);
    let c = &cap.connections[0];
    assert_eq!(c.client, "10.0.2.15:49531".parse().unwrap());
    assert_eq!(c.server, "10.0.2.15:7174".parse().unwrap());
    // The client's FIN has sequence number 517 relative to its ISN, the server's 673.
    assert_eq!(c.client_to_server.data().len(), 516);
    assert_eq!(c.server_to_client.data().len(), 672);
    assert!(c.client_to_server.data().starts_with(b"MPA ID Req Frame"));
    assert!(c.server_to_client.data().starts_with(b"MPA ID Rep Frame"));
    assert_eq!(c.client_to_server.frame_at(0), Some(4));
    assert_eq!(c.client_to_server.frame_at(24), Some(8));
    assert_eq!(c.server_to_client.frame_at(24), Some(9));
    assert_eq!((c.client_to_server.fin_frame(), c.server_to_client.fin_frame()), (Some(32), Some(33)));
    assert_eq!(cap.timestamps.len(), 34);
    assert!(cap.timestamps.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn siw_capture_on_the_any_device_uses_cooked_v2_headers() {
    let cap = read_file(capture("rping-v2-crc-iface-any.pcap")).unwrap();
    assert_eq!(cap.link, LinkType::LinuxSll2);
    assert_eq!(cap.non_tcp_frames, 0);
    assert_eq!(cap.connections.len(), 1);
    let c = &cap.connections[0];
    assert_eq!((c.client.port(), c.server.port()), (42224, 7176));
    assert!(c.client_to_server.data().starts_with(b"MPA ID Req Frame"));
}

#[test]
fn every_siw_capture_reassembles_without_holes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/captures/siw");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pcap") {
            let cap = read_file(&p).unwrap();
            assert!(!cap.connections.is_empty(), "{p:?}");
            for c in &cap.connections {
                for s in [&c.client_to_server, &c.server_to_client] {
                    assert_eq!(s.gap(), None, "{p:?}");
                    assert_runs_tile(s.runs(), s.data().len());
                }
            }
            n += 1;
        }
    }
    assert_eq!(n, 16);
}

#[test]
fn frames_cut_by_a_snap_length_keep_the_stream_numbering() {
    let script = [
        (Direction::ClientToServer, vec![1u8; 300]),
        (Direction::ClientToServer, vec![2u8; 40]),
        (Direction::ServerToClient, vec![3u8; 500]),
    ];
    let conv = Conversation::build(&ConversationOptions::default(), &script).unwrap();
    // Keep 128 bytes of every frame: 74 bytes of payload after Ethernet, IPv4 and TCP headers.
    let frames: Vec<Frame> =
        conv.frames.iter().map(|f| Frame { data: f.data[..f.data.len().min(128)].to_vec(), ..f.clone() }).collect();
    let mut out = Vec::new();
    write_frames(&mut out, LinkType::Ethernet, &frames).unwrap();
    let cap = read_bytes(&out).unwrap();
    let c = &cap.connections[0];
    let mut want = vec![1u8; 74];
    want.resize(300, 0);
    want.extend_from_slice(&[2; 40]);
    assert_eq!(c.client_to_server.data(), &want[..]);
    assert_eq!(c.client_to_server.uncaptured().to_vec(), vec![74..300]);
    assert!(c.client_to_server.is_captured(300..340));
    assert_eq!(c.server_to_client.uncaptured().to_vec(), vec![74..500]);
    assert_eq!(c.server_to_client.data().len(), 500);
    assert_eq!(c.client_to_server.gap(), None);
}
