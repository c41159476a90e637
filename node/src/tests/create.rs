//! Creating a session never stalls the sessions already running: the spawn (a fork, and a
//! wait for the program's exec) happens off the node's runtime thread.

use super::*;

#[tokio::test]
async fn a_slow_spawn_holds_up_no_other_session() {
    let node = Harness::new(|_| {});
    let (session, program, mut client) = node.typing().await;
    node.pty.hold_spawns();
    let registry = node.registry.clone();
    let creating = tokio::spawn(async move {
        let create = CreateSession {
            name: Some("second".into()),
            size: SIZE,
            term: None,
            cwd: None,
            env: Vec::new(),
        };
        registry.create(create, &[]).await
    });
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
