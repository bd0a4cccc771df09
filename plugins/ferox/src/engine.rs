//! The scan itself: a directory queue worked by `concurrency` async workers, each
//! with its own kept-alive connection, on a tokio runtime.
//!
//! One [`Queue`] (behind a short-held lock) hands out `(directory, wordlist entry)`
//! jobs; a worker requests the path, drops what the status/size filters or the
//! directory's [`Calibration`] reject, classifies the rest and sends it as an
//! [`Event::Hit`] on a bounded channel. A directory found below the depth limit is
//! calibrated by the worker that found it and appended to the queue. The scan ends
//! when the queue is empty and no worker is busy, or when [`Scan::stop`] is called
//! (cancel, deadline); the event channel then closes.
//!
//! A request that got no answer is sent again after a backoff ([`governor::backoff`]),
//! up to `retries` times, and the [`Governor`] parks the workers above the number of
//! requests in flight the target keeps up with. A word whose request never got an
//! answer, or that the scan stopped before, is counted in [`Summary::untried`], so
//! that a scan that could not try every word never passes for a complete one.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use secflow_plugin_sdk::Severity;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::calibration::{self, Calibration, Measure};
use crate::classify::{self, Kind};
use crate::governor::{self, Governor, Signal};
use crate::http::{Client, Connection, HttpError, Response};
use crate::settings::Settings;
use crate::target::{encode_path, Target};
use crate::wordlist;

/// Hits buffered between the workers and the consumer.
const EVENT_BUFFER: usize = 1024;

/// The scan could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The target did not answer the first request.
    #[error("target {target} is unreachable")]
    Unreachable {
        target: String,
        #[source]
        source: HttpError,
    },
}

/// A resource the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Absolute URL requested.
    pub url: String,
    /// Path requested (encoded).
    pub path: String,
    pub measure: Measure,
    pub content_type: Option<String>,
    pub server: Option<String>,
    /// The body's first bytes, lossily decoded.
    pub excerpt: String,
    pub truncated: bool,
    pub kind: Kind,
    pub severity: Severity,
    /// The redirect target, made absolute when it stays on the target's origin.
    pub redirect: Option<String>,
    /// Where following the redirects ended (`follow_redirects`).
    pub followed: Option<Followed>,
    /// Whether the resource is a directory (scanned below when depth allows).
    pub directory: bool,
    /// Directory level of the resource below the target (0: in the target's directory).
    pub depth: u32,
}

/// The end of a followed redirect chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub url: String,
    pub status: u16,
    pub length: u64,
    pub hops: u32,
}

/// What the scan reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Hit(Box<Hit>),
    /// A directory was calibrated: its path and the wildcard answers learnt.
    Calibrated {
        directory: String,
        signatures: Vec<String>,
    },
}

/// Why a scan stopped before its work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Deadline,
    MaxRequests,
    /// `max_consecutive_failures` words in a row got no answer.
    Unresponsive,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Deadline => "deadline",
            StopReason::MaxRequests => "max_requests",
            StopReason::Unresponsive => "unresponsive",
        }
    }
}

/// Counts kept while the scan runs (read at any time for progress).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent (calibration and redirects included).
    pub sent: AtomicU64,
    /// Requests the scan plans so far (grows as directories are found).
    pub planned: AtomicU64,
    /// Requests that got no response, after their retries.
    pub errors: AtomicU64,
    /// Requests sent again after getting no response.
    pub retries: AtomicU64,
    /// Words (wordlist entries with their extensions, per directory) to request.
    pub words_planned: AtomicU64,
    /// Words whose request got an answer.
    pub words_answered: AtomicU64,
    /// Responses dropped by the status and size filters.
    pub filtered: AtomicU64,
    /// Responses dropped as the target's wildcard answers.
    pub wildcards: AtomicU64,
    pub found: AtomicU64,
    /// Directories scanned (the target's included).
    pub directories: AtomicU64,
}

/// The outcome of a scan, for the run's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub requests: u64,
    pub planned: u64,
    pub errors: u64,
    pub retries: u64,
    /// Words the scan planned whose request got no answer or was never sent.
    pub untried: u64,
    /// Words whose request got no answer after its retries.
    pub unanswered: u64,
    /// The requests in flight allowed at the end, and the fewest allowed on the way.
    pub concurrency: usize,
    pub concurrency_lowest: usize,
    pub filtered: u64,
    pub wildcards: u64,
    pub found: u64,
    pub directories: u64,
    pub stopped: Option<StopReason>,
    /// The first request error, for the log.
    pub first_error: Option<String>,
}

