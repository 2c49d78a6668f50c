//! Request path normalization: the one canonical form of a path, computed once before
//! routing so that the router and the upstream see the same path. Anything that could
//! make them disagree (dot segments climbing out, encoded slashes, bad encodings) is
//! refused rather than guessed at.

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error("the path contains an invalid percent-encoding")]
    InvalidEncoding,
    /// `%2F` would be one segment to the router but two to many upstreams.
    #[error("the path contains an encoded slash")]
    EncodedSlash,
    #[error("the path climbs above the root")]
    EscapesRoot,
}

/// Normalizes an origin-form path (without its query):
/// - percent-encodings of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
///   others are kept with upper-case hex; invalid encodings and `%2F` are refused;
/// - empty segments (`//`) are collapsed and `.` segments removed;
/// - `..` removes the previous segment and is refused when there is none;
/// - a trailing slash is kept (after `.`/`..` as well, as RFC 3986 does).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in rest.split('/') {
        let segment = decode_segment(raw_segment)?;
        // Only the last segment decides; an inner one just resets it.
        trailing_slash = true;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::EscapesRoot)?;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(raw.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy the run up to the next '%' as is (it may hold multi-byte characters).
            let end = raw[i..].find('%').map_or(raw.len(), |n| i + n);
            out.push_str(&raw[i..end]);
            i = end;
            continue;
        }
        let (hi, lo) =
            match (bytes.get(i + 1).copied().and_then(hex_value), bytes.get(i + 2).copied().and_then(hex_value)) {
                (Some(hi), Some(lo)) => (hi, lo),
                _ => return Err(PathError::InvalidEncoding),
            };
        let value = hi << 4 | lo;
        if value == b'/' {
            return Err(PathError::EncodedSlash);
        }
        if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in ["/", "/pets", "/pets/1", "/pets/", "/a/b:c@d/e;f=g", "/caf%C3%A9"] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn empty_and_dot_segments_are_removed() {
        assert_eq!(ok("//pets///1"), "/pets/1");
        assert_eq!(ok("/pets//"), "/pets/");
        assert_eq!(ok("/./pets/./1"), "/pets/1");
        assert_eq!(ok("/pets/."), "/pets/");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/."), "/");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        assert_eq!(normalize("/.."), Err(PathError::EscapesRoot));
        assert_eq!(normalize("/a/../../etc/passwd"), Err(PathError::EscapesRoot));
        assert_eq!(normalize("/a/%2e%2E/%2E%2e"), Err(PathError::EscapesRoot), "encoded dots are dots");
    }

    #[test]
    fn unreserved_encodings_are_decoded_and_others_upper_cased() {
        assert_eq!(ok("/%70%65%74%73/%7e%2D%5f"), "/pets/~-_");
        assert_eq!(ok("/a%20b/%c3%a9"), "/a%20b/%C3%A9");
        assert_eq!(ok("/a/%2e/b"), "/a/b");
        assert_eq!(ok("/q%3Fx"), "/q%3Fx");
    }

    #[test]
    fn encoded_slashes_and_bad_encodings_are_refused() {
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSlash));
        for bad in ["/a%", "/a%2", "/a%zz", "/%g0/x", "/a%%41"] {
            assert_eq!(normalize(bad), Err(PathError::InvalidEncoding), "{bad}");
        }
    }

    #[test]
    fn relative_targets_are_refused() {
        assert_eq!(normalize("pets"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }
}
