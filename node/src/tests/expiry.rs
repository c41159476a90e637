//! Idle expiry through the registry, on a clock the test moves: unattached sessions go after the
//! TTL, attached ones (live or marked) stay, and a detach restarts the count.

use super::*;

#[tokio::test]
async fn idle_sessions_expire_when_the_clock_passes_their_deadline() {
    let ttl = Duration::from_secs(3600);
    let ttl_ms = 3_600_000;
    let node = Harness::new(|config| config.idle_ttl.0 = ttl);
    let (idle, idle_program) = node.create().await;
    let (watched, watched_program) = node.create().await;
    let (marked, marked_program) = node.create().await;
    let mut viewer = node
        .attach(&peer(1), request(&watched, AttachMode::ReadOnly))
        .await;
    viewer.attached().await;
    marked.lock().marked_attached = true;

    let idle_since = idle.info().last_active_ms;
    assert_eq!(
        node.registry.destroy_idle(ttl, idle_since + ttl_ms - 1),
        Vec::<uuid::Uuid>::new()
    );
    assert_eq!(idle_program.hang_ups(), 0);
    // Long after every deadline, only the unattached session goes.
    let much_later = idle_since + 10 * ttl_ms;
    assert_eq!(node.registry.destroy_idle(ttl, much_later), vec![idle.id]);
    assert_eq!(idle_program.hang_ups(), 1);
    assert_eq!(
        node.registry.get(idle.id).unwrap_err().kind,
        ErrorKind::NotFound
    );

    // The viewer leaves: the session's idle time counts from then.
    viewer.send(&AttachInput::Detach).await;
    viewer.ended().await;
    let detached_at = watched.info().last_active_ms;
    assert!(detached_at >= idle_since);
    assert_eq!(
        node.registry.destroy_idle(ttl, detached_at + ttl_ms - 1),
        Vec::<uuid::Uuid>::new()
    );
    assert_eq!(
        node.registry.destroy_idle(ttl, detached_at + ttl_ms),
        vec![watched.id]
    );
    assert_eq!(watched_program.hang_ups(), 1);
    assert_eq!(marked_program.hang_ups(), 0);
    assert_eq!(node.registry.list().len(), 1);
}
