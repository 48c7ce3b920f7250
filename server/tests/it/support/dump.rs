//! Every row of every table, on either backend: what the data-lifecycle and
//! stored-token tests grep for what must (not) be kept.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::pg::PgSchema;
use std::path::Path;

/// Every row of every table of the SQLite database in `dir`, table by table
/// in name order: (table, the row's values).
pub fn sqlite_rows(dir: &Path) -> Vec<(String, Vec<rusqlite::types::Value>)> {
    let c = rusqlite::Connection::open(dir.join("doorcode.db")).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let values = (0..n).map(|i| r.get(i).unwrap()).collect();
            out.push((t.clone(), values));
        }
    }
    out
}

/// Every row of every table of the schema, table by table in name order:
/// (table, the row as JSON text, every column's value in it).
pub async fn pg_rows(pg: &PgSchema) -> Vec<(String, String)> {
    let tables = pg
        .client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 ORDER BY 1",
            &[&pg.name],
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let t: String = t.get(0);
        let sql = format!("SELECT row_to_json(x)::text FROM {}.{t} x", pg.name);
        for r in pg.client.query(&sql, &[]).await.unwrap() {
            out.push((t.clone(), r.get(0)));
        }
    }
    out
}

/// The one value a query answers (`SELECT COUNT(*) …` and the like).
pub fn one<T: rusqlite::types::FromSql>(c: &rusqlite::Connection, sql: &str) -> T {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}
