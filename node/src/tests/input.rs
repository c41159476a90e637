//! Keystrokes reach the program once: across a reconnect of the same keystroke stream, across a
//! takeover by another stream, and while the program reads no input at all.

use super::*;
use cmdop_proto::DetachReason;

/// A request to resume the interactive attachment of keystroke stream `stream`.
fn resume(session: &Session, stream: u64, takeover: bool) -> AttachRequest {
    AttachRequest {
        resume_from: Some(0),
        takeover,
        input_stream: stream,
        ..request(session, AttachMode::Interactive)
    }
}

#[tokio::test]
async fn a_reconnect_resending_applied_input_types_it_once() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    let a = peer(1);
    let mut first = node
        .attach(&a, request(&session, AttachMode::Interactive))
        .await;
    first.attached().await;
    first.type_at(0, b"abc").await;
    assert_eq!(first.acked(3).await, 3);

    // The same client, from a new address after a network change, resumes its stream.
    let moved = Peer {
        addr: SocketAddr::from(([198, 51, 100, 7], 50_000)),
        ..a
    };
    let mut second = node.attach(&moved, resume(&session, 1, false)).await;
    assert_eq!(
        first.last().await,
        AttachOutput::Detached(DetachReason::Replaced)
    );
    first.ended().await;
    assert_eq!(
        second.attached().await,
        Attached {
            offset: 0,
            input_seq: 3,
            input_reset: false,
        }
    );
    // It resends from 1 (its last acknowledgement was lost): only "de" is new.
    second.type_at(1, b"bcde").await;
    assert_eq!(second.acked(5).await, 5);
    second.type_at(0, b"abcde").await;
    second.type_at(5, b"f").await;
    assert_eq!(second.acked(6).await, 6);
    assert_eq!(within("input", program.wait_input(6)).await, b"abcdef");
    assert_eq!(session.lock().input.next_seq(), 6);
}

#[tokio::test]
async fn another_stream_is_told_to_renumber_and_nothing_is_applied_twice() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    let (a, b) = (peer(1), peer(2));
    let mut first = node.attach(&a, resume(&session, 7, false)).await;
    first.attached().await;
    first.type_at(0, b"abc").await;
    assert_eq!(first.acked(3).await, 3);

    let mut second = node.attach(&b, resume(&session, 9, true)).await;
    assert!(matches!(
        first.last().await,
        AttachOutput::Detached(DetachReason::TakenOver { .. })
    ));
    first.ended().await;
    assert_eq!(
        second.attached().await,
        Attached {
            offset: 0,
            input_seq: 3,
            input_reset: true,
        }
    );
    // Numbered from the node's counter, as told: applied.
    second.type_at(3, b"xy").await;
    assert_eq!(second.acked(5).await, 5);

    // The first client takes the session back: its stream is not the one that typed last, so
    // it renumbers its pending input from 5.
    let mut back = node.attach(&a, resume(&session, 7, true)).await;
    assert!(matches!(
        second.last().await,
        AttachOutput::Detached(DetachReason::TakenOver { .. })
    ));
    second.ended().await;
    assert_eq!(
        back.attached().await,
        Attached {
            offset: 0,
            input_seq: 5,
            input_reset: true,
        }
    );
    back.type_at(5, b"q").await;
    assert_eq!(back.acked(6).await, 6);
    assert_eq!(within("input", program.wait_input(6)).await, b"abcxyq");
}

