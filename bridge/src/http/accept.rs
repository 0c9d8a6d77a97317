//! The HTTP accept loop: hyper (through hyper-util) serving the axum router, optionally over
//! TLS. Owning the loop (instead of `axum::serve`) gives the limits a server on the open web
//! needs: a cap on HTTP connections that are not (yet) WebSockets, and one deadline for the TLS
//! handshake and the request headers, so trickling clients (slowloris) are cut off. Each
//! request carries the connection's [`Control`]: a long-lived response (SSE) gives back the
//! connection's place in that cap, and can end a connection whose peer stopped reading.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// HTTP connections at once (WebSockets leave this count once upgraded).
    pub(crate) max_connections: usize,
    /// Deadline for the TLS handshake and for each request's headers.
    pub(crate) handshake_timeout: Duration,
    /// How long shutdown waits for in-flight HTTP requests.
    pub(crate) shutdown_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At `http.max_connections` the loop stops accepting: a burst beyond it waits in the
        // kernel's listen backlog (and is served as upgrades free places) instead of being
        // reset.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let control = Control::new(permit);
            let timeout = limits.handshake_timeout;
            let context = Context {
                peer,
                app,
                watcher,
                timeout,
                control,
            };
            match tls {
                None => connection(stream, context).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => connection(tls_stream, context).await,
                        Ok(Err(e)) => {
                            metrics::counter!("mqws_http_refused_total", "reason" => "tls")
                                .increment(1);
                            debug!(%peer, error = %e, "tls handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("mqws_http_refused_total", "reason" => "handshake_timeout").increment(1);
                            debug!(%peer, "tls handshake timed out");
                        }
                    }
                }
            }
        });
    }
    info!("http listener stopped");
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("in-flight http requests still running at the shutdown deadline");
    }
}

/// The client's address, in every request's extensions (for the WebSocket's log lines).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// A connection's handle, in every request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    kill: CancellationToken,
}

impl Control {
    fn new(permit: OwnedSemaphorePermit) -> Control {
        Control {
            permit: Arc::new(Mutex::new(Some(permit))),
            kill: CancellationToken::new(),
        }
    }

    /// Gives the connection's place in `http.max_connections` back: a stream that lasts as
    /// long as a WebSocket counts against `ws.max_connections` instead, as a WebSocket does.
    pub(crate) fn release_permit(&self) {
        self.permit.lock().take();
    }

    /// Cancelling it drops the connection at once, whatever it is doing (a response the peer
    /// no longer reads is never polled again, so it cannot end itself).
    pub(crate) fn kill(&self) -> CancellationToken {
        self.kill.clone()
    }
}

/// What serving one connection needs.
struct Context {
    peer: std::net::SocketAddr,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
    timeout: Duration,
    control: Control,
}

async fn connection<I>(io: I, context: Context)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Context {
        peer,
        app,
        watcher,
        timeout,
        control,
    } = context;
    let kill = control.kill();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            req.extensions_mut().insert(control.clone());
            req
        },
    );
    let service = TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        r = watcher.watch(conn.into_owned()) => {
            if let Err(e) = r {
                debug!(error = %e, "http connection ended with an error");
            }
        }
        _ = kill.cancelled() => debug!(%peer, "http connection dropped"),
    }
}
