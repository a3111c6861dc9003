//! Results and how perftest prints them (perftest 6.06 layout), plus a JSON line.

use serde::Serialize;
use std::time::Duration;

/// The 87-dash separator perftest prints.
pub const DASHES: &str = "---------------------------------------------------------------------------------------";

/// One bandwidth measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BwResult {
    /// Message size in bytes.
    pub size: usize,
    /// Messages counted.
    pub iters: u64,
    /// Seconds from the first post to the last completion.
    pub seconds: f64,
    /// Best rate seen, bytes per second (0 when not measured).
    pub peak_bytes_per_s: f64,
}

impl BwResult {
    /// A result from counts and times.
    pub fn new(size: usize, iters: u64, elapsed: Duration, peak_bytes_per_s: f64) -> Self {
        BwResult { size, iters, seconds: elapsed.as_secs_f64(), peak_bytes_per_s }
    }
    /// Average bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.size as f64 * self.iters as f64 / self.seconds
        } else {
            0.0
        }
    }
    /// Average Gbit/s.
    pub fn gbits(&self) -> f64 {
        self.bytes_per_s() * 8.0 / 1e9
    }
    /// Messages per second, in millions.
    pub fn mpps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.iters as f64 / self.seconds / 1e6
        } else {
            0.0
        }
    }
}

/// perftest's bandwidth column header.
/// Median of several runs and their spread, (max - min) / median; `v` must not be empty.
pub fn median_spread(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = v[v.len() / 2];
    let spread = if m > 0.0 { (v[v.len() - 1] - v[0]) / m } else { 0.0 };
    (m, spread)
}

pub fn bw_header(gbits: bool) -> String {
    let u = if gbits { "Gb/sec" } else { "MB/sec" };
    format!(" #bytes     #iterations    BW peak[{u}]    BW average[{u}]   MsgRate[Mpps]")
}

/// Bandwidth in perftest's unit: MB/s (2^20 bytes) or Gb/s (10^9 bits).
pub fn bw_unit(bytes_per_s: f64, gbits: bool) -> f64 {
    if gbits {
        bytes_per_s * 8.0 / 1e9
    } else {
        bytes_per_s / 1_048_576.0
    }
}

/// One perftest result line from figures already in the chosen unit.
pub fn bw_line_raw(size: usize, iters: u64, peak: f64, avg: f64, mpps: f64, gbits: bool) -> String {
    bw_line_fmt(size, iters, peak, avg, mpps, gbits && avg < 0.1)
}

/// A result line; `extended`: perftest's six-decimal layout for tiny Gb/s figures.
fn bw_line_fmt(size: usize, iters: u64, peak: f64, avg: f64, mpps: f64, extended: bool) -> String {
    if extended {
        // perftest switches to six decimals (and other spacing) for tiny Gb/s figures.
        format!(" {size:<7}    {iters}           {peak:<7.6}            {avg:<7.6}            {mpps:<7.6}")
    } else {
        format!(" {size:<7}    {iters:<10}       {peak:<7.2}            {avg:<7.2}\t\t   {mpps:<7.6}")
    }
}

/// One perftest result line.
pub fn bw_line(r: &BwResult, gbits: bool) -> String {
    bw_line_raw(r.size, r.iters, bw_unit(r.peak_bytes_per_s, gbits), bw_unit(r.bytes_per_s(), gbits), r.mpps(), gbits)
}

/// A bidirectional test's figures as perftest prints them (`-b`, print_full_bw_report): each
/// side's own peak, average and message rate, summed with the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Aggregate {
    /// Peak, MB/s (2^20 bytes), both sides' summed.
    pub peak_mb_per_s: f64,
    /// Average MB/s, both sides' summed.
    pub mb_per_s: f64,
    /// Average Gbit/s, both sides' summed.
    pub gbit_per_s: f64,
    /// Million messages per second, both sides' summed.
    pub mpps: f64,
}

