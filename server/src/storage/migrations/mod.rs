//! The schema migrations: one SQL file per version, written once for both
//! backends, so a table is defined in one place and the two schemas cannot
//! drift apart. A file names its column types by placeholder and each
//! backend renders it in its own dialect:
//!
//! | placeholder | SQLite | PostgreSQL |
//! |---|---|---|
//! | `{int}` | `INTEGER` | `BIGINT` |
//! | `{bool}` | `INTEGER` | `BOOLEAN` |
//! | `{false}` | `0` | `FALSE` |
//! | `{real}` | `REAL` | `DOUBLE PRECISION` |
//! | `{date}` | `TEXT` | `DATE` |
//! | `{timestamp}` | `TEXT` | `TIMESTAMPTZ` |
//! | `{serial}` | `INTEGER PRIMARY KEY` | `BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY` |
//!
//! A line that only one dialect runs starts with `-- @sqlite ` or
//! `-- @postgres `; the other drops it. A released migration never changes:
//! a test pins the text each backend runs.

/// The SQL dialect a migration is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The migration templates, in order; the schema version counts the applied ones.
const TEMPLATES: [&str; 5] = [
    include_str!("0001_init.sql"),
    include_str!("0002_seen_revoked_signal_days.sql"),
    include_str!("0003_lifecycle.sql"),
    include_str!("0004_shared_state.sql"),
    include_str!("0005_keys_track_hmac.sql"),
];

/// How many migrations this server knows (the schema version it writes).
pub const COUNT: usize = TEMPLATES.len();

/// Every migration in order, as `dialect` runs it.
pub fn all(dialect: Dialect) -> Vec<String> {
    TEMPLATES.iter().map(|t| render(t, dialect)).collect()
}

impl Dialect {
    /// This dialect's line marker, then the other's.
    fn markers(self) -> (&'static str, &'static str) {
        match self {
            Self::Sqlite => ("-- @sqlite ", "-- @postgres "),
            Self::Postgres => ("-- @postgres ", "-- @sqlite "),
        }
    }

    /// Placeholder and type, the longer types first where one contains another.
    fn types(self) -> [(&'static str, &'static str); 7] {
        match self {
            Self::Sqlite => [
                ("{serial}", "INTEGER PRIMARY KEY"),
                ("{int}", "INTEGER"),
                ("{bool}", "INTEGER"),
                ("{false}", "0"),
                ("{real}", "REAL"),
                ("{date}", "TEXT"),
                ("{timestamp}", "TEXT"),
            ],
            Self::Postgres => [
                (
                    "{serial}",
                    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                ),
                ("{int}", "BIGINT"),
                ("{bool}", "BOOLEAN"),
                ("{false}", "FALSE"),
                ("{real}", "DOUBLE PRECISION"),
                ("{date}", "DATE"),
                ("{timestamp}", "TIMESTAMPTZ"),
            ],
        }
    }
}

fn render(template: &str, dialect: Dialect) -> String {
    let (own, other) = dialect.markers();
    let mut sql = String::with_capacity(template.len());
    for line in template.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(own) {
            sql.push_str(rest);
        } else if !line.starts_with(other) {
            sql.push_str(line);
        }
    }
    dialect
        .types()
        .iter()
        .fold(sql, |sql, (placeholder, ty)| sql.replace(placeholder, ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(s: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The SHA-256 of each migration as released, taken from the per-backend
    /// files these templates replaced: databases out there ran exactly this.
    #[test]
    fn released_migrations_never_change() {
        let released = [
            (
                Dialect::Sqlite,
                "c87425a90e4668b64fb450a25f0bd6274dc6574d8ad254b680a259a8a3589a8c",
            ),
            (
                Dialect::Sqlite,
                "cae438c10b6dc711553cc6e234af66fea73577bbcfdfe7a37d6d598f585ddca7",
            ),
            (
                Dialect::Sqlite,
                "26fdff6446628030bd2f6163385926b6bc9922ebfebeb4897c2c50f84aa74ccf",
            ),
            (
                Dialect::Sqlite,
                "1cabb55004fd3afec44039009b985db57ffa5e9066fbed434c7487002f7d54cc",
            ),
            (
                Dialect::Sqlite,
                "2ee576a5905029ef35c979c52f5012520509c521664f0f31300159d7b505276a",
            ),
            (
                Dialect::Postgres,
                "25719dbd1af26b6d081cc43c07f2721630f16caa327cadafe2296660f9dd7c4a",
            ),
            (
                Dialect::Postgres,
                "ffe635a445ffa702910da571fe754fee15ccdb5f2ce7054a83e8c4625b6ec59f",
            ),
            (
                Dialect::Postgres,
                "4f13bf47d3856dc929b9d21dfe194f94c50fa49c15e696baab8737b028db437b",
            ),
            (
                Dialect::Postgres,
                "99d0a616225838a76c77c24b455aebaf9b3155848344b0e4065329b68c65bd95",
            ),
            (
                Dialect::Postgres,
                "a5ffc31916f02bce9a0bdab9a3d714a11920d02f6b155138f0618dbac208eb1e",
            ),
        ];
        for (i, (dialect, hash)) in released.iter().enumerate() {
            let sql = &all(*dialect)[i % COUNT];
            assert_eq!(
                &sha256(sql),
                hash,
                "migration {} for {dialect:?} changed",
                i % COUNT + 1
            );
        }
    }

    #[test]
    fn every_placeholder_and_marker_is_rendered() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for sql in all(dialect) {
                assert!(
                    !sql.contains("-- @"),
                    "{dialect:?}: a dialect marker is left"
                );
                for (placeholder, _) in Dialect::Sqlite.types() {
                    assert!(
                        !sql.contains(placeholder),
                        "{dialect:?}: {placeholder} is left"
                    );
                }
            }
        }
    }

    #[test]
    fn each_dialect_keeps_its_own_lines_only() {
        let t = "A {int};\n-- @sqlite B;\n-- @postgres C;\nD {bool} DEFAULT {false};\n";
        assert_eq!(
            render(t, Dialect::Sqlite),
            "A INTEGER;\nB;\nD INTEGER DEFAULT 0;\n"
        );
        assert_eq!(
            render(t, Dialect::Postgres),
            "A BIGINT;\nC;\nD BOOLEAN DEFAULT FALSE;\n"
        );
    }
}
