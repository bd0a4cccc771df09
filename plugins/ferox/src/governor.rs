//! How hard the scan pushes the target: an AIMD governor of the requests in
//! flight, and the retry backoff.
//!
//! A slow target answers a flood of connections by queueing them until they time
//! out, and the words behind those requests are lost. [`Aimd`] watches every
//! answer's latency and every request that got none: it cuts the number of
//! requests allowed in flight when latency climbs well past the least seen
//! (queueing at the target) or a request fails, at most once per round trip,
//! and adds one back after each window of answers that kept pace. It starts at
//! the configured concurrency, so a target that keeps up never sees it.
//!
//! [`Aimd`] is the pure policy, fed the clock by its caller; [`Governor`] shares
//! its current limit with the workers through an atomic read on the request path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Latency above `LATENCY_FACTOR` times the least seen (plus [`LATENCY_SLACK`])
/// means requests are queueing at the target.
const LATENCY_FACTOR: u32 = 3;
/// Jitter on a fast target (a scheduler hiccup on loopback) is not congestion.
const LATENCY_SLACK: Duration = Duration::from_millis(50);
/// The least latency is forgotten after two such windows, so that a target whose
/// service time rose for good is not pushed down to one request for ever.
const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// Bounds of the wait between two cuts (one round trip).
const MIN_CUT_INTERVAL: Duration = Duration::from_millis(50);
const MAX_CUT_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait before a retry, whatever the attempt.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What one request told about the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer, after this long.
    Answered(Duration),
    /// No answer (timeout, reset, refused).
    Failed,
}

/// The additive-increase / multiplicative-decrease policy of the requests in flight.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: usize,
    max: usize,
    lowest: usize,
    /// Answers that kept pace since the limit last changed.
    paced: usize,
    /// Smoothed latency (exponential average, weight 1/8 as TCP's SRTT).
    smoothed: Option<Duration>,
    /// Least latency of the current window and of the one before it.
    least: Option<Duration>,
    least_before: Option<Duration>,
    window_started: Option<Instant>,
    last_cut: Option<Instant>,
}

