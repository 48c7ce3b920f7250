//! Paging a day's disputes and signals: oldest first, by signal id, so a
//! cursor stays valid while new signals arrive.

use super::Signal;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// Where a page starts: after the signal with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor(pub i64);

impl Cursor {
    /// Cursors are the decimal id of the last signal of the previous page.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.parse::<i64>()
            .ok()
            .filter(|v| *v >= 0 && !s.starts_with('+') && s.len() <= 19)
            .map(Cursor)
            .ok_or_else(|| "cursor is not one this server gave".to_string())
    }

    pub fn encode(self) -> String {
        self.0.to_string()
    }
}

pub fn check_limit(limit: u32) -> Result<u32, String> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("limit must be 1..={MAX_LIMIT}"))
    }
}

/// The next page's cursor: None when this page was the last. A backend
/// reads `limit + 1` signals so the last page is known without another read.
pub fn next_cursor(page: &mut Vec<Signal>, limit: u32) -> Option<Cursor> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if page.len() <= limit {
        return None;
    }
    page.truncate(limit);
    page.last().map(|s| Cursor(s.id))
}

#[cfg(test)]
mod tests {
    use super::super::SignalKind;
    use super::super::testing::{at, day};
    use super::*;

    fn sig(id: i64) -> Signal {
        Signal {
            id,
            kind: SignalKind::SeqGap,
            parcel_id: None,
            device_id: None,
            confirmation_id: None,
            day: day(23),
            detail: String::new(),
            code_matched: None,
            at: at(23, 9, 0),
        }
    }

    #[test]
    fn a_full_page_has_a_cursor_and_the_last_page_none() {
        let mut page: Vec<Signal> = (1..=4).map(sig).collect();
        assert_eq!(next_cursor(&mut page, 3), Some(Cursor(3)));
        assert_eq!(page.len(), 3);
        let mut last: Vec<Signal> = (4..=5).map(sig).collect();
        assert_eq!(next_cursor(&mut last, 3), None);
        assert_eq!(last.len(), 2);
    }

    #[test]
    fn cursors_and_limits_are_checked() {
        assert_eq!(Cursor::parse("42"), Ok(Cursor(42)));
        assert_eq!(Cursor::parse(&Cursor(7).encode()), Ok(Cursor(7)));
        for bad in ["", "-1", "+1", "x", "99999999999999999999"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        assert!(check_limit(0).is_err() && check_limit(1001).is_err());
        assert_eq!(check_limit(100), Ok(100));
    }
}
