//! A session handed over by an upgrade in place: stopped with nothing lost, started again
//! where it stopped, and rebuilt from its written-down state around the same program.

use super::*;
use crate::os::{PtyHandover, PtySpawner};

/// The text rows a screen shot draws.
fn rows(shot: &crate::session::screen::ScreenShot) -> Vec<String> {
    let mut screen = cmdop_screen::Screen::new(shot.size.cols, shot.size.rows);
    screen.feed(&shot.dump);
    screen.rows_text()
}

#[tokio::test]
async fn a_halted_session_keeps_its_queued_keystrokes_and_unread_output() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    program.print(b"before\n");
    printed(&session, 7).await;
    // The program reads nothing: keystrokes wait in the queue.
    program.refuse_input(true);
    session.write_input(b"one ".to_vec()).await.unwrap();
    session.write_input(b"two".to_vec()).await.unwrap();

    let mut halted = session.halt_io().await;
    program.print(b"while halted\n");
    program.refuse_input(false);
    let state = session.export(&mut halted).unwrap();
    assert_eq!(state.pending_input, b"one two");
    assert_eq!(state.ring, b"before\n");
    assert!(program.input().is_empty(), "nothing is typed while halted");
    tokio::task::yield_now().await;
    assert_eq!(
        session.lock().ring.len(),
        0,
        "the ring moved into the state"
    );

    // Called off: everything carries on where it stopped.
    session.take_back(state);
    assert_eq!(
        session.lock().ring.end(),
        7,
        "nothing was read while halted"
    );
    session.resume_io(halted);
    assert_eq!(within("input", program.wait_input(7)).await, b"one two");
    printed(&session, 20).await;
    assert_eq!(
        session.lock().ring.contents().data,
        b"before\nwhile halted\n"
    );
}

#[tokio::test]
async fn an_exported_session_is_adopted_with_its_id_scrollback_screen_and_keystrokes() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    session.lock().name = Some("kept".into());
    program.print(b"\x1b[2J\x1b[Hhello\r\nworld\r\n");
    printed(&session, 21).await;
    let screen_before = session.screen_shot();
    program.refuse_input(true);
    session.write_input(b"typed".to_vec()).await.unwrap();
    let mut halted = session.halt_io().await;
    let state = session.export(&mut halted).unwrap();
    let handover = PtyHandover {
        fd: state.pty_fd,
        pid: state.pid.unwrap(),
    };

    assert_eq!(state.ring, b"\x1b[2J\x1b[Hhello\r\nworld\r\n");
    let spawned = node.pty.adopt(handover).unwrap();
    let adopted = Session::adopt(state.clone(), spawned);
    assert_eq!(adopted.id, session.id);
    assert_eq!(adopted.pid, session.pid);
    assert_eq!(adopted.lock().name.as_deref(), Some("kept"));
    assert_eq!(adopted.lock().ring.contents().data, state.ring);
    assert_eq!(adopted.lock().input, session.lock().input);
    let screen_after = adopted.screen_shot();
    assert_eq!(screen_after.offset, screen_before.offset);
    assert_eq!(rows(&screen_after), rows(&screen_before));
    assert!(rows(&screen_after)[1].starts_with("world"));
    // The keystrokes the old binary had queued reach the program, once; output goes on at the
    // same offsets.
    program.refuse_input(false);
    assert_eq!(within("input", program.wait_input(5)).await, b"typed");
    program.print(b"more\n");
    printed(&adopted, 26).await;
    assert_eq!(
        adopted.lock().ring.read_from(21, 100).unwrap().data,
        b"more\n"
    );
}

#[tokio::test]
async fn an_adopted_session_that_was_watched_starts_its_idle_time_afresh() {
    let node = Harness::new(|_| {});
    let (session, _program) = node.create().await;
    {
        let mut core = session.lock();
        core.live_attachments = 1;
        core.last_active_ms = 1;
    }
    let mut halted = session.halt_io().await;
    let state = session.export(&mut halted).unwrap();
    assert!(state.watched);
    let spawned = node
        .pty
        .adopt(PtyHandover {
            fd: state.pty_fd,
            pid: state.pid.unwrap(),
        })
        .unwrap();
    let before = crate::session::now_ms();
    let adopted = Session::adopt(state, spawned);
    let core = adopted.lock();
    assert_eq!(
        core.live_attachments, 0,
        "its clients reconnect by themselves"
    );
    assert!(
        core.last_active_ms >= before,
        "not expired for an idle time it never had"
    );
}

#[tokio::test]
async fn keystrokes_queued_after_the_halt_are_handed_down_too() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    program.refuse_input(true);
    // More batches than the queue holds: the last senders wait for room.
    let typists: Vec<_> = (0..100u8)
        .map(|n| {
            let session = session.clone();
            tokio::spawn(async move { session.write_input(vec![n]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let mut halted = session.halt_io().await;
    // The halt made room in the queue: the waiting senders get in now.
    for typist in typists {
        within("a typist", typist).await.unwrap().unwrap();
    }
    let state = session.export(&mut halted).unwrap();
    let mut typed = state.pending_input.clone();
    typed.sort_unstable();
    assert_eq!(typed, (0..100u8).collect::<Vec<_>>(), "every batch, once");
}
