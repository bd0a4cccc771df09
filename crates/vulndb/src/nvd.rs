//! NVD CVE API 2.0: pages checked against their own declarations, records
//! stored one per file (`nvd/CVE-2021/CVE-2021-41773.json`, the layout of the
//! fkie-cad mirror), and the windows of an incremental download.
//!
//! A page must say `format: NVD_CVE`, `version: 2.0`, start where it was asked
//! to and hold the `resultsPerPage` records it declares: a page that does not is
//! refused as a whole, naming the URL or file, so nothing half-read is stored.
//! A rejected CVE (`vulnStatus: Rejected`) removes its file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

use crate::store::{Change, Staging, StoreError};

/// The API's longest `lastModStartDate`..`lastModEndDate` range.
pub const MAX_WINDOW_DAYS: i64 = 120;
/// Largest page body accepted (2000 records are about 10–30 MB).
pub const MAX_PAGE_BYTES: u64 = 256 << 20;
/// Largest single record accepted.
const MAX_RECORD_BYTES: usize = 16 << 20;

/// A page or record that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NvdError {
    #[error("{origin}: malformed NVD page (truncated or not JSON)")]
    Malformed {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: format {found:?} is not NVD_CVE (an NVD CVE API 2.0 page was expected)")]
    WrongFormat { origin: String, found: String },
    #[error("{origin}: schema version {found:?} is not 2.0 (only the NVD CVE API 2.0 is read)")]
    WrongVersion { origin: String, found: String },
    #[error("{origin}: truncated page: it declares {declared} records and holds {found}")]
    Truncated {
        origin: String,
        declared: u64,
        found: u64,
    },
    #[error("{origin}: the page starts at {found}, not at the requested startIndex {expected}")]
    WrongStart {
        origin: String,
        expected: u64,
        found: u64,
    },
    #[error("{origin}: the page holds no records although {remaining} of {total} remain")]
    Empty {
        origin: String,
        remaining: u64,
        total: u64,
    },
    #[error("{origin}: record {index}: {reason}")]
    BadRecord {
        origin: String,
        index: usize,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    results_per_page: u64,
    start_index: u64,
    total_results: u64,
    format: String,
    version: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(borrow)]
    vulnerabilities: Vec<Item<'a>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    cve: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CveHead {
    id: String,
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default)]
    vuln_status: Option<String>,
}

/// One record ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvdRecord<'a> {
    pub id: String,
    pub last_modified: Option<String>,
    pub rejected: bool,
    pub json: &'a str,
}

/// A checked page.
#[derive(Debug)]
pub struct CheckedPage<'a> {
    pub start_index: u64,
    pub total_results: u64,
    pub timestamp: Option<String>,
    pub records: Vec<NvdRecord<'a>>,
}

/// Whether `id` is `CVE-<4 digits>-<4 or more digits>` (nothing a path could escape with).
pub fn is_cve_id(id: &str) -> bool {
    let mut parts = id.split('-');
    let (Some("CVE"), Some(year), Some(number), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    year.len() == 4
        && (4..=12).contains(&number.len())
        && year
            .bytes()
            .chain(number.bytes())
            .all(|b| b.is_ascii_digit())
}

/// Where a record lives in a generation.
pub fn record_path(id: &str) -> PathBuf {
    let year = &id[..8];
    Path::new("nvd").join(year).join(format!("{id}.json"))
}

fn record<'a>(origin: &str, index: usize, raw: &'a RawValue) -> Result<NvdRecord<'a>, NvdError> {
    let bad = |reason: String| NvdError::BadRecord {
        origin: origin.to_owned(),
        index,
        reason,
    };
    if raw.get().len() > MAX_RECORD_BYTES {
        return Err(bad(format!("larger than {MAX_RECORD_BYTES} bytes")));
    }
    let head: CveHead =
        serde_json::from_str(raw.get()).map_err(|e| bad(format!("not a cve object: {e}")))?;
    if !is_cve_id(&head.id) {
        return Err(bad(format!("id {:?} is not a CVE id", head.id)));
    }
    Ok(NvdRecord {
        rejected: head.vuln_status.as_deref() == Some("Rejected"),
        id: head.id,
        last_modified: head.last_modified,
        json: raw.get(),
    })
}

