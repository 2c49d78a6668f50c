//! The strict reading of an HTTP/1 request head. It runs before hyper sees the bytes
//! and refuses everything two parsers could read differently (the root of request
//! smuggling): `Content-Length` with `Transfer-Encoding`, duplicate, empty, signed or
//! listed lengths, codings other than a lone `chunked`, folded lines, and any NUL, CR
//! or LF outside a line ending. What it accepts, hyper reads the same way.

use super::Rejection;

/// Limits on a request head; see [`crate::Settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
    pub max_uri: usize,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// What the guard needs to know about an accepted head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub framing: Framing,
    /// The client asks to switch protocols (`Upgrade`); after this request the
    /// connection may no longer carry HTTP.
    pub upgrade: bool,
}

/// Longest method accepted; longer ones are garbage rather than methods.
const MAX_METHOD: usize = 32;

/// Reads one request head incrementally: feed it the buffer holding the head so far
/// (from the head's first byte) each time more arrives. No byte is scanned twice
/// (lines already read, nor the unfinished line's bytes already searched), so a
/// head trickling in byte by byte, even one long line, costs linear time.
#[derive(Debug, Default)]
pub struct HeadParser {
    /// Start of the first line not yet read.
    pos: usize,
    /// Bytes from `pos` up to here hold no LF: where the search for the line's end
    /// resumes.
    scanned: usize,
    /// While the request line is incomplete: its first two spaces, once seen
    /// (indexes into the buffer), found by scanning only the bytes new since the
    /// last call.
    spaces: [Option<usize>; 2],
    request_line: bool,
    http10: bool,
    headers: usize,
    content_length: Option<u64>,
    transfer_encoding: bool,
    hosts: usize,
    upgrade: bool,
}