/// A running scan.
#[derive(Debug)]
pub struct Scan {
    shared: Arc<Shared>,
    events: mpsc::Receiver<Event>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    target: Target,
    settings: Settings,
    candidates: Vec<Box<str>>,
    queue: Mutex<Queue>,
    wake: Notify,
    stopped: AtomicBool,
    stop_reason: Mutex<Option<StopReason>>,
    first_error: Mutex<Option<String>>,
    counters: Counters,
    limiter: Option<RateLimiter>,
    governor: Governor,
    /// Words in a row whose request got no answer after its retries.
    failed_in_a_row: AtomicU64,
    /// Words whose request got no answer after its retries.
    unanswered: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    dirs: VecDeque<DirScan>,
    /// Workers busy with a job.
    active: usize,
    /// Directories queued or scanned, so none is scanned twice.
    known_dirs: HashSet<String>,
    /// Jobs handed out, for `max_requests`.
    issued: u64,
}

#[derive(Debug)]
struct DirScan {
    dir: Arc<Directory>,
    next: usize,
}

#[derive(Debug)]
struct Directory {
    /// Encoded path, ending in `/`.
    path: String,
    depth: u32,
    calibration: Calibration,
}

#[derive(Debug)]
struct Job {
    dir: Arc<Directory>,
    relative: Box<str>,
}

