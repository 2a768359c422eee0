//! Types and pure logic shared by veer's kernel programs and its daemon.
//!
//! Every map key and value is `#[repr(C)]`, made of integers and byte arrays only, with explicit
//! padding and a compile-time size assert, so both sides agree on every byte. The hash and
//! selection math lives here too, so host unit tests cover exactly the code the kernel runs.
//! Nothing here allocates: the crate is `no_std` and builds for the BPF target.
#![no_std]

pub mod addr;
pub mod backend;
pub mod counters;
pub mod flow;
pub mod histogram;
pub mod maps;
pub mod nexthop;
pub mod pin;
pub mod select;
pub mod service;
pub mod signals;
pub mod sock;
pub mod specs;

/// Implements `aya::Pod` for map keys and values on the user-space side.
macro_rules! pod {
    ($($t:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, made of integers and byte arrays only, with
            // explicit padding fields, so every bit pattern is valid and there are no
            // uninitialised bytes (see the size asserts next to each definition).
            unsafe impl aya::Pod for $t {}
        )+
    };
}
pub(crate) use pod;

/// Address family of an IPv4 key (`AF_INET`).
pub const FAMILY_V4: u8 = 2;
/// Address family of an IPv6 key (`AF_INET6`).
pub const FAMILY_V6: u8 = 10;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
