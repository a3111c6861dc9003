//! Shared pieces of the iWARP command-line tools (`iwping`, `iwperf`, `iwdump`).
#![forbid(unsafe_code)]

pub mod liveness_args;
pub mod mpa_args;
pub mod shared_port;

/// Logs the stack's `tracing` output to standard error when `RUST_LOG` is set (for example
/// `RUST_LOG=iwarp=debug`: each connection's span with its queue pair number and peer, on
/// connect, establishment, teardown and errors). Without `RUST_LOG` the tools print only their
/// own output.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}
