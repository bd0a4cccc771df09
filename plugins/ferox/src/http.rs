//! The HTTP/1.1 client of the scan: hyper's connection-level client on tokio,
//! with rustls for `https` targets.
//!
//! Content discovery is many small requests to one origin, so each worker owns one
//! kept-alive connection ([`Connection`]) instead of sharing a pool: no lock on the
//! request path, and a connection the server closed is replaced by the worker that
//! noticed. Bodies are not stored: they are counted (bytes, words, lines) as they
//! arrive, up to `max_body_bytes`, keeping only their first bytes for evidence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use secflow_scanner_http::CertificateCheck;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::calibration::Measure;
use crate::settings::Settings;
use crate::target::{Scheme, Target};

/// Body bytes kept for evidence and directory-listing detection.
pub const HEAD_BYTES: usize = 1024;

/// A request that did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("tls handshake with {host} failed")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls setup for {host} failed: {reason}")]
    TlsSetup { host: String, reason: String },
    #[error("http exchange with {addr} failed")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("path {path:?} cannot be sent in a request line")]
    Path { path: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl HttpError {
    /// Whether sending the request again may get an answer: the target did not
    /// answer this time (timeout, reset, refused), rather than the request being
    /// one that cannot be sent.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. }
                | HttpError::Tls { .. }
                | HttpError::Exchange { .. }
                | HttpError::Timeout(_)
        )
    }

    /// Whether the target could not be reached at all (as opposed to one request failing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HttpError::Resolve { .. }
                | HttpError::Connect { .. }
                | HttpError::Tls { .. }
                | HttpError::TlsSetup { .. }
                | HttpError::Timeout(_)
        )
    }
}

/// One response, measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub measure: Measure,
    pub content_type: Option<String>,
    pub server: Option<String>,
    /// The first [`HEAD_BYTES`] bytes of the body.
    pub head: Vec<u8>,
    /// The body was longer than `max_body_bytes`; `length` counts what was read.
    pub truncated: bool,
}

/// Connects to the target and sends the scan's requests; shared by all workers.
pub struct Client {
    addr: SocketAddr,
    host: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    method: Method,
    headers: HeaderMap,
    timeout: Duration,
    max_body_bytes: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .field("tls", &self.tls.is_some())
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A kept-alive connection owned by one worker.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    /// Whether a request already went through it (a failure then may just be the
    /// server closing an idle connection, worth one retry on a fresh one).
    used: bool,
}

