//! Stand-ins for the vendor libraries perftest's programs are linked against
//! (`libmlx5.so.1`, `libefa.so.1`). The real ones register their providers with the real
//! libibverbs through its private interface and would not load next to this library; these
//! export only what perftest imports, at the versions it names, and each says "no such
//! device" (NULL or `ENODEV`): perftest calls them only for Mellanox or EFA devices, and the
//! one device here is neither. `link` builds one shared library for each from the same
//! staticlib, exporting only its own functions.
// `#[no_mangle]` counts as unsafe code (exported names could clash); these functions have no
// `unsafe` block and read nothing through their arguments.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void};
use core::ptr::null_mut;

fn no_device_ptr<T>() -> *mut T {
    crate::ffi::set_errno(libc::ENODEV);
    null_mut()
}

fn no_device() -> c_int {
    crate::ffi::set_errno(libc::ENODEV);
    libc::ENODEV
}

/// `mlx5dv_create_qp` (MLX5_1.3): NULL, `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_create_qp(_ctx: *mut c_void, _attr: *mut c_void, _mlx5_attr: *mut c_void) -> *mut c_void {
    no_device_ptr()
}

/// `mlx5dv_open_device` (MLX5_1.7): NULL, `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_open_device(_device: *mut c_void, _attr: *mut c_void) -> *mut c_void {
    no_device_ptr()
}

/// `mlx5dv_devx_general_cmd` (MLX5_1.7): `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_devx_general_cmd(
    _ctx: *mut c_void,
    _in: *const c_void,
    _inlen: usize,
    _out: *mut c_void,
    _outlen: usize,
) -> c_int {
    no_device()
}

/// `mlx5dv_create_mkey` (MLX5_1.10): NULL, `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_create_mkey(_attr: *mut c_void) -> *mut c_void {
    no_device_ptr()
}

/// `mlx5dv_destroy_mkey` (MLX5_1.10): `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_destroy_mkey(_mkey: *mut c_void) -> c_int {
    no_device()
}

/// `mlx5dv_qp_ex_from_ibv_qp_ex` (MLX5_1.10): NULL, `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_qp_ex_from_ibv_qp_ex(_qp: *mut c_void) -> *mut c_void {
    no_device_ptr()
}

/// `mlx5dv_crypto_login` (MLX5_1.21): `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_crypto_login(_ctx: *mut c_void, _attr: *mut c_void) -> c_int {
    no_device()
}

/// `mlx5dv_dek_create` (MLX5_1.21): NULL, `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_dek_create(_ctx: *mut c_void, _attr: *mut c_void) -> *mut c_void {
    no_device_ptr()
}

/// `mlx5dv_dek_destroy` (MLX5_1.21): `ENODEV`.
#[no_mangle]
pub extern "C" fn mlx5dv_dek_destroy(_dek: *mut c_void) -> c_int {
    no_device()
}

/// `efadv_query_device` (EFA_1.1): `ENODEV`.
#[no_mangle]
pub extern "C" fn efadv_query_device(_ctx: *mut c_void, _attr: *mut c_void, _inlen: u32) -> c_int {
    no_device()
}

/// `efadv_create_qp_ex` (EFA_1.1): NULL, `ENODEV`.
#[no_mangle]
pub extern "C" fn efadv_create_qp_ex(
    _ctx: *mut c_void,
    _attr: *mut c_void,
    _efa_attr: *mut c_void,
    _inlen: u32,
) -> *mut c_void {
    no_device_ptr()
}
