//! Reading files of a repository: over plain HTTP (`http://host:port/base`)
//! or from a directory (`file:///path` or an absolute path).
//!
//! Plain HTTP is enough because nothing fetched is believed on the way: the
//! index is signature-checked and every artifact is checked against the
//! digest and size the index gives. What the transport must do is stay
//! bounded: every read has a byte limit (the index's cap, or the exact size
//! the index declares), every request a deadline, and a body that ends early
//! (an interrupted download) is an error, never a short file.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt as _;

/// Default deadline of one request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest repository URL accepted.
const MAX_URL_CHARS: usize = 2048;

/// Where a repository is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://authority/base`; `base` has no trailing `/`.
    Http { authority: String, base: String },
    /// A directory holding the repository tree.
    Dir(PathBuf),
}

/// Why a repository file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("repository url {url:?} is not supported: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {authority} for {what}")]
    Connect {
        authority: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http request for {what} failed")]
    Http {
        what: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{what} answered http status {status}")]
    Status { what: String, status: u16 },
    #[error("{what} took longer than {seconds} s")]
    Timeout { what: String, seconds: u64 },
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what} ended after {received} of {expected} bytes (an interrupted download)")]
    Truncated {
        what: String,
        received: u64,
        expected: u64,
    },
    #[error("cannot read {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write what was downloaded of {what}")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Source {
    /// Parses a `[[repositories]]` url.
    pub fn parse(url: &str) -> Result<Source, FetchError> {
        let unsupported = |reason: &str| FetchError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.len() > MAX_URL_CHARS {
            return Err(unsupported("it is longer than 2048 characters"));
        }
        if let Some(rest) = url.strip_prefix("http://") {
            let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
            let authority_ok = !authority.is_empty()
                && authority.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if !authority_ok {
                return Err(unsupported("the host must be a name or an address, with an optional port, and no user info"));
            }
            let base = base.trim_end_matches('/');
            let base_ok = base.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'~' | b'+')
            }) && !base.split('/').any(|part| part == "..");
            if !base_ok {
                return Err(unsupported(
                    "the path may hold only letters, digits and / . - _ ~ + (no query, no '..')",
                ));
            }
            let base = if base.is_empty() {
                String::new()
            } else {
                format!("/{base}")
            };
            return Ok(Source::Http {
                authority: authority.to_string(),
                base,
            });
        }
        if url.starts_with("https://") {
            return Err(unsupported("https is not built in; serve the repository over http:// (the index is signed and every file is digest-checked) or as a directory"));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if !path.starts_with('/') {
            return Err(unsupported(
                "use http://HOST[:PORT]/PATH, file:///PATH or an absolute directory path",
            ));
        }
        Ok(Source::Dir(PathBuf::from(path)))
    }
}

/// Reads repository files, one request at a time.
#[derive(Debug)]
pub struct Fetcher {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(timeout: Duration) -> std::io::Result<Fetcher> {
        Ok(Fetcher {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            timeout,
        })
    }

    /// The file `path` (relative, already checked by the index) of `source`,
    /// in memory, at most `limit` bytes.
    pub fn fetch_bytes(
        &self,
        source: &Source,
        path: &str,
        limit: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let mut bytes = Vec::new();
        self.fetch(source, path, limit, None, &mut bytes)?;
        Ok(bytes)
    }

    /// Writes the file `path` of `source` to `sink`: at most `limit` bytes,
    /// and exactly `expected` bytes when given. Returns the bytes written.
    pub fn fetch(
        &self,
        source: &Source,
        path: &str,
        limit: u64,
        expected: Option<u64>,
        sink: &mut dyn Write,
    ) -> Result<u64, FetchError> {
        let what = describe(source, path);
        let received = match source {
            Source::Dir(root) => read_file(&root.join(path), &what, limit, sink)?,
            Source::Http { authority, base } => {
                let target = format!("{base}/{path}");
                let request = get(authority, &target, &what, limit, sink);
                self.runtime
                    .block_on(async { tokio::time::timeout(self.timeout, request).await })
                    .map_err(|_| FetchError::Timeout {
                        what: what.clone(),
                        seconds: self.timeout.as_secs(),
                    })??
            }
        };
        match expected {
            Some(expected) if received < expected => Err(FetchError::Truncated {
                what,
                received,
                expected,
            }),
            Some(expected) if received > expected => Err(FetchError::TooLarge {
                what,
                limit: expected,
            }),
            _ => Ok(received),
        }
    }
}