impl Client {
    /// Resolves the target's host once and prepares TLS and the request headers.
    pub async fn new(target: &Target, settings: &Settings) -> Result<Client, HttpError> {
        let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|source| HttpError::Resolve {
                host: target.host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| HttpError::Resolve {
                host: target.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let tls = match target.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let name =
                    ServerName::try_from(target.host.clone()).map_err(|_| HttpError::TlsSetup {
                        host: target.host.clone(),
                        reason: "not a valid server name".into(),
                    })?;
                let config = tls_config(settings.tls_verify).map_err(|e| HttpError::TlsSetup {
                    host: target.host.clone(),
                    reason: e.to_string(),
                })?;
                Some((TlsConnector::from(config), name))
            }
        };
        let mut headers = HeaderMap::new();
        let host_header =
            HeaderValue::from_str(&target.host_header()).map_err(|_| HttpError::Path {
                path: target.host_header(),
            })?;
        headers.insert(header::HOST, host_header);
        headers.insert(header::USER_AGENT, settings.user_agent.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for (name, value) in &settings.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(Client {
            addr,
            host: target.host.clone(),
            tls,
            method: settings.method.clone(),
            headers,
            timeout: settings.timeout,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// Opens a new connection (TCP, then TLS for `https`).
    pub async fn connect(&self) -> Result<Connection, HttpError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|source| HttpError::Connect {
                addr: self.addr,
                source,
            })?;
        // Small requests back to back: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => self.handshake(tcp).await?,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| HttpError::Tls {
                        host: self.host.clone(),
                        source,
                    })?;
                self.handshake(stream).await?
            }
        };
        Ok(Connection {
            sender,
            used: false,
        })
    }

    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Empty<Bytes>>, HttpError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| HttpError::Exchange {
                addr: self.addr,
                source,
            })?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped; errors show
            // up on the next request through the sender.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Requests `path` (origin-form, encoded) over `conn`, opening a connection
    /// when there is none or the old one is closed, within the per-request timeout.
    /// On failure `conn` is left empty so the next request reconnects.
    pub async fn fetch(
        &self,
        conn: &mut Option<Connection>,
        path: &str,
    ) -> Result<Response, HttpError> {
        match tokio::time::timeout(self.timeout, self.fetch_inner(conn, path)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => {
                *conn = None;
                Err(err)
            }
            Err(_) => {
                *conn = None;
                Err(HttpError::Timeout(self.timeout))
            }
        }
    }

    async fn fetch_inner(
        &self,
        conn: &mut Option<Connection>,
        path: &str,
    ) -> Result<Response, HttpError> {
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let fresh = match conn.take() {
                Some(mut open) if !open.sender.is_closed() => match open.sender.ready().await {
                    Ok(()) => open,
                    Err(_) => self.connect().await?,
                },
                _ => self.connect().await?,
            };
            let reused = fresh.used;
            let mut current = fresh;
            match self.exchange(&mut current, path).await {
                Ok(response) => {
                    current.used = true;
                    if !response.truncated {
                        *conn = Some(current);
                    }
                    return Ok(response);
                }
                Err(err @ HttpError::Exchange { .. }) if reused && attempts_left > 0 => {
                    // The server may have closed the idle connection as we wrote.
                    let _ = err;
                    continue;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn exchange(&self, conn: &mut Connection, path: &str) -> Result<Response, HttpError> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(path)
            .body(Empty::<Bytes>::new())
            .map_err(|_| HttpError::Path {
                path: path.to_owned(),
            })?;
        *request.headers_mut() = self.headers.clone();
        let exchange_err = |source| HttpError::Exchange {
            addr: self.addr,
            source,
        };
        let response = conn
            .sender
            .send_request(request)
            .await
            .map_err(exchange_err)?;
        let (parts, mut body) = response.into_parts();
        let header_text = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let mut counter = BodyCounter::default();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(exchange_err)?;
            if let Ok(data) = frame.into_data() {
                let room = self.max_body_bytes.saturating_sub(counter.length);
                let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                counter.feed(&data[..take]);
                if take < data.len() {
                    truncated = true;
                    break;
                }
            }
        }
        let mut length = counter.length;
        if self.method == Method::HEAD {
            length = header_text(header::CONTENT_LENGTH)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
        Ok(Response {
            measure: Measure {
                status: parts.status.as_u16(),
                length,
                words: counter.words,
                lines: counter.lines(),
                location: header_text(header::LOCATION),
            },
            content_type: header_text(header::CONTENT_TYPE),
            server: header_text(header::SERVER),
            head: counter.head,
            truncated,
        })
    }
}

/// Counts a body's bytes, words and lines across frames.
#[derive(Debug, Default)]
struct BodyCounter {
    length: u64,
    words: u64,
    newlines: u64,
    in_word: bool,
    last: Option<u8>,
    head: Vec<u8>,
}

impl BodyCounter {
    fn feed(&mut self, data: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        for &byte in data {
            let space = byte.is_ascii_whitespace();
            if !space && !self.in_word {
                self.words += 1;
            }
            self.in_word = !space;
            if byte == b'\n' {
                self.newlines += 1;
            }
        }
        if let Some(&last) = data.last() {
            self.last = Some(last);
        }
        self.length += data.len() as u64;
    }

    /// Lines as `str::lines` counts them: a final line without `\n` counts too.
    fn lines(&self) -> u64 {
        match self.last {
            None => 0,
            Some(b'\n') => self.newlines,
            Some(_) => self.newlines + 1,
        }
    }
}

/// The scanners' shared rustls set-up, offering HTTP/1.1 by ALPN; certificates
/// checked against the Mozilla roots when `verify`, else accepted as they are
/// (handshake signatures are still checked).
fn tls_config(verify: bool) -> Result<Arc<ClientConfig>, rustls::Error> {
    let check = if verify {
        CertificateCheck::MozillaRoots
    } else {
        CertificateCheck::AcceptAny
    };
    let mut config = secflow_scanner_http::client_config(check)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(chunks: &[&str]) -> (u64, u64, u64) {
        let mut counter = BodyCounter::default();
        for chunk in chunks {
            counter.feed(chunk.as_bytes());
        }
        (counter.length, counter.words, counter.lines())
    }

    #[test]
    fn words_and_lines_are_counted_like_split_whitespace_and_lines_across_frames() {
        let text = "<html>\n  <b>not found</b>\n</html>";
        let expected = (
            text.len() as u64,
            text.split_whitespace().count() as u64,
            text.lines().count() as u64,
        );
        assert_eq!(count(&[text]), expected);
        assert_eq!(
            count(&["<html>\n  <b>no", "t fou", "nd</b>\n</html>"]),
            expected
        );
        assert_eq!(count(&["a\n", "b\n"]), (4, 2, 2));
        assert_eq!(count(&[]), (0, 0, 0));
    }

    #[test]
    fn both_tls_configurations_build_and_offer_http_1_1() {
        for verify in [true, false] {
            let config = tls_config(verify).expect("tls config");
            assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
    }
}
