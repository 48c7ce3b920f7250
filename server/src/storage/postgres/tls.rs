//! PostgreSQL over TLS: `sslmode=` and `sslrootcert=` read as libpq reads
//! them, on rustls with the ring provider (the workspace's one TLS stack).
//!
//! | `sslmode`     | encrypted            | certificate checked                      |
//! |---------------|----------------------|------------------------------------------|
//! | `disable`     | never                | –                                        |
//! | `prefer` (default) | if the server offers TLS | only with `sslrootcert` (chain)    |
//! | `require`     | always, or no start  | only with `sslrootcert` (chain), as libpq |
//! | `verify-ca`   | always, or no start  | chain                                    |
//! | `verify-full` | always, or no start  | chain and host name                      |
//!
//! The chain is checked against `sslrootcert=PATH` (PEM), or against the
//! system's roots when it is absent or `system` (libpq reads
//! `~/.postgresql/root.crt` instead; docs/OPERATIONS.md says so).

use super::*;
use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// How hard the connection insists on TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<Self> {
        Ok(match v {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(StorageError::Invalid(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres itself enforces: whether TLS is tried, and
    /// whether a server that declines it is refused.
    fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as W;
        match self {
            Self::Disable => W::Disable,
            Self::Prefer => W::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => W::Require,
        }
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`, or a
    /// `verify-*` mode without `sslrootcert`).
    System,
}

/// The URL's TLS options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

impl TlsOptions {
    /// From the raw (percent-encoded) `sslmode` and `sslrootcert` values.
    pub(super) fn from_params(mode: Option<&str>, root: Option<&str>) -> Result<Self> {
        let mode = mode.map(SslMode::parse).transpose()?;
        let root = match root {
            None => None,
            Some("system") => Some(RootCert::System),
            Some(v) => {
                let path = percent_decode_str(v).decode_utf8().map_err(|_| {
                    StorageError::Invalid("sslrootcert= is not a UTF-8 path".into())
                })?;
                if path.is_empty() {
                    return Err(StorageError::Invalid("sslrootcert= is empty".into()));
                }
                Some(RootCert::File(PathBuf::from(path.as_ref())))
            }
        };
        // libpq: the system's roots only with the host name checked too.
        let mode = match (mode, &root) {
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
                return Err(StorageError::Invalid(format!(
                    "sslmode={} may not be used with sslrootcert=system (use sslmode=verify-full)",
                    m.name()
                )));
            }
            (m, _) => m.unwrap_or(SslMode::Prefer),
        };
        Ok(Self {
            mode,
            root_cert: root,
        })
    }

    fn check(&self) -> Check {
        match (self.mode, &self.root_cert) {
            (SslMode::VerifyFull, _) => Check::ChainAndName,
            (SslMode::VerifyCa, _) => Check::Chain,
            (SslMode::Disable, _) => Check::Nothing,
            // libpq: a root certificate given makes prefer/require check the chain.
            (_, Some(_)) => Check::Chain,
            (_, None) => Check::Nothing,
        }
    }

    /// Set the mode tokio-postgres enforces on its config.
    pub(super) fn apply(&self, pg: &mut tokio_postgres::Config) {
        pg.ssl_mode(self.mode.wire());
    }

    /// The connector for every connection: reads `sslrootcert` now, so a
    /// missing or bad file stops the start with its name.
    pub fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(be)?;
        let check = self.check();
        let chain = match check {
            Check::Nothing => None,
            Check::Chain | Check::ChainAndName => Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(self.roots()?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| StorageError::Invalid(format!("sslrootcert: {e}")))?,
            ),
        };
        let verifier = Verifier {
            chain,
            name: check == Check::ChainAndName,
            algs: provider.signature_verification_algorithms,
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        Ok(MakeRustlsConnect::new(config.with_no_client_auth()))
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match &self.root_cert {
            Some(RootCert::File(path)) => {
                let shown = path.display();
                let bad = |what: String| {
                    StorageError::Invalid(format!(
                        "sslrootcert={shown}: {what}; give a PEM file of the CA certificates \
                         that signed the database server's certificate"
                    ))
                };
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| bad("not PEM certificates".into()))?;
                if certs.is_empty() {
                    return Err(bad("no certificate in the file".into()));
                }
                for (i, c) in certs.into_iter().enumerate() {
                    store
                        .add(c)
                        .map_err(|e| bad(format!("certificate {} is not usable: {e}", i + 1)))?;
                }
            }
            Some(RootCert::System) | None => {
                let found = rustls_native_certs::load_native_certs();
                let (n, _) = store.add_parsable_certificates(found.certs);
                if n == 0 {
                    return Err(StorageError::Invalid(format!(
                        "sslmode={}: no system root certificates found; \
                         give sslrootcert=PATH with the database's CA",
                        self.mode.name()
                    )));
                }
            }
        }
        Ok(store)
    }

    /// A connection error with what the TLS settings make of it.
    pub(super) fn explain(&self, e: &tokio_postgres::Error) -> StorageError {
        let mut msg = match pg_be(e) {
            StorageError::Backend(m) => m,
            other => other.to_string(),
        };
        // tokio-postgres shows only its own part ("error performing TLS
        // handshake"); the cause (e.g. rustls's UnknownIssuer) says what to fix.
        if e.as_db_error().is_none() {
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
        }
        if !msg.contains("TLS") {
            return StorageError::Backend(msg);
        }
        let hint = if msg.contains("server does not support TLS") {
            "the database server does not offer TLS: turn ssl on there, or (only on a \
             trusted network) use sslmode=prefer or disable"
        } else if self.check() == Check::Nothing {
            "the TLS handshake failed before any certificate check"
        } else {
            "the database server's certificate must be signed by a CA in sslrootcert \
             (or the system's roots without it)"
        };
        let hint = if self.check() == Check::ChainAndName && msg.contains("not valid for name") {
            "with sslmode=verify-full the host in the URL must be a name the certificate carries"
        } else {
            hint
        };
        StorageError::Backend(format!(
            "PostgreSQL over TLS (sslmode={}): {msg}; {hint}",
            self.mode.name()
        ))
    }
}

/// The server-certificate check the mode asks for. The handshake signatures
/// are checked in every mode, so the session key belongs to whoever sent
/// the certificate.
#[derive(Debug)]
struct Verifier {
    /// None: any certificate is taken (`prefer`/`require` without a root
    /// certificate; libpq does the same).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must name the host (`verify-full`).
    name: bool,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // webpki checks the chain (expiry, usage) before the name: a name
            // error means the chain was good, which is all verify-ca asks.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: Option<&str>, root: Option<&str>) -> Result<TlsOptions> {
        TlsOptions::from_params(mode, root)
    }

    #[test]
    fn modes_and_what_they_check() {
        let cases = [
            (None, None, SslMode::Prefer, Check::Nothing),
            (Some("disable"), None, SslMode::Disable, Check::Nothing),
            (
                Some("prefer"),
                Some("/ca.pem"),
                SslMode::Prefer,
                Check::Chain,
            ),
            (Some("require"), None, SslMode::Require, Check::Nothing),
            (
                Some("require"),
                Some("/ca.pem"),
                SslMode::Require,
                Check::Chain,
            ),
            (Some("verify-ca"), None, SslMode::VerifyCa, Check::Chain),
            (
                Some("verify-full"),
                None,
                SslMode::VerifyFull,
                Check::ChainAndName,
            ),
            (
                None,
                Some("system"),
                SslMode::VerifyFull,
                Check::ChainAndName,
            ),
        ];
        for (mode, root, want, check) in cases {
            let o = opts(mode, root).unwrap_or_else(|e| panic!("{mode:?} {root:?}: {e}"));
            assert_eq!((o.mode, o.check()), (want, check), "{mode:?} {root:?}");
        }
        let o = opts(Some("verify-full"), Some("/etc/ssl/my%20ca.pem"));
        assert!(
            matches!(o, Ok(TlsOptions { root_cert: Some(RootCert::File(p)), .. })
                if p == std::path::Path::new("/etc/ssl/my ca.pem"))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = opts(Some("verify_full"), None).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("verify_full") && m.contains("verify-full")));
        let e = opts(Some("require"), Some("system"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("sslrootcert=system")));
        assert!(opts(None, Some("")).is_err());
    }

    #[test]
    fn a_bad_root_file_is_a_start_error_naming_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&empty, "no pem here\n").unwrap_or_else(|e| panic!("{e}"));
        for (path, what) in [
            (&missing, "No such file"),
            (&junk, "not PEM"),
            (&empty, "no certificate"),
        ] {
            let o = opts(Some("verify-full"), path.to_str()).unwrap_or_else(|e| panic!("{e}"));
            let e = o
                .connector()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(what),
                "{what}: {e}"
            );
        }
        // Without a root file nothing is read: require builds at once.
        assert!(
            opts(Some("require"), None)
                .and_then(|o| o.connector())
                .is_ok()
        );
    }
}
