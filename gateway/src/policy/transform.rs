//! Request and response header transforms: remove, then set (replace), then add
//! (append), as `turnpike_domain::policy::HeaderTransform` documents. Names and values
//! are parsed once per snapshot. Headers that frame or route the message, and those
//! the gateway itself sets after the transform runs, cannot be changed: such entries
//! are refused at compile time (logged and skipped) rather than silently undone.

use http::{HeaderMap, HeaderName, HeaderValue};
use turnpike_domain::policy::HeaderTransform as HeaderTransformSpec;

/// Which message a transform changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Request => "request_headers",
            Side::Response => "response_headers",
        }
    }

    /// Whether a transform may touch `name` on this side.
    fn may_change(self, name: &HeaderName) -> bool {
        const FRAMING: [&str; 8] =
            ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"];
        // Set by the gateway after request transforms run (forwarding) or after
        // response transforms run (the last phase), so a change would be undone.
        const GATEWAY_REQUEST: [&str; 5] =
            ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id"];
        const GATEWAY_RESPONSE: [&str; 1] = ["x-request-id"];
        let name = name.as_str();
        let gateway: &[&str] = match self {
            Side::Request => &GATEWAY_REQUEST,
            Side::Response => &GATEWAY_RESPONSE,
        };
        // `X-Consumer-*` carries the authenticated caller; upstreams trust it because
        // only the gateway sets it.
        let identity = self == Side::Request && name.starts_with("x-consumer-");
        !(FRAMING.contains(&name) || name.starts_with("proxy-") || gateway.contains(&name) || identity)
    }
}

/// A compiled transform; empty when nothing is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderTransform {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderTransform {
    pub fn compile(spec: &HeaderTransformSpec, side: Side, version_id: &str) -> HeaderTransform {
        let name = |text: &str| -> Option<HeaderName> {
            let skip = |reason: &str| {
                tracing::warn!(
                    version = version_id,
                    policy = side.label(),
                    header = text,
                    reason,
                    "left out a header transform"
                );
            };
            match HeaderName::try_from(text) {
                Ok(name) if side.may_change(&name) => Some(name),
                Ok(_) => {
                    skip("the header cannot be changed by a transform");
                    None
                }
                Err(_) => {
                    skip("not a valid header name");
                    None
                }
            }
        };
        let pair = |(text, value): (&String, &String)| -> Option<(HeaderName, HeaderValue)> {
            let name = name(text)?;
            match HeaderValue::try_from(value.as_str()) {
                Ok(value) => Some((name, value)),
                Err(_) => {
                    tracing::warn!(
                        version = version_id,
                        policy = side.label(),
                        header = text.as_str(),
                        "left out a header transform with an invalid value"
                    );
                    None
                }
            }
        };
        HeaderTransform {
            remove: spec.remove.iter().filter_map(|t| name(t)).collect(),
            set: spec.set.iter().filter_map(pair).collect(),
            add: spec.add.iter().filter_map(pair).collect(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(remove: &[&str], set: &[(&str, &str)], add: &[(&str, &str)]) -> HeaderTransformSpec {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        HeaderTransformSpec { remove: remove.iter().map(|s| s.to_string()).collect(), set: map(set), add: map(add) }
    }

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn remove_then_set_then_add() {
        let t = HeaderTransform::compile(
            &spec(
                &["X-Secret", "x-tag"],
                &[("x-tag", "set"), ("x-env", "prod")],
                &[("x-tag", "added"), ("x-env", "eu")],
            ),
            Side::Request,
            "v",
        );
        let mut h = HeaderMap::new();
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.append("x-tag", HeaderValue::from_static("client-1"));
        h.append("x-tag", HeaderValue::from_static("client-2"));
        h.insert("x-env", HeaderValue::from_static("client"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        t.apply(&mut h);
        assert!(h.get("x-secret").is_none());
        assert_eq!(values(&h, "x-tag"), ["set", "added"], "client values removed, then set, then appended");
        assert_eq!(values(&h, "x-env"), ["prod", "eu"], "set replaces the client's value");
        assert_eq!(values(&h, "x-kept"), ["yes"]);
    }

    #[test]
    fn framing_and_gateway_headers_are_refused_at_compile() {
        let t = HeaderTransform::compile(
            &spec(
                &["connection", "x-forwarded-for"],
                &[("Host", "evil"), ("content-length", "0"), ("proxy-authorization", "x"), ("x-ok", "1")],
                &[("transfer-encoding", "chunked"), ("x-request-id", "1"), ("X-Consumer-Key-Id", "k")],
            ),
            Side::Request,
            "v",
        );
        assert_eq!(t, HeaderTransform::compile(&spec(&[], &[("x-ok", "1")], &[]), Side::Request, "v"));
        // A response may change forwarding-looking headers; they mean nothing there.
        let r = HeaderTransform::compile(&spec(&["x-forwarded-for"], &[("upgrade", "h2c")], &[]), Side::Response, "v");
        assert_eq!(r.remove, [HeaderName::from_static("x-forwarded-for")]);
        assert!(r.set.is_empty());
    }

    #[test]
    fn invalid_names_and_values_are_skipped_and_empty_specs_compile_empty() {
        let t = HeaderTransform::compile(&spec(&["bad name"], &[("x-a", "line\nbreak")], &[]), Side::Response, "v");
        assert_eq!(t, HeaderTransform::default());
        assert_eq!(
            HeaderTransform::compile(&HeaderTransformSpec::default(), Side::Request, "v"),
            HeaderTransform::default()
        );
    }
}
