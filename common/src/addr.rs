//! Addresses in the key layout: four 32-bit words in network byte order, IPv4 in word 0 with
//! words 1..=3 zero, and the family beside them. The one place both sides convert.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{FAMILY_V4, FAMILY_V6};

/// Converts an address to the key layout: network byte order, IPv4 in word 0.
pub const fn addr_words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            [
                u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
                u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
                u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
                u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
            ]
        }
    }
}

/// Converts key-layout words back to an address of `family` (`FAMILY_V4` or else IPv6).
pub const fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from_octets(words[0].to_ne_bytes()))
    } else {
        let (a, b, c, d) = (
            words[0].to_ne_bytes(),
            words[1].to_ne_bytes(),
            words[2].to_ne_bytes(),
            words[3].to_ne_bytes(),
        );
        IpAddr::V6(Ipv6Addr::from_octets([
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]))
    }
}

/// The key-layout family of an address.
pub const fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_key_words() {
        for a in [
            "192.0.2.10",
            "2001:db8::10",
            "0.0.0.0",
            "::1",
            "2001:db8:b::fe",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(words_addr(addr_words(ip), family_of(ip)), ip, "{a}");
        }
        // Word 0 holds the address bytes in wire order; IPv4 leaves the rest zero.
        let w = addr_words("192.0.2.10".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [192, 0, 2, 10]);
        assert_eq!(w[1..], [0, 0, 0]);
        let w = addr_words("2001:db8::1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 1]);
    }
}