impl Aimd {
    /// A policy allowing `max` requests in flight (at least 1), starting there.
    pub fn new(max: usize) -> Aimd {
        let max = max.max(1);
        Aimd {
            limit: max,
            max,
            lowest: max,
            paced: 0,
            smoothed: None,
            least: None,
            least_before: None,
            window_started: None,
            last_cut: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The lowest limit so far.
    pub fn lowest(&self) -> usize {
        self.lowest
    }

    /// Takes one request's outcome at `now`; returns the new limit.
    pub fn observe(&mut self, signal: Signal, now: Instant) -> usize {
        match signal {
            Signal::Failed => self.cut(now, 2),
            Signal::Answered(latency) => {
                self.learn(latency, now);
                if self.congested() {
                    // A gentler cut than for a failure: the target still answers.
                    self.cut(now, 4)
                } else {
                    self.paced += 1;
                    if self.paced >= self.limit && self.limit < self.max {
                        self.limit += 1;
                        self.paced = 0;
                    }
                }
            }
        }
        self.limit
    }

    fn learn(&mut self, latency: Duration, now: Instant) {
        self.smoothed = Some(match self.smoothed {
            None => latency,
            Some(s) => (s * 7 + latency) / 8,
        });
        let started = *self.window_started.get_or_insert(now);
        if now.saturating_duration_since(started) >= BASELINE_WINDOW {
            self.least_before = self.least.take();
            self.window_started = Some(now);
        }
        self.least = Some(self.least.map_or(latency, |l| l.min(latency)));
    }

    /// The least latency the target showed lately.
    fn baseline(&self) -> Option<Duration> {
        match (self.least, self.least_before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn congested(&self) -> bool {
        match (self.smoothed, self.baseline()) {
            (Some(smoothed), Some(baseline)) => {
                smoothed > baseline * LATENCY_FACTOR + LATENCY_SLACK
            }
            _ => false,
        }
    }

    /// Takes `1/divisor` off the limit, unless it was cut less than a round trip ago.
    fn cut(&mut self, now: Instant, divisor: usize) {
        let interval = self
            .smoothed
            .unwrap_or(MIN_CUT_INTERVAL)
            .clamp(MIN_CUT_INTERVAL, MAX_CUT_INTERVAL);
        if self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        self.last_cut = Some(now);
        self.paced = 0;
        // At least one off, so that a small limit still comes down.
        let off = (self.limit / divisor).max(1);
        self.limit = self.limit.saturating_sub(off).clamp(1, self.max);
        self.lowest = self.lowest.min(self.limit);
    }
}

/// The [`Aimd`] shared by the workers: worker `i` takes a job only while
/// `i < limit()`.
#[derive(Debug)]
pub struct Governor {
    policy: Option<Mutex<Aimd>>,
    limit: AtomicUsize,
}

impl Governor {
    /// `tune` off: the limit stays at `max`.
    pub fn new(max: usize, tune: bool) -> Governor {
        Governor {
            policy: tune.then(|| Mutex::new(Aimd::new(max))),
            limit: AtomicUsize::new(max.max(1)),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The lowest limit so far.
    pub fn lowest(&self) -> usize {
        match &self.policy {
            Some(policy) => policy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .lowest(),
            None => self.limit(),
        }
    }

    /// Takes one request's outcome; returns whether the limit rose (parked workers
    /// may go on).
    pub fn observe(&self, signal: Signal) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        let limit = policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(signal, Instant::now());
        self.limit.swap(limit, Ordering::Relaxed) < limit
    }
}

/// The wait before retry `attempt` (1 for the first retry): `base` doubled per
/// attempt, at most [`MAX_BACKOFF`], of which `jitter` (0 to 1) takes up to half
/// so that workers that failed together do not retry together.
pub fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let full = doubled.min(MAX_BACKOFF);
    // In thousandths, so that the wait is exact for a given jitter.
    let kept = 1000 - (jitter.clamp(0.0, 1.0) * 500.0) as u32;
    full * kept / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `count` answers of `latency`, one every `every`, from `start`.
    fn answers(
        aimd: &mut Aimd,
        start: Instant,
        count: u32,
        latency: Duration,
        every: Duration,
    ) -> Instant {
        let mut now = start;
        for _ in 0..count {
            now += every;
            aimd.observe(Signal::Answered(latency), now);
        }
        now
    }

    #[test]
    fn a_target_that_keeps_pace_keeps_the_full_concurrency() {
        let mut aimd = Aimd::new(50);
        let start = Instant::now();
        // Loopback latencies that wander between 0.2 and 20 ms are not congestion.
        let mut now = start;
        for i in 0..5000u32 {
            now += MS;
            let latency = Duration::from_micros(200 + u64::from(i % 100) * 200);
            aimd.observe(Signal::Answered(latency), now);
        }
        assert_eq!(aimd.limit(), 50);
        assert_eq!(aimd.lowest(), 50);
    }

    #[test]
    fn climbing_latency_cuts_the_limit_by_a_quarter_once_per_round_trip() {
        let mut aimd = Aimd::new(40);
        let start = Instant::now();
        let now = answers(&mut aimd, start, 10, 20 * MS, MS);
        assert_eq!(aimd.limit(), 40);
        // Queueing: answers now take 1 s; the smoothed latency crosses 110 ms soon.
        let now = answers(&mut aimd, now, 30, 1000 * MS, MS);
        assert_eq!(aimd.limit(), 30, "one cut within one round trip");
        answers(&mut aimd, now, 1, 1000 * MS, 2 * MAX_CUT_INTERVAL);
        assert_eq!(aimd.limit(), 23, "a second cut a round trip later");
    }

    #[test]
    fn a_failure_halves_the_limit_and_the_limit_never_drops_below_one() {
        let mut aimd = Aimd::new(10);
        let mut now = Instant::now();
        let mut limits = Vec::new();
        for _ in 0..6 {
            now += MAX_CUT_INTERVAL;
            limits.push(aimd.observe(Signal::Failed, now));
        }
        assert_eq!(limits, [5, 3, 2, 1, 1, 1]);
        assert_eq!(aimd.lowest(), 1);
    }

    #[test]
    fn a_burst_of_failures_is_one_cut() {
        let mut aimd = Aimd::new(16);
        let now = Instant::now();
        for _ in 0..16 {
            aimd.observe(Signal::Failed, now);
        }
        assert_eq!(aimd.limit(), 8);
    }

    #[test]
    fn answers_that_keep_pace_add_one_per_window_back_to_the_maximum() {
        let mut aimd = Aimd::new(8);
        let start = Instant::now();
        aimd.observe(Signal::Failed, start);
        aimd.observe(Signal::Failed, start + MAX_CUT_INTERVAL);
        assert_eq!(aimd.limit(), 2);
        // A window is `limit` answers: 2 + 3 + ... + 6 answers climb to 7, 7 more to 8.
        let now = answers(&mut aimd, start + 2 * MAX_CUT_INTERVAL, 26, 5 * MS, MS);
        assert_eq!(aimd.limit(), 7);
        answers(&mut aimd, now, 7, 5 * MS, MS);
        assert_eq!(aimd.limit(), 8);
        answers(&mut aimd, now, 100, 5 * MS, MS);
        assert_eq!(aimd.limit(), 8, "never above the configured concurrency");
    }

    #[test]
    fn the_least_latency_is_forgotten_so_a_slower_target_is_not_throttled_for_ever() {
        let mut aimd = Aimd::new(4);
        let start = Instant::now();
        let now = answers(&mut aimd, start, 5, MS, MS);
        // The target now takes 500 ms per answer even at one request in flight.
        let now = answers(&mut aimd, now, 200, 500 * MS, 100 * MS);
        assert_eq!(aimd.lowest(), 1, "first taken for congestion");
        answers(&mut aimd, now, 40, 500 * MS, 100 * MS);
        assert_eq!(aimd.limit(), 4, "then learnt as the target's pace");
    }

    #[test]
    fn a_governor_that_does_not_tune_keeps_its_limit() {
        let governor = Governor::new(12, false);
        assert!(!governor.observe(Signal::Failed));
        assert_eq!(governor.limit(), 12);
        let tuned = Governor::new(12, true);
        assert!(!tuned.observe(Signal::Failed));
        assert_eq!((tuned.limit(), tuned.lowest()), (6, 6));
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_its_cap_with_jitter_taking_at_most_half() {
        let base = 100 * MS;
        assert_eq!(backoff(base, 1, 0.0), 100 * MS);
        assert_eq!(backoff(base, 2, 0.0), 200 * MS);
        assert_eq!(backoff(base, 3, 0.0), 400 * MS);
        assert_eq!(backoff(base, 3, 1.0), 200 * MS);
        assert_eq!(backoff(base, 40, 0.0), MAX_BACKOFF);
        assert_eq!(
            backoff(Duration::from_secs(60), 1, 0.5),
            MAX_BACKOFF * 3 / 4
        );
    }
}
