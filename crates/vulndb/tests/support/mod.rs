//! The test bed: a loopback HTTP/1.1 server whose answers a test scripts, and
//! the sources' documents built from the real records in `tests/fixtures`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use secflow_vulndb::config::{RateLimit, Settings, SourceName, VulndbConfig};

/// Longest request head read from a client.
const MAX_HEAD: usize = 64 << 10;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// `startIndex` of an NVD page request.
    pub fn start_index(&self) -> usize {
        self.param("startIndex")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this many body bytes (a cut connection).
    pub cut_after: Option<usize>,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn cut_after(mut self, bytes: usize) -> Reply {
        self.cut_after = Some(bytes);
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A server on 127.0.0.1, one connection at a time (updates send one request
/// at a time), stopped when dropped.
pub struct Server {
    pub base: String,
    log: Arc<Mutex<Vec<Request>>>,
    handler: Arc<Mutex<Arc<Handler>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, handler, stop) = (log.clone(), handler.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let handler = handler.lock().unwrap().clone();
                            serve(stream, &*handler, &log);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        Server {
            base,
            log,
            handler,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers the next requests with `handler`.
    pub fn answer_with(&self, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    /// The requests so far, and forgets them.
    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Settings of an update against this server into `data_dir`, with
    /// delays short enough for a test.
    pub fn settings(&self, data_dir: &Path, per_page: u32, ecosystems: &[&str]) -> Settings {
        let config = VulndbConfig {
            data_dir: data_dir.to_owned(),
            nvd_url: format!("{}/rest/json/cves/2.0", self.base),
            kev_url: format!("{}/kev/known_exploited_vulnerabilities.json", self.base),
            osv_url: format!("{}/osv", self.base),
            osv_ecosystems: ecosystems.iter().map(|e| (*e).to_owned()).collect(),
            sources: vec![SourceName::Nvd, SourceName::Kev, SourceName::Osv],
            results_per_page: per_page,
            idle_timeout_secs: 5,
            max_retries: 3,
            ..VulndbConfig::default()
        };
        let mut settings = Settings::from_config(&config).unwrap();
        settings.retry_base = Duration::from_millis(20);
        settings.retry_cap = Duration::from_millis(200);
        settings.nvd_rate = RateLimit {
            requests: 1000,
            window: Duration::from_secs(1),
        };
        settings
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line == "\r\n" || head.len() > MAX_HEAD {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    let Some(request_line) = head.first() else {
        return;
    };
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let headers = head[1..]
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let request = Request {
        path: path.to_owned(),
        query,
        headers,
    };
    log.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    let mut out = stream;
    let mut text = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let body = match reply.cut_after {
        Some(n) => &reply.body[..n.min(reply.body.len())],
        None => &reply.body[..],
    };
    let _ = out.write_all(text.as_bytes());
    let _ = out.write_all(body);
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The project's real vulnerability records (`tests/fixtures`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// One real NVD record: its id, `lastModified` and the file's text.
#[derive(Debug, Clone)]
pub struct NvdFixture {
    pub id: String,
    pub last_modified: String,
    pub text: String,
    pub kev: Option<(String, String)>,
}

/// The real NVD records, sorted by id (the order pages serve them in).
pub fn nvd_records() -> Vec<NvdFixture> {
    let mut records: Vec<NvdFixture> = std::fs::read_dir(fixtures().join("nvd"))
        .unwrap()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            NvdFixture {
                id: field("id").unwrap(),
                last_modified: field("lastModified").unwrap(),
                kev: field("cisaExploitAdd").zip(field("cisaActionDue")),
                text: text.trim().to_owned(),
            }
        })
        .collect();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

/// An NVD CVE API 2.0 page of `records` (their text embedded as it is), as
/// the API answers `startIndex`, out of `total`.
pub fn nvd_page(records: &[&str], start_index: usize, total: usize, timestamp: &str) -> String {
    nvd_page_declaring(records, records.len(), start_index, total, timestamp, "2.0")
}

/// A page that declares `declared` records (a truncated page when it holds fewer).
pub fn nvd_page_declaring(
    records: &[&str],
    declared: usize,
    start_index: usize,
    total: usize,
    timestamp: &str,
    version: &str,
) -> String {
    let items: Vec<String> = records
        .iter()
        .map(|r| format!("{{\"cve\": {r}}}"))
        .collect();
    format!(
        "{{\"resultsPerPage\": {declared}, \"startIndex\": {start_index}, \"totalResults\": {total}, \
         \"format\": \"NVD_CVE\", \"version\": \"{version}\", \"timestamp\": \"{timestamp}\", \
         \"vulnerabilities\": [{}]}}",
        items.join(", ")
    )
}

/// The page of `records` that `request` asks for (`resultsPerPage`, `startIndex`).
pub fn page_for(request: &Request, records: &[NvdFixture], timestamp: &str) -> String {
    let per_page: usize = request
        .param("resultsPerPage")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let start = request.start_index().min(records.len());
    let end = (start + per_page).min(records.len());
    let texts: Vec<&str> = records[start..end]
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    nvd_page(&texts, start, records.len(), timestamp)
}

/// A KEV catalogue of the records that carry NVD's `cisaExploitAdd`.
pub fn kev_catalogue(records: &[NvdFixture], released: &str) -> String {
    let entries: Vec<String> = records
        .iter()
        .filter_map(|r| r.kev.as_ref().map(|k| (r, k)))
        .map(|(r, (added, due))| {
            format!(
                "{{\"cveID\": \"{}\", \"vendorProject\": \"-\", \"product\": \"-\", \
                 \"dateAdded\": \"{added}\", \"dueDate\": \"{due}\", \"knownRansomwareCampaignUse\": \"Unknown\"}}",
                r.id
            )
        })
        .collect();
    format!(
        "{{\"title\": \"CISA Catalog of Known Exploited Vulnerabilities\", \"catalogVersion\": \"2025.01.02\", \
         \"dateReleased\": \"{released}\", \"count\": {}, \"vulnerabilities\": [{}]}}",
        entries.len(),
        entries.join(", ")
    )
}

/// The real OSV records of `ecosystem`: (file name, text).
pub fn osv_records(ecosystem: &str) -> Vec<(String, String)> {
    let mut records: Vec<(String, String)> = std::fs::read_dir(fixtures().join("osv"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            (entry.file_name().to_string_lossy().into_owned(), text)
        })
        .filter(|(_, text)| {
            let doc: serde_json::Value = serde_json::from_str(text).unwrap();
            doc["affected"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["package"]["ecosystem"] == ecosystem)
        })
        .collect();
    records.sort();
    records
}

/// A zip archive of `records`, as OSV publishes `<ecosystem>/all.zip`.
pub fn zip_of(records: &[(String, String)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in records {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}
