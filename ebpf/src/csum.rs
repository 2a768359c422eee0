//! Incremental Internet checksum updates (RFC 1624) for what the programs rewrite themselves: the
//! XDP rewrite, and the IPv4 header checksum on TC (always complete). TC's L4 checksums go
//! through the kernel's `bpf_l4_csum_replace`, which knows `CHECKSUM_PARTIAL` skbs; `diff_addr`
//! gives it an address change in one call.
//!
//! The one's-complement sum is byte-order independent as long as old and new words are read from
//! packet memory the same way, so values are used exactly as loaded (no byte swapping).

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum as u16
}

/// Adds the two 16-bit halves of `w` to `sum`.
#[inline(always)]
fn add32(sum: u32, w: u32) -> u32 {
    sum + (w & 0xFFFF) + (w >> 16)
}

/// Returns `csum` updated for a 16-bit word changing from `old` to `new` (HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub(crate) fn replace16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// Returns `csum` updated for an address changing from `old` to `new` (IPv4 uses word 0 only;
/// the other words are zero on both sides and cancel out).
#[inline(always)]
pub(crate) fn replace_addr(csum: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut sum = u32::from(!csum);
    sum = add32(sum, !old[0]);
    sum = add32(sum, !old[1]);
    sum = add32(sum, !old[2]);
    sum = add32(sum, !old[3]);
    sum = add32(sum, new[0]);
    sum = add32(sum, new[1]);
    sum = add32(sum, new[2]);
    sum = add32(sum, new[3]);
    !fold(sum)
}

/// The one's-complement difference of an address changing from `old` to `new` (the sum of the
/// complemented old words and the new words, folded to 32 bits): what the kernel's checksum
/// helpers take as a precomputed change (`bpf_l4_csum_replace` with size 0, like
/// `bpf_csum_diff`'s result).
#[inline(always)]
pub(crate) fn diff_addr(old: &[u32; 4], new: &[u32; 4]) -> u32 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < 4 {
        sum += u64::from(!old[i]) + u64::from(new[i]);
        i += 1;
    }
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum as u32
}
