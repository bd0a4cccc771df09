//! Shared by the suite and its streaming plugin: the findings they generate,
//! so that the daemon, the Python loader and the bare-insert ceiling all load
//! the very same documents.

pub mod corpus;
