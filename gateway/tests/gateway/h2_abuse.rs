//! HTTP/2 abuse, with frames written by hand over a TCP stream: rapid reset
//! (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 style), SETTINGS and PING
//! floods, and header lists over the limit. Each attack is bounded in frames and time;
//! each test checks how the gateway ends or refuses it, what reached the (real,
//! counting) upstream, and that other clients are still served meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::AsyncRead;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::*;

// ---------------------------------------------------------------------------
// Frames (RFC 9113 §4) and HPACK literals (RFC 7541)

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn put_frame(buf: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    buf.extend_from_slice(&len.to_be_bytes()[1..]);
    buf.extend_from_slice(&[kind, flags]);
    buf.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    buf.extend_from_slice(payload);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(9 + payload.len());
    put_frame(&mut buf, kind, flags, stream, payload);
    buf
}

/// An integer with an N-bit prefix (RFC 7541 §5.1); `high` holds the bits above it.
fn hpack_int(buf: &mut Vec<u8>, high: u8, prefix_bits: u32, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        buf.push(high | value as u8);
        return;
    }
    buf.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        buf.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    buf.push(rest as u8);
}

/// A field as a literal without indexing with a literal name, no Huffman coding
/// (RFC 7541 §6.2.2): nothing enters the dynamic table.
fn hpack_literal(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.push(0x00);
    hpack_int(buf, 0, 7, name.len());
    buf.extend_from_slice(name);
    hpack_int(buf, 0, 7, value.len());
    buf.extend_from_slice(value);
}

