//! Who may attach: the holder, takeover, read-only viewers, and the limits.

use super::*;
use cmdop_proto::{DetachReason, Hello};

#[tokio::test]
async fn holder_viewers_and_takeover() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    let (a, b, c) = (peer(1), peer(2), peer(3));

    let mut holder = node
        .attach(&a, request(&session, AttachMode::Interactive))
        .await;
    assert_eq!(
        holder.attached().await,
        Attached {
            offset: 0,
            input_seq: 0,
            input_reset: true,
        }
    );

    // A second interactive client is refused and told who holds the session.
    let refusal = node
        .attach(&b, request(&session, AttachMode::Interactive))
        .await
        .refused(ErrorKind::BadRequest)
        .await;
    assert!(
        refusal.contains(&format!("held by client {} from {}", a.fingerprint, a.addr)),
        "{refusal}"
    );

    // A viewer is admitted, but neither types nor resizes.
    let mut viewer = node
        .attach(&c, request(&session, AttachMode::ReadOnly))
        .await;
    viewer.attached().await;
    viewer.type_at(0, b"viewer").await;
    viewer
        .send(&AttachInput::Resize(WinSize { rows: 5, cols: 5 }))
        .await;
    viewer.send(&AttachInput::Detach).await;
    viewer.ended().await;

    // Taking over kicks the holder, saying who took it from where.
    let mut takeover = request(&session, AttachMode::Interactive);
    takeover.takeover = true;
    takeover.input_stream = 2;
    takeover.size = WinSize {
        rows: 30,
        cols: 100,
    };
    let mut new_holder = node.attach(&b, takeover).await;
    assert_eq!(
        holder.last().await,
        AttachOutput::Detached(DetachReason::TakenOver {
            by: b.fingerprint.clone(),
            from: b.addr.to_string(),
        })
    );
    holder.ended().await;
    assert_eq!(new_holder.attached().await.input_seq, 0);

    // Only the new holder's keystrokes reach the program (the viewer's were dropped before).
    new_holder.type_at(0, b"x").await;
    assert_eq!(new_holder.acked(1).await, 1);
    assert_eq!(within("input", program.wait_input(1)).await, b"x");
    // Each holder's size was applied (bounced through a narrower one when unchanged, so that the
    // program redraws); the viewer's was not.
    assert_eq!(
        program.resizes(),
        vec![
            WinSize { rows: 24, cols: 79 },
            SIZE,
            WinSize {
                rows: 30,
                cols: 100
            }
        ]
    );
    assert_eq!(
        session.info().size,
        WinSize {
            rows: 30,
            cols: 100
        }
    );
}

#[tokio::test]
async fn max_attachments_counts_viewers_until_they_detach() {
    let node = Harness::new(|config| config.max_attachments = 2);
    let (session, _program) = node.create().await;
    let mut first = node
        .attach(&peer(1), request(&session, AttachMode::ReadOnly))
        .await;
    first.attached().await;
    let mut second = node
        .attach(&peer(2), request(&session, AttachMode::Interactive))
        .await;
    second.attached().await;
    assert!(session.info().attached);

    let refusal = node
        .attach(&peer(3), request(&session, AttachMode::ReadOnly))
        .await
        .refused(ErrorKind::Limit)
        .await;
    assert!(refusal.contains("already has 2 attachments"), "{refusal}");

    first.send(&AttachInput::Detach).await;
    first.ended().await;
    let mut third = node
        .attach(&peer(3), request(&session, AttachMode::ReadOnly))
        .await;
    third.attached().await;
    assert_eq!(session.lock().live_attachments, 2);

    // Destroying the session ends every attachment, saying why.
    node.registry.destroy(session.id).unwrap();
    for mut client in [second, third] {
        assert_eq!(
            client.last().await,
            AttachOutput::Detached(DetachReason::Destroyed)
        );
        client.ended().await;
    }
    assert_eq!(session.lock().live_attachments, 0);
}

#[tokio::test]
async fn max_sessions_and_unknown_sessions() {
    let node = Harness::new(|config| config.max_sessions = 1);
    let (session, program) = node.create().await;
    let create = new_session(None);
    let refusal = node.registry.create(create.clone(), &[]).await.unwrap_err();
    assert_eq!(refusal.kind, ErrorKind::Limit);
    assert!(
        refusal.message.contains("already runs 1 sessions"),
        "{refusal:?}"
    );
    assert_eq!(
        node.pty.programs().len(),
        1,
        "the refused session started a program"
    );

    // The session reports the program's working directory, through the OS seam.
    assert_eq!(session.info().cwd, program.spec().cwd);
    program.chdir("/var/empty/elsewhere");
    assert_eq!(session.info().cwd, "/var/empty/elsewhere");

    node.registry.destroy(session.id).unwrap();
    assert_eq!(program.hang_ups(), 1);
    assert_eq!(program.kills(), 0);
    let refusal = node
        .attach(&peer(1), request(&session, AttachMode::ReadOnly))
        .await
        .refused(ErrorKind::NotFound)
        .await;
    assert!(refusal.contains(&session.id.to_string()), "{refusal}");
    node.registry.create(create, &[]).await.unwrap();
    assert_eq!(node.pty.programs().len(), 2);
}

#[tokio::test]
async fn a_malformed_frame_ends_the_attachment_and_is_reported() {
    let node = Harness::new(|_| {});
    let (session, program, mut client) = node.typing().await;
    // A valid frame, but not an attach input.
    client
        .send(&Hello {
            version: 1,
            credential: None,
        })
        .await;
    client.ended().await;
    let malformed = node.malformed.lock().unwrap().clone();
    assert_eq!(malformed.len(), 1, "{malformed:?}");
    assert!(malformed[0].starts_with("malformed frame"), "{malformed:?}");
    assert_eq!(program.input(), b"");
    assert_eq!(session.lock().live_attachments, 0);
    assert!(session.lock().holder.is_none());
}

#[tokio::test]
async fn absurd_window_sizes_from_a_client_are_clamped() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    let tiny = AttachRequest {
        size: WinSize { rows: 0, cols: 0 },
        ..request(&session, AttachMode::Interactive)
    };
    let mut holder = node.attach(&peer(1), tiny).await;
    holder.attached().await;
    holder
        .send(&AttachInput::Resize(WinSize {
            rows: u16::MAX,
            cols: u16::MAX,
        }))
        .await;
    // Input after the resize: once it is acknowledged, the resize before it was applied.
    holder.type_at(0, b"x").await;
    assert_eq!(holder.acked(1).await, 1);
    let largest = WinSize {
        rows: cmdop_screen::MAX_ROWS,
        cols: cmdop_screen::MAX_COLS,
    };
    assert_eq!(
        program.resizes(),
        vec![WinSize { rows: 1, cols: 1 }, largest]
    );
    assert_eq!(session.screen_shot().size, largest);
}
