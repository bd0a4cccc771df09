//! Finding identity: the fingerprint that deduplicates findings across runs.
//!
//! contracts.md §5: the plugin's own `fingerprint` when it sends one, else
//! sha256 of lowercase `plugin|rule_id|normalized location|sorted CVE ids`, where
//! the normalized location is `scheme://host:port/path` (no query, no fragment,
//! default port made explicit) or `ip:port/proto`. Pure functions, no I/O.

use secflow_plugin_sdk::protocol::Severity;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest fingerprint a plugin may supply; longer ones are hashed instead.
pub const MAX_PLUGIN_FINGERPRINT: usize = 256;

/// The fingerprint of a (schema-valid) finding sent by `plugin`.
pub fn fingerprint(plugin: &str, finding: &Value) -> String {
    if let Some(own) = finding.get("fingerprint").and_then(Value::as_str) {
        if !own.is_empty() && own.len() <= MAX_PLUGIN_FINGERPRINT {
            return own.to_string();
        }
    }
    let rule_id = finding.get("rule_id").and_then(Value::as_str).unwrap_or("");
    let location = normalized_location(finding);
    let mut cves: Vec<String> = finding
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.get("cve").and_then(Value::as_str))
                .map(str::to_ascii_uppercase)
                .collect()
        })
        .unwrap_or_default();
    cves.sort();
    cves.dedup();
    let key = format!("{plugin}|{rule_id}|{location}|{}", cves.join(",")).to_lowercase();
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The severity of a schema-valid finding (`unknown` if absent or misspelt).
pub fn severity(finding: &Value) -> Severity {
    finding
        .get("severity")
        .and_then(Value::as_str)
        .and_then(Severity::parse)
        .unwrap_or(Severity::Unknown)
}

/// Where a finding is, normalized so that the same place always reads the same.
pub fn normalized_location(finding: &Value) -> String {
    let location = finding.get("location");
    let field = |name: &str| location.and_then(|l| l.get(name));
    let text = |name: &str| {
        field(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(url) = text("url").and_then(normalize_url) {
        return url;
    }
    let port = field("port").and_then(|p| match p {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let proto = text("protocol").unwrap_or("tcp").to_ascii_lowercase();
    if let Some(addr) = text("ip").or_else(|| text("host")) {
        let addr = addr.to_ascii_lowercase();
        return match port {
            Some(port) => format!("{addr}:{port}/{proto}"),
            None => addr,
        };
    }
    let target = finding.get("target").and_then(Value::as_str).unwrap_or("");
    normalize_url(target).unwrap_or_else(|| target.trim().to_ascii_lowercase())
}

/// `scheme://host:port/path` for an absolute URL; `None` if it is not one.
pub fn normalize_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Credentials are not part of the place.
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if hostport.is_empty() {
        return None;
    }
    let (host, port) = split_host_port(hostport);
    let port = port.or(match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "ftp" => Some(21),
        _ => None,
    });
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = &tail[..path_end];
    let path = if path.is_empty() { "/" } else { path };
    let host = host.to_ascii_lowercase();
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    })
}

fn split_host_port(hostport: &str) -> (&str, Option<u16>) {
    // IPv6 literal: [::1]:8080
    if let Some(rest) = hostport.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (hostport, None),
        },
        _ => (hostport, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_normalize_scheme_host_default_port_and_drop_the_query() {
        assert_eq!(
            normalize_url("HTTP://Example.COM/a/b?x=1#f").as_deref(),
            Some("http://example.com:80/a/b")
        );
        assert_eq!(
            normalize_url("https://h").as_deref(),
            Some("https://h:443/")
        );
        assert_eq!(
            normalize_url("http://u:p@h:8080/x").as_deref(),
            Some("http://h:8080/x")
        );
        assert_eq!(
            normalize_url("http://[::1]:81/").as_deref(),
            Some("http://::1:81/")
        );
        assert_eq!(normalize_url("not a url"), None);
        assert_eq!(normalize_url("http://"), None);
    }

    #[test]
    fn the_same_place_with_another_query_has_the_same_fingerprint() {
        let a = json!({"rule_id": "r", "target": "t", "location": {"url": "http://h/p?a=1"}});
        let b = json!({"rule_id": "r", "target": "t", "location": {"url": "http://H:80/p?b=2"}});
        assert_eq!(fingerprint("p", &a), fingerprint("p", &b));
        let c = json!({"rule_id": "r", "target": "t", "location": {"url": "http://h/q"}});
        assert_ne!(fingerprint("p", &a), fingerprint("p", &c));
    }

    #[test]
    fn cve_order_and_case_do_not_change_the_fingerprint() {
        let a = json!({"rule_id": "r", "target": "10.0.0.1",
            "vulnerabilities": [{"cve": "CVE-2021-1"}, {"cve": "cve-2020-2"}]});
        let b = json!({"rule_id": "r", "target": "10.0.0.1",
            "vulnerabilities": [{"cve": "CVE-2020-2"}, {"cve": "CVE-2021-1"}]});
        assert_eq!(fingerprint("p", &a), fingerprint("p", &b));
    }

    #[test]
    fn ip_and_port_locations_read_ip_port_proto() {
        let f = json!({"location": {"ip": "10.0.0.1", "port": 22}});
        assert_eq!(normalized_location(&f), "10.0.0.1:22/tcp");
        let f = json!({"location": {"host": "DB", "port": "5432", "protocol": "TCP"}});
        assert_eq!(normalized_location(&f), "db:5432/tcp");
    }

    #[test]
    fn a_plugin_fingerprint_wins_and_the_plugin_name_matters() {
        let own = json!({"rule_id": "r", "target": "t", "fingerprint": "abc"});
        assert_eq!(fingerprint("p", &own), "abc");
        let f = json!({"rule_id": "r", "target": "t"});
        assert_ne!(fingerprint("p", &f), fingerprint("q", &f));
        assert_eq!(fingerprint("p", &f).len(), 64);
    }
}
