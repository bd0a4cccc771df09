//! The scan's validated settings: the run config (manifest `config_schema`) and the
//! target URL, checked once before any request is sent.
//!
//! The supervisor has already applied the schema's defaults and types, but the
//! engine is also driven without it (the benchmark, unit tests), so every key has
//! its default here, in [`Settings::default`], and every value is checked again
//! with an error that names the config field.

use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde_json::{Map, Value};

/// Status codes reported when the config does not say (feroxbuster's set).
pub const DEFAULT_STATUS_CODES: &[u16] = &[200, 204, 301, 302, 307, 308, 401, 403, 405, 500];
/// Most requests in flight at once.
pub const MAX_CONCURRENCY: u64 = 1024;
/// Most requests one run may send, whatever the wordlist and recursion ask for.
pub const DEFAULT_MAX_REQUESTS: u64 = 2_000_000;
/// Most retries of one request.
pub const MAX_RETRIES: u64 = 10;

/// A config value the scan cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config.{field}: {reason}")]
pub struct SettingsError {
    pub field: String,
    pub reason: String,
}

impl SettingsError {
    fn new(field: &str, reason: impl Into<String>) -> SettingsError {
        SettingsError {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// How the scan runs; built from the run config by [`Settings::from_config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// A wordlist file to use instead of the embedded default list.
    pub wordlist: Option<PathBuf>,
    /// Extensions appended to every word that is not a directory probe (no dot).
    pub extensions: Vec<String>,
    /// How many directory levels below the target are scanned (0: the target's only).
    pub depth: u32,
    /// Status codes reported; others are dropped. Empty: all not filtered.
    pub status_codes: Vec<u16>,
    /// Status codes never reported.
    pub filter_status: Vec<u16>,
    /// Responses with one of these body sizes (bytes) are dropped.
    pub filter_size: Vec<u64>,
    /// Responses with one of these word counts are dropped.
    pub filter_words: Vec<u64>,
    /// Responses with one of these line counts are dropped.
    pub filter_lines: Vec<u64>,
    pub method: Method,
    /// Extra request headers, sent with every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub user_agent: HeaderValue,
    /// Requests in flight at once (one connection each).
    pub concurrency: usize,
    /// Most requests per second over the whole scan; `None`: unlimited.
    pub rate_limit: Option<u32>,
    /// Limit for one request: connect, send and read the response.
    pub timeout: Duration,
    /// How many times a request that got no answer (timeout, reset, refused) is
    /// sent again before it counts as an error.
    pub retries: u32,
    /// The wait before the first retry; doubled for each next one, with jitter.
    pub retry_backoff: Duration,
    /// Adapt the requests in flight to the target (down when latency climbs or
    /// requests fail, back up when it keeps pace); off: always `concurrency`.
    pub auto_tune: bool,
    /// Stop the scan once this many words in a row got no answer even after their
    /// retries (the target is gone or blocks the scan); 0: never.
    pub max_consecutive_failures: u64,
    /// Follow same-origin redirects of found resources (the first hop is still reported).
    pub follow_redirects: bool,
    pub max_redirects: u32,
    /// Learn the target's soft-404 / wildcard answers from random paths and drop them.
    pub auto_calibrate: bool,
    /// Check the server's certificate chain and name (off: scanners meet self-signed certs).
    pub tls_verify: bool,
    /// Most requests the run sends; the scan stops (incomplete) at this bound.
    pub max_requests: u64,
    /// Most body bytes read per response; longer bodies are counted up to here.
    pub max_body_bytes: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            wordlist: None,
            extensions: Vec::new(),
            depth: 2,
            status_codes: DEFAULT_STATUS_CODES.to_vec(),
            filter_status: vec![404],
            filter_size: Vec::new(),
            filter_words: Vec::new(),
            filter_lines: Vec::new(),
            method: Method::GET,
            headers: Vec::new(),
            user_agent: HeaderValue::from_static("secflow-ferox/1.0"),
            concurrency: 50,
            rate_limit: None,
            timeout: Duration::from_secs(7),
            retries: 2,
            retry_backoff: Duration::from_millis(200),
            auto_tune: true,
            max_consecutive_failures: 100,
            follow_redirects: false,
            max_redirects: 5,
            auto_calibrate: true,
            tls_verify: false,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_body_bytes: 1 << 20,
        }
    }
}

