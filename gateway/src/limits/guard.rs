//! The connection guard: every byte a client sends passes through it before hyper
//! reads it.
//!
//! For HTTP/1 it holds each request head back until the head is complete and has
//! passed [`HeadParser`], then follows the body's framing to find where the next head
//! starts. A refused request never reaches hyper: the guard hands hyper a stand-in
//! request instead and records why in the [`ConnState`]; the service answers the
//! stand-in with the refusal (400, 408, 414, 431) and `Connection: close`. Going
//! through hyper keeps responses in order when requests are pipelined. A chunked
//! body found broken after its head was handed on ends hyper's read with an error,
//! which the pipeline answers with 400.
//!
//! Timeouts: the first head of a connection must be complete within
//! `header_read_timeout` of the accept, and every later head within that time of
//! its first byte (else 408 when bytes came, a silent close when none did). A
//! connection with no request in flight and no head started is closed after
//! `idle_timeout`: HTTP/1 ones by ending the read side, HTTP/2 ones through
//! [`ConnState::idle_expired`] so the server can send GOAWAY. Upgraded connections
//! (WebSocket) have no idle timeout here.
//!
//! On the write side, a write or flush the client leaves blocked (it does not read
//! what was sent) for longer than `send_timeout` fails, which ends the connection
//! and drops the response, and with it the upstream's: a client that stops reading
//! holds neither the connection nor an upstream's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::chunked::ChunkedFraming;
use super::head::{Framing, HeadLimits, HeadParser};
use super::{ConnState, Rejection};
use crate::settings::Settings;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Handed to hyper in place of a refused request; the service answers it with the
/// refusal recorded in the [`ConnState`].
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: turnpike.invalid\r\n\r\n";
/// Bytes read from the socket at a time when they must be inspected.
const READ_CHUNK: usize = 8 * 1024;

/// Wraps a connection's IO; see the module documentation.
pub struct Guard<IO> {
    io: IO,
    conn: Arc<ConnState>,
    limits: HeadLimits,
    header_timeout: Duration,
    idle_timeout: Duration,
    mode: Mode,
    /// Bytes read but not yet inspected (a partial request head).
    inbuf: BytesMut,
    /// Inspected bytes for hyper.
    out: BytesMut,
    /// Where inspected reads land; allocated on first use, so HTTP/2 connections
    /// never need it.
    scratch: Vec<u8>,
    /// Where in `out` the current message's head starts, while none of it has been
    /// handed to hyper yet (so the message can still be withdrawn).
    msg_start: Option<usize>,
    /// Heads handed (or queued) to hyper, stand-ins included.
    heads: u64,
    /// When the head being read started (the accept, for the first one).
    head_started: Instant,
    idle_since: Option<Instant>,
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
    eof: bool,
    send_timeout: Duration,
    /// Runs while a write or flush is blocked on the client.
    write_timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug)]
enum Mode {
    /// Nothing read yet: HTTP/2 prior knowledge or HTTP/1?
    Start,
    Head(HeadParser),
    Length {
        left: u64,
        upgrade: bool,
    },
    Chunked {
        framing: ChunkedFraming,
        upgrade: bool,
    },
    Http2,
    /// After a request asking to switch protocols: whatever follows is passed on.
    Upgraded,
    /// A stand-in was queued; nothing more is read.
    Rejected,
    /// A body went bad after its head was handed on: hyper's read fails.
    Failed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    Head,
    Idle,
}

impl<IO> Guard<IO> {
    pub fn new(io: IO, conn: Arc<ConnState>, settings: &Settings) -> Self {
        Guard {
            io,
            conn,
            limits: HeadLimits {
                max_bytes: settings.max_header_bytes,
                max_headers: settings.max_headers,
                max_uri: settings.max_uri_bytes,
            },
            header_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            mode: Mode::Start,
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            scratch: Vec::new(),
            msg_start: None,
            heads: 0,
            head_started: Instant::now(),
            idle_since: None,
            timer: None,
            eof: false,
            send_timeout: settings.send_timeout,
            write_timer: None,
        }
    }

