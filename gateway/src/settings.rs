//! Settings of the proxy listener that come from the operator rather than from
//! snapshots: which peers may speak for clients, and the limits that keep one client
//! from holding or exhausting the gateway. [`Settings::default`] is a safe start.

use std::net::IpAddr;
use std::time::Duration;

/// IP address blocks, shared with the control plane (which applies them to upstream
/// targets, see `turnpike_domain::network`).
pub use turnpike_domain::network::{Cidr, InvalidCidr};

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
    /// Proxy worker threads, each with its own runtime (see `crate::worker`); 0 serves
    /// on the runtime that calls [`serve_proxy`](crate::serve_proxy).
    pub workers: usize,
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
            workers: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
