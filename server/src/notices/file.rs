//! The file channel: one JSON file per message in a directory (the embedded
//! default, and what the demo and tests read).

use super::Message;
use std::collections::HashSet;
use std::path::Path;

/// A file name part that cannot leave the directory or surprise a shell.
pub(super) fn safe_file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Write `msg` as `<id>-<parcel>.json`, owner-only; a resend of the same
/// notice overwrites its file.
pub(super) async fn write(dir: &Path, id: i64, msg: &Message) -> Result<(), String> {
    let dir = dir.to_path_buf();
    let name = format!("{id:08}-{}.json", safe_file_part(&msg.parcel_id));
    let json = serde_json::to_vec_pretty(msg).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        crate::data_dir::create_private_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        doorcode_core::secrets::write_private_file(&dir.join(name), &json)
            .map_err(|e| format!("cannot write notice file: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The notice files (`file:` channel) about `parcels`: their JSON names the
/// parcel exactly (file names are only a sanitized prefix). Returns how many
/// were removed. Files that are not notices are left alone.
pub fn remove_notice_files(dir: &Path, parcels: &HashSet<String>) -> std::io::Result<u64> {
    if parcels.is_empty() {
        return Ok(0);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v.get("parcel_id")
            .and_then(|p| p.as_str())
            .is_some_and(|p| parcels.contains(p))
        {
            std::fs::remove_file(&path)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notice_files_go_by_the_parcel_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
        // P.1 and P_1 share a sanitized file name; only the JSON tells them apart.
        w("00000001-P_1.json", r#"{"parcel_id":"P.1","to":"a@x"}"#);
        w("00000002-P_1.json", r#"{"parcel_id":"P_1","to":"b@x"}"#);
        w("notes.txt", "P.1");
        w("broken.json", "{");
        let n = remove_notice_files(dir.path(), &HashSet::from(["P.1".to_string()])).unwrap();
        assert_eq!(n, 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["00000002-P_1.json", "broken.json", "notes.txt"]);
        let missing = dir.path().join("none");
        assert_eq!(
            remove_notice_files(&missing, &HashSet::from(["x".into()])).unwrap(),
            0
        );
    }
}
