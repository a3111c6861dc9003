//! A block I/O benchmark: sequential and random reads and writes at a fixed queue depth for a
//! fixed time, on any [`BlockDevice`] (an attached remote namespace, a file, memory), with
//! throughput, IOPS and latency percentiles, and the CPU time each group of threads used.
//!
//! Queue depth is the number of threads, each with one request outstanding, so the same
//! harness drives a remote namespace and the raw backing file (`pread`/`pwrite`) alike.
//! Sequential workloads share one cursor (the threads take successive extents of it);
//! random ones draw block-aligned offsets from a generator seeded per thread.
//!
//! Every written extent carries, in the first 8 bytes of each 4 KiB block, that block's
//! number; [`prefill`] writes the whole device that way, and reads check it (one comparison
//! per 4 KiB, cheap enough to stay on), so a misplaced or stale transfer is reported.

use crate::block::BlockDevice;
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The stamp granularity (bytes).
const STAMP: usize = 4096;

/// Sequential or random offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Successive extents from one shared cursor, wrapping at the end of the device.
    Seq,
    /// Uniformly random, aligned to the request size.
    Rand,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Reads (checked against the block stamps).
    Read,
    /// Writes (stamped).
    Write,
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Offsets.
    pub pattern: Pattern,
    /// Direction.
    pub op: Op,
    /// Bytes per request (a multiple of 4 KiB).
    pub size: usize,
    /// Requests outstanding (threads).
    pub depth: usize,
}

impl Workload {
    /// A short name: `seq-read-1M-qd1`.
    pub fn name(&self) -> String {
        let p = match self.pattern {
            Pattern::Seq => "seq",
            Pattern::Rand => "rand",
        };
        let o = match self.op {
            Op::Read => "read",
            Op::Write => "write",
        };
        let s = if self.size >= 1 << 20 && self.size.is_multiple_of(1 << 20) {
            format!("{}M", self.size >> 20)
        } else {
            format!("{}K", self.size >> 10)
        };
        format!("{p}-{o}-{s}-qd{}", self.depth)
    }

    /// The standard set: sequential 1 MiB and random 4 KiB, write then read, at depths 1
    /// and 32 (writes first, so reads find data written by the run).
    pub fn standard() -> Vec<Workload> {
        let mut v = Vec::new();
        for (pattern, size) in [(Pattern::Seq, 1 << 20), (Pattern::Rand, 4096)] {
            for depth in [1, 32] {
                for op in [Op::Write, Op::Read] {
                    v.push(Workload { pattern, op, size, depth });
                }
            }
        }
        v
    }
}

/// What one run of a workload measured.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Requests completed.
    pub ops: u64,
    /// Wall time (seconds).
    pub seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_s: f64,
    /// Requests per second.
    pub iops: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Process CPU time per request (microseconds; user + system, every thread).
    pub cpu_us_per_op: f64,
    /// CPU used by each group of threads, in cores (1.0: one core busy the whole time),
    /// groups named by the thread name without its trailing number.
    pub cpu_cores: Vec<(String, f64)>,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// How long each workload runs.
    pub duration: Duration,
    /// Seeds the random offsets (thread `i` uses `seed + i`).
    pub seed: u64,
    /// Check the stamps of what reads return.
    pub verify: bool,
}

/// Writes the whole device in 1 MiB requests, stamping each 4 KiB block with its number.
///
/// # Errors
/// The device's errors.
pub fn prefill(dev: &dyn BlockDevice) -> io::Result<()> {
    let size = dev.size();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = ((size - off) as usize).min(buf.len());
        stamp(&mut buf[..n], off);
        dev.write_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// Stamps each 4 KiB block of `buf` (which starts at device offset `off`) with its number.
fn stamp(buf: &mut [u8], off: u64) {
    for (i, blk) in buf.chunks_mut(STAMP).enumerate() {
        let n = off / STAMP as u64 + i as u64;
        let k = blk.len().min(8);
        blk[..k].copy_from_slice(&n.to_le_bytes()[..k]);
    }
}

/// Checks the stamps of `buf` (read at `off`).
fn check_stamps(buf: &[u8], off: u64) -> io::Result<()> {
    for (i, blk) in buf.chunks(STAMP).enumerate() {
        let n = off / STAMP as u64 + i as u64;
        let k = blk.len().min(8);
        if blk[..k] != n.to_le_bytes()[..k] {
            let mut got = [0u8; 8];
            got[..k].copy_from_slice(&blk[..k]);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "read at {off}: 4 KiB block {n} carries the stamp of block {} (misplaced or stale data)",
                    u64::from_le_bytes(got)
                ),
            ));
        }
    }
    Ok(())
}

