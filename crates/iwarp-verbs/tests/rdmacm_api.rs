//! The built library's librdmacm functions (the `RDMACM_*` nodes of the same object as the
//! verbs), loaded with dlopen and called as a C program would: the event sequences of a
//! connection over IPv4 and IPv6 loopback (address and route resolution, a request with
//! private data and IRD/ORD, ESTABLISHED, DISCONNECTED on both sides), a rejection with
//! private data, teardown with events not acknowledged, queue pair errors reaching the verbs'
//! asynchronous queue, a shared receive queue's limit event and a queue pair's last-WQE event
//! there, completion channels woken by the peer's work (solicited-only arming), and misuse
//! answered with errno.
#![allow(unsafe_code, non_upper_case_globals)]

mod common;

use common::{errno, lib};
use iwarp_verbs::abi::cma::*;
use iwarp_verbs::abi::*;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::SocketAddr;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

type P<T> = *mut T;

struct Cm {
    create_event_channel: unsafe extern "C" fn() -> P<rdma_event_channel>,
    destroy_event_channel: unsafe extern "C" fn(P<rdma_event_channel>),
    create_id: unsafe extern "C" fn(P<rdma_event_channel>, P<P<rdma_cm_id>>, *mut c_void, u32) -> c_int,
    destroy_id: unsafe extern "C" fn(P<rdma_cm_id>) -> c_int,
    bind_addr: unsafe extern "C" fn(P<rdma_cm_id>, *const libc::sockaddr) -> c_int,
    resolve_addr: unsafe extern "C" fn(P<rdma_cm_id>, *const libc::sockaddr, *const libc::sockaddr, c_int) -> c_int,
    resolve_route: unsafe extern "C" fn(P<rdma_cm_id>, c_int) -> c_int,
    listen: unsafe extern "C" fn(P<rdma_cm_id>, c_int) -> c_int,
    connect: unsafe extern "C" fn(P<rdma_cm_id>, P<rdma_conn_param>) -> c_int,
    accept: unsafe extern "C" fn(P<rdma_cm_id>, P<rdma_conn_param>) -> c_int,
    reject: unsafe extern "C" fn(P<rdma_cm_id>, *const c_void, u8) -> c_int,
    disconnect: unsafe extern "C" fn(P<rdma_cm_id>) -> c_int,
    get_cm_event: unsafe extern "C" fn(P<rdma_event_channel>, P<P<rdma_cm_event>>) -> c_int,
    ack_cm_event: unsafe extern "C" fn(P<rdma_cm_event>) -> c_int,
    event_str: unsafe extern "C" fn(u32) -> *const c_char,
    create_qp: unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_pd>, P<ibv_qp_init_attr>) -> c_int,
    destroy_qp: unsafe extern "C" fn(P<rdma_cm_id>),
    get_src_port: unsafe extern "C" fn(P<rdma_cm_id>) -> u16,
    get_dst_port: unsafe extern "C" fn(P<rdma_cm_id>) -> u16,
    set_option: unsafe extern "C" fn(P<rdma_cm_id>, c_int, c_int, *mut c_void, usize) -> c_int,
    migrate_id: unsafe extern "C" fn(P<rdma_cm_id>, P<rdma_event_channel>) -> c_int,
    init_qp_attr: unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_qp_attr>, *mut c_int) -> c_int,
    establish: unsafe extern "C" fn(P<rdma_cm_id>) -> c_int,
    get_request: unsafe extern "C" fn(P<rdma_cm_id>, P<P<rdma_cm_id>>) -> c_int,
    get_devices: unsafe extern "C" fn(*mut c_int) -> P<P<ibv_context>>,
    free_devices: unsafe extern "C" fn(P<P<ibv_context>>),
    getaddrinfo: unsafe extern "C" fn(*const c_char, *const c_char, *const rdma_addrinfo, P<P<rdma_addrinfo>>) -> c_int,
    freeaddrinfo: unsafe extern "C" fn(P<rdma_addrinfo>),
    alloc_pd: unsafe extern "C" fn(P<ibv_context>) -> P<ibv_pd>,
    dealloc_pd: unsafe extern "C" fn(P<ibv_pd>) -> c_int,
    reg_mr: unsafe extern "C" fn(P<ibv_pd>, *mut c_void, usize, c_int) -> P<ibv_mr>,
    dereg_mr: unsafe extern "C" fn(P<ibv_mr>) -> c_int,
    get_device_list: unsafe extern "C" fn(*mut c_int) -> P<P<ibv_device>>,
    open_device: unsafe extern "C" fn(P<ibv_device>) -> P<ibv_context>,
    close_device: unsafe extern "C" fn(P<ibv_context>) -> c_int,
    create_comp_channel: unsafe extern "C" fn(P<ibv_context>) -> P<ibv_comp_channel>,
    destroy_comp_channel: unsafe extern "C" fn(P<ibv_comp_channel>) -> c_int,
    create_cq: unsafe extern "C" fn(P<ibv_context>, c_int, *mut c_void, P<ibv_comp_channel>, c_int) -> P<ibv_cq>,
    destroy_cq: unsafe extern "C" fn(P<ibv_cq>) -> c_int,
    get_cq_event: unsafe extern "C" fn(P<ibv_comp_channel>, P<P<ibv_cq>>, P<*mut c_void>) -> c_int,
    ack_cq_events: unsafe extern "C" fn(P<ibv_cq>, u32),
    get_async_event: unsafe extern "C" fn(P<ibv_context>, P<ibv_async_event>) -> c_int,
    ack_async_event: unsafe extern "C" fn(P<ibv_async_event>),
}

fn cm() -> &'static Cm {
    static C: OnceLock<Cm> = OnceLock::new();
    C.get_or_init(|| {
        let l = lib();
        // SAFETY: each type is the C prototype of the symbol in rdma-core 44's rdma_cma.h
        // and verbs.h (sockaddr pointers as libc's; enums as u32).
        unsafe {
            Cm {
                create_event_channel: l.func("rdma_create_event_channel", "RDMACM_1.0"),
                destroy_event_channel: l.func("rdma_destroy_event_channel", "RDMACM_1.0"),
                create_id: l.func("rdma_create_id", "RDMACM_1.0"),
                destroy_id: l.func("rdma_destroy_id", "RDMACM_1.0"),
                bind_addr: l.func("rdma_bind_addr", "RDMACM_1.0"),
                resolve_addr: l.func("rdma_resolve_addr", "RDMACM_1.0"),
                resolve_route: l.func("rdma_resolve_route", "RDMACM_1.0"),
                listen: l.func("rdma_listen", "RDMACM_1.0"),
                connect: l.func("rdma_connect", "RDMACM_1.0"),
                accept: l.func("rdma_accept", "RDMACM_1.0"),
                reject: l.func("rdma_reject", "RDMACM_1.0"),
                disconnect: l.func("rdma_disconnect", "RDMACM_1.0"),
                get_cm_event: l.func("rdma_get_cm_event", "RDMACM_1.0"),
                ack_cm_event: l.func("rdma_ack_cm_event", "RDMACM_1.0"),
                event_str: l.func("rdma_event_str", "RDMACM_1.0"),
                create_qp: l.func("rdma_create_qp", "RDMACM_1.0"),
                destroy_qp: l.func("rdma_destroy_qp", "RDMACM_1.0"),
                get_src_port: l.func("rdma_get_src_port", "RDMACM_1.0"),
                get_dst_port: l.func("rdma_get_dst_port", "RDMACM_1.0"),
                set_option: l.func("rdma_set_option", "RDMACM_1.0"),
                migrate_id: l.func("rdma_migrate_id", "RDMACM_1.0"),
                init_qp_attr: l.func("rdma_init_qp_attr", "RDMACM_1.2"),
                establish: l.func("rdma_establish", "RDMACM_1.2"),
                get_request: l.func("rdma_get_request", "RDMACM_1.0"),
                get_devices: l.func("rdma_get_devices", "RDMACM_1.0"),
                free_devices: l.func("rdma_free_devices", "RDMACM_1.0"),
                getaddrinfo: l.func("rdma_getaddrinfo", "RDMACM_1.0"),
                freeaddrinfo: l.func("rdma_freeaddrinfo", "RDMACM_1.0"),
                alloc_pd: l.func("ibv_alloc_pd", "IBVERBS_1.1"),
                dealloc_pd: l.func("ibv_dealloc_pd", "IBVERBS_1.1"),
                reg_mr: l.func("ibv_reg_mr", "IBVERBS_1.1"),
                dereg_mr: l.func("ibv_dereg_mr", "IBVERBS_1.1"),
                get_device_list: l.func("ibv_get_device_list", "IBVERBS_1.1"),
                open_device: l.func("ibv_open_device", "IBVERBS_1.1"),
                close_device: l.func("ibv_close_device", "IBVERBS_1.1"),
                create_comp_channel: l.func("ibv_create_comp_channel", "IBVERBS_1.0"),
                destroy_comp_channel: l.func("ibv_destroy_comp_channel", "IBVERBS_1.0"),
                create_cq: l.func("ibv_create_cq", "IBVERBS_1.1"),
                destroy_cq: l.func("ibv_destroy_cq", "IBVERBS_1.1"),
                get_cq_event: l.func("ibv_get_cq_event", "IBVERBS_1.1"),
                ack_cq_events: l.func("ibv_ack_cq_events", "IBVERBS_1.1"),
                get_async_event: l.func("ibv_get_async_event", "IBVERBS_1.1"),
                ack_async_event: l.func("ibv_ack_async_event", "IBVERBS_1.1"),
            }
        }
    })
}

const TCP: u32 = rdma_port_space_RDMA_PS_TCP;

fn name(kind: u32) -> String {
    // SAFETY: rdma_event_str returns a static C string.
    unsafe { CStr::from_ptr((cm().event_str)(kind)) }.to_string_lossy().into_owned()
}

/// A socket address as C code passes it.
struct Sa(libc::sockaddr_storage);

