//! Who the client is, and what the upstream is told about the request's way here.
//!
//! Forwarding headers (`X-Forwarded-For`/`-Proto`/`-Host`, `Forwarded`) are believed
//! only from peers in [`Settings::trusted_proxies`]: from them they are appended to,
//! from anyone else replaced, so a client cannot pass for another address. The client
//! address every policy sees is the peer, or behind trusted proxies the right-most
//! address in the chain that is not one of them.
//!
//! Tracing: a valid W3C `traceparent` is passed on as it came; a missing or invalid
//! one is replaced by a new trace (and an orphaned `tracestate` dropped).

use std::net::{IpAddr, SocketAddr};

use http::header::{FORWARDED, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::remove_hop_by_hop;
use crate::settings::Settings;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Other headers that claim something about the client; dropped unless the peer is
/// trusted, since upstreams may believe them.
const CLIENT_CLAIMS: [&str; 3] = ["x-real-ip", "x-forwarded-port", "x-forwarded-prefix"];

/// The connection a request arrived on, as the listener saw it. Put in the request's
/// extensions by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr, settings: &Settings) -> Peer {
        Peer { addr, trusted: settings.is_trusted(addr.ip()) }
    }
}

/// The client's address: the peer's, or for a trusted peer the right-most address of
/// `X-Forwarded-For` (or, without it, of `Forwarded`'s `for=`) that is not a trusted
/// proxy. The port is the peer's when the client is the peer, else 0.
pub fn client_addr(peer: Peer, headers: &HeaderMap, settings: &Settings) -> SocketAddr {
    if !peer.trusted {
        return SocketAddr::new(peer.addr.ip().to_canonical(), peer.addr.port());
    }
    let hops = if headers.contains_key(X_FORWARDED_FOR) {
        list_items(headers, &X_FORWARDED_FOR).map(parse_node).collect::<Vec<_>>()
    } else {
        list_items(headers, &FORWARDED).filter_map(forwarded_for).map(|node| parse_node(&node)).collect()
    };
    let mut client = peer.addr.ip().to_canonical();
    for hop in hops.into_iter().rev() {
        match hop {
            // A hop that cannot be read ends the chain: nothing left of it can be
            // attributed, so the last trusted hop is the best answer.
            None => break,
            Some(ip) if settings.is_trusted(ip) => client = ip,
            Some(ip) => return SocketAddr::new(ip, 0),
        }
    }
    if client == peer.addr.ip().to_canonical() {
        SocketAddr::new(client, peer.addr.port())
    } else {
        SocketAddr::new(client, 0)
    }
}

