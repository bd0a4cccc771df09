//! A slow, unreliable HTTP/1.1 target on loopback, for the retry and governor tests.
//!
//! It serves a few real files and `404` for everything else, like a small site
//! behind a server with few workers: at most `workers` requests are served at
//! once, each taking `latency`, and the others queue (so that latency climbs with
//! the requests a client keeps in flight). Chosen paths have their first requests
//! dropped (the connection closed without an answer) or stalled past the client's
//! timeout; [`SlowTarget::dead`] answers its root and drops everything else.
//! Every request is counted per path. The server runs on a thread and runtime
//! of its own and stops when dropped.
//!
//! Bounds: request heads up to 16 KiB; requests are served until the client
//! closes or the target is dropped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};

const MAX_HEAD_BYTES: usize = 16 << 10;

/// What the target does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Answer,
    /// Close the connection without an answer.
    Drop,
    /// Hold the connection silent for this long, then close it.
    Stall(Duration),
}

#[derive(Debug, Default)]
pub struct SlowTargetBuilder {
    files: HashMap<String, String>,
    workers: usize,
    latency: Duration,
    dropped: HashSet<String>,
    drop_times: usize,
    stalled: HashMap<String, Duration>,
    dead: bool,
}

impl SlowTargetBuilder {
    /// Serves `body` at `path` with `200`.
    pub fn file(mut self, path: &str, body: &str) -> Self {
        self.files.insert(path.to_owned(), body.to_owned());
        self
    }

    /// At most `workers` requests served at once, each taking `latency`.
    pub fn workers(mut self, workers: usize, latency: Duration) -> Self {
        self.workers = workers.max(1);
        self.latency = latency;
        self
    }

    /// Drops the first `times` requests for each of `paths`.
    pub fn drop_first(mut self, times: usize, paths: &[&str]) -> Self {
        self.drop_times = times;
        self.dropped = paths.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Holds the first request for `path` silent for `stall`.
    pub fn stall_first(mut self, path: &str, stall: Duration) -> Self {
        self.stalled.insert(path.to_owned(), stall);
        self
    }

    pub fn start(self) -> SlowTarget {
        let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let state = Arc::new(Serving {
            permits: Semaphore::new(self.workers.max(1)),
            builder: self,
            hits: Arc::clone(&hits),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("target runtime starts");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let _ = addr_tx.send(listener.local_addr().expect("address"));
                tokio::select! {
                    _ = stop_rx => {}
                    _ = accept(listener, state) => {}
                }
            });
            runtime.shutdown_background();
        });
        SlowTarget {
            addr: addr_rx.recv().expect("target reports its address"),
            hits,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

/// A running target; stops when dropped.
#[derive(Debug)]
pub struct SlowTarget {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowTarget {
    pub fn builder() -> SlowTargetBuilder {
        SlowTargetBuilder {
            workers: 64,
            ..SlowTargetBuilder::default()
        }
    }

    /// A target that answers its root (so it looks reachable) and then drops
    /// every other request.
    pub fn dead() -> SlowTarget {
        SlowTargetBuilder {
            workers: 64,
            dead: true,
            ..SlowTargetBuilder::default()
        }
        .start()
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.hits).get(path).copied().unwrap_or(0)
    }

    /// Requests received in all.
    pub fn requests(&self) -> usize {
        lock(&self.hits).values().sum()
    }
}

impl Drop for SlowTarget {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Serving {
    builder: SlowTargetBuilder,
    permits: Semaphore,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Serving {
    /// Counts the request and says what to do with it.
    fn treat(&self, path: &str) -> Treatment {
        let nth = {
            let mut hits = lock(&self.hits);
            let count = hits.entry(path.to_owned()).or_insert(0);
            *count += 1;
            *count
        };
        let b = &self.builder;
        if b.dead {
            if path == "/" {
                Treatment::Answer
            } else {
                Treatment::Drop
            }
        } else if b.dropped.contains(path) && nth <= b.drop_times {
            Treatment::Drop
        } else if let Some(stall) = b.stalled.get(path).filter(|_| nth == 1) {
            Treatment::Stall(*stall)
        } else {
            Treatment::Answer
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<Serving>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, Arc::clone(&state)));
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Serving>) {
    let mut buffer = Vec::new();
    loop {
        let Some(path) = read_path(&mut stream, &mut buffer).await else {
            return;
        };
        match state.treat(&path) {
            Treatment::Drop => return,
            Treatment::Stall(stall) => {
                tokio::time::sleep(stall).await;
                return;
            }
            Treatment::Answer => {}
        }
        let Ok(permit) = state.permits.acquire().await else {
            return;
        };
        tokio::time::sleep(state.builder.latency).await;
        drop(permit);
        let (status, body) = match state.builder.files.get(&path) {
            Some(body) => ("200 OK", body.as_str()),
            None => ("404 Not Found", "not found\n"),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request head and returns its path; `None` at end of input or on a
/// malformed or oversized head.
async fn read_path(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    buffer.drain(..end + 4);
    let target = head.lines().next()?.split(' ').nth(1)?;
    Some(target.split('?').next().unwrap_or_default().to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
