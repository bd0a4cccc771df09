//! The store's read connections: queries from many API clients run side by
//! side instead of queueing on one connection.
//!
//! In WAL mode every reader sees the last committed snapshot without blocking
//! the writer or another reader, so the only limit is how many connections we
//! keep. They are opened on demand, up to `storage.read_connections`, and kept
//! once opened: an idle daemon holds one (its page cache is memory), a busy one
//! holds as many as were ever in use at once. A query takes an idle connection,
//! or opens one while under the bound, or waits for one to come back.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use secflow_store::StorageError;

/// Bounded set of read connections to one database file.
pub(super) struct ReadPool {
    path: PathBuf,
    max: usize,
    configure: fn(&Connection) -> rusqlite::Result<()>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    /// Connections open (idle or lent out), or being opened.
    open: usize,
}

/// A connection lent out by the pool; back to the pool when dropped.
pub(super) struct ReadConnection<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl ReadPool {
    /// A pool of at most `max` (at least one) connections to `path`, with one
    /// opened now so that a file that cannot be read fails at start.
    /// `configure` is applied to every connection the pool opens.
    pub(super) fn open(
        path: &Path,
        max: usize,
        configure: fn(&Connection) -> rusqlite::Result<()>,
    ) -> Result<ReadPool, StorageError> {
        let first = open_connection(path, configure)?;
        Ok(ReadPool {
            path: path.to_path_buf(),
            max: max.max(1),
            configure,
            state: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
            }),
            returned: Condvar::new(),
        })
    }

    /// An idle connection, a new one while under the bound, or the first one
    /// returned. Fails only when a new connection cannot be opened.
    pub(super) fn get(&self) -> Result<ReadConnection<'_>, StorageError> {
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(self.lend(conn));
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match open_connection(&self.path, self.configure) {
                    Ok(conn) => Ok(self.lend(conn)),
                    Err(e) => {
                        self.lock().open -= 1;
                        // Someone waiting may open one in our place.
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            state = self
                .returned
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Connections open now (idle or lent out).
    #[cfg(test)]
    pub(super) fn open_connections(&self) -> usize {
        self.lock().open
    }

    fn lend(&self, conn: Connection) -> ReadConnection<'_> {
        ReadConnection {
            pool: self,
            conn: Some(conn),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is a list and a count, each updated in one step: a panic
        // elsewhere while holding the lock leaves it consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Deref for ReadConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Present from `lend` until `drop`.
        self.conn.as_ref().expect("a lent connection")
    }
}

impl Drop for ReadConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().idle.push(conn);
            self.pool.returned.notify_one();
        }
    }
}

fn open_connection(
    path: &Path,
    configure: fn(&Connection) -> rusqlite::Result<()>,
) -> Result<Connection, StorageError> {
    let open_error = |source: rusqlite::Error| StorageError::Open {
        location: path.display().to_string(),
        kind: crate::sqlite_error_kind(&source),
        source: Box::new(source),
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    configure(&conn).map_err(open_error)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn no_setup(_: &Connection) -> rusqlite::Result<()> {
        Ok(())
    }

    fn pool(dir: &tempfile::TempDir, max: usize) -> ReadPool {
        let path = dir.path().join("pool.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .unwrap();
        ReadPool::open(&path, max, no_setup).unwrap()
    }

    #[test]
    fn queries_hold_separate_connections_up_to_the_bound_and_reuse_returned_ones() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 2);
        assert_eq!(pool.open_connections(), 1, "one is opened at start");
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert_eq!(pool.open_connections(), 2);
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((count(&a), count(&b)), (0, 0), "both are usable at once");
        drop(a);
        let c = pool.get().unwrap();
        assert_eq!(pool.open_connections(), 2, "the returned one is lent again");
        drop((b, c));
        assert_eq!(
            pool.open_connections(),
            2,
            "connections are kept once opened"
        );
    }

    #[test]
    fn a_query_over_the_bound_waits_for_a_connection_to_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 1);
        let held = pool.get().unwrap();
        let (got, waited) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let conn = pool.get().unwrap();
                got.send(conn.is_autocommit()).unwrap();
            });
            assert!(
                waited.recv_timeout(Duration::from_millis(100)).is_err(),
                "no second connection while the only one is lent out"
            );
            drop(held);
            assert!(waited.recv().unwrap(), "the waiter gets the returned one");
        });
        assert_eq!(pool.open_connections(), 1);
    }

    #[test]
    fn a_connection_that_cannot_be_opened_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("x.db");
        let err = ReadPool::open(&missing, 2, no_setup).err().unwrap();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
