//! The CISA KEV catalogue: one JSON file, checked (its `count` against its
//! entries, every `cveID`) and stored as it came at `kev/known_exploited_vulnerabilities.json`.

use std::path::Path;

use serde::Deserialize;

use crate::nvd::is_cve_id;

/// Where the catalogue lives in a generation.
pub const KEV_PATH: &str = "kev/known_exploited_vulnerabilities.json";
/// Largest catalogue accepted (it is about 1.5 MB).
pub const MAX_KEV_BYTES: u64 = 64 << 20;

/// A catalogue that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KevError {
    #[error("{origin}: malformed KEV catalogue (truncated, not JSON or missing catalogVersion/vulnerabilities)")]
    Malformed {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: truncated KEV catalogue: count says {declared} entries, it holds {found}")]
    Truncated {
        origin: String,
        declared: u64,
        found: u64,
    },
    #[error("{origin}: entry {index}: cveID {id:?} is not a CVE id")]
    BadEntry {
        origin: String,
        index: usize,
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Catalogue {
    catalog_version: String,
    #[serde(default)]
    date_released: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    vulnerabilities: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "cveID")]
    cve_id: String,
}

/// A checked catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKev {
    pub version: String,
    pub released: Option<String>,
    pub entries: u64,
}

/// Checks the catalogue in `body`.
pub fn check(origin: &str, body: &[u8]) -> Result<CheckedKev, KevError> {
    let catalogue: Catalogue =
        serde_json::from_slice(body).map_err(|source| KevError::Malformed {
            origin: origin.to_owned(),
            source,
        })?;
    let found = catalogue.vulnerabilities.len() as u64;
    if let Some(declared) = catalogue.count.filter(|c| *c != found) {
        return Err(KevError::Truncated {
            origin: origin.to_owned(),
            declared,
            found,
        });
    }
    if let Some((index, entry)) = catalogue
        .vulnerabilities
        .iter()
        .enumerate()
        .find(|(_, e)| !is_cve_id(&e.cve_id))
    {
        return Err(KevError::BadEntry {
            origin: origin.to_owned(),
            index,
            id: entry.cve_id.clone(),
        });
    }
    Ok(CheckedKev {
        version: catalogue.catalog_version,
        released: catalogue.date_released,
        entries: found,
    })
}

/// The catalogue's path in a generation.
pub fn path() -> &'static Path {
    Path::new(KEV_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalogue_whose_count_disagrees_with_its_entries_is_truncated() {
        let body = br#"{"catalogVersion":"2025.01.02","count":2,"vulnerabilities":[{"cveID":"CVE-2021-41773"}]}"#;
        assert_eq!(
            check("kev.json", body).unwrap_err().to_string(),
            "kev.json: truncated KEV catalogue: count says 2 entries, it holds 1"
        );
        let ok = br#"{"catalogVersion":"2025.01.02","dateReleased":"2025-01-02T15:00:00.000Z","count":1,"vulnerabilities":[{"cveID":"CVE-2021-41773"}]}"#;
        assert_eq!(check("kev.json", ok).unwrap().entries, 1);
    }
}
