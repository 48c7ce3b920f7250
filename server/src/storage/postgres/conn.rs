//! Connecting: the URL and its parameters, the pool, and the migrations
//! applied under an advisory lock.

use super::tls::{MakeRustlsConnect, TlsOptions};
use super::*;
use crate::storage::migrations::{self, Dialect};

/// Default connections per node.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// A parsed `postgres://` URL with doorcode's own parameters taken out.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub pg: tokio_postgres::Config,
    pub schema: Option<String>,
    pub pool_size: usize,
    /// `sslmode` and `sslrootcert`, read here rather than by tokio-postgres
    /// (it knows only disable/prefer/require, and no root file).
    pub tls: TlsOptions,
}

pub(super) fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgSettings {
    /// Parse `postgres://…[?schema=NAME][&pool_size=N][&sslmode=MODE][&sslrootcert=PATH]
    /// [&other tokio-postgres params]`.
    pub fn parse(url: &str) -> Result<Self> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut rest = Vec::new();
        let (mut sslmode, mut sslrootcert) = (None, None);
        for part in query.split('&').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((k @ ("sslmode" | "sslrootcert"), v)) => {
                    let slot = if k == "sslmode" {
                        &mut sslmode
                    } else {
                        &mut sslrootcert
                    };
                    if slot.replace(v).is_some() {
                        return Err(StorageError::Invalid(format!("{k}= given twice")));
                    }
                }
                Some((k @ ("sslcert" | "sslkey" | "sslpassword"), _)) => {
                    return Err(StorageError::Invalid(format!(
                        "{k}=: client certificates are not supported; \
                         sign in with a password (sslmode= and sslrootcert= secure the link)"
                    )));
                }
                Some(("schema", v)) => {
                    if !valid_schema(v) {
                        return Err(StorageError::Invalid(
                            "schema must be lowercase letters, digits and _ (at most 63)".into(),
                        ));
                    }
                    schema = Some(v.to_string());
                }
                Some(("pool_size", v)) => {
                    pool_size = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            StorageError::Invalid("pool_size must be 1..=1000".into())
                        })?;
                }
                _ => rest.push(part),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        // The parser's message may quote the URL (and a password): keep it out.
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StorageError::Invalid("not a valid postgres:// URL".into()))?;
        let tls = TlsOptions::from_params(sslmode, sslrootcert)?;
        tls.apply(&mut pg);
        if let Some(s) = &schema {
            let mut opts = pg.get_options().unwrap_or_default().to_string();
            if !opts.is_empty() {
                opts.push(' ');
            }
            opts.push_str(&format!("-c search_path={s}"));
            pg.options(opts);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(std::time::Duration::from_secs(10));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("doorcode");
        }
        Ok(Self {
            pg,
            schema,
            pool_size,
            tls,
        })
    }
}

impl PgSettings {
    /// One connection of its own (not from a pool), with the URL's TLS
    /// settings; the task drives it until the client is dropped.
    pub async fn connect_one(
        &self,
        tls: &MakeRustlsConnect,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        let (client, conn) = self
            .pg
            .connect(tls.clone())
            .await
            .map_err(|e| self.tls.explain(&e))?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "postgres connection");
            }
        });
        Ok((client, task))
    }
}

/// Apply pending migrations under a session advisory lock, on a connection
/// of its own (the lock goes with it whatever happens).
pub(super) async fn migrate(settings: &PgSettings, tls: &MakeRustlsConnect) -> Result<()> {
    let (mut client, task) = settings.connect_one(tls).await?;
    let out = migrate_on(&mut client, settings.schema.as_deref()).await;
    drop(client);
    let _ = task.await;
    out
}

pub(super) async fn migrate_on(
    client: &mut tokio_postgres::Client,
    schema: Option<&str>,
) -> Result<()> {
    let key = format!("doorcode-migrate:{}", schema.unwrap_or("(search_path)"));
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(|e| pg_be(&e))?;
    let out = async {
        if let Some(s) = schema {
            // Validated identifier; cannot carry SQL.
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await?;
        }
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS doorcode_migrations(
                   version BIGINT PRIMARY KEY,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await?;
        let row = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM doorcode_migrations",
                &[],
            )
            .await?;
        let version: i64 = row.try_get(0)?;
        Ok::<i64, tokio_postgres::Error>(version)
    }
    .await;
    let result = match out {
        Err(e) => Err(pg_be(&e)),
        Ok(version) => apply_from(client, version).await,
    };
    let _ = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
        .await;
    result
}