impl Aggregate {
    /// This side's figures plus the peer's (none: this side's figures alone, as perftest's
    /// send_bw `-b -D`, whose own count already holds both directions).
    pub fn of(mine: &BwResult, peer: Option<&BwResult>) -> Aggregate {
        let both = |f: &dyn Fn(&BwResult) -> f64| f(mine) + peer.map_or(0.0, f);
        Aggregate {
            peak_mb_per_s: both(&|r| bw_unit(r.peak_bytes_per_s, false)),
            mb_per_s: both(&|r| bw_unit(r.bytes_per_s(), false)),
            gbit_per_s: both(&|r| r.gbits()),
            mpps: both(&|r| r.mpps()),
        }
    }
}

/// perftest's result line of a bidirectional test: this side's size and iteration count, the
/// sums of both sides' peak, average and message rate. The six-decimal layout follows this
/// side's own average, as perftest decides it before adding the peer's.
pub fn bidir_line(mine: &BwResult, peer: Option<&BwResult>, gbits: bool) -> String {
    let unit = |x: f64| bw_unit(x, gbits);
    let own_avg = unit(mine.bytes_per_s());
    let sum = |f: &dyn Fn(&BwResult) -> f64| f(mine) + peer.map_or(0.0, f);
    bw_line_fmt(
        mine.size,
        mine.iters,
        sum(&|r| unit(r.peak_bytes_per_s)),
        sum(&|r| unit(r.bytes_per_s())),
        sum(&|r| r.mpps()),
        gbits && own_avg < 0.1,
    )
}

/// A latency measurement, in microseconds, computed as perftest does.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatResult {
    /// Message size.
    pub size: usize,
    /// Iterations.
    pub iters: u64,
    /// Smallest sample.
    pub t_min: f64,
    /// perftest's t_max: the second largest sample.
    pub t_max: f64,
    /// Median of the samples without the two largest.
    pub t_typical: f64,
    /// Mean of the samples without the two largest.
    pub t_avg: f64,
    /// Standard deviation (perftest truncates each deviation to whole microseconds).
    pub t_stdev: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl LatResult {
    /// From per-iteration times: consecutive post-time differences (or measured round trips);
    /// `halve` for write/send latency (half a round trip).
    pub fn from_round_trips(size: usize, samples: &[Duration], halve: bool) -> LatResult {
        let div = if halve { 2.0 } else { 1.0 };
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6 / div).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let iters = samples.len() as u64 + 1;
        if v.is_empty() {
            return LatResult {
                size,
                iters,
                t_min: 0.0,
                t_max: 0.0,
                t_typical: 0.0,
                t_avg: 0.0,
                t_stdev: 0.0,
                p99: 0.0,
                p999: 0.0,
            };
        }
        // perftest drops the two largest samples for the typical, average and deviation.
        let m = v.len().saturating_sub(2).max(1);
        let kept = &v[..m];
        let avg = kept.iter().sum::<f64>() / m as f64;
        let typical = if m.is_multiple_of(2) { (kept[m / 2 - 1] + kept[m / 2]) / 2.0 } else { kept[m / 2] };
        let var = kept.iter().map(|x| ((x - avg) as i64 as f64).powi(2)).sum::<f64>() / m as f64;
        let idx = |q: f64| ((q * m as f64).ceil() as usize).min(v.len() - 1);
        LatResult {
            size,
            iters,
            t_min: v[0],
            t_max: v[m.min(v.len() - 1)],
            t_typical: typical,
            t_avg: avg,
            t_stdev: var.sqrt(),
            p99: v[idx(0.99)],
            p999: v[idx(0.999)],
        }
    }
}

/// perftest's latency column header (with its trailing space).
pub const LAT_HEADER: &str = " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ";

/// One perftest latency line.
pub fn lat_line(r: &LatResult) -> String {
    format!(
        " {:<7} {}          {:<7.2}        {:<7.2}      {:<7.2}  \t       {:<7.2}     \t{:<7.2}\t\t{:<7.2} \t\t{:<7.2}",
        r.size, r.iters, r.t_min, r.t_max, r.t_typical, r.t_avg, r.t_stdev, r.p99, r.p999
    )
}