/// The header block of a GET for `path` plus `extra` fields.
fn request_block(path: &str, extra: &[(String, String)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [(":method", "GET"), (":scheme", "http"), (":authority", "gateway.test"), (":path", path)] {
        hpack_literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    for (name, value) in extra {
        hpack_literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The next frame, or `None` at the end of the stream (or when it was reset).
async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
    Some(Frame { kind: head[3], flags: head[4], stream, payload })
}

/// A GOAWAY frame's last stream id and error code.
fn goaway_of(f: &Frame) -> (u32, u32) {
    let last = u32::from_be_bytes(f.payload[0..4].try_into().unwrap()) & 0x7fff_ffff;
    (last, u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
}

/// What the gateway sent on a connection until it ended.
#[derive(Debug, Default)]
struct Seen {
    /// The first GOAWAY: last stream id and error code.
    goaway: Option<(u32, u32)>,
    rst_streams: usize,
    /// Acknowledgements of PING and SETTINGS frames.
    acks: usize,
    frames: usize,
    /// The connection ended (EOF or reset) within the time allowed.
    closed: bool,
}

/// Reads frames until the connection ends or `limit` passes.
async fn watch(mut r: OwnedReadHalf, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, read_frame(&mut r)).await else { return seen };
        let Some(f) = next else {
            seen.closed = true;
            return seen;
        };
        seen.frames += 1;
        match f.kind {
            GOAWAY if seen.goaway.is_none() => seen.goaway = Some(goaway_of(&f)),
            RST_STREAM => seen.rst_streams += 1,
            SETTINGS | PING if f.flags & ACK != 0 => seen.acks += 1,
            _ => {}
        }
    }
}

/// How the gateway answered a stream: the response's status, or the RST_STREAM code.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(u16),
    Reset(u32),
}

/// Reads frames until the answer to `stream` (other streams' frames are skipped).
async fn answer(r: &mut OwnedReadHalf, stream: u32) -> Answer {
    let read = async {
        loop {
            let f = read_frame(r).await.expect("the connection stayed open");
            match f.kind {
                HEADERS if f.stream == stream => {
                    let status = status_of(&f.payload);
                    return Answer::Status(status.unwrap_or_else(|| panic!("no :status in {:x?}", f.payload)));
                }
                RST_STREAM if f.stream == stream => {
                    return Answer::Reset(u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
                }
                GOAWAY => panic!("GOAWAY {:?} instead of an answer", goaway_of(&f)),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer in time")
}

/// The `:status` at the start of a response header block, as the gateway's HPACK
/// encoder writes it on a connection's first responses: an indexed static entry
/// (RFC 7541 Appendix A, 8–14) or a literal with the static name `:status`, its value
/// raw or Huffman-coded. `None` for anything else.
fn status_of(block: &[u8]) -> Option<u16> {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let mut i = 0;
    // Dynamic table size updates (001xxxxx) may come first.
    while block.get(i)? & 0xe0 == 0x20 {
        let long = block[i] & 0x1f == 0x1f;
        i += 1;
        while long && block.get(i)? & 0x80 != 0 {
            i += 1;
        }
        i += usize::from(long);
    }
    let b = block[i];
    let name = match b {
        _ if b & 0x80 != 0 => return STATIC.get(usize::from(b & 0x7f).checked_sub(8)?).copied(),
        _ if b & 0xc0 == 0x40 => b & 0x3f,
        // Without indexing (0000) or never indexed (0001).
        _ if b & 0xe0 == 0x00 => b & 0x0f,
        _ => return None,
    };
    if !(8..=14).contains(&name) {
        return None;
    }
    let head = *block.get(i + 1)?;
    let value = block.get(i + 2..i + 2 + usize::from(head & 0x7f))?;
    let digits = if head & 0x80 != 0 { huffman_digits(value)? } else { String::from_utf8(value.to_vec()).ok()? };
    digits.parse().ok()
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B: `0`–`2` are
/// the 5-bit codes 0–2, `3`–`9` the 6-bit codes 25–31; padding is all ones).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
    let mut out = String::new();
    let mut at = 0;
    while bits.len() - at >= 5 && bits[at..].contains(&0) {
        let five = bits[at..at + 5].iter().fold(0u8, |v, &b| v << 1 | b);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
            continue;
        }
        let six = five << 1 | *bits.get(at + 5)?;
        if !(25..=31).contains(&six) {
            return None;
        }
        out.push(char::from(b'0' + six - 22));
        at += 6;
    }
    bits[at..].iter().all(|&b| b == 1).then_some(out)
}

/// Sends the preface and empty SETTINGS, waits for the gateway's SETTINGS and
/// acknowledges them.
async fn h2_handshake(stream: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    stream.set_nodelay(true).unwrap();
    let (mut r, mut w) = stream.into_split();
    let mut hello = PREFACE.to_vec();
    put_frame(&mut hello, SETTINGS, 0, 0, &[]);
    w.write_all(&hello).await.unwrap();
    loop {
        let f = read_frame(&mut r).await.expect("the gateway speaks HTTP/2");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            break;
        }
    }
    w.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    (r, w)
}

async fn h2_connect(addr: SocketAddr) -> (OwnedReadHalf, OwnedWriteHalf) {
    h2_handshake(TcpStream::connect(addr).await.unwrap()).await
}

/// Writes `chunks` until the gateway stops taking them or `limit` passes. Returns
/// the bytes written and whether the connection broke (was closed or reset).
async fn flood(w: &mut OwnedWriteHalf, chunks: impl Iterator<Item = Vec<u8>>, limit: Duration) -> (usize, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut sent = 0;
    for chunk in chunks {
        match tokio::time::timeout_at(deadline, w.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => return (sent, true),
            Err(_) => return (sent, false),
        }
    }
    (sent, false)
}

// ---------------------------------------------------------------------------
// The gateway and its upstream

/// An upstream that counts the requests it gets and answers each at once.
struct Counting {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl Counting {
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "counted" }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Counting { addr, count }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

async fn gateway(up: &Counting, settings: Settings) -> TestGateway {
    let gw = TestGateway::start_with(settings).await;
    let content = content(
        vec![version("v1", "/pets/v1", VersionState::Published, Some("u"), vec![route("all", "/*")])],
        vec![upstream("u", &[(format!("http://{}", up.addr), 1)])],
    );
    gw.publish(1, content).await;
    gw
}

/// A well-behaved HTTP/2 client (hyper's) on a connection of its own gets through.
async fn still_served(gw: &TestGateway) {
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<http_body_util::Empty<Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(gw.url("/pets/v1/ok").parse().unwrap()))
        .await
        .expect("the gateway answered other clients in time")
        .unwrap();
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------
// Tests

/// CVE-2023-44487: streams opened and reset at once, thousands of times. The gateway
/// counts resets of streams it has not yet accepted and ends the connection with
/// GOAWAY (ENHANCE_YOUR_CALM) after a few dozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_with_goaway() {
    const STREAMS: u32 = 10_000;
    let up = Counting::start().await;
    let gw = gateway(&up, Settings::default()).await;
    let (r, mut w) = h2_connect(gw.proxy).await;
    let reader = tokio::spawn(watch(r, Duration::from_secs(20)));
    let block = request_block("/pets/v1/reset", &[]);
    let batches = (0..STREAMS / 100).map(|batch| {
        let mut buf = Vec::new();
        for i in 0..100 {
            let id = 2 * (batch * 100 + i) + 1;
            put_frame(&mut buf, HEADERS, END_HEADERS | END_STREAM, id, &block);
            put_frame(&mut buf, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
        }
        buf
    });
    let attack = flood(&mut w, batches, Duration::from_secs(20));
    let ((sent, broken), ()) = tokio::join!(attack, still_served(&gw));
    let seen = reader.await.unwrap();
    let reached = up.count() - 1;
    eprintln!("took {sent} bytes (broken: {broken}); {seen:?}; {reached} reached the upstream");
    let (last, code) = seen.goaway.expect("GOAWAY");
    assert_eq!(code, ENHANCE_YOUR_CALM);
    assert!(seen.closed, "the connection was closed");
    assert!(last < 2 * 200, "GOAWAY after {} of {STREAMS} streams", last / 2);
    assert!(reached <= 100, "{reached} reset requests reached the upstream");
    still_served(&gw).await;
}

/// "MadeYouReset" (CVE-2025-8671): streams the client makes the gateway reset, here
/// with a WINDOW_UPDATE that overflows the stream's window (a stream error) right
/// after a complete request. Each such request may cost an
/// upstream call; the gateway ends the connection with GOAWAY once it has reset
/// `max_local_error_reset_streams` (hyper's default, 1024) of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_client_makes_the_gateway_reset_are_bounded() {
    const STREAMS: u32 = 10_000;
    let up = Counting::start().await;
    let gw = gateway(&up, Settings::default()).await;
    let (r, mut w) = h2_connect(gw.proxy).await;
    let reader = tokio::spawn(watch(r, Duration::from_secs(20)));
    let block = request_block("/pets/v1/made-you-reset", &[]);
    let batches = (0..STREAMS / 100).map(|batch| {
        let mut buf = Vec::new();
        for i in 0..100 {
            let id = 2 * (batch * 100 + i) + 1;
            put_frame(&mut buf, HEADERS, END_HEADERS | END_STREAM, id, &block);
            put_frame(&mut buf, WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes());
        }
        buf
    });
    let (sent, broken) = flood(&mut w, batches, Duration::from_secs(20)).await;
    let seen = reader.await.unwrap();
    let reached = up.count();
    eprintln!("took {sent} bytes (broken: {broken}); {seen:?}; {reached} reached the upstream");
    let (last, code) = seen.goaway.expect("GOAWAY");
    assert_eq!(code, ENHANCE_YOUR_CALM);
    assert!(seen.closed, "the connection was closed");
    assert!(last < 2 * 1100, "GOAWAY after {} of {STREAMS} streams", last / 2);
    assert!(reached <= 1100, "{reached} reset requests reached the upstream");
    still_served(&gw).await;
}

/// CVE-2024-27316 style: HEADERS without END_HEADERS, then CONTINUATION frames that
/// never end, full of header fields or empty. The gateway ends the connection with
/// GOAWAY after a handful of frames, having taken far less than was sent: it neither
/// buffers the header block nor keeps decoding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_are_cut_off() {
    const FRAMES: usize = 10_000;
    let up = Counting::start().await;
    let gw = gateway(&up, Settings::default()).await;
    // 16 fields of 1000-byte values: just under the default 16 KiB frame size.
    let mut full = Vec::new();
    for i in 0..16 {
        hpack_literal(&mut full, format!("x-flood-{i:02}").as_bytes(), &[b'v'; 1000]);
    }
    for (name, payload) in [("full", full), ("empty", Vec::new())] {
        let (r, mut w) = h2_connect(gw.proxy).await;
        let reader = tokio::spawn(watch(r, Duration::from_secs(20)));
        let headers = frame(HEADERS, END_STREAM, 1, &request_block("/pets/v1/flood", &[]));
        let frames = std::iter::once(headers).chain((0..FRAMES).map(|_| frame(CONTINUATION, 0, 1, &payload)));
        let total = FRAMES * (9 + payload.len());
        let (sent, broken) = flood(&mut w, frames, Duration::from_secs(20)).await;
        let seen = reader.await.unwrap();
        eprintln!("{name}: took {sent} of {total} bytes (broken: {broken}); {seen:?}");
        let (last, code) = seen.goaway.unwrap_or_else(|| panic!("{name}: no GOAWAY"));
        assert_eq!((last, code), (0, ENHANCE_YOUR_CALM), "{name}");
        assert!(seen.closed, "{name}: the connection was closed");
        if name == "full" {
            assert!(broken, "the gateway stopped reading");
            assert!(sent < total / 4, "the gateway took {sent} of {total} bytes");
        }
    }
    still_served(&gw).await;
    assert_eq!(up.count(), 1, "only the well-behaved request reached the upstream");
}

/// A header list over `max_header_bytes` gets 431 from the HTTP/2 layer, and one
/// with more than `max_headers` fields 431 from the gateway; neither reaches the
/// upstream, and the connection goes on serving. (Each 431 is a connection's first
/// response, the one whose `:status` the test can read without an HPACK table.)
#[tokio::test]
async fn oversized_header_lists_get_431() {
    let up = Counting::start().await;
    let gw = gateway(&up, Settings::default()).await;
    let fields =
        |n: usize, size: usize| (0..n).map(|i| (format!("x-big-{i:03}"), "v".repeat(size))).collect::<Vec<_>>();
    // 20 KiB of fields, in a HEADERS frame and a CONTINUATION (frames are 16 KiB at most).
    let big = request_block("/pets/v1/big", &fields(20, 1024));
    let (head, tail) = big.split_at(16_000);
    let (mut r, mut w) = h2_connect(gw.proxy).await;
    let mut buf = frame(HEADERS, END_STREAM, 1, head);
    put_frame(&mut buf, CONTINUATION, END_HEADERS, 1, tail);
    w.write_all(&buf).await.unwrap();
    assert_eq!(answer(&mut r, 1).await, Answer::Status(431));
    // 101 small fields: within the size, over the count.
    let (mut r2, mut w2) = h2_connect(gw.proxy).await;
    let many = request_block("/pets/v1/many", &fields(101, 1));
    w2.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &many)).await.unwrap();
    assert_eq!(answer(&mut r2, 1).await, Answer::Status(431));
    assert_eq!(up.count(), 0, "the upstream saw nothing");
    let fine = request_block("/pets/v1/fine", &fields(10, 100));
    for (r, w) in [(&mut r, &mut w), (&mut r2, &mut w2)] {
        w.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 3, &fine)).await.unwrap();
        assert_eq!(answer(r, 3).await, Answer::Status(200), "the connection still serves");
    }
    assert_eq!(up.count(), 2);
}

