//! MQTT connection settings shared by every client of Phoenix (agent,
//! bridge, controller, demo): DESIGN.md §4.7.
//!
//! One place turns configuration into a [`rumqttc::MqttOptions`]:
//!
//! - the broker URL, `mqtt://host[:port]` (plain, port 1883) or
//!   `mqtts://host[:port]` (TLS, port 8883), without credentials in it;
//! - [`MqttSecurity`]: a username and a password read from a file or an
//!   environment variable, a private CA (`ca_file`, PEM; the system's trust
//!   store when absent), and an optional client certificate and key;
//! - TLS through rustls with the ring provider, so the build needs no cmake
//!   or C toolchain beyond cargo's.
//!
//! The password is never part of an error or a log line: errors name the
//! file or the variable it came from. [`describe_connection_error`] turns
//! the errors rumqttc reports while connecting into sentences that say
//! what failed (refused credentials, unknown CA, wrong host name, missing
//! client certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use serde::Deserialize;

/// Default port of `mqtt://`.
pub const DEFAULT_PORT: u16 = 1883;
/// Default port of `mqtts://`.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// Why connection settings could not be turned into client options. No
/// variant holds a password.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    /// The URL is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error(
        "invalid MQTT URL `{url}`: {problem} (expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT])"
    )]
    Url {
        /// The URL, with anything before an `@` replaced by `***`.
        url: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Settings that contradict each other or are incomplete.
    #[error("MQTT settings: {0}")]
    Inconsistent(&'static str),
    /// A file named in the settings could not be read.
    #[error("reading {what} {}: {source}", path.display())]
    Read {
        /// `password_file`, `ca_file`, `client_cert_file`, `client_key_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("{what} {}: {problem}", path.display())]
    BadFile {
        /// `password_file`, `ca_file`, `client_cert_file`, `client_key_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The password variable is not set (or not UTF-8, or empty).
    #[error("password_env: environment variable `{var}` {problem}")]
    Env {
        /// The variable's name.
        var: String,
        /// `is not set`, `is empty`, `is not UTF-8`.
        problem: &'static str,
    },
    /// rustls refused the TLS setup (e.g. a client key that does not match
    /// its certificate).
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Credentials and TLS files: the keys every client's `[mqtt]` section
/// shares (flattened into it), and the agent's `--mqtt-*` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MqttSecurity {
    /// MQTT username (needs a password from `password_file` or
    /// `password_env`).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (one line; a trailing newline is
    /// ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the CA(s) that signed the broker's certificate
    /// (`mqtts://` only; the system's trust store when absent).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for brokers that require one.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// A broker URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address; also the name checked against the broker's
    /// certificate.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

/// Everything a client needs to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: String,
    /// Keep-alive, s (at least 5).
    pub keep_alive_s: u64,
    /// Credentials and TLS files.
    pub security: MqttSecurity,
}

impl MqttSettings {
    /// Settings for `url` with no credentials and a 30 s keep-alive.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            keep_alive_s: 30,
            security: MqttSecurity::default(),
        }
    }

    /// With these credentials and TLS files.
    pub fn with_security(mut self, security: MqttSecurity) -> Self {
        self.security = security;
        self
    }

    /// Check the URL and that the settings are complete and consistent
    /// (a password source with a username, TLS files only with
    /// `mqtts://`, …) without reading any file.
    pub fn validate(&self) -> Result<BrokerUrl, MqttSetupError> {
        let url = parse_url(&self.url)?;
        self.security.check(url.tls)?;
        Ok(url)
    }

    /// Client options for `client_id`: address, keep-alive, credentials
    /// and TLS transport. Reads the password, CA and client certificate
    /// files now, so a missing or bad file is reported at start. The
    /// caller adds what is its own (last will, packet sizes, session).
    /// Never log the returned options with `{:?}`: rumqttc's `Debug`
    /// prints the password.
    pub fn options(&self, client_id: impl Into<String>) -> Result<MqttOptions, MqttSetupError> {
        let url = self.validate()?;
        let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
        opts.set_keep_alive(Duration::from_secs(self.keep_alive_s.max(5)));
        if let Some(user) = &self.security.username {
            opts.set_credentials(user.clone(), self.security.password()?);
        }
        if url.tls {
            let config = self.security.tls_config()?;
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        Ok(opts)
    }
}

/// Parse `mqtt://host[:port]`, `tcp://…` (plain) or `mqtts://…`, `ssl://…`
/// (TLS). Credentials in the URL are refused (and not echoed).
pub fn parse_url(url: &str) -> Result<BrokerUrl, MqttSetupError> {
    let bad = |problem| MqttSetupError::Url {
        url: redact(url),
        problem,
    };
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://").or(url.strip_prefix("tcp://")) {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://").or(url.strip_prefix("ssl://")) {
        (r, true)
    } else {
        return Err(bad("unknown scheme"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(bad(
            "credentials do not belong in the URL; use username and password_file or password_env",
        ));
    }
    let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
    let (host, port) = split_host_port(rest, default_port).ok_or_else(|| bad("bad port"))?;
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '[', ']']) {
        return Err(bad("no valid host"));
    }
    Ok(BrokerUrl {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(rest: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, p.parse().ok()?)),
            None if after.is_empty() => Some((host, default_port)),
            None => None,
        };
    }
    match rest.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((rest, default_port)),
    }
}

