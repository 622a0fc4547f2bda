//! What forward auth remembers in memory, so that checks write nothing per request: which
//! sessions have already opened which apps (`app_opened` is audited once; the table's primary
//! key decides between processes), and when a member was last refused an app (`app_denied` at
//! most once a minute). Neither is needed for a decision: the session, the member and the app
//! come from the session cache, which every logout, revocation, deactivation or app removal
//! empties on every instance (`session_cache`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a refusal of one member for one app is audited.
pub const DENIED_AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// Past this many entries a set is cleared rather than grown: forgetting costs one
/// insert-if-absent (or one audit row a minute early), never a wrong decision.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct ForwardAuthMemory {
    opened: Mutex<HashSet<(i64, i64)>>,
    denied: Mutex<HashMap<(i64, String), Instant>>,
}

impl ForwardAuthMemory {
    /// True when this process has already recorded that `session_id` opened `app_id`.
    pub fn has_opened(&self, session_id: i64, app_id: i64) -> bool {
        self.opened
            .lock()
            .map(|set| set.contains(&(session_id, app_id)))
            .unwrap_or(false)
    }

    pub fn remember_opened(&self, session_id: i64, app_id: i64) {
        if let Ok(mut set) = self.opened.lock() {
            if set.len() >= MAX_ENTRIES {
                set.clear();
            }
            set.insert((session_id, app_id));
        }
    }

    /// True when a refusal of `member_id` for `origin` should be audited now (and notes it).
    pub fn should_audit_denial(&self, member_id: i64, origin: &str) -> bool {
        let Ok(mut map) = self.denied.lock() else {
            return true;
        };
        let now = Instant::now();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, at| now.duration_since(*at) < DENIED_AUDIT_INTERVAL);
        }
        match map.get(&(member_id, origin.to_string())) {
            Some(at) if now.duration_since(*at) < DENIED_AUDIT_INTERVAL => false,
            _ => {
                map.insert((member_id, origin.to_string()), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_is_remembered_per_session_and_app() {
        let memory = ForwardAuthMemory::default();
        assert!(!memory.has_opened(1, 2));
        memory.remember_opened(1, 2);
        assert!(memory.has_opened(1, 2));
        assert!(!memory.has_opened(1, 3));
        assert!(!memory.has_opened(2, 2));
    }

    #[test]
    fn denials_are_audited_once_a_minute_per_member_and_app() {
        let memory = ForwardAuthMemory::default();
        assert!(memory.should_audit_denial(1, "https://wiki.example.org"));
        assert!(!memory.should_audit_denial(1, "https://wiki.example.org"));
        assert!(memory.should_audit_denial(2, "https://wiki.example.org"));
        assert!(memory.should_audit_denial(1, "https://blog.example.org"));
    }
}
