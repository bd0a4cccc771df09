//! `update`, `import` and `status` against a loopback server that answers
//! like NVD, CISA and OSV, with the project's real records; and what
//! cve-mapper makes of the directory they write.

mod support;

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secflow_cve_mapper::dataset::{self, Sources};
use secflow_vulndb::config::RateLimit;
use secflow_vulndb::progress::Quiet;
use secflow_vulndb::{health, import, status, update, DataDir, Health};
use support::{
    kev_catalogue, nvd_page, nvd_page_declaring, nvd_records, osv_records, page_for, zip_of,
    NvdFixture, Reply, Request, Server,
};
use time::OffsetDateTime;

const FIRST_TIMESTAMP: &str = "2026-11-30T06:00:00.000";
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 86_400);

/// Answers like the three sources: NVD pages of `records`, the KEV catalogue
/// built from them (with an ETag, 304 to a matching `If-None-Match`) and
/// PyPI's OSV archive.
fn sources(records: Arc<Vec<NvdFixture>>) -> impl Fn(&Request) -> Reply + Send + Sync {
    let kev = kev_catalogue(&records, "2025-01-02T15:00:00.000Z");
    let osv = zip_of(&osv_records("PyPI"));
    move |request| match request.path.as_str() {
        "/rest/json/cves/2.0" => Reply::ok(page_for(request, &records, FIRST_TIMESTAMP)),
        "/kev/known_exploited_vulnerabilities.json" => {
            if request.header("if-none-match") == Some("\"kev-1\"") {
                Reply::status(304)
            } else {
                Reply::ok(kev.clone()).with_header("ETag", "\"kev-1\"")
            }
        }
        "/osv/PyPI/all.zip" => {
            if request.header("if-none-match") == Some("\"pypi-1\"") {
                Reply::status(304)
            } else {
                Reply::ok(osv.clone()).with_header("ETag", "\"pypi-1\"")
            }
        }
        _ => Reply::status(404),
    }
}

fn nvd_requests(requests: &[Request]) -> Vec<usize> {
    requests
        .iter()
        .filter(|r| r.path == "/rest/json/cves/2.0")
        .map(Request::start_index)
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What cve-mapper sees under `current` (hidden files skipped): relative
/// path, inode and a hash of the bytes.
fn snapshot(data_dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64, u64)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let meta = fs::metadata(&path).unwrap();
                let relative = path.strip_prefix(root).unwrap().to_owned();
                let mut hash = DefaultHasher::new();
                fs::read(&path).unwrap().hash(&mut hash);
                out.push((relative, meta.ino(), hash.finish()));
            }
        }
    }
    let mut out = Vec::new();
    walk(data_dir, &data_dir.join("current"), &mut out);
    out.sort();
    out
}

/// cve-mapper's view of the directory: its index, built in `cache`.
fn cve_mapper_index(data_dir: &Path, cache: &Path) -> dataset::Opened {
    let sources = Sources {
        nvd: true,
        osv: true,
    };
    dataset::open_or_build(data_dir, sources, &[cache.to_owned()]).unwrap()
}

fn fingerprint(data_dir: &Path) -> [u8; 32] {
    let sources = Sources {
        nvd: true,
        osv: true,
    };
    dataset::fingerprint(&dataset::scan(data_dir).unwrap(), sources)
}

