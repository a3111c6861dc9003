//! Command-line options for dead-peer detection (TCP keepalive and `TCP_USER_TIMEOUT`),
//! shared by `iwping` and `iwperf`.

use clap::Args;
use iwarp::{Keepalive, Liveness};
use std::time::Duration;

/// Dead-peer detection (all sides). Unset options keep the stack's defaults (keepalive after
/// 20 s, every 5 s, 6 probes; user timeout 40 s: a vanished peer is noticed within 40 s).
#[derive(Debug, Clone, Default, Args)]
pub struct LivenessArgs {
    /// Seconds of silence before TCP keepalive probes start (0: keepalive off).
    #[arg(long = "keepalive", value_name = "SECS")]
    pub keepalive: Option<u64>,
    /// Seconds between keepalive probes.
    #[arg(long = "keepalive-interval", value_name = "SECS")]
    pub keepalive_interval: Option<u64>,
    /// Unanswered keepalive probes before the connection is dropped (used only without a user
    /// timeout).
    #[arg(long = "keepalive-count", value_name = "N")]
    pub keepalive_count: Option<u32>,
    /// TCP_USER_TIMEOUT in milliseconds: how long sent data or a probe may stay unacknowledged
    /// (0: the host's retransmission limit, about 15 minutes).
    #[arg(long = "user-timeout", value_name = "MS")]
    pub user_timeout: Option<u64>,
}

impl LivenessArgs {
    /// The settings for the stack.
    pub fn liveness(&self) -> Liveness {
        let mut l = Liveness::default();
        let mut ka = l.keepalive.unwrap_or(Keepalive {
            idle: Duration::from_secs(20),
            interval: Duration::from_secs(5),
            count: 6,
        });
        if let Some(s) = self.keepalive_interval {
            ka.interval = Duration::from_secs(s.max(1));
        }
        if let Some(n) = self.keepalive_count {
            ka.count = n.max(1);
        }
        l.keepalive = match self.keepalive {
            Some(0) => None,
            Some(s) => Some(Keepalive { idle: Duration::from_secs(s), ..ka }),
            None => Some(ka),
        };
        if let Some(ms) = self.user_timeout {
            l.user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_stacks_defaults() {
        assert_eq!(LivenessArgs::default().liveness(), Liveness::default());
    }

    #[test]
    fn zero_turns_each_part_off() {
        let a = LivenessArgs { keepalive: Some(0), user_timeout: Some(0), ..Default::default() };
        assert_eq!(a.liveness(), Liveness::OFF);
    }

    #[test]
    fn flags_set_each_field() {
        let a = LivenessArgs {
            keepalive: Some(2),
            keepalive_interval: Some(1),
            keepalive_count: Some(3),
            user_timeout: Some(4500),
        };
        let l = a.liveness();
        assert_eq!(
            l.keepalive,
            Some(Keepalive { idle: Duration::from_secs(2), interval: Duration::from_secs(1), count: 3 })
        );
        assert_eq!(l.user_timeout, Some(Duration::from_millis(4500)));
    }
}