pub(super) async fn apply_from(client: &mut tokio_postgres::Client, version: i64) -> Result<()> {
    let known = i64::try_from(migrations::COUNT).map_err(be)?;
    if version > known {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this server ({known})"
        )));
    }
    for (i, sql) in migrations::all(Dialect::Postgres)
        .iter()
        .enumerate()
        .skip(usize::try_from(version).map_err(be)?)
    {
        let v = i64::try_from(i + 1).map_err(be)?;
        let tx = client.transaction().await.map_err(|e| pg_be(&e))?;
        tx.batch_execute(sql).await.map_err(|e| pg_be(&e))?;
        tx.execute("INSERT INTO doorcode_migrations(version) VALUES($1)", &[&v])
            .await
            .map_err(|e| pg_be(&e))?;
        tx.commit().await.map_err(|e| pg_be(&e))?;
        tracing::info!(version = v, "postgres migration applied");
    }
    Ok(())
}

impl PostgresStorage {
    /// One read-only statement, outside an explicit transaction (a statement
    /// is atomic and sees one snapshot): two round trips fewer than
    /// BEGIN … COMMIT on the hot read paths (tokens, manifests).
    pub(super) async fn read(&self, sql: &str, p: Params<'_>) -> TxResult<Vec<Row>> {
        let client = self.pool.get().await.map_err(be)?;
        let st = client.prepare_cached(sql).await?;
        Ok(client.query(&st, p).await?)
    }

    pub(super) async fn read_opt(&self, sql: &str, p: Params<'_>) -> TxResult<Option<Row>> {
        let client = self.pool.get().await.map_err(be)?;
        let st = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&st, p).await?)
    }

    /// Connect (parsing the URL), apply migrations, and build the pool.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_settings(PgSettings::parse(url)?).await
    }

    pub async fn with_settings(settings: PgSettings) -> Result<Self> {
        let tls = settings.tls.connector()?;
        migrate(&settings, &tls).await?;
        let mgr = Manager::from_config(
            settings.pg.clone(),
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(settings.pool_size)
            .build()
            .map_err(be)?;
        // Fail at startup, not at the first request, if the pool cannot connect.
        drop(pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => settings.tls.explain(&e),
            other => be(other),
        })?);
        Ok(Self {
            pool,
            route_saves: Default::default(),
        })
    }

    /// The number of migrations this server knows (the schema version it writes).
    pub fn migrations() -> i64 {
        i64::try_from(migrations::COUNT).unwrap_or(i64::MAX)
    }

    /// The applied schema version.
    pub async fn schema_version(&self) -> Result<i64> {
        transact!(self, RC, |tx| async {
            let r = query_one(
                &tx,
                "SELECT COALESCE(MAX(version), 0) FROM doorcode_migrations",
                &[],
            )
            .await?;
            get::<i64>(&r, 0)
        }
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let s = PgSettings::parse(
            "postgres://u@127.0.0.1:5432/db?schema=depot_1&pool_size=4&sslmode=disable",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.schema.as_deref(), Some("depot_1"));
        assert_eq!(s.pool_size, 4);
        assert_eq!(s.pg.get_options(), Some("-c search_path=depot_1"));
        assert_eq!(s.pg.get_dbname(), Some("db"));
        assert!(PgSettings::parse("postgres://u@h/db?schema=Bad;DROP").is_err());
        assert!(PgSettings::parse("postgres://u@h/db?pool_size=0").is_err());
        let e = PgSettings::parse("postgres://u:secret@h:notaport/db").err();
        assert!(matches!(e, Some(StorageError::Invalid(m)) if !m.contains("secret")));
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        use super::super::tls::{RootCert, SslMode};
        use tokio_postgres::config::SslMode as Wire;
        let s = PgSettings::parse(
            "postgres://u:pw@db.example:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&schema=d",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(s.tls.root_cert, Some(RootCert::File("/etc/ca.pem".into())));
        // tokio-postgres refuses a server without TLS; doorcode checks the rest.
        assert_eq!(s.pg.get_ssl_mode(), Wire::Require);
        let d = PgSettings::parse("postgres://u@h/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.tls.mode, d.pg.get_ssl_mode()),
            (SslMode::Prefer, Wire::Prefer)
        );
        let off = PgSettings::parse("postgres://u@h/db?sslmode=disable");
        assert!(off.is_ok_and(|s| s.pg.get_ssl_mode() == Wire::Disable));
        for (url, named) in [
            ("postgres://u:pw@h/db?sslmode=verify", "sslmode=\"verify\""),
            (
                "postgres://u:pw@h/db?sslmode=require&sslmode=disable",
                "sslmode= given twice",
            ),
            ("postgres://u:pw@h/db?sslcert=/c.pem", "sslcert="),
        ] {
            let e = PgSettings::parse(url).err().map(|e| e.to_string());
            assert!(
                e.as_ref()
                    .is_some_and(|m| m.contains(named) && !m.contains("pw")),
                "{url}: {e:?}"
            );
        }
    }
}
