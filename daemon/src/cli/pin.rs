//! `veer pin SERVICE PREFIX GROUP` and `veer unpin SERVICE PREFIX`.

use super::{Global, block_on, exit::Failure, output};
use crate::api::protocol::{ApplyResponse, PinRequest, UnpinRequest};

/// Arguments of `veer pin`.
#[derive(Debug, clap::Args)]
pub(super) struct PinArgs {
    /// Name of the service.
    service: String,
    /// Client prefix (e.g. 203.0.113.0/24).
    prefix: String,
    /// Group those clients always get.
    group: String,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Arguments of `veer unpin`.
#[derive(Debug, clap::Args)]
pub(super) struct UnpinArgs {
    /// Name of the service.
    service: String,
    /// Client prefix.
    prefix: String,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Sends the pin; prints the revision.
pub(super) fn run_pin(a: &PinArgs, g: &Global) -> Result<(), Failure> {
    if a.fleet.on() {
        let request = crate::control::Request::Pin {
            service: a.service.clone(),
            prefix: a.prefix.clone(),
            group: a.group.clone(),
        };
        let what = format!("pin {} {} -> {}", a.service, a.prefix, a.group);
        return super::fleet::edit(&a.fleet, &request, &what, g);
    }
    let req = PinRequest {
        service: a.service.clone(),
        prefix: a.prefix.clone(),
        group: a.group.clone(),
    };
    let r: ApplyResponse =
        block_on(g.client().post("/v1/pin", &req))?.map_err(|e| output::client_failure(&e))?;
    output::applied(
        g.output,
        &r,
        &format!("pin {} {} -> {}", a.service, a.prefix, a.group),
    )
}

/// Sends the unpin; prints the revision.
pub(super) fn run_unpin(a: &UnpinArgs, g: &Global) -> Result<(), Failure> {
    if a.fleet.on() {
        let request = crate::control::Request::Unpin {
            service: a.service.clone(),
            prefix: a.prefix.clone(),
        };
        let what = format!("unpin {} {}", a.service, a.prefix);
        return super::fleet::edit(&a.fleet, &request, &what, g);
    }
    let req = UnpinRequest {
        service: a.service.clone(),
        prefix: a.prefix.clone(),
    };
    let r: ApplyResponse =
        block_on(g.client().post("/v1/unpin", &req))?.map_err(|e| output::client_failure(&e))?;
    output::applied(g.output, &r, &format!("unpin {} {}", a.service, a.prefix))
}
