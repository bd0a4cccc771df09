//! SecFlow's pure core: the types and policy every other crate shares — the
//! config, run records and statuses, findings and their fingerprints, the
//! schemas, key ids and the names of the isolation layers.
//!
//! Nothing here touches the network, a database or a process; the only effects
//! are reading files the caller names (`config::Config::load`) and the clock.

pub mod clock;
pub mod config;
pub mod finding;
pub mod key_id;
pub mod layer;
pub mod record;
pub mod schema;

pub use key_id::{KeyId, KEY_ID_PREFIX};
pub use layer::Layer;
pub use record::PluginStatus;

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
