//! A small HTTP/1.1 server on loopback for testing network plugins (ferox, nuclei).
//!
//! Routes map a path to a canned [`Route`] (status, headers, body, delay); any
//! other path goes to the fallback: `404` by default, `200` to everything with
//! [`HttpFixtureBuilder::soft_404`], or any function of the request. Every request
//! is recorded. The server runs on its own thread and runtime, so it works the
//! same from sync and async tests, and stops when the [`HttpFixture`] is dropped.
//!
//! ```no_run
//! use secflow_tests::http_fixture::{HttpFixture, Route};
//! let server = HttpFixture::builder()
//!     .route("/.git/config", Route::ok("[core]\n\trepositoryformatversion = 0\n"))
//!     .route("/admin", Route::redirect(301, "/admin/"))
//!     .route("/slow", Route::ok("late").delay(std::time::Duration::from_secs(2)))
//!     .soft_404()
//!     .start();
//! let target = server.url(); // "http://127.0.0.1:PORT/"
//! # let _ = target;
//! assert!(server.requests().iter().all(|r| r.method == "GET"));
//! ```
//!
//! Bounds: request heads up to 64 KiB, bodies up to 1 MiB, 100 000 recorded
//! requests; keep-alive unless the client sends `Connection: close`. `.tls()`
//! serves HTTPS with the self-signed `localhost` / `127.0.0.1` certificate in
//! `tests/fixtures/tls/`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Longest request head read.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Longest request body read.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Most requests kept in the log.
const MAX_RECORDED: usize = 100_000;

const TLS_CERT: &str = include_str!("../fixtures/tls/localhost.crt");
const TLS_KEY: &str = include_str!("../fixtures/tls/localhost.key");

/// A canned response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waited before the response is written.
    pub delay: Duration,
}

impl Route {
    /// `status` with an empty body.
    pub fn new(status: u16) -> Route {
        Route {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// `200` with `body` (`text/html`).
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route::new(200)
            .header("Content-Type", "text/html")
            .body(body)
    }

    /// A redirect (`301`, `302`, `307`, `308`) to `location`.
    pub fn redirect(status: u16, location: &str) -> Route {
        Route::new(status).header("Location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Route {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Route {
        self.delay = delay;
        self
    }
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers requests that no route matches.
pub type Fallback = Arc<dyn Fn(&RecordedRequest) -> Route + Send + Sync>;

/// Configures an [`HttpFixture`].
pub struct HttpFixtureBuilder {
    routes: HashMap<String, Route>,
    fallback: Fallback,
    tls: bool,
}

impl std::fmt::Debug for HttpFixtureBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFixtureBuilder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl HttpFixtureBuilder {
    /// Answers `path` (exact match on the path, or on path and query) with `route`.
    pub fn route(mut self, path: &str, route: Route) -> HttpFixtureBuilder {
        self.routes.insert(path.to_owned(), route);
        self
    }

    /// Answers every other request with `fallback(request)`.
    pub fn fallback(
        mut self,
        fallback: impl Fn(&RecordedRequest) -> Route + Send + Sync + 'static,
    ) -> HttpFixtureBuilder {
        self.fallback = Arc::new(fallback);
        self
    }

    /// A soft-404 server: every other path answers `200` with a "not found" page
    /// that echoes the path (so its length varies with the path, not its shape).
    pub fn soft_404(self) -> HttpFixtureBuilder {
        self.fallback(|request| {
            Route::ok(format!(
                "<html><head><title>Welcome</title></head>\n<body><h1>Oops</h1>\n\
                 <p>The page {} could not be found.</p></body></html>\n",
                request.path()
            ))
        })
    }

    /// Serves HTTPS (self-signed certificate for `localhost` and `127.0.0.1`).
    pub fn tls(mut self) -> HttpFixtureBuilder {
        self.tls = true;
        self
    }

    /// Binds 127.0.0.1 on a free port and serves on a thread of its own.
    ///
    /// # Panics
    ///
    /// When the port cannot be bound or the runtime cannot start (a broken test host).
    pub fn start(self) -> HttpFixture {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let scheme = if self.tls { "https" } else { "http" };
        let state = Arc::new(Serving {
            routes: self.routes,
            fallback: self.fallback,
            log: Arc::clone(&log),
        });
        let tls = self.tls.then(tls_acceptor);
        let thread = std::thread::Builder::new()
            .name("http-fixture".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fixture runtime starts");
                runtime.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("fixture binds 127.0.0.1");
                    let _ = addr_tx.send(listener.local_addr().expect("bound address"));
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, state, tls) => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("fixture thread starts");
        let addr = addr_rx.recv().expect("fixture reports its address");
        HttpFixture {
            addr,
            scheme,
            log,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

/// A running fixture server; stops when dropped.
#[derive(Debug)]
pub struct HttpFixture {
    addr: SocketAddr,
    scheme: &'static str,
    log: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpFixture {
    pub fn builder() -> HttpFixtureBuilder {
        HttpFixtureBuilder {
            routes: HashMap::new(),
            fallback: Arc::new(|_| Route::new(404).body("not found\n")),
            tls: false,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/` (`https://` with `.tls()`).
    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.addr)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests asked for `path` (without query).
    pub fn hits(&self, path: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| r.path() == path)
            .count()
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Serving {
    routes: HashMap<String, Route>,
    fallback: Fallback,
    log: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl Serving {
    fn answer(&self, request: &RecordedRequest) -> Route {
        self.routes
            .get(request.path())
            .or_else(|| self.routes.get(&request.target))
            .cloned()
            .unwrap_or_else(|| (self.fallback)(request))
    }

    fn record(&self, request: &RecordedRequest) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() < MAX_RECORDED {
            log.push(request.clone());
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Serving>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, state).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(stream, state).await;
                    }
                }
            }
        });
    }
}

/// Serves requests on one connection until the client closes it or asks to.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<Serving>) {
    let mut buffer = Vec::new();
    loop {
        let Some((request, close)) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        state.record(&request);
        let route = state.answer(&request);
        if !route.delay.is_zero() {
            tokio::time::sleep(route.delay).await;
        }
        let mut head = format!("HTTP/1.1 {} {}\r\n", route.status, reason(route.status));
        for (name, value) in &route.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", route.body.len()));
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if request.method != "HEAD" {
            out.extend_from_slice(&route.body);
        }
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Reads one request; `None` at end of input or on a malformed or oversized one.
/// Returns whether the client asked to close after it.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Option<(RecordedRequest, bool)> {
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return None;
    }
    buffer.drain(..head_end + 4);
    while buffer.len() < length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body: Vec<u8> = buffer.drain(..length).collect();
    let close = headers
        .iter()
        .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
    Some((
        RecordedRequest {
            method,
            target,
            headers,
            body,
        },
        close,
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The acceptor for `.tls()`, from the certificate in `tests/fixtures/tls/`.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_slice_iter(TLS_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("fixture certificate parses");
    let key = PrivateKeyDer::from_pem_slice(TLS_KEY.as_bytes()).expect("fixture key parses");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("fixture certificate and key match");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
