//! Random runs against the scripted node ([`FakeNode`]): keystrokes with
//! random gaps, each acknowledged after a random delay and echoed shortly
//! before or after its acknowledgement (within mosh's 50 ms echo timeout),
//! all in order. Every run must converge (once everything arrived and the
//! grace period passed, nothing is overlaid) and no overlay may ever show
//! a password character.

use super::fake_node::{from_password, Action, FakeNode, Next};
use crate::predict::{Overlay, PredictMode, Predictor};
use cmdop_screen::Screen;
use proptest::collection::vec;
use proptest::prelude::*;
use std::time::{Duration, Instant};

const ROWS: u16 = 6;

/// One scripted keystroke.
#[derive(Debug, Clone)]
struct Step {
    /// Milliseconds since the previous keystroke.
    gap: u64,
    action: Action,
    /// Milliseconds from sending to the echo acknowledgement arriving.
    delay: u64,
    /// Milliseconds from the acknowledgement to the output (negative:
    /// the output comes first).
    lag: i64,
}

/// Something arriving from the node.
#[derive(Debug)]
enum Event {
    Ack(u64),
    Output(Vec<u8>),
}

/// The client side of a run.
struct Client {
    predictor: Predictor,
    screen: Screen,
    now: Instant,
    /// Arrivals, in time order.
    inbox: Vec<(Instant, Event)>,
    /// Overlays that showed a cell.
    shown: usize,
}

impl Client {
    /// Delivers everything due by `until`, each at its own time.
    fn deliver(&mut self, until: Instant) {
        while let Some((at, _)) = self.inbox.first().filter(|(at, _)| *at <= until) {
            self.now = self.now.max(*at);
            match self.inbox.remove(0).1 {
                Event::Ack(seq) => self.predictor.echo_ack(seq, self.now),
                Event::Output(bytes) => self.screen.feed(&bytes),
            }
            self.predictor.output(&self.screen, self.now);
            self.check();
        }
        self.now = self.now.max(until);
        self.predictor.output(&self.screen, self.now);
        self.check();
    }

    /// The invariants that hold at any time.
    fn check(&mut self) {
        let overlay = self.predictor.overlay(&self.screen, self.now);
        let (cols, rows) = self.screen.size();
        for cell in &overlay.cells {
            assert!(!from_password(cell.ch), "password shown: {overlay:?}");
            assert!(cell.col < cols && cell.row < rows, "{overlay:?}");
        }
        if let Some((col, row)) = overlay.cursor {
            assert!(col < cols && row < rows, "{overlay:?}");
        }
        self.shown += usize::from(!overlay.cells.is_empty());
    }
}

/// Plays `steps`; returns how many checks saw a shown cell.
fn run(mode: PredictMode, rtt: u64, cols: u16, steps: &[Step]) -> usize {
    let ms = Duration::from_millis;
    let (mut node, greeting) = FakeNode::new(cols);
    let mut screen = Screen::new(cols, ROWS);
    screen.feed(&greeting);
    let mut predictor = Predictor::new(mode);
    predictor.set_rtt(ms(rtt));
    let start = Instant::now();
    let mut client = Client {
        predictor,
        screen,
        now: start,
        inbox: Vec::new(),
        shown: 0,
    };
    let (mut seq, mut last_ack, mut last_output) = (0, start, start);

    for step in steps {
        client.deliver(client.now + ms(step.gap));
        let (typed, output) = node.press(&step.action);
        let now = client.now;
        let Client {
            predictor, screen, ..
        } = &mut client;
        predictor.keystroke(&typed, seq, screen, now);
        client.check();
        seq += typed.len() as u64;

        last_ack = last_ack.max(now + ms(step.delay));
        let output_at = if step.lag < 0 {
            last_ack
                .checked_sub(ms(step.lag.unsigned_abs()))
                .unwrap_or(now)
        } else {
            last_ack + ms(step.lag.unsigned_abs())
        };
        last_output = last_output.max(output_at.max(now));
        client.inbox.push((last_ack, Event::Ack(seq)));
        client.inbox.push((last_output, Event::Output(output)));
        client.inbox.sort_by_key(|(at, _)| *at);
    }

    let everything = last_ack.max(last_output).max(client.now);
    client.deliver(everything);
    // Grace is at most 300 ms; a second later nothing may be left.
    client.deliver(everything + ms(1000));
    let overlay = client.predictor.overlay(&client.screen, client.now);
    assert_eq!(overlay, Overlay::default(), "password: {}", node.password());
    assert_eq!(client.predictor.deadline(), None);
    client.shown
}

fn action() -> impl Strategy<Value = Action> {
    let next = prop_oneof![
        Just(Next::Prompt),
        any::<u8>().prop_map(Next::Output),
        Just(Next::Clear),
        Just(Next::Password),
    ];
    prop_oneof![
        10 => vec(any::<u8>(), 1..=3).prop_map(Action::Chars),
        2 => any::<bool>().prop_map(Action::Backspace),
        1 => any::<bool>().prop_map(Action::Left),
        1 => any::<bool>().prop_map(Action::Right),
        3 => next.prop_map(Action::Enter),
        1 => Just(Action::CtrlC),
        1 => Just(Action::CtrlL),
        1 => Just(Action::Tab),
        1 => (100usize..140).prop_map(Action::Paste),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (0u64..400, action(), 5u64..600, -30i64..=40).prop_map(|(gap, action, delay, lag)| Step {
        gap,
        action,
        delay,
        lag,
    })
}

fn mode() -> impl Strategy<Value = PredictMode> {
    prop_oneof![Just(PredictMode::Adaptive), Just(PredictMode::Always)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn runs_converge_and_never_show_a_password(
        mode in mode(),
        rtt in 5u64..500,
        cols in 12u16..40,
        steps in vec(step(), 1..60),
    ) {
        run(mode, rtt, cols, &steps);
    }
}

/// The harness is not vacuous: with slow echoes, typed text is shown.
#[test]
fn scripted_typing_is_shown() {
    let typing = |action: Action| Step {
        gap: 120,
        action,
        delay: 300,
        lag: 10,
    };
    let steps: Vec<Step> = (0..12).map(|i| typing(Action::Chars(vec![i]))).collect();
    assert!(run(PredictMode::Adaptive, 300, 40, &steps) > 5);
}
