//! Two `doorcode serve` processes on one PostgreSQL: a node whose data-dir
//! secrets differ from the ones the database records refuses to start and
//! names the key; a node with an empty data dir refuses before making keys
//! of its own; after `doorcode rotate-key` on one node and the documented
//! copy (docs/OPERATIONS.md "Keys on several nodes"), both start again and
//! publish the same keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::{Serve, db_node, refused};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const SECRETS: [&str; 4] = ["code-key", "track-key", "admin-token.sha256", "signing-key"];

fn node(dir: &Path, db: &str, name: &str) -> Serve {
    db_node(dir, db, dir.parent().unwrap(), name, &[])
}

/// Copy the data-dir secrets (and `keys/`) from `from` to a fresh `to`.
fn copy_secrets(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for f in SECRETS {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    if let Ok(rd) = std::fs::read_dir(from.join("keys")) {
        for e in rd {
            let p = e.unwrap().path();
            std::fs::copy(&p, to.join("keys").join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn rotate(dir: &Path, db: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["rotate-key", "--database", db])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

async fn published(url: &str) -> Vec<String> {
    let v: Value = reqwest::get(format!("{url}/.well-known/doorcode-keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut kids: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("{}:{}", k["kid"], k["public_key"]))
        .collect();
    kids.sort();
    kids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_node_with_other_keys_refuses_and_rotation_keeps_the_fleet() {
    let Some(pg) = crate::support::pg::fresh_schema("pg_node_with_other_keys").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let db = pg.url_with("pool_size=2");
    let node_a = node(&a, &db, "a");
    assert!(node_a.admin.is_some(), "the first node makes the secrets");

    // An empty data dir: refused before it makes a code key of its own.
    std::fs::create_dir_all(&b).unwrap();
    let err = refused(&b, &db);
    assert!(
        err.contains("code key")
            && err.contains("missing")
            && err.contains("Copy the data-dir secrets"),
        "{err}"
    );
    assert!(!b.join("code-key").exists(), "no code key was made");
    println!("empty data dir: {err}");

    // Each secret different in turn: the error names that one.
    let other_hex = format!("{}\n", "ab".repeat(32));
    let cases: [(&str, String, &str); 4] = [
        ("code-key", other_hex.clone(), "code key (code-key)"),
        ("track-key", other_hex.clone(), "track key (track-key)"),
        (
            "admin-token.sha256",
            format!("{}\n", "cd".repeat(32)),
            "admin token (admin-token.sha256)",
        ),
        (
            "signing-key",
            format!("k-other\n{}\n", "ef".repeat(32)),
            "signing key set (signing-key, keys/*.pub)",
        ),
    ];
    for (file, text, named) in &cases {
        copy_secrets(&a, &b);
        std::fs::write(b.join(file), text).unwrap();
        let err = refused(&b, &db);
        assert!(err.contains(named), "{file}: {err}");
        println!("other {file}: {err}");
        assert!(
            err.contains("differs from the one this database records") && err.contains("copy"),
            "{file}: {err}"
        );
        for (other, _, name) in &cases {
            if other != file {
                assert!(!err.contains(name), "{file} names only its key: {err}");
            }
        }
    }

    // The same secrets: B joins and serves.
    copy_secrets(&a, &b);
    let node_b = node(&b, &db, "b");
    assert!(node_b.admin.is_none());
    assert_eq!(
        published(&node_a.url()).await,
        published(&node_b.url()).await
    );

    // Rotation on a fleet: rotate on A, restart B before copying (refused,
    // naming the signing key), copy, restart both.
    let out = rotate(&a, &db, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(node_b);
    let err = refused(&b, &db);
    assert!(err.contains("signing key set"), "{err}");
    copy_secrets(&a, &b);
    let node_b = node(&b, &db, "b2");
    drop(node_a);
    let node_a = node(&a, &db, "a2");
    let keys = published(&node_a.url()).await;
    assert_eq!(keys.len(), 2, "the retired key stays published: {keys:?}");
    assert_eq!(keys, published(&node_b.url()).await);

    // Retiring the old public key for good: delete it on every node, record.
    for d in [&a, &b] {
        for e in std::fs::read_dir(d.join("keys")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    let out = rotate(&a, &db, &["--record-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop((node_a, node_b));
    let node_a = node(&a, &db, "a3");
    let node_b = node(&b, &db, "b3");
    assert_eq!(published(&node_a.url()).await.len(), 1);
    assert_eq!(
        published(&node_a.url()).await,
        published(&node_b.url()).await
    );
    drop((node_a, node_b));
    pg.drop_schema().await;
}
