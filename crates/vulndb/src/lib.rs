//! SecFlow's vulnerability data: `secflow vulndb update` fetches the NVD CVE
//! API 2.0, the CISA KEV catalogue and OSV ecosystem archives, `import` takes
//! files already downloaded, and `status` says what is there — all into the
//! data directory the cve-mapper enricher reads (its manifest's `read_paths`).
//!
//! The crate runs as the daemon's unprivileged user, outside any plugin
//! sandbox: it is the one writer of the data, cve-mapper only reads it. The
//! layout ([`store`]) swaps whole generations, so a failed or interrupted
//! update leaves the previous data usable, and an unchanged record keeps its
//! file (and with it cve-mapper's index fingerprint).

pub mod config;
pub mod fetch;
pub mod http;
pub mod import;
pub mod kev;
pub mod nvd;
pub mod osv;
pub mod progress;
pub mod status;
pub mod store;
pub mod update;

pub use config::{Settings, VulndbConfig};
pub use import::{import, ImportError, ImportReport};
pub use status::{health, status, Health, SourceStatus, Status};
pub use store::DataDir;
pub use update::{update, UpdateError, UpdateReport};

/// The current time as RFC 3339 (UTC, seconds).
pub(crate) fn now_rfc3339(now: time::OffsetDateTime) -> String {
    let now = now
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
