//! Smoke test: connect over loopback and RDMA Write.
use iwarp::*;
use std::time::Duration;

#[test]
fn connect_and_write() {
    let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let pd = dev.alloc_pd();
    let target = pd.reg_mr(4096, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
    let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let addr = listener.local_addr();
    let server_cq = dev.create_cq(16).unwrap();
    let server_qp = pd.create_qp(&QpInit::new(&server_cq, &server_cq)).unwrap();
    let server = std::thread::spawn(move || {
        let req = listener.get_request(Some(Duration::from_secs(5))).unwrap();
        req.accept(&server_qp, &ConnParams::default()).unwrap();
        server_qp
    });
    let cq = dev.create_cq(16).unwrap();
    let qp = pd.create_qp(&QpInit::new(&cq, &cq)).unwrap();
    qp.connect(addr, &ConnParams::default()).unwrap();
    let _sqp = server.join().unwrap();
    let src = pd.reg_mr(4096, Access::LOCAL_WRITE).unwrap();
    src.write(0, b"hello, iWARP").unwrap();
    qp.post_send(&[SendWr::write(1, &[src.sge(0, 12)], target.remote(0))]).unwrap();
    let mut wc = [WorkCompletion::default(); 4];
    let n = cq.wait(&mut wc, Some(Duration::from_secs(5)));
    assert_eq!((n, wc[0].wr_id, wc[0].status), (1, 1, WcStatus::Success));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(target.to_vec(0, 12).unwrap(), b"hello, iWARP");
}