    /// Passes on the outcome of a write or flush; one that has been blocked for
    /// `send_timeout` becomes an error.
    fn track_write<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.write_timer = None;
            return result;
        }
        let timeout = self.send_timeout;
        let timer =
            self.write_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(later(Instant::now(), timeout))));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.write_timer = None;
        tracing::debug!(?timeout, "the client did not read the response in time; closing the connection");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client did not read the response in time")))
    }

    /// Inspects `inbuf`, moving whatever is sound to `out`.
    fn process(&mut self) {
        loop {
            let mode = std::mem::replace(&mut self.mode, Mode::Rejected);
            self.mode = match mode {
                Mode::Start => {
                    let n = self.inbuf.len().min(H2_PREFACE.len());
                    if self.inbuf[..n] != H2_PREFACE[..n] {
                        Mode::Head(HeadParser::default())
                    } else if n == H2_PREFACE.len() {
                        Mode::Http2
                    } else {
                        self.mode = Mode::Start;
                        return;
                    }
                }
                Mode::Head(mut parser) => {
                    if self.inbuf.is_empty() {
                        self.mode = Mode::Head(parser);
                        return;
                    }
                    match parser.parse(&self.inbuf, &self.limits) {
                        Ok(None) => {
                            self.mode = Mode::Head(parser);
                            return;
                        }
                        Ok(Some((len, head))) => {
                            self.msg_start = Some(self.out.len());
                            self.pass(len);
                            self.heads += 1;
                            match head.framing {
                                Framing::Empty => self.after_body(head.upgrade),
                                Framing::Length(left) => Mode::Length { left, upgrade: head.upgrade },
                                Framing::Chunked => Mode::Chunked {
                                    framing: ChunkedFraming::new(self.limits.max_bytes),
                                    upgrade: head.upgrade,
                                },
                            }
                        }
                        Err(rejection) => {
                            self.reject(rejection);
                            return;
                        }
                    }
                }
                Mode::Length { left, upgrade } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.inbuf.len());
                    if n == 0 && left > 0 {
                        self.mode = Mode::Length { left, upgrade };
                        return;
                    }
                    self.pass(n);
                    let left = left - n as u64;
                    if left == 0 { self.after_body(upgrade) } else { Mode::Length { left, upgrade } }
                }
                Mode::Chunked { mut framing, upgrade } => {
                    if self.inbuf.is_empty() {
                        self.mode = Mode::Chunked { framing, upgrade };
                        return;
                    }
                    match framing.feed(&self.inbuf) {
                        Ok((n, done)) => {
                            self.pass(n);
                            if done { self.after_body(upgrade) } else { Mode::Chunked { framing, upgrade } }
                        }
                        Err(rejection) => {
                            self.reject_in_body(rejection);
                            return;
                        }
                    }
                }
                mode @ (Mode::Http2 | Mode::Upgraded) => {
                    let n = self.inbuf.len();
                    self.pass(n);
                    self.mode = mode;
                    return;
                }
                mode @ (Mode::Rejected | Mode::Failed(_)) => {
                    self.inbuf.clear();
                    self.mode = mode;
                    return;
                }
            };
        }
    }

    fn after_body(&mut self, upgrade: bool) -> Mode {
        self.head_started = Instant::now();
        if upgrade { Mode::Upgraded } else { Mode::Head(HeadParser::default()) }
    }

    /// Moves the first `n` inspected bytes of `inbuf` to `out`.
    fn pass(&mut self, n: usize) {
        let bytes = self.inbuf.split_to(n);
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
    }

    /// Refuses the request whose head is being read: it is replaced by a stand-in.
    fn reject(&mut self, rejection: Rejection) {
        tracing::debug!(?rejection, "refused a request before reading it");
        self.conn.reject(self.heads, rejection);
        self.out.extend_from_slice(STAND_IN);
        self.heads += 1;
        self.inbuf.clear();
        self.mode = Mode::Rejected;
    }

    /// Refuses the request whose body is being read: withdrawn if hyper has not seen
    /// its head yet, else hyper's read of it fails.
    fn reject_in_body(&mut self, rejection: Rejection) {
        match self.msg_start.take() {
            Some(start) => {
                self.out.truncate(start);
                self.heads -= 1;
                self.reject(rejection);
            }
            None => {
                tracing::debug!(?rejection, "refused a request body already being forwarded");
                self.inbuf.clear();
                self.mode = Mode::Failed(match rejection {
                    Rejection::Malformed(why) => why,
                    _ => "the request body is malformed",
                });
            }
        }
    }

    /// Hands inspected bytes to hyper.
    fn deliver(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.out.len());
        buf.put_slice(&self.out[..n]);
        self.out.advance(n);
        self.msg_start = self.msg_start.and_then(|start| start.checked_sub(n));
    }

    /// The timeout running now, if any.
    fn current_timeout(&mut self) -> Option<(Instant, Timeout)> {
        let head_in_progress = matches!(self.mode, Mode::Start) || !self.inbuf.is_empty();
        let idle = self.out.is_empty() && self.conn.in_flight() == 0;
        match self.mode {
            Mode::Start | Mode::Head(_) if head_in_progress => {
                self.idle_since = None;
                Some((later(self.head_started, self.header_timeout), Timeout::Head))
            }
            Mode::Head(_) | Mode::Http2 if idle => {
                let since = *self.idle_since.get_or_insert_with(Instant::now);
                Some((later(since, self.idle_timeout), Timeout::Idle))
            }
            _ => {
                self.idle_since = None;
                None
            }
        }
    }

    /// Polls the running timeout; `Some` when it has expired.
    ///
    /// One timer serves the whole connection and is re-armed lazily: a deadline later
    /// than the armed one (the usual case: every request moves the idle deadline on)
    /// leaves it be, and when it fires early it is moved to the deadline then
    /// current. So a busy keep-alive connection touches the timer wheel about once
    /// per timeout period, not once per request.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Option<Timeout> {
        let (deadline, kind) = self.current_timeout()?;
        let (armed, sleep) = self.timer.get_or_insert_with(|| (deadline, Box::pin(tokio::time::sleep_until(deadline))));
        if *armed > deadline {
            *armed = deadline;
            sleep.as_mut().reset(deadline);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Some(kind);
            }
            *armed = deadline;
            sleep.as_mut().reset(deadline);
        }
        None
    }
}

