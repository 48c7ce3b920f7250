//! The background sender that drains the outbox: claim a batch with a
//! lease, renew it while sending, mark each notice sent or due again; and
//! the customer's resend, which skips the outbox.

use super::{Notifier, Progress};
use crate::storage::{NoticeJob, ParcelContact, Storage, StorageError};
use chrono::{DateTime, NaiveDate, Utc};
use doorcode_core::codes::Code;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const MAX_TRIES: u32 = 8;
const BATCH: u32 = 50;
/// Parcels whose notices are sent side by side. One at a time, a batch
/// waited on each file write, SMTP dialogue or webhook round trip and each
/// commit in turn (386-440 notices/s to `file:`, docs/BENCHMARKS.md); a
/// gateway at 100 ms a message would have taken 10 hours for 360,000.
const SEND_CONCURRENCY: usize = 8;

/// The webhook-id and Message-ID of an outbox notice: its row id and a
/// digest of what it is about, so retries share it and another database's
/// notice with the same row id does not.
fn notice_msg_id(job: &NoticeJob) -> String {
    let about = format!("{}\n{}\n{}", job.parcel_id, job.delivery_date, job.attempt);
    let h = ring::digest::digest(&ring::digest::SHA256, about.as_bytes());
    let hex: String = h.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{}_{hex}", job.notice_id)
}

fn backoff(tries: u32) -> chrono::Duration {
    let secs = 2i64.saturating_pow(tries.min(10)).min(600);
    chrono::Duration::seconds(secs)
}

async fn handle(
    n: &Notifier,
    s: &dyn Storage,
    job: NoticeJob,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    let Some(p) = s.parcel_contact(&job.parcel_id).await? else {
        return s
            .notice_failed(job.notice_id, "parcel no longer exists", None)
            .await;
    };
    if p.delivery_date != Some(job.delivery_date)
        || p.attempt != job.attempt
        || p.status == crate::domain::ParcelState::Delivered
    {
        // Superseded by a newer attempt (which has its own notice) or done.
        return s.notice_failed(job.notice_id, "superseded", None).await;
    }
    let code = match doorcode_core::codes::derive_code(
        &n.code_key,
        &p.parcel_id,
        job.delivery_date,
        job.attempt,
        n.cfg.code_digits,
    ) {
        Ok(c) => c,
        Err(e) => return s.notice_failed(job.notice_id, &e.to_string(), None).await,
    };
    let mut progress = Progress::read(job.last_error.as_deref());
    let msg_id = notice_msg_id(&job);
    let tried = n
        .send_all(
            &p,
            job.delivery_date,
            &code,
            job.notice_id,
            &msg_id,
            &mut progress,
        )
        .await;
    forget_if_erased(n, s, &p.parcel_id).await;
    if tried == 0 {
        // Retrying cannot help; dispatch sees it in the parcel and the outbox metrics.
        n.metrics.notice("none", "failed");
        tracing::warn!(
            notice_id = job.notice_id,
            "recipient has no address for any channel"
        );
        return s
            .notice_failed(job.notice_id, "no address for any channel", None)
            .await;
    }
    if progress.errors.is_empty() {
        return s.notice_sent(job.notice_id, now).await;
    }
    let tries = job.tries + 1;
    let retry = (tries < MAX_TRIES).then(|| now + backoff(tries));
    tracing::warn!(
        notice_id = job.notice_id,
        tries,
        reached = progress.done.len(),
        failed = progress.errors.len(),
        "notice to be retried on the channels that failed"
    );
    s.notice_failed(job.notice_id, &progress.text(), retry)
        .await
}

/// After writing a notice: if the parcel was erased (or purged) since its
/// contact was read, remove the files just written about it. An erase
/// deletes the rows first and the files second, and a sender writes first
/// and checks here second, so whichever way the two interleave no notice
/// file outlives the erase.
async fn forget_if_erased(n: &Notifier, s: &dyn Storage, parcel_id: &str) {
    if n.file_dirs().next().is_none() {
        return;
    }
    match s.parcel_contact(parcel_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            n.remove_files_about(HashSet::from([parcel_id.to_string()]))
                .await;
        }
        // The notice went out; failing it here would send it again. Say so.
        Err(e) => tracing::error!(error = %e, "could not re-check a notified parcel for an erase"),
    }
}

/// Send the current notice again right now, outside the outbox (the
/// customer's "resend" on the tracking page, which reports failure to them
/// instead of retrying): on every channel the recipient has an address
/// for; fine if one of them took it. Errors are short and never contain
/// the code.
pub async fn send_now(
    n: &Notifier,
    s: &dyn Storage,
    p: &ParcelContact,
    date: NaiveDate,
    code: &Code,
) -> Result<(), String> {
    let mut progress = Progress::default();
    // Resends have no outbox row: files numbered after the clock, and a
    // webhook-id of their own (this is a new message, not a retry).
    let id = n.cfg.now().timestamp_millis();
    let msg_id = format!("resend_{}", uuid::Uuid::new_v4().simple());
    let tried = n.send_all(p, date, code, id, &msg_id, &mut progress).await;
    forget_if_erased(n, s, &p.parcel_id).await;
    if tried == 0 {
        return Err("no address for any channel".into());
    }
    if progress.done.is_empty() {
        return Err(progress.text());
    }
    Ok(())
}

