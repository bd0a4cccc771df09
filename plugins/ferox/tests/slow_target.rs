//! The scan against targets that cannot keep up: a few server workers, added
//! latency, dropped connections and stalled requests. Every real file must still
//! be found, and a scan that could not try every word must say how many it did
//! not try and why (the SDK's `incomplete`, which the supervisor records as a
//! `partial` run) instead of passing for a complete one.

mod support;

use std::time::Duration;

use secflow_ferox::plugin::Ferox;
use secflow_plugin_sdk::testing::{self, TestOutcome};
use serde_json::{json, Value};
use support::SlowTarget;

/// The real files of the slow target and their bodies.
const REAL_FILES: &[(&str, &str)] = &[
    ("/.env", "DB_PASSWORD=hunter2\n"),
    ("/.git/config", "[core]\n\tbare = false\n"),
    ("/backup.zip", "PK\u{3}\u{4}"),
    ("/robots.txt", "User-agent: *\n"),
];

/// A wordlist of `filler` words that the target does not serve, and the real
/// files' paths among them.
fn wordlist(dir: &tempfile::TempDir, filler: usize) -> (String, usize) {
    let mut words: Vec<String> = (0..filler).map(|i| format!("nothing-{i}")).collect();
    for (i, (path, _)) in REAL_FILES.iter().enumerate() {
        words.insert(
            i * filler / REAL_FILES.len(),
            path.trim_start_matches('/').to_owned(),
        );
    }
    let file = dir.path().join("words.txt");
    std::fs::write(&file, words.join("\n")).expect("write wordlist");
    (file.to_string_lossy().into_owned(), words.len())
}

fn scan(target: &SlowTarget, config: Value) -> TestOutcome {
    testing::run(Ferox, config, json!({"target": target.url()}))
}

fn found_paths(outcome: &TestOutcome) -> Vec<String> {
    let mut paths: Vec<String> = outcome
        .findings
        .iter()
        .map(|f| {
            f["location"]["path"]
                .as_str()
                .expect("location.path")
                .to_owned()
        })
        .collect();
    paths.sort();
    paths
}

fn real_paths() -> Vec<String> {
    let mut paths: Vec<String> = REAL_FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
    paths.sort();
    paths
}

/// Two server workers at 20 ms each; every real file and every fifth filler word
/// has its first two requests dropped, and `/.env`'s first request stalls past
/// the client's timeout.
fn unreliable_target(filler: usize) -> SlowTarget {
    let mut dropped: Vec<String> = REAL_FILES
        .iter()
        .filter(|(p, _)| *p != "/.env")
        .map(|(p, _)| (*p).to_owned())
        .collect();
    dropped.extend((0..filler).step_by(5).map(|i| format!("/nothing-{i}")));
    let dropped: Vec<&str> = dropped.iter().map(String::as_str).collect();
    let mut builder = SlowTarget::builder()
        .workers(2, Duration::from_millis(20))
        .drop_first(2, &dropped)
        .stall_first("/.env", Duration::from_secs(3));
    for (path, body) in REAL_FILES {
        builder = builder.file(path, body);
    }
    builder.start()
}

#[test]
fn every_real_file_of_a_slow_dropping_target_is_found_through_retries() {
    let filler = 60;
    let target = unreliable_target(filler);
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, words) = wordlist(&dir, filler);

    let outcome = scan(
        &target,
        json!({"wordlist": list, "depth": 0, "concurrency": 16, "timeout_ms": 800,
               "retry_backoff_ms": 20}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(found_paths(&outcome), real_paths(), "{:?}", outcome.outputs);
    assert_eq!(outcome.incomplete, None, "{:?}", outcome.outputs);
    assert_eq!(outcome.outputs["complete"], true);
    assert_eq!(outcome.outputs["untried"], 0);
    assert_eq!(outcome.outputs["words"].as_u64(), Some(words as u64));
    assert!(
        outcome.outputs["retries"].as_u64() >= Some(1),
        "the dropped requests were sent again: {:?}",
        outcome.outputs
    );
    assert!(
        target.hits("/.env") >= 2,
        "the stalled /.env was asked again: {}",
        target.hits("/.env")
    );
    let lowest = outcome.outputs["concurrency_lowest"]
        .as_u64()
        .expect("concurrency_lowest");
    assert!(
        lowest < 16,
        "the governor backed off a target with two workers: {:?}",
        outcome.outputs
    );
}

#[test]
fn without_retries_the_same_target_loses_the_dropped_words_and_says_how_many() {
    let filler = 60;
    let target = unreliable_target(filler);
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, _) = wordlist(&dir, filler);

    let outcome = scan(
        &target,
        json!({"wordlist": list, "depth": 0, "concurrency": 16, "timeout_ms": 800,
               "retries": 0}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    // Three real files and twelve filler words are dropped twice, /.env stalls once:
    // the client's own reconnect takes one drop, the second is lost without retries.
    let lost = 3 + filler.div_ceil(5) + 1;
    let incomplete = outcome
        .incomplete
        .clone()
        .expect("the scan reports it is incomplete");
    assert_eq!(incomplete.untried, lost as u64, "{incomplete:?}");
    assert!(
        incomplete
            .reason
            .contains(&format!("{lost} words got no answer after 0 retries")),
        "{}",
        incomplete.reason
    );
    assert_eq!(outcome.outputs["complete"], false);
    assert_eq!(outcome.outputs["untried"], lost);
    assert!(!found_paths(&outcome).contains(&"/.env".to_owned()));
}

#[test]
fn a_target_that_drops_everything_reports_every_word_untried() {
    let target = SlowTarget::dead();
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, words) = wordlist(&dir, 16);

    let outcome = scan(
        &target,
        json!({"wordlist": list, "depth": 0, "concurrency": 4, "retries": 1,
               "retry_backoff_ms": 5, "max_consecutive_failures": 0}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(outcome.findings.is_empty());
    let incomplete = outcome.incomplete.clone().expect("incomplete");
    assert_eq!(incomplete.untried, words as u64);
    assert!(
        incomplete
            .reason
            .contains(&format!("{words} words got no answer after 1 retries")),
        "{}",
        incomplete.reason
    );
    assert!(
        incomplete.reason.contains("first: /"),
        "the first error is named: {}",
        incomplete.reason
    );
    assert_eq!(outcome.outputs["concurrency_lowest"], 1);
}

#[test]
fn a_scan_gives_up_on_a_target_that_stopped_answering_and_counts_what_it_left() {
    let target = SlowTarget::dead();
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, words) = wordlist(&dir, 196);

    let outcome = scan(
        &target,
        json!({"wordlist": list, "depth": 0, "concurrency": 4, "retries": 1,
               "retry_backoff_ms": 5, "max_consecutive_failures": 10, "auto_calibrate": false}),
    );
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let incomplete = outcome.incomplete.clone().expect("incomplete");
    assert_eq!(incomplete.untried, words as u64, "no word got an answer");
    assert!(
        incomplete
            .reason
            .starts_with("the scan stopped after 10 words in a row got no answer"),
        "{}",
        incomplete.reason
    );
    assert_eq!(outcome.outputs["stopped"], "unresponsive");
    // Ten failed words of two attempts each, plus those in flight at the stop.
    assert!(
        target.requests() < 60,
        "the scan stopped early: {} requests",
        target.requests()
    );
}
