//! What the terminal is told of the link's state, sans-IO: each change once, and a change the
//! terminal had no room for again at the next chance (every path tick, every attempt to
//! reconnect), so a terminal that stopped drawing never holds up the link.

use super::LinkState;

/// The link state the terminal was told, and whether it took it.
#[derive(Debug)]
pub(super) struct LinkStatus {
    state: LinkState,
    /// The terminal had no room for `state`.
    unsent: bool,
}

impl Default for LinkStatus {
    fn default() -> Self {
        LinkStatus {
            state: LinkState::Up,
            unsent: false,
        }
    }
}

impl LinkStatus {
    /// The link is in `state`: what to tell the terminal, or None when it already knows.
    pub(super) fn update(&mut self, state: LinkState) -> Option<LinkState> {
        if self.state == state && !self.unsent {
            return None;
        }
        self.state = state.clone();
        self.unsent = true;
        Some(state)
    }

    /// Whether the terminal took the state [`LinkStatus::update`] gave (false: no room).
    pub(super) fn delivered(&mut self, taken: bool) {
        self.unsent = !taken;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(secs: u64) -> LinkState {
        LinkState::Silent {
            secs,
            peer: std::net::SocketAddr::from(([192, 0, 2, 1], 4433)),
        }
    }

    #[test]
    fn each_change_is_told_once() {
        let mut status = LinkStatus::default();
        assert_eq!(status.update(LinkState::Up), None, "up is where it starts");
        assert_eq!(status.update(silent(3)), Some(silent(3)));
        status.delivered(true);
        assert_eq!(status.update(silent(3)), None);
        assert_eq!(status.update(silent(4)), Some(silent(4)));
        status.delivered(true);
        assert_eq!(status.update(LinkState::Up), Some(LinkState::Up));
        status.delivered(true);
        assert_eq!(status.update(LinkState::Up), None);
    }

    #[test]
    fn a_state_the_terminal_had_no_room_for_goes_again() {
        let mut status = LinkStatus::default();
        let reconnecting = LinkState::Reconnecting { secs: 1 };
        assert_eq!(
            status.update(reconnecting.clone()),
            Some(reconnecting.clone())
        );
        status.delivered(false);
        assert_eq!(
            status.update(reconnecting.clone()),
            Some(reconnecting.clone()),
            "unchanged, but never shown"
        );
        status.delivered(true);
        assert_eq!(status.update(reconnecting), None);
        // Back up before the terminal saw the outage: up is told too.
        assert_eq!(status.update(LinkState::Up), Some(LinkState::Up));
    }
}
