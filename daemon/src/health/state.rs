//! Rise/fall: a backend changes state only after `fall` consecutive failures (up -> down) or
//! `rise` consecutive successes (down -> up). Pure.

/// One backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracker {
    up: bool,
    streak: u32,
}

impl Default for Tracker {
    /// A backend starts up: a fresh config serves at once, and a dead backend is taken out
    /// after `fall` checks.
    fn default() -> Self {
        Self {
            up: true,
            streak: 0,
        }
    }
}

impl Tracker {
    /// Whether the backend takes new flows.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check result; returns whether the state changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Tracker;

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut t = Tracker::default();
        assert!(t.is_up());
        assert!(!t.observe(false, 2, 3));
        assert!(!t.observe(false, 2, 3));
        assert!(!t.observe(true, 2, 3), "a success resets the streak");
        assert!(!t.observe(false, 2, 3));
        assert!(!t.observe(false, 2, 3));
        assert!(t.observe(false, 2, 3), "third failure in a row");
        assert!(!t.is_up());
        assert!(!t.observe(true, 2, 3));
        assert!(t.observe(true, 2, 3));
        assert!(t.is_up());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut t = Tracker::default();
        assert!(t.observe(false, 0, 0));
        assert!(t.observe(true, 0, 0));
    }
}
