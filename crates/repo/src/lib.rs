//! SecFlow's plugin repository: a static tree of signed manifests and plugin
//! executables described by one signed index, and the client side that
//! fetches it, resolves plugin dependencies and installs releases so that a
//! failed install never leaves a plugin half-replaced.
//!
//! - [`index`]: the signed index document and the checks it must pass;
//! - [`state`]: what a host remembers of each repository (rollback defence);
//! - [`fetch`]: bounded reads from `http://` and directory repositories;
//! - [`resolve`]: dependency resolution (PubGrub) with explanations;
//! - [`install`]: verified, staged, atomic installs and removals;
//! - [`client`]: the operations behind `secflow plugin …`;
//! - [`cli`]: the `secflow plugin …` / `secflow repo build` subcommands;
//! - [`build`]: `secflow repo build`, for a repository's maintainer.

pub mod build;
pub mod cli;
pub mod client;
pub mod fetch;
pub mod index;
pub mod install;
pub mod resolve;
pub mod state;
