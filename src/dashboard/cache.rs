//! The dashboard's numbers per view, kept a few seconds, with their rendered part of the page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::numbers::Numbers;
use crate::domain::ids::MemberId;

/// How stale the dashboard's numbers may be. Counting a day of audit rows is the most
/// expensive thing a page view does; every tab polls it, and the numbers are a summary.
const NUMBERS_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// A recount that has not come back in this long was abandoned (its request went away):
/// the next view counts again.
const RECOUNT_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

struct Entry {
    at: Instant,
    numbers: Arc<Numbers>,
    /// A view is recounting these stale numbers; the others show them meanwhile.
    recounting_since: Option<Instant>,
    /// The numbers' part of the page, rendered once (for a view without, with the
    /// deactivate links): the chart and tables are most of the page's template work.
    rendered: [Option<Arc<str>>; 2],
}

/// What a view does about its numbers.
pub enum Lookup {
    /// Fresh, or stale while another view recounts them; with their part of the page when
    /// a view rendered it already.
    Show(Arc<Numbers>, Option<Arc<str>>),
    /// This view counts (and puts the result).
    Count,
}

/// The dashboard's numbers per view (`None`: the team's; `Some(id)`: one member's), shared by
/// every worker of one application. When they go stale, one view recounts while the others
/// keep showing the stale ones, so many open dashboards never count all at once.
#[derive(Default)]
pub struct DashboardCache {
    entries: Mutex<HashMap<Option<MemberId>, Entry>>,
}

impl DashboardCache {
    pub fn lookup(&self, key: Option<MemberId>, can_deactivate: bool) -> Lookup {
        let Ok(mut entries) = self.entries.lock() else {
            return Lookup::Count;
        };
        let Some(entry) = entries.get_mut(&key) else {
            return Lookup::Count;
        };
        let show = |entry: &Entry| {
            Lookup::Show(
                Arc::clone(&entry.numbers),
                entry.rendered[usize::from(can_deactivate)].clone(),
            )
        };
        if entry.at.elapsed() < NUMBERS_FRESH_FOR {
            return show(entry);
        }
        match entry.recounting_since {
            Some(since) if since.elapsed() < RECOUNT_ABANDONED_AFTER => show(entry),
            _ => {
                entry.recounting_since = Some(Instant::now());
                Lookup::Count
            }
        }
    }

    pub fn put(&self, key: Option<MemberId>, numbers: Arc<Numbers>) {
        if let Ok(mut entries) = self.entries.lock() {
            // At most one entry per member and one for the team; long-stale ones go on
            // each write.
            entries.retain(|_, entry| entry.at.elapsed() < NUMBERS_FRESH_FOR * 12);
            entries.insert(
                key,
                Entry {
                    at: Instant::now(),
                    numbers,
                    recounting_since: None,
                    rendered: [None, None],
                },
            );
        }
    }

    /// Keeps the rendered part for these numbers (not for newer ones put meanwhile).
    pub fn keep_rendered(
        &self,
        key: Option<MemberId>,
        numbers: &Arc<Numbers>,
        can_deactivate: bool,
        html: Arc<str>,
    ) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(&key) {
                if Arc::ptr_eq(&entry.numbers, numbers) {
                    entry.rendered[usize::from(can_deactivate)] = Some(html);
                }
            }
        }
    }

    /// A recount failed: the next view tries again.
    pub fn abandon_recount(&self, key: Option<MemberId>) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(&key) {
                entry.recounting_since = None;
            }
        }
    }

    /// Forgets every view's numbers: after a change of members (a deactivation above all),
    /// "access not used" must not name someone who no longer has access, even for a few
    /// seconds. Other instances' caches catch up within [`NUMBERS_FRESH_FOR`].
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn numbers(sign_ins: i64) -> Numbers {
        Numbers {
            sign_ins,
            failed: 0,
            sessions: 0,
            latest: Vec::new(),
            per_day: Vec::new(),
            unused: Vec::new(),
            counted_at: Utc::now(),
        }
    }

    fn shown(lookup: Lookup) -> Option<i64> {
        match lookup {
            Lookup::Show(numbers, _) => Some(numbers.sign_ins),
            Lookup::Count => None,
        }
    }

    #[test]
    fn stale_numbers_are_recounted_by_one_view_while_the_others_show_them() {
        let cache = DashboardCache::default();
        assert_eq!(shown(cache.lookup(None, true)), None, "nothing yet: count");
        cache.put(None, Arc::new(numbers(1)));
        assert_eq!(shown(cache.lookup(None, true)), Some(1));
        assert_eq!(
            shown(cache.lookup(Some(MemberId::new(7)), true)),
            None,
            "views are apart"
        );

        // Gone stale: the first view counts, every other one shows the stale numbers.
        let stale = Instant::now().checked_sub(NUMBERS_FRESH_FOR * 2).unwrap();
        cache.entries.lock().unwrap().get_mut(&None).unwrap().at = stale;
        assert_eq!(shown(cache.lookup(None, true)), None);
        for _ in 0..3 {
            assert_eq!(shown(cache.lookup(None, true)), Some(1));
        }
        // That count failed: the next view tries again.
        cache.abandon_recount(None);
        assert_eq!(shown(cache.lookup(None, true)), None);
        cache.put(None, Arc::new(numbers(2)));
        assert_eq!(shown(cache.lookup(None, true)), Some(2));
        cache.clear();
        assert_eq!(shown(cache.lookup(None, true)), None);
    }

    #[test]
    fn the_rendered_part_belongs_to_its_numbers_and_its_kind_of_view() {
        let rendered = |lookup: Lookup| match lookup {
            Lookup::Show(_, html) => html.map(|html| html.to_string()),
            Lookup::Count => None,
        };
        let cache = DashboardCache::default();
        let old = Arc::new(numbers(1));
        cache.put(None, Arc::clone(&old));
        cache.keep_rendered(None, &old, true, "admin view".into());
        assert_eq!(
            rendered(cache.lookup(None, true)).as_deref(),
            Some("admin view")
        );
        assert_eq!(
            rendered(cache.lookup(None, false)),
            None,
            "no links for auditors"
        );
        // Newer numbers arrived while a view rendered the old ones: not kept for them.
        let new = Arc::new(numbers(2));
        cache.put(None, Arc::clone(&new));
        cache.keep_rendered(None, &old, true, "stale".into());
        assert_eq!(rendered(cache.lookup(None, true)), None);
    }
}