/// Runs `w` on `dev` for `cfg.duration`.
///
/// # Errors
/// The first request that failed, or a read whose stamps were wrong.
pub fn run(dev: &Arc<dyn BlockDevice>, w: &Workload, cfg: &RunConfig) -> io::Result<Sample> {
    let size = dev.size();
    if w.size == 0 || !w.size.is_multiple_of(STAMP) || w.size as u64 > size || w.depth == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("workload {} does not fit", w.name())));
    }
    let extents = size / w.size as u64;
    let cursor = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(w.depth + 1));
    let mut threads = Vec::new();
    for t in 0..w.depth {
        let (dev, cursor, stop, start) = (Arc::clone(dev), Arc::clone(&cursor), Arc::clone(&stop), Arc::clone(&start));
        let (w, verify, seed) = (*w, cfg.verify, cfg.seed.wrapping_add(t as u64));
        let h = std::thread::Builder::new().name(format!("bench-{t}")).spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut buf = vec![0u8; w.size];
            let mut hist = Histogram::new();
            start.wait();
            let mut r = Ok(());
            while !stop.load(Ordering::Relaxed) {
                let ext = match w.pattern {
                    Pattern::Seq => cursor.fetch_add(1, Ordering::Relaxed) % extents,
                    Pattern::Rand => rng.u64(..extents),
                };
                let off = ext * w.size as u64;
                let t0 = Instant::now();
                let res = match w.op {
                    Op::Write => {
                        stamp(&mut buf, off);
                        let t0 = Instant::now();
                        dev.write_at(&buf, off).map(|()| t0)
                    }
                    Op::Read => dev.read_at(&mut buf, off).map(|()| t0),
                };
                match res {
                    Ok(t0) => hist.record(t0.elapsed()),
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
                if verify && w.op == Op::Read {
                    if let Err(e) = check_stamps(&buf, off) {
                        r = Err(e);
                        break;
                    }
                }
            }
            (hist, r)
        })?;
        threads.push(h);
    }
    let cpu0 = thread_cpu();
    let proc0 = iwarp::util::cpu_time();
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(cfg.duration);
    // CPU before the workers stop and exit (a thread that ended has no entry any more).
    let elapsed = t0.elapsed().as_secs_f64();
    let proc = (iwarp::util::cpu_time() - proc0).as_secs_f64();
    let cpu1 = thread_cpu();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::new();
    let mut first_err = None;
    for h in threads {
        let (h, r) = h.join().map_err(|_| io::Error::other("a benchmark thread panicked"))?;
        hist.merge(&h);
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    // Requests in flight at the snapshot (at most one per thread) still count.
    let elapsed = elapsed.max(1e-9);
    if let Some(e) = first_err {
        return Err(e);
    }
    let ops = hist.count;
    let cpu_cores = cpu_delta(&cpu0, &cpu1).into_iter().map(|(g, s)| (g, s / elapsed)).collect();
    Ok(Sample {
        ops,
        seconds: elapsed,
        mb_s: ops as f64 * w.size as f64 / elapsed / 1e6,
        iops: ops as f64 / elapsed,
        p50_us: hist.percentile(0.50),
        p99_us: hist.percentile(0.99),
        p999_us: hist.percentile(0.999),
        cpu_us_per_op: if ops == 0 { 0.0 } else { proc * 1e6 / ops as f64 },
        cpu_cores,
    })
}

/// CPU seconds (user + system) of each thread of this process, by thread id and name.
fn thread_cpu() -> Vec<(u32, String, f64)> {
    // Linux only: /proc/self/task/TID/stat, fields 14 and 15 in clock ticks.
    let tick = 100.0; // USER_HZ on Linux
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(s) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // comm is in parentheses and may hold spaces; fields follow the last ')'.
        let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else { continue };
        let name = s[open + 1..close].to_string();
        let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
        // After comm: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.push((tid, name, (ticks(11) + ticks(12)) / tick));
    }
    out
}

/// CPU seconds used between two snapshots, summed per thread group (name without its
/// trailing digits), largest first.
fn cpu_delta(before: &[(u32, String, f64)], after: &[(u32, String, f64)]) -> Vec<(String, f64)> {
    let mut groups: Vec<(String, f64)> = Vec::new();
    for (tid, name, t) in after {
        let t0 = before.iter().find(|(b, _, _)| b == tid).map_or(0.0, |(_, _, t)| *t);
        let group = name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-').to_string();
        let group = if group.is_empty() { name.clone() } else { group };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, s)) => *s += t - t0,
            None => groups.push((group, t - t0)),
        }
    }
    groups.retain(|(_, s)| *s > 0.0);
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

/// A latency histogram: 128 linear sub-buckets per power of two of nanoseconds (under 1%
/// error).
#[derive(Debug, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const SUB_BITS: u32 = 7;

impl Histogram {
    fn new() -> Self {
        Histogram { buckets: vec![0; (64 << SUB_BITS) as usize], count: 0 }
    }
    fn index(ns: u64) -> usize {
        if ns < 1 << SUB_BITS {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // ≥ SUB_BITS
        let shift = exp - SUB_BITS;
        let mantissa = (ns >> shift) & ((1 << SUB_BITS) - 1);
        (((shift + 1) << SUB_BITS) as u64 + mantissa) as usize
    }
    /// The middle of bucket `i`, in nanoseconds.
    fn value(i: usize) -> f64 {
        let i = i as u64;
        if i < 1 << SUB_BITS {
            return i as f64;
        }
        let shift = (i >> SUB_BITS) - 1;
        let mantissa = i & ((1 << SUB_BITS) - 1);
        let low = ((1u64 << SUB_BITS) + mantissa) << shift;
        low as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
    }
    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = Self::index(ns).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
    }
    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.count += o.count;
    }
    /// The `q` quantile in microseconds (0 when empty).
    fn percentile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::value(i) / 1000.0;
            }
        }
        0.0
    }
}

