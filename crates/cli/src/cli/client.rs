//! The `secflow` end of the daemon's API: one connection to its socket, one
//! JSON-RPC call at a time.
//!
//! Failing to reach the daemon is its own error (exit 3) naming the socket
//! path that was tried, so an operator sees at once whether the daemon is down
//! or the path is wrong; a refusal of this user by the daemon counts the same.

use std::path::{Path, PathBuf};

use secflow_plugin_sdk::protocol::Category;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use secflow_api::rpc::{self, code, Frame};
use secflow_runner::registry::{PluginEntry, PluginStatus};

/// Longest answer accepted from the daemon (a page of findings is far less).
const MAX_ANSWER_BYTES: usize = 512 << 20;

/// A call to the daemon that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the secflow daemon at {path}: {source}; is secflowd running? (pass --socket PATH or set SECFLOW_SOCKET for another socket, or --local to work without the daemon)")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secflow daemon at {path} refused the connection (error {code}): {message}")]
    Refused {
        path: PathBuf,
        code: i64,
        message: String,
    },
    #[error("the secflow daemon at {path} closed the connection before answering")]
    Closed { path: PathBuf },
    #[error("the secflow daemon at {path} sent an answer this client cannot read: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
    #[error("{message}")]
    Rpc { code: i64, message: String },
}

impl ClientError {
    /// The `secflow` exit status for this error (contracts §1).
    pub fn exit_status(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Refused { .. }
            | ClientError::Closed { .. } => 3,
            ClientError::Rpc { code, .. }
                if matches!(
                    *code,
                    code::NOT_FOUND | code::INVALID_PARAMS | code::UNRUNNABLE
                ) =>
            {
                2
            }
            ClientError::Rpc { .. } | ClientError::BadAnswer { .. } => 1,
        }
    }
}

/// A plugin as `plugins.list` answers it; the same fields, in the same order,
/// as the embedded registry's entries serialise to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginListing {
    pub name: String,
    pub version: String,
    pub category: Option<Category>,
    pub status: PluginStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub network: bool,
    pub manifest_path: PathBuf,
}

impl From<&PluginEntry> for PluginListing {
    fn from(e: &PluginEntry) -> PluginListing {
        PluginListing {
            name: e.name.clone(),
            version: e.version.clone(),
            category: e.category,
            status: e.status,
            reason: e.reason.clone(),
            network: e.network,
            manifest_path: e.manifest_path.clone(),
        }
    }
}

/// A `findings.query` answer: stored finding documents and the next cursor.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FindingDocs {
    pub findings: Vec<Value>,
    #[serde(default)]
    pub next: Option<i64>,
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct DaemonClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl DaemonClient {
    pub async fn connect(path: &Path) -> Result<DaemonClient, ClientError> {
        let stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ClientError::Unreachable {
                    path: path.to_path_buf(),
                    source,
                })?;
        let (read, writer) = stream.into_split();
        Ok(DaemonClient {
            path: path.to_path_buf(),
            reader: BufReader::new(read),
            writer,
            next_id: 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `method` and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        let closed = |path: &Path| ClientError::Closed {
            path: path.to_path_buf(),
        };
        // A refused peer is answered before it sends anything; a failed write
        // still leaves that answer to read.
        let written = self.writer.write_all(line.as_bytes()).await;
        loop {
            let frame = rpc::read_frame(&mut self.reader, MAX_ANSWER_BYTES)
                .await
                .map_err(|_| closed(&self.path))?;
            let answer = match frame {
                Frame::Line(answer) => answer,
                Frame::Eof => return Err(closed(&self.path)),
                Frame::TooLong => {
                    return Err(self
                        .bad_answer(format!("an answer is longer than {MAX_ANSWER_BYTES} bytes")))
                }
            };
            let answer: Value = serde_json::from_slice(&answer)
                .map_err(|e| self.bad_answer(format!("not JSON: {e}")))?;
            if let Some(error) = answer.get("error") {
                let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_string();
                let to_nobody = answer.get("id") == Some(&Value::Null);
                if to_nobody && matches!(code, code::UNAUTHORIZED | code::TOO_MANY_CONNECTIONS) {
                    return Err(ClientError::Refused {
                        path: self.path.clone(),
                        code,
                        message,
                    });
                }
                if to_nobody || answer.get("id") == Some(&json!(id)) {
                    return Err(ClientError::Rpc { code, message });
                }
                continue;
            }
            if written.is_err() {
                return Err(closed(&self.path));
            }
            if answer.get("id") == Some(&json!(id)) {
                return answer
                    .get("result")
                    .cloned()
                    .ok_or_else(|| self.bad_answer("an answer without result or error".into()));
            }
        }
    }

    /// Calls `method` and reads its result as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let result = self.call(method, params).await?;
        serde_json::from_value(result)
            .map_err(|e| self.bad_answer(format!("unexpected {method} result: {e}")))
    }

    fn bad_answer(&self, reason: String) -> ClientError {
        ClientError::BadAnswer {
            path: self.path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_naming_the_path_with_exit_3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody.sock");
        let err = DaemonClient::connect(&path).await.unwrap_err();
        assert_eq!(err.exit_status(), 3);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn unknown_names_are_bad_input_and_other_failures_are_failed_requests() {
        let rpc = |code| ClientError::Rpc {
            code,
            message: String::new(),
        };
        assert_eq!(rpc(code::NOT_FOUND).exit_status(), 2);
        assert_eq!(rpc(code::INVALID_PARAMS).exit_status(), 2);
        assert_eq!(rpc(code::SHUTTING_DOWN).exit_status(), 1);
        assert_eq!(rpc(code::INTERNAL_ERROR).exit_status(), 1);
    }
}
