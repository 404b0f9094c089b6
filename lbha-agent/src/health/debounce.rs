//! keepalived's `rise`/`fall`: a check's result counts only once it repeats.

/// Debounced state of one tracked check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackState {
    up: bool,
    streak: u32,
}

impl TrackState {
    /// keepalived starts scripts as good unless told otherwise.
    pub const fn new(up: bool) -> Self {
        Self { up, streak: 0 }
    }

    pub const fn is_up(&self) -> bool {
        self.up
    }

    /// Records one result. A down check needs `rise` consecutive successes to
    /// count as up, an up one `fall` consecutive failures to count as down.
    /// Returns the new state when it changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= if ok { rise.max(1) } else { fall.max(1) } {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_debounce() {
        let mut t = TrackState::new(true);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), None, "a success resets the streak");
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), Some(false));
        assert!(!t.is_up());
        assert_eq!(t.record(true, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), Some(true));
    }

    #[test]
    fn fall_one_is_immediate() {
        let mut t = TrackState::new(true);
        assert_eq!(t.record(false, 1, 1), Some(false));
        assert_eq!(t.record(false, 1, 1), None);
    }
}