#[test]
fn a_first_update_pages_through_nvd_past_a_rate_limit_and_cve_mapper_reads_the_result() {
    let records = Arc::new(nvd_records());
    let answers = sources(records.clone());
    let limited = AtomicUsize::new(0);
    let server = Server::start(move |request| {
        // NVD's rate limit answer: a bare 403, here to the second page's first try.
        if request.start_index() == 10 && limited.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(403);
        }
        answers(request)
    });
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let mut settings = server.settings(&data_dir, 10, &["PyPI"]);
    settings.api_key = Some("0a1b2c3d-0000-1111-2222-333344445555".into());

    let report = runtime().block_on(update(&settings, &mut Quiet)).unwrap();

    let requests = server.take_requests();
    assert_eq!(nvd_requests(&requests), [0, 10, 10, 20, 30]);
    assert!(requests
        .iter()
        .filter(|r| r.path.starts_with("/rest"))
        .all(
            |r| r.header("apikey") == Some("0a1b2c3d-0000-1111-2222-333344445555")
                && r.param("resultsPerPage") == Some("10")
                && r.param("lastModStartDate").is_none()
        ));
    assert_eq!(report.generation, ".gen-0000000001");
    assert!(!report.resumed);
    let stored =
        fs::read_to_string(data_dir.join("current/nvd/CVE-2021/CVE-2021-41773.json")).unwrap();
    let fixture = records.iter().find(|r| r.id == "CVE-2021-41773").unwrap();
    assert_eq!(
        stored, fixture.text,
        "a record is stored as the page carried it"
    );
    assert_eq!(
        fs::metadata(data_dir.join("current/nvd/CVE-2021/CVE-2021-41773.json"))
            .unwrap()
            .mode()
            & 0o777,
        0o644
    );

    let cache = tempfile::tempdir().unwrap();
    let opened = cve_mapper_index(&data_dir, cache.path());
    let built = opened.report.unwrap();
    let pypi = osv_records("PyPI").len() as u64;
    assert_eq!(built.skipped, 0, "{:?}", built.skipped_named);
    assert_eq!(built.files, records.len() as u64 + 1 + pypi);
    assert_eq!(built.stats.records, records.len() as u64 + pypi);
    let kev_entries = records.iter().filter(|r| r.kev.is_some()).count() as u64;
    assert_eq!(built.stats.kev_entries, kev_entries);
    assert_eq!(
        opened.index.kev("CVE-2021-41773"),
        Some(("2021-11-03", "2021-11-17"))
    );

    let status = status(
        &DataDir::new(&data_dir),
        OffsetDateTime::now_utc(),
        SEVEN_DAYS,
    )
    .unwrap();
    let rows: Vec<(&str, u64, bool)> = status
        .sources
        .iter()
        .map(|s| (s.source.as_str(), s.records, s.stale))
        .collect();
    assert_eq!(
        rows,
        [
            ("nvd", records.len() as u64, false),
            ("kev", kev_entries, false),
            ("osv/PyPI", pypi, false)
        ]
    );
    let newest = records
        .iter()
        .map(|r| r.last_modified.as_str())
        .max()
        .unwrap();
    assert_eq!(status.sources[0].newest_modified.as_deref(), Some(newest));
    assert_eq!(
        health(&data_dir, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap(),
        Health::Fresh {
            data_dir: data_dir.clone()
        }
    );
}