impl HeadParser {
    /// `Ok(Some((len, head)))` once the head is complete: its first `len` bytes are
    /// the head, the rest belongs to the body or later requests. `Ok(None)` while it
    /// is incomplete and within the limits.
    pub fn parse(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<Option<(usize, Head)>, Rejection> {
        loop {
            let from = self.scanned.max(self.pos);
            let Some(offset) = buf[from..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let end = from + offset + 1;
            if end > limits.max_bytes {
                return Err(self.too_large(&buf[self.pos..end], limits));
            }
            let line = &buf[self.pos..end - 1];
            let line = line.strip_suffix(b"\r").ok_or(Rejection::Malformed("a line ends in a bare LF"))?;
            if line.contains(&b'\r') {
                return Err(Rejection::Malformed("a line holds a bare CR"));
            }
            self.pos = end;
            if !self.request_line {
                // At least one empty line before the request line must be ignored
                // (RFC 9112 §2.2); they still count towards the head's size.
                if !line.is_empty() {
                    self.request_line(line, limits)?;
                }
            } else if line.is_empty() {
                return self.finish().map(|head| Some((end, head)));
            } else {
                self.header(line, limits)?;
            }
        }
        if buf.len() > limits.max_bytes {
            return Err(self.too_large(&buf[self.pos..], limits));
        }
        if !self.request_line {
            self.check_unfinished_request_line(buf, limits)?;
        }
        self.scanned = buf.len();
        Ok(None)
    }

    /// [`Self::check_partial_request_line`] for the unfinished line at `pos`, from
    /// the spaces found so far: only the bytes that arrived since the last call are
    /// scanned.
    fn check_unfinished_request_line(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<(), Rejection> {
        let from = self.scanned.max(self.pos);
        for (i, &b) in buf.iter().enumerate().skip(from) {
            if b == b' ' {
                match &mut self.spaces {
                    [None, _] => self.spaces[0] = Some(i),
                    [Some(_), second @ None] => *second = Some(i),
                    [Some(_), Some(_)] => break,
                }
            }
        }
        // A CR at the end may be the start of the line's CRLF: not part of the line.
        let end = if buf.last() == Some(&b'\r') { buf.len() - 1 } else { buf.len() };
        match self.spaces {
            [None, _] if end.saturating_sub(self.pos) > MAX_METHOD => {
                Err(Rejection::Malformed("the method is too long"))
            }
            [None, _] => Ok(()),
            [Some(sp), _] if sp - self.pos > MAX_METHOD => Err(Rejection::Malformed("the method is too long")),
            [Some(sp), second] => {
                let target_end = second.unwrap_or(end).max(sp + 1);
                if target_end - (sp + 1) > limits.max_uri { Err(Rejection::UriTooLong) } else { Ok(()) }
            }
        }
    }

    /// 414 when the excess is in the request target, 431 otherwise.
    fn too_large(&self, line: &[u8], limits: &HeadLimits) -> Rejection {
        match self.check_partial_request_line(line, limits) {
            Err(r) if !self.request_line => r,
            _ => Rejection::HeadTooLarge,
        }
    }

    /// Refuses a request line as soon as its beginning shows it will be refused, so
    /// that a long target is answered with 414 without waiting for its end.
    fn check_partial_request_line(&self, line: &[u8], limits: &HeadLimits) -> Result<(), Rejection> {
        let line = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\r")).unwrap_or(line);
        match line.iter().position(|&b| b == b' ') {
            None if line.len() > MAX_METHOD => Err(Rejection::Malformed("the method is too long")),
            None => Ok(()),
            // Also when the whole line came at once, so the outcome never depends on
            // how the bytes were split.
            Some(sp) if sp > MAX_METHOD => Err(Rejection::Malformed("the method is too long")),
            Some(sp) => {
                let rest = &line[sp + 1..];
                let target = rest.iter().position(|&b| b == b' ').map_or(rest, |end| &rest[..end]);
                if target.len() > limits.max_uri { Err(Rejection::UriTooLong) } else { Ok(()) }
            }
        }
    }

    fn request_line(&mut self, line: &[u8], limits: &HeadLimits) -> Result<(), Rejection> {
        self.check_partial_request_line(line, limits)?;
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejection::Malformed("the request line is not `method target version`"));
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err(Rejection::Malformed("invalid method"));
        }
        if method == b"CONNECT" {
            return Err(Rejection::Malformed("CONNECT is not supported"));
        }
        if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
            return Err(Rejection::Malformed("invalid request target"));
        }
        self.http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return Err(Rejection::Malformed("unsupported HTTP version")),
        };
        self.request_line = true;
        Ok(())
    }

    fn header(&mut self, line: &[u8], limits: &HeadLimits) -> Result<(), Rejection> {
        self.headers += 1;
        if self.headers > limits.max_headers {
            return Err(Rejection::TooManyHeaders);
        }
        let (name, value) = field_line(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length.is_some() {
                return Err(Rejection::Malformed("duplicate Content-Length"));
            }
            self.content_length = Some(content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.transfer_encoding {
                return Err(Rejection::Malformed("duplicate Transfer-Encoding"));
            }
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Rejection::Malformed("Transfer-Encoding other than chunked"));
            }
            self.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
        Ok(())
    }

    fn finish(&self) -> Result<Head, Rejection> {
        if self.transfer_encoding && self.content_length.is_some() {
            return Err(Rejection::Malformed("Content-Length with Transfer-Encoding"));
        }
        if self.transfer_encoding && self.http10 {
            return Err(Rejection::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        match self.hosts {
            0 if !self.http10 => return Err(Rejection::Malformed("missing Host")),
            0 | 1 => {}
            _ => return Err(Rejection::Malformed("duplicate Host")),
        }
        let framing = match (self.transfer_encoding, self.content_length) {
            (true, _) => Framing::Chunked,
            (false, Some(0) | None) => Framing::Empty,
            (false, Some(n)) => Framing::Length(n),
        };
        Ok(Head { framing, upgrade: self.upgrade && !self.http10 })
    }
}

/// Splits a header (or trailer) field line into its name and trimmed value,
/// refusing folded lines, bad names, whitespace before the colon and control
/// characters in the value.
pub fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Rejection> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Rejection::Malformed("obsolete line folding"));
    }
    let colon = line.iter().position(|&b| b == b':').ok_or(Rejection::Malformed("a header line has no colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Rejection::Malformed("invalid header name"));
    }
    let value = line[colon + 1..].trim_ascii();
    if !value.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80) {
        return Err(Rejection::Malformed("invalid character in a header value"));
    }
    Ok((name, value))
}

