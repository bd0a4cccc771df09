//! The scanned target: an `http://` or `https://` URL split into what the client
//! needs (where to connect, the `Host` header, the directory the scan starts in),
//! and the path encoding of wordlist entries.

use std::fmt;

use http::Uri;

/// `inputs.target` is not a URL the scan can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inputs.target {target:?}: {reason}")]
pub struct TargetError {
    pub target: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The directory the scan starts in: begins and ends with `/`.
    pub base_path: String,
}

impl Target {
    /// Parses `http[s]://host[:port][/path]`; a path not ending in `/` is taken
    /// as a directory (`http://h/app` scans `/app/…`). Query and fragment are dropped.
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let fail = |reason| TargetError {
            target: text.to_owned(),
            reason,
        };
        let uri: Uri = text.trim().parse().map_err(|_| fail("is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(_) => return Err(fail("scheme must be http or https")),
            None => return Err(fail("has no scheme (http:// or https://)")),
        };
        let authority = uri.authority().ok_or_else(|| fail("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(fail("must not carry credentials"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(fail("has no host"));
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let mut base_path = uri.path().to_owned();
        if !base_path.starts_with('/') {
            base_path.insert(0, '/');
        }
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        Ok(Target {
            scheme,
            host,
            port,
            base_path,
        })
    }

    /// The `Host` header: the host, with the port unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }

    /// `scheme://host[:port]`, no trailing slash.
    pub fn origin(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.host_header())
    }

    /// The absolute URL of an (already encoded) path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The path a `Location` header points to when it stays on this origin
    /// (relative references are resolved against `from`, a path); `None` when it
    /// leaves the origin.
    pub fn same_origin_path(&self, location: &str, from: &str) -> Option<String> {
        if let Some(rest) = location.strip_prefix("//") {
            return self.same_origin_path(&format!("{}:{rest}", self.scheme_str()), from);
        }
        if location.contains("://") {
            let uri: Uri = location.parse().ok()?;
            let other = Target::parse(location).ok()?;
            if other.scheme != self.scheme
                || !other.host.eq_ignore_ascii_case(&self.host)
                || other.port != self.port
            {
                return None;
            }
            return Some(
                uri.path_and_query()
                    .map_or("/".to_owned(), |p| p.as_str().to_owned()),
            );
        }
        if location.starts_with('/') {
            return Some(location.to_owned());
        }
        let dir = &from[..from.rfind('/').map_or(0, |i| i + 1)];
        Some(format!("{dir}{location}"))
    }

    fn scheme_str(&self) -> &'static str {
        match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.base_path)
    }
}

/// Percent-encodes what a wordlist entry may hold that a request line may not
/// (spaces, controls, non-ASCII, `#`, `?`), keeping `/` and existing `%XX` escapes.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'%'
            );
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_url_gives_host_port_and_a_base_directory() {
        let t = Target::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.base_path, "/");
        assert_eq!(t.host_header(), "127.0.0.1:8080");
        let t = Target::parse("https://example.test/app?x=1").expect("valid");
        assert_eq!((t.scheme, t.port), (Scheme::Https, 443));
        assert_eq!(t.base_path, "/app/");
        assert_eq!(t.host_header(), "example.test");
        assert_eq!(t.url("/app/x"), "https://example.test/app/x");
        let t = Target::parse("http://[::1]:81/").expect("valid");
        assert_eq!(t.host, "::1");
        assert_eq!(t.host_header(), "[::1]:81");
    }

    #[test]
    fn a_target_without_http_scheme_or_host_is_refused_with_the_reason() {
        let err = Target::parse("127.0.0.1:80").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("inputs.target \"127.0.0.1:80\":"));
        assert_eq!(
            Target::parse("ftp://h/").unwrap_err().reason,
            "scheme must be http or https"
        );
        assert_eq!(
            Target::parse("http://u:p@h/").unwrap_err().reason,
            "must not carry credentials"
        );
    }

    #[test]
    fn locations_on_the_same_origin_resolve_to_paths_and_others_do_not() {
        let t = Target::parse("http://h:8080/").expect("valid");
        assert_eq!(t.same_origin_path("/a/", "/a").as_deref(), Some("/a/"));
        assert_eq!(
            t.same_origin_path("http://h:8080/a/", "/a").as_deref(),
            Some("/a/")
        );
        assert_eq!(t.same_origin_path("b/", "/a/x").as_deref(), Some("/a/b/"));
        assert_eq!(t.same_origin_path("http://other/a/", "/a"), None);
        assert_eq!(t.same_origin_path("https://h:8080/a/", "/a"), None);
    }

    #[test]
    fn paths_are_encoded_only_where_a_request_line_needs_it() {
        assert_eq!(encode_path("/a b/é?#"), "/a%20b/%C3%A9%3F%23");
        assert_eq!(encode_path("/.git/HEAD~%2e"), "/.git/HEAD~%2e");
    }
}