#[tokio::test]
async fn a_program_that_reads_no_input_does_not_pin_the_hold() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    program.refuse_input(true);
    let mut stuck = node
        .attach(&peer(1), request(&session, AttachMode::Interactive))
        .await;
    stuck.attached().await;
    let typed: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    for (seq, byte) in typed.iter().enumerate() {
        stuck.type_at(seq as u64, &[*byte]).await;
    }
    // The writer thread holds one chunk, blocked in the PTY; the queue holds 64 more.
    assert_eq!(stuck.acked(65).await, 65);

    let mut takeover = request(&session, AttachMode::Interactive);
    takeover.takeover = true;
    takeover.input_stream = 2;
    let mut other = node.attach(&peer(2), takeover).await;
    assert!(matches!(
        stuck.last().await,
        AttachOutput::Detached(DetachReason::TakenOver { .. })
    ));
    stuck.ended().await;
    assert_eq!(other.attached().await.input_seq, 65);

    // Once the program reads again it gets what was applied, then the new holder's input.
    program.refuse_input(false);
    other.type_at(65, b"Z").await;
    assert_eq!(other.acked(66).await, 66);
    let mut expected = typed[..65].to_vec();
    expected.push(b'Z');
    assert_eq!(within("input", program.wait_input(66)).await, expected);
}

#[tokio::test]
async fn output_keeps_flowing_while_a_program_reads_no_input() {
    let node = Harness::new(|_| {});
    let (session, program) = node.create().await;
    program.refuse_input(true);
    let mut client = node
        .attach(&peer(1), request(&session, AttachMode::Interactive))
        .await;
    let start = client.attached().await.offset;
    // A paste the program never reads: far more frames than the node queues for it.
    for seq in 0..300u64 {
        client.type_at(seq * 100, &[b'p'; 100]).await;
    }
    // Meanwhile it prints more than the first window: the client's reports of what it drew
    // must still reach the node, or output would stop at the window.
    let printed: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    program.print(&printed);
    let mut received = Vec::new();
    while received.len() < printed.len() {
        match client.frame().await {
            AttachOutput::Output { offset, data } => {
                assert_eq!(offset, start + received.len() as u64);
                received.extend_from_slice(&data);
            }
            AttachOutput::InputAck { .. } => {}
            other => panic!("expected output, got {other:?}"),
        }
    }
    assert_eq!(received, printed);
}

#[tokio::test]
async fn an_echo_ack_follows_the_echo_it_covers() {
    let node = Harness::new(|_| {});
    let (_session, program, mut client) = node.typing().await;
    client.type_at(0, b"ab").await;
    assert_eq!(within("input", program.wait_input(2)).await, b"ab");
    program.print(b"ab");
    let mut echoed = Vec::new();
    let acked = loop {
        match client.frame().await {
            AttachOutput::Output { data, .. } => echoed.extend_from_slice(&data),
            AttachOutput::InputAck { .. } => {}
            AttachOutput::EchoAck { seq } => break seq,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(acked, 2);
    assert!(
        echoed.ends_with(b"ab"),
        "the echo comes before its ack: {echoed:?}"
    );
}

#[tokio::test]
async fn keystrokes_keep_their_order_when_a_program_stops_and_starts_reading() {
    let node = Harness::new(|_| {});
    let (_session, program, mut client) = node.typing().await;
    let typed: Vec<u8> = (0..600u32).map(|i| b'a' + (i % 26) as u8).collect();
    // Applied at once while the program reads...
    for (seq, byte) in typed[..50].iter().enumerate() {
        client.type_at(seq as u64, &[*byte]).await;
    }
    assert_eq!(client.acked(50).await, 50);
    // ...queued behind the PTY's full queue while it does not (more than that queue holds)...
    program.refuse_input(true);
    for (seq, byte) in typed.iter().enumerate().take(400).skip(50) {
        client.type_at(seq as u64, &[*byte]).await;
    }
    // The writer holds one keystroke and the PTY's queue 64 more: the rest wait in the reader.
    assert_eq!(client.acked(115).await, 115);
    // ...and, once it reads again, never ahead of what waited.
    program.refuse_input(false);
    for (seq, byte) in typed.iter().enumerate().skip(400) {
        client.type_at(seq as u64, &[*byte]).await;
    }
    assert_eq!(client.acked(600).await, 600);
    assert_eq!(within("input", program.wait_input(600)).await, typed);
}
