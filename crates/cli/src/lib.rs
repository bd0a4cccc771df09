//! SecFlow's command line: what an operator and a plugin author run.
//!
//! - [`cli`]: the `secflow` commands (run, scan, findings, runs, audit, plugins,
//!   doctor, keys, sign, check, demo), embedded or against a daemon;
//! - [`scan`]: the pipeline of detectors, enrichers and analytics over targets;
//! - [`check`]: the conformance check of a plugin a new author ships;
//! - [`demo`]: the embedded demonstration (its own loopback target and data).

pub mod check;
pub mod cli;
pub mod demo;
pub mod scan;
