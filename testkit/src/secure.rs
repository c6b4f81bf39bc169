//! A mosquitto broker with passwords, an ACL and TLS, and the certificates
//! it needs, made with the `openssl` command for each test.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{free_port, mosquitto_binary, Listening, Mosquitto};

/// A private CA and the certificates it signed, in a scratch folder
/// removed on drop. Keys are EC P-256; certificates are valid for a day.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

/// A certificate and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl TestPki {
    /// A new CA named `name` (files `ca.pem`, `ca.key`).
    pub fn new(name: &str) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        Ok(Self { dir })
    }

    /// The CA certificate (PEM): what a client's `ca_file` names.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (`127.0.0.1` style entries become
    /// IP names, others DNS names), signed by this CA.
    pub fn server(&self, file_stem: &str, names: &[&str]) -> io::Result<CertFiles> {
        let san = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        let cn = names.first().copied().unwrap_or("server");
        self.issue(
            file_stem,
            cn,
            &format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
        )
    }

    /// A client certificate with common name `cn`, signed by this CA.
    pub fn client(&self, file_stem: &str, cn: &str) -> io::Result<CertFiles> {
        self.issue(file_stem, cn, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, stem: &str, cn: &str, extensions: &str) -> io::Result<CertFiles> {
        let d = self.dir.path();
        let (key, csr, cert, ext) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.pem"),
            format!("{stem}.ext"),
        );
        std::fs::write(
            d.join(&ext),
            format!("basicConstraints=CA:FALSE\n{extensions}"),
        )?;
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        )?;
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let serial = format!(
            "0x{:x}{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        )?;
        Ok(CertFiles {
            cert: d.join(cert),
            key: d.join(key),
        })
    }
}

/// What [`Mosquitto::start_secure`] sets up.
#[derive(Debug, Clone, Default)]
pub struct SecureBroker<'a> {
    /// Users and passwords written with `mosquitto_passwd -b`; anonymous
    /// clients are refused.
    pub users: &'a [(&'a str, &'a str)],
    /// The ACL file (`acl_file`), if any.
    pub acl_file: Option<&'a Path>,
    /// TLS on the listener: the CA clients' certificates are checked
    /// against, and the server's certificate. None: a plain listener.
    pub tls: Option<(&'a Path, &'a CertFiles)>,
    /// Refuse TLS clients without a certificate signed by the CA.
    pub require_certificate: bool,
}

impl Mosquitto {
    /// Start a broker on a free loopback port with a password file, an
    /// optional ACL file and an optional TLS listener.
    pub fn start_secure(setup: &SecureBroker<'_>) -> io::Result<Self> {
        let port = free_port();
        let dir = tempfile::tempdir()?;
        let passwd = dir.path().join("passwd");
        for (i, (user, password)) in setup.users.iter().enumerate() {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let out = cmd
                .arg("-b")
                .arg(&passwd)
                .arg(user)
                .arg(password)
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "mosquitto_passwd for {user}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        let mut conf = format!(
            "per_listener_settings false\nuser root\nallow_anonymous false\npassword_file {}\npersistence false\nlog_dest stderr\nlog_type error\n",
            passwd.display()
        );
        if let Some(acl) = setup.acl_file {
            conf.push_str(&format!("acl_file {}\n", acl.display()));
        }
        conf.push_str(&format!("listener {port} 127.0.0.1\n"));
        if let Some((ca, server)) = setup.tls {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                ca.display(),
                server.cert.display(),
                server.key.display(),
                setup.require_certificate
            ));
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let mut cmd = Command::new(mosquitto_binary());
        cmd.arg("-c").arg(&path).stderr(Stdio::inherit());
        Listening::spawn(&mut cmd, port, dir, Duration::from_secs(10)).map(Self)
    }

    /// `mqtts://127.0.0.1:PORT`
    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.0.port)
    }
}