/// A timeout too long to matter.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `from + after`, or far in the future when that does not fit.
fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after.min(FAR_FUTURE)).unwrap_or(from)
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guard<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                this.deliver(buf);
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Failed(why) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why))),
                // Hyper answers the stand-in and closes; there is nothing more to read.
                Mode::Rejected => return Poll::Pending,
                _ => {}
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Bytes that need no inspection go straight into hyper's buffer.
            let direct = match this.mode {
                Mode::Http2 | Mode::Upgraded => true,
                Mode::Length { left, .. } => buf.remaining() as u64 <= left,
                _ => false,
            } && this.inbuf.is_empty();
            let read = if direct {
                let before = buf.filled().len();
                match Pin::new(&mut this.io).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len() - before;
                        if n == 0 {
                            this.eof = true;
                        } else if let Mode::Length { left, upgrade } = this.mode {
                            let left = left - n as u64;
                            this.mode =
                                if left == 0 { this.after_body(upgrade) } else { Mode::Length { left, upgrade } };
                        }
                        return Poll::Ready(Ok(()));
                    }
                    other => other,
                }
            } else {
                if this.scratch.is_empty() {
                    this.scratch = vec![0; READ_CHUNK];
                }
                let mut scratch = ReadBuf::new(&mut this.scratch);
                match Pin::new(&mut this.io).poll_read(cx, &mut scratch) {
                    Poll::Ready(Ok(())) => {
                        let n = scratch.filled().len();
                        if n == 0 {
                            this.eof = true;
                        } else {
                            if matches!(this.mode, Mode::Head(_)) && this.inbuf.is_empty() {
                                this.head_started = Instant::now();
                            }
                            this.inbuf.extend_from_slice(&this.scratch[..n]);
                            this.process();
                        }
                        continue;
                    }
                    other => other,
                }
            };
            if let Poll::Ready(Err(e)) = read {
                return Poll::Ready(Err(e));
            }
            this.conn.set_reader(cx.waker());
            match this.poll_timeout(cx) {
                None => return Poll::Pending,
                Some(Timeout::Head) if this.inbuf.is_empty() => {
                    // Nothing was sent: close without a word, as for an idle connection.
                    this.eof = true;
                }
                Some(Timeout::Head) => this.reject(Rejection::HeadTimeout),
                Some(Timeout::Idle) if matches!(this.mode, Mode::Http2) => {
                    this.conn.idle.notify_one();
                    // Asked once; the server takes it from here.
                    this.idle_since = Some(later(Instant::now(), FAR_FUTURE));
                    return Poll::Pending;
                }
                Some(Timeout::Idle) => this.eof = true,
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guard<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.track_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.track_write(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A guard over one end of an in-memory pipe; `chunks` are written to the other
    /// end one at a time (each read by the guard separately, as far as timing goes).
    fn guard(chunks: Vec<Vec<u8>>) -> (Guard<DuplexStream>, Arc<ConnState>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let conn = Arc::new(ConnState::default());
        (Guard::new(server, conn.clone(), &Settings::default()), conn)
    }

    fn rejection(conn: &ConnState) -> Option<(u64, Rejection)> {
        *conn.rejection.lock().unwrap()
    }

    #[tokio::test]
    async fn sound_requests_pass_unchanged_whatever_the_pieces() {
        let requests: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n\
            GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        for size in [1, 3, 7, 64, requests.len()] {
            let (mut guard, conn) = guard(requests.chunks(size).map(<[u8]>::to_vec).collect());
            let mut out = Vec::new();
            guard.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, requests, "in pieces of {size}");
            assert_eq!(rejection(&conn), None);
        }
    }

    #[tokio::test]
    async fn http2_connections_pass_through_unread() {
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend_from_slice(b"\0\0\x04\x08\0\0\0\0\0 not HTTP/1 at all\r\n\n");
        let (mut guard, conn) = guard(vec![bytes[..10].to_vec(), bytes[10..].to_vec()]);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, bytes);
        assert_eq!(rejection(&conn), None);
    }

    #[tokio::test]
    async fn a_refused_request_is_replaced_by_the_stand_in() {
        let good = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let bad = b"GET /b HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let (mut guard, conn) = guard(vec![[good.clone(), bad].concat()]);
        let mut out = vec![0; good.len() + STAND_IN.len()];
        guard.read_exact(&mut out).await.unwrap();
        assert_eq!(out, [good, STAND_IN.to_vec()].concat());
        assert!(matches!(rejection(&conn), Some((1, Rejection::Malformed(_)))));
    }

    #[tokio::test]
    async fn a_bad_chunk_withdraws_a_head_not_yet_handed_on() {
        let bytes = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nxyz\r\n".to_vec();
        let (mut guard, conn) = guard(vec![bytes]);
        let mut out = vec![0; STAND_IN.len()];
        guard.read_exact(&mut out).await.unwrap();
        assert_eq!(out, STAND_IN);
        assert_eq!(rejection(&conn), Some((0, Rejection::Malformed("invalid chunk size"))));
    }

    #[tokio::test]
    async fn a_bad_chunk_after_its_head_was_handed_on_fails_the_read() {
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (mut guard, conn) = guard(vec![head.clone(), b"5\r\nhello\r\nxyz\r\n".to_vec()]);
        let mut out = vec![0; head.len()];
        guard.read_exact(&mut out).await.unwrap();
        let err = guard.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(rejection(&conn), None);
    }

    #[tokio::test]
    async fn after_an_upgrade_request_bytes_pass_unread() {
        let bytes = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85\0\0\0\0hello\r\n\n"
            .to_vec();
        let (mut guard, conn) = guard(vec![bytes.clone()]);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, bytes);
        assert_eq!(rejection(&conn), None);
    }
}
