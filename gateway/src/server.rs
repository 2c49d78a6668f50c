//! The proxy listener: accepts connections, speaks HTTP/1.1 or cleartext HTTP/2
//! (detected per connection) and hands each request to the [pipeline](crate::pipeline).
//! On shutdown it stops accepting, lets in-flight requests finish and then returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::ConfigStore;
use crate::pipeline;

/// How long a client may take to send a request head before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the proxy on `listener` until `shutdown` completes, then waits for the
/// requests in flight (and their response bodies) to finish. Requests run on the
/// configuration in `store`; before the first snapshot they are answered with 503.
///
/// Bind the listener first (so the port is known and taken), then spawn this.
pub async fn serve_proxy(
    listener: TcpListener,
    store: ConfigStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
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
        let conn = Connection {
            builder: builder.clone(),
            store: store.clone(),
            stop: stop_rx.clone(),
            _done: done_rx.clone(),
        };
        tokio::spawn(conn.serve(stream, peer));
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    store: ConfigStore,
    stop: watch::Receiver<()>,
    /// Dropped when the connection ends; see [`serve_proxy`].
    _done: watch::Receiver<()>,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let store = self.store.clone();
        let service = service_fn(move |req| {
            let store = store.clone();
            async move { pipeline::handle(req, peer, &store).await }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = self.stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
