//! The proxy listener: accepts connections, speaks HTTP/1.1 or cleartext HTTP/2
//! (detected per connection) and hands each request to the [pipeline](crate::pipeline).
//! On shutdown it stops accepting, lets in-flight requests finish and then returns.
//! The TLS listener ([`crate::tls`]) is the same loop with a [`Handshake`] in front.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::ConfigStore;
use crate::forwarding::{self, Peer};
use crate::limits::guard::Guard;
use crate::limits::{self, ConnState, Tracked};
use crate::pipeline::{self, ProxyBody};
use crate::settings::Settings;
use crate::worker;

/// How long a connection in graceful shutdown with nothing in flight may take to
/// finish (an HTTP/2 client answering the GOAWAY's PING) before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// HTTP/2 streams a client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Streams a client may open and reset before the server has accepted them.
const MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset because of the client's errors before it ends the connection.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Serves the proxy on `listener` until `shutdown` completes, then waits for the
/// requests in flight (and their response bodies) to finish. Requests run on the
/// configuration in `store`; before the first snapshot they are answered with 503.
///
/// `settings` holds the limits every connection and request head must keep to and
/// the trusted proxies; see [`Settings`].
///
/// Bind the listener first (so the port is known and taken), then spawn this.
pub async fn serve_proxy(
    listener: TcpListener,
    store: ConfigStore,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, store, settings, shutdown, Arc::new(PlainTcp)).await
}

/// The scheme requests on a listener arrive with; put in each request's extensions
/// for `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Turns an accepted TCP connection into the stream HTTP is spoken on. It runs in the
/// connection's own task, so a slow handshake holds up no other client.
pub(crate) trait Handshake: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const SCHEME: Scheme;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The cleartext listener: HTTP starts right away.
struct PlainTcp;

impl Handshake for PlainTcp {
    type Stream = TcpStream;
    const SCHEME: Scheme = Scheme::Http;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }
}

/// Serves a listener for [`serve_proxy`] and the TLS listener: on `settings.workers`
/// worker threads of their own (see [`crate::worker`]), or with none on the calling
/// runtime.
pub(crate) async fn serve_with<H: Handshake>(
    listener: TcpListener,
    store: ConfigStore,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
    handshake: Arc<H>,
) -> io::Result<()> {
    let workers = settings.workers;
    let shared = Arc::new(Shared::new(settings));
    if workers == 0 {
        return accept_loop(listener, store, shared, shutdown, handshake).await;
    }
    // Every worker accepts on its own descriptor of the one listening socket. The
    // workers stop when `stop_tx` says so or is dropped (this future was dropped).
    let listener = listener.into_std()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut finished = Vec::with_capacity(workers);
    for n in 1..=workers {
        let listener = listener.try_clone()?;
        let (store, shared, handshake, mut stop) = (store.clone(), shared.clone(), handshake.clone(), stop_rx.clone());
        let (done, finished_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("turnpike-proxy-{n}")).spawn(move || {
            worker::enter(n);
            let served = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
                runtime.block_on(async move {
                    let stop = async move {
                        let _ = stop.wait_for(|stopping| *stopping).await;
                    };
                    accept_loop(TcpListener::from_std(listener)?, store, shared, stop, handshake).await
                })
            });
            let _ = done.send(served);
        })?;
        finished.push(finished_rx);
    }
    drop(listener);
    shutdown.await;
    let _ = stop_tx.send(true);
    for worker in finished {
        // A worker that panicked has dropped its sender: nothing left to wait for.
        worker.await.unwrap_or(Ok(()))?;
    }
    Ok(())
}

/// What every connection of a listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    settings: Arc<Settings>,
}