/// PING and SETTINGS frames, each owed an acknowledgement, sent without end by a
/// client that reads nothing: the gateway owes at most one acknowledgement of each
/// at a time, so it stops reading once the client's window is full, and closes the
/// connection when its writes have been blocked for `send_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_from_a_client_that_reads_nothing_are_closed() {
    let up = Counting::start().await;
    let settings = Settings { send_timeout: Duration::from_secs(1), ..Settings::default() };
    let gw = gateway(&up, settings).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (r, mut w) = h2_handshake(socket.connect(gw.proxy).await.unwrap()).await;
    let mut batch = Vec::new();
    for i in 0u64..1000 {
        put_frame(&mut batch, PING, 0, 0, &i.to_be_bytes());
        put_frame(&mut batch, SETTINGS, 0, 0, &[]);
    }
    let batches = 20_000; // ~530 MB, far more than any buffer on the way
    let started = Instant::now();
    let (sent, broken) = flood(&mut w, std::iter::repeat_n(batch.clone(), batches), Duration::from_secs(30)).await;
    let took = started.elapsed();
    let seen = watch(r, Duration::from_secs(10)).await;
    eprintln!("took {sent} of {} bytes in {took:?} (broken: {broken}); {seen:?}", batches * batch.len());
    assert!(broken, "the gateway closed the connection");
    assert!(sent < batches * batch.len() / 10, "the gateway stopped reading: took {sent} bytes");
    assert!(seen.closed);
    still_served(&gw).await;
}

