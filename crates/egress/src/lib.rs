//! Target-scoped egress: a run granted `network: "targets"` reaches only the
//! addresses its targets resolve to (and the manifest's `sandbox.egress`),
//! enforced by the kernel at L3/L4 for the run's uid.
//!
//! [`policy`] is pure: it turns targets and egress entries into an
//! [`AllowSet`] (names resolved by the supervisor, before the run).
//! [`nft`] applies an allow-set to one uid with nftables in the host's
//! network namespace and reads back what was refused. [`landlock`] scopes
//! abstract Unix sockets and signals, which a run in the host's network
//! namespace could otherwise reach.

pub mod landlock;
pub mod nft;
pub mod policy;

pub use landlock::{restrict_self, ScopeError, ScopeRuleset};
pub use nft::{EgressTable, Nft, NftError, Refusal, RunEgress, MAX_REFUSED_DESTINATIONS};
pub use policy::{
    allow_set, check_egress_entry, Allow, AllowSet, Net, PolicyError, Ports, Resolve, ResolvedName,
    SystemResolver, Transport,
};