impl Sa {
    fn new(a: SocketAddr) -> Sa {
        // SAFETY: all-zero is a valid sockaddr_storage; the writes below stay inside it.
        let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let p: *mut libc::sockaddr_storage = &mut s;
        // SAFETY: sockaddr_in and sockaddr_in6 fit in (and align with) sockaddr_storage.
        unsafe {
            match a {
                SocketAddr::V4(v) => {
                    let sin = p.cast::<libc::sockaddr_in>();
                    (*sin).sin_family = libc::AF_INET as u16;
                    (*sin).sin_port = v.port().to_be();
                    (*sin).sin_addr.s_addr = u32::from(*v.ip()).to_be();
                }
                SocketAddr::V6(v) => {
                    let sin6 = p.cast::<libc::sockaddr_in6>();
                    (*sin6).sin6_family = libc::AF_INET6 as u16;
                    (*sin6).sin6_port = v.port().to_be();
                    (*sin6).sin6_addr.s6_addr = v.ip().octets();
                }
            }
        }
        Sa(s)
    }
    fn ptr(&self) -> *const libc::sockaddr {
        (&raw const self.0).cast()
    }
}

/// The destination address in an identifier's route.
fn dst_of(id: P<rdma_cm_id>) -> (i32, u16) {
    // SAFETY: a live identifier; the union's sockaddr member is valid for any family.
    unsafe {
        let a = &(*id).route.addr.__bindgen_anon_2;
        (i32::from(a.dst_addr.sa_family), u16::from_be(a.dst_sin.sin_port))
    }
}

/// The next event of a channel, waited for up to 10 s (the descriptor is polled first so a
/// missing event fails the test instead of hanging it).
fn next_event(ch: P<rdma_event_channel>) -> P<rdma_cm_event> {
    // SAFETY: a live channel; poll on its descriptor.
    unsafe {
        let mut pfd = libc::pollfd { fd: (*ch).fd, events: libc::POLLIN, revents: 0 };
        assert_eq!(libc::poll(&mut pfd, 1, 10_000), 1, "no event within 10 s");
        let mut ev = null_mut();
        assert_eq!((cm().get_cm_event)(ch, &mut ev), 0, "rdma_get_cm_event: errno {}", errno());
        ev
    }
}

/// Takes the next event, checks its type, returns (event, status, private data, rr, id).
fn expect(ch: P<rdma_event_channel>, kind: u32) -> (P<rdma_cm_event>, i32, Vec<u8>, u8, u8) {
    let ev = next_event(ch);
    // SAFETY: an event the library handed out; `conn` is the RC member of the union.
    unsafe {
        assert_eq!(name((*ev).event), name(kind), "status {}", (*ev).status);
        let c = *(*ev).param.conn.as_ref();
        let pd = if c.private_data.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(c.private_data.cast::<u8>(), c.private_data_len.into()).to_vec()
        };
        (ev, (*ev).status, pd, c.responder_resources, c.initiator_depth)
    }
}

fn ack(ev: P<rdma_cm_event>) {
    // SAFETY: an event handed out and not yet acknowledged.
    assert_eq!(unsafe { (cm().ack_cm_event)(ev) }, 0);
}

fn new_id(ch: P<rdma_event_channel>) -> P<rdma_cm_id> {
    let mut id = null_mut();
    // SAFETY: valid arguments.
    assert_eq!(unsafe { (cm().create_id)(ch, &mut id, 0x1234 as *mut c_void, TCP) }, 0, "errno {}", errno());
    id
}

fn qp_attr() -> ibv_qp_init_attr {
    ibv_qp_init_attr {
        cap: ibv_qp_cap { max_send_wr: 8, max_recv_wr: 8, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 },
        qp_type: ibv_qp_type_IBV_QPT_RC,
        ..Default::default()
    }
}

/// A listener on `ip` (port chosen by the host) and its port.
fn listener(ch: P<rdma_event_channel>, ip: &str) -> (P<rdma_cm_id>, u16) {
    let l = new_id(ch);
    let any = Sa::new(SocketAddr::new(ip.parse().unwrap(), 0));
    // SAFETY: valid arguments.
    unsafe {
        assert_eq!((cm().bind_addr)(l, any.ptr()), 0, "bind: errno {}", errno());
        let port = u16::from_be((cm().get_src_port)(l));
        assert_ne!(port, 0, "port 0 took a port");
        assert_eq!((cm().listen)(l, 4), 0, "listen: errno {}", errno());
        assert_eq!(u16::from_be((cm().get_src_port)(l)), port, "the same port listens");
        (l, port)
    }
}

/// An active identifier with its address and route resolved toward `ip:port`.
fn resolved(ch: P<rdma_event_channel>, ip: &str, port: u16) -> P<rdma_cm_id> {
    let c = new_id(ch);
    let dst = Sa::new(SocketAddr::new(ip.parse().unwrap(), port));
    // SAFETY: valid arguments.
    unsafe {
        assert_eq!((cm().resolve_addr)(c, null(), dst.ptr(), 2000), 0, "errno {}", errno());
        let (ev, status, ..) = expect(ch, rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED);
        assert_eq!(status, 0);
        assert_eq!((*ev).id, c);
        ack(ev);
        assert!(!(*c).verbs.is_null(), "id->verbs is set once the address is resolved");
        assert_eq!((cm().resolve_route)(c, 2000), 0);
        let (ev, ..) = expect(ch, rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_RESOLVED);
        ack(ev);
        let family = if ip.contains(':') { libc::AF_INET6 } else { libc::AF_INET };
        assert_eq!(dst_of(c), (family, port));
    }
    c
}

fn conn_param(private_data: &[u8], rr: u8, depth: u8) -> rdma_conn_param {
    rdma_conn_param {
        private_data: private_data.as_ptr().cast(),
        private_data_len: private_data.len() as u8,
        responder_resources: rr,
        initiator_depth: depth,
        retry_count: 7,
        ..Default::default()
    }
}

/// The whole life of a connection over `ip`: request with private data and IRD/ORD,
/// acceptance with private data, ESTABLISHED on both sides, DISCONNECTED on both sides.
fn connect_and_disconnect(ip: &str) {
    let c = cm();
    // SAFETY: C calls with valid arguments, as a C program makes them.
    unsafe {
        let sch = (c.create_event_channel)();
        let cch = (c.create_event_channel)();
        assert!(!sch.is_null() && !cch.is_null());
        let (l, port) = listener(sch, ip);
        let cid = resolved(cch, ip, port);
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(cid, null_mut(), &mut attr), 0, "rdma_create_qp: errno {}", errno());
        assert!(!(*cid).qp.is_null() && !(*cid).send_cq.is_null() && !(*cid).recv_cq.is_null());
        assert_eq!((*(*cid).pd).context, (*cid).verbs, "id->verbs == pd->context");
        let mut p = conn_param(b"hello from the client", 3, 2);
        assert_eq!((c.connect)(cid, &mut p), 0, "rdma_connect: errno {}", errno());

        let (ev, status, pd, rr, depth) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST);
        assert_eq!(status, 0);
        assert_eq!(pd, b"hello from the client");
        // The initiator's IRD (3) bounds this side's ORD, its ORD (2) this side's IRD.
        assert_eq!((rr, depth), (2, 3));
        assert_eq!((*ev).listen_id, l);
        let child = (*ev).id;
        assert_ne!(child, l);
        assert_eq!((*child).context, 0x1234 as *mut c_void, "the listener's context");
        assert_eq!((*child).verbs, (*cid).verbs, "one context for every identifier");
        ack(ev);
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(child, null_mut(), &mut attr), 0);
        let mut p = conn_param(b"welcome", 2, 3);
        assert_eq!((c.accept)(child, &mut p), 0, "rdma_accept: errno {}", errno());

        let (ev, _, pd, rr, depth) = expect(cch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
        assert_eq!(pd, b"welcome", "the responder's private data");
        assert_eq!((rr, depth), (3, 2), "the negotiated IRD and ORD of this side");
        ack(ev);
        let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
        assert_eq!((*ev).id, child);
        ack(ev);
        let cport = u16::from_be((c.get_src_port)(cid));
        assert_ne!(cport, 0);
        assert_eq!(u16::from_be((c.get_dst_port)(child)), cport, "each side knows the other's port");
        assert_eq!(u16::from_be((c.get_dst_port)(cid)), port);

        assert_eq!((c.disconnect)(cid), 0);
        let (ev, ..) = expect(cch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        assert_eq!((c.disconnect)(child), 0, "disconnecting a closed connection is harmless");
        // iWARP has no TIMEWAIT_EXIT (that is InfiniBand's CM): nothing more arrives.
        libc::fcntl((*sch).fd, libc::F_SETFL, libc::O_NONBLOCK);
        let mut ev = null_mut();
        assert_eq!((c.get_cm_event)(sch, &mut ev), -1);
        assert_eq!(errno(), libc::EAGAIN, "a non-blocking channel without events");

        (c.destroy_qp)(cid);
        (c.destroy_qp)(child);
        assert!((*cid).qp.is_null() && (*cid).send_cq.is_null());
        for id in [cid, child, l] {
            assert_eq!((c.destroy_id)(id), 0);
        }
        (c.destroy_event_channel)(sch);
        (c.destroy_event_channel)(cch);
    }
}

#[test]
fn a_connection_over_ipv4_loopback_goes_through_every_event() {
    connect_and_disconnect("127.0.0.1");
}

#[test]
fn a_connection_over_ipv6_loopback_goes_through_every_event() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI needs IPv6 loopback");
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    connect_and_disconnect("::1");
}

