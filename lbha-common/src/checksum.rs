//! RFC 1071 Internet checksum, in pieces the verifier can follow: the caller
//! feeds 32-bit words from a bounded loop and folds at the end.

/// Adds one big-endian 32-bit word (as loaded from the wire) to a running
/// one's-complement sum kept in 64 bits so it can never overflow for any
/// packet size we accept.
#[inline(always)]
pub fn add_word(sum: u64, word: [u8; 4]) -> u64 {
    sum + u64::from(u16::from_be_bytes([word[0], word[1]]))
        + u64::from(u16::from_be_bytes([word[2], word[3]]))
}

/// Folds the running sum to 16 bits and complements it. A packet whose stored
/// checksum is included in the sum is valid exactly when this returns 0.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    // Four folds take any u64 down to 16 bits; a fixed count keeps the BPF
    // code loop-free.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Sum of the IPv4 pseudo-header VRRPv3 (RFC 5798 section 5.2.8) covers.
#[inline(always)]
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u64 {
    let len = length.to_be_bytes();
    add_word(
        add_word(add_word(0, src), dst),
        [0, protocol, len[0], len[1]],
    )
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) VRRPv3 over IPv6
/// covers (RFC 5798 section 5.2.8): source, destination, the upper-layer
/// length as 32 bits, three zero bytes and the next header.
#[inline(always)]
pub fn pseudo_header_sum_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, length: u32) -> u64 {
    let mut sum = 0;
    for addr in [src, dst] {
        sum = add_word(sum, [addr[0], addr[1], addr[2], addr[3]]);
        sum = add_word(sum, [addr[4], addr[5], addr[6], addr[7]]);
        sum = add_word(sum, [addr[8], addr[9], addr[10], addr[11]]);
        sum = add_word(sum, [addr[12], addr[13], addr[14], addr[15]]);
    }
    add_word(add_word(sum, length.to_be_bytes()), [0, 0, 0, next_header])
}

/// Checksum of a byte slice (host side: building adverts, tests). Odd tails
/// are padded with a zero byte as RFC 1071 says.
pub fn checksum(initial: u64, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The example from RFC 1071 section 3: sum is 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(0, &data), !0xddf2);
    }

    #[test]
    fn word_and_slice_agree() {
        let data: [u8; 12] = [1, 2, 3, 4, 0xff, 0xfe, 0xfd, 0xfc, 9, 8, 7, 6];
        let mut sum = 0;
        for w in data.chunks_exact(4) {
            sum = add_word(sum, [w[0], w[1], w[2], w[3]]);
        }
        assert_eq!(fold(sum), checksum(0, &data));
    }

    #[test]
    fn ipv6_pseudo_header_is_the_rfc8200_layout() {
        // The sum of the pseudo-header written out as bytes, as RFC 8200
        // 8.1 draws it.
        let src = [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55,
        ];
        let dst = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&24u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 112]);
        assert_eq!(
            fold(pseudo_header_sum_v6(&src, &dst, 112, 24)),
            checksum(0, &bytes)
        );
    }

    #[test]
    fn including_the_checksum_folds_to_zero() {
        let mut data = [
            0x45u8, 0, 0, 0x28, 0x12, 0x34, 0, 0, 0xff, 112, 0, 0, 10, 0, 0, 1,
        ];
        let c = checksum(0, &data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(0, &data), 0);
    }
}