/// `url` with anything between `://` and an `@` replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

impl MqttSecurity {
    /// Refuse incomplete or contradictory settings.
    fn check(&self, tls: bool) -> Result<(), MqttSetupError> {
        use MqttSetupError::Inconsistent;
        let has_password = self.password_file.is_some() || self.password_env.is_some();
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(Inconsistent("set password_file or password_env, not both"));
        }
        match (&self.username, has_password) {
            (Some(u), _) if u.is_empty() => return Err(Inconsistent("username is empty")),
            (Some(_), false) => {
                return Err(Inconsistent(
                    "username needs a password: set password_file or password_env",
                ))
            }
            (None, true) => return Err(Inconsistent("a password needs a username")),
            _ => {}
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(Inconsistent(
                "client_cert_file and client_key_file go together",
            ));
        }
        let has_tls_files = self.ca_file.is_some() || self.client_cert_file.is_some();
        if has_tls_files && !tls {
            return Err(Inconsistent(
                "ca_file, client_cert_file and client_key_file need an mqtts:// URL",
            ));
        }
        Ok(())
    }

    /// The password, from its file or variable (checked by [`Self::check`]
    /// to be exactly one).
    fn password(&self) -> Result<String, MqttSetupError> {
        if let Some(path) = &self.password_file {
            let text = read_text("password_file", path)?;
            let pw = text.strip_suffix('\n').unwrap_or(&text);
            let pw = pw.strip_suffix('\r').unwrap_or(pw);
            if pw.is_empty() || pw.contains('\n') {
                return Err(MqttSetupError::BadFile {
                    what: "password_file",
                    path: path.clone(),
                    problem: "must hold the password on one non-empty line".into(),
                });
            }
            return Ok(pw.to_owned());
        }
        let var = self.password_env.clone().unwrap_or_default();
        let env_err = |problem| MqttSetupError::Env {
            var: var.clone(),
            problem,
        };
        match std::env::var(&var) {
            Ok(pw) if pw.is_empty() => Err(env_err("is empty")),
            Ok(pw) => Ok(pw),
            Err(std::env::VarError::NotPresent) => Err(env_err("is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(env_err("is not UTF-8")),
        }
    }

    /// A rustls client config with the ring provider: the CA file's (or
    /// the system's) roots and the client certificate, if any.
    fn tls_config(&self) -> Result<ClientConfig, MqttSetupError> {
        let roots = match &self.ca_file {
            Some(path) => ca_roots(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MqttSetupError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = pem_certs("client_cert_file", cert)?;
                let key = pem_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| MqttSetupError::Tls(format!("client certificate and key: {e}")))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

fn read_bytes(what: &'static str, path: &Path) -> Result<Vec<u8>, MqttSetupError> {
    std::fs::read(path).map_err(|source| MqttSetupError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_text(what: &'static str, path: &Path) -> Result<String, MqttSetupError> {
    String::from_utf8(read_bytes(what, path)?).map_err(|_| MqttSetupError::BadFile {
        what,
        path: path.to_owned(),
        problem: "is not UTF-8".into(),
    })
}

fn bad_file(what: &'static str, path: &Path, problem: impl Into<String>) -> MqttSetupError {
    MqttSetupError::BadFile {
        what,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Every certificate in a PEM file (at least one).
fn pem_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, MqttSetupError> {
    let bytes = read_bytes(what, path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(what, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad_file(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttSetupError> {
    const WHAT: &str = "client_key_file";
    let bytes = read_bytes(WHAT, path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| bad_file(WHAT, path, format!("not PEM: {e}")))?
        .ok_or_else(|| bad_file(WHAT, path, "holds no PEM private key"))
}

fn ca_roots(path: &Path) -> Result<RootCertStore, MqttSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certs("ca_file", path)? {
        roots
            .add(cert)
            .map_err(|e| bad_file("ca_file", path, format!("a certificate is unusable: {e}")))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, MqttSetupError> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(MqttSetupError::Tls(
            "mqtts:// without ca_file uses the system's trust store, and none was found; set ca_file"
                .into(),
        ));
    }
    Ok(roots)
}

/// A sentence saying why a connection attempt failed, for the log. Names
/// the cause where it can be told (refused credentials, a certificate not
/// signed by the CA, a certificate for another host name, a client
/// certificate the broker wants); never holds the password (rumqttc's
/// errors do not carry it).
pub fn describe_connection_error(err: &ConnectionError) -> String {
    match err {
        ConnectionError::ConnectionRefused(code) => describe_refusal(*code),
        ConnectionError::Tls(rumqttc::TlsError::TLS(e)) => describe_tls(e),
        ConnectionError::Tls(rumqttc::TlsError::Io(e))
        | ConnectionError::Io(e)
        | ConnectionError::MqttState(rumqttc::StateError::Io(e))
        | ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::Io(e),
        )) => describe_io(e),
        ConnectionError::Tls(rumqttc::TlsError::DNSName(_)) => {
            "TLS: the URL's host is not a valid server name".into()
        }
        other => other.to_string(),
    }
}

fn describe_refusal(code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::BadUserNamePassword => "the broker refused the username/password".into(),
        ConnectReturnCode::NotAuthorized => {
            "the broker refused the username/password (not authorized)".into()
        }
        other => format!("the broker refused the connection: {other:?}"),
    }
}

fn describe_io(e: &std::io::Error) -> String {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe_tls(tls);
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("nothing accepts connections at the broker's address ({e})")
        }
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => format!(
            "the broker closed the connection ({e}); a plain client on a TLS listener, or the reverse?"
        ),
        _ => format!("I/O: {e}"),
    }
}

fn describe_tls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS: the broker's certificate is not signed by a trusted CA (unknown issuer; check ca_file)"
                .into()
        }
        rustls::Error::InvalidCertificate(c) if format!("{c:?}").starts_with("NotValidForName") => {
            format!("TLS: the broker's certificate is not valid for the host name in the URL ({e})")
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS: the broker's certificate was refused: {c:?}")
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "TLS: the broker requires a client certificate (set client_cert_file and client_key_file)"
                .into()
        }
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::HandshakeFailure),
        ) => format!(
            "TLS: the broker refused the handshake ({a:?}): a missing or untrusted client certificate?"
        ),
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests;
