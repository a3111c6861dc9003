//! Quick loopback check: RDMA Write bandwidth and Send latency.
use iwarp::*;
use std::time::{Duration, Instant};

fn main() {
    let size: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let iters: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let dev = Device::open(DeviceConfig::default()).unwrap();
    let pd = dev.alloc_pd();
    let target = pd.reg_mr(size, Access::LOCAL_WRITE | Access::REMOTE_WRITE).unwrap();
    let listener = dev.listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let addr = listener.local_addr();
    let scq = dev.create_cq(16).unwrap();
    let sqp = pd.create_qp(&QpInit::new(&scq, &scq)).unwrap();
    let s2 = sqp.clone();
    let t = std::thread::spawn(move || {
        let req = listener.get_request(Some(Duration::from_secs(5))).unwrap();
        req.accept(&s2, &ConnParams::default()).unwrap();
    });
    let cq = dev.create_cq(1024).unwrap();
    let mut init = QpInit::new(&cq, &cq);
    init.cap.max_send_wr = 256;
    let qp = pd.create_qp(&init).unwrap();
    qp.connect(addr, &ConnParams::default()).unwrap();
    t.join().unwrap();
    let src = pd.reg_mr(size, Access::LOCAL_WRITE).unwrap();
    let mut wc = [WorkCompletion::default(); 64];
    let depth = 64;
    let start = Instant::now();
    let mut posted = 0;
    let mut done = 0;
    while done < iters {
        while posted < iters && posted - done < depth {
            qp.post_send(&[SendWr::write(posted as u64, &[src.sge(0, size)], target.remote(0))]).unwrap();
            posted += 1;
        }
        let n = cq.wait(&mut wc, Some(Duration::from_secs(5)));
        assert!(n > 0, "stalled at {done}");
        for c in &wc[..n] {
            assert_eq!(c.status, WcStatus::Success);
        }
        done += n;
    }
    let el = start.elapsed();
    let gbit = (size * iters) as f64 * 8.0 / el.as_secs_f64() / 1e9;
    println!("write {size} B x {iters}: {gbit:.2} Gbit/s ({:.1} us/op)", el.as_secs_f64() * 1e6 / iters as f64);
    println!("client stats {:?}", qp.stats());
    std::thread::sleep(Duration::from_millis(200));
    println!("server stats {:?}", sqp.stats());
}
