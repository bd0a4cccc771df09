//! One GET at a time over hyper's connection-level HTTP/1.1 client: https with
//! the Mozilla roots (webpki-roots) and real certificate checks, plain http
//! only to loopback (config refuses the rest).
//!
//! Updates are a few large sequential downloads, so each request opens its own
//! connection: no pool to go stale across the rate limiter's pauses. Bodies are
//! bounded and every wait (connect, headers, each body frame) has the idle
//! timeout, so a server that stops sending ends the request instead of hanging.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use secflow_scanner_http::CertificateCheck;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

const USER_AGENT: &str = concat!("secflow-vulndb/", env!("CARGO_PKG_VERSION"));

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls with {url} failed")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls set-up failed: {0}")]
    TlsSetup(#[from] rustls::Error),
    #[error("{url} is not a url this client can request")]
    BadUrl { url: String },
    #[error("exchange with {url} failed (connection cut?)")]
    Exchange {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{url} sent nothing for {after:?}")]
    Idle { url: String, after: Duration },
    #[error("{url} answered with more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("cannot write the download of {url} to {path}")]
    Write {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HttpError {
    /// Whether trying again may help (a cut connection, a timeout, a refused
    /// connect), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. }
                | HttpError::Tls { .. }
                | HttpError::Exchange { .. }
                | HttpError::Idle { .. }
        )
    }
}

/// Where a response body goes.
#[derive(Debug)]
pub enum Sink<'a> {
    /// Kept in memory (pages, the KEV catalogue).
    Memory,
    /// Written to this file, created or truncated (archives).
    File(&'a Path),
}

/// An answer: its status, the headers updates use, and the body when kept in memory.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub body: Vec<u8>,
    pub body_len: u64,
}

/// The HTTP client of updates.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    idle: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client whose https connections check certificates against the Mozilla roots.
    pub fn new(idle: Duration) -> Result<Client, HttpError> {
        let mut config = secflow_scanner_http::client_config(CertificateCheck::MozillaRoots)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            idle,
        })
    }

    /// GETs `uri` with `headers`, the body into `sink`, at most `limit` bytes.
    pub async fn get(
        &self,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        sink: Sink<'_>,
        limit: u64,
    ) -> Result<Response, HttpError> {
        let url = uri.to_string();
        let bad = || HttpError::BadUrl { url: url.clone() };
        let host = uri.host().ok_or_else(bad)?.to_owned();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let idle = |url: &str| HttpError::Idle {
            url: url.to_owned(),
            after: self.idle,
        };
        let tcp = timeout(self.idle, TcpStream::connect((bare_host.as_str(), port)))
            .await
            .map_err(|_| idle(&url))?
            .map_err(|source| HttpError::Connect {
                url: url.clone(),
                source,
            })?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().ok_or_else(bad)?.as_str();
        let mut request = Request::get(path)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "application/json, application/zip, */*");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|_| bad())?;
        let response = if https {
            let name = ServerName::try_from(bare_host).map_err(|_| bad())?;
            let stream = timeout(self.idle, self.tls.connect(name, tcp))
                .await
                .map_err(|_| idle(&url))?
                .map_err(|source| HttpError::Tls {
                    url: url.clone(),
                    source,
                })?;
            self.exchange(&url, stream, request).await?
        } else {
            self.exchange(&url, tcp, request).await?
        };
        self.read_body(&url, response, sink, limit).await
    }

    async fn exchange<T>(
        &self,
        url: &str,
        io: T,
        request: Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, HttpError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let exchange = |source| HttpError::Exchange {
            url: url.to_owned(),
            source,
        };
        let (mut sender, connection) =
            http1::handshake(TokioIo::new(io)).await.map_err(exchange)?;
        tokio::spawn(async move {
            // Ends with the response; a failure shows up on the body stream.
            let _ = connection.await;
        });
        timeout(self.idle, sender.send_request(request))
            .await
            .map_err(|_| HttpError::Idle {
                url: url.to_owned(),
                after: self.idle,
            })?
            .map_err(exchange)
    }

    async fn read_body(
        &self,
        url: &str,
        response: hyper::Response<hyper::body::Incoming>,
        sink: Sink<'_>,
        limit: u64,
    ) -> Result<Response, HttpError> {
        let status = response.status();
        let text = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = text(header::RETRY_AFTER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let etag = text(header::ETAG);
        let last_modified = text(header::LAST_MODIFIED);
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(HttpError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        // Error answers are read into memory whatever the sink (they are small
        // and only reported).
        let mut file = match sink {
            Sink::File(path) if status.is_success() => Some((
                path,
                std::fs::File::create(path).map_err(|source| HttpError::Write {
                    url: url.to_owned(),
                    path: path.to_owned(),
                    source,
                })?,
            )),
            _ => None,
        };
        let mut body = Vec::new();
        let mut received = 0u64;
        let mut incoming = response.into_body();
        loop {
            let frame =
                timeout(self.idle, incoming.frame())
                    .await
                    .map_err(|_| HttpError::Idle {
                        url: url.to_owned(),
                        after: self.idle,
                    })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|source| HttpError::Exchange {
                url: url.to_owned(),
                source,
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if received > limit {
                return Err(HttpError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            match &mut file {
                Some((path, file)) => file.write_all(&data).map_err(|source| HttpError::Write {
                    url: url.to_owned(),
                    path: path.to_path_buf(),
                    source,
                })?,
                None => body.extend_from_slice(&data),
            }
        }
        Ok(Response {
            status,
            retry_after,
            etag,
            last_modified,
            body,
            body_len: received,
        })
    }
}