#[test]
fn a_rejection_reaches_the_initiator_with_its_private_data() {
    let c = cm();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let ch = (c.create_event_channel)();
        let (l, port) = listener(ch, "127.0.0.1");
        let cid = resolved(ch, "127.0.0.1", port);
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(cid, null_mut(), &mut attr), 0);
        let mut p = conn_param(b"let me in", 1, 1);
        assert_eq!((c.connect)(cid, &mut p), 0);
        let (ev, ..) = expect(ch, rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST);
        let child = (*ev).id;
        ack(ev);
        let why = b"not today";
        assert_eq!((c.reject)(child, why.as_ptr().cast(), why.len() as u8), 0);
        let (ev, status, pd, ..) = expect(ch, rdma_cm_event_type_RDMA_CM_EVENT_REJECTED);
        assert_eq!((*ev).id, cid);
        assert_eq!(status, -libc::ECONNREFUSED, "as Linux's iWARP connection manager reports it");
        assert_eq!(pd, why);
        ack(ev);
        assert_eq!((c.reject)(child, null(), 0), -1, "answered already");
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.accept)(child, null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL);
        (c.destroy_qp)(cid);
        for id in [child, cid, l] {
            assert_eq!((c.destroy_id)(id), 0);
        }
        (c.destroy_event_channel)(ch);
    }
}

#[test]
fn nothing_listening_is_rejected_connection_refused() {
    let c = cm();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let ch = (c.create_event_channel)();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cid = resolved(ch, "127.0.0.1", port);
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(cid, null_mut(), &mut attr), 0);
        assert_eq!((c.connect)(cid, null_mut()), 0);
        let (ev, status, ..) = expect(ch, rdma_cm_event_type_RDMA_CM_EVENT_REJECTED);
        assert_eq!(status, -libc::ECONNREFUSED);
        ack(ev);
        (c.destroy_qp)(cid);
        assert_eq!((c.destroy_id)(cid), 0);
        (c.destroy_event_channel)(ch);
    }
}

#[test]
fn identifiers_and_channels_can_go_with_events_unacknowledged() {
    let c = cm();
    // SAFETY: C calls with valid arguments.
    unsafe {
        let ch = (c.create_event_channel)();
        let other = (c.create_event_channel)();
        let (l, port) = listener(ch, "127.0.0.1");
        let cid = new_id(ch);
        let dst = Sa::new(SocketAddr::new("127.0.0.1".parse().unwrap(), port));
        assert_eq!((c.resolve_addr)(cid, null(), dst.ptr(), 2000), 0);
        // An event handed out, its identifier destroyed before the acknowledgement: the
        // destruction returns at once and the event (and event->id) stays readable.
        let ev = next_event(ch);
        assert_eq!((*ev).id, cid);
        assert_eq!((c.destroy_id)(cid), 0);
        assert_eq!((*(*ev).id).context, 0x1234 as *mut c_void);
        ack(ev);
        assert_eq!((c.ack_cm_event)(ev), -1, "acknowledged twice");
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.destroy_id)(cid), -1, "destroyed twice");
        assert_eq!(errno(), libc::EINVAL);

        // Queued events of a destroyed identifier are dropped with it.
        let cid = new_id(ch);
        assert_eq!((c.resolve_addr)(cid, null(), dst.ptr(), 2000), 0);
        assert_eq!((c.destroy_id)(cid), 0);
        libc::fcntl((*ch).fd, libc::F_SETFL, libc::O_NONBLOCK);
        let mut e = null_mut();
        assert_eq!((c.get_cm_event)(ch, &mut e), -1);
        assert_eq!(errno(), libc::EAGAIN);

        // A channel in use cannot go; migrated events follow their identifier.
        let cid = new_id(ch);
        assert_eq!((c.resolve_addr)(cid, null(), dst.ptr(), 2000), 0);
        assert_eq!((c.migrate_id)(cid, other), 0);
        assert_eq!((*cid).channel, other);
        let (ev, ..) = expect(other, rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED);
        ack(ev);
        assert_eq!((c.get_cm_event)(ch, &mut e), -1);
        (c.destroy_event_channel)(other);
        assert_eq!(errno(), libc::EBUSY, "an identifier still reports to it");
        assert_eq!((c.destroy_id)(cid), 0);
        (c.destroy_event_channel)(other);
        assert_eq!((c.destroy_id)(l), 0);
        (c.destroy_event_channel)(ch);
    }
}

#[test]
fn misuse_is_answered_with_errno() {
    let c = cm();
    // SAFETY: C calls; the invalid pointers are never dereferenced by the library (looked up
    // first), and the rest are valid.
    unsafe {
        let ch = (c.create_event_channel)();
        let mut id = null_mut();
        assert_eq!((c.create_id)(ch, &mut id, null_mut(), rdma_port_space_RDMA_PS_UDP), -1);
        assert_eq!(errno(), libc::EOPNOTSUPP, "iWARP has no UD port space");
        assert_eq!((c.create_id)(ch, null_mut(), null_mut(), TCP), -1);
        assert_eq!(errno(), libc::EINVAL);
        let mut fake = rdma_cm_id::default();
        for r in [
            (c.resolve_route)(&mut fake, 100),
            (c.listen)(null_mut(), 1),
            (c.disconnect)(&mut fake),
            (c.destroy_id)(&mut fake),
            (c.connect)(null_mut(), null_mut()),
        ] {
            assert_eq!(r, -1);
            assert_eq!(errno(), libc::EINVAL);
        }
        let mut fake_ev = rdma_cm_event::default();
        assert_eq!((c.ack_cm_event)(&mut fake_ev), -1);
        assert_eq!(errno(), libc::EINVAL);
        let mut fake_ch = rdma_event_channel { fd: 0 };
        let mut e = null_mut();
        assert_eq!((c.get_cm_event)(&mut fake_ch, &mut e), -1);
        assert_eq!(errno(), libc::EBADF, "a channel not made here: its descriptor is none");
        assert_eq!((c.get_cm_event)(null_mut(), &mut e), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.get_cm_event)(ch, null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL);

        let id = new_id(ch);
        // Out of order: a route before an address, a connection before a route, accepting
        // what is not a request, a queue pair missing.
        assert_eq!((c.resolve_route)(id, 100), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.connect)(id, null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.accept)(id, null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.establish)(id), -1);
        assert_eq!(errno(), libc::EINVAL);
        let mut req = null_mut();
        assert_eq!((c.get_request)(id, &mut req), -1, "an identifier with a channel");
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.bind_addr)(id, null()), -1);
        assert_eq!(errno(), libc::EINVAL);
        // A domain of another context.
        let list = (c.get_device_list)(null_mut());
        let other = (c.open_device)(*list);
        let pd = (c.alloc_pd)(other);
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(id, pd, &mut attr), -1);
        assert_eq!(errno(), libc::EINVAL, "id->verbs != pd->context");
        assert_eq!((c.dealloc_pd)(pd), 0);
        assert_eq!((c.close_device)(other), 0);
        assert_eq!((c.close_device)((*id).verbs), libc::EBUSY, "librdmacm's context stays open");
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(id, null_mut(), &mut attr), 0);
        assert_eq!((c.create_qp)(id, null_mut(), &mut attr), -1, "one queue pair per identifier");
        assert_eq!(errno(), libc::EINVAL);

        // Options: harmless ones accepted, InfiniBand paths refused, unknown ones ENOSYS.
        let mut tos = 16u8;
        assert_eq!((c.set_option)(id, 0, 0, (&raw mut tos).cast(), 1), 0, "type of service");
        let mut one = 1i32;
        assert_eq!((c.set_option)(id, 0, 1, (&raw mut one).cast(), 4), 0, "address reuse");
        assert_eq!((c.set_option)(id, 0, 1, (&raw mut one).cast(), 1), -1, "wrong length");
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!((c.set_option)(id, 1, 1, (&raw mut one).cast(), 4), -1, "an InfiniBand path");
        assert_eq!(errno(), libc::EOPNOTSUPP);
        assert_eq!((c.set_option)(id, 0, 99, (&raw mut one).cast(), 4), -1);
        assert_eq!(errno(), libc::ENOSYS);

        // rdma_init_qp_attr: the iWARP answer per state.
        let mut qa = ibv_qp_attr { qp_state: ibv_qp_state_IBV_QPS_RTR, ..Default::default() };
        let mut mask = 0;
        assert_eq!((c.init_qp_attr)(id, &mut qa, &mut mask), 0);
        assert_eq!(mask as u32, ibv_qp_attr_mask_IBV_QP_STATE | ibv_qp_attr_mask_IBV_QP_ACCESS_FLAGS);
        qa.qp_state = ibv_qp_state_IBV_QPS_RTS;
        assert_eq!((c.init_qp_attr)(id, &mut qa, &mut mask), 0);
        assert_eq!(mask as u32, ibv_qp_attr_mask_IBV_QP_STATE);
        qa.qp_state = ibv_qp_state_IBV_QPS_SQD;
        assert_eq!((c.init_qp_attr)(id, &mut qa, &mut mask), -1);
        assert_eq!(errno(), libc::EINVAL);

        assert_eq!(name(rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED), "RDMA_CM_EVENT_ESTABLISHED");
        assert_eq!(name(rdma_cm_event_type_RDMA_CM_EVENT_TIMEWAIT_EXIT), "RDMA_CM_EVENT_TIMEWAIT_EXIT");
        assert_eq!(name(99), "UNKNOWN EVENT");

        let mut n = 0;
        let devs = (c.get_devices)(&mut n);
        assert_eq!(n, 1);
        assert_eq!(*devs, (*id).verbs);
        assert!((*devs.add(1)).is_null());
        (c.free_devices)(devs);

        (c.destroy_qp)(id);
        assert_eq!((c.destroy_id)(id), 0);
        (c.destroy_event_channel)(ch);
        // rping 44's cm thread reads the channel its main thread has just destroyed: Linux's
        // read of the closed descriptor says EBADF, and so does this library.
        let mut e = null_mut();
        assert_eq!((c.get_cm_event)(ch, &mut e), -1);
        assert_eq!(errno(), libc::EBADF, "an event from a destroyed channel");
        (c.destroy_event_channel)(ch);
        assert_eq!(errno(), libc::EINVAL, "destroyed twice");
    }
}

