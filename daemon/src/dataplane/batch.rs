//! `BPF_MAP_LOOKUP_BATCH` for hash maps, which aya 0.14 does not wrap: a full scan of conntrack
//! costs one syscall per few thousand entries instead of two per entry (`get_next_key` and
//! `lookup`), so upkeep and `status` stay cheap with a million flows.
//!
//! The batch is read while programs keep changing the map; like any iteration of a live hash
//! map it is a consistent view of each bucket, not of the whole map at one instant.

use std::{
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd` (`include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per syscall.
const BATCH: u32 = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch read failed.
#[derive(Debug, thiserror::Error)]
#[error("BPF_MAP_LOOKUP_BATCH failed")]
pub struct BatchError(#[source] pub std::io::Error);

/// Calls `f` on every (key, value) of the hash map behind `fd`, whose keys and values are `K`
/// and `V`, a batch at a time (memory stays at one batch whatever the map's size).
pub fn for_each<K: Pod + Default, V: Pod + Default>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&K, &V),
) -> Result<(), BatchError> {
    let mut keys = vec![K::default(); BATCH as usize];
    let mut values = vec![V::default(); BATCH as usize];
    // The hash map's batch cursor is a bucket index (u32); the first call passes none.
    let mut cursor_in: u32 = 0;
    let mut cursor_out: u32 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw mut cursor_in) as u64
            },
            out_batch: (&raw mut cursor_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` of the size passed; `keys` and `values`
        // have room for `count` elements of the map's key and value sizes (`K` and `V` are the
        // map's Pod types); the cursors are u32 as the hash map's batch code reads and writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(keys.len());
        for (k, v) in keys[..n].iter().zip(&values[..n]) {
            f(k, v);
        }
        match err {
            None => {}
            // The end of the map (the last batch may still have returned entries).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(BatchError(e)),
        }
        cursor_in = cursor_out;
        first = false;
    }
}

/// `fd` of a map handle.
pub fn fd_of(map: &aya::maps::MapData) -> BorrowedFd<'_> {
    map.fd().as_fd()
}
