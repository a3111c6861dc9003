//! A cheap clock for timing code paths per iteration (latency benchmarks).
//!
//! `Instant::now()` is a vDSO call of about 25 ns on most hosts, but where the kernel's clock
//! source cannot be read from user space (an emulated HPET in a virtual machine) it becomes a
//! system call and a device access of about a microsecond: more than what a latency benchmark
//! measures between two stamps. [`TickClock`] reads the CPU's time-stamp counter instead on
//! x86_64 (as perftest does with `get_cycles()`) and converts ticks to time with a rate
//! measured against `Instant` over the clock's own lifetime, so that no CPU frequency has to
//! be known. Elsewhere it is `Instant` itself.

use std::time::{Duration, Instant};

/// A timestamp of a [`TickClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

/// Converts differences of [`Tick`]s to durations; from [`TickClock::rate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRate {
    nanos_per_tick: f64,
}

impl TickRate {
    /// The time from `a` to `b` (zero if `b` is earlier).
    pub fn between(&self, a: Tick, b: Tick) -> Duration {
        Duration::from_nanos((b.0.saturating_sub(a.0) as f64 * self.nanos_per_tick) as u64)
    }

    /// Nanoseconds per tick.
    pub fn nanos_per_tick(&self) -> f64 {
        self.nanos_per_tick
    }
}

/// A clock whose [`now`](TickClock::now) costs a few nanoseconds wherever the CPU has a
/// time-stamp counter.
#[derive(Debug, Clone, Copy)]
pub struct TickClock {
    origin: Instant,
    origin_tick: u64,
}

/// Shortest interval a rate is measured over: both clocks are read once at each end, and a
/// slow `Instant::now()` (about 1 µs) must stay a small error.
const MIN_CALIBRATION: Duration = Duration::from_millis(20);

impl TickClock {
    /// Starts the clock (and the interval its rate is measured over).
    pub fn new() -> Self {
        let origin = Instant::now();
        TickClock { origin, origin_tick: raw_ticks(origin) }
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Tick {
        Tick(raw_ticks(self.origin))
    }

    /// The tick rate measured from [`new`](TickClock::new) until now (waiting until at least
    /// 20 ms have passed, for precision). Call it after the stamps are taken.
    pub fn rate(&self) -> TickRate {
        let left = MIN_CALIBRATION.saturating_sub(self.origin.elapsed());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
        let end = Instant::now();
        let ticks = raw_ticks(self.origin).saturating_sub(self.origin_tick).max(1);
        let nanos = end.duration_since(self.origin).as_nanos() as f64;
        TickRate { nanos_per_tick: nanos / ticks as f64 }
    }
}

impl Default for TickClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The time-stamp counter.
#[cfg(target_arch = "x86_64")]
#[inline]
fn raw_ticks(_origin: Instant) -> u64 {
    crate::sys::cycles()
}

/// Nanoseconds since `origin` where there is no time-stamp counter to read.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn raw_ticks(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_measure_a_sleep() {
        let c = TickClock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(30));
        let b = c.now();
        let r = c.rate();
        let d = r.between(a, b);
        assert!(d >= Duration::from_millis(29), "{d:?}");
        assert!(d < Duration::from_millis(500), "{d:?}");
        assert!(b > a);
        assert_eq!(r.between(b, a), Duration::ZERO);
    }
}