impl Shared {
    fn new(settings: Settings) -> Shared {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The connection guard enforces the head limits and timeouts, with the right
        // status. hyper's HTTP/1 header timeout is left off: it would only repeat the
        // guard's, at the price of a timer armed and dropped on every request.
        builder
            .http1()
            .header_read_timeout(None)
            .max_headers(settings.max_headers)
            .max_buf_size((2 * settings.max_header_bytes).max(8192));
        // The HTTP/2 abuse limits, pinned rather than left to library defaults (see
        // gateway/tests/gateway/h2_abuse.rs): rapid reset (CVE-2023-44487), resets the
        // client provokes (CVE-2025-8671), and streams per connection.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        Shared { builder, settings: Arc::new(settings) }
    }
}

/// Accepts connections until `shutdown` completes, then waits for the requests in
/// flight on them to finish.
async fn accept_loop<H: Handshake>(
    listener: TcpListener,
    store: ConfigStore,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    handshake: Arc<H>,
) -> io::Result<()> {
    // Connections watch `stop` to start their graceful shutdown, and each holds a
    // clone of `done_rx`; `done_tx.closed()` resolves once the last one has ended.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn =
            Connection { shared: shared.clone(), store: store.clone(), stop: stop_rx.clone(), _done: done_rx.clone() };
        tokio::spawn(conn.serve(handshake.clone(), stream, peer));
    }
    drop(listener);
    drop(done_rx);
    tracing::info!("proxy listener closed; waiting for requests in flight");
    let _ = stop_tx.send(());
    done_tx.closed().await;
    Ok(())
}

/// Errors on accept concern one connection (reset before accept) or the process
/// (out of file descriptors); neither should stop the listener. The pause keeps a
/// descriptor shortage from turning into a busy loop.
async fn accept_error(e: io::Error) {
    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
        tracing::error!(error = %e, "accept failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Connection {
    shared: Arc<Shared>,
    store: ConfigStore,
    stop: watch::Receiver<()>,
    /// Dropped when the connection ends; see [`serve_proxy`].
    _done: watch::Receiver<()>,
}

impl Connection {
    async fn serve<H: Handshake>(mut self, handshake: Arc<H>, stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        // A connection still in its handshake has no request to finish: shutdown drops it.
        let stream = tokio::select! {
            stream = handshake.handshake(stream) => match stream {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "handshake failed");
                    return;
                }
            },
            _ = self.stop.changed() => return,
        };
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Guard::new(stream, state.clone(), &self.shared.settings));
        let (store, settings, requests) = (self.store.clone(), self.shared.settings.clone(), state.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(H::SCHEME);
            let (rejection, in_flight) = requests.begin_request();
            let (store, settings) = (store.clone(), settings.clone());
            async move {
                let response = match rejection {
                    // A stand-in for a request the guard refused.
                    Some(rejection) => limits::refusal(rejection).map(Either::Right),
                    None => proxy_request(req, peer, &store, settings).await,
                };
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            }
        });
        let conn = self.shared.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let stop = async {
            tokio::select! {
                _ = self.stop.changed() => {}
                () = state.idle_expired() => {}
            }
        };
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = stop => {
                conn.as_mut().graceful_shutdown();
                // HTTP/2 ends a graceful shutdown only once the client answers a PING;
                // one that never does is dropped once it has no request in flight.
                loop {
                    match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                        Ok(result) => break result,
                        Err(_) if state.in_flight() == 0 => break Ok(()),
                        Err(_) => {}
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// One request from the listener's side: who the client is, the limits the guard
/// cannot check on HTTP/2, then the pipeline.
async fn proxy_request(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    store: &ConfigStore,
    settings: Arc<Settings>,
) -> Response<ProxyBody> {
    if let Some(rejection) = limits::check_head(&req, &settings) {
        return limits::refusal(rejection).map(Either::Right);
    }
    let peer = Peer::new(peer, &settings);
    let client = forwarding::client_addr(peer, req.headers(), &settings);
    // After a request asking to switch protocols the guard passes bytes on unread;
    // unless the switch happens, the connection must not carry another request.
    let asks_upgrade = req.version() == Version::HTTP_11 && req.headers().contains_key(UPGRADE);
    req.extensions_mut().insert(peer);
    req.extensions_mut().insert(settings);
    let Ok(mut response) = pipeline::handle(req, client, store).await;
    if asks_upgrade && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