/// Rewrites the headers of a request about to be forwarded: hop-by-hop headers go,
/// `Host` is left to the client library, and the forwarding headers describe the
/// way the request came (see the module documentation).
pub fn forwarded_request_headers(headers: &mut HeaderMap, peer: Peer, proto: &'static str, host: Option<HeaderValue>) {
    remove_hop_by_hop(headers);
    headers.remove(HOST);
    let peer_ip = peer.addr.ip().to_canonical();
    let element = forwarded_element(peer_ip, proto, host.as_ref());
    if peer.trusted {
        append_list(headers, X_FORWARDED_FOR, &peer_ip.to_string());
        append_list(headers, FORWARDED, &element);
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if let Some(host) = host.filter(|_| !headers.contains_key(X_FORWARDED_HOST)) {
            headers.insert(X_FORWARDED_HOST, host);
        }
    } else {
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
        headers.insert(X_FORWARDED_FOR, value(peer_ip.to_string()));
        headers.insert(FORWARDED, value(element));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
}

/// Keeps a valid `traceparent`, or starts a new trace. Returns the one forwarded.
pub fn trace_context(headers: &mut HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(TRACEPARENT).iter();
    if let (Some(value), None) = (values.next(), values.next())
        && value.to_str().is_ok_and(valid_traceparent)
    {
        return value.clone();
    }
    headers.remove(TRACESTATE);
    let generated = new_traceparent();
    headers.insert(TRACEPARENT, generated.clone());
    generated
}

/// Whether `text` is a `traceparent` this gateway understands (W3C Trace Context):
/// `version-traceid-parentid-flags` in lower-case hex, no all-zero ids, version `ff`
/// invalid; later versions may append fields after another `-`.
fn valid_traceparent(text: &str) -> bool {
    let b = text.as_bytes();
    let hex = |range: std::ops::Range<usize>| b[range].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |range: std::ops::Range<usize>| b[range].iter().any(|&c| c != b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let version_ok = hex(0..2) && &b[0..2] != b"ff";
    let length_ok = if &b[0..2] == b"00" { b.len() == 55 } else { b.len() == 55 || b[55] == b'-' };
    version_ok && length_ok && hex(3..35) && nonzero(3..35) && hex(36..52) && nonzero(36..52) && hex(53..55)
}

/// A new trace: random trace and span ids, not sampled (the gateway records nothing).
fn new_traceparent() -> HeaderValue {
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    value(format!("00-{trace:032x}-{span:016x}-00"))
}

/// One `Forwarded` element for this hop (RFC 7239).
fn forwarded_element(peer: IpAddr, proto: &str, host: Option<&HeaderValue>) -> String {
    let mut element = match peer {
        IpAddr::V4(ip) => format!("for={ip}"),
        IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        push_token_or_quoted(&mut element, host);
    }
    element.push_str(";proto=");
    element.push_str(proto);
    element
}

fn push_token_or_quoted(out: &mut String, text: &str) {
    let is_token =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if is_token {
        out.push_str(text);
    } else {
        out.push('"');
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

/// The comma-separated items of every `name` header, trimmed.
fn list_items<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("\u{0}")).flat_map(|v| v.split(',')).map(str::trim)
}

/// The `for=` value of one `Forwarded` element, unquoted; `Some("")` when the element
/// has none, so that it still counts as a hop.
fn forwarded_for(element: &str) -> Option<String> {
    let value = element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
        .map_or("", |(_, value)| value.trim());
    Some(value.trim_matches('"').to_owned())
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`. Anything else (`unknown`, `_hidden`) is `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut joined = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
    if !joined.is_empty() {
        joined.push_str(", ");
    }
    joined.push_str(item);
    headers.insert(name, value(joined));
}

fn value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("built from valid header values and addresses")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &[&str]) -> Settings {
        Settings { trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(), ..Settings::default() }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn peer(addr: &str, s: &Settings) -> Peer {
        Peer::new(addr.parse().unwrap(), s)
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let s = settings(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=198.51.100.1")]);
        assert_eq!(client_addr(peer("192.0.2.1:5000", &s), &h, &s), "192.0.2.1:5000".parse().unwrap());
        assert_eq!(client_addr(peer("[::ffff:192.0.2.1]:5000", &s), &h, &s), "192.0.2.1:5000".parse().unwrap());
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let s = settings(&["10.0.0.0/8", "2001:db8::/32"]);
        let p = peer("10.0.0.1:4000", &s);
        let ip = |h: &HeaderMap| client_addr(p, h, &s).ip().to_string();
        // A client-supplied spoof on the left is ignored: the right-most untrusted hop wins.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7"), ("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(ip(&h), "203.0.113.7");
        assert_eq!(client_addr(p, &h, &s).port(), 0);
        assert_eq!(ip(&headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")])), "10.1.1.1", "all trusted: left-most");
        assert_eq!(ip(&headers(&[("x-forwarded-for", "203.0.113.7, garbage, 10.2.2.2")])), "10.2.2.2");
        assert_eq!(ip(&headers(&[("x-forwarded-for", "[2001:db8::5]:443, 198.51.100.4:80")])), "198.51.100.4");
        let fwd = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:80\";by=x")]);
        assert_eq!(ip(&fwd), "192.0.2.60");
        assert_eq!(ip(&headers(&[("forwarded", "for=unknown, for=10.3.3.3")])), "10.3.3.3");
        assert_eq!(client_addr(p, &HeaderMap::new(), &s), "10.0.0.1:4000".parse().unwrap());
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let s = settings(&[]);
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4;proto=https"),
            ("x-real-ip", "1.2.3.4"),
            ("host", "api.example.com:8000"),
        ]);
        let host = h.get(HOST).cloned();
        forwarded_request_headers(&mut h, peer("192.0.2.1:1", &s), "http", host);
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example.com:8000");
        assert_eq!(h[FORWARDED], "for=192.0.2.1;host=\"api.example.com:8000\";proto=http");
        assert!(h.get("x-real-ip").is_none() && h.get(HOST).is_none());
    }

    #[test]
    fn trusted_forwarding_headers_are_appended_to() {
        let s = settings(&["::1"]);
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7;proto=https"),
            ("x-real-ip", "203.0.113.7"),
        ]);
        forwarded_request_headers(&mut h, peer("[::1]:9", &s), "http", Some(HeaderValue::from_static("api")));
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, ::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https", "what the trusted proxy saw");
        assert_eq!(h[&X_FORWARDED_HOST], "api");
        assert_eq!(h[FORWARDED], "for=203.0.113.7;proto=https, for=\"[::1]\";host=api;proto=http");
        assert_eq!(h["x-real-ip"], "203.0.113.7");
    }

    #[test]
    fn valid_traceparents_pass_and_others_are_replaced() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = headers(&[("traceparent", valid), ("tracestate", "vendor=x")]);
        assert_eq!(trace_context(&mut h), valid);
        assert_eq!((h[&TRACEPARENT].to_str().unwrap(), h[&TRACESTATE].to_str().unwrap()), (valid, "vendor=x"));
        assert!(valid_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "garbage",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
            let mut h = headers(&[("traceparent", bad), ("tracestate", "vendor=x")]);
            let new = trace_context(&mut h);
            assert!(valid_traceparent(new.to_str().unwrap()), "{new:?}");
            assert!(h.get(TRACESTATE).is_none(), "tracestate without a valid traceparent is dropped");
        }
        let mut twice = headers(&[("traceparent", valid), ("traceparent", valid)]);
        assert_ne!(trace_context(&mut twice), valid);
        let (a, b) = (trace_context(&mut HeaderMap::new()), trace_context(&mut HeaderMap::new()));
        assert_ne!(a, b);
        assert_eq!(&a.as_bytes()[..3], b"00-");
    }
}