#[test]
fn rdma_get_cm_event_waits_on_a_blocking_channel() {
    let c = cm();
    // SAFETY: C calls with valid arguments; the channel outlives the thread (joined).
    unsafe {
        let ch = (c.create_event_channel)();
        let id = new_id(ch);
        let chp = ch as usize;
        let waiter = std::thread::spawn(move || {
            let mut ev = null_mut();
            let r = (cm().get_cm_event)(chp as P<rdma_event_channel>, &mut ev);
            (r, ev as usize)
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "waits while no event is queued");
        let dst = Sa::new("127.0.0.1:9".parse().unwrap());
        assert_eq!((c.resolve_addr)(id, null(), dst.ptr(), 100), 0);
        let (r, ev) = waiter.join().unwrap();
        assert_eq!(r, 0);
        let ev = ev as P<rdma_cm_event>;
        assert_eq!((*ev).event, rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED);
        ack(ev);
        assert_eq!((c.destroy_id)(id), 0);
        (c.destroy_event_channel)(ch);
    }
}

#[test]
fn synchronous_endpoints_from_getaddrinfo_connect_without_channels() {
    let c = cm();
    // SAFETY: C calls with valid arguments, as rdma_server and rdma_client make them.
    unsafe {
        let create_ep: unsafe extern "C" fn(
            P<P<rdma_cm_id>>,
            P<rdma_addrinfo>,
            P<ibv_pd>,
            P<ibv_qp_init_attr>,
        ) -> c_int = lib().func("rdma_create_ep", "RDMACM_1.0");
        let destroy_ep: unsafe extern "C" fn(P<rdma_cm_id>) = lib().func("rdma_destroy_ep", "RDMACM_1.0");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let port = std::ffi::CString::new(port).unwrap();
        let host = c"127.0.0.1";
        let hints = rdma_addrinfo { ai_flags: RAI_PASSIVE as c_int, ai_port_space: TCP as c_int, ..Default::default() };
        let mut res = null_mut();
        assert_eq!((c.getaddrinfo)(host.as_ptr(), port.as_ptr(), &hints, &mut res), 0);
        assert!(!(*res).ai_src_addr.is_null() && (*res).ai_dst_addr.is_null(), "passive: the source");
        let mut listen = null_mut();
        let mut attr = qp_attr();
        attr.sq_sig_all = 1;
        assert_eq!(create_ep(&mut listen, res, null_mut(), &mut attr), 0, "errno {}", errno());
        (c.freeaddrinfo)(res);
        assert!((*listen).channel.is_null() || !(*listen).channel.is_null());
        assert_eq!((c.listen)(listen, 0), 0);

        let listen_addr = listen as usize;
        let srv = std::thread::spawn(move || {
            let listen = listen_addr as P<rdma_cm_id>;
            let mut id = null_mut();
            let r = (cm().get_request)(listen, &mut id);
            assert_eq!(r, 0, "rdma_get_request: errno {}", errno());
            assert!(!(*id).qp.is_null(), "the endpoint's attributes made a queue pair");
            let mut p = conn_param(b"sync hello", 1, 1);
            assert_eq!((cm().accept)(id, &mut p), 0, "errno {}", errno());
            id as usize
        });
        let hints = rdma_addrinfo { ai_port_space: TCP as c_int, ..Default::default() };
        let mut res = null_mut();
        assert_eq!((c.getaddrinfo)(host.as_ptr(), port.as_ptr(), &hints, &mut res), 0);
        assert!(!(*res).ai_dst_addr.is_null(), "active: the destination");
        let mut id = null_mut();
        let mut attr = qp_attr();
        assert_eq!(create_ep(&mut id, res, null_mut(), &mut attr), 0, "errno {}", errno());
        (c.freeaddrinfo)(res);
        assert!(!(*id).qp.is_null());
        assert_eq!((c.connect)(id, null_mut()), 0, "a synchronous connect returns established");
        let ev = (*id).event;
        assert!(!ev.is_null());
        assert_eq!((*ev).event, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
        let sid = srv.join().unwrap() as P<rdma_cm_id>;
        assert_eq!((c.disconnect)(id), 0);
        destroy_ep(id);
        destroy_ep(sid);
        destroy_ep(listen);
        (c.freeaddrinfo)(null_mut());
        assert_eq!(errno(), libc::EINVAL);
    }
}

/// A connected pair of identifiers with queue pairs (on one channel each), for the tests of
/// completions and asynchronous events over a connection.
struct Pair {
    sch: P<rdma_event_channel>,
    cch: P<rdma_event_channel>,
    l: P<rdma_cm_id>,
    cid: P<rdma_cm_id>,
    child: P<rdma_cm_id>,
}

impl Pair {
    /// Connects, with the client's queue pair made on `client_cq` (and a channel) if given.
    fn connect(client_cq: Option<P<ibv_cq>>, server_cq: Option<P<ibv_cq>>) -> Pair {
        let c = cm();
        // SAFETY: C calls with valid arguments.
        unsafe {
            let sch = (c.create_event_channel)();
            let cch = (c.create_event_channel)();
            let (l, port) = listener(sch, "127.0.0.1");
            let cid = resolved(cch, "127.0.0.1", port);
            let mut attr = qp_attr();
            if let Some(cq) = client_cq {
                attr.send_cq = cq;
                attr.recv_cq = cq;
            }
            assert_eq!((c.create_qp)(cid, null_mut(), &mut attr), 0);
            let mut p = conn_param(&[], 1, 1);
            assert_eq!((c.connect)(cid, &mut p), 0);
            let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST);
            let child = (*ev).id;
            ack(ev);
            let mut attr = qp_attr();
            if let Some(cq) = server_cq {
                attr.send_cq = cq;
                attr.recv_cq = cq;
            }
            assert_eq!((c.create_qp)(child, null_mut(), &mut attr), 0);
            assert_eq!((c.accept)(child, null_mut()), 0);
            let (ev, ..) = expect(cch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
            ack(ev);
            let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
            ack(ev);
            Pair { sch, cch, l, cid, child }
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let c = cm();
        // SAFETY: the objects this pair made, destroyed once.
        unsafe {
            (c.disconnect)(self.cid);
            (c.destroy_qp)(self.cid);
            (c.destroy_qp)(self.child);
            for id in [self.cid, self.child, self.l] {
                (c.destroy_id)(id);
            }
            (c.destroy_event_channel)(self.sch);
            (c.destroy_event_channel)(self.cch);
        }
    }
}

/// Posts one Send of `buf` (with `flags`) on `qp`.
///
/// # Safety
/// `qp` live, `mr` registers `buf`.
unsafe fn send(qp: P<ibv_qp>, mr: P<ibv_mr>, flags: u32) {
    // SAFETY: by this function's contract.
    unsafe {
        let mut sge = ibv_sge { addr: (*mr).addr as u64, length: 8, lkey: (*mr).lkey };
        let mut wr = ibv_send_wr {
            sg_list: &mut sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_SEND,
            send_flags: flags,
            ..Default::default()
        };
        let mut bad = null_mut();
        assert_eq!((*(*qp).context).ops.post_send.unwrap()(qp, &mut wr, &mut bad), 0);
    }
}

/// Posts `n` receives of 8 bytes of `mr` on `qp`.
///
/// # Safety
/// `qp` live, `mr` registers at least 8 writable bytes.
unsafe fn recvs(qp: P<ibv_qp>, mr: P<ibv_mr>, n: usize) {
    for i in 0..n {
        // SAFETY: by this function's contract.
        unsafe {
            let mut sge = ibv_sge { addr: (*mr).addr as u64, length: 8, lkey: (*mr).lkey };
            let mut wr = ibv_recv_wr { wr_id: i as u64, sg_list: &mut sge, num_sge: 1, ..Default::default() };
            let mut bad = null_mut();
            assert_eq!((*(*qp).context).ops.post_recv.unwrap()(qp, &mut wr, &mut bad), 0);
        }
    }
}

/// Waits up to `limit` for the channel's descriptor to become readable.
fn readable(fd: c_int, limit: Duration) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one descriptor.
    unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as c_int) == 1 }
}

#[test]
fn a_solicited_only_arming_wakes_for_solicited_work_and_a_blocked_waiter_wakes() {
    let c = cm();
    // SAFETY: C calls with valid arguments; buffers outlive their registrations.
    unsafe {
        let ctx = cm_context();
        let ch = (c.create_comp_channel)(ctx);
        let cq = (c.create_cq)(ctx, 16, null_mut(), ch, 0);
        assert!(!cq.is_null());
        let pair = Pair::connect(None, Some(cq));
        let pd = (*pair.child).pd;
        let mut rbuf = [0u8; 8];
        let rmr = (c.reg_mr)(pd, rbuf.as_mut_ptr().cast(), 8, ibv_access_flags_IBV_ACCESS_LOCAL_WRITE as c_int);
        let mut sbuf = *b"solicit!";
        let smr = (c.reg_mr)((*pair.cid).pd, sbuf.as_mut_ptr().cast(), 8, 0);
        recvs((*pair.child).qp, rmr, 2);
        let notify = (*ctx).ops.req_notify_cq.unwrap();
        assert_eq!(notify(cq, 1), 0, "armed for solicited completions only");
        send((*pair.cid).qp, smr, 0);
        assert!(!readable((*ch).fd, Duration::from_millis(300)), "an unsolicited receive does not wake");
        // A thread blocked in ibv_get_cq_event wakes for the solicited one.
        let chp = ch as usize;
        let waiter = std::thread::spawn(move || {
            let (mut got, mut context) = (null_mut(), null_mut());
            let r = (cm().get_cq_event)(chp as P<ibv_comp_channel>, &mut got, &mut context);
            (r, got as usize)
        });
        std::thread::sleep(Duration::from_millis(50));
        send((*pair.cid).qp, smr, ibv_send_flags_IBV_SEND_SOLICITED);
        let start = Instant::now();
        while !waiter.is_finished() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(waiter.is_finished(), "the solicited receive woke the waiter");
        let (r, got) = waiter.join().unwrap();
        assert_eq!((r, got), (0, cq as usize));
        (c.ack_cq_events)(cq, 1);
        let mut wc = [ibv_wc::default(); 4];
        let n = (*ctx).ops.poll_cq.unwrap()(cq, 4, wc.as_mut_ptr());
        assert_eq!(n, 2, "both receives completed");
        assert!(wc[..2].iter().all(|w| w.status == ibv_wc_status_IBV_WC_SUCCESS && w.byte_len == 8));
        assert_eq!(&rbuf, b"solicit!");
        drop(pair);
        assert_eq!((c.dereg_mr)(rmr), 0);
        assert_eq!((c.dereg_mr)(smr), 0);
        assert_eq!((c.destroy_cq)(cq), 0);
        assert_eq!((c.destroy_comp_channel)(ch), 0);
    }
}