impl Settings {
    /// Reads the run config; absent keys keep their defaults, unknown keys are ignored
    /// (the supervisor refuses them against the manifest's schema).
    pub fn from_config(config: &Map<String, Value>) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        if let Some(v) = config.get("wordlist") {
            let path = as_str(v, "wordlist")?;
            s.wordlist = (!path.is_empty()).then(|| PathBuf::from(path));
        }
        if let Some(v) = config.get("extensions") {
            s.extensions = string_list(v, "extensions")?
                .into_iter()
                .map(|e| e.trim_start_matches('.').to_owned())
                .collect();
            if let Some(bad) = s
                .extensions
                .iter()
                .find(|e| e.is_empty() || e.contains(['/', '?', '#']) || e.len() > 32)
            {
                return Err(SettingsError::new(
                    "extensions",
                    format!("{bad:?} is not a file extension"),
                ));
            }
        }
        if let Some(v) = config.get("depth") {
            s.depth = bounded(v, "depth", 0, 16)? as u32;
        }
        if let Some(v) = config.get("status_codes") {
            s.status_codes = status_list(v, "status_codes")?;
        }
        if let Some(v) = config.get("filter_status") {
            s.filter_status = status_list(v, "filter_status")?;
        }
        if let Some(v) = config.get("filter_size") {
            s.filter_size = number_list(v, "filter_size")?;
        }
        if let Some(v) = config.get("filter_words") {
            s.filter_words = number_list(v, "filter_words")?;
        }
        if let Some(v) = config.get("filter_lines") {
            s.filter_lines = number_list(v, "filter_lines")?;
        }
        if let Some(v) = config.get("method") {
            let name = as_str(v, "method")?.to_ascii_uppercase();
            s.method = Method::from_bytes(name.as_bytes())
                .map_err(|_| SettingsError::new("method", format!("{name:?} is not a method")))?;
        }
        if let Some(v) = config.get("headers") {
            s.headers = header_map(v)?;
        }
        if let Some(v) = config.get("user_agent") {
            s.user_agent = HeaderValue::from_str(as_str(v, "user_agent")?)
                .map_err(|_| SettingsError::new("user_agent", "is not a valid header value"))?;
        }
        if let Some(v) = config.get("concurrency") {
            s.concurrency = bounded(v, "concurrency", 1, MAX_CONCURRENCY)? as usize;
        }
        if let Some(v) = config.get("rate_limit") {
            let rate = bounded(v, "rate_limit", 0, 1_000_000)?;
            s.rate_limit = (rate > 0).then_some(rate as u32);
        }
        if let Some(v) = config.get("timeout_ms") {
            s.timeout = Duration::from_millis(bounded(v, "timeout_ms", 1, 600_000)?);
        }
        if let Some(v) = config.get("retries") {
            s.retries = bounded(v, "retries", 0, MAX_RETRIES)? as u32;
        }
        if let Some(v) = config.get("retry_backoff_ms") {
            s.retry_backoff = Duration::from_millis(bounded(v, "retry_backoff_ms", 1, 60_000)?);
        }
        if let Some(v) = config.get("auto_tune") {
            s.auto_tune = as_bool(v, "auto_tune")?;
        }
        if let Some(v) = config.get("max_consecutive_failures") {
            s.max_consecutive_failures = bounded(v, "max_consecutive_failures", 0, 1_000_000)?;
        }
        if let Some(v) = config.get("follow_redirects") {
            s.follow_redirects = as_bool(v, "follow_redirects")?;
        }
        if let Some(v) = config.get("max_redirects") {
            s.max_redirects = bounded(v, "max_redirects", 0, 20)? as u32;
        }
        if let Some(v) = config.get("auto_calibrate") {
            s.auto_calibrate = as_bool(v, "auto_calibrate")?;
        }
        if let Some(v) = config.get("tls_verify") {
            s.tls_verify = as_bool(v, "tls_verify")?;
        }
        if let Some(v) = config.get("max_requests") {
            s.max_requests = bounded(v, "max_requests", 1, u64::MAX)?;
        }
        if let Some(v) = config.get("max_body_bytes") {
            s.max_body_bytes = bounded(v, "max_body_bytes", 0, 64 << 20)?;
        }
        Ok(s)
    }

    /// Whether a response with these measures is dropped by the status and size filters.
    pub fn filters_out(&self, status: u16, length: u64, words: u64, lines: u64) -> bool {
        self.filter_status.contains(&status)
            || (!self.status_codes.is_empty() && !self.status_codes.contains(&status))
            || self.filter_size.contains(&length)
            || self.filter_words.contains(&words)
            || self.filter_lines.contains(&lines)
    }
}

fn as_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, SettingsError> {
    v.as_str()
        .ok_or_else(|| SettingsError::new(field, "must be a string"))
}

fn as_bool(v: &Value, field: &str) -> Result<bool, SettingsError> {
    v.as_bool()
        .ok_or_else(|| SettingsError::new(field, "must be true or false"))
}

fn bounded(v: &Value, field: &str, min: u64, max: u64) -> Result<u64, SettingsError> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(SettingsError::new(
            field,
            format!("must be an integer from {min} to {max}"),
        )),
    }
}

