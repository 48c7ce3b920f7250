//! PostgreSQL over TLS against a real PostgreSQL with `ssl=on`: a throwaway
//! cluster (`initdb`, `pg_ctl`; as the `postgres` user when the test runs as
//! root) on a free port, with a test CA and server certificate made here
//! with rcgen. Its pg_hba.conf takes TLS connections only (`hostnossl …
//! reject`, SCRAM passwords): a node that starts and answers talked to its
//! database encrypted. Each `sslmode` is tried through `doorcode serve` (or
//! the server's own connector, `PgSettings::connect_one`), then the cluster
//! restarts with `ssl=off` and `require` must refuse to start.
//!
//! Without PostgreSQL's server binaries it prints SKIPPED and returns; under
//! CI it fails instead, as the PostgreSQL suite does (`support::pg`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::{Serve, ServeOpts, refused};
use doorcode_server::storage::postgres::PgSettings;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const PASSWORD: &str = "pg-tls-Secret-4711";

/// The newest PostgreSQL server binaries here: `DOORCODE_TEST_PG_BIN`, then
/// Debian's `/usr/lib/postgresql/N/bin`, then `initdb` on the PATH.
fn pg_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("DOORCODE_TEST_PG_BIN").filter(|b| !b.is_empty()) {
        let b = PathBuf::from(b);
        return b.join("initdb").exists().then_some(b);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|p| p.join("initdb").exists())
}

/// A throwaway cluster, stopped on drop (also when the test fails).
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// initdb refuses root: run the tools as `postgres` then.
    as_postgres: bool,
    tmp: tempfile::TempDir,
}