/// librdmacm's context (the one every identifier's `verbs` is).
fn cm_context() -> P<ibv_context> {
    // SAFETY: C calls with valid arguments.
    unsafe {
        let mut n = 0;
        let devs = (cm().get_devices)(&mut n);
        let ctx = *devs;
        (cm().free_devices)(devs);
        ctx
    }
}

/// Held by the tests that take events from the asynchronous queue of librdmacm's context
/// (one for the whole process), so that none takes another's.
fn async_events() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes asynchronous events of `ctx` for up to `limit`, acknowledging each, until one has
/// `kind` and `element` (compared as an address); returns whether it came. Events of other
/// objects (other tests') are passed over; with `others`, events of `element` of other types
/// are collected there.
///
/// # Safety
/// `ctx` live.
unsafe fn async_event(ctx: P<ibv_context>, kind: u32, element: usize, limit: Duration, others: &mut Vec<u32>) -> bool {
    let c = cm();
    // SAFETY: by this function's contract.
    unsafe {
        libc::fcntl((*ctx).async_fd, libc::F_SETFL, libc::O_NONBLOCK);
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() || !readable((*ctx).async_fd, left.min(Duration::from_millis(50))) {
                if start.elapsed() >= limit {
                    return false;
                }
                continue;
            }
            let mut ev = ibv_async_event::default();
            if (c.get_async_event)(ctx, &mut ev) != 0 {
                continue;
            }
            let (k, e) = (ev.event_type, ev.element.qp as usize);
            (c.ack_async_event)(&mut ev);
            if e == element {
                if k == kind {
                    return true;
                }
                others.push(k);
            }
        }
    }
}