/// The runs of one workload on one device.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Its short name.
    pub name: String,
    /// Which device (`nvmf`, `raw`).
    pub device: String,
    /// Each run.
    pub runs: Vec<Sample>,
    /// Medians over the runs.
    pub median: Summary,
    /// Spreads over the runs ((max - min) / median).
    pub spread: Summary,
}

/// Medians or spreads of the headline figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// MB/s.
    pub mb_s: f64,
    /// IOPS.
    pub iops: f64,
    /// p50 latency (µs).
    pub p50_us: f64,
    /// p99 latency (µs).
    pub p99_us: f64,
    /// p99.9 latency (µs).
    pub p999_us: f64,
    /// CPU per request (µs).
    pub cpu_us_per_op: f64,
}

impl Row {
    /// A row of `runs` of `workload` on `device`.
    pub fn new(workload: Workload, device: &str, runs: Vec<Sample>) -> Row {
        let of = |f: fn(&Sample) -> f64, g: fn(&[f64]) -> f64| g(&runs.iter().map(f).collect::<Vec<_>>());
        let summary = |g: fn(&[f64]) -> f64| Summary {
            mb_s: of(|s| s.mb_s, g),
            iops: of(|s| s.iops, g),
            p50_us: of(|s| s.p50_us, g),
            p99_us: of(|s| s.p99_us, g),
            p999_us: of(|s| s.p999_us, g),
            cpu_us_per_op: of(|s| s.cpu_us_per_op, g),
        };
        Row {
            name: workload.name(),
            workload,
            device: device.to_owned(),
            median: summary(median),
            spread: summary(spread),
            runs,
        }
    }
}

/// The rows as a text table: medians, the MB/s spread, and each nvmf row's ratio to the raw
/// row of the same workload.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<20} {:<5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8}\n",
        "workload", "dev", "MB/s", "IOPS", "p50 µs", "p99 µs", "p99.9 µs", "cpu µs", "spread", "vs raw"
    );
    for r in rows {
        let m = &r.median;
        let raw = rows.iter().find(|o| o.device == "raw" && o.workload == r.workload && r.device != "raw");
        let ratio = raw.map_or_else(String::new, |o| {
            if o.median.iops > 0.0 {
                format!("{:.2}x", m.iops / o.median.iops)
            } else {
                String::new()
            }
        });
        out += &format!(
            "{:<20} {:<5} {:>9.1} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>6.0}% {:>8}\n",
            r.name,
            r.device,
            m.mb_s,
            m.iops,
            m.p50_us,
            m.p99_us,
            m.p999_us,
            m.cpu_us_per_op,
            r.spread.mb_s * 100.0,
            ratio
        );
    }
    out
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The spread of `v`: (max - min) / median, as a fraction (0 for fewer than two values).
pub fn spread(v: &[f64]) -> f64 {
    let m = median(v);
    if v.len() < 2 || m == 0.0 {
        return 0.0;
    }
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;

    #[test]
    fn histogram_percentiles_are_within_one_percent() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.percentile(q);
            assert!((got - want).abs() / want < 0.01, "p{q}: {got} vs {want}");
        }
        for ns in [0u64, 1, 127, 128, 129, 1000, 123_456_789, u64::MAX >> 1] {
            let v = Histogram::value(Histogram::index(ns));
            assert!((v - ns as f64).abs() <= (ns as f64 / 128.0).max(0.5), "{ns} -> {v}");
        }
    }

    #[test]
    fn workloads_on_memory_read_back_their_stamps_and_misplaced_data_is_caught() {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8 << 20));
        prefill(dev.as_ref()).unwrap();
        let cfg = RunConfig { duration: Duration::from_millis(50), seed: 1, verify: true };
        for w in Workload::standard() {
            let w = Workload { depth: w.depth.min(4), ..w };
            let s = run(&dev, &w, &cfg).unwrap();
            assert!(s.ops > 0, "{}", w.name());
            assert!(s.p50_us <= s.p99_us && s.p99_us <= s.p999_us);
        }
        // A block holding another block's bytes fails the check.
        let mut other = vec![0u8; 4096];
        dev.read_at(&mut other, 4096).unwrap();
        dev.write_at(&other, 8192).unwrap();
        let w = Workload { pattern: Pattern::Seq, op: Op::Read, size: 1 << 20, depth: 1 };
        let e = run(&dev, &w, &cfg).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(Workload::standard()[0].name(), "seq-write-1M-qd1");
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((spread(&[90.0, 100.0, 110.0]) - 0.2).abs() < 1e-9);
    }
}
