//! `veer flows [SERVICE] [--backend ADDR] [--limit N]`.

use std::{fmt::Write as _, net::SocketAddr};

use super::{Global, block_on, exit::Failure, output, status::encode};
use crate::api::protocol::FlowsResponse;

/// Arguments of `veer flows`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only this service.
    service: Option<String>,
    /// Only flows on this backend (`ip:port`, `[v6]:port`).
    #[arg(long)]
    backend: Option<SocketAddr>,
    /// At most this many entries (the total that matched is always shown).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// Lists conntrack entries.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let mut q = vec![format!("limit={}", args.limit)];
    if let Some(s) = &args.service {
        q.push(format!("service={}", encode(s)));
    }
    if let Some(b) = &args.backend {
        q.push(format!("backend={}", encode(&b.to_string())));
    }
    let r: FlowsResponse = block_on(g.client().get(&format!("/v1/flows?{}", q.join("&"))))?
        .map_err(|e| Failure::from(&e))?;
    output::print(g.output, &r, || {
        let rows: Vec<Vec<String>> = r
            .flows
            .iter()
            .map(|f| {
                vec![
                    f.client.to_string(),
                    format!("{}/{}", f.vip, f.protocol),
                    f.service.clone().unwrap_or_else(|| "-".into()),
                    f.group.clone().unwrap_or_else(|| "-".into()),
                    f.backend.to_string(),
                    f.state.clone(),
                    format!("{}s", f.idle_seconds),
                ]
            })
            .collect();
        let mut t = output::table(
            &[
                "CLIENT", "VIP", "SERVICE", "GROUP", "BACKEND", "STATE", "IDLE",
            ],
            &rows,
        );
        let _ = write!(t, "\n{} of {} flows shown", r.flows.len(), r.matched);
        t
    })
}