/// Duration-mode latency header.
pub const LAT_DUR_HEADER: &str = " #bytes        #iterations       t_avg[usec]    tps average";

/// Duration-mode latency line.
pub fn lat_dur_line(size: usize, iters: u64, t_avg: f64) -> String {
    let tps = if t_avg > 0.0 { 1e6 / t_avg } else { 0.0 };
    format!(" {size:<7}       {iters:<7}          {t_avg:<7.2}        {tps:<7.2}")
}

/// The machine-readable line `--json` adds.
#[derive(Debug, Serialize)]
pub struct JsonLine<'a> {
    /// Test name.
    pub test: &'a str,
    /// "client", "server" or "loopback".
    pub role: &'a str,
    /// Transport: "iwarp" or "tcp".
    pub transport: &'a str,
    /// Message size.
    pub size: usize,
    /// Bandwidth figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bw: Option<BwJson>,
    /// Latency figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<LatResult>,
    /// CPU seconds this process used during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// How the payload moved (iWARP runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathJson>,
    /// Bidirectional runs (`-b`): the peer's figures and the sum perftest reports; `bw` stays
    /// this side's own direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bidirectional: Option<BidirJson>,
}

/// A bidirectional run's other direction and the aggregate.
#[derive(Debug, Serialize)]
pub struct BidirJson {
    /// The peer's own figures, as its report said (absent where perftest exchanges none:
    /// send_bw `-b -D`, whose own count holds both directions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<BwJson>,
    /// Both directions summed, as the result line prints them.
    pub aggregate: Aggregate,
}

impl BidirJson {
    /// From this side's result and the peer's.
    pub fn new(mine: &BwResult, peer: Option<&BwResult>) -> BidirJson {
        BidirJson { remote: peer.map(Into::into), aggregate: Aggregate::of(mine, peer) }
    }
}

/// How the payload moved: the data queue pairs' counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PathJson {
    /// FPDUs sent.
    pub tx_fpdus: u64,
    /// FPDUs received.
    pub rx_fpdus: u64,
    /// Percent of sent payload bytes taken straight from registered memory (no copy).
    pub tx_zero_copy_pct: f64,
    /// Percent of received payload bytes read straight into their destination (no copy).
    pub rx_direct_pct: f64,
    /// Payload bytes sent (DDP payload of every message, whatever its kind).
    pub tx_bytes: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
}

fn pct(part: u64, other: u64) -> f64 {
    if part + other == 0 {
        0.0
    } else {
        100.0 * part as f64 / (part + other) as f64
    }
}

impl From<&iwarp::QpStats> for PathJson {
    fn from(s: &iwarp::QpStats) -> Self {
        PathJson {
            tx_fpdus: s.tx_fpdus,
            rx_fpdus: s.rx_fpdus,
            tx_zero_copy_pct: pct(s.tx_zero_copy_bytes, s.tx_copied_bytes),
            rx_direct_pct: pct(s.rx_direct_bytes, s.rx_copied_bytes),
            tx_bytes: s.tx_zero_copy_bytes + s.tx_copied_bytes,
            rx_bytes: s.rx_direct_bytes + s.rx_copied_bytes,
        }
    }
}

/// Bandwidth figures for JSON.
#[derive(Debug, Serialize)]
pub struct BwJson {
    /// Messages.
    pub iters: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// Average Gbit/s.
    pub gbit_per_s: f64,
    /// Average MB/s (2^20 bytes, as perftest).
    pub mb_per_s: f64,
    /// Peak MB/s.
    pub peak_mb_per_s: f64,
    /// Million messages per second.
    pub mpps: f64,
}