impl Scan {
    /// Resolves the target, checks it answers, calibrates its directory and
    /// starts the workers on the current tokio runtime.
    pub async fn start(
        target: Target,
        settings: Settings,
        words: &[String],
    ) -> Result<Scan, ScanError> {
        let unreachable = |source| ScanError::Unreachable {
            target: target.to_string(),
            source,
        };
        let client = Client::new(&target, &settings).await.map_err(unreachable)?;
        let candidates = wordlist::candidates(words, &settings.extensions);
        let limiter = settings.rate_limit.map(RateLimiter::new);
        let governor = Governor::new(settings.concurrency, settings.auto_tune);
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            client,
            candidates,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
            first_error: Mutex::new(None),
            counters: Counters::default(),
            limiter,
            governor,
            failed_in_a_row: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            target,
            settings,
        });

        // The first request tells an unreachable target from a scan with errors.
        let mut conn = None;
        let base = shared.target.base_path.clone();
        shared.counters.planned.fetch_add(1, Ordering::Relaxed);
        shared
            .fetch_retrying(&mut conn, &base)
            .await
            .map_err(|source| ScanError::Unreachable {
                target: shared.target.to_string(),
                source,
            })?;
        shared.queue().known_dirs.insert(base.clone());
        shared.add_directory(&mut conn, &events_tx, base, 0).await;

        let workers = shared.settings.concurrency;
        for index in 0..workers {
            let shared = Arc::clone(&shared);
            let events = events_tx.clone();
            tokio::spawn(async move { worker(shared, events, index).await });
        }
        Ok(Scan { shared, events })
    }

    /// The next event; `None` once the scan has ended and every event was taken.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event already waiting, without blocking.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Asks the workers to stop; they finish the request in hand and exit.
    pub fn stop(&self, reason: StopReason) {
        self.shared.stop(reason);
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The counts so far (final once [`Scan::next_event`] returned `None`).
    pub fn summary(&self) -> Summary {
        let c = &self.shared.counters;
        let words = c.words_planned.load(Ordering::Relaxed);
        let answered = c.words_answered.load(Ordering::Relaxed);
        Summary {
            requests: c.sent.load(Ordering::Relaxed),
            planned: c.planned.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            untried: words.saturating_sub(answered),
            unanswered: self.shared.unanswered.load(Ordering::Relaxed),
            concurrency: self.shared.governor.limit(),
            concurrency_lowest: self.shared.governor.lowest(),
            filtered: c.filtered.load(Ordering::Relaxed),
            wildcards: c.wildcards.load(Ordering::Relaxed),
            found: c.found.load(Ordering::Relaxed),
            directories: c.directories.load(Ordering::Relaxed),
            stopped: *lock(&self.shared.stop_reason),
            first_error: lock(&self.shared.first_error).clone(),
        }
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    fn stop(&self, reason: StopReason) {
        let mut current = lock(&self.stop_reason);
        if current.is_none() {
            *current = Some(reason);
        }
        drop(current);
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Calibrates a newly found directory (already in `known_dirs`) and queues it.
    async fn add_directory(
        &self,
        conn: &mut Option<Connection>,
        events: &mpsc::Sender<Event>,
        path: String,
        depth: u32,
    ) {
        // Counted before calibration: a scan stopped during it did not try them.
        self.counters
            .words_planned
            .fetch_add(self.candidates.len() as u64, Ordering::Relaxed);
        let mut calibration = Calibration::default();
        if self.settings.auto_calibrate {
            let probes = calibration::probes(&self.settings.extensions);
            self.counters
                .planned
                .fetch_add(probes.len() as u64, Ordering::Relaxed);
            for probe in &probes {
                if self.is_stopped() {
                    return;
                }
                let url_path = encode_path(&format!("{path}{}", probe.relative));
                if let Some(response) = self.request(conn, &url_path).await {
                    calibration.learn(probe, &response.measure);
                }
            }
            let signatures = calibration
                .signatures()
                .iter()
                .filter(|s| {
                    !self
                        .settings
                        .filters_out(s.status, s.length, s.words, s.lines)
                })
                .map(ToString::to_string)
                .collect();
            let _ = events
                .send(Event::Calibrated {
                    directory: path.clone(),
                    signatures,
                })
                .await;
        }
        self.counters
            .planned
            .fetch_add(self.candidates.len() as u64, Ordering::Relaxed);
        self.counters.directories.fetch_add(1, Ordering::Relaxed);
        let dir = Arc::new(Directory {
            path,
            depth,
            calibration,
        });
        self.queue().dirs.push_back(DirScan { dir, next: 0 });
        self.wake.notify_waiters();
    }

    /// One request, rate-limited, retried and counted; `None` when it got no
    /// response.
    async fn request(&self, conn: &mut Option<Connection>, path: &str) -> Option<Response> {
        match self.fetch_retrying(conn, path).await {
            Ok(response) => Some(response),
            Err(err) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = lock(&self.first_error);
                if first.is_none() {
                    *first = Some(format!("{path}: {}", error_chain(&err)));
                }
                None
            }
        }
    }

    /// Sends `path` until it gets an answer or its retries are spent, telling the
    /// governor how each attempt went; the last error when none got an answer.
    async fn fetch_retrying(
        &self,
        conn: &mut Option<Connection>,
        path: &str,
    ) -> Result<Response, HttpError> {
        let mut attempt = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.acquire().await;
            }
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let began = Instant::now();
            let err = match self.client.fetch(conn, path).await {
                Ok(response) => {
                    if self.governor.observe(Signal::Answered(began.elapsed())) {
                        self.wake.notify_waiters();
                    }
                    return Ok(response);
                }
                Err(err) => err,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            self.governor.observe(Signal::Failed);
            if attempt >= self.settings.retries || self.is_stopped() {
                return Err(err);
            }
            attempt += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.counters.planned.fetch_add(1, Ordering::Relaxed);
            let wait = governor::backoff(self.settings.retry_backoff, attempt, fastrand::f64());
            if !self.pause(wait).await {
                return Err(err);
            }
        }
    }

    /// Waits `duration`; `false` when the scan was stopped meanwhile.
    async fn pause(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                _ = notified => {}
            }
        }
    }

    /// Counts a word that got no answer, stopping the scan after
    /// `max_consecutive_failures` of them in a row.
    fn word_failed(&self) {
        if self.is_stopped() {
            return;
        }
        self.unanswered.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        let bound = self.settings.max_consecutive_failures;
        if bound > 0 && in_a_row >= bound {
            self.stop(StopReason::Unresponsive);
        }
    }

    /// The next job for worker `index`, waiting while other workers may still
    /// queue directories or while the governor allows fewer requests in flight
    /// than `index`; `None` when the scan is over or stopped.
    async fn next_job(&self, index: usize) -> Option<Job> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queue = self.queue();
                if self.is_stopped() {
                    return None;
                }
                if queue.issued >= self.settings.max_requests && !queue.dirs.is_empty() {
                    queue.dirs.clear();
                    drop(queue);
                    self.stop(StopReason::MaxRequests);
                    return None;
                }
                // Worker 0 is always allowed, so a parked worker is never the last:
                // it ends once an allowed one has seen the queue run dry.
                let allowed = index < self.governor.limit();
                if allowed {
                    if let Some(job) = queue.take(self.candidates.as_slice()) {
                        queue.active += 1;
                        queue.issued += 1;
                        return Some(job);
                    }
                }
                if queue.active == 0 && (allowed || queue.dirs.is_empty()) {
                    drop(queue);
                    self.wake.notify_waiters();
                    return None;
                }
            }
            notified.await;
        }
    }

    fn job_done(&self) {
        let mut queue = self.queue();
        queue.active -= 1;
        let idle = queue.active == 0 && queue.dirs.is_empty();
        drop(queue);
        if idle {
            self.wake.notify_waiters();
        }
    }

    async fn process(&self, conn: &mut Option<Connection>, events: &mpsc::Sender<Event>, job: Job) {
        let path = encode_path(&format!("{}{}", job.dir.path, job.relative));
        let Some(response) = self.request(conn, &path).await else {
            self.word_failed();
            return;
        };
        self.counters.words_answered.fetch_add(1, Ordering::Relaxed);
        self.failed_in_a_row.store(0, Ordering::Relaxed);
        let m = &response.measure;
        if self
            .settings
            .filters_out(m.status, m.length, m.words, m.lines)
        {
            self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if job.dir.calibration.is_wildcard(&job.relative, m) {
            self.counters.wildcards.fetch_add(1, Ordering::Relaxed);
            return;
        }

        let redirect_path = m
            .location
            .as_deref()
            .filter(|_| (300..400).contains(&m.status))
            .and_then(|location| self.target.same_origin_path(location, &path));
        let directory = match &redirect_path {
            Some(to) => to.split('?').next() == Some(format!("{path}/").as_str()),
            None => path.ends_with('/') && matches!(m.status, 200..=299 | 401 | 403),
        };
        let redirect = match (&redirect_path, &m.location) {
            (Some(to), _) => Some(self.target.url(to)),
            (None, Some(location)) if (300..400).contains(&m.status) => Some(location.clone()),
            _ => None,
        };
        let followed = match &redirect_path {
            Some(to) if self.settings.follow_redirects && self.settings.max_redirects > 0 => {
                self.follow(conn, to.clone()).await
            }
            _ => None,
        };
        let listing =
            (200..300).contains(&m.status) && classify::is_directory_listing(&response.head);
        let kind = classify::classify(&path, listing);
        let depth = job.dir.depth;

        if directory {
            let dir_path = if path.ends_with('/') {
                path.clone()
            } else {
                format!("{path}/")
            };
            if depth < self.settings.depth && self.queue().known_dirs.insert(dir_path.clone()) {
                self.add_directory(conn, events, dir_path, depth + 1).await;
            }
        }

        self.counters.found.fetch_add(1, Ordering::Relaxed);
        let hit = Hit {
            url: self.target.url(&path),
            severity: classify::severity(kind, m.status),
            excerpt: String::from_utf8_lossy(&response.head).into_owned(),
            measure: response.measure,
            content_type: response.content_type,
            server: response.server,
            truncated: response.truncated,
            path,
            kind,
            redirect,
            followed,
            directory,
            depth,
        };
        let _ = events.send(Event::Hit(Box::new(hit))).await;
    }

    /// Follows same-origin redirects from `path`, at most `max_redirects` hops.
    async fn follow(&self, conn: &mut Option<Connection>, mut path: String) -> Option<Followed> {
        let mut hops = 0;
        loop {
            hops += 1;
            self.counters.planned.fetch_add(1, Ordering::Relaxed);
            let response = self.request(conn, &path).await?;
            let m = response.measure;
            let next = m
                .location
                .as_deref()
                .filter(|_| (300..400).contains(&m.status))
                .and_then(|location| self.target.same_origin_path(location, &path));
            match next {
                Some(next) if hops < self.settings.max_redirects => path = next,
                _ => {
                    return Some(Followed {
                        url: self.target.url(&path),
                        status: m.status,
                        length: m.length,
                        hops,
                    })
                }
            }
        }
    }
}

