//! Handset hot paths, each beside its physical floor measured in the same run:
//! an offline verify with its durable write vs. a bare fsync of a small file
//! on the same disk; installing a 250-stop/400-parcel manifest; the tag.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::NaiveDate;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use doorcode_core::codes::{self, Code, CodeKey};
use doorcode_core::handset::SystemClock;
use doorcode_core::secrets::MemorySecretStore;
use doorcode_core::testkit::{ManifestSpec, TestDepot, parcel_id};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// An enrolled handset in a temp dir on the disk under test
/// (`DOORCODE_BENCH_DIR`, default: the current directory).
fn enrolled() -> (tempfile::TempDir, TestDepot, doorcode_core::Handset) {
    let dir =
        tempfile::tempdir_in(std::env::var("DOORCODE_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let depot = TestDepot::new();
    let h = depot
        .enrolled_handset(
            &dir.path().join("h.db"),
            Arc::new(MemorySecretStore::default()),
            Arc::new(SystemClock),
            "d-b",
        )
        .unwrap();
    (dir, depot, h)
}

fn durable(c: &mut Criterion) {
    let (dir, depot, h) = enrolled();
    let mut spec = ManifestSpec::today("d-b", 1000, 2);
    spec.max_attempts = 100;
    h.install_manifest(&depot.seal(&depot.manifest(&spec)))
        .unwrap();
    // Wrong tries on round-robin parcels: each one is a committed, fsynced write.
    let wrong: Vec<(String, String)> = (0..1000)
        .flat_map(|i| (0..2).map(move |j| parcel_id(i, j)))
        .map(|p| {
            let c = depot.code(&p, spec.date, 1);
            let w: String = c
                .expose()
                .chars()
                .map(|d| {
                    if d == '9' {
                        '0'
                    } else {
                        char::from(d as u8 + 1)
                    }
                })
                .collect();
            (p, w)
        })
        .collect();
    let mut g = c.benchmark_group("durable");
    g.sample_size(50)
        .measurement_time(std::time::Duration::from_secs(4));
    let mut i = 0usize;
    g.bench_function("verify_offline_wrong_try", |b| {
        b.iter(|| {
            let (p, w) = &wrong[i % wrong.len()];
            i += 1;
            // A wrong code matches a 12-bit tag once in 4096 tries and records
            // a delivery; later tries on that parcel are then refused, cheaply.
            match h.verify(p, w) {
                Ok(o) => Some(o),
                Err(doorcode_core::Error::AlreadyRecorded { .. }) => None,
                Err(e) => panic!("{e}"),
            }
        })
    });
    let mut f = std::fs::File::create(dir.path().join("floor")).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    f.sync_all().unwrap();
    let page = [1u8; 4096];
    let mut off = 0u64;
    g.bench_function("fsync_floor_4k_write", |b| {
        b.iter(|| {
            f.write_all_at(&page, off % (1 << 20)).unwrap();
            off += 4096;
            f.sync_data().unwrap();
        })
    });
    g.finish();
}

fn install(c: &mut Criterion) {
    let (_dir, depot, h) = enrolled();
    // 250 stops, 400 parcels: 150 stops with 2 parcels and 100 with 1.
    let mut spec = ManifestSpec::today("d-b", 250, 2);
    let base = depot.manifest(&spec);
    let mut rev = 0u64;
    let mut g = c.benchmark_group("manifest");
    g.sample_size(20);
    g.bench_function("install_250_stops_400_parcels", |b| {
        b.iter_batched(
            || {
                rev += 1;
                spec.revision = rev;
                let mut m = base.clone();
                m.revision = rev;
                m.manifest_id = format!("m-{rev}");
                for s in m.stops.iter_mut().skip(150) {
                    s.parcels.truncate(1);
                }
                depot.seal(&m)
            },
            |env| h.install_manifest(&env).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn code_math(c: &mut Criterion) {
    let key = CodeKey::from_bytes([5; 32]);
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let code = Code::new("427710").unwrap();
    let salt = [9u8; 16];
    c.bench_function("offline_tag_12_bits", |b| {
        b.iter(|| {
            codes::offline_tag(std::hint::black_box(&salt), "P-1001", date, &code, 12).unwrap()
        })
    });
    c.bench_function("derive_code", |b| {
        b.iter(|| codes::derive_code(&key, "P-1001", date, 1, 6).unwrap())
    });
    c.bench_function("parse_spoken_input", |b| {
        b.iter(|| {
            doorcode_core::input::parse_code_input(
                std::hint::black_box("four two double seven one oh"),
                6,
            )
            .unwrap()
        })
    });
    // The slowest lookup: all seven languages chosen, the input in the last.
    let all = doorcode_core::input::Language::ALL;
    c.bench_function("parse_spoken_input_7_languages_hindi_last", |b| {
        b.iter(|| {
            doorcode_core::input::parse_code_input_in(
                std::hint::black_box("char do saat saat ek shunya"),
                6,
                &all,
            )
            .unwrap()
        })
    });
    c.bench_function("parse_spoken_pairs_french", |b| {
        b.iter(|| {
            doorcode_core::input::parse_code_input_in(
                std::hint::black_box("quatre-vingt-dix-sept, soixante et onze, dix"),
                6,
                &[doorcode_core::input::Language::French],
            )
            .unwrap()
        })
    });
    // The error path scans every language not chosen to name the right one.
    c.bench_function("parse_spoken_input_other_language_error", |b| {
        b.iter(|| {
            doorcode_core::input::parse_code_input(
                std::hint::black_box("cuatro dos siete siete uno cero"),
                6,
            )
            .unwrap_err()
        })
    });
}

criterion_group!(benches, durable, install, code_math);
criterion_main!(benches);
