//! Time-series writer: line protocol to InfluxDB's `/api/v2/write` (InfluxDB
//! 1.8+, 2.x, 3.x, and VictoriaMetrics accept it) through the `influxdb2`
//! client.
//!
//! The control loop calls [`InfluxSink::push`], which only appends to a
//! bounded in-memory buffer and never waits on the network. A background
//! task ([`spawn`]) sends batches; while the database is down it keeps the
//! buffer (up to `max_buffered_points`, dropping the oldest beyond that and
//! counting them) and retries with a growing backoff, so nothing is lost for
//! an outage shorter than the buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::measurements::Point;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Where and how to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Organisation (InfluxDB 2.x; ignored by 1.8 and VictoriaMetrics).
    #[serde(default)]
    pub org: String,
    /// Bucket (2.x), or `database/retention-policy` (1.8).
    pub bucket: String,
    /// API token; empty for servers without authentication.
    #[serde(default)]
    pub token: String,
    /// Environment variable holding the token instead (keeps it out of the
    /// file).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Most points per write request.
    #[serde(default = "InfluxConfig::default_batch_points")]
    pub batch_points: usize,
    /// How often buffered points are sent, ms.
    #[serde(default = "InfluxConfig::default_flush_ms")]
    pub flush_ms: u64,
    /// Most points kept while the database is unreachable.
    #[serde(default = "InfluxConfig::default_max_buffered")]
    pub max_buffered_points: usize,
    /// Timeout of one write request, ms.
    #[serde(default = "InfluxConfig::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl InfluxConfig {
    fn default_batch_points() -> usize {
        5_000
    }
    fn default_flush_ms() -> u64 {
        1_000
    }
    fn default_max_buffered() -> usize {
        200_000
    }
    fn default_timeout_ms() -> u64 {
        5_000
    }

    /// A config with defaults for everything but the address.
    pub fn new(url: impl Into<String>, org: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            org: org.into(),
            bucket: bucket.into(),
            token: String::new(),
            token_env: None,
            batch_points: Self::default_batch_points(),
            flush_ms: Self::default_flush_ms(),
            max_buffered_points: Self::default_max_buffered(),
            timeout_ms: Self::default_timeout_ms(),
        }
    }
}

/// Counters of the writer, for `/metrics` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Points waiting to be written.
    pub buffered: usize,
    /// Points the database accepted.
    pub written: u64,
    /// Points dropped because the buffer was full.
    pub dropped: u64,
    /// Failed write requests.
    pub failures: u64,
    /// The last failure, if the last request failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Buffer {
    /// (sequence number, line) — the sequence lets a write that raced with
    /// overflow drop exactly the lines it sent.
    lines: VecDeque<(u64, String)>,
    next_seq: u64,
    stats: WriterStats,
}

/// Cheap, cloneable handle the control loop pushes points into.
#[derive(Debug, Clone)]
pub struct InfluxSink {
    buffer: Arc<Mutex<Buffer>>,
    wake: Arc<Notify>,
    max_buffered: usize,
    batch_points: usize,
}

impl InfluxSink {
    /// Queue a point; never blocks on the network. Points without fields
    /// are ignored.
    pub fn push(&self, point: &Point) {
        let line = point.to_line();
        if line.is_empty() {
            return;
        }
        let full_batch = {
            let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let seq = b.next_seq;
            b.next_seq += 1;
            b.lines.push_back((seq, line));
            while b.lines.len() > self.max_buffered {
                b.lines.pop_front();
                b.stats.dropped += 1;
            }
            b.lines.len() >= self.batch_points
        };
        if full_batch {
            self.wake.notify_one();
        }
    }