impl Queue {
    fn take(&mut self, candidates: &[Box<str>]) -> Option<Job> {
        loop {
            let front = self.dirs.front_mut()?;
            if front.next >= candidates.len() {
                self.dirs.pop_front();
                continue;
            }
            let job = Job {
                dir: Arc::clone(&front.dir),
                relative: candidates[front.next].clone(),
            };
            front.next += 1;
            return Some(job);
        }
    }
}

async fn worker(shared: Arc<Shared>, events: mpsc::Sender<Event>, index: usize) {
    let mut conn = None;
    while let Some(job) = shared.next_job(index).await {
        shared.process(&mut conn, &events, job).await;
        shared.job_done();
    }
}

/// Spaces requests evenly to at most `rate` per second over all workers.
#[derive(Debug)]
struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate: u32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs(1) / rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self) {
        let slot = {
            let mut next = lock(&self.next);
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The runtime the plugin and the benchmark run scans on: one worker thread per
/// core (at most 4), I/O and timers enabled.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_requests_evenly() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[test]
    fn the_queue_hands_out_every_candidate_of_each_directory_in_order() {
        let candidates: Vec<Box<str>> = vec!["a".into(), "b".into()];
        let mut queue = Queue::default();
        for (path, depth) in [("/", 0), ("/x/", 1)] {
            queue.dirs.push_back(DirScan {
                dir: Arc::new(Directory {
                    path: path.into(),
                    depth,
                    calibration: Calibration::default(),
                }),
                next: 0,
            });
        }
        let mut got = Vec::new();
        while let Some(job) = queue.take(&candidates) {
            got.push(format!("{}{}", job.dir.path, job.relative));
        }
        assert_eq!(got, ["/a", "/b", "/x/a", "/x/b"]);
        assert!(queue.dirs.is_empty());
    }
}