fn string_list(v: &Value, field: &str) -> Result<Vec<String>, SettingsError> {
    let items = v
        .as_array()
        .ok_or_else(|| SettingsError::new(field, "must be a list of strings"))?;
    items
        .iter()
        .map(|item| as_str(item, field).map(str::to_owned))
        .collect()
}

fn number_list(v: &Value, field: &str) -> Result<Vec<u64>, SettingsError> {
    let items = v
        .as_array()
        .ok_or_else(|| SettingsError::new(field, "must be a list of integers"))?;
    items
        .iter()
        .map(|item| bounded(item, field, 0, u64::MAX))
        .collect()
}

fn status_list(v: &Value, field: &str) -> Result<Vec<u16>, SettingsError> {
    let items = v
        .as_array()
        .ok_or_else(|| SettingsError::new(field, "must be a list of status codes"))?;
    items
        .iter()
        .map(|item| bounded(item, field, 100, 599).map(|n| n as u16))
        .collect()
}

fn header_map(v: &Value) -> Result<Vec<(HeaderName, HeaderValue)>, SettingsError> {
    let map = v
        .as_object()
        .ok_or_else(|| SettingsError::new("headers", "must be an object of name: value"))?;
    map.iter()
        .map(|(name, value)| {
            let field = format!("headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SettingsError::new(&field, "is not a valid header name"))?;
            let value = HeaderValue::from_str(as_str(value, &field)?)
                .map_err(|_| SettingsError::new(&field, "is not a valid header value"))?;
            Ok((header, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(config: Value) -> Result<Settings, SettingsError> {
        Settings::from_config(config.as_object().expect("object"))
    }

    #[test]
    fn an_empty_config_gives_the_documented_defaults() {
        let s = settings(json!({})).expect("defaults");
        assert_eq!(s.concurrency, 50);
        assert_eq!(s.depth, 2);
        assert_eq!(s.filter_status, vec![404]);
        assert!(s.auto_calibrate);
        assert_eq!(s.method, Method::GET);
        assert_eq!(s.retries, 2);
        assert_eq!(s.retry_backoff, Duration::from_millis(200));
        assert!(s.auto_tune);
        assert_eq!(s.max_consecutive_failures, 100);
    }

    #[test]
    fn retry_and_tuning_settings_are_read_and_bounded() {
        let s = settings(json!({
            "retries": 0, "retry_backoff_ms": 50, "auto_tune": false, "max_consecutive_failures": 0
        }))
        .expect("valid");
        assert_eq!(s.retries, 0);
        assert_eq!(s.retry_backoff, Duration::from_millis(50));
        assert!(!s.auto_tune);
        assert_eq!(s.max_consecutive_failures, 0);
        let err = settings(json!({"retries": 11})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.retries: must be an integer from 0 to 10"
        );
        let err = settings(json!({"retry_backoff_ms": 0})).unwrap_err();
        assert_eq!(err.field, "retry_backoff_ms");
        let err = settings(json!({"auto_tune": "yes"})).unwrap_err();
        assert_eq!(err.to_string(), "config.auto_tune: must be true or false");
    }

    #[test]
    fn values_are_read_and_extensions_lose_their_dot() {
        let s = settings(json!({
            "extensions": [".php", "bak"], "depth": 0, "method": "head", "concurrency": 8,
            "rate_limit": 100, "timeout_ms": 250, "headers": {"X-Token": "abc"}
        }))
        .expect("valid");
        assert_eq!(s.extensions, ["php", "bak"]);
        assert_eq!(s.depth, 0);
        assert_eq!(s.method, Method::HEAD);
        assert_eq!(s.rate_limit, Some(100));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.headers[0].0.as_str(), "x-token");
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_field() {
        let err = settings(json!({"concurrency": 0})).unwrap_err();
        assert_eq!(err.field, "concurrency");
        let err = settings(json!({"status_codes": [200, 999]})).unwrap_err();
        assert_eq!(err.field, "status_codes");
        let err = settings(json!({"headers": {"Bad Name": "x"}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.headers.Bad Name: is not a valid header name"
        );
        let err = settings(json!({"extensions": ["a/b"]})).unwrap_err();
        assert_eq!(err.field, "extensions");
    }

    #[test]
    fn filters_drop_listed_statuses_sizes_and_statuses_outside_the_reported_set() {
        let s = settings(json!({"filter_size": [42], "status_codes": [200, 403]})).expect("valid");
        assert!(s.filters_out(404, 1, 1, 1));
        assert!(s.filters_out(500, 1, 1, 1), "500 is not in status_codes");
        assert!(s.filters_out(200, 42, 1, 1));
        assert!(!s.filters_out(200, 43, 1, 1));
    }
}