/// Parses and checks a page; `expected_start` is the `startIndex` asked for.
pub fn check_page<'a>(
    origin: &str,
    body: &'a [u8],
    expected_start: Option<u64>,
) -> Result<CheckedPage<'a>, NvdError> {
    let page: Page<'a> = serde_json::from_slice(body).map_err(|source| NvdError::Malformed {
        origin: origin.to_owned(),
        source,
    })?;
    if page.format != "NVD_CVE" {
        return Err(NvdError::WrongFormat {
            origin: origin.to_owned(),
            found: page.format,
        });
    }
    if page.version != "2.0" {
        return Err(NvdError::WrongVersion {
            origin: origin.to_owned(),
            found: page.version,
        });
    }
    let found = page.vulnerabilities.len() as u64;
    if found != page.results_per_page {
        return Err(NvdError::Truncated {
            origin: origin.to_owned(),
            declared: page.results_per_page,
            found,
        });
    }
    if let Some(expected) = expected_start {
        if page.start_index != expected {
            return Err(NvdError::WrongStart {
                origin: origin.to_owned(),
                expected,
                found: page.start_index,
            });
        }
    }
    let remaining = page.total_results.saturating_sub(page.start_index);
    if found == 0 && remaining > 0 {
        return Err(NvdError::Empty {
            origin: origin.to_owned(),
            remaining,
            total: page.total_results,
        });
    }
    let records = page
        .vulnerabilities
        .iter()
        .enumerate()
        .map(|(i, item)| record(origin, i, item.cve))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CheckedPage {
        start_index: page.start_index,
        total_results: page.total_results,
        timestamp: page.timestamp,
        records,
    })
}

/// A single record file (`{"id": "CVE-…", …}` or `{"cve": {…}}`), as the
/// fkie-cad mirror and cve-mapper's fixtures have them.
pub fn check_record_file<'a>(origin: &str, raw: &'a RawValue) -> Result<NvdRecord<'a>, NvdError> {
    #[derive(Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        cve: &'a RawValue,
    }
    match serde_json::from_str::<Wrapped<'a>>(raw.get()) {
        Ok(wrapped) => record(origin, 0, wrapped.cve),
        Err(_) => record(origin, 0, raw),
    }
}

/// What storing records did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub newest_modified: Option<String>,
}

impl Applied {
    pub fn summary(&self) -> String {
        format!(
            "{} added, {} changed, {} unchanged, {} removed (rejected by NVD)",
            self.added, self.replaced, self.unchanged, self.removed
        )
    }
}