#[test]
fn a_second_update_fetches_only_changes_and_an_unchanged_source_keeps_cve_mappers_index() {
    let records = Arc::new(nvd_records());
    let server = Server::start(sources(records.clone()));
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let settings = server.settings(&data_dir, 2000, &["PyPI"]);
    let rt = runtime();
    rt.block_on(update(&settings, &mut Quiet)).unwrap();
    server.take_requests();
    let before = snapshot(&data_dir);
    let fingerprint_before = fingerprint(&data_dir);

    // Nothing changed at NVD since the first download; KEV and OSV answer 304.
    server.answer_with({
        let answers = sources(records.clone());
        move |request| {
            if request.path.starts_with("/rest") {
                Reply::ok(nvd_page(&[], 0, 0, "2026-12-01T06:00:00.000"))
            } else {
                answers(request)
            }
        }
    });
    let report = rt.block_on(update(&settings, &mut Quiet)).unwrap();
    let requests = server.take_requests();
    let nvd = requests
        .iter()
        .find(|r| r.path.starts_with("/rest"))
        .unwrap();
    assert_eq!(
        nvd.param("lastModStartDate"),
        Some("2026-11-30T06:00:00.000+00:00")
    );
    assert!(nvd.param("lastModEndDate").is_some());
    assert!(requests
        .iter()
        .filter(|r| !r.path.starts_with("/rest"))
        .all(|r| r.header("if-none-match").is_some()));
    assert_eq!(report.generation, ".gen-0000000002");
    assert_eq!(snapshot(&data_dir), before, "same files, same inodes");
    assert_eq!(
        fingerprint(&data_dir),
        fingerprint_before,
        "cve-mapper's index stays valid"
    );

    // A third update brings one changed record and one rejected.
    let changed_id = "CVE-2021-41773";
    let rejected_id = "CVE-2013-2028";
    let changed = records
        .iter()
        .find(|r| r.id == changed_id)
        .unwrap()
        .text
        .replace("2024-07-26T19:40:13.757", "2026-12-01T10:00:00.000");
    let rejected = format!(
        r#"{{"id": "{rejected_id}", "lastModified": "2026-12-01T11:00:00.000", "vulnStatus": "Rejected", "descriptions": []}}"#
    );
    server.answer_with({
        let answers = sources(records.clone());
        let (changed, rejected) = (changed.clone(), rejected.clone());
        move |request| {
            if request.path.starts_with("/rest") {
                Reply::ok(nvd_page(
                    &[&changed, &rejected],
                    0,
                    2,
                    "2026-12-02T06:00:00.000",
                ))
            } else {
                answers(request)
            }
        }
    });
    let report = rt.block_on(update(&settings, &mut Quiet)).unwrap();
    assert_eq!(
        report.sources[0].1,
        "changes: 0 added, 1 changed, 0 unchanged, 1 removed (rejected by NVD)"
    );
    let after = snapshot(&data_dir);
    assert_eq!(after.len(), before.len() - 1);
    let changed_path = Path::new("current/nvd/CVE-2021/CVE-2021-41773.json");
    assert_eq!(
        fs::read_to_string(data_dir.join(changed_path)).unwrap(),
        changed
    );
    assert!(!data_dir
        .join("current/nvd/CVE-2013/CVE-2013-2028.json")
        .exists());
    let unchanged = Path::new("current/nvd/CVE-2021/CVE-2021-42013.json");
    let inode = |files: &[(PathBuf, u64, u64)], path: &Path| {
        files.iter().find(|f| f.0 == path).map(|f| f.1)
    };
    assert_eq!(inode(&after, unchanged), inode(&before, unchanged));
    assert_ne!(fingerprint(&data_dir), fingerprint_before);
    let status = status(
        &DataDir::new(&data_dir),
        OffsetDateTime::now_utc(),
        SEVEN_DAYS,
    )
    .unwrap();
    assert_eq!(status.sources[0].records, records.len() as u64 - 1);
    assert_eq!(
        status.sources[0].newest_modified.as_deref(),
        Some("2026-12-01T11:00:00.000")
    );
}