#[test]
fn a_queue_pair_error_reaches_the_asynchronous_queue_and_rdma_cm_sees_the_disconnection() {
    let c = cm();
    let _one = async_events();
    // SAFETY: C calls with valid arguments; buffers outlive their registrations.
    unsafe {
        let pair = Pair::connect(None, None);
        let ctx = (*pair.cid).verbs;
        let mut buf = [7u8; 8];
        let mr =
            (c.reg_mr)((*pair.cid).pd, buf.as_mut_ptr().cast(), 8, ibv_access_flags_IBV_ACCESS_LOCAL_WRITE as c_int);
        // An RDMA Write to a key the peer never registered: the peer answers with a
        // Terminate, which ends the connection with an error on both sides.
        let mut sge = ibv_sge { addr: (*mr).addr as u64, length: 8, lkey: (*mr).lkey };
        let mut wr = ibv_send_wr {
            sg_list: &mut sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_RDMA_WRITE,
            send_flags: ibv_send_flags_IBV_SEND_SIGNALED,
            ..Default::default()
        };
        wr.wr.rdma = ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr: 0x1000, rkey: 0xdead_be00 };
        let mut bad = null_mut();
        assert_eq!((*ctx).ops.post_send.unwrap()((*pair.cid).qp, &mut wr, &mut bad), 0);
        let mut seen = Vec::new();
        libc::fcntl((*ctx).async_fd, libc::F_SETFL, libc::O_NONBLOCK);
        let start = Instant::now();
        let qps = [(*pair.cid).qp as usize, (*pair.child).qp as usize];
        while seen.len() < 2 && start.elapsed() < Duration::from_secs(10) {
            if !readable((*ctx).async_fd, Duration::from_millis(100)) {
                continue;
            }
            let mut ev = ibv_async_event::default();
            if (c.get_async_event)(ctx, &mut ev) == 0 {
                // The context is every test's: other tests' queue pairs report here too.
                if qps.contains(&(ev.element.qp as usize)) {
                    seen.push((ev.element.qp as usize, ev.event_type));
                }
                (c.ack_async_event)(&mut ev);
            }
        }
        assert_eq!(seen.len(), 2, "an error event for each queue pair: {seen:?}");
        for (qp, kind) in &seen {
            assert!(qps.contains(qp), "{seen:?}");
            // An invalid STag is a tagged-buffer (DDP 1/1) error: an access error on both
            // sides, the one that detected it and the one its Terminate reached.
            assert_eq!(*kind, ibv_event_type_IBV_EVENT_QP_ACCESS_ERR, "{seen:?}");
        }
        // The connection is gone: rdma_cm reports it to both identifiers.
        let (ev, ..) = expect(pair.cch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        let (ev, ..) = expect(pair.sch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        // (The Write itself completed when TCP took it: an iWARP Write does not wait for
        // the peer.)
        let mut wc = [ibv_wc::default(); 2];
        let n = (*ctx).ops.poll_cq.unwrap()((*pair.cid).send_cq, 2, wc.as_mut_ptr());
        assert_eq!(n, 1);
        assert_eq!(wc[0].opcode, ibv_wc_opcode_IBV_WC_RDMA_WRITE);
        // Work posted after the connection ended is flushed at once, as Linux siw does, and
        // the completion wakes the armed channel rdma_create_qp made for the queue.
        let rcq = (*pair.cid).recv_cq;
        assert_eq!((*ctx).ops.req_notify_cq.unwrap()(rcq, 0), 0);
        recvs((*pair.cid).qp, mr, 1);
        let ch = (*pair.cid).recv_cq_channel;
        assert!(readable((*ch).fd, Duration::from_secs(10)), "the flush signals the channel");
        let (mut got, mut context) = (null_mut(), null_mut());
        assert_eq!((c.get_cq_event)(ch, &mut got, &mut context), 0);
        assert_eq!(got, rcq);
        (c.ack_cq_events)(rcq, 1);
        let n = (*ctx).ops.poll_cq.unwrap()(rcq, 2, wc.as_mut_ptr());
        assert_eq!(n, 1);
        assert_eq!(wc[0].status, ibv_wc_status_IBV_WC_WR_FLUSH_ERR);
        drop(pair);
        assert_eq!((c.dereg_mr)(mr), 0);
    }
}

/// `ibv_dereg_mr` while the peer RDMA-Writes into the buffer in a loop: when it returns, the
/// library no longer touches the buffer (a canary written over it stays intact while the peer
/// keeps writing), so a C program may free it, which the test then does (`munmap`).
#[test]
fn ibv_dereg_mr_returns_once_a_peer_writing_in_a_loop_can_no_longer_reach_the_buffer() {
    const LEN: usize = 1 << 20;
    const CHUNK: usize = 128 << 10;
    let c = cm();
    // SAFETY: C calls with valid arguments; the target mapping is unmapped only after
    // ibv_dereg_mr returned, the source buffer outlives its registration.
    unsafe {
        let pair = Pair::connect(None, None);
        let target = libc::mmap(
            null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(target, libc::MAP_FAILED);
        let access = ibv_access_flags_IBV_ACCESS_LOCAL_WRITE | ibv_access_flags_IBV_ACCESS_REMOTE_WRITE;
        let tmr = (c.reg_mr)((*pair.child).pd, target, LEN, access as c_int);
        assert!(!tmr.is_null());
        let (raddr, rkey) = ((*tmr).addr as u64, (*tmr).rkey);
        let mut src = vec![0xA5u8; CHUNK];
        let smr = (c.reg_mr)((*pair.cid).pd, src.as_mut_ptr().cast(), CHUNK, 0);
        assert!(!smr.is_null());

        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (qp, cq, lkey, saddr) = ((*pair.cid).qp as usize, (*pair.cid).send_cq as usize, (*smr).lkey, (*smr).addr);
        let writer = {
            let done = std::sync::Arc::clone(&done);
            let saddr = saddr as usize;
            std::thread::spawn(move || {
                let (qp, cq) = (qp as P<ibv_qp>, cq as P<ibv_cq>);
                let (post, poll) = ((*ctx_of(qp)).ops.post_send.unwrap(), (*ctx_of(qp)).ops.poll_cq.unwrap());
                let (mut outstanding, mut i) = (0, 0u64);
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    while outstanding < 8 {
                        // Mostly large Writes (placed by readv), every fourth small (copied).
                        let len = if i % 4 == 3 { 1000 } else { CHUNK };
                        let off = (i as usize * 7919 * 64) % (LEN - len);
                        let mut sge = ibv_sge { addr: saddr as u64, length: len as u32, lkey };
                        let mut wr = ibv_send_wr {
                            wr_id: i,
                            sg_list: &mut sge,
                            num_sge: 1,
                            opcode: ibv_wr_opcode_IBV_WR_RDMA_WRITE,
                            send_flags: ibv_send_flags_IBV_SEND_SIGNALED,
                            ..Default::default()
                        };
                        wr.wr.rdma = ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr: raddr + off as u64, rkey };
                        let mut bad = null_mut();
                        if post(qp, &mut wr, &mut bad) != 0 {
                            return;
                        }
                        outstanding += 1;
                        i += 1;
                    }
                    let mut wc = [ibv_wc::default(); 8];
                    let n = poll(cq, 8, wc.as_mut_ptr());
                    for w in &wc[..n.max(0) as usize] {
                        outstanding -= 1;
                        if w.status != ibv_wc_status_IBV_WC_SUCCESS {
                            // The peer deregistered the target: the connection ended.
                            return;
                        }
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        };
        let start = Instant::now();
        while done.load(std::sync::atomic::Ordering::Relaxed) < 40 {
            assert!(start.elapsed() < Duration::from_secs(20), "the Writes do not get through");
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        assert_eq!((c.dereg_mr)(tmr), 0, "errno {}", errno());
        assert!(t.elapsed() < Duration::from_secs(2), "ibv_dereg_mr took {:?}", t.elapsed());
        std::ptr::write_bytes(target.cast::<u8>(), 0x5A, LEN);
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(10));
            let bytes = std::slice::from_raw_parts(target.cast::<u8>(), LEN);
            assert_eq!(bytes.iter().position(|&b| b != 0x5A), None, "written after ibv_dereg_mr");
        }
        // Freed, as a C program would.
        assert_eq!(libc::munmap(target, LEN), 0);
        writer.join().unwrap();
        drop(pair);
        assert_eq!((c.dereg_mr)(smr), 0);
        drop(src);
    }
}

/// The context of a queue pair.
///
/// # Safety
/// `qp` live.
unsafe fn ctx_of(qp: P<ibv_qp>) -> P<ibv_context> {
    // SAFETY: by this function's contract.
    unsafe { (*qp).context }
}

#[test]
fn rdma_create_srq_gives_the_identifier_a_shared_receive_queue_its_queue_pair_uses() {
    let c = cm();
    let l = lib();
    type CreateSrq = unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_pd>, P<ibv_srq_init_attr>) -> c_int;
    type CreateSrqEx = unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_srq_init_attr_ex>) -> c_int;
    // SAFETY: each type is the C prototype of the symbol in rdma-core 44's rdma_cma.h.
    let (create_srq, create_srq_ex, destroy_srq): (CreateSrq, CreateSrqEx, unsafe extern "C" fn(P<rdma_cm_id>)) = unsafe {
        (
            l.func("rdma_create_srq", "RDMACM_1.0"),
            l.func("rdma_create_srq_ex", "RDMACM_1.0"),
            l.func("rdma_destroy_srq", "RDMACM_1.0"),
        )
    };
    // SAFETY: C calls with valid arguments; buffers outlive their registrations.
    unsafe {
        let sch = (c.create_event_channel)();
        let cch = (c.create_event_channel)();
        let (lid, port) = listener(sch, "127.0.0.1");
        let cid = resolved(cch, "127.0.0.1", port);
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(cid, null_mut(), &mut attr), 0);
        assert_eq!((c.connect)(cid, null_mut()), 0);
        let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST);
        let child = (*ev).id;
        ack(ev);

        // The extended form: the type is required, and only a basic queue exists here.
        let mut ex =
            ibv_srq_init_attr_ex { attr: ibv_srq_attr { max_wr: 4, max_sge: 1, srq_limit: 0 }, ..Default::default() };
        assert_eq!(create_srq_ex(child, &mut ex), -1);
        assert_eq!(errno(), libc::EINVAL, "IBV_SRQ_INIT_ATTR_TYPE is required");
        ex.comp_mask = ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE;
        ex.srq_type = ibv_srq_type_IBV_SRQT_XRC;
        assert_eq!(create_srq_ex(child, &mut ex), -1);
        assert_eq!(errno(), libc::EOPNOTSUPP, "no XRC");
        assert!((*child).srq.is_null());

        let mut sattr = ibv_srq_init_attr {
            srq_context: 0x5151 as *mut c_void,
            attr: ibv_srq_attr { max_wr: 4, max_sge: 1, srq_limit: 0 },
        };
        assert_eq!(create_srq(child, null_mut(), &mut sattr), 0, "rdma_create_srq: errno {}", errno());
        let srq = (*child).srq;
        assert!(!srq.is_null());
        assert_eq!((*srq).pd, (*child).pd, "on the identifier's domain");
        assert_eq!((*srq).context, (*child).verbs);
        assert_eq!((*srq).srq_context, 0x5151 as *mut c_void);
        assert_eq!(create_srq(child, null_mut(), &mut sattr), -1, "one per identifier");
        assert_eq!(errno(), libc::EINVAL);

        // rdma_create_qp takes id->srq when the attributes name none.
        let mut attr = qp_attr();
        assert_eq!((c.create_qp)(child, null_mut(), &mut attr), 0);
        assert_eq!((*(*child).qp).srq, srq);
        let pd = (*child).pd;
        let mut rbuf = [0u8; 16];
        let rmr = (c.reg_mr)(pd, rbuf.as_mut_ptr().cast(), 16, ibv_access_flags_IBV_ACCESS_LOCAL_WRITE as c_int);
        let ctx = (*child).verbs;
        for i in 0..2u64 {
            let mut sge = ibv_sge { addr: (*rmr).addr as u64 + 8 * i, length: 8, lkey: (*rmr).lkey };
            let mut wr = ibv_recv_wr { wr_id: 100 + i, sg_list: &mut sge, num_sge: 1, ..Default::default() };
            let mut bad = null_mut();
            assert_eq!((*ctx).ops.post_srq_recv.unwrap()(srq, &mut wr, &mut bad), 0);
        }
        assert_eq!((c.accept)(child, null_mut()), 0);
        let (ev, ..) = expect(cch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
        ack(ev);
        let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
        ack(ev);

        let mut sbuf = *b"via srq!";
        let smr = (c.reg_mr)((*cid).pd, sbuf.as_mut_ptr().cast(), 8, 0);
        send((*cid).qp, smr, 0);
        send((*cid).qp, smr, 0);
        let mut wc = [ibv_wc::default(); 4];
        let mut got = 0;
        let start = Instant::now();
        while got < 2 && start.elapsed() < Duration::from_secs(10) {
            got += (*ctx).ops.poll_cq.unwrap()((*child).recv_cq, 4 - got as c_int, wc[got..].as_mut_ptr()) as usize;
        }
        assert_eq!(got, 2, "both sends landed in the shared queue's buffers");
        assert_eq!(
            wc[..2].iter().map(|w| (w.wr_id, w.status, w.byte_len)).collect::<Vec<_>>(),
            [(100, ibv_wc_status_IBV_WC_SUCCESS, 8), (101, ibv_wc_status_IBV_WC_SUCCESS, 8)]
        );
        assert_eq!(&rbuf, b"via srq!via srq!");

        // Not while a queue pair uses it (nothing destroyed, errno EBUSY); then it goes.
        destroy_srq(child);
        assert_eq!(errno(), libc::EBUSY);
        assert_eq!((*child).srq, srq);
        assert_eq!((c.disconnect)(cid), 0);
        let (ev, ..) = expect(cch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        (c.destroy_qp)(child);
        destroy_srq(child);
        assert!((*child).srq.is_null());
        destroy_srq(child);
        assert_eq!(errno(), libc::EINVAL, "no queue left to destroy");

        // The extended form with the domain defaulted and written back.
        ex.srq_type = ibv_srq_type_IBV_SRQT_BASIC;
        assert_eq!(create_srq_ex(child, &mut ex), 0, "errno {}", errno());
        assert_eq!(ex.pd, (*child).pd);
        assert_ne!(ex.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD, 0);
        destroy_srq(child);
        assert!((*child).srq.is_null());

        (c.destroy_qp)(cid);
        assert_eq!((c.dereg_mr)(rmr), 0);
        assert_eq!((c.dereg_mr)(smr), 0);
        for id in [cid, child, lid] {
            assert_eq!((c.destroy_id)(id), 0);
        }
        (c.destroy_event_channel)(sch);
        (c.destroy_event_channel)(cch);
    }
}

#[test]
fn multicast_notify_ece_and_rsockets_are_answered_as_on_an_iwarp_device() {
    let c = cm();
    let l = lib();
    type Sock = *const libc::sockaddr;
    // SAFETY: each type is the C prototype of the symbol in rdma-core 44's rdma_cma.h and
    // rsocket.h (rfcntl's variadic tail is not used).
    unsafe {
        let join: unsafe extern "C" fn(P<rdma_cm_id>, Sock, *mut c_void) -> c_int =
            l.func("rdma_join_multicast", "RDMACM_1.0");
        let join_ex: unsafe extern "C" fn(P<rdma_cm_id>, P<rdma_cm_join_mc_attr_ex>, *mut c_void) -> c_int =
            l.func("rdma_join_multicast_ex", "RDMACM_1.1");
        let leave: unsafe extern "C" fn(P<rdma_cm_id>, Sock) -> c_int = l.func("rdma_leave_multicast", "RDMACM_1.0");
        let notify: unsafe extern "C" fn(P<rdma_cm_id>, u32) -> c_int = l.func("rdma_notify", "RDMACM_1.0");
        let set_ece: unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_ece>) -> c_int =
            l.func("rdma_set_local_ece", "RDMACM_1.3");
        let get_ece: unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_ece>) -> c_int =
            l.func("rdma_get_remote_ece", "RDMACM_1.3");
        let rsocket: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int = l.func("rsocket", "RDMACM_1.0");
        let rsend: unsafe extern "C" fn(c_int, *const c_void, usize, c_int) -> isize = l.func("rsend", "RDMACM_1.0");
        let rclose: unsafe extern "C" fn(c_int) -> c_int = l.func("rclose", "RDMACM_1.0");
        let rfcntl: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int = l.func("rfcntl", "RDMACM_1.0");
        let riowrite: unsafe extern "C" fn(c_int, *const c_void, usize, libc::off_t, c_int) -> usize =
            l.func("riowrite", "RDMACM_1.0");
        let rselect: unsafe extern "C" fn(
            c_int,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *mut libc::timeval,
        ) -> c_int = l.func("rselect", "RDMACM_1.0");

        let ch = (c.create_event_channel)();
        let id = new_id(ch);
        let group = Sa::new("239.1.2.3:0".parse().unwrap());
        assert_eq!(join(id, group.ptr(), null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL, "neither bound nor resolved");
        let here = Sa::new("127.0.0.1:0".parse().unwrap());
        assert_eq!((c.bind_addr)(id, here.ptr()), 0);
        assert_eq!(join(id, null(), null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL, "no address");
        assert_eq!(join(id, group.ptr(), null_mut()), -1);
        assert_eq!(errno(), libc::ENOSYS, "no multicast on iWARP, as Linux answers");
        let mut mc = rdma_cm_join_mc_attr_ex {
            comp_mask: rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_RESERVED,
            join_flags: 0,
            addr: group.ptr().cast_mut().cast(),
        };
        assert_eq!(join_ex(id, &mut mc, null_mut()), -1);
        assert_eq!(errno(), libc::ENOTSUP);
        mc.comp_mask = rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_ADDRESS;
        assert_eq!(join_ex(id, &mut mc, null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL, "join flags are required");
        mc.comp_mask |= rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS;
        assert_eq!(join_ex(id, &mut mc, null_mut()), -1);
        assert_eq!(errno(), libc::ENOSYS);
        assert_eq!(leave(id, group.ptr()), -1);
        assert_eq!(errno(), libc::EADDRNOTAVAIL, "no group was joined");

        // rdma_notify: nothing to do on iWARP once there is a connection.
        assert_eq!(notify(id, ibv_event_type_IBV_EVENT_COMM_EST), -1);
        assert_eq!(errno(), libc::EINVAL);
        let pair = Pair::connect(None, None);
        assert_eq!(notify(pair.cid, ibv_event_type_IBV_EVENT_COMM_EST), 0);
        assert_eq!(notify(pair.child, ibv_event_type_IBV_EVENT_COMM_EST), 0);

        // ECE: kept locally, never received from an iWARP peer.
        let mut ece = ibv_ece::default();
        assert_eq!(set_ece(id, &mut ece), -1);
        assert_eq!(errno(), libc::EINVAL, "a vendor id is required");
        ece.vendor_id = 0x15b3;
        ece.options = 7;
        assert_eq!(set_ece(id, &mut ece), 0);
        let mut remote = ibv_ece { vendor_id: 1, options: 2, comp_mask: 3 };
        assert_eq!(get_ece(id, &mut remote), 0);
        assert_eq!((remote.vendor_id, remote.options, remote.comp_mask), (0, 0, 0));
        assert_eq!(get_ece(pair.cid, &mut remote), -1);
        assert_eq!(errno(), libc::EINVAL, "not once the identifier has a queue pair");
        drop(pair);

        // rsockets: none is ever made; calls on descriptors refuse them as rsockets does.
        assert_eq!(rsocket(libc::AF_INET, libc::SOCK_STREAM, 0), -1);
        assert_eq!(errno(), libc::ENOSYS);
        assert_eq!(rsend(0, b"x".as_ptr().cast(), 1, 0), -1);
        assert_eq!(errno(), libc::EBADF);
        assert_eq!(rclose(0), -1);
        assert_eq!(errno(), libc::EBADF);
        assert_eq!(rfcntl(0, libc::F_SETFL, libc::O_NONBLOCK), -1);
        assert_eq!(errno(), libc::EBADF);
        assert_eq!(riowrite(0, b"x".as_ptr().cast(), 1, 0, 0), usize::MAX);
        assert_eq!(errno(), libc::EBADF);
        // rselect waits on ordinary descriptors, as rpoll does.
        let mut fds = [0; 2];
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        assert_eq!(libc::write(fds[1], b"!".as_ptr().cast(), 1), 1);
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_SET(fds[0], &mut set);
        let mut tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
        assert_eq!(rselect(fds[0] + 1, &mut set, null_mut(), null_mut(), &mut tv), 1);
        assert!(libc::FD_ISSET(fds[0], &set));
        libc::close(fds[0]);
        libc::close(fds[1]);

        assert_eq!((c.destroy_id)(id), 0);
        (c.destroy_event_channel)(ch);
    }
}

extern "C" fn on_sigusr2(_: c_int) {}

/// qperf ends each test with `SIGALRM` (a handler without `SA_RESTART`) and counts on the
/// signal to bring its thread out of `ibv_get_cq_event` with `EINTR`, as rdma-core's `read(2)`
/// of the channel does; a wait that retried on `EINTR` kept qperf's server blocked after its
/// last message ("failed to receive results: timed out" on the client).
#[test]
fn a_signal_interrupts_a_thread_blocked_in_ibv_get_cq_event_with_eintr() {
    let c = cm();
    // SAFETY: C calls with valid arguments; the handler does nothing and is installed for a
    // signal only this test sends, to its own thread.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigusr2 as extern "C" fn(c_int) as libc::sighandler_t;
        act.sa_flags = 0; // no SA_RESTART, as qperf
        assert_eq!(libc::sigaction(libc::SIGUSR2, &act, null_mut()), 0);
        let ctx = cm_context();
        let ch = (c.create_comp_channel)(ctx);
        let cq = (c.create_cq)(ctx, 4, null_mut(), ch, 0);
        assert_eq!((*ctx).ops.req_notify_cq.unwrap()(cq, 0), 0);
        let chp = ch as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(libc::pthread_self()).unwrap();
            let (mut got, mut context) = (null_mut(), null_mut());
            let r = (cm().get_cq_event)(chp as P<ibv_comp_channel>, &mut got, &mut context);
            (r, errno())
        });
        let thread = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "nothing to report: the waiter sleeps");
        let start = Instant::now();
        while !waiter.is_finished() && start.elapsed() < Duration::from_secs(5) {
            libc::pthread_kill(thread, libc::SIGUSR2);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(waiter.is_finished(), "the signal brought the waiter out of ibv_get_cq_event");
        assert_eq!(waiter.join().unwrap(), (-1, libc::EINTR));
        assert_eq!((c.destroy_cq)(cq), 0);
        assert_eq!((c.destroy_comp_channel)(ch), 0);
    }
}

