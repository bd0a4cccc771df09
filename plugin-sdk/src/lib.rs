//! Write SecFlow plugins in Rust.
//!
//! See [`protocol`] for the wire types; the `Plugin` trait and `serve()` are added
//! on top of them.

pub mod protocol;
