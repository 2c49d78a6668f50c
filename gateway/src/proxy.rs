//! Forwarding to the upstream: the header rules of a well-behaved HTTP proxy
//! (hop-by-hop removal, `X-Forwarded-*`) and the call itself with its timeouts.
//! Bodies are streamed both ways: nothing here reads them.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::error::{ErrorKind, GatewayError};
use crate::upstream::HttpClient;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// `Proxy-*` family, which is addressed to us.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Rewrites the headers of a request about to be forwarded: hop-by-hop headers go,
/// the client's address is appended to `X-Forwarded-For`, `X-Forwarded-Proto` and
/// `-Host` say what the client used, and `Host` is left to the client library to set
/// from the upstream URL.
pub fn forwarded_request_headers(headers: &mut HeaderMap, original_host: Option<HeaderValue>, client_ip: IpAddr) {
    remove_hop_by_hop(headers);
    headers.remove(HOST);
    let mut forwarded_for =
        headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&client_ip.to_canonical().to_string());
    headers.insert(X_FORWARDED_FOR, HeaderValue::try_from(forwarded_for).expect("joined header values stay valid"));
    // The proxy listener is plain HTTP; a TLS listener will say "https".
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match original_host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// The host the client asked for, as it wrote it (with port): the `Host` header, or
/// the URI's authority for HTTP/2.
pub fn original_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    req.headers()
        .get(HOST)
        .cloned()
        .or_else(|| req.uri().authority().and_then(|a| HeaderValue::try_from(a.as_str()).ok()))
}

/// Sends the request to `uri` and waits for the response head, within `timeout`.
pub async fn send(
    client: &HttpClient,
    mut req: Request<Incoming>,
    uri: Uri,
    timeout: Option<Duration>,
) -> Result<Response<Incoming>, GatewayError> {
    *req.uri_mut() = uri;
    // Upstream connections are HTTP/1.1 whatever the client spoke to us.
    *req.version_mut() = Version::HTTP_11;
    let call = client.request(req);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, call).await.map_err(|_| GatewayError::from(ErrorKind::UpstreamTimeout))?,
        None => call.await,
    };
    let mut response = result.map_err(classify)?;
    remove_hop_by_hop(response.headers_mut());
    Ok(response)
}

fn classify(e: hyper_util::client::legacy::Error) -> GatewayError {
    let kind = if !e.is_connect() {
        ErrorKind::UpstreamFailed
    } else if timed_out(&e) {
        ErrorKind::UpstreamConnectTimeout
    } else {
        ErrorKind::UpstreamConnect
    };
    GatewayError::with_cause(kind, e)
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn forwarded_headers_append_the_client_and_describe_the_original_request() {
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1"),
            ("host", "api.example.com:8000"),
        ]);
        let host = h.get(HOST).cloned();
        forwarded_request_headers(&mut h, host, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.1.1.1, 192.0.2.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example.com:8000");
        assert!(h.get(HOST).is_none(), "the client library sets Host for the upstream");
    }

    #[test]
    fn spoofed_forwarded_host_is_replaced_and_mapped_addresses_are_canonical() {
        let mut h = headers(&[("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "https")]);
        forwarded_request_headers(&mut h, None, IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert!(h.get(&X_FORWARDED_HOST).is_none());
        let mut h = HeaderMap::new();
        forwarded_request_headers(&mut h, None, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
    }
}
