//! Request validation against a version's OpenAPI document (3.0 or 3.1), for
//! versions whose policies set `validate_requests`. Each route's operation is
//! compiled once per snapshot ([`Validator`]); the pipeline's validation phase then
//! checks the request's path, query, header and cookie parameters and its JSON
//! body, and refuses a request that does not match with a 400 naming every failing
//! location (`query.limit`, `body.items[2].name`) and why. Parameters that carry the
//! version's API key are not checked: authentication has taken them off the request.
//!
//! Bodies: an operation without `requestBody` takes any body. Otherwise the
//! request's `Content-Type` must be one the operation declares (415 if not); a JSON
//! body (`application/json`, `*/*+json`) with a schema is read in full, up to the
//! version's body limit or [`DEFAULT_BODY_LIMIT`] (413 beyond), checked, and then
//! forwarded from the buffer. Bodies of other declared types stream through
//! unchecked.

mod operation;
mod params;
mod schema;

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use serde_json::Value;

use self::operation::essence;
pub use self::operation::{Operation, Validator};
use self::params::Input;
use self::schema::Report;
pub use self::schema::Violation;
use crate::error::{ErrorKind, GatewayError};

/// The most a JSON body may have to be validated when the version sets no body
/// limit (and the listener has no default).
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;

/// The most violations one refusal lists.
const MAX_VIOLATIONS: usize = 20;

/// Why a request was refused, in the order found.
#[derive(Debug)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_first() {
            None => f.write_str("no details"),
            Some((first, [])) => write!(f, "{first}"),
            Some((first, rest)) => write!(f, "{first} (and {} more)", rest.len()),
        }
    }
}

fn invalid(violations: Vec<Violation>) -> GatewayError {
    ErrorKind::InvalidRequest(Violations(violations)).into()
}

/// Whether a media type is JSON: `application/json` or a `+json` type.
pub fn is_json(media_type: &str) -> bool {
    let essence = essence(media_type);
    essence == "application/json" || (essence.contains('/') && essence.ends_with("+json"))
}

impl Operation {
    /// The validation phase for a request matched to this operation: checks the
    /// parameters, then the body. `path` is the path under the version's base path;
    /// a body is read up to `limit` bytes, and refused (408) when the client sends
    /// nothing of it for `stall`. Returns the body when it had to be read to be
    /// checked; the caller forwards it instead of the (then consumed) stream.
    pub async fn check(
        &self,
        req: &mut Request<Incoming>,
        path: &str,
        limit: Option<u64>,
        stall: Duration,
    ) -> Result<Option<Bytes>, GatewayError> {
        self.check_params(req.uri().query(), path, req.headers())?;
        let Some(body) = &self.body else { return Ok(None) };
        if req.body().is_end_stream() {
            return if body.required { Err(required_body()) } else { Ok(None) };
        }
        let mut content_types = req.headers().get_all(CONTENT_TYPE).iter();
        let declared = content_types.next().and_then(|v| v.to_str().ok()).map(essence);
        if content_types.next().is_some() {
            // The upstream might read the other one than was checked.
            return Err(ErrorKind::Malformed("the request has more than one Content-Type").into());
        }
        let Some(media) = declared.as_deref().and_then(|essence| body.select(essence)) else {
            // An operation that declares no content takes any.
            if body.media.is_empty() {
                return Ok(None);
            }
            return Err(ErrorKind::UnsupportedMediaType(body.accepted()).into());
        };
        let Some(schema) = media.schema.filter(|_| declared.as_deref().is_some_and(is_json)) else {
            return Ok(None);
        };
        let bytes = read_body(req.body_mut(), limit.unwrap_or(DEFAULT_BODY_LIMIT), stall).await?;
        if bytes.is_empty() {
            return if body.required { Err(required_body()) } else { Ok(Some(bytes)) };
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(vec![Violation { location: "body".into(), reason: format!("must be JSON ({e})") }]))?;
        let mut report = Report::new(MAX_VIOLATIONS);
        self.schemas.check(schema, &value, &mut "body".to_owned(), &mut report);
        if report.failed() {
            return Err(invalid(report.violations));
        }
        Ok(Some(bytes))
    }

    fn check_params(&self, query: Option<&str>, path: &str, headers: &HeaderMap) -> Result<(), GatewayError> {
        if self.params.is_empty() {
            return Ok(());
        }
        let input = Input::new(query, self.template.capture(path), headers);
        let mut report = Report::new(MAX_VIOLATIONS);
        for param in &self.params {
            param.check(&self.schemas, &input, &mut report);
        }
        if report.failed() { Err(invalid(report.violations)) } else { Ok(()) }
    }
}

fn required_body() -> GatewayError {
    invalid(vec![Violation { location: "body".into(), reason: "is required".into() }])
}

/// Reads a request body in full, refusing (413) one longer than `limit` before
/// reading it when its length is declared, else as soon as it passes the limit,
/// and one the client stalls for `stall` (408). Each refusal closes the connection,
/// which still holds the unread rest of the body.
async fn read_body(body: &mut Incoming, limit: u64, stall: Duration) -> Result<Bytes, GatewayError> {
    let refuse = |kind| GatewayError::from(kind).with_headers(close());
    let declared = body.size_hint().lower();
    if declared > limit {
        return Err(refuse(ErrorKind::BodyTooLarge));
    }
    let mut buffer = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(refuse(ErrorKind::BodyTimeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let kind = ErrorKind::Malformed("the request body could not be read");
                return Err(GatewayError::with_cause(kind, e).with_headers(close()));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buffer.len() as u64 + data.len() as u64 > limit {
                return Err(refuse(ErrorKind::BodyTooLarge));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

fn close() -> HeaderMap {
    HeaderMap::from_iter([(CONNECTION, HeaderValue::from_static("close"))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for json in ["application/json", "Application/JSON; charset=utf-8", "application/merge-patch+json"] {
            assert!(is_json(json), "{json}");
        }
        for other in ["text/plain", "application/jsonl", "+json", "application/xml", "*/*"] {
            assert!(!is_json(other), "{other}");
        }
    }

    #[test]
    fn violations_read_as_the_first_and_a_count() {
        let v = |location: &str| Violation { location: location.into(), reason: "is required".into() };
        assert_eq!(Violations(vec![v("query.q")]).to_string(), "query.q: is required");
        assert_eq!(Violations(vec![v("query.q"), v("body")]).to_string(), "query.q: is required (and 1 more)");
    }
}
