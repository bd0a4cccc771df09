//! Each supported template feature against a loopback fixture server.

mod support;

use std::time::{Duration, Instant};

use secflow_plugin_sdk::testing::TestRun;
use serde_json::json;
use support::{rule_ids, run_inline, schema_errors, Reply, Server};

const HEAD: &str = "id: t\ninfo:\n  name: Test\n  severity: medium\n";

fn tpl(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn raw_requests_are_sent_verbatim_with_method_headers_and_body() {
    let yaml = tpl(r#"variables:
  cmd: "echo hi"
http:
  - raw:
      - |+
        POST /cgi-bin/.%%32%65/%2e%2e/bin/sh HTTP/1.1
        Host: {{Hostname}}
        Origin: {{BaseURL}}
        Content-Type: application/x-www-form-urlencoded

        echo; {{cmd}}
    matchers:
      - type: word
        words: ["hi"]
"#);
    let (outcome, server) = run_inline(&yaml, |_| Reply::text(200, "hi"));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/cgi-bin/.%%32%65/%2e%2e/bin/sh");
    let host = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    assert_eq!(seen[0].header("host"), Some(host));
    assert_eq!(
        seen[0].header("origin"),
        Some(format!("http://{host}").as_str())
    );
    assert_eq!(seen[0].body, b"echo; echo hi");
    assert_eq!(rule_ids(&outcome), ["t"]);
    let f = &outcome.findings[0];
    assert!(f["evidence"]["request"]
        .as_str()
        .unwrap()
        .starts_with("POST /cgi-bin/.%%32%65/%2e%2e/bin/sh HTTP/1.1\r\n"));
    assert_eq!(f["evidence"]["status"], 200);
    assert!(schema_errors(f).is_empty());
}

#[test]
fn path_requests_carry_custom_headers_body_and_builtin_variables() {
    let yaml = tpl(r#"http:
  - method: PUT
    path: ["{{BaseURL}}/h/{{Host}}/{{Port}}/{{randstr}}"]
    headers:
      X-Probe: "{{Hostname}}"
    body: "name={{randstr}}"
    matchers:
      - type: status
        status: [201]
"#);
    let (outcome, server) = run_inline(&yaml, |_| Reply::text(201, ""));
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "PUT");
    let host = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (h, p) = host.split_once(':').unwrap();
    let rest = seen.target.strip_prefix(&format!("/h/{h}/{p}/")).unwrap();
    assert_eq!(rest.len(), 27, "randstr is 27 characters: {rest}");
    assert_eq!(seen.header("x-probe"), Some(host));
    assert_eq!(
        seen.body,
        format!("name={rest}").into_bytes(),
        "one randstr per template run"
    );
    assert_eq!(rule_ids(&outcome), ["t"]);
}

#[test]
fn pitchfork_pairs_payloads_and_clusterbomb_crosses_them() {
    let body = |attack: &str| {
        tpl(&format!(
            r#"http:
  - method: GET
    path: ["{{{{BaseURL}}}}/{{{{user}}}}/{{{{pass}}}}"]
    attack: {attack}
    payloads:
      user: [a, b]
      pass: ["1", "2"]
    matchers:
      - type: status
        status: [200]
"#
        ))
    };
    let (_, server) = run_inline(&body("pitchfork"), |_| Reply::text(404, ""));
    let mut targets: Vec<String> = server.seen().iter().map(|s| s.target.clone()).collect();
    targets.sort();
    assert_eq!(targets, ["/a/1", "/b/2"]);
    let (_, server) = run_inline(&body("clusterbomb"), |_| Reply::text(404, ""));
    let mut targets: Vec<String> = server.seen().iter().map(|s| s.target.clone()).collect();
    targets.sort();
    assert_eq!(targets, ["/a/1", "/a/2", "/b/1", "/b/2"]);
}

#[test]
fn payloads_from_a_file_beside_the_template_are_read_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("paths.txt"), "/x\n/y\n\n").unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(
        &path,
        tpl(r#"http:
  - method: GET
    path: ["{{BaseURL}}{{p}}"]
    payloads:
      p: paths.txt
    matchers:
      - type: word
        words: [found]
"#),
    )
    .unwrap();
    let server = Server::start(|s| {
        if s.target == "/y" {
            Reply::text(200, "found")
        } else {
            Reply::text(404, "")
        }
    });
    let outcome = support::run_plugin(&[path], &server.url);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(outcome.findings.len(), 1);
    assert!(outcome.findings[0]["location"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/y"));
}

#[test]
fn stop_at_first_match_stops_the_request_block() {
    let yaml = tpl(r#"http:
  - method: GET
    path: ["{{BaseURL}}/1", "{{BaseURL}}/2", "{{BaseURL}}/3"]
    stop-at-first-match: true
    matchers:
      - type: word
        words: [yes]
"#);
    let (outcome, server) = run_inline(&yaml, |_| Reply::text(200, "yes"));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(outcome.findings.len(), 1);
}

#[test]
fn redirects_are_followed_only_when_asked_and_host_redirects_stay_on_the_host() {
    let handler = |s: &support::Seen| match s.target.as_str() {
        "/start" => Reply::new(302, &[("Location", "/end")], ""),
        "/away" => Reply::new(302, &[("Location", "http://other.invalid:1/end")], ""),
        _ => Reply::text(200, "landed"),
    };
    let with = |flags: &str, path: &str| {
        tpl(&format!(
            r#"http:
  - method: GET
    path: ["{{{{BaseURL}}}}{path}"]
{flags}    matchers:
      - type: word
        words: [landed]
"#
        ))
    };
    let (outcome, _) = run_inline(&with("", "/start"), handler);
    assert!(
        outcome.findings.is_empty(),
        "no redirect followed by default"
    );
    let (outcome, _) = run_inline(
        &with("    redirects: true\n    max-redirects: 2\n", "/start"),
        handler,
    );
    assert_eq!(outcome.findings.len(), 1);
    let (outcome, server) = run_inline(&with("    host-redirects: true\n", "/away"), handler);
    assert!(outcome.findings.is_empty());
    assert_eq!(
        server.seen().len(),
        1,
        "the off-host redirect is not followed"
    );
}

#[test]
fn max_size_bounds_the_body_that_matchers_see() {
    let yaml = |size: u32| {
        tpl(&format!(
            r#"http:
  - method: GET
    path: ["{{{{BaseURL}}}}"]
    max-size: {size}
    matchers:
      - type: word
        words: [needle]
"#
        ))
    };
    let body = format!("{}needle", "x".repeat(100));
    let b = body.clone();
    let (outcome, _) = run_inline(&yaml(50), move |_| Reply::text(200, &b));
    assert!(outcome.findings.is_empty());
    let (outcome, _) = run_inline(&yaml(200), move |_| Reply::text(200, &body));
    assert_eq!(outcome.findings.len(), 1);
}

#[test]
fn matcher_types_parts_negative_case_insensitive_and_internal_behave() {
    let yaml = tpl(r#"http:
  - method: GET
    path: ["{{BaseURL}}"]
    matchers-condition: and
    matchers:
      - type: binary
        binary: ["00ff10"]
      - type: size
        size: [7]
      - type: word
        part: header
        case-insensitive: true
        words: ["x-thing: yes"]
      - type: word
        part: all
        words: ["HTTP/1.1 200", "X-Thing"]
        condition: and
      - type: regex
        part: x_thing
        regex: ["^Y"]
      - type: word
        negative: true
        words: ["forbidden"]
      - type: dsl
        internal: true
        dsl:
          - "status_code == 200 && content_length == 7 && contains(tolower(all_headers), 'x-thing')"
"#);
    let reply = Reply::new(200, &[("X-Thing", "Yes")], b"ab\x00\xff\x10cd".to_vec());
    let r = reply.clone();
    let (outcome, _) = run_inline(&yaml, move |_| r.clone());
    assert_eq!(rule_ids(&outcome), ["t"]);
    let (outcome, _) = run_inline(&yaml, |_| {
        Reply::new(200, &[("X-Thing", "Yes")], b"ab\x00\xff\x11cd".to_vec())
    });
    assert!(outcome.findings.is_empty(), "binary needle absent");
}

#[test]
fn named_matchers_under_or_give_one_finding_each_with_the_name_in_the_rule_id() {
    let yaml = tpl(r#"http:
  - method: GET
    path: ["{{BaseURL}}"]
    matchers:
      - type: word
        name: alpha
        words: [a1]
      - type: word
        name: beta
        words: [b1]
      - type: word
        name: gamma
        words: [zzz]
"#);
    let (outcome, _) = run_inline(&yaml, |_| Reply::text(200, "a1 b1"));
    assert_eq!(rule_ids(&outcome), ["t:alpha", "t:beta"]);
    assert_eq!(outcome.findings[0]["evidence"]["matcher"], "alpha");
}

#[test]
fn extractors_regex_kval_dsl_and_json_fill_the_evidence() {
    let yaml = tpl(r#"http:
  - method: GET
    path: ["{{BaseURL}}"]
    matchers:
      - type: status
        status: [200]
    extractors:
      - type: regex
        group: 1
        regex: ['"v":"([0-9.]+)"']
      - type: kval
        kval: [X_Powered_By]
      - type: dsl
        dsl: ["to_upper(\"ok\")"]
      - type: json
        json: [".items[].name"]
      - type: regex
        name: hidden
        internal: true
        regex: ["secret"]
"#);
    let (outcome, _) = run_inline(&yaml, |_| {
        Reply::new(
            200,
            &[("X-Powered-By", "PHP/8.2")],
            r#"{"v":"1.2","items":[{"name":"n1"},{"name":"n2"}],"s":"secret"}"#,
        )
    });
    let extracted = &outcome.findings[0]["evidence"]["extracted"];
    assert_eq!(extracted, &json!(["1.2", "PHP/8.2", "OK", "n1", "n2"]));
    assert_eq!(outcome.findings[0]["evidence"]["named"]["hidden"], "secret");
}

#[test]
fn a_template_with_only_extractors_reports_when_they_find_something() {
    let yaml = tpl(r#"http:
  - method: GET
    path: ["{{BaseURL}}"]
    extractors:
      - type: regex
        regex: ["build-[0-9]+"]
"#);
    let (outcome, _) = run_inline(&yaml, |_| Reply::text(200, "build-42"));
    assert_eq!(
        outcome.findings[0]["evidence"]["extracted"],
        json!(["build-42"])
    );
    let (outcome, _) = run_inline(&yaml, |_| Reply::text(200, "nothing"));
    assert!(outcome.findings.is_empty());
}

#[test]
fn named_extractors_and_cookies_carry_over_to_the_next_request() {
    let yaml = tpl(r#"http:
  - raw:
      - |
        GET /login HTTP/1.1
        Host: {{Hostname}}
      - |
        GET /next?token={{token}} HTTP/1.1
        Host: {{Hostname}}
    extractors:
      - type: regex
        name: token
        internal: true
        group: 1
        regex: ['token=([a-z0-9]+)']
    matchers:
      - type: word
        words: [welcome]
"#);
    let (outcome, server) = run_inline(&yaml, |s| {
        if s.target == "/login" {
            Reply::new(200, &[("Set-Cookie", "sid=abc; Path=/")], "token=t0k3n")
        } else {
            Reply::text(200, "welcome")
        }
    });
    let seen = server.seen();
    assert_eq!(seen[1].target, "/next?token=t0k3n");
    assert_eq!(seen[1].header("cookie"), Some("sid=abc"));
    assert_eq!(outcome.findings.len(), 1);
}

#[test]
fn an_unsupported_template_is_skipped_counted_and_named_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dns.yaml"), tpl("dns:\n  - name: x\n")).unwrap();
    std::fs::write(dir.path().join("x.yaml"), tpl("http:\n  - path: ['{{BaseURL}}']\n    matchers:\n      - type: xpath\n        xpath: ['/a']\n")).unwrap();
    std::fs::write(dir.path().join("ok.yml"), tpl("http:\n  - path: ['{{BaseURL}}']\n    matchers:\n      - type: status\n        status: [200]\n")).unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "id: [unclosed\n").unwrap();
    let server = Server::start(|_| Reply::text(200, ""));
    let outcome = support::run_plugin(&[dir.path().to_path_buf()], &server.url);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let out = &outcome.outputs;
    assert_eq!(out["templates_total"], 4);
    assert_eq!(out["templates_run"], 1);
    assert_eq!(out["templates_skipped"], 2);
    assert_eq!(out["templates_invalid"], 1);
    assert_eq!(
        out["skipped_by_feature"],
        json!({"matcher type xpath": 1, "protocol dns": 1})
    );
    assert!(outcome
        .logs
        .iter()
        .any(|l| l.message.contains("unsupported protocol dns")));
    assert_eq!(outcome.findings.len(), 1);
}

#[test]
fn classification_becomes_vulnerabilities_and_cpe_with_the_extracted_version() {
    let server = Server::start(|s| match s.target.as_str() {
        "/" => Reply::new(
            200,
            &[("Server", "Apache/2.4.49 (Unix)")],
            "<html>It works!</html>",
        ),
        t if t.starts_with("/icons/.%2e/") => Reply::text(200, "root:x:0:0:root:/root:/bin/bash\n"),
        _ => Reply::text(404, "not found"),
    });
    let outcome = secflow_plugin_sdk::testing::run(
        secflow_nuclei::Nuclei,
        json!({}),
        json!({"target": server.url}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let ids = rule_ids(&outcome);
    assert!(
        ids.contains(&"secflow-apache-version".to_string()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"secflow-apache-path-traversal".to_string()),
        "{ids:?}"
    );
    let version = outcome
        .findings
        .iter()
        .find(|f| f["rule_id"] == "secflow-apache-version")
        .unwrap();
    assert_eq!(
        version["cpe"],
        json!(["cpe:2.3:a:apache:http_server:2.4.49:*:*:*:*:*:*:*"])
    );
    let traversal = outcome
        .findings
        .iter()
        .find(|f| f["rule_id"] == "secflow-apache-path-traversal")
        .unwrap();
    assert_eq!(traversal["severity"], "high");
    let vulns = traversal["vulnerabilities"].as_array().unwrap();
    assert_eq!(vulns[0]["cve"], "CVE-2021-41773");
    assert_eq!(vulns[1]["cve"], "CVE-2021-42013");
    assert_eq!(vulns[0]["cwe"], json!(["CWE-22"]));
    assert_eq!(vulns[0]["cvss"][0]["version"], "3.1");
    assert_eq!(vulns[0]["cvss"][0]["base_score"], 9.8);
    for f in &outcome.findings {
        assert!(schema_errors(f).is_empty(), "{f}");
    }
}

#[test]
fn the_default_templates_find_each_exposure_of_a_demo_like_target() {
    let server = Server::start(|s| match s.target.as_str() {
        "/.git/config" => Reply::new(
            200,
            &[("Content-Type", "text/plain")],
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://git.example/app.git\n",
        ),
        "/.env" => Reply::new(
            200,
            &[("Content-Type", "text/plain")],
            "APP_KEY=base64:xyz\nDB_PASSWORD=hunter2\n",
        ),
        "/server-status" => Reply::text(
            200,
            "<h1>Apache Server Status for demo</h1><dt>Server Version: Apache/2.4.49 (Unix)</dt>",
        ),
        "/phpinfo.php" => Reply::text(
            200,
            "<title>PHP 8.1.2 - phpinfo()</title><h1>PHP Version 8.1.2</h1>",
        ),
        "/admin/" => Reply::text(
            200,
            "<title>Admin Login</title><form><input type=\"password\" name=\"p\"></form>",
        ),
        _ => Reply::text(404, "not found"),
    });
    let outcome = secflow_plugin_sdk::testing::run(
        secflow_nuclei::Nuclei,
        json!({}),
        json!({"target": server.url}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let mut ids = rule_ids(&outcome);
    ids.sort();
    assert_eq!(
        ids,
        [
            "secflow-admin-login-panel",
            "secflow-apache-server-status",
            "secflow-exposed-env-file",
            "secflow-exposed-git-config",
            "secflow-phpinfo",
        ]
    );
    assert_eq!(outcome.outputs["templates_skipped"], 0);
    let env = outcome
        .findings
        .iter()
        .find(|f| f["rule_id"] == "secflow-exposed-env-file")
        .unwrap();
    assert_eq!(env["severity"], "high");
    assert_eq!(
        env["evidence"]["extracted"],
        json!(["APP_KEY", "DB_PASSWORD"])
    );
}

#[test]
fn the_deadline_stops_a_slow_run_early_with_the_run_marked_incomplete() {
    let yaml = tpl("http:\n  - path: ['{{BaseURL}}']\n    matchers:\n      - type: status\n        status: [200]\n");
    let server = Server::start(|_| {
        std::thread::sleep(Duration::from_secs(5));
        Reply::text(200, "")
    });
    let (_dir, path) = support::template_file(&yaml);
    let started = Instant::now();
    let outcome = TestRun::new(
        json!({"templates": [path.display().to_string()]}),
        json!({"target": server.url}),
    )
    .deadline(Duration::from_millis(1200))
    .run(secflow_nuclei::Nuclei);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.outputs["complete"], false);
}

#[test]
fn a_cancel_aborts_the_requests_in_flight_and_answers_with_the_cancelled_error() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["fast", "slow"] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!(
                "id: {name}\ninfo:\n  name: N\n  severity: low\nhttp:\n  - path: ['{{{{BaseURL}}}}/{name}']\n    matchers:\n      - type: status\n        status: [200]\n"
            ),
        )
        .unwrap();
    }
    let server = Server::start(|s| {
        if s.target == "/slow" {
            std::thread::sleep(Duration::from_secs(3));
        }
        Reply::text(200, "")
    });
    let started = Instant::now();
    let outcome = TestRun::new(
        json!({"templates": [dir.path().display().to_string()]}),
        json!({"target": server.url}),
    )
    .cancel_after(1)
    .run(secflow_nuclei::Nuclei);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rule_ids(&outcome), ["fast"]);
    assert!(outcome.error.unwrap().is_cancelled());
}

#[test]
fn a_target_that_is_not_an_http_url_is_refused_as_invalid_input() {
    let outcome = secflow_plugin_sdk::testing::run(
        secflow_nuclei::Nuclei,
        json!({}),
        json!({"target": "ftp://x"}),
    );
    let error = outcome.error.unwrap();
    assert_eq!(error.code(), -32001);
    assert!(error.message().contains("inputs.target"), "{error}");
}

#[test]
fn an_unreachable_target_fails_the_run_with_the_target_unreachable_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = secflow_plugin_sdk::testing::run(
        secflow_nuclei::Nuclei,
        json!({}),
        json!({"target": format!("http://127.0.0.1:{port}/")}),
    );
    let error = outcome.error.unwrap();
    assert_eq!(error.code(), -32002);
    assert!(error.message().contains("cannot connect"), "{error}");
}
