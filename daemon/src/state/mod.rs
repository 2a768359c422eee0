//! Desired state on disk: every applied change is a numbered revision in the state directory
//! (`/var/lib/veer`), written so that a crash never leaves a torn file that is read back, and
//! the node settings the daemon last started with. Files it cannot use are reported, never
//! used, never overwritten.

mod audit;
mod store;

pub use audit::{Audit, Author, MAX_REASON, user_name};
pub use store::{
    FORMAT, Origin, Problem, Purged, Revision, Store, StoreError, Unusable, hold, purge,
};
