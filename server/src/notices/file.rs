//! The file channel: one JSON file per message in a directory (the embedded
//! default, and what the demo and tests read).

use super::Message;
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
