//! SecFlow's plugin supervisor: discovers and verifies plugins, runs each one
//! isolated under its manifest's policy, and stores what it finds.
//!
//! Data flows one way: request → registry lookup → runner (sandbox + protocol) →
//! findings stream → schema check → storage → run record. `manifest`, `finding`
//! and `sandbox::plan` are pure; `sandbox` apply is the only place that makes
//! isolation syscalls; `storage` owns the database.

pub mod api;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod finding;
pub mod manifest;
pub mod record;
pub mod registry;
pub mod runner;
pub mod sandbox;
pub mod scan;
pub mod schema;
pub mod storage;
pub mod supervisor;
pub mod trust;

pub use supervisor::{Supervisor, SupervisorError};

/// "what failed: why: deeper why", from an error and its sources — how every
/// error reaches a person (CLI, API answers, logs), each cause said once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
