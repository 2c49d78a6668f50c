//! Which addresses the platform may connect to on an operator's behalf: IP blocks
//! ([`Cidr`]), what kind of network an address belongs to ([`classify`]), and the
//! operator's rule for upstream targets and other outbound fetches ([`TargetPolicy`]).
//!
//! A target URL naming a loopback, private or link-local address lets whoever can
//! configure an upstream reach what sits behind the gateway (the cloud metadata
//! service at `169.254.169.254`, databases on the internal network, the node's own
//! admin and status ports) and expose it through the proxy port. The policy is
//! applied twice: to literal addresses when an upstream is saved, and to every
//! address a name resolves to when the gateway connects (names cannot be judged at
//! save time: DNS answers change).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::policy::parse_cidr;

/// An IP address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a
/// block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A text that is not an IP address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block")]
pub struct InvalidCidr(pub String);

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(text: &str) -> Result<Self, InvalidCidr> {
        let (addr, prefix) = parse_cidr(text.trim()).ok_or_else(|| InvalidCidr(text.to_owned()))?;
        Ok(Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = InvalidCidr;

    fn try_from(text: String) -> Result<Self, InvalidCidr> {
        text.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(de)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// The block of the given address and prefix length; `None` when the prefix is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= if addr.is_ipv4() { 32 } else { 128 }).then_some(Cidr { addr, prefix })
    }

    /// Whether the block holds `ip`. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// What kind of network an address belongs to. Everything but [`Public`] is refused
/// as a target unless the operator allows it.
///
/// [`Public`]: AddressClass::Public
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// `0.0.0.0/8` ("this network"; connecting to `0.0.0.0` reaches the local host)
    /// and `::`.
    Unspecified,
    /// `127.0.0.0/8` and `::1`.
    Loopback,
    /// RFC 1918: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// `169.254.0.0/16` (where cloud metadata services live) and `fe80::/10`.
    LinkLocal,
    /// `fc00::/7` (RFC 4193).
    UniqueLocal,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`,
    /// `3fff::/20`.
    Documentation,
    /// Everything else that is not globally routable: `240.0.0.0/4`, benchmarking
    /// `198.18.0.0/15`, protocol assignments `192.0.0.0/24` and `2001::/23` (Teredo
    /// included), the 6to4 relay `192.88.99.0/24`, deprecated site-local `fec0::/10`
    /// and IPv4-compatible `::a.b.c.d`, local-use NAT64 `64:ff9b:1::/48`, discard
    /// `100::/64`, and IPv6 outside `2000::/3`.
    Reserved,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    /// The class in words, for messages: "a loopback address".
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private (RFC 1918) address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::UniqueLocal => "a unique local IPv6 address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The kind of network `ip` belongs to. IPv6 forms that carry an IPv4 address the
/// host would reach (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are judged by that address, so `::ffff:127.0.0.1` is loopback.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    match ip.octets() {
        [255, 255, 255, 255] => Broadcast,
        [0, ..] => Unspecified,
        [127, ..] => Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => Private,
        [100, 64..=127, ..] => SharedAddressSpace,
        [169, 254, ..] => LinkLocal,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => Documentation,
        [192, 0, 0, _] | [192, 88, 99, _] | [198, 18..=19, ..] => Reserved,
        [224..=239, ..] => Multicast,
        [240..=255, ..] => Reserved,
        _ => Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        classify_v4(Ipv4Addr::new(a, b, c, d))
    };
    match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => Loopback,
        // NAT64 (RFC 6052): the host reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        [0x64, 0xff9b, 1, ..] => Reserved,
        // 6to4 (RFC 3056): the embedded IPv4 address is the tunnel's end.
        [0x2002, hi, lo, ..] => embedded(hi, lo),
        [0x2001, 0x0db8, ..] => Documentation,
        [0x2001, 0..=0x01ff, ..] => Reserved,
        [0x3fff, 0..=0x0fff, ..] => Documentation,
        [0x0100, 0, 0, 0, ..] => Reserved,
        [first, ..] if first & 0xfe00 == 0xfc00 => UniqueLocal,
        [first, ..] if first & 0xffc0 == 0xfe80 => LinkLocal,
        [first, ..] if first & 0xff00 == 0xff00 => Multicast,
        // Only 2000::/3 is allocated for global unicast; the rest (the IPv4-compatible
        // `::a.b.c.d` and site-local `fec0::/10` among it) is reserved or deprecated.
        [first, ..] if first & 0xe000 == 0x2000 => Public,
        _ => Reserved,
    }
}

/// The IPv4 address a host name written in one of the numeric forms `inet_aton`
/// accepts stands for: `127.1`, `0x7f.0.0.1`, `2130706433`, `0177.0.0.1`. The
/// system resolver reads these as addresses, not names, so they are judged like
/// addresses. `None` for anything else (a real DNS name never ends in an all-numeric
/// label).
pub fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts.iter().map(|part| numeric_part(part)).collect::<Option<Vec<u32>>>()?;
    let (&last, leading) = numbers.split_last()?;
    if leading.iter().any(|&n| n > 255) {
        return None;
    }
    // The last part fills the bytes the others left: 4, 3, 2 or 1 of them.
    let last_bits = 32 - 8 * leading.len() as u32;
    if last_bits < 32 && last >= 1 << last_bits {
        return None;
    }
    let high = leading.iter().enumerate().fold(0u32, |acc, (i, &n)| acc | n << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(high | last))
}

/// One part of a numeric IPv4 form: decimal, octal with a leading `0`, or hex with
/// `0x`.
fn numeric_part(part: &str) -> Option<u32> {
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() && radix == 16 {
        // `0x` alone is zero to inet_aton.
        return Some(0);
    }
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// The operator's rule for where upstream targets (and JWKS fetches) may connect:
/// public addresses always; the others only when `allow_private` is set or one of
/// the `allow_list` blocks holds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetPolicy {
    /// Allow every address: no check at all.
    pub allow_private: bool,
    /// Blocks allowed although not public, e.g. `10.20.0.0/16` for the network the
    /// services live on, or `127.0.0.0/8` for upstreams on the gateway's host.
    pub allow_list: Vec<Cidr>,
}

impl TargetPolicy {
    /// Every address allowed: what a library user gets unless it chooses.
    pub fn allow_all() -> TargetPolicy {
        TargetPolicy { allow_private: true, allow_list: Vec::new() }
    }

    /// Public addresses and the given blocks only.
    pub fn public_only(allow_list: Vec<Cidr>) -> TargetPolicy {
        TargetPolicy { allow_private: false, allow_list }
    }

    /// Whether no address is refused, so nothing needs checking.
    pub fn allows_everything(&self) -> bool {
        self.allow_private
    }

    /// `Ok` when a connection to `ip` is allowed, else the class that refuses it.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressClass> {
        if self.allow_private {
            return Ok(());
        }
        match classify(ip) {
            AddressClass::Public => Ok(()),
            _ if self.allow_list.iter().any(|block| block.contains(ip)) => Ok(()),
            class => Err(class),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        let table = [
            // IPv4
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.15.255.255", Public),
            ("172.32.0.0", Public),
            ("192.168.1.1", Private),
            ("192.169.0.1", Public),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("100.63.255.255", Public),
            ("100.128.0.0", Public),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("169.253.255.255", Public),
            ("192.0.2.10", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("198.20.0.0", Public),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("1.1.1.1", Public),
            ("8.8.8.8", Public),
            ("93.184.216.34", Public),
            // IPv6
            ("::", Unspecified),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Reserved),
            ("::2", Reserved),
            ("::ffff:0:7f00:1", Reserved),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::808:808", Public),
            ("64:ff9b:1::a00:1", Reserved),
            ("2002:7f00:1::1", Loopback),
            ("2002:a00:1::", Private),
            ("2002:808:808::1", Public),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fec0::1", Reserved),
            ("fc00::1", UniqueLocal),
            ("fd12:3456:789a::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("3fff:fff::1", Documentation),
            ("3fff:1000::1", Public),
            ("2001::1", Reserved),
            ("2001:1ff::1", Reserved),
            ("2001:200::1", Public),
            ("100::1", Reserved),
            ("100:0:0:1::", Reserved),
            ("4000::1", Reserved),
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001::1", Public),
        ];
        for (address, class) in table {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn numeric_host_forms_are_read_as_inet_aton_does() {
        let table = [
            ("127.0.0.1", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("127.0.1", Some("127.0.0.1")),
            ("2130706433", Some("127.0.0.1")),
            ("0x7f000001", Some("127.0.0.1")),
            ("0x7f.0.0.1", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("0", Some("0.0.0.0")),
            ("0x", Some("0.0.0.0")),
            ("169.254.43518", Some("169.254.169.254")),
            ("10.0.0.0377", Some("10.0.0.255")),
            ("4294967295", Some("255.255.255.255")),
            ("4294967296", None),
            ("1.2.3.256", None),
            ("256.1", None),
            ("1.2.3.4.5", None),
            ("08.1", None),
            ("0x1g", None),
            ("api.example.com", None),
            ("localhost", None),
            ("1.2.3.x", None),
            ("", None),
            ("1..2", None),
        ];
        for (host, expected) in table {
            assert_eq!(numeric_ipv4(host), expected.map(|a| a.parse().unwrap()), "{host}");
        }
        assert_eq!(numeric_ipv4("1.16777215"), Some(Ipv4Addr::new(1, 255, 255, 255)));
        assert_eq!(numeric_ipv4("1.16777216"), None);
    }

    #[test]
    fn the_policy_allows_public_addresses_and_listed_blocks() {
        let strict = TargetPolicy::public_only(Vec::new());
        assert_eq!(strict.check(ip("93.184.216.34")), Ok(()));
        assert_eq!(strict.check(ip("127.0.0.1")), Err(Loopback));
        assert_eq!(strict.check(ip("::ffff:10.1.2.3")), Err(Private));
        assert!(!strict.allows_everything());

        let listed = TargetPolicy::public_only(vec!["10.20.0.0/16".parse().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(listed.check(ip("10.20.3.4")), Ok(()));
        assert_eq!(listed.check(ip("::ffff:10.20.3.4")), Ok(()), "mapped IPv4 is matched as IPv4");
        assert_eq!(listed.check(ip("10.21.0.1")), Err(Private));
        assert_eq!(listed.check(ip("::1")), Ok(()));
        assert_eq!(listed.check(ip("127.0.0.1")), Err(Loopback));
        assert_eq!(listed.check(ip("169.254.169.254")), Err(LinkLocal));

        let open = TargetPolicy::allow_all();
        assert!(open.allows_everything());
        for address in ["127.0.0.1", "169.254.169.254", "::1", "fd00::1", "0.0.0.0"] {
            assert_eq!(open.check(ip(address)), Ok(()), "{address}");
        }
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.7")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "mapped IPv4 counts as IPv4");
        assert!(!net.contains(ip("::1")));
        let odd: Cidr = "192.168.0.0/23".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.2.0")));
        let one: Cidr = "2001:db8::1".parse().unwrap();
        assert!(one.contains(ip("2001:db8::1")) && !one.contains(ip("2001:db8::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert_eq!(one.to_string(), "2001:db8::1/128");
        assert_eq!(Cidr::new(ip("10.0.0.0"), 8), Some(net_of("10.0.0.0/8")));
        assert_eq!(Cidr::new(ip("10.0.0.0"), 33), None);
        assert_eq!(Cidr::new(ip("::"), 128), Some(net_of("::/128")));
    }

    fn net_of(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn bad_blocks_are_refused_by_name() {
        for bad in ["", "10.0.0.0/33", "10.0.0/8", "::/129", "10.0.0.0/-1", "10.0.0.0/"] {
            assert_eq!(bad.parse::<Cidr>(), Err(InvalidCidr(bad.to_owned())), "{bad}");
        }
        assert_eq!(InvalidCidr("x".into()).to_string(), "\"x\" is not an IP address or CIDR block");
    }
}