impl From<&BwResult> for BwJson {
    fn from(r: &BwResult) -> Self {
        BwJson {
            iters: r.iters,
            seconds: r.seconds,
            gbit_per_s: r.gbits(),
            mb_per_s: bw_unit(r.bytes_per_s(), false),
            peak_mb_per_s: bw_unit(r.peak_bytes_per_s, false),
            mpps: r.mpps(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bw_line_matches_perftest_layout() {
        // ib_write_bw-s4096-n5: 6.19 / 3.22 MB/s, 0.000824 Mpps.
        assert_eq!(
            bw_line_raw(4096, 5, 6.19, 3.22, 0.000824, false),
            " 4096       5                6.19               3.22   \t\t   0.000824"
        );
        assert_eq!(
            bw_line_raw(4096, 5, 0.136759, 0.019531, 0.000596, true),
            " 4096       5           0.136759            0.019531            0.000596"
        );
        assert_eq!(bw_header(true), " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]");
    }

    #[test]
    fn bidirectional_lines_sum_both_sides_as_perftest() {
        // 4096 B x 100 in 0.01 s each way: 39.06 MB/s and 0.01 Mpps per side.
        let mine = BwResult { size: 4096, iters: 100, seconds: 0.01, peak_bytes_per_s: 50.0 * 1_048_576.0 };
        let peer = BwResult { size: 4096, iters: 100, seconds: 0.02, peak_bytes_per_s: 30.0 * 1_048_576.0 };
        // This side's size and count, the sums of peak, average and rate.
        assert_eq!(bidir_line(&mine, Some(&peer), false), bw_line_raw(4096, 100, 80.0, 58.59375, 0.015, false));
        assert_eq!(bidir_line(&mine, None, false), bw_line(&mine, false));
        let a = Aggregate::of(&mine, Some(&peer));
        assert!((a.mb_per_s - 58.59375).abs() < 1e-9 && (a.peak_mb_per_s - 80.0).abs() < 1e-9);
        assert!((a.gbit_per_s - (mine.gbits() + peer.gbits())).abs() < 1e-12);
        assert!((a.mpps - 0.015).abs() < 1e-12);
        // The six-decimal layout follows this side's own average (0.0328 Gb/s), not the sum.
        let slow = BwResult { size: 4096, iters: 100, seconds: 0.1, peak_bytes_per_s: 0.0 };
        let fast = BwResult { size: 4096, iters: 100_000, seconds: 0.1, peak_bytes_per_s: 0.0 };
        let (avg, mpps) = (slow.gbits() + fast.gbits(), slow.mpps() + fast.mpps());
        assert_eq!(bidir_line(&slow, Some(&fast), true), bw_line_fmt(4096, 100, 0.0, avg, mpps, true));
        assert_eq!(bidir_line(&fast, Some(&slow), true), bw_line_fmt(4096, 100_000, 0.0, avg, mpps, false));
    }

    #[test]
    fn lat_line_matches_perftest_layout() {
        let r = LatResult {
            size: 2,
            iters: 5,
            t_min: 2967.03,
            t_max: 4278.84,
            t_typical: 3508.49,
            t_avg: 3508.49,
            t_stdev: 541.0,
            p99: 4278.84,
            p999: 4278.84,
        };
        assert_eq!(lat_line(&r), " 2       5          2967.03        4278.84      3508.49  \t       3508.49     \t541.00 \t\t4278.84 \t\t4278.84");
    }

    #[test]
    fn latency_statistics_follow_perftest() {
        // Four samples (n = 5): the two largest are dropped for typical and average.
        let s: Vec<Duration> = [10.0, 20.0, 30.0, 40.0].iter().map(|u| Duration::from_secs_f64(u * 1e-6)).collect();
        let r = LatResult::from_round_trips(2, &s, false);
        assert_eq!(r.iters, 5);
        assert!((r.t_min - 10.0).abs() < 1e-6);
        assert!((r.t_typical - 15.0).abs() < 1e-6);
        assert!((r.t_avg - 15.0).abs() < 1e-6);
        // t_max and the percentiles are the third smallest, as in perftest's output for -n 5.
        assert!((r.t_max - 30.0).abs() < 1e-6);
        assert!((r.p99 - 30.0).abs() < 1e-6);
        let h = LatResult::from_round_trips(2, &s, true);
        assert!((h.t_min - 5.0).abs() < 1e-6);
    }
}
