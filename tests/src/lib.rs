//! Fixtures shared by the integration tests and the test-only plugins.

pub mod fixture;
pub mod http_fixture;
