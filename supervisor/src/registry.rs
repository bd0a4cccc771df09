//! Plugin discovery and the registry of plugin entries.
