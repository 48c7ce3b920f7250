//! The handset's disk fails under it: it fills up at the door, or it turns
//! read-only. Each time the courier gets a clear error, nothing already
//! recorded is lost, the database stays intact, and once the disk is back
//! the same parcel can be recorded.
//!
//! The disk is real: a small tmpfs mounted in a private mount namespace
//! (`unshare -rm`), so "full" is a real ENOSPC from the kernel and
//! "read-only" a real EROFS. Each scenario runs in a child copy of this test
//! binary inside the namespace (the `#[ignore]`d `scenario_in_namespace`);
//! the parent checks the child's verdict and the database it left behind.

use chrono::Utc;
use doorcode_core::Error;
use doorcode_core::handset::Handset;
use doorcode_core::secrets::{MemorySecretStore, SecretStore};
use doorcode_core::store::VerifyOutcome;
use doorcode_core::testkit::{FixedClock, ManifestSpec, TestDepot, parcel_id};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const DEPOT_SEEDS: ([u8; 32], [u8; 32]) = ([7; 32], [9; 32]);
/// Parcels recorded before the disk fails; all must survive.
const BEFORE: usize = 5;

fn run_scenario(name: &str) -> PathBuf {
    let out = tempfile::Builder::new()
        .prefix("doorcode-disk-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::create_dir_all(out.join("mnt")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let res = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(&exe)
        .args([
            "--exact",
            "disk::scenario_in_namespace",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DOORCODE_DISK_SCENARIO", name)
        .env("DOORCODE_DISK_DIR", &out)
        .output()
        .expect("unshare (util-linux) must be installed to give the test a real small disk");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "the {name} scenario failed in its namespace:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("scenario {name}: verified")),
        "the child did not run the {name} scenario:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    out
}

/// What the parent checks on the database the child copied out.
fn check_left_behind(out: &Path) {
    let db = rusqlite::Connection::open(out.join("after.db")).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let outcomes: i64 = db
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        outcomes,
        BEFORE as i64 + 1,
        "every outcome recorded before the failure, plus the one after"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn disk_full_at_the_door_is_a_clear_error_and_loses_nothing() {
    let out = run_scenario("full");
    check_left_behind(&out);
}

#[test]
fn read_only_disk_is_a_clear_error_and_loses_nothing() {
    let out = run_scenario("read-only");
    check_left_behind(&out);
}

fn sh(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

/// The child: runs inside the mount namespace, on a 1 MiB tmpfs.
#[test]
#[ignore = "run by the disk tests inside a private mount namespace"]
fn scenario_in_namespace() {
    let scenario = std::env::var("DOORCODE_DISK_SCENARIO").expect("run by the parent test");
    let out = PathBuf::from(std::env::var("DOORCODE_DISK_DIR").unwrap());
    let mnt = out.join("mnt");
    let mnt_s = mnt.to_str().unwrap();
    sh("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt_s]);

    let (code_key, signing) = DEPOT_SEEDS;
    let depot = TestDepot::from_seeds(code_key, signing);
    let db = mnt.join("h.db");
    // The device key lives in the platform's secret store, off this disk.
    let secrets: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::default());
    let reopen = || Handset::open_with_clock(&db, secrets.clone(), FixedClock::at(Utc::now()));
    let h = depot
        .enrolled_handset(&db, secrets.clone(), FixedClock::at(Utc::now()), "d-1")
        .unwrap();
    let spec = ManifestSpec::today("d-1", 10, 1);
    h.install_manifest(&depot.seal(&depot.manifest(&spec)))
        .unwrap();
    let code = |i: usize| {
        depot
            .code(&parcel_id(i, 0), spec.date, spec.attempt)
            .expose()
            .to_string()
    };
    for i in 0..BEFORE {
        let o = h.verify(&parcel_id(i, 0), &code(i)).unwrap();
        assert!(matches!(o, VerifyOutcome::Accepted { .. }), "{o:?}");
    }
    let before = h.status().unwrap();
    let next = parcel_id(BEFORE, 0);

    let h = match scenario.as_str() {
        "full" => {
            // Fill the disk to the last block while the app is running.
            let mut fill = std::fs::File::create(mnt.join("fill")).unwrap();
            let chunk = vec![0u8; 4096];
            let err = loop {
                if let Err(e) = fill.write_all(&chunk) {
                    break e;
                }
            };
            assert_eq!(err.raw_os_error(), Some(28), "expected ENOSPC: {err}");
            drop(fill);

            let e = h.verify(&next, &code(BEFORE)).unwrap_err();
            println!("disk full, right code: {e}");
            assert!(matches!(e, Error::DiskFull), "{e:?}");
            assert!(e.is_disk() && e.to_string().contains("storage is full"));
            let e = h.verify(&next, "000000").unwrap_err();
            println!("disk full, wrong code: {e}");
            assert!(matches!(e, Error::DiskFull), "{e:?}");
            let mut newer = spec.clone();
            newer.revision += 1;
            let e = h
                .install_manifest(&depot.seal(&depot.manifest(&newer)))
                .unwrap_err();
            println!("disk full, new manifest: {e}");
            assert!(matches!(e, Error::DiskFull), "{e:?}");
            // Reads still work and show exactly what was there.
            let during = h.status().unwrap();
            assert_eq!(format!("{during:?}"), format!("{before:?}"));
            std::fs::remove_file(mnt.join("fill")).unwrap();
            h
        }
        "read-only" => {
            drop(h);
            sh("mount", &["-o", "remount,ro", mnt_s]);
            let e = match reopen() {
                Err(e) => e,
                Ok(h) => h.verify(&next, &code(BEFORE)).unwrap_err(),
            };
            println!("read-only: {e}");
            assert!(matches!(e, Error::ReadOnly(_)), "{e:?}");
            assert!(e.is_disk() && e.to_string().contains("cannot be written"));
            sh("mount", &["-o", "remount,rw", mnt_s]);
            reopen().unwrap()
        }
        other => panic!("unknown scenario {other}"),
    };

    // The disk is back: the same parcel records, nothing before it is lost.
    let o = h.verify(&next, &code(BEFORE)).unwrap();
    assert!(matches!(o, VerifyOutcome::Accepted { .. }), "{o:?}");
    let after = h.status().unwrap();
    assert_eq!(after.outbox_pending, before.outbox_pending + 1);
    drop(h);
    std::fs::copy(&db, out.join("after.db")).unwrap();
    println!("scenario {scenario}: verified");
}
