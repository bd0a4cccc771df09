//! The workflow executor's API: JSON-RPC 2.0, one object per line, over a Unix
//! socket (contracts §2).
//!
//! The server owns the connections: each is checked against the allow-lists
//! with the kernel's peer credentials before anything is read, is bounded in
//! request size and in requests pending at once, and may have many requests in
//! flight (answers carry the request `id` and come back in completion order).
//! Nothing here runs plugins or touches the database directly: every method is
//! a call on the [`Supervisor`], which owns the registry and the runs.

pub mod daemon;
pub mod methods;
pub mod peer;
pub mod rpc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use methods::CallContext;
use peer::Peer;
use rpc::{code, Frame, RpcFailure};
use secflow_core::clock::now_rfc3339;
use secflow_core::config::ApiConfig;
use secflow_runner::Supervisor;
use secflow_store::AuditEvent;

/// Answers queued for one connection's writer before request tasks wait.
const WRITE_QUEUE: usize = 64;

/// The API server: accepts connections until told to stop.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    supervisor: Arc<Supervisor>,
    settings: ApiConfig,
    started: Instant,
    connections: Arc<Semaphore>,
}

/// The connections still open once the server stopped accepting.
#[derive(Debug)]
pub struct OpenConnections {
    tasks: JoinSet<()>,
    close: watch::Sender<bool>,
}

impl ApiServer {
    /// `started` is when the daemon started (`system.health`'s `uptime_ms`).
    pub fn new(supervisor: Arc<Supervisor>, settings: ApiConfig, started: Instant) -> ApiServer {
        let connections = Arc::new(Semaphore::new(settings.max_connections));
        ApiServer {
            shared: Arc::new(Shared {
                supervisor,
                settings,
                started,
                connections,
            }),
        }
    }

    /// Accepts and serves connections until `stop` becomes `true`; then stops
    /// accepting and hands back the connections still open.
    pub async fn serve(
        &self,
        listener: UnixListener,
        mut stop: watch::Receiver<bool>,
    ) -> OpenConnections {
        let (close, closing) = watch::channel(false);
        let mut tasks = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                // Reap finished connections so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let permit = Arc::clone(&self.shared.connections)
                        .try_acquire_owned()
                        .ok();
                    let shared = Arc::clone(&self.shared);
                    let closing = closing.clone();
                    tasks.spawn(async move { shared.connection(stream, permit, closing).await });
                }
                Err(e) => {
                    // Out of fds or memory: back off instead of spinning.
                    tracing::error!(error = %e, "cannot accept an api connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        OpenConnections { tasks, close }
    }
}

impl OpenConnections {
    /// Stops reading new requests, lets the ones in flight be answered for up
    /// to `grace`, then drops every connection.
    pub async fn close(mut self, grace: Duration) {
        let _ = self.close.send(true);
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!(
                connections = self.tasks.len(),
                "closing api connections with requests still unanswered"
            );
            self.tasks.shutdown().await;
        }
    }
}

