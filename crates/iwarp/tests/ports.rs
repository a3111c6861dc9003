//! One port space: iWARP listeners and connections hold real host sockets, so they and plain
//! TCP never collide; and a shared listener serves both on one port.

mod common;

use common::*;
use iwarp::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn iwarp_listen_on_a_port_held_by_plain_tcp_fails_naming_the_address() {
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = plain.local_addr().unwrap();
    let dev = device();
    match dev.listen(addr, 8) {
        Err(ListenError::AddrInUse(a)) => {
            assert_eq!(a, addr);
            let msg = ListenError::AddrInUse(a).to_string();
            assert!(msg.contains(&addr.to_string()) && msg.contains("in use"), "{msg}");
        }
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    // The wildcard address collides with a specific one on the same port, both ways.
    let wild: SocketAddr = format!("0.0.0.0:{}", addr.port()).parse().unwrap();
    assert!(matches!(dev.listen(wild, 8), Err(ListenError::AddrInUse(_))));
}

#[test]
fn plain_tcp_cannot_take_a_port_an_iwarp_listener_holds() {
    let dev = device();
    let l = dev.listen(any_port(), 8).unwrap();
    let addr = l.local_addr();
    let e = TcpListener::bind(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let wild: SocketAddr = format!("0.0.0.0:{}", addr.port()).parse().unwrap();
    assert_eq!(TcpListener::bind(wild).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    // Nor can a second iWARP listener (no SO_REUSEPORT sharing).
    assert!(matches!(dev.listen(addr, 8), Err(ListenError::AddrInUse(a)) if a == addr));
}

#[test]
fn thousands_of_interleaved_binds_and_connects_never_collide() {
    let _ = iwarp::util::raise_fd_limit();
    let dev = device();
    let mut iwarp_listeners = Vec::new();
    let mut plain_listeners = Vec::new();
    let mut ports = HashSet::new();
    for i in 0..1500 {
        let port = if i % 2 == 0 {
            let l = dev.listen(any_port(), 4).unwrap();
            let p = l.local_addr().port();
            iwarp_listeners.push(l);
            p
        } else {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            plain_listeners.push(l);
            p
        };
        assert!(ports.insert(port), "port {port} handed out twice while held");
    }
    // Connections (active iWARP sides and plain clients) never get a held listener's port, and
    // each holds its own 4-tuple (Linux may give connections to different destinations the
    // same local port, which is not a collision).
    let target = dev.listen(any_port(), 256).unwrap();
    let plain_target = TcpListener::bind("127.0.0.1:0").unwrap();
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(64).unwrap();
    let mut held = Vec::new();
    let mut plain_held = Vec::new();
    let mut locals = HashSet::new();
    for i in 0..100 {
        let local = if i % 2 == 0 {
            let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
            qp.connect_start(target.local_addr(), &ConnParams::default()).unwrap();
            let req = target.get_request(Some(WAIT)).unwrap();
            let sqp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
            req.accept(&sqp, &ConnParams::default()).unwrap();
            qp.wait_established(WAIT).unwrap();
            let a = (qp.local_addr().unwrap(), qp.peer_addr().unwrap());
            held.push((qp, sqp));
            a
        } else {
            let s = TcpStream::connect(plain_target.local_addr().unwrap()).unwrap();
            let a = (s.local_addr().unwrap(), s.peer_addr().unwrap());
            plain_held.push(s);
            a
        };
        assert!(!ports.contains(&local.0.port()), "a connection got listener port {}", local.0.port());
        assert!(locals.insert(local), "connection {local:?} twice while held");
    }
}

#[test]
fn a_closed_listeners_port_is_reusable_at_once() {
    let dev = device();
    let pd = dev.alloc_pd();
    let addr;
    {
        let l = dev.listen(any_port(), 8).unwrap();
        addr = l.local_addr();
        // A connection through it, closed by the server first, leaves TIME_WAIT state behind.
        let cq = dev.create_cq(16).unwrap();
        let c = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
        c.connect_start(addr, &ConnParams::default()).unwrap();
        let s = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
        l.get_request(Some(WAIT)).unwrap().accept(&s, &ConnParams::default()).unwrap();
        c.wait_established(WAIT).unwrap();
        s.disconnect();
        wait_event(&c, WAIT, |e| matches!(e, QpEvent::Disconnected));
    }
    // Both an iWARP and a plain listener may bind it again right away.
    let again = dev.listen(addr, 8).expect("rebind after close");
    drop(again);
    TcpListener::bind(addr).expect("plain rebind after close");
}

/// `Listener::close` frees the port while another clone of the listener lives (the event
/// loop holds one while it queues a request; librdmacm's watcher thread one while it hands a
/// request out): perftest's server destroys its control listener and binds the same port
/// for its data connections a few milliseconds later. Requests still queued are dropped.
#[test]
fn a_listener_closed_while_a_clone_lives_frees_its_port_at_once() {
    let dev = device();
    let pd = dev.alloc_pd();
    let l = dev.listen(any_port(), 8).unwrap();
    let addr = l.local_addr();
    let cq = dev.create_cq(16).unwrap();
    let c = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
    c.connect_start(addr, &ConnParams::default()).unwrap();
    // Queued, not taken: the listener's descriptor is readable while requests wait.
    let mut pfd = libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
    assert_eq!(ready, 1, "a request is queued");
    let held = l.clone();
    l.close();
    let again = dev.listen(addr, 8).expect("the port is free once close returns");
    // The queued request was dropped: its initiator sees the connection fail.
    assert!(c.wait_established(WAIT).is_err(), "the queued request was dropped");
    assert!(held.try_get_request().is_none());
    held.close();
    drop(held);
    drop(again);
}

const GREETING: &[u8] = b"hello\n";

/// A plain client's behaviour on the shared port.
#[derive(Clone, Copy, Debug)]
enum Plain {
    /// Sends nothing; the server speaks first.
    Silent,
    /// Sends one byte, waits, then reads the echo.
    OneByte,
    /// Sends the MPA key with its last byte changed.
    NearMiss,
    /// Sends a megabyte.
    Megabyte,
    /// Trickles a prefix of the key one byte at a time, slowly.
    Trickle,
}

fn plain_client(addr: SocketAddr, kind: Plain, seed: u32) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut greet = [0u8; 6];
    let payload: Vec<u8> = match kind {
        Plain::Silent => Vec::new(),
        Plain::OneByte => vec![b'x'],
        Plain::NearMiss => b"MPA ID Req Framf and then some".to_vec(),
        Plain::Megabyte => pattern(1 << 20, seed),
        Plain::Trickle => b"MPA ID".to_vec(),
    };
    match kind {
        Plain::Trickle => {
            for b in &payload {
                s.write_all(std::slice::from_ref(b)).unwrap();
                std::thread::sleep(Duration::from_millis(60));
            }
        }
        Plain::OneByte => {
            s.write_all(&payload).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        _ => {
            let w = s.try_clone().unwrap();
            let p = payload.clone();
            std::thread::spawn(move || {
                let mut w = w;
                w.write_all(&p).unwrap();
            });
        }
    }
    s.read_exact(&mut greet).unwrap();
    assert_eq!(greet, GREETING, "{kind:?}");
    let mut echo = vec![0u8; payload.len()];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(echo, payload, "{kind:?}: bytes lost or reordered");
}

/// The server side of a plain connection: greet, then echo everything.
fn serve_plain(mut p: PlainStream) {
    p.get_ref().set_read_timeout(Some(WAIT)).unwrap();
    let mut w = p.get_ref().try_clone().unwrap();
    w.write_all(GREETING).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        match p.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn one_shared_port_serves_hundreds_of_iwarp_and_plain_clients() {
    let _ = iwarp::util::raise_fd_limit();
    let dev = device();
    let listener =
        dev.listen_shared(any_port(), 512, SharedOptions { plain_after: Duration::from_millis(200) }).unwrap();
    assert!(listener.is_shared());
    let addr = listener.local_addr();
    let pd = dev.alloc_pd();
    const IWARP: usize = 200;
    const PLAIN: usize = 200;
    // Server: accept whatever comes; iWARP clients write into their own region and then Send.
    let served = Arc::new(AtomicUsize::new(0));
    let server = {
        let pd = pd.clone();
        let dev = dev.clone();
        let served = Arc::clone(&served);
        std::thread::spawn(move || {
            let cq = dev.create_cq(4 * IWARP).unwrap();
            let mut conns = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut iwarp = 0;
            let mut plain = 0;
            while (iwarp < IWARP || plain < PLAIN) && Instant::now() < deadline {
                match listener.get_incoming(Some(Duration::from_secs(5))) {
                    Ok(Incoming::Iwarp(req)) => {
                        let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
                        let target = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
                        let note = pd.reg_mr(16, Access::LOCAL_WRITE).unwrap();
                        qp.post_recv(&[RecvWr::new(iwarp as u64, &[note.sge_all()])]).unwrap();
                        // Tell the client where to write: private data carries STag and address.
                        let mut pdata = target.rkey().to_be_bytes().to_vec();
                        pdata.extend_from_slice(&target.addr().to_be_bytes());
                        // The client's private data names the pattern it will write.
                        let seed = u32::from_be_bytes(req.private_data()[..4].try_into().unwrap());
                        req.accept(&qp, &ConnParams { private_data: pdata, ..Default::default() }).unwrap();
                        conns.push((qp, target, note, seed));
                        iwarp += 1;
                    }
                    Ok(Incoming::Plain(p)) => {
                        plain += 1;
                        std::thread::spawn(move || serve_plain(p));
                    }
                    Err(_) => {}
                }
            }
            assert_eq!((iwarp, plain), (IWARP, PLAIN), "every client reached the server");
            // Each iWARP client's Send says its Write is in place.
            let wcs = wait_wcs(&cq, IWARP, Duration::from_secs(60));
            assert_ok(&wcs);
            for (_, target, _, seed) in &conns {
                assert_mr_eq(target, 0, &pattern(4096, *seed), "shared-port RDMA Write");
                served.fetch_add(1, Ordering::Relaxed);
            }
            conns
        })
    };
    // Clients: iWARP and plain interleaved across a few threads.
    let kinds = [Plain::Silent, Plain::OneByte, Plain::NearMiss, Plain::Megabyte, Plain::Trickle];
    let mut clients = Vec::new();
    for t in 0..4usize {
        let dev = dev.clone();
        let pd = pd.clone();
        clients.push(std::thread::spawn(move || {
            let cq = dev.create_cq(256).unwrap();
            let mut qps = Vec::new();
            for i in (t..IWARP.max(PLAIN)).step_by(4) {
                if i < PLAIN {
                    let kind = kinds[i % kinds.len()];
                    // Plain clients that wait run in their own thread so they do not slow this one.
                    if matches!(kind, Plain::Trickle | Plain::Silent | Plain::Megabyte) {
                        qps.push((None, Some(std::thread::spawn(move || plain_client(addr, kind, i as u32)))));
                    } else {
                        plain_client(addr, kind, i as u32);
                    }
                }
                if i < IWARP {
                    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
                    let params = ConnParams { private_data: (i as u32).to_be_bytes().to_vec(), ..Default::default() };
                    qp.connect(addr, &params).unwrap();
                    let pdata = qp.conn_info().unwrap().negotiated.peer_private_data;
                    let stag = Stag(u32::from_be_bytes(pdata[..4].try_into().unwrap()));
                    let to = u64::from_be_bytes(pdata[4..12].try_into().unwrap());
                    let src = pd.reg_mr(4096, Access::LOCAL_WRITE).unwrap();
                    src.write(0, &pattern(4096, i as u32)).unwrap();
                    qp.post_send(&[
                        SendWr::write(1, &[src.sge_all()], RemoteAddr::unbounded(stag, to)),
                        SendWr::send_inline(2, b"done"),
                    ])
                    .unwrap();
                    assert_ok(&wait_wcs(&cq, 2, WAIT));
                    qps.push((Some((qp, src)), None));
                }
            }
            for (_, h) in qps {
                if let Some(h) = h {
                    h.join().unwrap();
                }
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    let conns = server.join().unwrap();
    assert_eq!(served.load(Ordering::Relaxed), IWARP);
    drop(conns);
}

#[test]
fn a_client_that_sends_exactly_the_key_then_stalls_times_out_like_any_silent_mpa_peer() {
    let dev = device();
    let l = dev.listen_shared(any_port(), 8, SharedOptions { plain_after: Duration::from_millis(100) }).unwrap();
    l.set_mpa_options(MpaOptions { timeout: Duration::from_millis(600), ..Default::default() });
    let mut s = TcpStream::connect(l.local_addr()).unwrap();
    s.write_all(b"MPA ID Req Frame").unwrap();
    // Not handed over as plain (it is MPA), not a request (incomplete), closed after the MPA
    // timeout.
    assert!(matches!(l.get_incoming(Some(Duration::from_millis(900))), Err(Error::TimedOut)));
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap_or(0), 0, "the listener closed it");
    // A plain listener in iWARP-only mode has no plain side.
    let only = dev.listen(any_port(), 8).unwrap();
    assert!(matches!(only.get_plain(Some(Duration::ZERO)), Err(Error::InvalidState(_))));
}

#[test]
fn a_trickling_partial_key_does_not_hold_up_other_accepts() {
    let dev = device();
    let l = dev.listen_shared(any_port(), 8, SharedOptions { plain_after: Duration::from_secs(5) }).unwrap();
    let addr = l.local_addr();
    // Three bytes of the key, then nothing for a while.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"MPA").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // A plain client and an iWARP client arriving after it are served at once.
    let mut fast = TcpStream::connect(addr).unwrap();
    fast.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut p = l.get_plain(Some(Duration::from_secs(2))).expect("plain client served while the other trickles");
    let mut got = [0u8; 18];
    p.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"GET / HTTP/1.0\r\n\r\n");
    let pd = dev.alloc_pd();
    let cq = dev.create_cq(8).unwrap();
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
    qp.connect_start(addr, &ConnParams::default()).unwrap();
    let req = l.get_request(Some(Duration::from_secs(2))).expect("iWARP client served while the other trickles");
    let sqp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
    req.accept(&sqp, &ConnParams::default()).unwrap();
    qp.wait_established(WAIT).unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    // The trickler finally diverges: plain, with its three bytes still readable in order.
    slow.write_all(b"!").unwrap();
    let mut p = l.get_plain(Some(WAIT)).unwrap();
    let mut got = [0u8; 4];
    p.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"MPA!");
}
