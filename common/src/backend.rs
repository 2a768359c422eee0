//! Backends.

use crate::pod;

/// Where a backend lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// Address. Network byte order; IPv4 uses word 0, the rest zero.
    pub addr: [u32; 4],
    /// Port. Network byte order.
    pub port: u16,
    /// Address family (`FAMILY_V4`, `FAMILY_V6`).
    pub family: u8,
    /// Zero.
    pub _pad: u8,
}
const _: () = assert!(size_of::<BackendValue>() == 20);

pod!(BackendValue);
