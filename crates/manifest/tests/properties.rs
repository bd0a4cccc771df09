//! Property tests (proptest) for the supervisor's pure policy: the finding
//! fingerprint (contracts §5) and the capping of manifest limits by the
//! config (contracts §4, §7). Each property runs the real functions on
//! generated inputs; the fuzz targets in `fuzz/` cover arbitrary bytes.

use std::path::Path;

use proptest::prelude::*;
use secflow_core::config::{Config, RequestedLimits, RunLimits};
use secflow_core::finding::{fingerprint, normalized_location, MAX_PLUGIN_FINGERPRINT};
use secflow_manifest::parse_manifest;
use serde_json::{json, Value};

const LIMIT_NAMES: [&str; 6] = [
    "memory_mb",
    "cpu_seconds",
    "timeout_seconds",
    "max_processes",
    "max_open_files",
    "max_output_mb",
];

fn fields(l: &RunLimits) -> [u64; 6] {
    [
        l.memory_mb,
        l.cpu_seconds,
        l.timeout_seconds,
        l.max_processes,
        l.max_open_files,
        l.max_output_mb,
    ]
}

fn limits_from(v: [u64; 6]) -> RunLimits {
    RunLimits {
        memory_mb: v[0],
        cpu_seconds: v[1],
        timeout_seconds: v[2],
        max_processes: v[3],
        max_open_files: v[4],
        max_output_mb: v[5],
    }
}

fn requested_from(v: [Option<u64>; 6]) -> RequestedLimits {
    RequestedLimits {
        memory_mb: v[0],
        cpu_seconds: v[1],
        timeout_seconds: v[2],
        max_processes: v[3],
        max_open_files: v[4],
        max_output_mb: v[5],
    }
}

/// A DNS-like host name, lowercase.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,6}){0,2}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

/// A URL path, lowercase (the fingerprint key is lowercased as a whole).
fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9._~-]{1,8}", 0..4)
        .prop_map(|segments| segments.iter().map(|s| format!("/{s}")).collect::<String>())
}

fn cve() -> impl Strategy<Value = String> {
    (1999u32..2030, 1u32..200_000).prop_map(|(year, n)| format!("CVE-{year}-{n:04}"))
}

