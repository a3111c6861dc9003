//! Runs every example in `crates/iwarp/examples`: each example file is compiled into this
//! test as a module and its `main` called, so `cargo test` builds and runs them all (the
//! tokio ones with the `tokio` feature, as their `required-features` say).
#![allow(clippy::unwrap_used)]

macro_rules! example {
    ($(#[$cfg:meta])* $test:ident, $module:ident, $file:literal) => {
        $(#[$cfg])*
        #[path = $file]
        mod $module;

        $(#[$cfg])*
        #[test]
        fn $test() {
            if let Err(e) = $module::main() {
                panic!("example {}: {e}", stringify!($module));
            }
        }
    };
}

example!(hello_write_example_runs, hello_write, "../examples/hello_write.rs");
example!(request_response_example_runs, request_response, "../examples/request_response.rs");
example!(read_file_example_runs, read_file, "../examples/read_file.rs");
example!(atomic_counter_example_runs, atomic_counter, "../examples/atomic_counter.rs");
example!(shared_port_example_runs, shared_port, "../examples/shared_port.rs");

example!(
    #[cfg(feature = "tokio")]
    async_echo_example_runs,
    async_echo,
    "../examples/async_echo.rs"
);
example!(
    #[cfg(feature = "tokio")]
    async_write_example_runs,
    async_write,
    "../examples/async_write.rs"
);
