//! The checkpointer thread: copies committed WAL frames back into the database
//! file beside the writer, so that a stream of findings does not stop for each
//! checkpoint (with SQLite's automatic checkpoint the committing connection
//! does that copy inside its commit, on the writer thread).
//!
//! It only ever runs PASSIVE checkpoints, which never block the writer or a
//! reader, and it does not change durability: a commit is durable (against a
//! SIGKILL of the daemon) once its frames are in the WAL, before any
//! checkpoint. The writer keeps an automatic checkpoint of its own at a
//! higher WAL size ([`WRITER_FALLBACK_PAGES`]) as the bound for when this
//! thread cannot keep up, or when a checkpoint never completes between two
//! commits (a WAL only restarts from its beginning after a complete one).

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// The name of the checkpointer thread (visible in `ps -T`, `top -H`, panics).
pub const CHECKPOINT_THREAD_NAME: &str = "secflow-store-ckpt";

/// WAL pages after which the writer checkpoints itself (256 MiB at a 16 KiB
/// page): only reached when this thread falls behind, or when its passive
/// checkpoints never catch up with a writer that commits without pause.
pub(crate) const WRITER_FALLBACK_PAGES: i64 = 16_384;

/// Least time between two checkpoints: one copy per interval, so that a page
/// rewritten by several commits in it is copied back once.
const INTERVAL: Duration = Duration::from_millis(200);

/// The writer's side: a nudge after each commit. Dropping it ends the thread.
pub(crate) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path` (opened with
    /// `configure`, the settings every connection uses).
    pub(crate) fn start(
        path: &Path,
        configure: fn(&Connection) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        configure(&conn)?;
        // This connection never writes rows, but a connection's own automatic
        // checkpoint would only duplicate the explicit ones.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (nudge, nudged) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(CHECKPOINT_THREAD_NAME.to_string())
            .spawn(move || serve(&conn, &nudged))
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!(
                        "cannot start the {CHECKPOINT_THREAD_NAME} thread: {e}"
                    )),
                )
            })?;
        Ok(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// Tells the thread that a commit happened (never blocks: one pending
    /// nudge is as good as many).
    pub(crate) fn committed(&self) {
        if let Some(nudge) = &self.nudge {
            match nudge.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("the checkpointer thread is gone; the writer checkpoints alone");
                }
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(conn: &Connection, nudged: &Receiver<()>) {
    while nudged.recv().is_ok() {
        // (busy, frames in the WAL, frames checkpointed); a failure is logged
        // and the next nudge tries again: the writer's fallback bounds the WAL.
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match outcome {
            Ok((frames, copied)) => {
                tracing::trace!(frames, copied, "passive checkpoint");
            }
            Err(e) => tracing::warn!(error = %e, "passive checkpoint failed"),
        }
        std::thread::sleep(INTERVAL);
    }
}
