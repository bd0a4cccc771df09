//! SQLite implementation of the storage port.

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {}
