//! The last manifest envelope each handset pulled, kept in memory so a
//! repeated full `GET /v1/manifest` need not read its ~97 KB out of the
//! database again.
//!
//! Why it is safe: a build's body never changes under its id and revision
//! (a new build gets a new revision or a new id), and a cached body is
//! served only after the pull's one read has said that this very build is
//! still the device's current one ([`crate::storage::CurrentBuild::Held`]).
//! That read also authenticates the token, so a revocation, a new route
//! revision or an erase takes effect at once, on every node. The cache is
//! per node, bounded in bytes, and forgets the oldest entries first.

use crate::storage::BuildTag;
use bytes::Bytes;
use chrono::NaiveDate;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Bytes of envelopes a node keeps (a 400-parcel envelope is ~97 KB, a
/// 40-parcel one ~9 KB).
pub const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

type Key = (String, NaiveDate);

/// Envelopes by (device token hash, day), with the build each one is.
pub struct Envelopes {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each entry with the stamp of its last `put`.
    entries: HashMap<Key, (BuildTag, Bytes, u64)>,
    /// Keys in the order they were stored, oldest first, with the stamp of
    /// that `put`; a place whose stamp is no longer the entry's is stale.
    order: VecDeque<(Key, u64)>,
    next: u64,
    bytes: usize,
}

impl Envelopes {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::default(),
        }
    }

    /// The build this token last pulled for `date`, and its body.
    pub fn get(&self, token_hash: &str, date: NaiveDate) -> Option<(BuildTag, Bytes)> {
        let st = self.lock();
        st.entries
            .get(&(token_hash.to_string(), date))
            .map(|(tag, body, _)| (tag.clone(), body.clone()))
    }

    /// Keeps `body` as the build `tag` of this token and day; an envelope
    /// larger than the whole budget is not kept.
    pub fn put(&self, token_hash: &str, date: NaiveDate, tag: BuildTag, body: Bytes) {
        if body.len() > self.budget {
            return;
        }
        let key = (token_hash.to_string(), date);
        let mut st = self.lock();
        let st = &mut *st;
        st.next += 1;
        st.bytes += body.len();
        if let Some((_, old, _)) = st.entries.insert(key.clone(), (tag, body, st.next)) {
            st.bytes -= old.len();
        }
        st.order.push_back((key, st.next));
        while st.bytes > self.budget {
            let Some((old_key, stamp)) = st.order.pop_front() else {
                break;
            };
            if st
                .entries
                .get(&old_key)
                .is_some_and(|(_, _, s)| *s == stamp)
            {
                if let Some((_, old, _)) = st.entries.remove(&old_key) {
                    st.bytes -= old.len();
                }
            }
        }
        // Stale places in the queue never outnumber the live entries by much.
        if st.order.len() > 2 * st.entries.len() + 16 {
            let entries = &st.entries;
            st.order
                .retain(|(k, s)| entries.get(k).is_some_and(|(_, _, e)| e == s));
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change above leaves the state whole before it can panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tag(rev: u64) -> BuildTag {
        BuildTag {
            manifest_id: "m-1".into(),
            revision: rev,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 4).unwrap()
    }

    #[test]
    fn the_latest_build_of_a_token_and_day_is_kept() {
        let c = Envelopes::new(1000);
        c.put("t", day(), tag(1), Bytes::from_static(b"one"));
        c.put("t", day(), tag(2), Bytes::from_static(b"two!"));
        assert_eq!(
            c.get("t", day()),
            Some((tag(2), Bytes::from_static(b"two!")))
        );
        assert_eq!(c.bytes(), 4);
        assert_eq!(c.get("t", day().succ_opt().unwrap()), None);
        assert_eq!(c.get("u", day()), None);
    }

    #[test]
    fn the_budget_holds_and_the_oldest_go_first() {
        let c = Envelopes::new(100);
        for i in 0..50 {
            c.put(&format!("t{i}"), day(), tag(1), Bytes::from(vec![0u8; 30]));
            assert!(c.bytes() <= 100, "{} bytes after {i}", c.bytes());
        }
        assert_eq!(c.bytes(), 90);
        assert!(c.get("t46", day()).is_none());
        assert!(c.get("t47", day()).is_some() && c.get("t49", day()).is_some());
        // Storing one key again and again does not grow the queue.
        for _ in 0..1000 {
            c.put("t49", day(), tag(2), Bytes::from(vec![0u8; 30]));
        }
        assert!(c.lock().order.len() <= 2 * 3 + 16);
        assert_eq!(c.bytes(), 90);
    }

    #[test]
    fn an_envelope_over_the_whole_budget_is_not_kept() {
        let c = Envelopes::new(10);
        c.put("t", day(), tag(1), Bytes::from(vec![0u8; 11]));
        assert_eq!((c.get("t", day()), c.bytes()), (None, 0));
    }
}
