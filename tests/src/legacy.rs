//! Pinned maps of an older layout, made by hand, for the migration tests: what a node running
//! a veer of layout 1 leaves under its pin directory (`VEER_CONNTRACK`, `VEER_REVNAT`, the
//! counters of their old shape, `VEER_LAYOUT` = 1).
//!
//! Maps are created with `BPF_MAP_CREATE` and pinned with `BPF_OBJ_PIN` directly (aya creates
//! only a few map kinds standalone), then filled through aya's typed handles.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

/// `BPF_MAP_CREATE`, `BPF_OBJ_PIN` in `enum bpf_cmd`.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;

/// `BPF_MAP_TYPE_*` used by layout 1.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// Per-CPU array.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// LRU hash.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// The `BPF_MAP_CREATE` part of `union bpf_attr` (fields up to `map_name`; the kernel takes
/// a shorter attribute as long as it knows every field).
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `BPF_OBJ_PIN` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct PinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix of the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Creates a map named `name` and pins it at `path`.
pub fn create_pinned(
    path: &Path,
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<()> {
    let mut attr = CreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        ..CreateAttr::default()
    };
    let n = name.len().min(15);
    attr.map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the syscall returned a fresh descriptor that this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL"))?;
    let mut pin = PinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut pin).map(drop)
}