/// The same flood from a client that reads every acknowledgement (and sends no
/// request) does not keep its connection from counting as idle: after
/// `idle_timeout` it is told to go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_does_not_keep_a_connection_from_going_idle() {
    let up = Counting::start().await;
    let settings = Settings { idle_timeout: Duration::from_secs(1), ..Settings::default() };
    let gw = gateway(&up, settings).await;
    let (mut r, mut w) = h2_connect(gw.proxy).await;
    let reader = tokio::spawn(async move {
        let mut acks = 0;
        while let Some(f) = read_frame(&mut r).await {
            match f.kind {
                GOAWAY => return (acks, Some(goaway_of(&f))),
                PING | SETTINGS if f.flags & ACK != 0 => acks += 1,
                _ => {}
            }
        }
        (acks, None)
    });
    let mut batch = Vec::new();
    for i in 0u64..100 {
        put_frame(&mut batch, PING, 0, 0, &i.to_be_bytes());
        put_frame(&mut batch, SETTINGS, 0, 0, &[]);
    }
    let started = Instant::now();
    let (acks, goaway) = tokio::select! {
        seen = reader => seen.unwrap(),
        _ = flood(&mut w, std::iter::repeat_n(batch, 100_000), Duration::from_secs(15)) => panic!("no GOAWAY"),
    };
    eprintln!("GOAWAY {goaway:?} after {:?} and {acks} acknowledgements", started.elapsed());
    assert_eq!(goaway.map(|(_, code)| code), Some(0), "a graceful GOAWAY");
    assert!(acks > 0);
    assert!(started.elapsed() < Duration::from_secs(8), "GOAWAY soon after `idle_timeout`");
    still_served(&gw).await;
}

