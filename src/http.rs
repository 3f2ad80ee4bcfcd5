//! The HTTP listener every role serves: `/metrics`, `/-/healthy`,
//! `/-/ready`, `POST /-/reload` (hot reload, `src/reload.rs`),
//! `/debug/pprof/profile` when `run.pprof` is on (`src/profiling.rs`),
//! plus the gateway's write paths when the gateway runs in this process.
//!
//! One listener per process: `streamroute run` serves every role on
//! `run.listen`. The server stops accepting on shutdown and lets in-flight
//! requests finish within the grace period. With a TLS acceptor (`run.tls`,
//! `gateway.tls`) every connection is HTTPS; plain HTTP is not served then.
//!
//! A client cannot hold a connection without sending: headers must arrive
//! within the handler's [`Handler::header_read_timeout`] (also on an idle
//! keep-alive connection), TLS handshakes within 10 s. When the handler
//! guards the listener ([`Handler::guard`], the gateway's `gateway.auth`),
//! every path but `/-/healthy` goes through it; `/-/healthy` stays open so
//! liveness probes need no credentials, and it tells nothing but "alive".

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a client may take to complete the TLS handshake; a stalled
/// client must not hold a connection task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Header read timeout of a listener without a handler.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response body: always a complete buffer.
pub type Body = Full<Bytes>;

/// A boxed future returning a response.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Something that answers the requests the admin endpoints do not.
pub trait Handler: Send + Sync + 'static {
    /// Handles a request whose path was not `/metrics` or `/-/…`.
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> ResponseFuture;

    /// Checked before `/metrics` and `/-/ready` are served (not
    /// `/-/healthy`): a response here (such as 401) is sent instead.
    /// `handle` does its own checks.
    fn guard(&self, _request: &Request<Incoming>) -> Option<Response<Body>> {
        None
    }

    /// How long a client may take to send a request's headers.
    fn header_read_timeout(&self) -> Duration {
        HEADER_READ_TIMEOUT
    }
}

/// Readiness of the roles in this process: `/-/ready` answers 200 only when
/// every registered role is ready.
#[derive(Clone, Default)]
pub struct Readiness {
    roles: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
}

impl Readiness {
    /// Registers a role (not ready yet) and returns its flag.
    pub fn register(&self, role: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut roles) = self.roles.lock() {
            roles.insert(role.to_string(), flag.clone());
        }
        metrics::gauge!(crate::metrics::ROLE_READY, "role" => role.to_string()).set(0.0);
        flag
    }

    /// Marks a role ready or not.
    pub fn set(&self, role: &str, ready: bool) {
        if let Ok(roles) = self.roles.lock() {
            if let Some(flag) = roles.get(role) {
                flag.store(ready, Ordering::Release);
            }
        }
        metrics::gauge!(crate::metrics::ROLE_READY, "role" => role.to_string())
            .set(f64::from(u8::from(ready)));
    }

    /// The roles that are not ready, or None when all are.
    fn not_ready(&self) -> Option<Vec<String>> {
        let roles = self.roles.lock().ok()?;
        let waiting: Vec<String> = roles
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(n, _)| n.clone())
            .collect();
        (!waiting.is_empty() || roles.is_empty()).then_some(waiting)
    }
}

/// A pprof profile as a download.
fn profile_response(profile: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(profile)));
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        hyper::header::CONTENT_DISPOSITION,
        hyper::header::HeaderValue::from_static("attachment; filename=\"profile\""),
    );
    response
}

/// Builds a plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What `POST /-/reload` calls (`src/reload.rs`).
pub trait Reload: Send + Sync {
    /// Re-reads the config: 200 with what changed, or 500 with why not
    /// (as Prometheus' `/-/reload` answers).
    fn reload(&self) -> Response<Body>;
}

