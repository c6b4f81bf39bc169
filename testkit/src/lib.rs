//! Test support for Phoenix's integration tests: start real peers — a
//! mosquitto broker, a Python script (pymodbus server, paho client) or any
//! program — on free loopback ports, wait until they listen, and stop them
//! when the guard drops. Tests talk to 127.0.0.1 only.
//!
//! ```no_run
//! let broker = phoenix_testkit::Mosquitto::start().expect("mosquitto installed");
//! let url = broker.url(); // mqtt://127.0.0.1:PORT
//! ```

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod secure;
pub use secure::{CertFiles, SecureBroker, TestPki};

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race remains,
/// which is the usual trade-off for programs that cannot report their port).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Wait until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens on 127.0.0.1:{port} after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Spawn `cmd` with stdin closed.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        let child = cmd.stdin(Stdio::null()).spawn()?;
        Ok(Self { child })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and its status).
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Kill the process now and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mosquitto broker on a free loopback port, anonymous access allowed,
/// no persistence; stopped when dropped.
#[derive(Debug)]
pub struct Mosquitto(Listening);

impl Mosquitto {
    /// Start a broker on a free port.
    pub fn start() -> io::Result<Self> {
        Self::start_on(free_port())
    }

    /// Start a broker on `port` (to restart one on the port it had).
    pub fn start_on(port: u16) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )?;
        let mut cmd = Command::new(mosquitto_binary());
        cmd.arg("-c").arg(&conf).stderr(Stdio::inherit());
        Listening::spawn(&mut cmd, port, dir, Duration::from_secs(10)).map(Self)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.0.port)
    }

    /// Stop the broker (as in a broker restart test); `start_on(port)` brings
    /// one back.
    pub fn stop(self) -> u16 {
        self.0.stop()
    }
}

/// A server process listening on a loopback port, with its scratch folder.
#[derive(Debug)]
struct Listening {
    port: u16,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Listening {
    /// Spawn `cmd` (stdout discarded) and wait up to `timeout` for `port`.
    fn spawn(
        cmd: &mut Command,
        port: u16,
        dir: tempfile::TempDir,
        timeout: Duration,
    ) -> io::Result<Self> {
        let guard = ChildGuard::spawn(cmd.stdout(Stdio::null()))?;
        wait_for_port(port, timeout)?;
        Ok(Self {
            port,
            guard,
            _dir: dir,
        })
    }

    fn stop(mut self) -> u16 {
        self.guard.kill();
        self.port
    }
}

fn mosquitto_binary() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// Start `python3 script args…` and wait until it listens on `port`.
pub fn python_server(script: &Path, args: &[&str], port: u16) -> io::Result<ChildGuard> {
    let guard = ChildGuard::spawn(
        Command::new("python3")
            .arg(script)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    Ok(guard)
}

/// A plain-HTTP request to a test server: `(status, body)`. Non-2xx
/// statuses are returned, not errors; transport failures are errors.
pub fn http(method: &str, url: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let to_io = |e: ureq::Error| io::Error::other(format!("{method} {url}: {e}"));
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(url).call().map_err(to_io)?,
        ("DELETE", _) => agent.delete(url).call().map_err(to_io)?,
        ("POST", b) => agent.post(url).send(b.unwrap_or("")).map_err(to_io)?,
        ("PUT", b) => agent.put(url).send(b.unwrap_or("")).map_err(to_io)?,
        _ => return Err(io::Error::other(format!("unsupported method {method}"))),
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().map_err(to_io)?;
    Ok((status, text))
}

/// Percent-encode a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An InfluxDB 1.x server (Debian `influxdb`, `/usr/bin/influxd`) on free
/// loopback ports, data in a temporary directory; stopped when dropped.
/// Answers InfluxQL on `/query` and accepts line protocol on `/write`.
#[derive(Debug)]
pub struct Influxd(Listening);

impl Influxd {
    /// Start a server.
    pub fn start() -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (http_port, rpc_port) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = dir.path().join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n\
                 [ifql]\n  enabled = false\n\
                 [logging]\n  level = \"warn\"\n"
            ),
        )?;
        let mut cmd = Command::new("influxd");
        cmd.arg("-config").arg(&conf).stderr(Stdio::null());
        Listening::spawn(&mut cmd, http_port, dir, Duration::from_secs(30)).map(Self)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The server process (for fault tests).
    pub fn process(&mut self) -> &mut ChildGuard {
        &mut self.0.guard
    }
}

/// A VictoriaMetrics single-node server (Debian `victoria-metrics`) on a free
/// loopback port; accepts InfluxDB line protocol on `/api/v2/write` and
/// `/write`; stopped when dropped.
#[derive(Debug)]
pub struct VictoriaMetrics(Listening);

impl VictoriaMetrics {
    /// Start a server.
    pub fn start() -> io::Result<Self> {
        Self::start_on(free_port())
    }

    /// Start a server on `port` (to bring one back after a stop).
    pub fn start_on(port: u16) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new("victoria-metrics");
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=ERROR")
            .stderr(Stdio::null());
        Listening::spawn(&mut cmd, port, dir, Duration::from_secs(30)).map(Self)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Stop the server (as in a database-down test).
    pub fn stop(self) -> u16 {
        self.0.stop()
    }
}

/// A Prometheus server (Debian `prometheus`) on a free loopback port that
/// scrapes `targets` (host:port) every `interval_s`; stopped when dropped.
#[derive(Debug)]
pub struct Prometheus(Listening);

impl Prometheus {
    /// Start a server scraping `targets` at `/metrics`.
    pub fn start(job: &str, targets: &[String], interval_s: u32) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let conf = dir.path().join("prometheus.yml");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: {interval_s}s\n  scrape_timeout: {interval_s}s\n\
                 scrape_configs:\n  - job_name: '{job}'\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--log.level=error")
            .stderr(Stdio::null());
        Listening::spawn(&mut cmd, port, dir, Duration::from_secs(30)).map(Self)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let p = free_port();
        assert!(p > 0);
        TcpListener::bind(("127.0.0.1", p)).expect("port was free");
    }

    #[test]
    fn wait_for_port_times_out_when_nothing_listens() {
        let p = free_port();
        let err = wait_for_port(p, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    #[ignore = "needs mosquitto (scripts/install-test-deps)"]
    fn mosquitto_starts_and_stops() {
        let broker = Mosquitto::start().expect("mosquitto");
        let port = broker.port();
        wait_for_port(port, Duration::from_secs(1)).expect("listening");
        broker.stop();
        assert!(wait_for_port(port, Duration::from_millis(300)).is_err());
    }
}
