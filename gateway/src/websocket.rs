//! WebSocket pass-through. An HTTP/1.1 request asking to upgrade to `websocket` is
//! forwarded with its `Upgrade` and `Connection` headers (which are otherwise
//! hop-by-hop and removed); when the upstream agrees (101), the client's and the
//! upstream's connections are spliced together and bytes flow both ways untouched
//! until either side closes.
//!
//! Anything else that asks to upgrade is forwarded as a plain request; its answer
//! closes the client connection (see `server.rs`), since the connection guard no
//! longer reads what follows such a request as HTTP.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// A client's WebSocket handshake, holding on to its connection for after the 101.
#[derive(Debug)]
pub struct ClientUpgrade(OnUpgrade);

/// Whether the request asks to switch to WebSocket (RFC 6455 §4.1).
pub fn is_websocket_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11 && has_token(headers, CONNECTION, "upgrade") && has_token(headers, UPGRADE, "websocket")
}

/// Takes the client's side of a WebSocket upgrade out of the request, if it is one.
pub fn take_client_upgrade<B>(req: &mut Request<B>) -> Option<ClientUpgrade> {
    is_websocket_upgrade(req.version(), req.headers()).then(|| ClientUpgrade(hyper::upgrade::on(req)))
}

/// Puts back the headers that ask for the upgrade, after the hop-by-hop ones were
/// removed for forwarding.
pub fn keep_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Completes the upgrade on the upstream's answer: on 101 the two connections are
/// spliced in a task of their own, and the answer keeps its upgrade headers for the
/// client. Any other answer is passed on as it is.
pub fn splice_on_switch<B>(client: ClientUpgrade, response: &mut Response<B>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    keep_upgrade_headers(response.headers_mut());
    let upstream = hyper::upgrade::on(response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client.0, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "websocket closed"),
            Err(e) => tracing::debug!(error = %e, "websocket ended with an error"),
        }
    });
}

/// Whether any of the comma-separated values of `name` is `token` (any case).
fn has_token(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn only_http11_websocket_upgrades_count() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]);
        assert!(is_websocket_upgrade(Version::HTTP_11, &ws));
        assert!(!is_websocket_upgrade(Version::HTTP_10, &ws));
        assert!(!is_websocket_upgrade(Version::HTTP_2, &ws));
        assert!(!is_websocket_upgrade(Version::HTTP_11, &headers(&[("upgrade", "websocket")])));
        let h2c = headers(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(!is_websocket_upgrade(Version::HTTP_11, &h2c));
    }

    #[test]
    fn non_switching_answers_are_left_alone() {
        let mut req = Request::new(());
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut().extend(headers(&[("connection", "upgrade"), ("upgrade", "websocket")]));
        let upgrade = take_client_upgrade(&mut req).expect("a websocket handshake");
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::FORBIDDEN;
        splice_on_switch(upgrade, &mut response);
        assert!(response.headers().is_empty());
    }
}
