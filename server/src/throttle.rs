//! `LogThrottle`: at most one log line a second from one source of warnings (refused
//! connections, refused peer messages), each saying how many it left out, so that a flood of
//! bad traffic is visible without flooding the log.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Least time between two lines.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct LogThrottle {
    /// When the last line was written, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// Calls `log` with the number of lines left out since the last one, unless a line was
    /// written less than a second ago (then only counts it).
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        log(*suppressed);
        *last = Some(now);
        *suppressed = 0;
    }
}
