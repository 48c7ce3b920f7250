//! Two real `doorcode serve` processes on one PostgreSQL schema, sharing a
//! data directory (keys, admin token, `file:` notices). Handsets are spread
//! over both; the same batch goes to both nodes at once; online verifies for
//! one parcel race across nodes; then node A is killed (SIGKILL) while
//! handsets are uploading to it, and the day completes through node B.
//! Every confirmation must be counted once and every notice sent once.
//! Without a reachable PostgreSQL: FAILS under CI, loudly SKIPPED elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::{Serve, db_node};
use crate::support::pg::PgSchema;
use crate::support::send_text;
use crate::support::{Door, Handset};
use chrono::NaiveDate;
use doorcode_core::codes::{CodeKey, derive_code};
use doorcode_core::envelope::{SigningKey, VerifyingKey};
use doorcode_core::manifest::{Manifest, open_manifest};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Start `doorcode serve` on an ephemeral port; returns the node and the
/// admin token if this start created it.
fn spawn_node(dir: &Path, db: &str, name: &str) -> (Serve, Option<String>) {
    let node = db_node(dir, db, dir, name, &["--max-attempts", "5"]);
    let token = node.admin.clone();
    (node, token)
}

struct Api {
    http: reqwest::Client,
    admin: String,
}

impl Api {
    async fn call(&self, url: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = match body {
            Some(b) => self.http.post(format!("{url}{path}")).json(&b),
            None => self.http.get(format!("{url}{path}")),
        };
        let r = req.bearer_auth(token).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, url: &str, path: &str, body: Value) -> Value {
        let (s, v) = self.call(url, &self.admin, path, Some(body)).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    async fn enroll(&self, url: &str, courier: &str) -> Handset {
        let e = self
            .admin(url, "/v1/enrollments", json!({"courier_id": courier}))
            .await;
        let probe = SigningKey::generate("probe").unwrap();
        let (s, dev) = self
            .call(
                url,
                "",
                "/v1/devices",
                Some(json!({"enrollment_code": e["enrollment_code"], "device_public_key": probe.public_key().public_b64(), "device_name": courier})),
            )
            .await;
        assert_eq!(s, 200, "{dev}");
        let device_id = dev["device_id"].as_str().unwrap().to_string();
        Handset {
            key: SigningKey::from_seed(device_id.clone(), *probe.seed()).unwrap(),
            device_id,
            token: dev["device_token"].as_str().unwrap().to_string(),
            seq: 0,
        }
    }

    async fn manifest(
        &self,
        url: &str,
        h: &Handset,
        date: &str,
        keys: &[VerifyingKey],
    ) -> Manifest {
        let (s, env) = self
            .call(url, &h.token, &format!("/v1/manifest?date={date}"), None)
            .await;
        assert_eq!(s, 200, "{env}");
        open_manifest(&serde_json::from_value(env).unwrap(), keys).unwrap()
    }

    /// Upload; None when the node is unreachable (killed).
    async fn upload(&self, url: &str, h: &Handset, envs: &[Value]) -> Option<Vec<Value>> {
        let r = self
            .http
            .post(format!("{url}/v1/confirmations"))
            .bearer_auth(&h.token)
            .json(&json!({"confirmations": envs}))
            .send()
            .await
            .ok()?;
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.ok()?;
        Some(v["results"].as_array().unwrap().clone())
    }

    async fn metric(&self, url: &str, line_prefix: &str) -> u64 {
        let text = send_text(
            self.http
                .get(format!("{url}/metrics"))
                .bearer_auth(&self.admin),
        )
        .await;
        text.lines()
            .find_map(|l| l.strip_prefix(line_prefix))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or(0)
    }
}

fn notice_files(dir: &Path) -> Vec<Value> {
    match std::fs::read_dir(dir.join("notices")) {
        Ok(r) => r
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

const SENT: &str = "doorcode_notices_total{channel=\"file\",result=\"sent\"} ";
const COURIERS: usize = 4;
const PER_ROUTE: usize = 12;

/// Two nodes on one schema and one data dir, the day planned on them, and
/// the handsets enrolled on their home node.
struct TwoNodes {
    pg: PgSchema,
    tmp: tempfile::TempDir,
    a: Serve,
    b: Serve,
    api: Api,
    key: CodeKey,
    today: NaiveDate,
    date: String,
    parcels: Vec<String>,
    hs: Vec<Handset>,
    manifests: Vec<Manifest>,
    keys: Vec<VerifyingKey>,
}

/// The parcel whose online verifies race across the nodes.
const RACING: &str = "P-0-11";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl TwoNodes {
    /// Node A, then node B on the same data dir: same code key, signing key
    /// and admin token (B prints none).
    fn start(pg: PgSchema) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let db = pg.url_with("pool_size=4");
        let (a, token) = spawn_node(dir, &db, "node-a");
        let admin = token.expect("first start prints the admin token");
        let (b, again) = spawn_node(dir, &db, "node-b");
        assert!(again.is_none());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = CodeKey::from_file_text(
            std::fs::read_to_string(dir.join("code-key"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let today = chrono::Utc::now().date_naive();
        Self {
            pg,
            tmp,
            a,
            b,
            api: Api {
                http: reqwest::Client::new(),
                admin,
            },
            key,
            today,
            date: today.format("%Y-%m-%d").to_string(),
            parcels: Vec::new(),
            hs: Vec::new(),
            manifests: Vec::new(),
            keys: Vec::new(),
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Couriers 0 and 1 live on A, 2 and 3 on B.
    fn home(&self, c: usize) -> String {
        if c < 2 { self.a.url() } else { self.b.url() }
    }

    fn code(&self, parcel: &str, attempt: u32) -> String {
        derive_code(&self.key, parcel, self.today, attempt, 6)
            .unwrap()
            .expose()
            .to_string()
    }

    /// Dispatch: 4 routes of 12 parcels, all needing a code; the parcels
    /// through A, half the routes through each node.
    async fn plan(&mut self) {
        for c in 0..COURIERS {
            for i in 0..PER_ROUTE {
                self.parcels.push(format!("P-{c}-{i:02}"));
            }
        }
        let body: Vec<Value> = self.parcels
            .iter()
            .map(|p| json!({"parcel_id": p, "recipient": {"name": "C", "email": format!("{}@example.com", p.to_lowercase())}, "address": format!("{p} Street"), "value": 100.0, "currency": "EUR"}))
            .collect();
        self.api
            .admin(&self.a.url(), "/v1/parcels", json!({"parcels": body}))
            .await;
        for c in 0..COURIERS {
            let stops: Vec<Value> = (0..3)
                .map(|s| json!({"stop_id": format!("S-{s}"), "address": format!("{s} Road"), "parcel_ids": (0..4).map(|i| format!("P-{c}-{:02}", s * 4 + i)).collect::<Vec<_>>()}))
                .collect();
            let url = if c % 2 == 0 {
                self.a.url()
            } else {
                self.b.url()
            };
            let v = self
                .api
                .admin(&url, "/v1/routes", json!({"route_id": format!("R-{c}"), "courier_id": format!("C-{c}"), "delivery_date": self.date, "stops": stops}))
                .await;
            assert_eq!(v["notices_queued"], PER_ROUTE);
        }
    }

    /// Each courier's handset enrolls on its home node and pulls its manifest.
    async fn enroll_and_pull(&mut self) {
        for c in 0..COURIERS {
            let h = self.api.enroll(&self.home(c), &format!("C-{c}")).await;
            self.hs.push(h);
        }
        let (_, kv) = self
            .api
            .call(&self.b.url(), "", "/.well-known/doorcode-keys", None)
            .await;
        self.keys = kv["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                VerifyingKey::from_b64(
                    k["kid"].as_str().unwrap(),
                    k["public_key"].as_str().unwrap(),
                )
                .unwrap()
            })
            .collect();
        for (c, h) in self.hs.iter().enumerate() {
            let m = self
                .api
                .manifest(&self.home(c), h, &self.date, &self.keys)
                .await;
            assert_eq!(
                m.stops.iter().map(|s| s.parcels.len()).sum::<usize>(),
                PER_ROUTE
            );
            self.manifests.push(m);
        }
    }

    /// Both nodes' senders drain one outbox: 48 notices, each sent once.
    async fn notices_sent_once(&self) {
        let total = COURIERS * PER_ROUTE;
        wait_for("48 notices", async || {
            notice_files(self.dir()).len() >= total
        })
        .await;
        wait_for("senders to finish", async || {
            self.api.metric(&self.a.url(), SENT).await + self.api.metric(&self.b.url(), SENT).await
                >= total as u64
        })
        .await;
    }

    /// Online verifies for one parcel race across both nodes: 6 wrong
    /// tries, max 5: exactly 4 counted rejections, then locked.
    async fn verifies_race_across_nodes(&self) {
        let wrong = if self.code(RACING, 1) == "000000" {
            "000001"
        } else {
            "000000"
        };
        let mut tries = Vec::new();
        for i in 0..6 {
            let url = if i % 2 == 0 {
                self.a.url()
            } else {
                self.b.url()
            };
            let (http, token) = (self.api.http.clone(), self.hs[0].token.clone());
            tries.push(tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/v1/verify"))
                    .bearer_auth(token)
                    .json(&json!({"parcel_id": RACING, "code": wrong}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                r.json::<Value>().await.unwrap()
            }));
        }
        let mut left = Vec::new();
        for t in tries {
            let v = t.await.unwrap();
            match v["result"].as_str().unwrap() {
                "rejected" => left.push(v["attempts_left"].as_u64().unwrap()),
                "locked" => {}
                other => panic!("{other}"),
            }
        }
        left.sort_unstable();
        assert_eq!(left, vec![1, 2, 3, 4]);
    }

    /// Each handset signs a delivered confirmation per parcel (but the
    /// raced one): the envelopes per courier, and every confirmation id.
    fn sign_deliveries(&mut self) -> (Vec<Vec<Value>>, HashSet<uuid::Uuid>) {
        let mut pending: Vec<Vec<Value>> = Vec::new();
        let mut ids = HashSet::new();
        for c in 0..COURIERS {
            let m = &self.manifests[c];
            let door = Door {
                manifest_id: &m.manifest_id,
                revision: m.revision,
                date: &self.date,
            };
            let mut envs = Vec::new();
            for s in &m.stops {
                for p in s.parcels.iter().filter(|p| p.parcel_id != RACING) {
                    let code = derive_code(&self.key, &p.parcel_id, self.today, 1, 6).unwrap();
                    let h = &mut self.hs[c];
                    let conf = h.delivered(&door, &p.parcel_id, 1, code.expose(), &now());
                    ids.insert(conf.confirmation_id);
                    envs.push(serde_json::to_value(h.sign(&conf)).unwrap());
                }
            }
            pending.push(envs);
        }
        (pending, ids)
    }

    /// The same first batch of courier 2 goes to both nodes at the same
    /// moment: one accepts each item, the other calls it a duplicate. Then
    /// every handset uploads its first 4 to its home node.
    async fn same_batch_on_both_then_first_uploads(&self, pending: &[Vec<Value>]) {
        let batch: Vec<Value> = pending[2][..4].to_vec();
        let (url_a, url_b) = (self.a.url(), self.b.url());
        let (ra, rb) = tokio::join!(
            self.api.upload(&url_a, &self.hs[2], &batch),
            self.api.upload(&url_b, &self.hs[2], &batch)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        for i in 0..batch.len() {
            let mut st = [
                ra[i]["status"].as_str().unwrap(),
                rb[i]["status"].as_str().unwrap(),
            ];
            st.sort_unstable();
            assert_eq!(st, ["accepted", "duplicate"], "item {i}");
        }
        for (c, h) in self.hs.iter().enumerate() {
            let r = self
                .api
                .upload(&self.home(c), h, &pending[c][..4])
                .await
                .unwrap();
            for x in &r {
                assert!(
                    x["status"] == "accepted" || (c == 2 && x["status"] == "duplicate"),
                    "{x}"
                );
            }
        }
    }

    /// Mid-day: couriers 0 and 1 keep uploading to A one by one while A is
    /// killed (SIGKILL). Returns how many uploads A answered.
    async fn kill_a_mid_upload(&mut self, pending: &[Vec<Value>]) -> usize {
        let uploads: Vec<_> = (0..2)
            .map(|c| {
                let envs = pending[c][4..].to_vec();
                let (http, url, token) = (
                    self.api.http.clone(),
                    self.a.url(),
                    self.hs[c].token.clone(),
                );
                tokio::spawn(async move {
                    let mut ok = 0;
                    for e in envs {
                        let r = http
                            .post(format!("{url}/v1/confirmations"))
                            .bearer_auth(&token)
                            .json(&json!({"confirmations": [e]}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => ok += 1,
                            _ => break,
                        }
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    ok
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(60)).await;
        self.a.kill9();
        let mut got_through_a = 0;
        for u in uploads {
            got_through_a += u.await.unwrap();
        }
        let remaining = pending[0].len() + pending[1].len() - 8;
        assert!(
            got_through_a < remaining,
            "A died before the couriers finished"
        );
        got_through_a
    }

    /// Every handset re-sends all it has to B; what A took is a duplicate.
    /// Returns (accepted, duplicate) on B.
    async fn resend_all_to_b(&self, pending: &[Vec<Value>]) -> (usize, usize) {
        let (mut accepted, mut duplicate) = (0, 0);
        for (c, h) in self.hs.iter().enumerate() {
            for x in self
                .api
                .upload(&self.b.url(), h, &pending[c])
                .await
                .unwrap()
            {
                match x["status"].as_str().unwrap() {
                    "accepted" => accepted += 1,
                    "duplicate" => duplicate += 1,
                    _ => panic!("{x}"),
                }
            }
        }
        (accepted, duplicate)
    }

    /// Dispatch reissues the locked parcel through B; B's sender sends its
    /// notice; the courier delivers it with the new code through B.
    async fn reissue_and_deliver_the_raced_parcel(&mut self) {
        let total = COURIERS * PER_ROUTE;
        self.api
            .admin(
                &self.b.url(),
                &format!("/v1/parcels/{RACING}/reissue"),
                json!({}),
            )
            .await;
        // The file appears before the sender marks the notice sent in the
        // outbox: wait for both, or the count below races the acknowledgement.
        wait_for("the reissue notice", async || {
            notice_files(self.dir()).len() > total
                && self.pg.count("notices WHERE status='sent'").await == total as i64 + 1
        })
        .await;
        let m2 = self
            .api
            .manifest(&self.b.url(), &self.hs[0], &self.date, &self.keys)
            .await;
        assert_eq!(m2.revision, 2);
        let door = Door {
            manifest_id: &m2.manifest_id,
            revision: m2.revision,
            date: &self.date,
        };
        let code2 = self.code(RACING, 2);
        let conf = self.hs[0].delivered(&door, RACING, 2, &code2, &now());
        let env = serde_json::to_value(self.hs[0].sign(&conf)).unwrap();
        let r = self
            .api
            .upload(&self.b.url(), &self.hs[0], &[env])
            .await
            .unwrap();
        assert_eq!(r[0]["status"], "accepted", "{}", r[0]);
    }

    /// Every confirmation counted once; every parcel delivered.
    async fn assert_counted_once(&self) {
        let total = (COURIERS * PER_ROUTE) as i64;
        assert_eq!(self.pg.count("confirmations").await, total);
        assert_eq!(
            self.pg.count("parcels WHERE status='delivered'").await,
            total
        );
        assert_eq!(
            self.pg.count("parcel_events WHERE kind='delivered'").await,
            total
        );
    }

    /// Every notice sent once: 48 + 1 rows, all sent; one file per (parcel,
    /// attempt) with that attempt's code.
    async fn assert_notices_sent_once(&self) {
        let total = COURIERS * PER_ROUTE;
        assert_eq!(self.pg.count("notices").await, total as i64 + 1);
        assert_eq!(
            self.pg.count("notices WHERE status='sent'").await,
            total as i64 + 1
        );
        let files = notice_files(self.dir());
        assert_eq!(files.len(), total + 1);
        let mut per_parcel: HashMap<String, Vec<String>> = HashMap::new();
        for f in &files {
            per_parcel
                .entry(f["parcel_id"].as_str().unwrap().to_string())
                .or_default()
                .push(f["code"].as_str().unwrap().to_string());
        }
        for p in &self.parcels {
            let mut want = vec![self.code(p, 1)];
            if p == RACING {
                want.push(self.code(RACING, 2));
            }
            let mut got = per_parcel.remove(p).unwrap_or_default();
            got.sort();
            want.sort();
            assert_eq!(got, want, "notices of {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_nodes_one_killed_mid_day() {
    let Some(pg) = crate::support::pg::fresh_schema("pg_two_nodes_one_killed_mid_day").await else {
        return;
    };
    let total = COURIERS * PER_ROUTE;
    let mut day = TwoNodes::start(pg);
    day.plan().await;
    day.enroll_and_pull().await;
    day.notices_sent_once().await;
    day.verifies_race_across_nodes().await;
    let (pending, ids) = day.sign_deliveries();
    day.same_batch_on_both_then_first_uploads(&pending).await;
    // Sends are acknowledged in the outbox before the kill: a crash between
    // a send and its acknowledgement resends after the lease (at least once).
    wait_for("the outbox to record every send", async || {
        day.pg.count("notices WHERE status='sent'").await == total as i64
    })
    .await;
    let sent_by_a = day.api.metric(&day.a.url(), SENT).await;
    let got_through_a = day.kill_a_mid_upload(&pending).await;
    let (accepted_on_b, dup_on_b) = day.resend_all_to_b(&pending).await;
    assert_eq!(accepted_on_b + dup_on_b, ids.len());
    // A may have committed the upload whose answer the kill cut off (one per courier at most).
    assert!(
        (4 * COURIERS + got_through_a..=4 * COURIERS + got_through_a + 2).contains(&dup_on_b),
        "duplicates on B: {dup_on_b}, taken by A: {got_through_a}"
    );
    day.reissue_and_deliver_the_raced_parcel().await;
    day.assert_counted_once().await;
    day.assert_notices_sent_once().await;
    // The senders' own counts add up: no notice was sent by both nodes.
    let sent_by_b = day.api.metric(&day.b.url(), SENT).await;
    eprintln!(
        "A took {got_through_a} single uploads before SIGKILL; B answered {accepted_on_b} accepted, \
         {dup_on_b} duplicate; notices sent by A {sent_by_a}, by B {sent_by_b}"
    );
    assert_eq!(
        sent_by_a + sent_by_b,
        total as u64 + 1,
        "no notice was sent by both nodes (A sent {sent_by_a}, B {sent_by_b})"
    );
    let TwoNodes { pg, b, .. } = day;
    drop(b);
    pg.drop_schema().await;
}