impl Shared {
    async fn connection(
        self: Arc<Shared>,
        mut stream: UnixStream,
        permit: Option<OwnedSemaphorePermit>,
        closing: watch::Receiver<bool>,
    ) {
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %secflow_core::error_chain(&e), "api connection dropped");
                return;
            }
        };
        if !peer.is_allowed(&self.settings.allowed_uids, &self.settings.allowed_gids) {
            self.refuse_peer(&mut stream, &peer).await;
            return;
        }
        let Some(_permit) = permit else {
            tracing::warn!(
                uid = peer.uid,
                limit = self.settings.max_connections,
                "api connection refused: too many connections"
            );
            let failure = RpcFailure::new(
                code::TOO_MANY_CONNECTIONS,
                format!(
                    "too many connections (api.max_connections = {}); retry later",
                    self.settings.max_connections
                ),
            );
            let _ = stream
                .write_all(rpc::response_line(Value::Null, Err(failure)).as_bytes())
                .await;
            return;
        };
        tracing::debug!(uid = peer.uid, pid = ?peer.pid, "api connection opened");
        self.serve_connection(stream, peer, closing).await;
    }

    /// Answers `-32010`, audits the attempt and closes.
    async fn refuse_peer(&self, stream: &mut UnixStream, peer: &Peer) {
        let message = format!(
            "uid {} (gid {}) is not allowed to use this socket; an operator can add it to \
             api.allowed_uids or one of its groups to api.allowed_gids",
            peer.uid, peer.gid
        );
        tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "api peer refused");
        let audit = AuditEvent {
            id: 0,
            timestamp: now_rfc3339(),
            event: "api_peer_rejected".into(),
            security: true,
            plugin: None,
            run_id: None,
            actor_uid: Some(peer.uid),
            message: message.clone(),
            details: json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid, "groups": peer.groups}),
        };
        if let Err(e) = self.supervisor.store().writer().audit(audit).await {
            tracing::error!(error = %e, "cannot audit a refused api peer");
        }
        let failure = RpcFailure::new(code::UNAUTHORIZED, message);
        let _ = stream
            .write_all(rpc::response_line(Value::Null, Err(failure)).as_bytes())
            .await;
        let _ = stream.shutdown().await;
    }

    async fn serve_connection(
        self: Arc<Shared>,
        stream: UnixStream,
        peer: Peer,
        mut closing: watch::Receiver<bool>,
    ) {
        let (read, mut write) = stream.into_split();
        // An answer carries its request's pending permit until it is written:
        // a peer that does not read holds at most `max_pending_requests`
        // computed answers, and then no more of its requests are read.
        let (answers, mut outbox) =
            mpsc::channel::<(String, Option<OwnedSemaphorePermit>)>(WRITE_QUEUE);
        let mut writer = tokio::spawn(async move {
            while let Some((line, _permit)) = outbox.recv().await {
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });

        let ctx = CallContext {
            supervisor: Arc::clone(&self.supervisor),
            peer: Arc::new(peer),
            started: self.started,
        };
        let pending = Arc::new(Semaphore::new(self.settings.max_pending_requests));
        let max = self.settings.max_request_bytes;
        let mut reader = BufReader::with_capacity(64 << 10, read);
        let mut requests = JoinSet::new();
        loop {
            // Reap answered requests here, not in the select below: a read
            // interrupted by another branch would lose the part of the line
            // it had taken from the buffer (only shutdown may do that).
            while requests.try_join_next().is_some() {}
            let frame = tokio::select! {
                _ = closing.wait_for(|c| *c) => break,
                frame = rpc::read_frame(&mut reader, max) => frame,
            };
            let line = match frame {
                Ok(Frame::Line(line)) => line,
                Ok(Frame::Eof) => break,
                Ok(Frame::TooLong) => {
                    let failure = RpcFailure::new(
                        code::INVALID_REQUEST,
                        format!("request is larger than api.max_request_bytes = {max} bytes"),
                    )
                    .with_data(json!({"max_request_bytes": max}));
                    if answers
                        .send((rpc::response_line(Value::Null, Err(failure)), None))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "api connection read failed");
                    break;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let call = match rpc::parse_line(&line) {
                Ok(call) => call,
                Err(bad) => {
                    if answers
                        .send((rpc::response_line(bad.id, Err(bad.failure)), None))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
            };
            // Back-pressure: stop reading while too many requests are pending.
            let permit = tokio::select! {
                _ = closing.wait_for(|c| *c) => break,
                permit = Arc::clone(&pending).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let ctx = ctx.clone();
            let answers = answers.clone();
            requests.spawn(async move {
                let outcome = methods::dispatch(&ctx, &call.method, call.params).await;
                if let Some(id) = call.id {
                    let _ = answers
                        .send((rpc::response_line(id, outcome), Some(permit)))
                        .await;
                }
            });
        }
        drop(answers);
        // Answer what is in flight; if the peer has gone (the writer stopped),
        // nobody is listening and the requests are dropped.
        let in_flight = async { while requests.join_next().await.is_some() {} };
        tokio::select! {
            _ = in_flight => {
                let _ = (&mut writer).await;
            }
            _ = &mut writer => requests.abort_all(),
        }
        tracing::debug!(uid = ctx.peer.uid, "api connection closed");
    }
}
