//! The SMTP channel: `smtps://` (implicit TLS), `smtp://…?tls=starttls`
//! (STARTTLS required, never a silent fallback to plain) or a plain relay,
//! with AUTH, over rustls on ring. The password is kept only in the
//! transport: every printed form of the channel says `***` instead.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use percent_encoding::percent_decode_str;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_FROM: &str = "doorcode <no-reply@doorcode.invalid>";

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
    /// STARTTLS, required: a server that does not offer it gets no mail.
    StartTls,
    /// No TLS (`smtp://` without `tls=`, or `tls=none`): loopback or a
    /// trusted network only, and no credentials.
    None,
}

/// One configured SMTP server.
#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The AUTH user, if any (the password is only in `transport`).
    pub user: Option<String>,
    pub ca: Option<PathBuf>,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// `spec` with the password of its userinfo replaced by `***`, for errors
/// about a spec that may not even parse.
pub fn redact(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let pass = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{pass}@{host}{tail}")
        }
        None => spec.to_string(),
    }
}

/// `localhost` or a loopback address: a plain relay there is not on the network.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("the SMTP {what} is not UTF-8 after percent-decoding"))
}

impl Smtp {
    /// Parse `smtps://[USER:PASS@]HOST[:PORT][?ca=PATH][&from=ADDR]` or
    /// `smtp://[USER:PASS@]HOST[:PORT][?tls=starttls|none][&ca=PATH][&from=ADDR]`.
    /// USER and PASS are percent-decoded. Errors never contain the password.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let shown = redact(spec);
        let url = url::Url::parse(spec).map_err(|e| format!("bad SMTP URL {shown:?}: {e}"))?;
        let implicit = match url.scheme() {
            "smtps" => true,
            "smtp" => false,
            _ => return Err(format!("bad SMTP URL {shown:?}: use smtp:// or smtps://")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{shown:?} needs a host"))?
            .to_string();
        if !matches!(url.path(), "" | "/") {
            return Err(format!("{shown:?}: an SMTP URL has no path"));
        }
        let (mut tls, mut ca, mut from) = (None, None, None);
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "tls" if tls.is_none() => tls = Some(v.into_owned()),
                "ca" if ca.is_none() => ca = Some(PathBuf::from(v.as_ref())),
                "from" if from.is_none() => from = Some(v.into_owned()),
                _ => {
                    return Err(format!(
                        "{shown:?}: unknown or repeated parameter {k:?} (tls=, ca=, from=)"
                    ));
                }
            }
        }
        let security = match (implicit, tls.as_deref()) {
            (true, None) => Security::Implicit,
            (true, Some(_)) => {
                return Err(format!(
                    "{shown:?}: smtps:// is always TLS; tls= is for smtp://"
                ));
            }
            (false, Some("starttls")) => Security::StartTls,
            (false, None | Some("none")) => Security::None,
            (false, Some(other)) => {
                return Err(format!(
                    "{shown:?}: tls={other:?}; use tls=starttls or tls=none (or smtps:// for implicit TLS)"
                ));
            }
        };
        let port = url.port().unwrap_or(match security {
            Security::Implicit => 465,
            Security::StartTls => 587,
            Security::None => 25,
        });
        let user = match url.username() {
            "" => None,
            u => Some(decode(u, "user")?),
        };
        let pass = url.password().map(|p| decode(p, "password")).transpose()?;
        if (user.is_some() || pass.is_some()) && security == Security::None {
            return Err(format!(
                "{shown:?}: credentials would cross the network in the clear; use smtps:// or ?tls=starttls"
            ));
        }
        if ca.is_some() && security == Security::None {
            return Err(format!(
                "{shown:?}: ca= needs TLS (smtps:// or tls=starttls)"
            ));
        }
        let from: Mailbox = from
            .as_deref()
            .unwrap_or(DEFAULT_FROM)
            .parse()
            .map_err(|_| format!("{shown:?}: from= is not an email address"))?;

        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(port)
            .timeout(Some(Duration::from_secs(20)));
        if security != Security::None {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(path) = &ca {
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(load_ca(path)?);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("{shown:?}: TLS setup: {e}"))?;
            b = b.tls(match security {
                Security::Implicit => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let Some(u) = &user {
            b = b.credentials(Credentials::new(u.clone(), pass.unwrap_or_default()));
        }
        Ok(Self {
            host,
            port,
            security,
            user,
            ca,
            from,
            transport: b.build(),
        })
    }

    /// The channel as it may be printed: no password.
    pub fn display(&self) -> String {
        let scheme = if self.security == Security::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}:***@"))
            .unwrap_or_default();
        let tls = match self.security {
            Security::StartTls => "?tls=starttls",
            _ => "",
        };
        let ca = match &self.ca {
            Some(p) => format!(
                "{}ca={}",
                if tls.is_empty() { "?" } else { "&" },
                p.display()
            ),
            None => String::new(),
        };
        format!("{scheme}://{user}{}:{}{tls}{ca}", self.host, self.port)
    }

    /// What identifies this server across restarts (not the credentials).
    pub fn identity(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Send one mail. `message_id` is the same on every try of a notice, so
    /// a mailbox that collapses duplicates shows a resend once.
    pub async fn send(
        &self,
        to: &str,
        subject: String,
        body: String,
        message_id: &str,
    ) -> Result<(), String> {
        let domain = self.from.email.domain().to_string();
        let mail = Mail::builder()
            .from(self.from.clone())
            .to(to
                .parse()
                .map_err(|_| "the recipient's email address is invalid".to_string())?)
            .subject(subject)
            .message_id(Some(format!("<{message_id}@{domain}>")))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the email: {e}"))?;
        self.transport
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// The private CA of `&ca=PATH`: PEM with at least one certificate.
fn load_ca(path: &std::path::Path) -> Result<Certificate, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("SMTP ca={}: {e}", path.display()))?;
    let n = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("SMTP ca={}: not PEM certificates", path.display()))?
        .len();
    if n == 0 {
        return Err(format!(
            "SMTP ca={}: no certificate in the file",
            path.display()
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| format!("SMTP ca={}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let s = Smtp::parse("smtps://u%40x:p%3Aw%40rd@mail.example").unwrap();
        assert_eq!((s.port, s.security), (465, Security::Implicit));
        assert_eq!(s.user.as_deref(), Some("u@x"));
        let s = Smtp::parse("smtp://u:p@mail.example?tls=starttls").unwrap();
        assert_eq!((s.port, s.security), (587, Security::StartTls));
        let s = Smtp::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((s.port, s.security), (2525, Security::None));
        let s = Smtp::parse("smtp://mail/?tls=none&from=Depot%20%3Cd%40depot.example%3E").unwrap();
        assert_eq!((s.port, s.security), (25, Security::None));
        assert_eq!(s.from.email.to_string(), "d@depot.example");
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("mail.example") && !is_loopback("10.0.0.1"));
        for bad in [
            "smtp://h:x",
            "smtp://",
            "smtp://h?tls=maybe",
            "smtp://h?tsl=starttls",
            "smtps://h?tls=starttls",
            "smtp://u:secret@h",
            "smtp://u:secret@h?tls=none",
            "smtp://h?ca=/x",
            "smtps://h?ca=/nonexistent/ca.pem",
            "smtp://h/path",
            "smtp://h?from=nobody",
        ] {
            let e = Smtp::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_password_is_never_printed() {
        let s = Smtp::parse("smtps://user:hunter2@mail.example:465").unwrap();
        assert_eq!(s.display(), "smtps://user:***@mail.example:465");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            redact("smtp://user:hunter2@h:1?tls=x"),
            "smtp://user:***@h:1?tls=x"
        );
        assert_eq!(redact("smtp://h:1"), "smtp://h:1");
        assert!(
            !Smtp::parse("smtp://user:hunter2@h:xx")
                .unwrap_err()
                .contains("hunter2")
        );
    }
}
