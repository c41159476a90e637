//! Creating a session never stalls the sessions already running: the spawn (a fork, and a
//! wait for the program's exec) happens off the node's runtime thread.

use super::*;

#[tokio::test]
async fn a_slow_spawn_holds_up_no_other_session() {
    let node = Harness::new(|_| {});
    let (session, program, mut client) = node.typing().await;
    node.pty.hold_spawns();
    let creating = node.create_apart(Some("second"));
    within("the spawn to start", node.pty.spawn_waiting()).await;

    // The first session takes keystrokes and shows output while the spawn waits.
    client.type_at(0, b"ls\r").await;
    assert_eq!(within("input", program.wait_input(3)).await, b"ls\r");
    program.print(b"file\r\n");
    printed(&session, 6).await;
    assert!(
        !creating.is_finished(),
        "the create finished before its spawn was let go"
    );

    node.pty.release_spawns();
    let second = within("the create", creating).await.unwrap().unwrap();
    assert_eq!(second.lock().name.as_deref(), Some("second"));
    assert_eq!(node.pty.programs().len(), 2);
}

#[tokio::test]
async fn a_create_under_way_when_the_registry_freezes_ends_refused_with_its_program_hung_up() {
    let node = Harness::new(|_| {});
    node.pty.hold_spawns();
    let creating = node.create_apart(None);
    within("the spawn to start", node.pty.spawn_waiting()).await;

    // An upgrade freezes the registry, then waits for the create.
    node.registry.freeze(true);
    let registry = node.registry.clone();
    let ended = tokio::spawn(async move { registry.creates_ended().await });
    tokio::task::yield_now().await;
    assert!(!ended.is_finished(), "the create has not ended yet");

    node.pty.release_spawns();
    within("the creates to end", ended).await.unwrap();
    assert!(
        creating.is_finished(),
        "creates_ended waited for the create"
    );
    let refused = creating.await.unwrap().unwrap_err();
    assert!(refused.message.contains("upgrading"), "{}", refused.message);
    assert!(node.registry.all().is_empty());
    let program = node.pty.last().unwrap();
    assert_eq!(
        program.hang_ups(),
        1,
        "the program started meanwhile is hung up"
    );
}

#[tokio::test]
async fn creates_under_way_hold_their_names_and_their_places_under_max_sessions() {
    let node = Harness::new(|config| config.max_sessions = 2);
    node.pty.hold_spawns();
    let web = node.create_apart(Some("web"));
    within("the spawn to start", node.pty.spawn_waiting()).await;

    // Refused before anything is spawned, without waiting for the creates under way.
    let at_once = Duration::ZERO;
    let same_name = node.registry.create(new_session(Some("web")), &[]);
    let taken = tokio::time::timeout(at_once, same_name).await;
    assert_eq!(
        taken.expect("refused at once").unwrap_err().kind,
        ErrorKind::NameTaken
    );
    let api = node.create_apart(Some("api"));
    within("the second spawn to start", node.pty.spawn_waiting()).await;
    let third = node.registry.create(new_session(None), &[]);
    let full = tokio::time::timeout(at_once, third).await;
    assert_eq!(
        full.expect("refused at once").unwrap_err().kind,
        ErrorKind::Limit
    );

    node.pty.release_spawns();
    within("the create", web).await.unwrap().unwrap();
    within("the create", api).await.unwrap().unwrap();
    assert_eq!(node.registry.all().len(), 2);
    assert_eq!(
        node.pty.programs().len(),
        2,
        "nothing spawned for the refused"
    );
}