struct Routes {
    metrics: PrometheusHandle,
    readiness: Readiness,
    handler: Option<Arc<dyn Handler>>,
    reload: Option<Arc<dyn Reload>>,
    /// Serve CPU profiles (`run.pprof`).
    pprof: bool,
}

impl Routes {
    async fn route(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let admin = matches!(
            request.uri().path(),
            "/metrics" | "/-/ready" | "/-/reload" | crate::profiling::PATH
        );
        if let (true, Some(handler)) = (admin, &self.handler) {
            if let Some(refused) = handler.guard(&request) {
                return refused;
            }
        }
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                crate::telemetry::collect_process_metrics();
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                );
                response
            }
            (&Method::GET | &Method::HEAD, "/-/healthy") => text(StatusCode::OK, "healthy\n"),
            (&Method::GET | &Method::HEAD, "/-/ready") => match self.readiness.not_ready() {
                None => text(StatusCode::OK, "ready\n"),
                Some(waiting) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", waiting.join(", ")),
                ),
            },
            (&Method::POST | &Method::PUT, "/-/reload") => match &self.reload {
                Some(reload) => {
                    let reload = reload.clone();
                    tokio::task::spawn_blocking(move || reload.reload())
                        .await
                        .unwrap_or_else(|e| {
                            text(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                format!("reload failed: {e}\n"),
                            )
                        })
                }
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
            (&Method::GET, crate::profiling::PATH) => {
                if self.pprof {
                    match crate::profiling::serve(request.uri().query()).await {
                        Ok(profile) => profile_response(profile),
                        Err(e) => text(e.status(), format!("{e}\n")),
                    }
                } else {
                    text(StatusCode::NOT_FOUND, "not found\n")
                }
            }
            _ => match &self.handler {
                Some(handler) => handler.clone().handle(request).await,
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }
}

/// A bound, not yet serving listener; binding first lets callers report a
/// busy port before any role starts.
pub struct Server {
    listener: TcpListener,
    routes: Arc<Routes>,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Binds `addr`; with `tls`, connections are served as HTTPS; with
    /// `pprof`, CPU profiles too.
    pub async fn bind(
        addr: SocketAddr,
        metrics: PrometheusHandle,
        readiness: Readiness,
        handler: Option<Arc<dyn Handler>>,
        reload: Option<Arc<dyn Reload>>,
        tls: Option<TlsAcceptor>,
        pprof: bool,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            routes: Arc::new(Routes {
                metrics,
                readiness,
                handler,
                reload,
                pprof,
            }),
            tls,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then lets open connections
    /// finish for up to `grace`.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) {
        let addr = self.listener.local_addr().ok();
        info!(?addr, tls = self.tls.is_some(), "http listener serving");
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let routes = self.routes.clone();
                    // Taken here, before the task runs, so the graceful
                    // shutdown below waits for this connection too.
                    let watcher = graceful.watcher();
                    let Some(acceptor) = self.tls.clone() else {
                        tokio::spawn(serve_connection(stream, peer, routes, watcher));
                        continue;
                    };
                    let stop = shutdown.clone();
                    // The handshake runs in the connection's task so that a
                    // slow or broken client never holds up the accept loop.
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        let stream = tokio::select! {
                            // No request has started yet: nothing to drain.
                            _ = stop.cancelled() => return,
                            done = handshake => match done {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "tls handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    debug!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "tls handshake timed out");
                                    return;
                                }
                            },
                        };
                        serve_connection(stream, peer, routes, watcher).await;
                    });
                }
            }
        }
        drop(self.listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!(?grace, "http connections still open after the grace period");
        }
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until the client closes
/// it or the graceful shutdown ends it.
async fn serve_connection<S>(stream: S, peer: SocketAddr, routes: Arc<Routes>, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_read_timeout = routes
        .handler
        .as_ref()
        .map_or(HEADER_READ_TIMEOUT, |h| h.header_read_timeout());
    let service = service_fn(move |req| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(routes.route(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(%peer, error = %e, "http connection ended with an error");
    }
}