/// qperf's `rc_rdma_write_lat` posts 1-byte Writes with Immediate with `IBV_SEND_INLINE`: the
/// bytes are the inline copy, not the elements' (which the inline form leaves unread).
#[test]
fn an_inline_rdma_write_with_immediate_carries_its_bytes() {
    let c = cm();
    // SAFETY: C calls with valid arguments; buffers outlive their registrations.
    unsafe {
        let ctx = cm_context();
        let cq = (c.create_cq)(ctx, 16, null_mut(), null_mut(), 0);
        assert!(!cq.is_null());
        let pair = Pair::connect(None, Some(cq));
        let mut rbuf = [0u8; 8];
        let rights = ibv_access_flags_IBV_ACCESS_LOCAL_WRITE | ibv_access_flags_IBV_ACCESS_REMOTE_WRITE;
        let rmr = (c.reg_mr)((*pair.child).pd, rbuf.as_mut_ptr().cast(), 8, rights as c_int);
        let mut sbuf = *b"inline!!";
        recvs((*pair.child).qp, rmr, 1);
        let mut sge = ibv_sge { addr: sbuf.as_mut_ptr() as u64, length: 8, lkey: 0 };
        let mut wr = ibv_send_wr {
            sg_list: &mut sge,
            num_sge: 1,
            opcode: ibv_wr_opcode_IBV_WR_RDMA_WRITE_WITH_IMM,
            send_flags: ibv_send_flags_IBV_SEND_INLINE | ibv_send_flags_IBV_SEND_SIGNALED,
            __bindgen_anon_1: ibv_send_wr__bindgen_ty_1 { imm_data: 0x1234_5678u32.to_be() },
            wr: ibv_send_wr__bindgen_ty_2 {
                rdma: ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr: rbuf.as_ptr() as u64, rkey: (*rmr).rkey },
            },
            ..Default::default()
        };
        let qp = (*pair.cid).qp;
        let mut bad = null_mut();
        assert_eq!((*(*qp).context).ops.post_send.unwrap()(qp, &mut wr, &mut bad), 0);
        sbuf.fill(0); // inline: copied at post time
        let poll = (*ctx).ops.poll_cq.unwrap();
        let mut wc = [ibv_wc::default(); 2];
        let start = Instant::now();
        let mut n = 0;
        while n == 0 && start.elapsed() < Duration::from_secs(10) {
            n = poll(cq, 2, wc.as_mut_ptr());
        }
        assert_eq!(n, 1, "the receive completed");
        assert_eq!(wc[0].status, ibv_wc_status_IBV_WC_SUCCESS);
        assert_eq!(wc[0].opcode, ibv_wc_opcode_IBV_WC_RECV_RDMA_WITH_IMM);
        assert_eq!(u32::from_be(wc[0].__bindgen_anon_1.imm_data), 0x1234_5678);
        assert_eq!(&rbuf, b"inline!!", "the inline bytes were written");
        drop(pair);
        assert_eq!((c.dereg_mr)(rmr), 0);
        assert_eq!((c.destroy_cq)(cq), 0);
    }
}

/// `ibv_modify_srq` and `ibv_query_srq`, by their C prototypes.
type ModifySrq = unsafe extern "C" fn(P<ibv_srq>, P<ibv_srq_attr>, c_int) -> c_int;
type QuerySrq = unsafe extern "C" fn(P<ibv_srq>, P<ibv_srq_attr>) -> c_int;

fn srq_calls() -> (ModifySrq, QuerySrq) {
    let l = lib();
    // SAFETY: the C prototypes of the symbols in rdma-core 44's verbs.h.
    unsafe { (l.func("ibv_modify_srq", "IBVERBS_1.1"), l.func("ibv_query_srq", "IBVERBS_1.1")) }
}

/// A connected pair whose passive side's queue pair takes its receives from a shared
/// receive queue of `depth` (made with `rdma_create_srq`), with `posted` receives of 8 bytes
/// of `rmr` posted to it before the connection is accepted.
struct SrqPair {
    sch: P<rdma_event_channel>,
    cch: P<rdma_event_channel>,
    l: P<rdma_cm_id>,
    cid: P<rdma_cm_id>,
    child: P<rdma_cm_id>,
    srq: P<ibv_srq>,
    rbuf: Box<[u8; 64]>,
    rmr: P<ibv_mr>,
    sbuf: Box<[u8; 8]>,
    smr: P<ibv_mr>,
}

