//! The gateway's own errors: each says where it came from and whether retrying the
//! request elsewhere would be safe, and [`GatewayError::into_response`] is the one
//! place that turns them into `application/problem+json` responses (RFC 9457).
//! Causes are logged, never sent to the client.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::path::PathError;

/// Prefix of every problem `type` URI the gateway sends.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:turnpike:problem:";

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The request itself, or no configuration matching it.
    Client,
    /// The upstream, or the way to it.
    Upstream,
    /// The gateway.
    Internal,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error(transparent)]
    BadPath(#[from] PathError),
    #[error("no configuration has been loaded yet")]
    NoConfig,
    #[error("no route matches the request")]
    NoRoute,
    #[error("the route does not accept this method")]
    MethodNotAllowed { allow: Vec<Method> },
    #[error("this API version has been retired")]
    Retired,
    #[error("this API version has no upstream")]
    NoUpstream,
    #[error("the upstream has no usable target")]
    NoTarget,
    #[error("the upstream could not be reached")]
    UpstreamConnect,
    #[error("the upstream did not accept the connection in time")]
    UpstreamConnectTimeout,
    #[error("the upstream did not respond in time")]
    UpstreamTimeout,
    #[error("the upstream failed to respond")]
    UpstreamFailed,
    #[error("requests from this address are not allowed")]
    IpDenied,
    #[error("this cross-origin request is not allowed")]
    CorsRefused,
    #[error("an API key is required")]
    MissingKey,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("a bearer token is required")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("the keys to check the bearer token are not available")]
    JwtKeysUnavailable,
    #[error("the API key has no approved subscription to this API version")]
    NotSubscribed,
    #[error("rate limit exceeded")]
    RateLimited,
    #[error("quota exhausted for this period")]
    QuotaExceeded,
    #[error("the request is malformed: {0}")]
    Malformed(&'static str),
    #[error("the request head is too large")]
    HeadersTooLarge,
    #[error("the request target is too long")]
    UriTooLong,
    #[error("the request head did not arrive in time")]
    RequestTimeout,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the request body is larger than allowed")]
    BodyTooLarge,
    #[error("the request does not match the API description: {0}")]
    InvalidRequest(crate::validation::Violations),
    #[error("the request body's content type is not accepted here; send {0}")]
    UnsupportedMediaType(String),
    #[error("the gateway failed to handle the request")]
    Internal,
}

/// A gateway-made error, with the cause and context kept for the log.
#[derive(Debug)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Where it happened, e.g. which upstream target.
    pub context: Option<String>,
    /// Headers the response must carry (`WWW-Authenticate`, `Retry-After`…); boxed
    /// so that the common error stays small.
    pub headers: Option<Box<HeaderMap>>,
}

impl From<ErrorKind> for GatewayError {
    fn from(kind: ErrorKind) -> Self {
        GatewayError { kind, cause: None, context: None, headers: None }
    }
}

impl From<PathError> for GatewayError {
    fn from(e: PathError) -> Self {
        ErrorKind::BadPath(e).into()
    }
}