/// A `Content-Length` value: digits only (no sign, no list), fitting in 64 bits.
fn content_length(value: &[u8]) -> Result<u64, Rejection> {
    if value.is_empty() {
        return Err(Rejection::Malformed("empty Content-Length"));
    }
    if !value.iter().all(u8::is_ascii_digit) {
        return Err(Rejection::Malformed("Content-Length is not a number"));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(Rejection::Malformed("Content-Length is too large"))
}

/// A token character (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `http_head` fuzz target and the replay of its seed corpus (`fuzz/`,
/// `gateway/tests/corpus.rs`); not an API. Reads `data` as the start of a connection,
/// under small limits and under the defaults, whole and fed in pieces as the guard
/// feeds it, and panics when the readings disagree or an accepted head breaks what
/// acceptance promises. Returns the length of the head accepted under the default
/// limits (`None` while incomplete), or why it was refused.
#[doc(hidden)]
pub fn fuzz_head(data: &[u8]) -> Result<Option<usize>, Rejection> {
    const SMALL: HeadLimits = HeadLimits { max_bytes: 256, max_headers: 4, max_uri: 40 };
    let defaults = crate::settings::Settings::default();
    let default = HeadLimits {
        max_bytes: defaults.max_header_bytes,
        max_headers: defaults.max_headers,
        max_uri: defaults.max_uri_bytes,
    };
    // Small pieces, their size taken from the input so the fuzzer explores where reads
    // split the head, then reads of 4 KiB (keeping a run over a long input short).
    let step = data.first().map_or(1, |b| usize::from(b % 16) + 1);
    let small = data.len().min(512);
    let mut outcome = Ok(None);
    for limits in [SMALL, default] {
        let whole = HeadParser::default().parse(data, &limits);
        let mut parser = HeadParser::default();
        let mut pieces = Ok(None);
        for end in (step..small).step_by(step).chain((small..data.len()).step_by(4096)).chain([data.len()]) {
            pieces = parser.parse(&data[..end], &limits);
            if !matches!(pieces, Ok(None)) {
                break;
            }
        }
        match (&whole, &pieces) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "read whole and in pieces of {step}"),
            (Err(_), Err(_)) => {}
            _ => panic!("read whole: {whole:?}; in pieces of {step}: {pieces:?}"),
        }
        if let Ok(Some((len, head))) = whole {
            fuzzing::check_accepted(&data[..len], head, &limits);
        }
        outcome = whole.map(|read| read.map(|(len, _)| len));
    }
    outcome
}

/// An independent, plain reading of an accepted head, for [`fuzz_head`].
mod fuzzing {
    use super::*;

