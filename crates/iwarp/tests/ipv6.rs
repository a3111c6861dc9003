//! IPv6: listening, connecting from a chosen source address, the shared port and MPA, over
//! `::1`. Each test returns early (passing) on a host without an IPv6 loopback.

mod common;

use common::*;
use iwarp::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// `[::1]:0`, or `None` (with a note) if this host cannot bind it.
fn loopback6() -> Option<SocketAddr> {
    let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Some(addr),
        Err(e) => {
            eprintln!("skipped: no IPv6 loopback on this host ({e})");
            None
        }
    }
}

/// Connects a new queue pair to `listener` with `params`, accepting on the other side.
fn connect(dev: &Device, pd: &ProtectionDomain, listener: Listener, params: &ConnParams) -> (End, End) {
    let addr = listener.local_addr();
    let cap = PairConfig::default().cap;
    let server = End::new(dev, pd, cap, Progress::Thread);
    let client = End::new(dev, pd, cap, Progress::Thread);
    let sqp = server.qp.clone();
    let t = std::thread::spawn(move || {
        let req = listener.get_request(Some(WAIT)).expect("request");
        assert!(req.peer_addr().is_ipv6());
        req.accept(&sqp, &ConnParams::default()).expect("accept");
    });
    client.qp.connect(addr, params).expect("connect over IPv6");
    t.join().unwrap();
    server.qp.wait_established(WAIT).unwrap();
    (client, server)
}

#[test]
fn a_connection_over_ipv6_loopback_carries_every_operation() {
    let Some(any6) = loopback6() else { return };
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen(any6, 8).unwrap();
    assert_eq!(listener.local_addr().ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let (client, server) = connect(&dev, &pd, listener, &ConnParams::default());
    for qp in [&client.qp, &server.qp] {
        assert!(qp.local_addr().unwrap().is_ipv6() && qp.peer_addr().unwrap().is_ipv6());
    }
    let (a, b) = (pd.reg_mr(1 << 16, all_access()).unwrap(), pd.reg_mr(1 << 16, all_access()).unwrap());
    write_and_verify(&client, &server, &a, &b, 40_000, 1);
    send_and_verify(&server, &client, &b, &a, 5000, 2);
    read_and_verify(&client, &a, &b, 30_000, 3);
}

#[test]
fn a_client_connects_from_the_ipv6_source_address_it_asks_for() {
    let Some(any6) = loopback6() else { return };
    let dev = device();
    let pd = dev.alloc_pd();
    // A free port on ::1 to connect from.
    let port = std::net::TcpListener::bind(any6).unwrap().local_addr().unwrap().port();
    let source = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let params = ConnParams { source: Some(source), ..ConnParams::default() };
    let (client, server) = connect(&dev, &pd, dev.listen(any6, 8).unwrap(), &params);
    assert_eq!(client.qp.local_addr(), Some(source));
    assert_eq!(server.qp.peer_addr(), Some(source));
    let (a, b) = (pd.reg_mr(4096, all_access()).unwrap(), pd.reg_mr(4096, all_access()).unwrap());
    write_and_verify(&client, &server, &a, &b, 4096, 4);
}

#[test]
fn the_shared_port_serves_iwarp_and_plain_tcp_over_ipv6() {
    let Some(any6) = loopback6() else { return };
    let dev = device();
    let pd = dev.alloc_pd();
    let listener = dev.listen_shared(any6, 8, SharedOptions { plain_after: Duration::from_millis(200) }).unwrap();
    let addr = listener.local_addr();
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut served = listener.get_plain(Some(WAIT)).unwrap();
    assert!(served.peer_addr().is_ipv6());
    let mut got = [0u8; 18];
    served.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"GET / HTTP/1.0\r\n\r\n", "every byte the client sent");
    served.write_all(b"ok").unwrap();
    let mut reply = [0u8; 2];
    plain.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ok");
    let (client, server) = connect(&dev, &pd, listener, &ConnParams::default());
    let (a, b) = (pd.reg_mr(4096, all_access()).unwrap(), pd.reg_mr(4096, all_access()).unwrap());
    write_and_verify(&client, &server, &a, &b, 4096, 5);
}

#[test]
fn mpa_revision_1_and_markers_work_over_ipv6() {
    let Some(any6) = loopback6() else { return };
    let dev = device();
    let pd = dev.alloc_pd();
    let mpa = MpaOptions { revision: 1, markers: true, ..MpaOptions::default() };
    let listener = dev.listen(any6, 8).unwrap();
    listener.set_mpa_options(mpa.clone());
    let (client, server) = connect(&dev, &pd, listener, &ConnParams { mpa, ..ConnParams::default() });
    let info = client.qp.conn_info().unwrap();
    assert_eq!(info.revision, 1);
    let (a, b) = (pd.reg_mr(1 << 16, all_access()).unwrap(), pd.reg_mr(1 << 16, all_access()).unwrap());
    write_and_verify(&client, &server, &a, &b, 20_000, 6);
}
