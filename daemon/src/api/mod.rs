//! The control API: HTTP/1.1 + JSON on a Unix socket (`curl --unix-socket /run/veer/veer.sock
//! http://veer/v1/status`). Only root, or members of a configured group, may connect; every
//! request is checked with `SO_PEERCRED`.
//!
//! | method | path | body / query | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | `?service=NAME` | `Status` |
//! | POST | `/v1/apply` | `ApplyRequest` | `ApplyResponse` |
//! | POST | `/v1/shift` | `ShiftRequest` (several services at once) | `ApplyResponse` |
//! | POST | `/v1/drain` | `DrainRequest` | `ApplyResponse` |
//! | POST | `/v1/pin` | `PinRequest` | `ApplyResponse` |
//! | POST | `/v1/unpin` | `UnpinRequest` | `ApplyResponse` |
//! | POST | `/v1/rollback` | `RollbackRequest` | `ApplyResponse` |
//! | GET | `/v1/history` | `?service=NAME` | `HistoryResponse` |
//! | GET | `/v1/flows` | `?service=NAME&backend=ADDR&limit=N` | `FlowsResponse` |
//! | GET | `/v1/version` | | `VersionResponse` |
//! | POST | `/v1/rollouts` | `RolloutStartRequest` | `ApplyResponse` |
//! | GET | `/v1/rollouts/SERVICE` | | `RolloutStatus` |
//! | POST | `/v1/rollouts/SERVICE/{pause,resume,abort,retry}` | `RolloutActionRequest` or empty | `ApplyResponse` |
//! | POST | `/v1/rollouts/SERVICE/promote` | `RolloutActionRequest` (`full`) | `ApplyResponse` |
//!
//! Every change body may carry `ChangeOptions`: a `reason` (recorded with its revisions, with
//! the peer's uid and user name from `SO_PEERCRED`) and `dry_run` (nothing applied or recorded:
//! the answer is a `DryRunResponse`, the diff of the desired state).
//!
//! Errors answer 400 (bad request, invalid config), 403 (peer not allowed), 404 (unknown
//! service, group, pin or revision), 409 (refused: a drain of the last serving group, a rollout
//! in the way, a retry of a completed rollout), 500 (the kernel side failed; the previous state
//! is in force) with `ErrorBody`; an invalid config's body lists every problem (`diagnostics`).

pub mod client;
mod handlers;
pub mod protocol;
pub mod server;
