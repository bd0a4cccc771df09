//! Requests as the sources' terms want them: within a rate limit, and tried
//! again with growing delays when the answer says "later" (403 and 429 are how
//! NVD signals its limit, 5xx an outage) or the connection was cut.
//!
//! The decisions are pure ([`RequestWindow::wait`], [`retry_delay`]) and
//! unit-tested; [`Fetcher::get`] is the one place that sleeps.

use std::collections::VecDeque;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use tokio::time::Instant;

use crate::config::RateLimit;
use crate::http::{Client, HttpError, Response, Sink};
use crate::progress::{Event, Progress};

/// A request that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url} answered {status} after {attempts} attempts{hint}")]
    Status {
        url: String,
        status: StatusCode,
        attempts: u32,
        hint: &'static str,
    },
    #[error("{url}: gave up after {attempts} attempts")]
    Exhausted {
        url: String,
        attempts: u32,
        #[source]
        source: HttpError,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// The sliding window of a rate limit: when the last `requests` requests all
/// fell within `window`, the next waits until the oldest leaves it.
#[derive(Debug, Clone)]
pub struct RequestWindow {
    limit: RateLimit,
    sent: VecDeque<Instant>,
}

impl RequestWindow {
    pub fn new(limit: RateLimit) -> RequestWindow {
        RequestWindow {
            limit,
            sent: VecDeque::with_capacity(limit.requests),
        }
    }

    /// How long a request at `now` must wait.
    pub fn wait(&self, now: Instant) -> Duration {
        if self.sent.len() < self.limit.requests {
            return Duration::ZERO;
        }
        let oldest = self.sent[self.sent.len() - self.limit.requests];
        (oldest + self.limit.window).saturating_duration_since(now)
    }

    /// Notes a request sent at `now`.
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
        while self.sent.len() > self.limit.requests {
            self.sent.pop_front();
        }
    }
}

/// Whether an answer means "try later".
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 403 | 429 | 500 | 502 | 503 | 504)
}

/// The wait before try `attempt + 1` (`attempt` counts from 1): the server's
/// `Retry-After` when given, else `base` doubled per attempt; at most `cap`.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    retry_after.unwrap_or(exponential).min(cap)
}

/// Retry and rate-limit policy of one source.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// The client of one update, with the rate limit of the source it talks to.
#[derive(Debug)]
pub struct Fetcher {
    client: Client,
    policy: Policy,
    window: Option<RequestWindow>,
}

impl Fetcher {
    pub fn new(client: Client, policy: Policy, limit: Option<RateLimit>) -> Fetcher {
        Fetcher {
            client,
            policy,
            window: limit.map(RequestWindow::new),
        }
    }

    /// GETs `uri` within the rate limit; retries what may pass. Returns a
    /// success or `304 Not Modified`; any other final answer is an error.
    pub async fn get(
        &mut self,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        sink: Sink<'_>,
        limit: u64,
        progress: &mut dyn Progress,
    ) -> Result<Response, FetchError> {
        let url = uri.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(window) = &mut self.window {
                let wait = window.wait(Instant::now());
                if !wait.is_zero() {
                    progress.event(Event::Waiting { delay: wait });
                    tokio::time::sleep(wait).await;
                }
                window.record(Instant::now());
            }
            let sink = match &sink {
                Sink::Memory => Sink::Memory,
                Sink::File(path) => Sink::File(path),
            };
            let (reason, retry_after) = match self.client.get(uri, headers, sink, limit).await {
                Ok(response)
                    if response.status.is_success()
                        || response.status == StatusCode::NOT_MODIFIED =>
                {
                    return Ok(response)
                }
                Ok(response) if is_retryable(response.status) => {
                    if attempt > self.policy.max_retries {
                        return Err(FetchError::Status {
                            url,
                            status: response.status,
                            attempts: attempt,
                            hint: status_hint(response.status),
                        });
                    }
                    (
                        format!("answered {}", response.status),
                        response.retry_after,
                    )
                }
                Ok(response) => {
                    return Err(FetchError::Status {
                        url,
                        status: response.status,
                        attempts: attempt,
                        hint: status_hint(response.status),
                    })
                }
                Err(error) if error.is_transient() => {
                    if attempt > self.policy.max_retries {
                        return Err(FetchError::Exhausted {
                            url,
                            attempts: attempt,
                            source: error,
                        });
                    }
                    (secflow_core::error_chain(&error), None)
                }
                Err(error) => return Err(error.into()),
            };
            let delay = retry_delay(attempt, self.policy.base, self.policy.cap, retry_after);
            progress.event(Event::Retrying {
                url: &url,
                attempt,
                reason,
                delay,
            });
            tokio::time::sleep(delay).await;
        }
    }
}

fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        403 | 429 => " (rate limited: an NVD api key raises the limit; try again later)",
        404 => " (check the url in [vulndb])",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_lets_the_budget_through_then_waits_for_the_oldest_request() {
        let limit = RateLimit {
            requests: 5,
            window: Duration::from_secs(30),
        };
        let mut window = RequestWindow::new(limit);
        let start = Instant::now();
        for i in 0..5 {
            let now = start + Duration::from_secs(i);
            assert_eq!(window.wait(now), Duration::ZERO, "request {i}");
            window.record(now);
        }
        let sixth = start + Duration::from_secs(10);
        assert_eq!(window.wait(sixth), Duration::from_secs(20));
        window.record(start + Duration::from_secs(30));
        // The window slid by one: the next waits for the second request (t=1) to age out.
        assert_eq!(
            window.wait(start + Duration::from_secs(30)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retries_double_from_the_base_unless_the_server_says_when() {
        let base = Duration::from_secs(6);
        let cap = Duration::from_secs(120);
        assert_eq!(retry_delay(1, base, cap, None), Duration::from_secs(6));
        assert_eq!(retry_delay(2, base, cap, None), Duration::from_secs(12));
        assert_eq!(retry_delay(3, base, cap, None), Duration::from_secs(24));
        assert_eq!(retry_delay(10, base, cap, None), cap);
        assert_eq!(
            retry_delay(1, base, cap, Some(Duration::from_secs(40))),
            Duration::from_secs(40)
        );
        assert_eq!(
            retry_delay(1, base, cap, Some(Duration::from_secs(999))),
            cap
        );
    }

    #[test]
    fn rate_limit_and_outage_answers_are_retried_and_others_are_not() {
        for code in [403, 429, 503, 502] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 404, 410] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
