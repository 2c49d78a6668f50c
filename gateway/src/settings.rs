//! Settings of the proxy listener that come from the operator rather than from
//! snapshots: which peers may speak for clients, and the limits that keep one client
//! from holding or exhausting the gateway. [`Settings::default`] is a safe start.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use turnpike_domain::policy::parse_cidr;

/// How the proxy listener treats connections and request heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Peers (load balancers, CDNs) whose `X-Forwarded-*` and `Forwarded` headers are
    /// believed and appended to; everyone else's are replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request head (request line and header fields), in bytes: 431 beyond it.
    pub max_header_bytes: usize,
    /// Most header fields in a request: 431 beyond it.
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes: 414 beyond it.
    pub max_uri_bytes: usize,
    /// Time a client has from the first byte of a request head to its end: 408 and
    /// the connection closed beyond it.
    pub header_read_timeout: Duration,
    /// Time a connection may sit without a request in flight before it is closed.
    pub idle_timeout: Duration,
    /// Largest request body, for versions whose policies set none; `None` for no
    /// limit. 413 beyond it.
    pub max_body_bytes: Option<u64>,
    /// Longest wait for the next piece of a request body while it is being
    /// forwarded: 408 (or, once the upstream has answered, the exchange cut off)
    /// beyond it, so a client trickling its body cannot hold an upstream connection.
    pub body_read_timeout: Duration,
    /// Longest wait for a client to accept more of a response (to read what was
    /// sent): the connection is closed beyond it, and with it the upstream's
    /// response, so a client that stops reading cannot hold an upstream connection.
    pub send_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trusted_proxies: Vec::new(),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: None,
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|cidr| cidr.contains(ip))
    }
}

/// An IP address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a
/// block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        String::deserialize(de)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
    }

    #[test]
    fn bad_blocks_are_refused_by_name() {
        for bad in ["", "10.0.0.0/33", "10.0.0/8", "::/129", "10.0.0.0/-1", "10.0.0.0/"] {
            assert_eq!(bad.parse::<Cidr>(), Err(InvalidCidr(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn defaults_are_the_documented_limits() {
        let s = Settings::default();
        assert_eq!((s.max_header_bytes, s.max_headers, s.max_uri_bytes), (16384, 100, 8192));
        assert_eq!((s.header_read_timeout, s.idle_timeout), (Duration::from_secs(10), Duration::from_secs(60)));
        assert!(s.trusted_proxies.is_empty() && s.max_body_bytes.is_none());
        assert_eq!((s.body_read_timeout, s.send_timeout), (Duration::from_secs(30), Duration::from_secs(30)));
        assert!(!s.is_trusted(ip("127.0.0.1")));
        let s = Settings { trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..s };
        assert!(s.is_trusted(ip("127.0.0.1")) && s.is_trusted(ip("::ffff:127.0.0.1")));
    }
}
