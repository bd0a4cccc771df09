//! `secflow vulndb update`: each configured source fetched into the staging
//! directory, then one commit.
//!
//! NVD is paged (`resultsPerPage`/`startIndex`) and, once a full download has
//! been committed, incremental: the changes since the last `fetched_through`,
//! in windows of at most 120 days (`lastModStartDate`/`lastModEndDate`). The
//! position is saved after every stored page, so an update cut short (a lost
//! connection, a refused page, SIGTERM) continues where it stopped on the next
//! run, and the live generation is untouched until the very end. KEV and OSV
//! are single downloads, asked for conditionally (`If-None-Match`,
//! `If-Modified-Since`) so an unchanged source costs one small answer.

use std::path::Path;

use http::header::{self, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use time::OffsetDateTime;

use crate::config::{Settings, SourceName};
use crate::fetch::{FetchError, Fetcher, Policy};
use crate::http::{Client, HttpError, Sink};
use crate::kev::{self, KevError};
use crate::now_rfc3339;
use crate::nvd::{self, Applied, NvdError};
use crate::osv::{self, OsvError};
use crate::progress::{Event, Progress};
use crate::store::{DataDir, NvdCursor, SourceState, Staging, StoreError, UpdateProgress};

/// Why an update stopped. Whatever it is, the previous data stays current
/// and what was already staged is kept for the next `update`.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Nvd(#[from] NvdError),
    #[error(transparent)]
    Kev(#[from] KevError),
    #[error(transparent)]
    Osv(#[from] OsvError),
    #[error("cannot build a request url from {url:?}")]
    Url { url: String },
    #[error("{url}: answered 304 not modified to a request that was not conditional")]
    UnexpectedNotModified { url: String },
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateReport {
    /// The generation now current.
    pub generation: String,
    /// Whether it continued an interrupted update.
    pub resumed: bool,
    /// One line per source: its name and what changed.
    pub sources: Vec<(String, String)>,
}

/// Fetches every source of `settings` and commits them as the new current
/// generation of `settings.data_dir`.
pub async fn update(
    settings: &Settings,
    progress: &mut dyn Progress,
) -> Result<UpdateReport, UpdateError> {
    let data = DataDir::new(&settings.data_dir);
    data.create()?;
    let _lock = data.lock()?;
    let (staging, mut state, resumed) = data.stage_update()?;
    if resumed {
        let done: Vec<&str> = state.done.iter().map(String::as_str).collect();
        progress.event(Event::Resuming {
            what: if done.is_empty() {
                "the interrupted update".to_owned()
            } else {
                format!(
                    "the interrupted update ({} already staged)",
                    done.join(", ")
                )
            },
        });
    }
    let client = Client::new(settings.idle_timeout)?;
    let policy = Policy {
        max_retries: settings.max_retries,
        base: settings.retry_base,
        cap: settings.retry_cap,
    };
    let mut run = Run {
        settings,
        data: &data,
        staging: &staging,
        state: &mut state,
        progress,
        summaries: Vec::new(),
    };
    for source in &settings.sources {
        match source {
            SourceName::Nvd => {
                let mut fetcher = Fetcher::new(client.clone(), policy, Some(settings.nvd_rate));
                run.nvd(&mut fetcher).await?;
            }
            SourceName::Kev => {
                run.kev(&mut Fetcher::new(client.clone(), policy, None))
                    .await?
            }
            SourceName::Osv => {
                let mut fetcher = Fetcher::new(client.clone(), policy, None);
                for ecosystem in &settings.osv_ecosystems {
                    run.osv(&mut fetcher, ecosystem).await?;
                }
            }
        }
    }
    let summaries = run.summaries;
    let generation = data.commit(staging, &state.state)?;
    Ok(UpdateReport {
        generation: generation.name,
        resumed,
        sources: summaries,
    })
}

/// One update's working state; the staged progress is saved after each step.
struct Run<'a> {
    settings: &'a Settings,
    data: &'a DataDir,
    staging: &'a Staging,
    state: &'a mut UpdateProgress,
    progress: &'a mut dyn Progress,
    summaries: Vec<(String, String)>,
}

impl Run<'_> {
    fn save(&self) -> Result<(), StoreError> {
        self.staging.save_progress(self.state)
    }

    fn finish(&mut self, key: String, summary: String) -> Result<(), StoreError> {
        self.progress.event(Event::Staged {
            what: &key,
            summary: summary.clone(),
        });
        self.state.done.insert(key.clone());
        self.save()?;
        self.summaries.push((key, summary));
        Ok(())
    }

    async fn nvd(&mut self, fetcher: &mut Fetcher) -> Result<(), UpdateError> {
        if self.state.done.contains("nvd") {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let mut cursor = match self.state.nvd.take() {
            Some(cursor) => cursor,
            None => new_cursor(self.state.state.nvd.as_ref(), now),
        };
        let headers = match &self.settings.api_key {
            Some(key) => vec![(
                HeaderName::from_static("apikey"),
                HeaderValue::from_str(key).map_err(|_| UpdateError::Url {
                    url: self.settings.nvd_url.to_string(),
                })?,
            )],
            None => Vec::new(),
        };
        let windows = if cursor.full { 1 } else { cursor.windows.len() };
        let mut applied = Applied::default();
        while cursor.window < windows {
            let range = cursor.windows.get(cursor.window).cloned();
            loop {
                let uri = page_uri(
                    &self.settings.nvd_url,
                    self.settings.results_per_page,
                    cursor.start_index,
                    range.as_ref(),
                )?;
                let origin = uri.to_string();
                let response = fetcher
                    .get(
                        &uri,
                        &headers,
                        Sink::Memory,
                        nvd::MAX_PAGE_BYTES,
                        self.progress,
                    )
                    .await?;
                if response.status == StatusCode::NOT_MODIFIED {
                    return Err(UpdateError::UnexpectedNotModified { url: origin });
                }
                let page = nvd::check_page(&origin, &response.body, Some(cursor.start_index))?;
                if cursor.first_timestamp.is_none() {
                    cursor.first_timestamp.clone_from(&page.timestamp);
                }
                nvd::apply(self.staging, &page.records, &mut applied)?;
                if let Some(newest) = &applied.newest_modified {
                    nvd::newest(&mut cursor.newest_modified, newest);
                }
                cursor.start_index += page.records.len() as u64;
                self.progress.event(Event::Page {
                    window: cursor.window,
                    windows,
                    done: cursor.start_index.min(page.total_results),
                    total: page.total_results,
                });
                let last = cursor.start_index >= page.total_results;
                if last {
                    cursor.window += 1;
                    cursor.start_index = 0;
                }
                self.state.nvd = Some(cursor.clone());
                self.save()?;
                if last {
                    break;
                }
            }
        }
        let previous = self.state.state.nvd.take();
        let fetched_through = if cursor.full {
            cursor
                .first_timestamp
                .clone()
                .unwrap_or_else(|| now_rfc3339(now))
        } else {
            match cursor.windows.last() {
                Some((_, end)) => end.clone(),
                None => previous
                    .as_ref()
                    .and_then(|p| p.fetched_through.clone())
                    .unwrap_or_else(|| now_rfc3339(now)),
            }
        };
        let mut newest_modified = previous.and_then(|p| p.newest_modified);
        if let Some(newest) = &cursor.newest_modified {
            nvd::newest(&mut newest_modified, newest);
        }
        self.state.state.nvd = Some(SourceState {
            records: self.staging.count_json(Path::new("nvd"))?,
            newest_modified,
            checked_at: now_rfc3339(OffsetDateTime::now_utc()),
            origin: self.settings.nvd_url.to_string(),
            fetched_through: Some(fetched_through),
            etag: None,
            last_modified: None,
        });
        self.state.nvd = None;
        let kind = if cursor.full {
            "full download"
        } else {
            "changes"
        };
        self.finish("nvd".into(), format!("{kind}: {}", applied.summary()))?;
        Ok(())
    }

    async fn kev(&mut self, fetcher: &mut Fetcher) -> Result<(), UpdateError> {
        if self.state.done.contains("kev") {
            return Ok(());
        }
        let url = &self.settings.kev_url;
        let previous = self.state.state.kev.clone();
        let headers = conditional(previous.as_ref());
        let response = fetcher
            .get(
                url,
                &headers,
                Sink::Memory,
                kev::MAX_KEV_BYTES,
                self.progress,
            )
            .await?;
        let checked_at = now_rfc3339(OffsetDateTime::now_utc());
        if response.status == StatusCode::NOT_MODIFIED {
            let Some(mut previous) = previous else {
                return Err(UpdateError::UnexpectedNotModified {
                    url: url.to_string(),
                });
            };
            self.progress.event(Event::Unchanged { what: "kev" });
            previous.checked_at = checked_at;
            self.state.state.kev = Some(previous);
            return Ok(self.finish("kev".into(), "unchanged".into())?);
        }
        self.progress.event(Event::Downloaded {
            what: "kev",
            bytes: response.body_len,
        });
        let checked = kev::check(&url.to_string(), &response.body)?;
        let change = self.staging.write_if_changed(kev::path(), &response.body)?;
        self.state.state.kev = Some(SourceState {
            records: checked.entries,
            newest_modified: checked.released,
            checked_at,
            origin: url.to_string(),
            fetched_through: None,
            etag: response.etag,
            last_modified: response.last_modified,
        });
        let summary = format!(
            "catalogue {} with {} entries ({change:?})",
            checked.version, checked.entries
        )
        .to_lowercase();
        Ok(self.finish("kev".into(), summary)?)
    }

    async fn osv(&mut self, fetcher: &mut Fetcher, ecosystem: &str) -> Result<(), UpdateError> {
        let key = format!("osv:{ecosystem}");
        if self.state.done.contains(&key) {
            return Ok(());
        }
        let dir = osv::ecosystem_dir(ecosystem).ok_or_else(|| UpdateError::Url {
            url: ecosystem.to_owned(),
        })?;
        let url = format!(
            "{}/{}/all.zip",
            self.settings.osv_url.to_string().trim_end_matches('/'),
            ecosystem.replace(' ', "%20")
        );
        let uri: Uri = url
            .parse()
            .map_err(|_| UpdateError::Url { url: url.clone() })?;
        let previous = self.state.state.osv.get(&dir).cloned();
        let headers = conditional(previous.as_ref());
        let download = self.data.root().join(format!(".download-osv-{dir}.zip"));
        let response = fetcher
            .get(
                &uri,
                &headers,
                Sink::File(&download),
                self.settings.max_archive_bytes,
                self.progress,
            )
            .await;
        let result = self
            .osv_apply(response, &uri, &download, &dir, &key, previous)
            .await;
        let _ = std::fs::remove_file(&download);
        result
    }

    async fn osv_apply(
        &mut self,
        response: Result<crate::http::Response, FetchError>,
        uri: &Uri,
        download: &Path,
        dir: &str,
        key: &str,
        previous: Option<SourceState>,
    ) -> Result<(), UpdateError> {
        let response = response?;
        let url = uri.to_string();
        let checked_at = now_rfc3339(OffsetDateTime::now_utc());
        if response.status == StatusCode::NOT_MODIFIED {
            let Some(mut previous) = previous else {
                return Err(UpdateError::UnexpectedNotModified { url });
            };
            self.progress.event(Event::Unchanged { what: key });
            previous.checked_at = checked_at;
            self.state.state.osv.insert(dir.to_owned(), previous);
            return Ok(self.finish(key.to_owned(), "unchanged".into())?);
        }
        self.progress.event(Event::Downloaded {
            what: key,
            bytes: response.body_len,
        });
        let applied = osv::apply_archive(&url, download, Some(dir), self.staging)?;
        let counts = applied.get(dir).cloned().unwrap_or_default();
        self.state.state.osv.insert(
            dir.to_owned(),
            SourceState {
                records: self.staging.count_json(&Path::new("osv").join(dir))?,
                newest_modified: counts.newest_modified.clone(),
                checked_at,
                origin: url,
                fetched_through: None,
                etag: response.etag,
                last_modified: response.last_modified,
            },
        );
        Ok(self.finish(key.to_owned(), counts.summary())?)
    }
}

/// Where an NVD download starts: everything when nothing was fetched yet,
/// else the changes since `fetched_through`, up to `now`.
pub fn new_cursor(previous: Option<&SourceState>, now: OffsetDateTime) -> NvdCursor {
    let since = previous
        .and_then(|p| p.fetched_through.as_deref())
        .and_then(nvd::parse_time);
    match since {
        Some(since) => NvdCursor {
            full: false,
            windows: nvd::windows(since, now)
                .into_iter()
                .map(|(start, end)| (nvd::api_date(start), nvd::api_date(end)))
                .collect(),
            ..NvdCursor::default()
        },
        None => NvdCursor {
            full: true,
            ..NvdCursor::default()
        },
    }
}

/// The URL of one NVD page.
pub fn page_uri(
    base: &Uri,
    results_per_page: u32,
    start_index: u64,
    range: Option<&(String, String)>,
) -> Result<Uri, UpdateError> {
    let base = base.to_string();
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut url =
        format!("{base}{separator}resultsPerPage={results_per_page}&startIndex={start_index}");
    if let Some((start, end)) = range {
        url.push_str(&format!(
            "&lastModStartDate={}&lastModEndDate={}",
            nvd::query_date(start),
            nvd::query_date(end)
        ));
    }
    url.parse().map_err(|_| UpdateError::Url { url })
}

/// The validators of the last download, for a conditional request.
fn conditional(previous: Option<&SourceState>) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    let Some(previous) = previous else {
        return headers;
    };
    let pairs = [
        (header::IF_NONE_MATCH, previous.etag.as_deref()),
        (header::IF_MODIFIED_SINCE, previous.last_modified.as_deref()),
    ];
    for (name, value) in pairs {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.push((name, value));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_first_download_is_full_and_later_ones_ask_for_changes_since_the_last() {
        let now = datetime!(2025-03-01 12:00 UTC);
        assert!(new_cursor(None, now).full);
        let previous = SourceState {
            fetched_through: Some("2025-02-20T08:30:00.000".into()),
            ..SourceState::default()
        };
        let cursor = new_cursor(Some(&previous), now);
        assert!(!cursor.full);
        assert_eq!(
            cursor.windows,
            [(
                "2025-02-20T08:30:00.000+00:00".to_owned(),
                "2025-03-01T12:00:00.000+00:00".to_owned()
            )]
        );
    }

    #[test]
    fn a_page_url_carries_the_paging_and_the_encoded_window() {
        let base: Uri = "http://127.0.0.1:9/rest/json/cves/2.0".parse().unwrap();
        let range = (
            "2025-02-20T08:30:00.000+00:00".to_owned(),
            "2025-03-01T12:00:00.000+00:00".to_owned(),
        );
        let uri = page_uri(&base, 2000, 4000, Some(&range)).unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9/rest/json/cves/2.0?resultsPerPage=2000&startIndex=4000\
             &lastModStartDate=2025-02-20T08%3A30%3A00.000%2B00%3A00\
             &lastModEndDate=2025-03-01T12%3A00%3A00.000%2B00%3A00"
        );
    }
}
