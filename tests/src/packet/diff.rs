//! [`diff`] and [`assert_frames_eq`]: two frames compared field by field.

use std::fmt;

use super::{
    DecodeError, Decoded, Ipv4Header, Ipv6Header, Network, TcpHeader, Transport, UdpHeader, decode,
    tcp_flags,
};

/// Most byte lines one section of a [`diff`] prints before summarising the rest.
const MAX_BYTE_LINES: usize = 16;

struct Mac([u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

fn vlan_text(tci: Option<u16>) -> String {
    match tci {
        None => "none".to_owned(),
        Some(tci) if tci & 0xf000 == 0 => tci.to_string(),
        Some(tci) => format!("{} (tci {tci:#06x})", tci & 0x0fff),
    }
}

fn bytes_text(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if bytes.is_empty() {
        return "none".to_owned();
    }
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    text
}

fn flags_text(value: u8, names: &[(u8, &str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        format!("{value:#04x}")
    } else {
        format!("{value:#04x} ({})", set.join("|"))
    }
}

fn tcp_flags_text(flags: u8) -> String {
    use tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
    flags_text(
        flags,
        &[
            (FIN, "FIN"),
            (SYN, "SYN"),
            (RST, "RST"),
            (PSH, "PSH"),
            (ACK, "ACK"),
            (URG, "URG"),
            (ECE, "ECE"),
            (CWR, "CWR"),
        ],
    )
}

fn ipv4_flags_text(flags: u8) -> String {
    flags_text(flags, &[(0b100, "RES"), (0b010, "DF"), (0b001, "MF")])
}

/// Pushes `name: expected -> actual` when the two differ.
fn field<T: PartialEq + fmt::Display + ?Sized>(
    out: &mut Vec<String>,
    name: &str,
    expected: &T,
    actual: &T,
) {
    if expected != actual {
        out.push(format!("{name}: {expected} -> {actual}"));
    }
}

fn hex16(v: u16) -> String {
    format!("{v:#06x}")
}

fn hex8(v: u8) -> String {
    format!("{v:#04x}")
}

fn diff_ipv4(e: &Ipv4Header, a: &Ipv4Header, out: &mut Vec<String>) {
    field(out, "ipv4.version", &e.version, &a.version);
    field(out, "ipv4.ihl", &e.ihl, &a.ihl);
    field(out, "ipv4.tos", &hex8(e.tos), &hex8(a.tos));
    field(out, "ipv4.total_len", &e.total_len, &a.total_len);
    field(out, "ipv4.id", &hex16(e.id), &hex16(a.id));
    field(
        out,
        "ipv4.flags",
        &ipv4_flags_text(e.flags),
        &ipv4_flags_text(a.flags),
    );
    field(out, "ipv4.frag_offset", &e.frag_offset, &a.frag_offset);
    field(out, "ipv4.ttl", &e.ttl, &a.ttl);
    field(out, "ipv4.proto", &e.proto, &a.proto);
    field(out, "ipv4.checksum", &hex16(e.checksum), &hex16(a.checksum));
    field(out, "ipv4.src", &e.src, &a.src);
    field(out, "ipv4.dst", &e.dst, &a.dst);
    field(
        out,
        "ipv4.options",
        &bytes_text(&e.options),
        &bytes_text(&a.options),
    );
}

fn diff_ipv6(e: &Ipv6Header, a: &Ipv6Header, out: &mut Vec<String>) {
    field(out, "ipv6.version", &e.version, &a.version);
    field(
        out,
        "ipv6.traffic_class",
        &hex8(e.traffic_class),
        &hex8(a.traffic_class),
    );
    field(
        out,
        "ipv6.flow_label",
        &format!("{:#07x}", e.flow_label),
        &format!("{:#07x}", a.flow_label),
    );
    field(out, "ipv6.payload_len", &e.payload_len, &a.payload_len);
    field(out, "ipv6.next_header", &e.next_header, &a.next_header);
    field(out, "ipv6.hop_limit", &e.hop_limit, &a.hop_limit);
    field(out, "ipv6.src", &e.src, &a.src);
    field(out, "ipv6.dst", &e.dst, &a.dst);
}

fn diff_tcp(e: &TcpHeader, a: &TcpHeader, out: &mut Vec<String>) {
    field(out, "tcp.src_port", &e.src_port, &a.src_port);
    field(out, "tcp.dst_port", &e.dst_port, &a.dst_port);
    field(out, "tcp.seq", &e.seq, &a.seq);
    field(out, "tcp.ack", &e.ack, &a.ack);
    field(out, "tcp.data_offset", &e.data_offset, &a.data_offset);
    field(out, "tcp.reserved", &hex8(e.reserved), &hex8(a.reserved));
    field(
        out,
        "tcp.flags",
        &tcp_flags_text(e.flags),
        &tcp_flags_text(a.flags),
    );
    field(out, "tcp.window", &e.window, &a.window);
    field(out, "tcp.checksum", &hex16(e.checksum), &hex16(a.checksum));
    field(out, "tcp.urgent", &e.urgent, &a.urgent);
    field(
        out,
        "tcp.options",
        &bytes_text(&e.options),
        &bytes_text(&a.options),
    );
}

fn diff_udp(e: &UdpHeader, a: &UdpHeader, out: &mut Vec<String>) {
    field(out, "udp.src_port", &e.src_port, &a.src_port);
    field(out, "udp.dst_port", &e.dst_port, &a.dst_port);
    field(out, "udp.length", &e.length, &a.length);
    field(out, "udp.checksum", &hex16(e.checksum), &hex16(a.checksum));
}

pub(super) fn network_name(n: &Network) -> &'static str {
    match n {
        Network::Ipv4(_) => "ipv4",
        Network::Ipv6(_) => "ipv6",
        Network::Undecoded => "undecoded",
    }
}

pub(super) fn transport_name(t: &Transport) -> &'static str {
    match t {
        Transport::Tcp(_) => "tcp",
        Transport::Udp(_) => "udp",
        Transport::Undecoded => "undecoded",
    }
}

fn byte_text(b: Option<&u8>) -> String {
    b.map_or_else(|| "(absent)".to_owned(), |b| format!("{b:#04x}"))
}

/// Byte lines comparing `expected[e_off..]` with `actual[a_off..]`, capped at
/// [`MAX_BYTE_LINES`]. Offsets are frame offsets; when the two differ both are shown.
fn tail_lines(expected: &[u8], e_off: usize, actual: &[u8], a_off: usize, out: &mut Vec<String>) {
    let e_tail = expected.get(e_off..).unwrap_or_default();
    let a_tail = actual.get(a_off..).unwrap_or_default();
    let mut differing = 0usize;
    for i in 0..e_tail.len().max(a_tail.len()) {
        let (e, a) = (e_tail.get(i), a_tail.get(i));
        if e == a {
            continue;
        }
        differing += 1;
        if differing > MAX_BYTE_LINES {
            continue;
        }
        let at = if e_off == a_off {
            format!("byte {}", e_off + i)
        } else {
            format!("byte {} (actual {})", e_off + i, a_off + i)
        };
        out.push(format!("{at}: {} -> {}", byte_text(e), byte_text(a)));
    }
    if differing > MAX_BYTE_LINES {
        out.push(format!(
            "... {} more differing bytes",
            differing - MAX_BYTE_LINES
        ));
    }
}

fn stopped_text(s: Option<&DecodeError>) -> String {
    s.map_or_else(|| "complete".to_owned(), ToString::to_string)
}

fn diff_decoded(e: &Decoded, a: &Decoded, expected: &[u8], actual: &[u8], out: &mut Vec<String>) {
    field(
        out,
        "eth.dst",
        &Mac(e.eth.dst).to_string(),
        &Mac(a.eth.dst).to_string(),
    );
    field(
        out,
        "eth.src",
        &Mac(e.eth.src).to_string(),
        &Mac(a.eth.src).to_string(),
    );
    field(
        out,
        "eth.vlan",
        &vlan_text(e.eth.vlan),
        &vlan_text(a.eth.vlan),
    );
    field(
        out,
        "eth.ethertype",
        &hex16(e.eth.ethertype),
        &hex16(a.eth.ethertype),
    );
    field(
        out,
        "decode",
        &stopped_text(e.stopped.as_ref()),
        &stopped_text(a.stopped.as_ref()),
    );

    match (&e.network, &a.network) {
        (Network::Ipv4(eh), Network::Ipv4(ah)) => diff_ipv4(eh, ah, out),
        (Network::Ipv6(eh), Network::Ipv6(ah)) => diff_ipv6(eh, ah, out),
        (Network::Undecoded, Network::Undecoded) => {}
        (en, an) => {
            field(out, "network", &network_name(en), &network_name(an));
            tail_lines(expected, e.l3_offset(), actual, a.l3_offset(), out);
            return;
        }
    }
    match (&e.transport, &a.transport) {
        (Transport::Tcp(eh), Transport::Tcp(ah)) => diff_tcp(eh, ah, out),
        (Transport::Udp(eh), Transport::Udp(ah)) => diff_udp(eh, ah, out),
        (Transport::Undecoded, Transport::Undecoded) => {}
        (et, at) => {
            field(out, "transport", &transport_name(et), &transport_name(at));
            let e_off = e.l4_offset().unwrap_or_else(|| e.l3_offset());
            let a_off = a.l4_offset().unwrap_or_else(|| a.l3_offset());
            tail_lines(expected, e_off, actual, a_off, out);
            return;
        }
    }
    field(out, "payload.len", &e.payload.len(), &a.payload.len());
    field(out, "trailer.len", &e.trailer.len(), &a.trailer.len());
    tail_lines(
        expected,
        e.payload_offset(),
        actual,
        a.payload_offset(),
        out,
    );
}

/// Compares two frames field by field and returns one line per difference, in
/// `name: expected -> actual` form: `length: 74 -> 70`, `eth.vlan: none -> 100`,
/// `ipv4.dst: 192.0.2.10 -> 198.51.100.11`, `tcp.checksum: 0x1a2b -> 0x3c4d`.
///
/// Header fields are compared by name, so a VLAN tag added in front does not make every later
/// byte differ. Where the two frames stop having the same layers (IPv4 vs IPv6, TCP vs
/// truncated) and for the bytes after the headers, lines fall back to frame offsets
/// (`byte 54: 0x00 -> 0x01`, `(absent)` past the end), at most 16 per section plus a
/// `... N more differing bytes` line. An empty result means the frames are identical.
pub fn diff(expected: &[u8], actual: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if expected == actual {
        return out;
    }
    field(&mut out, "length", &expected.len(), &actual.len());
    let header_lines = out.len();
    match (decode(expected), decode(actual)) {
        (Ok(e), Ok(a)) => diff_decoded(&e, &a, expected, actual, &mut out),
        _ => tail_lines(expected, 0, actual, 0, &mut out),
    }
    if out.len() == header_lines {
        // Decoding is lossless, so this is unreachable in practice; never report "identical"
        // for frames that differ.
        tail_lines(expected, 0, actual, 0, &mut out);
    }
    out
}

/// Panics, naming the case `name` and listing the [`diff`] lines, unless the frames are
/// byte-for-byte identical.
#[track_caller]
pub fn assert_frames_eq(name: &str, expected: &[u8], actual: &[u8]) {
    let lines = diff(expected, actual);
    assert!(
        lines.is_empty(),
        "{name}: output frame differs from the expected one (expected -> actual):\n  {}",
        lines.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::fixtures::*;
    use crate::packet::mutate::put16;
    use crate::packet::*;

    #[test]
    fn diff_of_identical_frames_is_empty() {
        for (_, frame) in sample_frames() {
            assert_eq!(diff(&frame, &frame.clone()), Vec::<String>::new());
            assert_frames_eq("same", &frame, &frame);
        }
    }

    #[test]
    fn diff_reports_dnat_fields() {
        let request = client_syn().build();
        let dnat = PacketBuilder::tcp(sock("203.0.113.7:40000"), sock("198.51.100.11:8080"))
            .seq(1)
            .build();
        let out = decode(&dnat).unwrap();
        assert_eq!(
            diff(&request, &dnat),
            [
                format!(
                    "ipv4.checksum: 0x7cbe -> {:#06x}",
                    out.ipv4().unwrap().checksum
                ),
                "ipv4.dst: 192.0.2.10 -> 198.51.100.11".to_owned(),
                "tcp.dst_port: 80 -> 8080".to_owned(),
                format!(
                    "tcp.checksum: 0x1a4e -> {:#06x}",
                    out.tcp().unwrap().checksum
                ),
            ]
        );
    }

    #[test]
    fn diff_reports_exactly_the_changed_field() {
        let syn = client_syn().build();
        let mut poked = syn.clone();
        put16(&mut poked, 14 + 20 + 16, 0x3c4d);
        assert_eq!(diff(&syn, &poked), ["tcp.checksum: 0x1a4e -> 0x3c4d"]);

        let frame = client_syn().payload(b"hello").build();

        let mut poked = frame.clone();
        poked[14 + 20 + 20 + 1] = b'a';
        assert_eq!(diff(&frame, &poked), ["byte 55: 0x65 -> 0x61"]);

        let tagged = client_syn().payload(b"hello").vlan(100).build();
        assert_eq!(
            diff(&frame, &tagged),
            ["length: 59 -> 63", "eth.vlan: none -> 100"]
        );

        let flags = client_syn()
            .payload(b"hello")
            .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
            .build();
        let lines = diff(&frame, &flags);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "tcp.flags: 0x02 (SYN) -> 0x12 (SYN|ACK)");
        assert!(lines[1].starts_with("tcp.checksum: 0x"), "{lines:?}");

        let mac = client_syn()
            .payload(b"hello")
            .eth(DEFAULT_SRC_MAC, [0x02, 0, 0, 0, 0, 0x03])
            .build();
        assert_eq!(
            diff(&frame, &mac),
            ["eth.dst: 02:00:00:00:00:02 -> 02:00:00:00:00:03"]
        );
    }

    #[test]
    fn diff_falls_back_to_bytes_and_caps_them() {
        let frame = client_syn().build();
        let lines = diff(&frame, &frame[..40]);
        assert_eq!(lines[0], "length: 54 -> 40");
        assert!(
            lines.contains(&"transport: tcp -> undecoded".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"byte 53: 0x00 -> (absent)".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("decode: complete -> tcp at offset 34"))
        );

        let a = ethernet_only(0x1234, &[0; 100]);
        let b = ethernet_only(0x1234, &[1; 100]);
        let lines = diff(&a, &b);
        assert_eq!(lines.len(), MAX_BYTE_LINES + 1, "{lines:?}");
        assert_eq!(lines[0], "byte 14: 0x00 -> 0x01");
        assert_eq!(lines[MAX_BYTE_LINES], "... 84 more differing bytes");

        // Undecodable frames (shorter than Ethernet) still diff byte by byte.
        assert_eq!(
            diff(&[1, 2, 3], &[1, 9]),
            [
                "length: 3 -> 2",
                "byte 1: 0x02 -> 0x09",
                "byte 2: 0x03 -> (absent)"
            ]
        );

        let v6 = PacketBuilder::tcp(sock("[2001:db8::1]:1"), sock("[2001:db8::2]:2")).build();
        let lines = diff(&frame, &v6);
        assert!(
            lines.contains(&"eth.ethertype: 0x0800 -> 0x86dd".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"network: ipv4 -> ipv6".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    #[should_panic(expected = "dnat to v2: output frame differs")]
    fn assert_frames_eq_panics_with_name() {
        let frame = client_syn().build();
        let mut other = frame.clone();
        other[14 + 8] = 63;
        assert_frames_eq("dnat to v2", &frame, &other);
    }

    #[test]
    #[should_panic(expected = "ipv4.ttl: 64 -> 63")]
    fn assert_frames_eq_panics_with_diff_lines() {
        let frame = client_syn().build();
        let other = client_syn().ttl(63).build();
        assert_frames_eq("ttl", &frame, &other);
    }
}