/// How errors name a file of a repository.
fn describe(source: &Source, path: &str) -> String {
    match source {
        Source::Http { authority, base } => format!("http://{authority}{base}/{path}"),
        Source::Dir(root) => root.join(path).display().to_string(),
    }
}

fn read_file(path: &Path, what: &str, limit: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let read_error = |source| FetchError::Read {
        what: what.to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    if !file.metadata().map_err(read_error)?.is_file() {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut limited = file.take(limit + 1);
    let mut buf = vec![0u8; 64 << 10];
    let mut received = 0u64;
    loop {
        let n = limited.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            return Ok(received);
        }
        received += n as u64;
        if received > limit {
            return Err(FetchError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        sink.write_all(&buf[..n])
            .map_err(|source| FetchError::Write {
                what: what.to_string(),
                source,
            })?;
    }
}

/// One `GET` over a fresh HTTP/1.1 connection, the body streamed to `sink`.
async fn get(
    authority: &str,
    target: &str,
    what: &str,
    limit: u64,
    sink: &mut dyn Write,
) -> Result<u64, FetchError> {
    let address = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|source| FetchError::Connect {
            authority: authority.to_string(),
            what: what.to_string(),
            source,
        })?;
    let http_error = |source| FetchError::Http {
        what: what.to_string(),
        source,
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http_error)?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(target)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "secflow-repo")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| FetchError::Url {
            url: format!("http://{authority}{target}"),
            reason: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    if response.status() != http::StatusCode::OK {
        driver.abort();
        return Err(FetchError::Status {
            what: what.to_string(),
            status: response.status().as_u16(),
        });
    }
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        driver.abort();
        return Err(FetchError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    let mut body = response.into_body();
    let mut received = 0u64;
    let outcome = loop {
        match body.frame().await {
            None => break Ok(received),
            Some(Err(source)) => {
                // hyper reports a body cut short of its Content-Length as an
                // error; name it as what it is.
                break match declared {
                    Some(expected) if received < expected => Err(FetchError::Truncated {
                        what: what.to_string(),
                        received,
                        expected,
                    }),
                    _ => Err(http_error(source)),
                };
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if received > limit {
                    break Err(FetchError::TooLarge {
                        what: what.to_string(),
                        limit,
                    });
                }
                if let Err(source) = sink.write_all(&data) {
                    break Err(FetchError::Write {
                        what: what.to_string(),
                        source,
                    });
                }
            }
        }
    };
    driver.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_with_the_reason() {
        assert_eq!(
            Source::parse("http://127.0.0.1:8080/repo/").unwrap(),
            Source::Http {
                authority: "127.0.0.1:8080".into(),
                base: "/repo".into()
            }
        );
        assert_eq!(
            Source::parse("file:///srv/repo").unwrap(),
            Source::Dir("/srv/repo".into())
        );
        assert_eq!(
            Source::parse("/srv/repo").unwrap(),
            Source::Dir("/srv/repo".into())
        );
        for (bad, needle) in [
            ("https://example.com/", "https is not built in"),
            ("ftp://x/", "use http://"),
            ("http://user@host/", "no user info"),
            ("http://host/a/../b", "no '..'"),
            ("http://host/a?b=c", "no query"),
        ] {
            let err = Source::parse(bad).unwrap_err();
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn a_directory_file_is_read_within_its_limit_and_exact_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"0123456789").unwrap();
        let fetcher = Fetcher::new(DEFAULT_TIMEOUT).unwrap();
        let source = Source::Dir(dir.path().to_path_buf());
        assert_eq!(
            fetcher.fetch_bytes(&source, "a.bin", 10).unwrap(),
            b"0123456789"
        );
        let err = fetcher.fetch_bytes(&source, "a.bin", 9).unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 9, .. }),
            "{err}"
        );
        let err = fetcher
            .fetch(&source, "a.bin", 100, Some(11), &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::Truncated {
                    received: 10,
                    expected: 11,
                    ..
                }
            ),
            "{err}"
        );
    }
}