impl SrqPair {
    /// Connects; `before_accept` runs on the shared receive queue before the accept.
    fn connect(depth: u32, before_accept: impl FnOnce(&SrqPair)) -> SrqPair {
        let c = cm();
        let l = lib();
        // SAFETY: the C prototype of rdma_create_srq in rdma-core 44's rdma_cma.h.
        let create_srq: unsafe extern "C" fn(P<rdma_cm_id>, P<ibv_pd>, P<ibv_srq_init_attr>) -> c_int =
            unsafe { l.func("rdma_create_srq", "RDMACM_1.0") };
        // SAFETY: C calls with valid arguments; the buffers are boxed and outlive their
        // registrations.
        unsafe {
            let sch = (c.create_event_channel)();
            let cch = (c.create_event_channel)();
            let (lid, port) = listener(sch, "127.0.0.1");
            let cid = resolved(cch, "127.0.0.1", port);
            let mut attr = qp_attr();
            assert_eq!((c.create_qp)(cid, null_mut(), &mut attr), 0);
            assert_eq!((c.connect)(cid, null_mut()), 0);
            let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST);
            let child = (*ev).id;
            ack(ev);
            let mut sattr = ibv_srq_init_attr {
                srq_context: null_mut(),
                attr: ibv_srq_attr { max_wr: depth, max_sge: 1, srq_limit: 0 },
            };
            assert_eq!(create_srq(child, null_mut(), &mut sattr), 0, "rdma_create_srq: errno {}", errno());
            let mut attr = qp_attr();
            assert_eq!((c.create_qp)(child, null_mut(), &mut attr), 0);
            let mut rbuf = Box::new([0u8; 64]);
            let rmr =
                (c.reg_mr)((*child).pd, rbuf.as_mut_ptr().cast(), 64, ibv_access_flags_IBV_ACCESS_LOCAL_WRITE as c_int);
            let mut sbuf = Box::new(*b"to a srq");
            let smr = (c.reg_mr)((*cid).pd, sbuf.as_mut_ptr().cast(), 8, 0);
            let p = SrqPair { sch, cch, l: lid, cid, child, srq: (*child).srq, rbuf, rmr, sbuf, smr };
            before_accept(&p);
            assert_eq!((c.accept)(child, null_mut()), 0);
            let (ev, ..) = expect(cch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
            ack(ev);
            let (ev, ..) = expect(sch, rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED);
            ack(ev);
            p
        }
    }

    /// Posts `n` receives to the shared receive queue.
    fn post(&self, n: u64) {
        // SAFETY: a live queue and region of this pair.
        unsafe {
            for i in 0..n {
                let mut sge =
                    ibv_sge { addr: (*self.rmr).addr as u64 + 8 * (i % 8), length: 8, lkey: (*self.rmr).lkey };
                let mut wr = ibv_recv_wr { wr_id: i, sg_list: &mut sge, num_sge: 1, ..Default::default() };
                let mut bad = null_mut();
                assert_eq!((*(*self.child).verbs).ops.post_srq_recv.unwrap()(self.srq, &mut wr, &mut bad), 0);
            }
        }
    }

    /// One Send from the client, waited for until the server's receive completes.
    fn send_one(&self) {
        // SAFETY: live queue pairs and queues of this pair.
        unsafe {
            send((*self.cid).qp, self.smr, 0);
            let ctx = (*self.child).verbs;
            let mut wc = [ibv_wc::default(); 1];
            let start = Instant::now();
            let mut got = 0;
            while got == 0 && start.elapsed() < Duration::from_secs(10) {
                got = (*ctx).ops.poll_cq.unwrap()((*self.child).recv_cq, 1, wc.as_mut_ptr());
            }
            assert_eq!(got, 1, "the Send was received");
            assert_eq!(wc[0].status, ibv_wc_status_IBV_WC_SUCCESS);
        }
    }

    /// `ibv_query_srq`'s limit.
    fn limit(&self) -> u32 {
        let mut a = ibv_srq_attr::default();
        // SAFETY: a live queue.
        assert_eq!(unsafe { (srq_calls().1)(self.srq, &mut a) }, 0);
        a.srq_limit
    }

    /// `ibv_modify_srq` with `IBV_SRQ_LIMIT`.
    fn arm(&self, limit: u32) -> c_int {
        let mut a = ibv_srq_attr { srq_limit: limit, ..Default::default() };
        // SAFETY: a live queue.
        unsafe { (srq_calls().0)(self.srq, &mut a, ibv_srq_attr_mask_IBV_SRQ_LIMIT as c_int) }
    }
}

impl Drop for SrqPair {
    fn drop(&mut self) {
        let c = cm();
        let l = lib();
        // SAFETY: the objects this pair made, destroyed once.
        unsafe {
            let destroy_srq: unsafe extern "C" fn(P<rdma_cm_id>) = l.func("rdma_destroy_srq", "RDMACM_1.0");
            (c.disconnect)(self.cid);
            (c.destroy_qp)(self.cid);
            (c.destroy_qp)(self.child);
            destroy_srq(self.child);
            (c.dereg_mr)(self.rmr);
            (c.dereg_mr)(self.smr);
            for id in [self.cid, self.child, self.l] {
                (c.destroy_id)(id);
            }
            (c.destroy_event_channel)(self.sch);
            (c.destroy_event_channel)(self.cch);
        }
        let _ = (&self.rbuf, &self.sbuf);
    }
}

#[test]
fn a_shared_receive_queue_below_its_limit_reports_it_once_and_disarms() {
    let _one = async_events();
    let (modify, query) = srq_calls();
    let p = SrqPair::connect(8, |p| {
        // SAFETY: a live queue; C calls with valid arguments.
        unsafe {
            let mut a = ibv_srq_attr::default();
            assert_eq!(query(p.srq, &mut a), 0);
            assert_eq!((a.max_wr, a.max_sge, a.srq_limit), (8, 1, 0), "created unarmed");
            assert_eq!(p.arm(9), libc::EINVAL, "a limit above max_wr");
            assert_eq!(p.limit(), 0, "a refused limit arms nothing");
            let mut resize = ibv_srq_attr { max_wr: 16, ..Default::default() };
            assert_eq!(
                modify(p.srq, &mut resize, ibv_srq_attr_mask_IBV_SRQ_MAX_WR as c_int),
                libc::EINVAL,
                "no resizing"
            );
            assert_eq!(modify(null_mut(), &mut resize, ibv_srq_attr_mask_IBV_SRQ_LIMIT as c_int), libc::EINVAL);
            assert_eq!(query(p.srq, null_mut()), libc::EINVAL);
        }
        p.post(6);
        assert_eq!(p.arm(4), 0);
        assert_eq!(p.limit(), 4, "armed");
    });
    // SAFETY: the pair's live context.
    let ctx = unsafe { (*p.child).verbs };
    let srq = p.srq as usize;
    let mut others = Vec::new();
    let reached = ibv_event_type_IBV_EVENT_SRQ_LIMIT_REACHED;
    let short = Duration::from_millis(200);
    // 6 -> 5 -> 4: at the limit, not below it.
    p.send_one();
    p.send_one();
    // SAFETY: a live context.
    assert!(!unsafe { async_event(ctx, reached, srq, short, &mut others) }, "not below the limit yet");
    assert_eq!(p.limit(), 4, "still armed");
    // 4 -> 3: below.
    p.send_one();
    // SAFETY: a live context.
    assert!(unsafe { async_event(ctx, reached, srq, Duration::from_secs(10), &mut others) }, "the limit event");
    assert_eq!(p.limit(), 0, "disarmed once reached");
    // 3 -> 2 -> 1: nothing more.
    p.send_one();
    p.send_one();
    // SAFETY: a live context.
    assert!(!unsafe { async_event(ctx, reached, srq, short, &mut others) }, "it comes once");
    // Armed again (above the count): the next receive taken reports it.
    p.post(3);
    assert_eq!(p.arm(5), 0);
    assert_eq!(p.limit(), 5);
    p.send_one();
    // SAFETY: a live context.
    assert!(unsafe { async_event(ctx, reached, srq, Duration::from_secs(10), &mut others) }, "re-armed");
    assert_eq!(p.limit(), 0);
    // 0 disarms.
    assert_eq!(p.arm(2), 0);
    assert_eq!(p.arm(0), 0);
    assert_eq!(p.limit(), 0);
    p.send_one();
    // SAFETY: a live context.
    assert!(!unsafe { async_event(ctx, reached, srq, short, &mut others) }, "disarmed with 0");
    assert!(others.is_empty(), "no other event of the queue: {others:?}");
}

#[test]
fn a_queue_pair_on_a_shared_receive_queue_reports_its_last_wqe_when_its_connection_ends() {
    let _one = async_events();
    let c = cm();
    let p = SrqPair::connect(8, |p| p.post(2));
    p.send_one();
    // SAFETY: live objects of the pair.
    unsafe {
        let ctx = (*p.child).verbs;
        let qp = (*p.child).qp as usize;
        let last = ibv_event_type_IBV_EVENT_QP_LAST_WQE_REACHED;
        let mut others = Vec::new();
        assert!(!async_event(ctx, last, qp, Duration::from_millis(100), &mut others), "not while connected");
        // The client's queue pair takes no receives from a shared queue: it never reports it.
        let client_qp = (*p.cid).qp as usize;
        assert_eq!((c.disconnect)(p.cid), 0);
        let (ev, ..) = expect(p.cch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        let (ev, ..) = expect(p.sch, rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED);
        ack(ev);
        assert!(async_event(ctx, last, qp, Duration::from_secs(10), &mut others), "last WQE of the server's QP");
        // The receive left in the shared queue stays there for other queue pairs.
        let mut wc = [ibv_wc::default(); 2];
        assert_eq!((*ctx).ops.poll_cq.unwrap()((*p.child).recv_cq, 2, wc.as_mut_ptr()), 0, "nothing flushed from it");
        assert!(!async_event(ctx, last, qp, Duration::from_millis(200), &mut others), "it comes once");
        let mut client_events = Vec::new();
        assert!(!async_event(ctx, last, client_qp, Duration::from_millis(100), &mut client_events));
        assert!(others.is_empty() && client_events.is_empty(), "{others:?} {client_events:?}");
    }
}
