//! Finding sessions across hosts: list every host in parallel, then match an id, a unique id
//! prefix, or a unique name.

use crate::context::Context;
use anyhow::bail;
use cmdop_node::client::{ClientError, Target};
use cmdop_node::proto::{Reply, Request, SessionInfo};

/// One host's answer to a listing.
pub struct HostListing {
    /// The host.
    pub target: Target,
    /// Its sessions, or why it could not be listed.
    pub result: Result<Vec<SessionInfo>, ClientError>,
}

/// Lists the sessions of `targets` in parallel.
pub async fn list_hosts(context: &Context, targets: Vec<Target>) -> Vec<HostListing> {
    let timeout = context.config.client.connect_timeout.0;
    let probes = targets.into_iter().map(|target| async move {
        let result = async {
            let mut client = context.probe(&target, timeout).await?;
            let reply = client.request(&Request::List).await;
            client.close().await;
            match reply? {
                Reply::Sessions(sessions) => Ok(sessions),
                Reply::Error(e) => Err(ClientError::Refused(e.message)),
                other => Err(ClientError::Connection {
                    name: target.name.clone(),
                    reason: format!("unexpected reply {other:?}"),
                }),
            }
        }
        .await;
        HostListing { target, result }
    });
    futures_join_all(probes).await
}

/// Runs futures concurrently and collects their outputs in order.
pub async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, _)> = futures.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(index, future)| match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => {
                outputs[*index] = Some(output);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// A session found on a host.
pub struct Found {
    /// Its host.
    pub target: Target,
    /// Its metadata.
    pub session: SessionInfo,
}

fn matches_prefix(id: &uuid::Uuid, query: &str) -> bool {
    let query = query.to_ascii_lowercase();
    let full = id.hyphenated().to_string();
    let simple = id.simple().to_string();
    !query.is_empty() && (full.starts_with(&query) || simple.starts_with(&query.replace('-', "")))
}

/// Finds the one session that `query` (id, id prefix or name) names, on `host` or on every
/// known host.
pub async fn find_session(
    context: &Context,
    query: &str,
    host: Option<&str>,
) -> anyhow::Result<Found> {
    let targets = match host {
        Some(name) => vec![context.target(name)?],
        None => context.targets(),
    };
    let listings = list_hosts(context, targets).await;
    let mut exact = Vec::new();
    let mut named = Vec::new();
    let mut prefixed = Vec::new();
    let mut offline = Vec::new();
    let mut seen = Vec::new();
    for listing in listings {
        let sessions = match listing.result {
            Ok(sessions) => sessions,
            Err(e) => {
                offline.push((listing.target.name.clone(), e));
                continue;
            }
        };
        for session in sessions {
            seen.push(
                session
                    .name
                    .clone()
                    .unwrap_or_else(|| session.id.to_string()[..13].to_string()),
            );
            let found = || Found {
                target: listing.target.clone(),
                session: session.clone(),
            };
            if session.id.hyphenated().to_string() == query.to_ascii_lowercase() {
                exact.push(found());
            } else if session.name.as_deref() == Some(query) {
                named.push(found());
            } else if matches_prefix(&session.id, query) {
                prefixed.push(found());
            }
        }
    }
    for candidates in [exact, named, prefixed] {
        match candidates.len() {
            0 => continue,
            1 => return Ok(candidates.into_iter().next().expect("one candidate")),
            _ => {
                let list: Vec<String> = candidates
                    .iter()
                    .map(|f| {
                        format!(
                            "{} on {}{}",
                            f.session.id,
                            f.target.name,
                            f.session
                                .name
                                .as_ref()
                                .map(|n| format!(" ({n})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                bail!(
                    "'{query}' is ambiguous: it matches {}; use a longer id prefix or --host",
                    list.join(", ")
                );
            }
        }
    }
    let unreachable: Vec<String> = offline
        .iter()
        // No local node at all is no news (the port is free, see `Context::probe`); a local
        // node that did not answer or refused us is.
        .filter(|(name, e)| {
            host.is_some()
                || name != crate::context::LOCAL_HOST
                || !matches!(e, ClientError::Offline { timeout, .. } if timeout.is_zero())
        })
        .map(|(name, e)| format!("{name}: {e}"))
        .collect();
    if let (Some(name), Some((_, e))) = (host, offline.first()) {
        bail!("cannot look up '{query}' on {name}: {e}");
    }
    if unreachable.is_empty() {
        if seen.is_empty() {
            bail!("no session matches '{query}': there are no sessions; create one with 'cmdop session create HOST'");
        }
        seen.truncate(10);
        bail!(
            "no session matches '{query}' (sessions: {}); list them with 'cmdop session list'",
            seen.join(", ")
        )
    }
    bail!(
        "no session matches '{query}' on the reachable hosts; unreachable: {}",
        unreachable.join("; ")
    )
}
