//! Heap used by a [`Screen`], measured with a counting global allocator.
//!
//! Measured (avt 0.19, x86_64, rustc 1.95): an 80x24 screen holds 65,504
//! bytes of heap when new and 67,872 bytes after 20 whole sessions, 100 KB
//! title strings and 4 MiB of random bytes: two grids of 80x24 cells (the
//! primary and alternate screens) plus line and parser bookkeeping (avt
//! caps an OSC string at 1 KiB). No scrollback is kept, so the figure
//! depends on the size only and stays under 80 KB for 80x24 whatever is
//! printed. The largest accepted size (MAX_COLS x MAX_ROWS) is bounded the same way.
//!
//! This file holds a single test so that no other test allocates while it
//! measures.

mod common;

use cmdop_screen::{Screen, MAX_COLS, MAX_ROWS};
use common::{session_stream, Rng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes held by the screen `make` returns (including its own box).
fn held_by(make: impl FnOnce() -> Box<Screen>) -> (Box<Screen>, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let screen = make();
    let after = LIVE.load(Ordering::Relaxed);
    (screen, after.saturating_sub(before))
}

#[test]
fn memory_is_bounded_by_size() {
    const LIMIT_80X24: usize = 80 * 1024;

    let (mut screen, fresh) = held_by(|| Box::new(Screen::new(80, 24)));
    eprintln!("80x24 fresh: {fresh} bytes");
    assert!(
        fresh <= LIMIT_80X24,
        "fresh 80x24 screen holds {fresh} bytes"
    );

    let stream = session_stream(80, 24, 9);
    let mut rng = Rng::new(9);
    let garbage = rng.bytes(4 << 20);
    let long_osc = [b"\x1b]0;".as_slice(), &[b'x'; 100_000], b"\x07"].concat();
    let before = LIVE.load(Ordering::Relaxed);

    for _ in 0..20 {
        screen.feed(&stream);
        screen.feed(&long_osc[..long_osc.len() - 1]);
        let used = LIVE.load(Ordering::Relaxed).saturating_sub(before) + fresh;
        assert!(used <= LIMIT_80X24, "80x24 screen grew to {used} bytes");
        screen.feed(b"\x07");
    }

    screen.feed(&garbage);
    let after_garbage = LIVE.load(Ordering::Relaxed).saturating_sub(before) + fresh;
    eprintln!("80x24 after session and garbage: {after_garbage} bytes");
    assert!(after_garbage <= LIMIT_80X24);
    drop(screen);

    // The largest accepted size bounds what one session can cost.
    let (_big, largest) = held_by(|| Box::new(Screen::new(MAX_COLS, MAX_ROWS)));
    eprintln!("{MAX_COLS}x{MAX_ROWS}: {largest} bytes");
    assert!(largest <= 2 * 16 * usize::from(MAX_COLS) * usize::from(MAX_ROWS) + (1 << 20));
}