/// Graceful shutdown of an HTTP/2 connection (idle, or the gateway stopping) sends
/// GOAWAY and a PING, and waits for the PING's answer. A client that never answers,
/// silent or flooding, must not keep its connection, nor the gateway's shutdown,
/// waiting for ever: once it has nothing in flight it is dropped after a grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_the_shutdown_ping_is_still_closed() {
    let up = Counting::start().await;
    let settings = Settings { idle_timeout: Duration::from_secs(1), ..Settings::default() };
    let mut gw = gateway(&up, settings).await;
    // Silent after the handshake: told to go away after a second, then closed.
    let (r, _w) = h2_connect(gw.proxy).await;
    let seen = watch(r, Duration::from_secs(15)).await;
    assert!(seen.goaway.is_some(), "told to go away when idle");
    assert!(seen.closed, "closed within 15 s of going idle");
    // The gateway stops while one client is silent and another floods PINGs.
    let (_r1, _w1) = h2_connect(gw.proxy).await;
    let (mut r2, mut w2) = h2_connect(gw.proxy).await;
    tokio::spawn(async move { while read_frame(&mut r2).await.is_some() {} });
    let flooding = tokio::spawn(async move {
        let ping = frame(PING, 0, 0, &[0; 8]);
        flood(&mut w2, std::iter::repeat_n(ping, 10_000_000), Duration::from_secs(20)).await
    });
    gw.stop.take().unwrap().send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(15), &mut gw.proxy_task).await;
    flooding.abort();
    assert!(stopped.is_ok(), "the gateway's shutdown was held up");
}
