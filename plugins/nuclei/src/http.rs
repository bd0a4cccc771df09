//! One HTTP/1.1 exchange, sent exactly as the template wrote it.
//!
//! Templates probe with paths that URL libraries would "fix" (`/%2e%2e/`,
//! `/.%%32%65/`), so a request target is kept as text and handed to hyper's
//! HTTP/1 connection as is: no dot-segment removal, no re-encoding. Each exchange
//! uses its own connection, with a per-request timeout and a bound on the body
//! read. TLS does not verify certificates, like nuclei: a scanner must see
//! self-signed and expired hosts too.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use secflow_scanner_http::CertificateCheck;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("request to {url}: {reason}")]
    BadRequest { url: String, reason: String },
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("tls handshake with {authority}: {source}")]
    Tls {
        authority: String,
        source: std::io::Error,
    },
    #[error("exchange with {url}: {reason}")]
    Exchange { url: String, reason: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// An absolute http(s) URL split without normalising its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query exactly as written (`/` when empty).
    pub target: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |reason: &str| HttpError::BadUrl {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else {
            return Err(bad("the scheme is not http or https"));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let mut target = rest[end..].to_owned();
        if let Some(hash) = target.find('#') {
            target.truncate(hash);
        }
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Url {
            tls,
            host,
            port,
            target,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// `host:port`, the port left out when it is the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.target)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: String,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    /// The request as text (request line, headers, body), for evidence.
    pub fn dump(&self) -> String {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.url.target);
        for (name, value) in self.headers_to_send() {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&String::from_utf8_lossy(&self.body));
        out
    }

    /// The headers as sent: `Host` and `Content-Length` added when missing.
    fn headers_to_send(&self) -> Vec<(String, String)> {
        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            headers.push(("Host".to_owned(), self.url.authority()));
        }
        headers.extend(self.headers.iter().cloned());
        if !self.body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            headers.push(("Content-Length".to_owned(), self.body.len().to_string()));
        }
        headers
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub status: u16,
    /// Header names in Go's canonical form (`X-Powered-By`), as nuclei sees them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub duration: Duration,
}

impl Incoming {
    /// Status line and headers, CRLF-terminated, as nuclei's `header` part.
    pub fn header_block(&self) -> String {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends requests; cheap to clone.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(timeout: Duration) -> Result<Client, rustls::Error> {
        let config = secflow_scanner_http::client_config(CertificateCheck::AcceptAny)?;
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// One exchange; at most `max_body` bytes of the body are read.
    pub async fn send(&self, request: &Outgoing, max_body: usize) -> Result<Incoming, HttpError> {
        let url = request.url.to_string();
        let started = Instant::now();
        let exchange = async {
            let authority = format!("{}:{}", request.url.host, request.url.port);
            let tcp = TcpStream::connect((request.url.host.as_str(), request.url.port))
                .await
                .map_err(|source| HttpError::Connect {
                    authority: authority.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            if request.url.tls {
                let name = ServerName::try_from(request.url.host.clone()).map_err(|err| {
                    HttpError::BadUrl {
                        url: url.clone(),
                        reason: format!("not a valid TLS server name: {err}"),
                    }
                })?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|source| HttpError::Tls { authority, source })?;
                exchange(tls, request, max_body, &url).await
            } else {
                exchange(tcp, request, max_body, &url).await
            }
        };
        let (status, headers, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })??;
        Ok(Incoming {
            status,
            headers,
            body,
            duration: started.elapsed(),
        })
    }
}

type Exchanged = (u16, Vec<(String, String)>, Vec<u8>);

async fn exchange<I>(
    io: I,
    request: &Outgoing,
    max_body: usize,
    url: &str,
) -> Result<Exchanged, HttpError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |reason: String| HttpError::Exchange {
        url: url.to_owned(),
        reason,
    };
    let bad_request = |reason: String| HttpError::BadRequest {
        url: url.to_owned(),
        reason,
    };
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| bad_request(format!("invalid method {:?}", request.method)))?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(escape_target(&request.url.target));
    for (name, value) in request.headers_to_send() {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad_request(format!("invalid header name {name:?}")))?;
        let value = http::HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| bad_request(format!("invalid value of header {name}")))?;
        builder = builder.header(name, value);
    }
    let outgoing = builder
        .body(Full::new(Bytes::from(request.body.clone())))
        .map_err(|err| bad_request(err.to_string()))?;
    let (mut sender, connection) = http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|err| failed(err.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender
            .send_request(outgoing)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    canonical_header_name(name.as_str()),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body_stream = response.into_body();
        let mut body = Vec::new();
        while body.len() < max_body {
            match body_stream.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = max_body - body.len();
                        body.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(err)) => {
                    // A body cut short still tells what the server sent so far.
                    if body.is_empty() {
                        return Err(failed(err.to_string()));
                    }
                    break;
                }
            }
        }
        Ok((status, headers, body))
    }
    .await;
    driver.abort();
    result
}

/// Percent-encodes the bytes a request line cannot carry (spaces, controls,
/// non-ASCII), leaving everything else, `%` included, as written.
fn escape_target(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for byte in target.bytes() {
        if byte.is_ascii_graphic()
            && !matches!(
                byte,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Go's `CanonicalMIMEHeaderKey`: `x-powered-by` → `X-Powered-By`.
pub fn canonical_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_its_encoded_traversal_path_verbatim() {
        let url =
            Url::parse("http://127.0.0.1:8080/icons/.%%32%65/%2e%2e/etc/passwd?x=1#f").unwrap();
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 8080);
        assert_eq!(url.target, "/icons/.%%32%65/%2e%2e/etc/passwd?x=1");
        assert_eq!(url.path(), "/icons/.%%32%65/%2e%2e/etc/passwd");
        assert_eq!(
            url.to_string(),
            "http://127.0.0.1:8080/icons/.%%32%65/%2e%2e/etc/passwd?x=1"
        );
        assert!(http::Uri::try_from(escape_target(&url.target)).is_ok());
    }

    #[test]
    fn default_ports_follow_the_scheme_and_stay_out_of_the_authority() {
        let url = Url::parse("https://example.test").unwrap();
        assert_eq!((url.port, url.target.as_str()), (443, "/"));
        assert_eq!(url.authority(), "example.test");
        assert!(Url::parse("ftp://x").is_err());
    }

    #[test]
    fn header_names_come_back_in_go_canonical_form() {
        assert_eq!(canonical_header_name("x-powered-by"), "X-Powered-By");
        assert_eq!(canonical_header_name("SERVER"), "Server");
    }
}
