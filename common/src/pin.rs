//! Source-prefix pins: "this client prefix always gets that group".

use crate::pod;

/// Data part of a pin's LPM-trie key.
///
/// The service id comes first and is always matched whole, so a pin's prefix length is
/// `PinKey::SERVICE_BITS + client prefix length`; the client address follows in network byte
/// order, as the LPM trie matches bits from the first byte on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinKey {
    /// Service id. Big-endian, so that its 32 bits are the first 32 bits the trie matches.
    pub service_id_be: u32,
    /// Client address. Network byte order; IPv4 uses word 0.
    pub addr: [u32; 4],
}
const _: () = assert!(size_of::<PinKey>() == 20);

impl PinKey {
    /// Bits of the key taken by the service id.
    pub const SERVICE_BITS: u32 = 32;
}

pod!(PinKey);
