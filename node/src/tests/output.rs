//! Output: a reader that fell off the ringbuffer gets the screen, then live bytes; the exit is
//! reported only after the last output.

use super::*;
use cmdop_proto::{SessionState, SkipReason};

/// `len` bytes that differ from their neighbours.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads output frames until an end frame; returns the bytes (checking they are contiguous
/// from `offset`) and the end frame.
async fn output_until_end(client: &mut Client, mut offset: u64) -> (Vec<u8>, AttachOutput) {
    let mut bytes = Vec::new();
    loop {
        match client.frame().await {
            AttachOutput::Output { offset: at, data } => {
                assert_eq!(at, offset, "output is not contiguous");
                offset += data.len() as u64;
                bytes.extend_from_slice(&data);
            }
            AttachOutput::InputAck { .. } => {}
            end => return (bytes, end),
        }
    }
}

#[tokio::test]
async fn a_reader_behind_the_ringbuffer_gets_the_screen_then_live_bytes() {
    let node = Harness::new(|config| config.ringbuffer.0 = 64);
    let (session, program) = node.create().await;
    let printed_bytes = pattern(200);
    program.print(&printed_bytes);
    printed(&session, 200).await;
    assert_eq!(session.lock().ring.start(), 136);

    // Resuming from offset 10: 126 bytes are gone, so the screen stands for all 200 (the
    // client skips 190), and the screen is the session's own.
    let mut resumed = AttachRequest {
        resume_from: Some(10),
        ..request(&session, AttachMode::ReadOnly)
    };
    let mut client = node.attach(&peer(1), resumed.clone()).await;
    assert_eq!(client.attached().await.offset, 10);
    let AttachOutput::Screen(screen) = client.frame().await else {
        panic!("expected the screen in place of bytes the ringbuffer lost");
    };
    assert_eq!(
        (screen.offset, screen.skipped, screen.reason),
        (200, 190, SkipReason::Overwritten)
    );
    assert_eq!(screen.dump, session.screen_shot().dump);
    // New output follows at once, with no gap.
    program.print(b"more");
    assert_eq!(
        client.frame().await,
        AttachOutput::Output {
            offset: 200,
            data: b"more".to_vec(),
        }
    );

    // A cursor within what is held loses nothing; one past the end starts at the end.
    resumed.resume_from = Some(190);
    let mut within_ring = node.attach(&peer(2), resumed.clone()).await;
    assert_eq!(within_ring.attached().await.offset, 190);
    let mut expected = printed_bytes[190..].to_vec();
    expected.extend_from_slice(b"more");
    assert_eq!(
        within_ring.frame().await,
        AttachOutput::Output {
            offset: 190,
            data: expected,
        }
    );
    resumed.resume_from = Some(10_000);
    let mut ahead = node.attach(&peer(3), resumed).await;
    assert_eq!(ahead.attached().await.offset, 204);
}

#[tokio::test]
async fn exited_comes_after_the_last_output() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    let mut client = node
        .attach(&peer(1), request(&session, AttachMode::Interactive))
        .await;
    assert_eq!(client.attached().await.offset, 0);

    // The program prints more than one frame holds and exits; the exit is known (SIGCHLD)
    // while its last output is still in the PTY.
    program.hold_output();
    let last_words = pattern(150_000);
    program.print(&last_words);
    program.exit(3);
    node.registry.poll_exits();
    assert_eq!(session.info().state, SessionState::Exited { code: 3 });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    program.release_output();

    let (bytes, end) = output_until_end(&mut client, 0).await;
    assert_eq!(bytes.len(), last_words.len());
    assert!(bytes == last_words, "the output differs");
    assert_eq!(end, AttachOutput::Exited { code: 3 });
    client.ended().await;

    // A client attaching later sees the scrollback, then the exit.
    let mut late = node
        .attach(&peer(2), request(&session, AttachMode::ReadOnly))
        .await;
    let start = late.attached().await.offset;
    // 64 KiB back, moved on to the next line start (a newline is byte 10 of the pattern).
    let from = 150_000 - (64 << 10);
    let line_start = (from..).find(|i| i % 251 == 10).unwrap() + 1;
    assert_eq!(start, line_start);
    let (bytes, end) = output_until_end(&mut late, start).await;
    assert!(bytes == last_words[start as usize..], "the replay differs");
    assert_eq!(end, AttachOutput::Exited { code: 3 });
}

