//! Requests that get no answer: sent again after a backoff, and when they
//! still get none, the run says how many checks were not done (issue 21).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::{rule_ids, run_plugin_with, template_file, Reply, Server};

const TEMPLATE: &str = r#"id: exposed-env
info:
  name: Exposed env
  severity: high
http:
  - method: GET
    path:
      - "{{BaseURL}}/.env"
      - "{{BaseURL}}/.git/config"
    matchers:
      - type: word
        words: ["SECRET"]
"#;

#[test]
fn a_request_dropped_twice_is_answered_on_its_third_try_and_the_run_is_complete() {
    let tries = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&tries);
    let server = Server::start(move |req| {
        if req.target == "/.env" && seen.fetch_add(1, Ordering::SeqCst) < 2 {
            return Reply::dropped();
        }
        match req.target.as_str() {
            "/.env" => Reply::text(200, "SECRET=1"),
            _ => Reply::text(404, "no"),
        }
    });
    let (_dir, path) = template_file(TEMPLATE);
    let outcome = run_plugin_with(&path, &server.url, json!({"retry_backoff_ms": 5}));
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(rule_ids(&outcome), ["exposed-env"]);
    assert_eq!(
        tries.load(Ordering::SeqCst),
        3,
        "two drops, then the answer"
    );
    assert_eq!(outcome.outputs["retries"], 2);
    assert_eq!(outcome.outputs["unanswered"], 0);
    assert_eq!(outcome.incomplete, None);
}

#[test]
fn requests_that_never_get_an_answer_make_the_run_incomplete_with_the_count() {
    let server = Server::start(|_| Reply::dropped());
    let (_dir, path) = template_file(TEMPLATE);
    let outcome = run_plugin_with(
        &path,
        &server.url,
        json!({"retries": 1, "retry_backoff_ms": 5}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(outcome.findings.is_empty());
    let incomplete = outcome
        .incomplete
        .clone()
        .expect("the run says it is incomplete");
    assert_eq!(incomplete.untried, 2, "{incomplete:?}");
    assert!(
        incomplete
            .reason
            .starts_with("2 requests got no answer after 1 retries (first: "),
        "{}",
        incomplete.reason
    );
    assert_eq!(server.seen().len(), 4, "each of the two paths tried twice");
}

#[test]
fn without_retries_a_dropped_request_is_counted_not_sent_again() {
    let server = Server::start(|_| Reply::dropped());
    let (_dir, path) = template_file(TEMPLATE);
    let outcome = run_plugin_with(&path, &server.url, json!({"retries": 0}));
    assert_eq!(outcome.incomplete.as_ref().map(|i| i.untried), Some(2));
    assert_eq!(server.seen().len(), 2);
    assert_eq!(outcome.outputs["retries"], 0);
}

#[test]
fn more_retries_than_allowed_are_refused_by_name() {
    let server = Server::start(|_| Reply::text(404, "no"));
    let (_dir, path) = template_file(TEMPLATE);
    let outcome = run_plugin_with(&path, &server.url, json!({"retries": 11}));
    let error = outcome.error.expect("refused");
    assert!(
        error.message().contains("config.retries"),
        "{}",
        error.message()
    );
}