impl GatewayError {
    pub fn with_cause(kind: ErrorKind, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        GatewayError { kind, cause: Some(cause.into()), context: None, headers: None }
    }

    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers.get_or_insert_with(Default::default).extend(headers);
        self
    }

    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadPath(_) => StatusCode::BAD_REQUEST,
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Retired => StatusCode::GONE,
            ErrorKind::NoConfig | ErrorKind::NoUpstream | ErrorKind::NoTarget => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamConnectTimeout | ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::MissingKey | ErrorKind::InvalidKey => StatusCode::UNAUTHORIZED,
            ErrorKind::MissingToken | ErrorKind::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorKind::JwtKeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NotSubscribed | ErrorKind::IpDenied | ErrorKind::CorsRefused => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Malformed(_) => StatusCode::BAD_REQUEST,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::RequestTimeout | ErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self.kind {
            ErrorKind::BadPath(_)
            | ErrorKind::NoRoute
            | ErrorKind::MethodNotAllowed { .. }
            | ErrorKind::Retired
            | ErrorKind::IpDenied
            | ErrorKind::CorsRefused
            | ErrorKind::MissingKey
            | ErrorKind::InvalidKey
            | ErrorKind::MissingToken
            | ErrorKind::InvalidToken
            | ErrorKind::NotSubscribed
            | ErrorKind::RateLimited
            | ErrorKind::QuotaExceeded
            | ErrorKind::Malformed(_)
            | ErrorKind::HeadersTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::RequestTimeout
            | ErrorKind::BodyTimeout
            | ErrorKind::BodyTooLarge
            | ErrorKind::InvalidRequest(_)
            | ErrorKind::UnsupportedMediaType(_) => ErrorSource::Client,
            ErrorKind::NoUpstream
            | ErrorKind::NoTarget
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamConnectTimeout
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamFailed
            | ErrorKind::JwtKeysUnavailable => ErrorSource::Upstream,
            ErrorKind::NoConfig | ErrorKind::Internal => ErrorSource::Internal,
        }
    }

    /// Whether the request may be sent again (to another target) without risk of
    /// running it twice: true only when it never reached an upstream.
    pub fn retry_safe(&self) -> bool {
        matches!(self.kind, ErrorKind::UpstreamConnect | ErrorKind::UpstreamConnectTimeout | ErrorKind::NoTarget)
    }

    /// Short machine-readable name, the tail of the problem `type`.
    fn slug(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadPath(_) => "bad-path",
            ErrorKind::NoConfig => "no-config",
            ErrorKind::NoRoute => "no-route",
            ErrorKind::MethodNotAllowed { .. } => "method-not-allowed",
            ErrorKind::Retired => "version-retired",
            ErrorKind::NoUpstream => "no-upstream",
            ErrorKind::NoTarget => "no-target",
            ErrorKind::UpstreamConnect => "upstream-unreachable",
            ErrorKind::UpstreamConnectTimeout => "upstream-connect-timeout",
            ErrorKind::UpstreamTimeout => "upstream-timeout",
            ErrorKind::UpstreamFailed => "upstream-failed",
            ErrorKind::IpDenied => "ip-denied",
            ErrorKind::CorsRefused => "cors-refused",
            ErrorKind::MissingKey => "missing-api-key",
            ErrorKind::InvalidKey => "invalid-api-key",
            ErrorKind::MissingToken => "missing-token",
            ErrorKind::InvalidToken => "invalid-token",
            ErrorKind::JwtKeysUnavailable => "jwt-keys-unavailable",
            ErrorKind::NotSubscribed => "not-subscribed",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::QuotaExceeded => "quota-exceeded",
            ErrorKind::Malformed(_) => "malformed-request",
            ErrorKind::HeadersTooLarge => "headers-too-large",
            ErrorKind::UriTooLong => "uri-too-long",
            ErrorKind::RequestTimeout => "request-timeout",
            ErrorKind::BodyTimeout => "body-timeout",
            ErrorKind::BodyTooLarge => "body-too-large",
            ErrorKind::InvalidRequest(_) => "invalid-request",
            ErrorKind::UnsupportedMediaType(_) => "unsupported-media-type",
            ErrorKind::Internal => "internal",
        }
    }

    /// The problem+json response. `request_id` ties the body to the log line.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<Full<Bytes>> {
        let status = self.status();
        let request_id = request_id.to_str().unwrap_or_default();
        match self.source() {
            ErrorSource::Upstream | ErrorSource::Internal => tracing::warn!(
                request_id,
                status = status.as_u16(),
                error = %self.kind,
                context = self.context.as_deref(),
                cause = self.cause.as_deref().map(|c| tracing::field::display(CauseChain(c))),
                retry_safe = self.retry_safe(),
                "request failed",
            ),
            ErrorSource::Client => {
                tracing::debug!(request_id, status = status.as_u16(), error = %self.kind, "request refused")
            }
        }
        let body = Problem {
            r#type: format!("{PROBLEM_TYPE_PREFIX}{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.kind.to_string(),
            request_id,
            errors: match &self.kind {
                ErrorKind::InvalidRequest(violations) => &violations.0,
                _ => &[],
            },
        };
        let json = serde_json::to_vec(&body).expect("a problem serializes");
        let mut response = Response::new(Full::new(Bytes::from(json)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(headers) = &self.headers {
            response.headers_mut().extend(headers.as_ref().clone());
        }
        if let ErrorKind::MethodNotAllowed { allow } = &self.kind {
            let allow = allow.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            if let Ok(value) = HeaderValue::try_from(allow) {
                response.headers_mut().insert(ALLOW, value);
            }
        }
        response
    }
}

/// Displays an error with its sources, `outer: inner: innermost`.
struct CauseChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    r#type: String,
    title: &'a str,
    status: u16,
    detail: String,
    request_id: &'a str,
    /// Every location a refused request failed validation at, and why.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [crate::validation::Violation],
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn problem(err: GatewayError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = err.into_response(&HeaderValue::from_static("req-1"));
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn problems_carry_status_type_and_request_id_but_not_the_cause() {
        let err = GatewayError::with_cause(ErrorKind::UpstreamConnect, "connect to 10.0.0.7:8080 refused");
        let (status, headers, body) = problem(err).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers[CONTENT_TYPE], "application/problem+json");
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:turnpike:problem:upstream-unreachable",
                "title": "Bad Gateway",
                "status": 502,
                "detail": "the upstream could not be reached",
                "request_id": "req-1",
            })
        );
    }

    #[tokio::test]
    async fn method_not_allowed_lists_the_allowed_methods() {
        let (status, headers, _) =
            problem(ErrorKind::MethodNotAllowed { allow: vec![Method::GET, Method::POST] }.into()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[ALLOW], "GET, POST");
    }

    #[test]
    fn only_errors_before_the_upstream_saw_the_request_are_retry_safe() {
        assert!(GatewayError::from(ErrorKind::UpstreamConnect).retry_safe());
        assert!(!GatewayError::from(ErrorKind::UpstreamTimeout).retry_safe());
        assert!(!GatewayError::from(ErrorKind::UpstreamFailed).retry_safe());
        assert_eq!(GatewayError::from(ErrorKind::NoRoute).source(), ErrorSource::Client);
        assert_eq!(GatewayError::from(ErrorKind::UpstreamTimeout).source(), ErrorSource::Upstream);
    }
}