    /// Queue several points.
    pub fn push_all<'a>(&self, points: impl IntoIterator<Item = &'a Point>) {
        for p in points {
            self.push(p);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> WriterStats {
        let b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = b.stats.clone();
        s.buffered = b.lines.len();
        s
    }
}

/// Start the writer task. It runs until `shutdown` turns true, then makes
/// one last attempt to flush what is buffered.
pub fn spawn(cfg: InfluxConfig, shutdown: watch::Receiver<bool>) -> (InfluxSink, JoinHandle<()>) {
    let sink = InfluxSink {
        buffer: Arc::new(Mutex::new(Buffer::default())),
        wake: Arc::new(Notify::new()),
        max_buffered: cfg.max_buffered_points.max(1),
        batch_points: cfg.batch_points.max(1),
    };
    let task = tokio::spawn(run(cfg, sink.clone(), shutdown));
    (sink, task)
}

async fn run(cfg: InfluxConfig, sink: InfluxSink, mut shutdown: watch::Receiver<bool>) {
    let token = match &cfg.token_env {
        Some(var) => std::env::var(var).unwrap_or_else(|_| {
            tracing::warn!(var = %var, "Time-series token variable is not set; writing without a token.");
            String::new()
        }),
        None => cfg.token.clone(),
    };
    let client = influxdb2::Client::new(cfg.url.clone(), cfg.org.clone(), token);
    let flush = Duration::from_millis(cfg.flush_ms.max(10));
    let timeout = Duration::from_millis(cfg.timeout_ms.max(10));
    let mut backoff = Duration::ZERO;
    loop {
        let wait = flush.max(backoff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sink.wake.notified(), if backoff.is_zero() => {}
            _ = shutdown.changed() => {}
        }
        let stopping = *shutdown.borrow();
        // Send everything that is buffered, batch by batch.
        loop {
            match write_batch(&client, &cfg, &sink, timeout).await {
                Ok(0) => {
                    backoff = Duration::ZERO;
                    break;
                }
                Ok(_) => backoff = Duration::ZERO,
                Err(e) => {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
                    tracing::warn!(url = %cfg.url, error = %e, retry_in_ms = backoff.as_millis() as u64, "Time-series write failed; points stay buffered.");
                    break;
                }
            }
        }
        if stopping {
            let left = sink.stats().buffered;
            if left > 0 {
                tracing::warn!(
                    points = left,
                    "Time-series writer stopping with unsent points."
                );
            }
            return;
        }
    }
}

/// Send one batch; returns how many points were written.
async fn write_batch(
    client: &influxdb2::Client,
    cfg: &InfluxConfig,
    sink: &InfluxSink,
    timeout: Duration,
) -> Result<usize, String> {
    let (body, last_seq, n) = {
        let b = sink.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if b.lines.is_empty() {
            return Ok(0);
        }
        let batch: Vec<&(u64, String)> = b.lines.iter().take(sink.batch_points).collect();
        let body: String = batch.iter().map(|(_, l)| l.as_str()).collect();
        (
            body,
            batch.last().map(|(s, _)| *s).unwrap_or(0),
            batch.len(),
        )
    };
    let result = tokio::time::timeout(
        timeout,
        client.write_line_protocol(&cfg.org, &cfg.bucket, body),
    )
    .await;
    let mut b = sink.buffer.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(Ok(())) => {
            while b.lines.front().is_some_and(|(s, _)| *s <= last_seq) {
                b.lines.pop_front();
            }
            b.stats.written += n as u64;
            b.stats.last_error = None;
            Ok(n)
        }
        Ok(Err(e)) => {
            b.stats.failures += 1;
            let msg = e.to_string();
            b.stats.last_error = Some(msg.clone());
            Err(msg)
        }
        Err(_) => {
            b.stats.failures += 1;
            let msg = format!("no answer within {} ms", timeout.as_millis());
            b.stats.last_error = Some(msg.clone());
            Err(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::measurements::{fields, SERVER};

    fn point(i: i64) -> Point {
        Point::new(SERVER, i)
            .tag("site", "s")
            .float(fields::POWER_W, i as f64)
    }

    #[tokio::test]
    async fn a_full_buffer_drops_the_oldest_points_and_counts_them() {
        let (_tx, rx) = watch::channel(false);
        // Nothing listens on port 9 of the loopback: every write fails.
        let mut cfg = InfluxConfig::new("http://127.0.0.1:9", "org", "bucket");
        cfg.max_buffered_points = 10;
        cfg.flush_ms = 60_000;
        let (sink, task) = spawn(cfg, rx);
        for i in 0..25 {
            sink.push(&point(i));
        }
        let s = sink.stats();
        assert_eq!(s.buffered, 10);
        assert_eq!(s.dropped, 15);
        let b = sink.buffer.lock().unwrap();
        assert_eq!(b.lines.front().map(|(seq, _)| *seq), Some(15));
        drop(b);
        task.abort();
    }

    #[tokio::test]
    async fn points_without_fields_are_not_queued() {
        let (_tx, rx) = watch::channel(false);
        let (sink, task) = spawn(InfluxConfig::new("http://127.0.0.1:9", "o", "b"), rx);
        sink.push(
            &Point::new(SERVER, 1)
                .tag("site", "s")
                .float(fields::POWER_W, f64::NAN),
        );
        assert_eq!(sink.stats().buffered, 0);
        task.abort();
    }
}