#[tokio::test]
async fn an_unwatched_screen_keeps_what_a_small_ringbuffer_drops() {
    let node = Harness::new(|config| config.ringbuffer.0 = 4096);
    let (session, program) = node.create().await;
    // A full-screen program takes the alternate screen, then prints more than the ring holds.
    program.print(b"\x1b[?1049h\x1b[1;1Hfull-screen");
    print_long_lines(&session, &program, 22, |n| {
        format!("\x1b[2;1Hline {n:04} {}", "x".repeat(500))
    })
    .await;
    assert!(
        session.lock().ring.start() > 22,
        "the mode switch left the ring"
    );
    let text = session.with_screen(|screen| {
        assert!(
            screen.alternate_screen(),
            "the screen forgot the alternate screen"
        );
        screen.rows_text()
    });
    assert!(text[0].starts_with("full-screen"), "{text:?}");
}

#[tokio::test]
async fn a_resize_while_the_screen_is_busy_returns_at_once_and_the_screen_follows_in_order() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    let before = format!("{}\r\n", "a".repeat(70));
    // Drawn at column 60 in 80 columns, at the last column in 40.
    let after = "\x1b[3;60Hafter".to_string();

    // Someone holds the screen (a long catch-up on the blocking pool) while output comes and
    // the client resizes: the resize must not wait for it.
    let held = ScreenHeld::new(&session);
    program.print(before.as_bytes());
    printed(&session, before.len() as u64).await;
    let narrow = WinSize { rows: 24, cols: 40 };
    held.resize(&session, narrow).await;
    assert_eq!(session.lock().size, narrow, "the size changed at once");
    assert_eq!(
        node.pty.last().unwrap().resizes().last(),
        Some(&narrow),
        "the PTY has the new size at once"
    );
    program.print(after.as_bytes());
    printed(&session, (before.len() + after.len()) as u64).await;
    held.release();

    // What was printed before the resize was drawn 80 wide, what came after 40 wide.
    let mut expected = cmdop_screen::Screen::new(SIZE.cols, SIZE.rows);
    expected.feed(before.as_bytes());
    expected.resize(narrow.cols, narrow.rows);
    expected.feed(after.as_bytes());
    let rows = session.with_screen(|screen| screen.rows_text());
    assert_eq!(rows, expected.rows_text());
    assert!(session.lock().resizes.is_empty());
}

#[tokio::test]
async fn a_resize_whose_place_in_the_output_left_the_ring_still_sizes_the_screen() {
    let node = Harness::new(|config| config.ringbuffer.0 = 4096);
    let (session, program) = node.create().await;
    let held = ScreenHeld::new(&session);
    program.print(b"start\r\n");
    printed(&session, 7).await;
    let narrow = WinSize { rows: 24, cols: 40 };
    held.resize(&session, narrow).await;
    print_long_lines(&session, &program, 7, |n| {
        format!("line {n:04} {}\r\n", "x".repeat(500))
    })
    .await;
    assert!(session.lock().ring.start() > 7, "the resize's place left");
    held.release();

    let (size, rows) = session.with_screen(|screen| (screen.size(), screen.rows_text()));
    assert_eq!(size, (narrow.cols, narrow.rows));
    assert!(
        rows.iter().any(|row| row.starts_with("line 0011")),
        "{rows:?}"
    );
    assert!(session.lock().resizes.is_empty());
}

/// Prints twelve lines of some 500 bytes (more than a 4 KiB ring holds), `line(n)` each, after
/// `end` bytes of output; waits until the ring took them in.
async fn print_long_lines(
    session: &Session,
    program: &FakeProgram,
    mut end: u64,
    line: impl Fn(usize) -> String,
) {
    for n in 0..12 {
        let line = line(n);
        program.print(line.as_bytes());
        end += line.len() as u64;
        printed(session, end).await;
    }
}

/// The session's screen held by another thread (as a long catch-up on the blocking pool holds
/// it) until released.
struct ScreenHeld {
    go: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl ScreenHeld {
    fn new(session: &Arc<Session>) -> ScreenHeld {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let session = session.clone();
            std::thread::spawn(move || {
                session.with_screen(|_| {
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                })
            })
        };
        held_rx.recv().unwrap();
        ScreenHeld { go, holder }
    }

    /// Resizes `session` meanwhile; fails (letting the screen go) if the resize waits for it.
    async fn resize(&self, session: &Arc<Session>, size: WinSize) {
        let resizing = {
            let session = session.clone();
            tokio::task::spawn_blocking(move || session.resize(size))
        };
        if tokio::time::timeout(PATIENCE, resizing).await.is_err() {
            self.go.send(()).unwrap();
            panic!("the resize waited for the screen");
        }
    }

    fn release(self) {
        self.go.send(()).unwrap();
        self.holder.join().unwrap();
    }
}
