//! The strict reading of a chunked request body's framing (RFC 9112 §7.1): chunk
//! sizes in hex without signs, spaces or overflow, extensions without control
//! characters, data followed by CRLF, and trailer lines read like header lines. The
//! data itself is skipped over, never copied.

use super::Rejection;
use super::head::field_line;

/// Most hex digits of a chunk size: a 64-bit length.
const MAX_SIZE_DIGITS: u8 = 16;
/// Longest chunk extension accepted; nobody needs long ones.
const MAX_EXTENSION: usize = 4096;

/// Follows a chunked body through the bytes fed to it.
#[derive(Debug)]
pub struct ChunkedFraming {
    state: State,
    /// The trailer line being read.
    line: Vec<u8>,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { size: u64, digits: u8 },
    Extension { size: u64, len: usize },
    SizeLf { size: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    Trailer,
    Done,
}

impl ChunkedFraming {
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedFraming {
            state: State::Size { size: 0, digits: 0 },
            line: Vec::new(),
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Reads `input`, the next bytes of the connection. Returns how many of them
    /// belong to this body and whether the body ended there.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), Rejection> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                return Ok((i, true));
            }
            if let State::Data { left } = self.state {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                State::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < MAX_SIZE_DIGITS => {
                        let digit = u64::from(char::from(b).to_digit(16).expect("a hex digit"));
                        State::Size { size: size << 4 | digit, digits: digits + 1 }
                    }
                    b';' if digits > 0 => State::Extension { size, len: 0 },
                    b'\r' if digits > 0 => State::SizeLf { size },
                    _ => return Err(Rejection::Malformed("invalid chunk size")),
                },
                State::Extension { size, len } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\t' | 0x20..=0x7e | 0x80.. if len < MAX_EXTENSION => State::Extension { size, len: len + 1 },
                    _ => return Err(Rejection::Malformed("invalid chunk extension")),
                },
                State::SizeLf { size } => match b {
                    b'\n' if size == 0 => State::Trailer,
                    b'\n' => State::Data { left: size },
                    _ => return Err(Rejection::Malformed("a chunk size line ends without LF")),
                },
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
                State::DataCr | State::DataLf => return Err(Rejection::Malformed("chunk data longer than its size")),
                State::Trailer => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > self.max_trailer_bytes {
                        return Err(Rejection::Malformed("trailer section too large"));
                    }
                    if b != b'\n' {
                        self.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").ok_or(Rejection::Malformed("a line ends in a bare LF"))?;
                    if line.contains(&b'\r') {
                        return Err(Rejection::Malformed("a line holds a bare CR"));
                    }
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok((i, true));
                    }
                    field_line(line)?;
                    State::Trailer
                }
                State::Data { .. } | State::Done => unreachable!("handled above"),
            };
        }
        Ok((input.len(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &[u8]) -> Result<(usize, bool), Rejection> {
        ChunkedFraming::new(64).feed(body)
    }

    #[test]
    fn valid_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n1a;ext=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET /next";
        assert_eq!(read(body), Ok((body.len() - 9, true)));
        let trailers = b"0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n";
        assert_eq!(read(trailers), Ok((trailers.len(), true)));
        assert_eq!(read(b"A\r\n0123456789\r\n"), Ok((15, false)), "upper-case hex");
    }

    #[test]
    fn framing_survives_any_split() {
        let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        for split in 0..body.len() {
            let mut framing = ChunkedFraming::new(64);
            let (a, done) = framing.feed(&body[..split]).unwrap();
            assert_eq!((a, done), (split, false), "{split}");
            assert_eq!(framing.feed(&body[split..]), Ok((body.len() - split, true)), "{split}");
        }
    }

    #[test]
    fn bad_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"-5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello world\r\n",
            b"5\r\nhelloXY",
            b"10000000000000000\r\n",
            b"5;a\0b\r\nhello\r\n",
            b"0\r\nX-A: 1\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"0\r\nX-A: a\0\r\n\r\n",
        ] {
            assert!(matches!(read(bad), Err(Rejection::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(read(b"ffffffffffffffff\r\n"), Ok((18, false)), "the largest size still parses");
        let big_trailer = format!("0\r\nX-A: {}\r\n\r\n", "v".repeat(64));
        assert!(read(big_trailer.as_bytes()).is_err());
    }
}
