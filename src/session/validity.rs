//! The one rule that says whether a session still holds at a given time. The guard (pages)
//! and the forward-auth check both ask it; they differ only in what they do with the answer
//! (a page audits an expired session and purges it, a check just says "not signed in").

use std::collections::HashMap;
use std::time::Duration;

use super::{keys, SessionData};
use crate::models::member::Member;
use crate::settings::Settings;

/// How stale "last seen" may get before it is written again: the idle timeout is enforced by
/// the session row's expiry, which only moves when the session is written. Once a minute at
/// most, and twice per idle period for (test-sized) idle timeouts shorter than two minutes.
const SEEN_REFRESH_SECS: i64 = 60;

/// What [`judge`] says of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Signed in, its member active, within its lifetime.
    Live,
    /// Live, and its "last seen" is stale enough to be written again (which moves its idle
    /// expiry).
    NeedsSeenRefresh,
    /// Past the absolute lifetime (`LATCHKEY_SESSION_MAX`).
    Expired,
    /// No member behind it, or a deactivated one. (A session idle for too long never gets
    /// here: its row has expired, and the store no longer loads it.)
    Gone,
}

impl Validity {
    pub fn is_live(self) -> bool {
        matches!(self, Validity::Live | Validity::NeedsSeenRefresh)
    }
}

/// The timeouts, as the settings give them.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub max: Duration,
}

impl Timeouts {
    pub fn of(settings: &Settings) -> Self {
        Self {
            idle: settings.session_idle,
            max: settings.session_max,
        }
    }

    fn max_secs(self) -> i64 {
        i64::try_from(self.max.as_secs()).unwrap_or(i64::MAX)
    }

    /// How many seconds "last seen" may lag before it is written again.
    pub fn seen_refresh_secs(self) -> i64 {
        let half_idle = i64::try_from(self.idle.as_secs() / 2).unwrap_or(i64::MAX);
        SEEN_REFRESH_SECS.min(half_idle.max(1))
    }
}

/// When a session signed in and was last written as seen (Unix seconds; 0 when unknown, which
/// is long expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    pub signed_in_at: i64,
    pub seen_at: i64,
}

impl SessionTimes {
    /// The request's own session.
    pub fn of(session: &SessionData) -> Self {
        Self {
            signed_in_at: session.signed_in_at(),
            seen_at: session.seen_at(),
        }
    }

    /// A stored state map (the session cache's copy of a row).
    pub fn in_state(state: &HashMap<String, String>) -> Self {
        let stamp = |key: &str| {
            state
                .get(key)
                .and_then(|raw| serde_json::from_str(raw).ok())
                .unwrap_or(0)
        };
        Self {
            signed_in_at: stamp(keys::SIGNED_IN_AT),
            seen_at: stamp(keys::SEEN_AT),
        }
    }
}

/// Whether a session signed in as `member` at `times` still holds at `now`.
pub fn judge(
    member: Option<&Member>,
    times: SessionTimes,
    now: i64,
    timeouts: Timeouts,
) -> Validity {
    let Some(member) = member else {
        return Validity::Gone;
    };
    if now.saturating_sub(times.signed_in_at) >= timeouts.max_secs() {
        return Validity::Expired;
    }
    if !member.active {
        return Validity::Gone;
    }
    if now.saturating_sub(times.seen_at) >= timeouts.seen_refresh_secs() {
        Validity::NeedsSeenRefresh
    } else {
        Validity::Live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(idle: u64, max: u64) -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(idle),
            max: Duration::from_secs(max),
        }
    }

    #[test]
    fn last_seen_is_written_at_most_once_a_minute() {
        assert_eq!(timeouts(30 * 60, 12 * 3600).seen_refresh_secs(), 60);
        assert_eq!(timeouts(10, 60).seen_refresh_secs(), 5);
        assert_eq!(timeouts(1, 60).seen_refresh_secs(), 1);
    }

    #[test]
    fn a_stored_state_gives_its_times() {
        let state = HashMap::from([
            (keys::SIGNED_IN_AT.to_string(), "100".to_string()),
            (keys::SEEN_AT.to_string(), "160".to_string()),
            ("theme".to_string(), "\"dark\"".to_string()),
        ]);
        assert_eq!(
            SessionTimes::in_state(&state),
            SessionTimes {
                signed_in_at: 100,
                seen_at: 160
            }
        );
        assert_eq!(
            SessionTimes::in_state(&HashMap::new()),
            SessionTimes {
                signed_in_at: 0,
                seen_at: 0
            },
            "a state without times is long expired"
        );
    }
}
