//! Finding sessions across hosts: list every host in parallel, then match an id, a unique id
//! prefix, or a unique name.

use crate::context::{Context, LOCAL_HOST};
use anyhow::{anyhow, bail};
use cmdop_client::dial::{ClientError, NodeClient, Target};
use cmdop_proto::{ListSessions, SessionInfo};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinSet;

/// One host's answer to a listing.
pub struct HostListing {
    /// The host.
    pub target: Target,
    /// Its sessions, or why it could not be listed.
    pub result: Result<Vec<SessionInfo>, ClientError>,
}

/// Lists the sessions of `targets` in parallel, in the order of `targets`.
pub async fn list_hosts(context: &Context, targets: Vec<Target>) -> Vec<HostListing> {
    let timeout = context.config.client.connect_timeout.0;
    let list = async |mut client: NodeClient| {
        let reply = client.call(ListSessions).await;
        client.close().await;
        reply
    };
    let answers = probe_hosts(context, targets, timeout, list).await;
    answers
        .into_iter()
        .map(|(target, result)| HostListing { target, result })
        .collect()
}

/// Connects to each of `targets` in parallel (without starting a local node) and runs `work`
/// on each connection; the answers come in the order of `targets`.
pub async fn probe_hosts<T, F, Fut>(
    context: &Context,
    targets: Vec<Target>,
    timeout: Duration,
    work: F,
) -> Vec<(Target, Result<T, ClientError>)>
where
    T: Send + 'static,
    F: Fn(NodeClient) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, ClientError>> + Send,
{
    let prober = match context.prober() {
        Ok(prober) => prober,
        Err(e) => {
            let reason = e.to_string();
            let failed = |target| (target, Err(ClientError::setup(reason.clone())));
            return targets.into_iter().map(failed).collect();
        }
    };
    let probes = targets.into_iter().map(|target| {
        let (prober, work) = (prober.clone(), work.clone());
        async move {
            let result = match prober.probe(&target, timeout).await {
                Ok(client) => work(client).await,
                Err(e) => Err(e),
            };
            (target, result)
        }
    });
    join_in_order(probes).await
}

/// Runs futures as concurrent tasks and collects their outputs in the order given. A task
/// that panicked panics here too.
async fn join_in_order<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (index, future) in futures.into_iter().enumerate() {
        tasks.spawn(async move { (index, future.await) });
    }
    let mut outputs: Vec<Option<F::Output>> = (0..tasks.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, output)) => outputs[index] = Some(output),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Nothing cancels these tasks while the set lives.
            Err(_) => {}
        }
    }
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

/// What a query matched across the listings, best kind of match first.
#[derive(Default)]
struct Matches {
    /// The full id.
    exact: Vec<Found>,
    /// The name.
    named: Vec<Found>,
    /// A unique id prefix.
    prefixed: Vec<Found>,
    /// Hosts that could not be listed, with why.
    offline: Vec<(String, ClientError)>,
    /// Names (or short ids) of every session seen, for the "no match" sentence.
    seen: Vec<String>,
}

impl Matches {
    fn collect(listings: Vec<HostListing>, query: &str) -> Matches {
        let mut matches = Matches::default();
        for listing in listings {
            let sessions = match listing.result {
                Ok(sessions) => sessions,
                Err(e) => {
                    matches.offline.push((listing.target.name.clone(), e));
                    continue;
                }
            };
            for session in sessions {
                matches.add(&listing.target, session, query);
            }
        }
        matches
    }

    fn add(&mut self, target: &Target, session: SessionInfo, query: &str) {
        self.seen.push(
            session
                .name
                .clone()
                .unwrap_or_else(|| session.id.to_string()[..13].to_string()),
        );
        let kind = if session.id.hyphenated().to_string() == query.to_ascii_lowercase() {
            &mut self.exact
        } else if session.name.as_deref() == Some(query) {
            &mut self.named
        } else if matches_prefix(&session.id, query) {
            &mut self.prefixed
        } else {
            return;
        };
        kind.push(Found {
            target: target.clone(),
            session,
        });
    }
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
    let Matches {
        exact,
        named,
        prefixed,
        offline,
        seen,
    } = Matches::collect(listings, query);
    for mut candidates in [exact, named, prefixed] {
        if candidates.len() > 1 {
            bail!(
                "'{query}' is ambiguous: it matches {}; use a longer id prefix or --host",
                describe_candidates(&candidates)
            );
        }
        if let Some(found) = candidates.pop() {
            return Ok(found);
        }
    }
    Err(no_match(query, host, &offline, seen))
}

fn describe_candidates(candidates: &[Found]) -> String {
    let list: Vec<String> = candidates
        .iter()
        .map(|f| {
            format!(
                "{} on {}{}",
                f.session.id,
                f.target.name,
                crate::output::label(&f.session)
            )
        })
        .collect();
    list.join(", ")
}

/// Why nothing matched: the host asked for could not be listed, or no session matches on
/// the hosts that answered (naming those that did not).
fn no_match(
    query: &str,
    host: Option<&str>,
    offline: &[(String, ClientError)],
    mut seen: Vec<String>,
) -> anyhow::Error {
    let unreachable: Vec<String> = offline
        .iter()
        // No local node at all is no news (the port is free, see `Prober::probe`); a local
        // node that did not answer or refused us is.
        .filter(|(name, e)| {
            host.is_some()
                || name != LOCAL_HOST
                || !matches!(e, ClientError::Offline { timeout, .. } if timeout.is_zero())
        })
        .map(|(name, e)| format!("{name}: {e}"))
        .collect();
    if let (Some(name), Some((_, e))) = (host, offline.first()) {
        return anyhow!("cannot look up '{query}' on {name}: {e}");
    }
    if !unreachable.is_empty() {
        return anyhow!(
            "no session matches '{query}' on the reachable hosts; unreachable: {}",
            unreachable.join("; ")
        );
    }
    if seen.is_empty() {
        return anyhow!("no session matches '{query}': there are no sessions; create one with 'cmdop session create HOST'");
    }
    seen.truncate(10);
    anyhow!(
        "no session matches '{query}' (sessions: {}); list them with 'cmdop session list'",
        seen.join(", ")
    )
}