/// Stores `records` in `staging`.
pub fn apply(
    staging: &Staging,
    records: &[NvdRecord<'_>],
    applied: &mut Applied,
) -> Result<(), StoreError> {
    for record in records {
        let path = record_path(&record.id);
        if record.rejected {
            if staging.remove(&path)? {
                applied.removed += 1;
            }
        } else {
            match staging.write_if_changed(&path, record.json.as_bytes())? {
                Change::Added => applied.added += 1,
                Change::Replaced => applied.replaced += 1,
                Change::Same => applied.unchanged += 1,
            }
        }
        if let Some(modified) = &record.last_modified {
            newest(&mut applied.newest_modified, modified);
        }
    }
    Ok(())
}

/// Keeps the later of two timestamps of the same format (they sort as text).
pub fn newest(slot: &mut Option<String>, candidate: &str) {
    if slot.as_deref().is_none_or(|s| s < candidate) {
        *slot = Some(candidate.to_owned());
    }
}

/// The `lastModStartDate`/`lastModEndDate` windows covering `since`..`until`,
/// each at most [`MAX_WINDOW_DAYS`] long.
pub fn windows(
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut out = Vec::new();
    let mut start = since;
    while start < until {
        let end = (start + Duration::days(MAX_WINDOW_DAYS)).min(until);
        out.push((start, end));
        start = end;
    }
    out
}

/// The API's date parameter: `2024-01-31T12:00:00.000+00:00` (the `+` is
/// percent-encoded by [`query_date`]).
pub fn api_date(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// `date` made safe for a query string.
pub fn query_date(date: &str) -> String {
    date.replace('+', "%2B").replace(':', "%3A")
}

/// Reads a timestamp as NVD writes it (`2024-07-26T19:40:13.757`, UTC, no
/// offset) or as RFC 3339.
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(text, format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn page(declared: u64, records: &[&str]) -> String {
        let items: Vec<String> = records
            .iter()
            .map(|id| {
                format!(
                    r#"{{"cve":{{"id":"{id}","lastModified":"2024-01-0{}T00:00:00.000"}}}}"#,
                    id.len() % 9
                )
            })
            .collect();
        format!(
            r#"{{"resultsPerPage":{declared},"startIndex":0,"totalResults":{},"format":"NVD_CVE","version":"2.0","timestamp":"2024-02-01T00:00:00.000","vulnerabilities":[{}]}}"#,
            records.len(),
            items.join(",")
        )
    }

    #[test]
    fn a_page_is_read_record_by_record_with_its_raw_text() {
        let body = page(2, &["CVE-2021-41773", "CVE-2021-42013"]);
        let checked = check_page("p", body.as_bytes(), Some(0)).unwrap();
        assert_eq!(checked.records.len(), 2);
        assert_eq!(checked.records[1].id, "CVE-2021-42013");
        assert!(checked.records[0]
            .json
            .starts_with(r#"{"id":"CVE-2021-41773""#));
        assert_eq!(
            record_path("CVE-2021-41773"),
            Path::new("nvd/CVE-2021/CVE-2021-41773.json")
        );
    }

    #[test]
    fn a_page_holding_fewer_records_than_it_declares_is_truncated() {
        let body = page(3, &["CVE-2021-41773", "CVE-2021-42013"]);
        let error = check_page("http://x/page", body.as_bytes(), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "http://x/page: truncated page: it declares 3 records and holds 2"
        );
    }

    #[test]
    fn ids_that_are_not_cve_ids_never_become_paths() {
        for id in ["CVE-2021-41773", "CVE-1999-0001", "CVE-2024-1234567"] {
            assert!(is_cve_id(id), "{id}");
        }
        for id in [
            "CVE-2021-../../x",
            "cve-2021-41773",
            "CVE-21-4177",
            "CVE-2021-417",
            "CVE-2021-41773-1",
            "GHSA-x",
        ] {
            assert!(!is_cve_id(id), "{id}");
        }
        let body = page(1, &["CVE-2021-../../etc"]);
        let error = check_page("f", body.as_bytes(), None).unwrap_err();
        assert!(
            matches!(error, NvdError::BadRecord { index: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_long_gap_is_split_into_windows_of_at_most_120_days() {
        let since = datetime!(2024-01-01 0:00 UTC);
        let until = datetime!(2024-10-01 0:00 UTC);
        let parts = windows(since, until);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], (since, datetime!(2024-04-30 0:00 UTC)));
        assert_eq!(parts[1].0, parts[0].1);
        assert_eq!(parts[2].1, until);
        assert!(parts.iter().all(|(s, e)| *e - *s <= Duration::days(120)));
        assert!(windows(until, until).is_empty());
    }

    #[test]
    fn dates_are_written_and_read_the_way_the_api_does() {
        let at = datetime!(2024-07-26 19:40:13.757 UTC);
        assert_eq!(api_date(at), "2024-07-26T19:40:13.757+00:00");
        assert_eq!(
            query_date(&api_date(at)),
            "2024-07-26T19%3A40%3A13.757%2B00%3A00"
        );
        assert_eq!(parse_time("2024-07-26T19:40:13.757"), Some(at));
        assert_eq!(
            parse_time("2024-07-26T19:40:13Z"),
            Some(datetime!(2024-07-26 19:40:13 UTC))
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
