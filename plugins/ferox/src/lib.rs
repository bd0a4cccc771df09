//! The `ferox` detector's engine: recursive HTTP content discovery.
//!
//! [`settings`] and [`target`] validate what the run asks for, [`wordlist`] holds
//! the words (the embedded default list or a user file), [`classify`] says what a
//! found resource is and how bad its exposure is, [`calibration`] learns the
//! target's soft-404 answers, [`http`] is the HTTP/1.1 client (one kept-alive
//! connection per worker, TLS by rustls), [`governor`] paces the requests in flight
//! to what the target keeps up with and spaces retries, [`engine`] runs the scan
//! on a tokio runtime and streams what it finds, and [`plugin`] turns that into SecFlow
//! findings behind the SDK's `Plugin` trait.

pub mod calibration;
pub mod classify;
pub mod engine;
pub mod governor;
pub mod http;
pub mod plugin;
pub mod settings;
pub mod target;
pub mod wordlist;
