//! The reliability drivers of issue #10: a soak (thousands of runs of
//! well-behaved and hostile plugins through one `secflowd`, with the daemon's
//! RSS, fds and every kind of leftover measured) and fault injection (SIGKILL
//! of the daemon while runs stream findings, then a restart and a check of
//! everything it had acknowledged).
//!
//! They drive the real binaries over the real socket, as an operator's workflow
//! executor would, so the `secflow-soak` program (full figures, `scripts/soak`)
//! and the CI tests (`tests/tests/reliability.rs`, short versions) share one
//! implementation and report the same figures.

pub mod daemon;
pub mod kill;
pub mod probe;
pub mod soak;

pub use daemon::{Binaries, Daemon, Home, Rpc, RpcError};