impl Cluster {
    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.cmd(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// In the data dir, where the server may write.
    fn log(&self) -> PathBuf {
        self.data.join("postgres.log")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data.display().to_string();
        let log = self.log().display().to_string();
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    fn file(&self, name: &str) -> String {
        self.tmp.path().join(name).display().to_string()
    }

    /// `initdb`, the certificates, TLS-only pg_hba.conf, start, password.
    fn start(bin: PathBuf, certs: &Certs) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let as_postgres = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let c = Self {
            bin,
            data,
            port: crate::support::free_port(),
            as_postgres,
            tmp,
        };
        for (name, pem) in [
            ("ca.pem", &certs.ca),
            ("other-ca.pem", &certs.other_ca),
            ("server.pem", &certs.server),
            ("server.key", &certs.server_key),
        ] {
            std::fs::write(c.tmp.path().join(name), pem).unwrap();
        }
        // PostgreSQL wants its key private and owned by the user it runs as.
        let key = c.tmp.path().join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if as_postgres {
            std::fs::set_permissions(c.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            for p in [&c.data, &key] {
                let st = Command::new("chown").arg("postgres:").arg(p).status();
                assert!(st.unwrap().success(), "chown postgres {}", p.display());
            }
        }
        let data = c.data.display().to_string();
        c.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust"]);
        let conf = format!(
            "\nlisten_addresses = 'localhost'\nport = {}\nunix_socket_directories = '{data}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\nmax_connections = 40\n",
            c.port,
            c.file("server.pem"),
            c.file("server.key"),
        );
        append(&c.data.join("postgresql.conf"), &conf);
        let hba = "local all all trust\n\
                   hostssl all all 127.0.0.1/32 scram-sha-256\n\
                   hostssl all all ::1/128 scram-sha-256\n\
                   hostnossl all all all reject\n";
        // Written by the test process; postgres reads it (the file initdb
        // made keeps its owner and mode).
        let hba_path = c.data.join("pg_hba.conf");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&hba_path)
            .unwrap();
        std::io::Write::write_all(&mut f, hba.as_bytes()).unwrap();
        c.pg_ctl(&["start"]);
        let port = c.port.to_string();
        let sql = format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'");
        let args = [
            "-X", "-h", &data, "-p", &port, "-U", "postgres", "-d", "postgres",
        ];
        let mut all = args.to_vec();
        all.extend_from_slice(&["-Atc", &sql]);
        c.run("psql", &all);
        c
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .cmd("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

/// PEM: the test CA, a CA nobody trusts, and the server's certificate for
/// `localhost` only (no IP address), signed by the first.
struct Certs {
    ca: String,
    other_ca: String,
    server: String,
    server_key: String,
}

fn certs() -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let ca = CertifiedIssuer::self_signed(
        ca_params("doorcode pg test CA"),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let other =
        CertifiedIssuer::self_signed(ca_params("doorcode other CA"), KeyPair::generate().unwrap())
            .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = p.signed_by(&key, &ca).unwrap();
    Certs {
        ca: ca.pem(),
        other_ca: other.pem(),
        server: server.pem(),
        server_key: key.serialize_pem(),
    }
}

/// Through the server's own connector: whether the session is encrypted,
/// as the database sees it.
async fn encrypted(url: &str) -> Result<bool, String> {
    let s = PgSettings::parse(url).map_err(|e| e.to_string())?;
    let tls = s.tls.connector().map_err(|e| e.to_string())?;
    let (client, _task) = s.connect_one(&tls).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// A node on `db` starts and answers a request that reads the database.
async fn serves(dir: &Path, db: &str, admin: Option<&str>) -> String {
    let node = Serve::start(
        dir,
        &ServeOpts {
            extra: &["--database", db],
            ..ServeOpts::default()
        },
    );
    let admin = admin
        .map(str::to_string)
        .or_else(|| node.admin.clone())
        .unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/v1/devices?courier_id=c-tls", node.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{db}");
    admin
}

fn refused_with(dir: &Path, db: &str, wants: &[&str]) {
    let err = refused(dir, db);
    for w in wants {
        assert!(err.contains(w), "wanted {w:?} in: {err}");
    }
    assert!(!err.contains(PASSWORD), "the password was printed: {err}");
    println!("refused as it should: {}", err.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_tls_sslmodes_against_a_real_tls_server() {
    let Some(bin) = pg_bin() else {
        crate::support::pg::skip_or_fail(
            "no PostgreSQL server binaries (initdb, pg_ctl in DOORCODE_TEST_PG_BIN, \
             /usr/lib/postgresql/N/bin or the PATH); the PostgreSQL TLS test `pg_tls` did NOT run",
            "CI must run it: install PostgreSQL (Debian: apt-get install postgresql)",
            "install PostgreSQL's server binaries or set DOORCODE_TEST_PG_BIN",
        );
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pg = Cluster::start(bin, &certs());
    let (ca, other) = (pg.file("ca.pem"), pg.file("other-ca.pem"));
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");

    // verify-full, the right CA, the certificate's name: serves, encrypted.
    let full = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let admin = serves(&node, &full, None).await;
    assert_eq!(encrypted(&full).await, Ok(true));

    // verify-full with a CA that did not sign the server's certificate.
    let wrong_ca = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    refused_with(
        &node,
        &wrong_ca,
        &["sslmode=verify-full", "UnknownIssuer", "sslrootcert"],
    );

    // verify-full to a name the certificate does not carry (it names only
    // `localhost`, not the address).
    let wrong_name = pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    refused_with(
        &node,
        &wrong_name,
        &["sslmode=verify-full", "not valid for name"],
    );

    // verify-ca checks the chain but not the name; the wrong CA still fails.
    let ca_only = pg.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(encrypted(&ca_only).await, Ok(true));
    let e = encrypted(&pg.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .await
    .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // require without a CA: encrypted, the certificate not checked.
    let require = pg.url("localhost", "sslmode=require");
    serves(&node, &require, Some(&admin)).await;
    assert_eq!(encrypted(&require).await, Ok(true));
    // require with sslrootcert checks the chain, as libpq does.
    let e = encrypted(&pg.url("localhost", &format!("sslmode=require&sslrootcert={other}")))
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    // No sslmode: libpq's default `prefer` takes the TLS on offer.
    assert_eq!(encrypted(&pg.url("localhost", "")).await, Ok(true));
    // The cluster takes nothing in the clear: the nodes above were encrypted.
    let e = encrypted(&pg.url("localhost", "sslmode=disable"))
        .await
        .unwrap_err();
    assert!(e.contains("no encryption"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");

    // A bad sslrootcert stops the start, naming the file.
    let missing = tmp.path().join("no-such-ca.pem").display().to_string();
    let bad = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={missing}"),
    );
    refused_with(&node, &bad, &[&missing]);

    // A server without TLS: require and verify-full refuse to start.
    pg.pg_ctl(&["-m", "fast", "-o", "-c ssl=off", "restart"]);
    refused_with(&node, &require, &["sslmode=require", "does not offer TLS"]);
    refused_with(&node, &full, &["sslmode=verify-full", "does not offer TLS"]);
}
