//! `cmdop session list`: the sessions on every known host (or one), as a table or JSON.

use super::{no_local_node, targets};
use crate::context::Context;
use crate::output::{print_session_list, print_session_list_json, SessionList};
use crate::resolve::list_hosts;
use anyhow::bail;
use std::process::ExitCode;

/// Lists the sessions on `host`, or on every known host; unreachable hosts are reported, not
/// fatal, unless `host` was asked for.
pub async fn list(context: &Context, host: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let listings = list_hosts(context, targets(context, host.as_deref())?).await;
    let mut list = SessionList {
        sessions: Vec::new(),
        unreachable: Vec::new(),
    };
    for listing in listings {
        let name = listing.target.name;
        match listing.result {
            Ok(sessions) => list
                .sessions
                .extend(sessions.into_iter().map(|s| (name.clone(), s))),
            // Without a local node there is nothing local to list.
            Err(e) if no_local_node(&e, &name, host.is_some()) => {}
            Err(e) => list.unreachable.push((name, e.to_string())),
        }
    }
    if let (Some(host), Some((_, error))) = (&host, list.unreachable.first()) {
        bail!("cannot list sessions on {host}: {error}");
    }
    if json {
        print_session_list_json(&list)?;
    } else {
        print_session_list(&list);
    }
    Ok(ExitCode::SUCCESS)
}
