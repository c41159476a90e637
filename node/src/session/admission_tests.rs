//! Unit tests of the pure admission decision.

use super::*;
use cmdop_proto::WinSize;

fn peer(key: u8, port: u16) -> Peer {
    Peer {
        fingerprint: Fingerprint::of_spki(&[key]),
        addr: SocketAddr::from(([10, 0, 0, key], port)),
    }
}

fn request(mode: AttachMode, takeover: bool, resume: bool, stream: u64) -> AttachRequest {
    AttachRequest {
        session: Uuid::nil(),
        mode,
        takeover,
        resume_from: resume.then_some(0),
        scrollback_bytes: 0,
        size: WinSize { rows: 24, cols: 80 },
        input_stream: stream,
    }
}

fn holder(peer: Peer, stream: u64) -> Holder {
    Holder {
        attachment: 1,
        peer,
        since_ms: 0,
        input_stream: stream,
        kick: None,
    }
}

fn seen(attachments: usize, holder: Option<&Holder>) -> Occupancy<'_> {
    Occupancy {
        session: Uuid::nil(),
        attachments,
        max_attachments: 2,
        holder,
    }
}

fn refused_kind(decision: Decision) -> ErrorKind {
    match decision {
        Decision::Refuse(e) => e.kind,
        other => panic!("admitted: {other:?}"),
    }
}

#[test]
fn the_first_interactive_client_holds_and_viewers_watch() {
    let a = peer(1, 5000);
    let interactive = request(AttachMode::Interactive, false, false, 7);
    assert_eq!(
        decide(seen(0, None), &a, &interactive),
        Decision::Admit {
            hold: true,
            kick: None
        }
    );
    let held = holder(a.clone(), 7);
    let viewer = request(AttachMode::ReadOnly, false, false, 0);
    assert_eq!(
        decide(seen(1, Some(&held)), &peer(2, 5000), &viewer),
        Decision::Admit {
            hold: false,
            kick: None
        }
    );
}

#[test]
fn a_held_session_refuses_a_second_holder_unless_it_takes_over() {
    let a = peer(1, 5000);
    let b = peer(2, 6000);
    let held = holder(a.clone(), 7);
    let Decision::Refuse(refusal) = decide(
        seen(1, Some(&held)),
        &b,
        &request(AttachMode::Interactive, false, false, 9),
    ) else {
        panic!("a second holder was admitted");
    };
    assert_eq!(refusal.kind, ErrorKind::BadRequest);
    assert!(
        refusal.message.contains(&format!(
            "held by client {} from 10.0.0.1:5000",
            a.fingerprint
        )),
        "{}",
        refusal.message
    );
    assert_eq!(
        decide(
            seen(1, Some(&held)),
            &b,
            &request(AttachMode::Interactive, true, false, 9)
        ),
        Decision::Admit {
            hold: true,
            kick: Some(DetachReason::TakenOver {
                by: b.fingerprint.clone(),
                from: "10.0.0.2:6000".into()
            })
        }
    );
}

#[test]
fn only_the_holder_resuming_its_own_stream_replaces_it_silently() {
    let a = peer(1, 5000);
    let held = holder(a.clone(), 7);
    let moved = Peer {
        addr: SocketAddr::from(([10, 0, 0, 1], 5001)),
        ..a.clone()
    };
    let resume = request(AttachMode::Interactive, false, true, 7);
    assert_eq!(
        decide(seen(1, Some(&held)), &moved, &resume),
        Decision::Admit {
            hold: true,
            kick: Some(DetachReason::Replaced)
        }
    );
    // Another stream of the same key, or a fresh attach, is a second holder.
    let other_stream = request(AttachMode::Interactive, false, true, 8);
    assert_eq!(
        refused_kind(decide(seen(1, Some(&held)), &moved, &other_stream)),
        ErrorKind::BadRequest
    );
    let fresh = request(AttachMode::Interactive, false, false, 7);
    assert_eq!(
        refused_kind(decide(seen(1, Some(&held)), &moved, &fresh)),
        ErrorKind::BadRequest
    );
    // Another key resuming "its" stream is not the holder.
    assert_eq!(
        refused_kind(decide(seen(1, Some(&held)), &peer(2, 5000), &resume)),
        ErrorKind::BadRequest
    );
    // The holder taking over explicitly is told it was taken over (by itself).
    let takeover = request(AttachMode::Interactive, true, true, 7);
    assert!(matches!(
        decide(seen(1, Some(&held)), &moved, &takeover),
        Decision::Admit {
            kick: Some(DetachReason::TakenOver { .. }),
            ..
        }
    ));
}

#[test]
fn max_attachments_counts_viewers_and_comes_first() {
    let a = peer(1, 5000);
    let viewer = request(AttachMode::ReadOnly, false, false, 0);
    let Decision::Refuse(refusal) = decide(seen(2, None), &a, &viewer) else {
        panic!("a third attachment was admitted");
    };
    assert_eq!(refusal.kind, ErrorKind::Limit);
    assert!(refusal.message.contains("already has 2 attachments"));
    let held = holder(peer(2, 5000), 1);
    let takeover = request(AttachMode::Interactive, true, false, 3);
    assert_eq!(
        refused_kind(decide(seen(2, Some(&held)), &a, &takeover)),
        ErrorKind::Limit
    );
}

#[test]
fn at_the_limit_the_holder_may_still_replace_its_own_stale_hold() {
    let a = peer(1, 5000);
    let held = holder(a.clone(), 7);
    let resume = request(AttachMode::Interactive, false, true, 7);
    // Two attachments (the limit): the holder's and a viewer's.
    assert_eq!(
        decide(seen(2, Some(&held)), &a, &resume),
        Decision::Admit {
            hold: true,
            kick: Some(DetachReason::Replaced)
        }
    );
    let other_stream = request(AttachMode::Interactive, false, true, 8);
    assert_eq!(
        refused_kind(decide(seen(2, Some(&held)), &a, &other_stream)),
        ErrorKind::Limit
    );
    let takeover = request(AttachMode::Interactive, true, false, 9);
    assert_eq!(
        refused_kind(decide(seen(2, Some(&held)), &peer(2, 6000), &takeover)),
        ErrorKind::Limit
    );
}
