//! `doorcode import` end to end: the binary, real CSV files, a real
//! `doorcode serve` process, and the dispatch API to see what it did.

use crate::fleet::{ServerProc, free_port, today};
use doorcode_core::dispatch::DispatchClient;
use doorcode_core::wire::{ParcelState, RouteIn, RouteStatus, StopIn};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Depot {
    _proc: ServerProc,
    url: String,
    token: String,
    data: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn depot() -> Depot {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (proc, token) = ServerProc::spawn(&data, free_port());
    Depot {
        url: format!("http://{}", proc.addr()),
        _proc: proc,
        token: token.expect("first start prints the token"),
        data,
        _tmp: tmp,
    }
}

impl Depot {
    fn client(&self) -> DispatchClient {
        DispatchClient::new(&self.url, &self.token).unwrap()
    }

    fn import(&self, files: &[&Path]) -> Output {
        import_with(&self.url, Some(&self.token), files)
    }

    fn notices(&self) -> usize {
        std::fs::read_dir(self.data.join("notices"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Waits until the outbox has written at least `n` notices, then a
    /// little longer for any more; returns how many there are.
    async fn wait_notices(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.notices() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let have = self.notices();
        assert!(have >= n, "{have} notices written, expected {n}");
        have
    }
}

fn import_with(url: &str, token: Option<&str>, files: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doorcode"));
    cmd.args(["import", "--server", url]).args(files);
    cmd.env_remove("DOORCODE_TOKEN");
    if let Some(t) = token {
        cmd.env("DOORCODE_TOKEN", t);
    }
    cmd.output().unwrap()
}

/// An import that must succeed with every line of `summary` in its output
/// and no rejected row; its stdout.
fn import_ok(d: &Depot, files: &[&Path], summary: &[&str]) -> String {
    let out = d.import(files);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for line in summary.iter().chain(&["rejected: 0"]) {
        assert!(stdout.contains(line), "{line:?} missing: {stdout}");
    }
    stdout
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_file_is_imported_and_running_it_again_changes_nothing() {
    let d = depot();
    let files = tempfile::tempdir().unwrap();
    let day = today();
    // A spreadsheet's export: a byte order mark, a quoted comma, quoted
    // quotes, accents, an optional column left empty.
    let parcels = write(
        files.path(),
        "parcels.csv",
        "\u{feff}parcel_id,recipient_name,email,phone,address,value,currency,requires_code\n\
         IMP-1,\"Doe, Jane\",jane@example.com,,\"1 \"\"Old\"\" Street\",80,EUR,\n\
         IMP-2,Zoë Ünal,,+491701234567,2 Rue de la Paix,12.50,EUR,true\n\
         IMP-3,Ben Okafor,ben@example.com,,3 High Street,5,EUR,no\n",
    );
    let routes = write(
        files.path(),
        "routes.csv",
        &format!(
            "route_id,courier_id,delivery_date,stop_id,address,parcel_id\n\
             R-IMP,C-IMP,{day},S-1,\"1 \"\"Old\"\" Street\",IMP-1\n\
             R-IMP,C-IMP,{day},S-2,2 Rue de la Paix,IMP-2\n\
             R-IMP,C-IMP,{day},S-2,2 Rue de la Paix,IMP-3\n"
        ),
    );
    import_ok(
        &d,
        &[&parcels, &routes],
        &[
            "parcels: 3 created, 0 updated, 0 unchanged",
            "routes: 1 created, 0 updated, 0 unchanged",
        ],
    );

    let c = d.client();
    let p1 = c.parcel("IMP-1").await.unwrap();
    assert_eq!(p1.recipient_name, "Doe, Jane");
    assert_eq!(p1.address, "1 \"Old\" Street");
    assert!(p1.requires_code, "80 EUR is above the default threshold");
    assert_eq!(p1.status, ParcelState::Scheduled);
    assert_eq!(p1.route_id.as_deref(), Some("R-IMP"));
    assert_eq!(p1.delivery_date, Some(day));
    let p2 = c.parcel("IMP-2").await.unwrap();
    assert_eq!(p2.recipient_name, "Zoë Ünal");
    assert!(
        p2.requires_code,
        "requires_code=true overrides the threshold"
    );
    let p3 = c.parcel("IMP-3").await.unwrap();
    assert!(!p3.requires_code);
    // IMP-1 and IMP-2 need a code: a notice each (IMP-3 none).
    let notices = d.wait_notices(2).await;

    // The same files again: nothing changes. Every item answers
    // `unchanged`; links, attempts, states and histories stay (no event is
    // written), the route keeps its revision and no customer hears again.
    let before: Vec<_> = [&p1, &p2, &p3]
        .iter()
        .map(|p| {
            let history: Vec<_> = p.events.iter().map(|e| (e.at, e.kind.clone())).collect();
            (
                p.track_url.clone(),
                p.attempt,
                p.status,
                p.route_id.clone(),
                history,
            )
        })
        .collect();
    import_ok(
        &d,
        &[&parcels, &routes],
        &[
            "parcels: 0 created, 0 updated, 3 unchanged",
            "routes: 0 created, 0 updated, 1 unchanged",
        ],
    );
    let mut after = Vec::new();
    for id in ["IMP-1", "IMP-2", "IMP-3"] {
        let p = c.parcel(id).await.unwrap();
        let history: Vec<_> = p.events.iter().map(|e| (e.at, e.kind.clone())).collect();
        after.push((p.track_url, p.attempt, p.status, p.route_id, history));
    }
    assert_eq!(before, after);
    let resent = RouteIn {
        route_id: "R-IMP".into(),
        courier_id: "C-IMP".into(),
        delivery_date: day,
        stops: vec![
            StopIn {
                stop_id: "S-1".into(),
                address: "1 \"Old\" Street".into(),
                recipient: None,
                parcel_ids: vec!["IMP-1".into()],
            },
            StopIn {
                stop_id: "S-2".into(),
                address: "2 Rue de la Paix".into(),
                recipient: None,
                parcel_ids: vec!["IMP-2".into(), "IMP-3".into()],
            },
        ],
    };
    let route = c.route(&resent).await.unwrap();
    assert_eq!(
        (route.status, route.revision, route.manifests_built),
        (RouteStatus::Unchanged, 1, 0),
        "the route sent a third time, through the API, keeps revision 1"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.notices(), notices, "a re-run sends no notice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bad_rows_sends_nothing_and_names_every_bad_line() {
    let d = depot();
    let files = tempfile::tempdir().unwrap();
    let day = today();
    let parcels = write(
        files.path(),
        "parcels.csv",
        "parcel_id,recipient_name,address,value,currency\n\
         BAD-1,Jane Doe,1 Street,10,EUR\n\
         BAD 2,Jane Doe,1 Street,10,EUR\n\
         BAD-3,Jane Doe,1 Street,\"10,50\",EUR\n\
         BAD-4,\"Jane\nDoe\",1 Street,10,EUR\n\
         BAD-5,Jane Doe,1 Street,10,euro\n\
         BAD-1,Jane Doe,1 Street,10,EUR\n",
    );
    let routes = write(
        files.path(),
        "routes.csv",
        &format!(
            "route_id,courier_id,delivery_date,stop_id,address,parcel_id\n\
             R-1,C-1,{day},S-1,1 Street,BAD-1\n\
             R-1,C-1,tomorrow,S-2,2 Street,BAD-3\n"
        ),
    );
    let out = d.import(&[&parcels, &routes]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    let p = parcels.display().to_string();
    let r = routes.display().to_string();
    for want in [
        format!("{p} line 3: parcel_id must be"),
        format!("{p} line 4: value \"10,50\" is not a number: write decimals with a dot"),
        // The quoted line break is one field: the row starts on line 5.
        format!("{p} line 5: recipient_name must be one line"),
        format!("{p} line 7: currency \"euro\" must be a 3-letter"),
        format!("{p} line 8: parcel BAD-1 is already on line 2"),
        format!("{r} line 3: delivery_date \"tomorrow\" must be a date written YYYY-MM-DD"),
        "6 problem(s) in the files; nothing was sent".to_string(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(text(&out.stdout).is_empty(), "no summary: nothing was sent");
    // Not even the good rows went out.
    let e = d.client().parcel("BAD-1").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_or_with_a_wrong_one_it_says_what_to_do() {
    let d = depot();
    let files = tempfile::tempdir().unwrap();
    let parcels = write(
        files.path(),
        "parcels.csv",
        "parcel_id,recipient_name,address,value,currency\nT-1,Jane,1 Street,1,EUR\n",
    );
    let out = import_with(&d.url, None, &[&parcels]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("set DOORCODE_TOKEN"),
        "{}",
        text(&out.stderr)
    );
    let out = import_with(&d.url, Some("not-the-token"), &[&parcels]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(
        stderr.contains("Running the same files again is safe"),
        "{stderr}"
    );
    let e = d.client().parcel("T-1").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let out = import_with(
        &format!("http://127.0.0.1:{}", free_port()),
        Some("t"),
        &[&parcels],
    );
    assert!(
        text(&out.stderr).contains("cannot reach the server"),
        "{}",
        text(&out.stderr)
    );
}

/// 10,000 parcels on 10 routes of 1,000 stops: 20,000 rows in two files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_parcels_import_with_progress() {
    const N: usize = 10_000;
    const ROUTES: usize = 10;
    let d = depot();
    let files = tempfile::tempdir().unwrap();
    let day = today();
    let mut p =
        String::from("parcel_id,recipient_name,email,address,value,currency,requires_code\n");
    let mut r = String::from("route_id,courier_id,delivery_date,stop_id,address,parcel_id\n");
    for i in 0..N {
        let route = i % ROUTES;
        writeln!(
            p,
            "BULK-{i:05},\"Recipient {i}, Esq.\",r{i}@example.com,{i} Bulk Road,{},EUR,{}",
            i % 200,
            if i % 3 == 0 { "false" } else { "" }
        )
        .unwrap();
        writeln!(
            r,
            "R-BULK-{route},C-BULK-{route},{day},S-{i:05},{i} Bulk Road,BULK-{i:05}"
        )
        .unwrap();
    }
    let parcels = write(files.path(), "parcels.csv", &p);
    let routes = write(files.path(), "routes.csv", &r);
    let started = Instant::now();
    let out = d.import(&[&parcels, &routes]);
    let took = started.elapsed();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("parcels: {N} created, 0 updated")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("routes: {ROUTES} created, 0 updated")),
        "{stdout}"
    );
    // Progress on stderr (lines, not a bar: stderr is not a terminal here):
    // one per parcel batch of 500 and one per route, to the last row.
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("import: "))
        .collect();
    assert_eq!(steps.len(), N / 500 + ROUTES, "{stderr}");
    assert_eq!(
        steps[0],
        format!("import: 500/{} rows sent (parcels)", 2 * N)
    );
    assert_eq!(
        steps.last().copied(),
        Some(format!("import: {}/{} rows sent (routes)", 2 * N, 2 * N).as_str())
    );
    eprintln!(
        "doorcode import: {N} parcels + {N} route rows ({ROUTES} routes) in {:.2} s",
        took.as_secs_f64()
    );
    let c = d.client();
    for i in [0, 4_999, N - 1] {
        let got = c.parcel(&format!("BULK-{i:05}")).await.unwrap();
        assert_eq!(got.route_id, Some(format!("R-BULK-{}", i % ROUTES)));
        assert_eq!(got.recipient_name, format!("Recipient {i}, Esq."));
        assert_eq!(got.requires_code, i % 3 != 0 && i % 200 >= 50);
    }
}