#[test]
fn an_update_cut_off_mid_download_leaves_no_data_and_resumes_at_the_page_it_stopped_at() {
    let records = Arc::new(nvd_records());
    let answers = sources(records.clone());
    let server = Server::start(move |request| {
        let reply = answers(request);
        if request.start_index() == 20 {
            // Headers promise the whole page; the connection dies half-way.
            let half = reply.body.len() / 2;
            return reply.cut_after(half);
        }
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let mut settings = server.settings(&data_dir, 10, &["PyPI"]);
    settings.max_retries = 1;
    let rt = runtime();

    let error = rt.block_on(update(&settings, &mut Quiet)).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "{}/rest/json/cves/2.0?resultsPerPage=10&startIndex=20: gave up after 2 attempts",
            server.base
        )),
        "{text}"
    );
    assert_eq!(nvd_requests(&server.take_requests()), [0, 10, 20, 20]);
    assert!(
        !data_dir.join("current").exists(),
        "nothing is current before the update completes"
    );
    let data = DataDir::new(&data_dir);
    assert!(data.interrupted());
    assert_eq!(
        health(&data_dir, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap(),
        Health::Empty {
            data_dir: data_dir.clone()
        }
    );

    server.answer_with(sources(records.clone()));
    let report = rt.block_on(update(&settings, &mut Quiet)).unwrap();
    assert!(report.resumed);
    assert_eq!(
        nvd_requests(&server.take_requests()),
        [20, 30],
        "pages 0 and 10 are not fetched again"
    );
    assert!(!data.interrupted());
    let status = status(&data, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap();
    assert_eq!(status.sources[0].records, records.len() as u64);
    assert_eq!(
        status.sources[0].newest_modified.as_deref(),
        records.iter().map(|r| r.last_modified.as_str()).max()
    );
}

/// Runs a good first update, then a second whose NVD answer is `bad`, and
/// returns the second's error after checking the first's data is untouched.
fn second_update_refused(
    bad: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> (String, String) {
    let records = Arc::new(nvd_records());
    let server = Server::start(sources(records.clone()));
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let mut settings = server.settings(&data_dir, 2000, &["PyPI"]);
    settings.max_retries = 0;
    let rt = runtime();
    rt.block_on(update(&settings, &mut Quiet)).unwrap();
    server.take_requests();
    let before = snapshot(&data_dir);
    let now = OffsetDateTime::now_utc();
    let state_before = status(&DataDir::new(&data_dir), now, SEVEN_DAYS).unwrap();

    server.answer_with({
        let answers = sources(records.clone());
        move |request| {
            if request.path.starts_with("/rest") {
                bad(request)
            } else {
                answers(request)
            }
        }
    });
    let error = rt.block_on(update(&settings, &mut Quiet)).unwrap_err();
    assert_eq!(
        snapshot(&data_dir),
        before,
        "the current generation is untouched"
    );
    let state_after = status(&DataDir::new(&data_dir), now, SEVEN_DAYS).unwrap();
    assert_eq!(state_after.generation, state_before.generation);
    assert_eq!(state_after.sources, state_before.sources);
    let url = server
        .take_requests()
        .into_iter()
        .find(|r| r.path.starts_with("/rest"))
        .unwrap();
    let url = format!(
        "{}/rest/json/cves/2.0?resultsPerPage=2000&startIndex=0&lastModStartDate={}&lastModEndDate={}",
        server.base,
        url.param("lastModStartDate").unwrap().replace(':', "%3A").replace('+', "%2B"),
        url.param("lastModEndDate").unwrap().replace(':', "%3A").replace('+', "%2B"),
    );
    (error.to_string(), url)
}

#[test]
fn a_truncated_page_is_refused_by_url_and_the_previous_data_stays_current() {
    let record = nvd_records()[0].text.clone();
    let (error, url) = second_update_refused(move |_| {
        Reply::ok(nvd_page_declaring(
            &[&record],
            2,
            0,
            2,
            "2026-12-01T06:00:00.000",
            "2.0",
        ))
    });
    assert_eq!(
        error,
        format!("{url}: truncated page: it declares 2 records and holds 1")
    );
}

#[test]
fn a_page_cut_mid_json_is_refused_as_malformed() {
    let records = nvd_records();
    let texts: Vec<&str> = records.iter().take(3).map(|r| r.text.as_str()).collect();
    let page = nvd_page(&texts, 0, 3, "2026-12-01T06:00:00.000");
    let (error, url) = second_update_refused(move |_| Reply::ok(page[..page.len() / 3].to_owned()));
    assert_eq!(
        error,
        format!("{url}: malformed NVD page (truncated or not JSON)")
    );
}

#[test]
fn a_page_of_another_schema_version_is_refused_by_url() {
    let record = nvd_records()[0].text.clone();
    let (error, url) = second_update_refused(move |_| {
        Reply::ok(nvd_page_declaring(
            &[&record],
            1,
            0,
            1,
            "2026-12-01T06:00:00.000",
            "1.0",
        ))
    });
    assert_eq!(
        error,
        format!("{url}: schema version \"1.0\" is not 2.0 (only the NVD CVE API 2.0 is read)")
    );
}

#[test]
fn a_rate_limit_that_does_not_lift_ends_the_update_with_a_hint() {
    let server = Server::start(|_| Reply::status(403));
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let mut settings = server.settings(&data_dir, 2000, &[]);
    settings.max_retries = 2;
    let error = runtime()
        .block_on(update(&settings, &mut Quiet))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/rest/json/cves/2.0?resultsPerPage=2000&startIndex=0 answered 403 Forbidden after 3 attempts \
             (rate limited: an NVD api key raises the limit; try again later)",
            server.base
        )
    );
    assert_eq!(server.take_requests().len(), 3);
}

