//! PostgreSQL helpers: a connection with a timeout, and schema URLs.

use anyhow::{Context, Result, anyhow};
use doorcode_server::storage::postgres::PgSettings;
use std::time::Duration;

/// One connection with the server's own URL parsing and TLS connector, so
/// `sslmode=`/`sslrootcert=` mean here what they mean to `doorcode serve`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let settings = PgSettings::parse(url).with_context(|| format!("PostgreSQL URL {url}"))?;
    let tls = settings.tls.connector()?;
    let (client, _driver) =
        tokio::time::timeout(Duration::from_secs(10), settings.connect_one(&tls))
            .await
            .map_err(|_| anyhow!("connecting to PostgreSQL at {url}: timed out"))?
            .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    Ok(client)
}

/// `url` with a doorcode `schema=` parameter added.
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={schema}")
}

/// Drop a schema the server created for a run.
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let c = connect(url).await?;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .with_context(|| format!("dropping schema {schema}"))?;
    Ok(())
}

/// Tables and indexes of a schema, in bytes.
pub async fn schema_bytes(url: &str, schema: &str) -> Result<u64> {
    let c = connect(url).await?;
    let row = c
        .query_one(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
            &[&schema],
        )
        .await
        .context("schema size")?;
    let bytes: i64 = row.try_get(0).context("schema size")?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}
