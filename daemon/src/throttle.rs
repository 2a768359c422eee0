//! Log lines that can repeat as fast as a loop spins (an accept that keeps failing, a client
//! that keeps misbehaving) are throttled: at most one line per interval for each call site,
//! which says how many were suppressed since the last one. Like `error.rs`, it imports nothing
//! of veer, so every layer can use it.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// One call site's throttle; a `static` next to the log line it guards.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// When the last line went out, and how many were suppressed since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle letting one line through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether a line may go out at `now`: `Some(n)`, `n` lines having been suppressed since
    /// the last one, or `None` (this one is suppressed and counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

/// Logs `$msg` at `$level` with the given fields, at most once per `$throttle`'s interval, with
/// `suppressed` = how many were not logged since the last line.
#[macro_export]
macro_rules! throttled {
    ($throttle:expr, $level:ident, $($field:tt)*) => {
        if let Some(suppressed) = $throttle.admit(::std::time::Instant::now()) {
            ::tracing::$level!(suppressed, $($field)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(t.admit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.admit(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(t.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.admit(t0 + Duration::from_secs(30)), Some(1));
    }
}
