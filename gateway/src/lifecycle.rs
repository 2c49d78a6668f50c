//! What a version's lifecycle state adds to its responses: deprecated versions
//! announce themselves (RFC 9745 `Deprecation`, RFC 8594 `Sunset`, RFC 8288 `Link`
//! to the successor). Retired versions never reach here: the router answers 410.

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};

pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// What is known about a version's deprecation.
#[derive(Debug, Clone, Default)]
pub struct Deprecation<'a> {
    /// When the version was (or will be) deprecated. RFC 9745 only allows a date,
    /// so without one no `Deprecation` field is sent.
    pub deprecated_at: Option<DateTime<Utc>>,
    pub sunset_at: Option<DateTime<Utc>>,
    /// Base path of the version that replaces this one.
    pub successor: Option<&'a str>,
}

/// The headers to add to every response of a deprecated version.
pub fn deprecation_headers(d: &Deprecation<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(at) = d.deprecated_at {
        // RFC 9745: an sf-date, `@` followed by seconds since the epoch.
        let value = format!("@{}", at.timestamp());
        headers.insert(DEPRECATION, HeaderValue::try_from(value).expect("digits are a valid header value"));
    }
    if let Some(at) = d.sunset_at {
        // RFC 8594: an HTTP-date (IMF-fixdate).
        let value = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(SUNSET, HeaderValue::try_from(value).expect("a date is a valid header value"));
    }
    if let Some(successor) = d.successor {
        let value = format!("<{successor}>; rel=\"successor-version\"");
        // A base path that cannot be a header value is skipped, not fatal.
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.append(http::header::LINK, value);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn nothing_known_adds_nothing() {
        assert!(deprecation_headers(&Deprecation::default()).is_empty());
    }

    #[test]
    fn dates_and_successor_use_their_rfc_formats() {
        let headers = deprecation_headers(&Deprecation {
            deprecated_at: Some(Utc.with_ymd_and_hms(2023, 6, 30, 23, 59, 59).unwrap()),
            sunset_at: Some(Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).unwrap()),
            successor: Some("/petstore/v2"),
        });
        assert_eq!(headers[DEPRECATION], "@1688169599");
        assert_eq!(headers[SUNSET], "Mon, 05 Jan 2026 08:00:00 GMT");
        assert_eq!(headers[http::header::LINK], "</petstore/v2>; rel=\"successor-version\"");
    }
}