#[test]
fn a_retry_after_answer_is_waited_for_before_the_next_try() {
    let records = Arc::new(nvd_records());
    let answers = sources(records.clone());
    let first = AtomicUsize::new(0);
    let server = Server::start(move |request| {
        if request.path.starts_with("/rest") && first.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(503).with_header("Retry-After", "1");
        }
        answers(request)
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = server.settings(&dir.path().join("vulndb"), 2000, &[]);
    settings.retry_cap = Duration::from_secs(5);
    let started = Instant::now();
    runtime().block_on(update(&settings, &mut Quiet)).unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(nvd_requests(&server.take_requests()), [0, 0]);
}

#[test]
fn nvd_pages_are_spaced_to_stay_within_the_request_budget() {
    let records = Arc::new(nvd_records());
    let server = Server::start(sources(records.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = server.settings(&dir.path().join("vulndb"), 10, &[]);
    // Two requests per 400 ms: pages 3 and 4 wait for the window.
    settings.nvd_rate = RateLimit {
        requests: 2,
        window: Duration::from_millis(400),
    };
    let started = Instant::now();
    runtime().block_on(update(&settings, &mut Quiet)).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(nvd_requests(&server.take_requests()), [0, 10, 20, 30]);
}

/// Writes the files an offline host would be handed.
fn offline_files(dir: &Path) -> Vec<PathBuf> {
    let records = nvd_records();
    let texts: Vec<&str> = records.iter().take(20).map(|r| r.text.as_str()).collect();
    let page = dir.join("nvd-page-0.json");
    fs::write(&page, nvd_page(&texts, 0, 20, FIRST_TIMESTAMP)).unwrap();
    let kev = dir.join("known_exploited_vulnerabilities.json");
    fs::write(&kev, kev_catalogue(&records, "2025-01-02T15:00:00.000Z")).unwrap();
    let npm = dir.join("npm-all.zip");
    fs::write(&npm, zip_of(&osv_records("npm"))).unwrap();
    // One record as the fkie-cad mirror has it, and one OSV record, as they are in the project.
    let single = support::fixtures()
        .join("nvd")
        .join(format!("{}.json", records[30].id));
    let osv = support::fixtures().join("osv/GHSA-h5c8-rqwp-cp95.json");
    vec![page, kev, npm, single, osv]
}

#[test]
fn an_import_takes_pages_records_the_kev_catalogue_and_osv_archives_offline() {
    let files_dir = tempfile::tempdir().unwrap();
    let files = offline_files(files_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let data = DataDir::new(&data_dir);

    let report = import(&data, &files).unwrap();

    let kinds: Vec<&str> = report
        .files
        .iter()
        .map(|(_, summary)| summary.as_str())
        .collect();
    assert_eq!(
        kinds[0],
        "nvd page: 20 added, 0 changed, 0 unchanged, 0 removed (rejected by NVD)"
    );
    assert!(
        kinds[1].starts_with("kev catalogue 2025.01.02"),
        "{}",
        kinds[1]
    );
    assert!(kinds[2].starts_with("osv npm: 3 added"), "{}", kinds[2]);
    assert!(kinds[3].starts_with("nvd record CVE-"), "{}", kinds[3]);
    assert!(kinds[4].starts_with("osv PyPI: 1 added"), "{}", kinds[4]);
    let status = status(&data, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap();
    let rows: Vec<(&str, u64)> = status
        .sources
        .iter()
        .map(|s| (s.source.as_str(), s.records))
        .collect();
    let kev_entries = nvd_records().iter().filter(|r| r.kev.is_some()).count() as u64;
    assert_eq!(
        rows,
        [
            ("nvd", 21),
            ("kev", kev_entries),
            ("osv/PyPI", 1),
            ("osv/npm", 3)
        ]
    );
    let cache = tempfile::tempdir().unwrap();
    let opened = cve_mapper_index(&data_dir, cache.path());
    let built = opened.report.unwrap();
    assert_eq!(built.skipped, 0, "{:?}", built.skipped_named);
    assert_eq!(built.stats.records, 21 + 1 + 3);

    // Importing the same files again changes nothing cve-mapper sees.
    let before = fingerprint(&data_dir);
    import(&data, &files).unwrap();
    assert_eq!(fingerprint(&data_dir), before);
}

#[test]
fn an_import_with_one_bad_file_stores_nothing_and_names_the_file() {
    let files_dir = tempfile::tempdir().unwrap();
    let mut files = offline_files(files_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    let data = DataDir::new(&data_dir);
    import(&data, &files[..1]).unwrap();
    let before = snapshot(&data_dir);

    let malformed = files_dir.path().join("page-7.json");
    fs::write(
        &malformed,
        "{\"resultsPerPage\": 2000, \"vulnerabilities\": [",
    )
    .unwrap();
    files.push(malformed.clone());
    let error = import(&data, &files).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: not JSON (truncated?)", malformed.display())
    );
    assert_eq!(snapshot(&data_dir), before);

    let wrong = files_dir.path().join("page-v1.json");
    let record = nvd_records()[0].text.clone();
    fs::write(
        &wrong,
        nvd_page_declaring(&[&record], 1, 0, 1, FIRST_TIMESTAMP, "1.1"),
    )
    .unwrap();
    *files.last_mut().unwrap() = wrong.clone();
    let error = import(&data, &files).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: schema version \"1.1\" is not 2.0 (only the NVD CVE API 2.0 is read)",
            wrong.display()
        )
    );
    let unknown = files_dir.path().join("notes.json");
    fs::write(&unknown, "{\"title\": \"not vulnerability data\"}").unwrap();
    let error = import(&data, std::slice::from_ref(&unknown)).unwrap_err();
    assert!(error.to_string().starts_with(&format!(
        "{}: not a known vulnerability format",
        unknown.display()
    )));
    assert_eq!(snapshot(&data_dir), before);
    assert_eq!(
        DataDir::new(&data_dir).current().unwrap().unwrap().name,
        ".gen-0000000001"
    );
}

#[test]
fn status_prints_each_source_and_health_turns_stale_after_the_allowed_age() {
    let files_dir = tempfile::tempdir().unwrap();
    let files = offline_files(files_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    assert_eq!(
        health(&data_dir, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap(),
        Health::Missing {
            data_dir: data_dir.clone()
        }
    );
    let data = DataDir::new(&data_dir);
    import(&data, &files).unwrap();

    let now = OffsetDateTime::now_utc();
    let text = status(&data, now, SEVEN_DAYS).unwrap().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("data directory: {}", data_dir.display()));
    assert_eq!(lines[1], "current generation: .gen-0000000001");
    assert!(
        lines[2].starts_with("source") && lines[2].contains("records"),
        "{text}"
    );
    let nvd: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(nvd[..2], ["nvd", "21"], "{text}");
    assert_eq!(
        *nvd.last().unwrap(),
        data_dir.join("current/nvd").display().to_string()
    );

    let later = now + time::Duration::days(8);
    let stale = health(&data_dir, later, SEVEN_DAYS).unwrap();
    let Health::Stale { sources, .. } = &stale else {
        panic!("{stale:?}");
    };
    assert_eq!(sources.len(), 4);
    assert!(stale.to_string().contains("nvd (8 days)"), "{stale}");
    assert!(stale.remedy().unwrap().contains("secflow vulndb update"));
    assert!(status(&data, later, SEVEN_DAYS)
        .unwrap()
        .to_string()
        .contains("8 days stale"));
}

#[test]
fn a_directory_filled_by_hand_is_usable_data_of_unknown_age() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vulndb");
    fs::create_dir_all(data_dir.join("nvd")).unwrap();
    assert_eq!(
        health(&data_dir, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap(),
        Health::Empty {
            data_dir: data_dir.clone()
        }
    );
    fs::copy(
        support::fixtures().join("nvd/CVE-2021-41773.json"),
        data_dir.join("nvd/CVE-2021-41773.json"),
    )
    .unwrap();
    let verdict = health(&data_dir, OffsetDateTime::now_utc(), SEVEN_DAYS).unwrap();
    assert_eq!(
        verdict,
        Health::Unmanaged {
            data_dir: data_dir.clone()
        }
    );
    assert!(verdict.has_data());
    assert_eq!(verdict.remedy(), None);
}
