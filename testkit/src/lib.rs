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
pub struct Mosquitto {
    port: u16,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

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
        let guard = ChildGuard::spawn(
            Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )?;
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(Self {
            port,
            guard,
            _dir: dir,
        })
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stop the broker (as in a broker restart test); `start_on(port)` brings
    /// one back.
    pub fn stop(mut self) -> u16 {
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
