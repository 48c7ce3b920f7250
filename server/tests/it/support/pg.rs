//! PostgreSQL for the integration tests: a fresh schema per test on the
//! server named by `DOORCODE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! When it is not reachable: under CI (`CI` set, not `false`/`0`) the test
//! FAILS; elsewhere the test prints a loud `SKIPPED` banner to stderr and
//! returns, and `scripts/test.sh` repeats that the PostgreSQL suite did not
//! run. A skip is never reported as the suite passing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
use tokio_postgres::NoTls;

pub fn base_url() -> String {
    std::env::var("DOORCODE_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn in_ci() -> bool {
    matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "false" && v != "0")
}

/// One test's own schema; `url` selects it for `doorcode serve --database`.
pub struct PgSchema {
    pub name: String,
    pub url: String,
    pub client: tokio_postgres::Client,
}

pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let fut = tokio_postgres::connect(url, NoTls);
    let (client, conn) = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn with_param(url: &str, param: &str) -> String {
    if url.contains('?') {
        format!("{url}&{param}")
    } else {
        format!("{url}?{param}")
    }
}

/// A PostgreSQL test that cannot run: under CI it panics (`ci_says` what CI
/// must provide); elsewhere a loud `SKIPPED` banner (`fix` says how to run
/// it) and the caller returns.
pub fn skip_or_fail(msg: &str, ci_says: &str, fix: &str) {
    if in_ci() {
        panic!("SKIPPED: {msg}. {ci_says}.");
    }
    let bar = "!".repeat(78);
    // Straight to the process's stderr: the test harness captures
    // eprintln! of passing tests, and this must be seen.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED: {msg}\n!!! {fix}\n{bar}\n"
    );
}

/// PostgreSQL did not answer (`err`): `what` did NOT run; see `skip_or_fail`.
pub fn unreachable(what: &str, err: &str) {
    skip_or_fail(
        &format!(
            "PostgreSQL not reachable at DOORCODE_TEST_PG={} ({err}); {what} did NOT run",
            base_url()
        ),
        "CI must run the PostgreSQL suite: .ci/run starts PostgreSQL",
        "start it (scripts/postgres-up.sh) or set DOORCODE_TEST_PG",
    );
}

/// A fresh, empty schema, or None after a loud SKIPPED banner when
/// PostgreSQL is not reachable outside CI. Under CI it panics instead.
pub async fn fresh_schema(test: &str) -> Option<PgSchema> {
    let base = base_url();
    let client = match connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            unreachable(&format!("the PostgreSQL test `{test}`"), &e);
            return None;
        }
    };
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let url = with_param(&base, &format!("schema={name}"));
    Some(PgSchema { name, url, client })
}

impl PgSchema {
    /// The storage URL with extra doorcode parameters (e.g. `pool_size=4`).
    pub fn url_with(&self, param: &str) -> String {
        with_param(&self.url, param)
    }

    /// A count in this schema.
    pub async fn count(&self, sql_from_where: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {}.{}", self.name, sql_from_where);
        self.client.query_one(&sql, &[]).await.unwrap().get(0)
    }

    /// Drop the schema (left behind only when a test failed before this).
    pub async fn drop_schema(self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}