/// Upper-cases the ASCII letters of `s` where `mask` says so, cycling through it.
fn recase(s: &str, mask: &[bool]) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask.get(i % mask.len().max(1)).copied().unwrap_or(false) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn url_finding(rule: &str, url: &str, cves: &[String]) -> Value {
    let vulns: Vec<Value> = cves.iter().map(|c| json!({ "cve": c })).collect();
    json!({
        "finding_schema_version": "1.0.0",
        "rule_id": rule,
        "title": "t",
        "severity": "high",
        "target": "http://target.example/",
        "location": { "url": url },
        "vulnerabilities": vulns,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn resolved_limits_never_pass_the_ceiling_keep_lower_requests_and_default_the_rest(
        requested in proptest::array::uniform6(proptest::option::of(1u64..=2_000_000)),
        defaults in proptest::array::uniform6(1u64..=100_000),
        ceiling in proptest::array::uniform6(1u64..=100_000),
    ) {
        let (limits, capped) = RunLimits::resolve(
            &requested_from(requested),
            &limits_from(defaults),
            &limits_from(ceiling),
        );
        let got = fields(&limits);
        let mut capped_fields = Vec::new();
        for i in 0..6 {
            prop_assert!(got[i] <= ceiling[i], "{} above its ceiling", LIMIT_NAMES[i]);
            match requested[i] {
                Some(v) if v > ceiling[i] => {
                    prop_assert_eq!(got[i], ceiling[i]);
                    capped_fields.push(LIMIT_NAMES[i]);
                }
                Some(v) => prop_assert_eq!(got[i], v),
                None => prop_assert_eq!(got[i], defaults[i].min(ceiling[i])),
            }
        }
        let reported: Vec<&str> = capped.iter().map(|c| c.field).collect();
        prop_assert_eq!(reported, capped_fields);
        for cap in &capped {
            prop_assert!(cap.requested > cap.ceiling);
        }
    }

    #[test]
    fn a_config_takes_its_limits_only_when_every_default_is_within_its_ceiling(
        defaults in proptest::array::uniform6(proptest::option::of(0u64..=10_000)),
        ceiling in proptest::array::uniform6(proptest::option::of(1u64..=10_000)),
    ) {
        let mut text = String::from("[limits]\n");
        for (name, value) in LIMIT_NAMES.iter().zip(defaults) {
            if let Some(v) = value {
                text.push_str(&format!("{name} = {v}\n"));
            }
        }
        text.push_str("[limits.ceiling]\n");
        for (name, value) in LIMIT_NAMES.iter().zip(ceiling) {
            if let Some(v) = value {
                text.push_str(&format!("{name} = {v}\n"));
            }
        }
        let builtin_defaults = fields(&Config::defaults_in(Path::new("/")).limits.defaults());
        let builtin_ceiling = fields(&RunLimits::CEILING);
        let effective_default: Vec<u64> =
            (0..6).map(|i| defaults[i].unwrap_or(builtin_defaults[i])).collect();
        let effective_ceiling: Vec<u64> =
            (0..6).map(|i| ceiling[i].unwrap_or(builtin_ceiling[i])).collect();
        let acceptable = (0..6).all(|i| {
            effective_default[i] >= 1 && effective_default[i] <= effective_ceiling[i]
        });
        match Config::parse(&text, Path::new("/etc/secflow/secflow.toml")) {
            Ok(config) => {
                prop_assert!(acceptable, "accepted {text}");
                prop_assert_eq!(fields(&config.limits.defaults()).to_vec(), effective_default);
                prop_assert_eq!(fields(&config.limits.ceiling).to_vec(), effective_ceiling);
            }
            Err(e) => {
                prop_assert!(!acceptable, "refused {text}: {e}");
                prop_assert!(e.to_string().contains("limits."), "{e}");
            }
        }
    }

    #[test]
    fn a_manifest_read_from_bytes_never_gets_more_than_the_config_ceiling(
        asked in proptest::array::uniform6(proptest::option::of(1u64..=65_536)),
        ceiling in proptest::array::uniform6(1u64..=10_000),
    ) {
        let mut sandbox = serde_json::Map::new();
        for (name, value) in LIMIT_NAMES.iter().zip(asked) {
            if let Some(v) = value {
                sandbox.insert((*name).into(), json!(v));
            }
        }
        let doc = json!({
            "name": "p", "version": "1.0.0", "category": "detector",
            "entrypoint": "p", "code_hash": format!("sha256:{}", "0".repeat(64)),
            "sandbox": sandbox,
        });
        let (_, manifest) = parse_manifest(Path::new("m.json"), doc.to_string().as_bytes())
            .expect("a schema-valid manifest parses");
        let ceiling = limits_from(ceiling);
        let defaults = Config::defaults_in(Path::new("/")).limits.defaults();
        let (limits, _) = RunLimits::resolve(&manifest.sandbox.limits, &defaults, &ceiling);
        let (got, max, def) = (fields(&limits), fields(&ceiling), fields(&defaults));
        for i in 0..6 {
            prop_assert!(got[i] <= max[i]);
            prop_assert_eq!(got[i], asked[i].unwrap_or(def[i]).min(max[i]));
        }
    }

    #[test]
    fn the_fingerprint_ignores_scheme_host_case_default_port_query_fragment_and_credentials(
        rule in "[a-z][a-z0-9._-]{0,15}",
        host in host(),
        path in path(),
        query in "[a-z0-9=&]{1,10}",
        fragment in "[a-z0-9]{1,6}",
        user in "[a-z]{1,6}:[a-z0-9]{1,6}",
        https in any::<bool>(),
        mask in proptest::collection::vec(any::<bool>(), 1..8),
        cves in proptest::collection::vec(cve(), 0..4),
    ) {
        let (scheme, port) = if https { ("https", 443) } else { ("http", 80) };
        let plain = format!("{scheme}://{host}{path}");
        let base = fingerprint("p", &url_finding(&rule, &plain, &cves));
        let variants = [
            format!("{}://{}{path}", scheme.to_ascii_uppercase(), recase(&host, &mask)),
            format!("{scheme}://{host}:{port}{path}"),
            format!("{scheme}://{host}{path}?{query}"),
            format!("{scheme}://{host}{path}#{fragment}"),
            format!("{scheme}://{user}@{host}{path}"),
            format!("  {scheme}://{host}{path}?{query}#{fragment}  "),
        ];
        for url in &variants {
            prop_assert_eq!(&fingerprint("p", &url_finding(&rule, url, &cves)), &base, "{}", url);
        }
        // Only an empty path and `/` are the same path.
        if path.is_empty() {
            let slash = format!("{scheme}://{host}/");
            prop_assert_eq!(fingerprint("p", &url_finding(&rule, &slash, &cves)), base.clone());
        }
        prop_assert_eq!(fingerprint("p", &url_finding(&recase(&rule, &mask), &plain, &cves)), base);
    }

    #[test]
    fn the_fingerprint_ignores_cve_order_case_and_repeats(
        cves in proptest::collection::vec(cve(), 1..6),
        seed in any::<u64>(),
    ) {
        let base = fingerprint("p", &url_finding("r", "http://h/", &cves));
        let mut shuffled: Vec<String> = cves.iter().map(|c| c.to_ascii_lowercase()).collect();
        let len = shuffled.len();
        shuffled.rotate_left((seed as usize) % len);
        shuffled.push(cves[0].clone());
        prop_assert_eq!(fingerprint("p", &url_finding("r", "http://h/", &shuffled)), base);
    }

    #[test]
    fn the_fingerprint_tells_apart_plugin_rule_host_port_path_and_cve_set(
        rules in ("[a-z][a-z0-9]{0,8}", "[a-z][a-z0-9]{0,8}"),
        hosts in (host(), host()),
        ports in (1u16..=65535, 1u16..=65535),
        paths in (path(), path()),
        cves in (proptest::collection::btree_set(cve(), 0..4), proptest::collection::btree_set(cve(), 0..4)),
    ) {
        let url = |host: &str, port: u16, path: &str| format!("http://{host}:{port}{path}");
        let cve_list = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
        let a = url_finding(&rules.0, &url(&hosts.0, ports.0, &paths.0), &cve_list(&cves.0));
        let print = fingerprint("p", &a);
        prop_assert_ne!(fingerprint("q", &a), print.clone());
        let changes = [
            (rules.0 != rules.1, url_finding(&rules.1, &url(&hosts.0, ports.0, &paths.0), &cve_list(&cves.0))),
            (hosts.0 != hosts.1, url_finding(&rules.0, &url(&hosts.1, ports.0, &paths.0), &cve_list(&cves.0))),
            (ports.0 != ports.1, url_finding(&rules.0, &url(&hosts.0, ports.1, &paths.0), &cve_list(&cves.0))),
            // An empty path reads `/`, which no generated non-empty path is.
            (paths.0 != paths.1,
                url_finding(&rules.0, &url(&hosts.0, ports.0, &paths.1), &cve_list(&cves.0))),
            (cves.0 != cves.1, url_finding(&rules.0, &url(&hosts.0, ports.0, &paths.0), &cve_list(&cves.1))),
        ];
        for (differs, other) in &changes {
            let same = fingerprint("p", other) == print;
            prop_assert_eq!(same, !differs, "{} vs {}", a, other);
        }
    }

    #[test]
    fn an_address_location_reads_ip_port_proto_whatever_the_spelling(
        ip in host(),
        port in 1u16..=65535,
        proto in prop_oneof![Just("tcp"), Just("udp")],
        mask in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        let expected = format!("{ip}:{port}/{proto}");
        let spellings = [
            json!({"location": {"ip": ip, "port": port, "protocol": proto}}),
            json!({"location": {"ip": recase(&ip, &mask), "port": port.to_string(), "protocol": proto.to_ascii_uppercase()}}),
            json!({"location": {"host": ip, "port": port, "protocol": proto}}),
        ];
        for finding in &spellings {
            prop_assert_eq!(normalized_location(finding), expected.clone());
        }
        if proto == "tcp" {
            let no_proto = json!({"location": {"ip": ip, "port": port}});
            prop_assert_eq!(normalized_location(&no_proto), expected);
        }
    }

    #[test]
    fn a_plugin_fingerprint_of_1_to_256_bytes_is_kept_and_any_other_is_replaced(
        own in proptest::collection::vec(proptest::char::range('!', '~'), 0..300),
    ) {
        let own: String = own.into_iter().collect();
        let finding = json!({"rule_id": "r", "target": "t", "fingerprint": own});
        let print = fingerprint("p", &finding);
        if !own.is_empty() && own.len() <= MAX_PLUGIN_FINGERPRINT {
            prop_assert_eq!(print, own);
        } else {
            prop_assert_eq!(print.len(), 64);
            prop_assert_eq!(print, fingerprint("p", &json!({"rule_id": "r", "target": "t"})));
        }
    }
}