/// Drain due notices once; returns how many were attempted.
///
/// The batch is claimed for `notice_lease` and, while this sender works
/// through it, the claims of the notices not yet done are renewed every
/// third of the lease, so another node never takes over a notice from a
/// sender that is alive, however slow the channel (two nodes and a gateway
/// answering in 6 s used to send 15 notices as 20 POSTs). A sender that
/// dies stops renewing, and its notices come back after one lease.
pub async fn drain_once(n: &Notifier, store: &dyn Storage) -> Result<usize, StorageError> {
    let lease = n.cfg.notice_lease;
    let lease_secs = i64::try_from(lease.as_secs()).unwrap_or(i64::MAX).max(1);
    let now = n.cfg.now();
    let jobs = store.claim_notices(now, lease_secs, BATCH).await?;
    let count = jobs.len();
    let open: std::sync::Mutex<Vec<i64>> =
        std::sync::Mutex::new(jobs.iter().map(|j| j.notice_id).collect());
    // One parcel's notices stay in claim order (a reissue's after the
    // first); different parcels' go side by side.
    let mut groups: Vec<Vec<NoticeJob>> = Vec::new();
    let mut group_of = std::collections::HashMap::new();
    for job in jobs {
        let g = *group_of.entry(job.parcel_id.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(job);
    }
    let open = &open;
    let work = async {
        let results: Vec<Result<(), StorageError>> = futures_util::stream::iter(groups)
            .map(|group| async move {
                for job in group {
                    let id = job.notice_id;
                    handle(n, store, job, n.cfg.now()).await?;
                    if let Ok(mut o) = open.lock() {
                        o.retain(|x| *x != id);
                    }
                }
                Ok(())
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), StorageError>>()
    };
    let renew = async {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let ids = open.lock().map(|o| o.clone()).unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            let until = n.cfg.now() + chrono::Duration::seconds(lease_secs);
            if let Err(e) = store.renew_notice_claims(&ids, until).await {
                tracing::warn!(error = %e, "could not renew the notice claims");
            }
        }
    };
    tokio::select! {
        r = work => r?,
        () = renew => {}
    }
    Ok(count)
}

/// The background sender: wakes on new notices (`wake`) or every poll
/// interval, and drains the outbox of `store` through `n`.
pub async fn run_sender(
    n: Notifier,
    store: Arc<dyn Storage>,
    wake: Arc<Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match drain_once(&n, store.as_ref()).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "notice outbox"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(n.cfg.notice_poll) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;
    use crate::keys::TrackKey;
    use crate::storage::sqlite::SqliteStorage;
    use doorcode_core::codes::CodeKey;

    fn contact(parcel_id: &str) -> ParcelContact {
        ParcelContact {
            parcel_id: parcel_id.into(),
            recipient_name: "Ada Lovelace".into(),
            email: Some("ada@example.com".into()),
            phone: None,
            requires_code: true,
            status: crate::domain::ParcelState::Scheduled,
            delivery_date: Some(NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()),
            attempt: 1,
            track_nonce: Some("n".into()),
        }
    }

    /// An erase that lands between the sender's read of the contact and its
    /// file write (here: the parcel is already gone from the store when the
    /// file is written) leaves no file; a parcel still stored keeps its file.
    #[tokio::test]
    async fn a_notice_written_after_its_parcel_was_erased_leaves_no_file() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("notices");
        let store = SqliteStorage::open(&dir.path().join("db.sqlite")).unwrap();
        let cfg = Arc::new(Config::new(dir.path(), "127.0.0.1:0".parse().unwrap()));
        let n = Notifier::new(
            vec![super::super::Channel::File(files.clone())],
            reqwest::Client::new(),
            "http://127.0.0.1".into(),
            Arc::new(CodeKey::from_bytes([7; 32])),
            Arc::new(TrackKey::from_bytes(&[8; 32])),
            cfg,
            Arc::default(),
        );
        let code = doorcode_core::codes::derive_code(
            &CodeKey::from_bytes([7; 32]),
            "P-ERASED",
            NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(),
            1,
            6,
        )
        .unwrap();
        let p = contact("P-ERASED");
        let date = p.delivery_date.unwrap();
        // The file was written (the send succeeded) and then taken back.
        send_now(&n, &store, &p, date, &code).await.unwrap();
        let left = std::fs::read_dir(&files).unwrap().count();
        assert_eq!(left, 0, "an erased parcel's notice file was left behind");
        // Only that parcel's files go. (A stored parcel keeps its notice:
        // every notice test over HTTP reads the files the sender wrote.)
        std::fs::write(
            files.join("00000001-OTHER.json"),
            r#"{"parcel_id":"OTHER"}"#,
        )
        .unwrap();
        send_now(&n, &store, &contact("P-ERASED"), date, &code)
            .await
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["00000001-OTHER.json"]);
    }
}