    /// Panics unless `head` (the bytes accepted) is what the parser promises to accept.
    pub(super) fn check_accepted(bytes: &[u8], head: Head, limits: &HeadLimits) {
        assert!(bytes.len() <= limits.max_bytes, "longer than the limit");
        assert!(bytes.ends_with(b"\r\n\r\n"), "not ended by an empty line");
        for (i, &b) in bytes.iter().enumerate() {
            assert_ne!(b, 0, "NUL at {i}");
            assert!(b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'), "bare LF at {i}");
            assert!(b != b'\r' || bytes.get(i + 1) == Some(&b'\n'), "bare CR at {i}");
        }
        let text = &bytes[..bytes.len() - 4];
        let mut lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.by_ref().find(|l| !l.is_empty()).expect("a request line");
        let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
        let [method, target, version] = parts[..] else { panic!("request line {request_line:?}") };
        assert!(!method.is_empty() && method.len() <= MAX_METHOD && method.iter().all(|&b| is_tchar(b)));
        assert_ne!(method, b"CONNECT");
        assert!(!target.is_empty() && target.len() <= limits.max_uri);
        assert!(target.iter().all(|b| (0x21..=0x7e).contains(b)));
        let http11 = match version {
            b"HTTP/1.1" => true,
            b"HTTP/1.0" => false,
            other => panic!("version {other:?}"),
        };
        let (mut fields, mut lengths, mut codings, mut hosts, mut upgrade) = (0, Vec::new(), Vec::new(), 0, false);
        for line in lines {
            fields += 1;
            assert!(!matches!(line.first(), Some(b' ' | b'\t')), "folded line");
            let colon = line.iter().position(|&b| b == b':').expect("a colon");
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            assert!(!name.is_empty() && name.iter().all(|&b| is_tchar(b)), "name {name:?}");
            match name.to_ascii_lowercase().as_slice() {
                b"content-length" => lengths.push(value),
                b"transfer-encoding" => codings.push(value),
                b"host" => hosts += 1,
                b"upgrade" => upgrade = true,
                _ => {}
            }
        }
        assert!(fields <= limits.max_headers, "{fields} fields");
        assert!(lengths.len() <= 1 && codings.len() <= 1, "repeated framing fields");
        assert!(lengths.is_empty() || codings.is_empty(), "Content-Length with Transfer-Encoding");
        assert!(if http11 { hosts == 1 } else { hosts <= 1 }, "{hosts} Host fields");
        let length = lengths.first().map(|v| {
            assert!(!v.is_empty() && v.iter().all(u8::is_ascii_digit), "Content-Length {v:?}");
            std::str::from_utf8(v).unwrap().parse::<u64>().expect("a Content-Length that fits")
        });
        let expected = match (codings.first(), length) {
            (Some(coding), None) => {
                assert!(coding.eq_ignore_ascii_case(b"chunked") && http11, "coding {coding:?}");
                Framing::Chunked
            }
            (None, None | Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (Some(_), Some(_)) => unreachable!(),
        };
        assert_eq!(head, Head { framing: expected, upgrade: upgrade && http11 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_bytes: 256, max_headers: 4, max_uri: 40 };

    fn parse(head: &str) -> Result<Option<(usize, Head)>, Rejection> {
        HeadParser::default().parse(head.as_bytes(), &LIMITS)
    }

    /// Feeds `text` one byte at a time, as a slow client would send it.
    fn trickle(text: &str) -> Result<Option<(usize, Head)>, Rejection> {
        let mut parser = HeadParser::default();
        for end in 1..text.len() {
            if let Some(done) = parser.parse(&text.as_bytes()[..end], &LIMITS)? {
                return Ok(Some(done));
            }
        }
        parser.parse(text.as_bytes(), &LIMITS)
    }

    #[test]
    fn unfinished_request_lines_are_judged_alike_whole_or_trickled() {
        let long_target = format!("GET /{} HTTP/1.1\r\nhost: a\r\n\r\n", "a".repeat(60));
        let long_method = format!("{} / HTTP/1.1\r\nhost: a\r\n\r\n", "G".repeat(40));
        let spaced = "GET /x HTTP/1.1 \r\nhost: a\r\n\r\n";
        let fine = "\r\nGET /just-forty-bytes-of-target-aaaaaaaaaaaa HTTP/1.1\r\nhost: a\r\n\r\n";
        for text in [long_target.as_str(), long_method.as_str(), spaced, fine] {
            let whole = parse(text).map(|done| done.map(|(len, _)| len));
            let trickled = trickle(text).map(|done| done.map(|(len, _)| len));
            assert_eq!(whole, trickled, "{text:?}");
        }
        assert_eq!(trickle(&long_target).unwrap_err(), Rejection::UriTooLong);
        assert_eq!(trickle(&long_method).unwrap_err(), Rejection::Malformed("the method is too long"));
        assert!(trickle(fine).unwrap().is_some());
        // Refused as soon as the target passes the limit, before the line ends.
        let mut parser = HeadParser::default();
        let partial = format!("GET /{}", "a".repeat(40));
        assert_eq!(parser.parse(&partial.as_bytes()[..44], &LIMITS), Ok(None));
        assert_eq!(parser.parse(partial.as_bytes(), &LIMITS).unwrap_err(), Rejection::UriTooLong);
    }

    fn head(text: &str) -> Head {
        let (len, head) = parse(text).unwrap().unwrap_or_else(|| panic!("incomplete: {text:?}"));
        assert_eq!(len, text.find("\r\n\r\n").unwrap() + 4);
        head
    }

    fn refused(text: &str) -> Rejection {
        parse(text).expect_err(text)
    }

    #[test]
    fn plain_heads_are_read_with_their_framing() {
        let h = head("GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h, Head { framing: Framing::Empty, upgrade: false });
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nbody").framing, Framing::Length(12));
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\ncontent-length:  0 \r\n\r\n").framing, Framing::Empty);
        assert_eq!(head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").framing, Framing::Chunked);
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(!head("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n").upgrade, "HTTP/1.0 has no upgrades");
        assert_eq!(head("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").framing, Framing::Empty, "leading empty line");
    }

    #[test]
    fn heads_are_read_incrementally() {
        let text = b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nnext";
        let mut parser = HeadParser::default();
        for end in 1..text.len() - 4 {
            assert_eq!(parser.parse(&text[..end], &LIMITS), Ok(None), "{end}");
        }
        assert_eq!(parser.parse(text, &LIMITS).unwrap().unwrap().0, text.len() - 4);
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for case in cases {
            assert!(matches!(refused(case), Rejection::Malformed(_)), "{case:?}");
        }
    }

    #[test]
    fn bad_characters_and_folding_are_refused() {
        let cases = [
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\tX-A: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        ];
        for case in cases {
            assert!(matches!(refused(case), Rejection::Malformed(_)), "{case:?}");
        }
    }

    #[test]
    fn limits_answer_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40));
        assert_eq!(refused(&long_target), Rejection::UriTooLong);
        // Known before the request line ends.
        assert_eq!(refused(&format!("GET /{}", "a".repeat(41))), Rejection::UriTooLong);
        assert_eq!(refused(&format!("GET /{}", "a".repeat(300))), Rejection::UriTooLong);
        assert!(parse(&format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(39))).unwrap().is_some());
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: 1\r\n".repeat(4));
        assert_eq!(refused(&many), Rejection::TooManyHeaders);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n", "v".repeat(256));
        assert_eq!(refused(&big), Rejection::HeadTooLarge);
        let unterminated = format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: {}", "v".repeat(256));
        assert_eq!(refused(&unterminated), Rejection::HeadTooLarge, "refused before the line ends");
        assert!(matches!(refused(&"A".repeat(33)), Rejection::Malformed(_)));
        assert!(matches!(
            refused(&format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(33))),
            Rejection::Malformed(_)
        ));
    }
}
