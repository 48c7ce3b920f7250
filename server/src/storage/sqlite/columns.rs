//! Column types: statuses as their label words, dates, fixed-width UTC
//! timestamps, JSON id lists.

use super::*;

pub(super) fn bad_text(what: &str, e: impl std::fmt::Display) -> FromSqlError {
    FromSqlError::Other(format!("{what}: {e}").into())
}

/// Statuses are stored as their [`Label`] words.
macro_rules! label_columns {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t as Label>::parse(s).ok_or_else(|| bad_text(stringify!($t), s))
            }
        }
    )*};
}

label_columns!(ParcelState, SignalKind, EventKind, NoticeState);

/// A date column: `YYYY-MM-DD`.
pub(super) struct Day(pub(super) NaiveDate);

impl ToSql for Day {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.format("%Y-%m-%d").to_string()))
    }
}

impl FromSql for Day {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Day)
            .map_err(|e| bad_text("date", e))
    }
}

/// A timestamp column: fixed-width UTC, so text order is time order.
pub(super) struct Ts(pub(super) DateTime<Utc>);

impl ToSql for Ts {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(
            self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        ))
    }
}

impl FromSql for Ts {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| Ts(t.with_timezone(&Utc)))
            .map_err(|e| bad_text("timestamp", e))
    }
}

pub(super) fn day_opt(v: Option<Day>) -> Option<NaiveDate> {
    v.map(|d| d.0)
}

/// A JSON array for `IN (SELECT value FROM json_each(?))`: one statement for
/// all of an upload's ids.
pub(super) fn json_list<T: serde::Serialize>(v: &[T]) -> Result<String> {
    serde_json::to_string(v).map_err(be)
}
