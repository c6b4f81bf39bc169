//! The twin's side of the controller's HTTP API: workload admitted with
//! `POST /api/v1/vms` (as a site's tooling would), and the figures the demo
//! prints read from `GET /api/v1/site` — never from the controller's memory.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use scheduler::model::Vm;
use serde::Deserialize;

/// Why a request to the controller's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be made or answered.
    #[error("{what}: {detail}")]
    Transport {
        /// Method and path.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The API answered with an error status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// Method and path.
        what: String,
        /// Status code.
        status: u16,
        /// Its body (cut to 200 characters).
        body: String,
    },
    /// The answer is not the JSON expected.
    #[error("{what}: unexpected answer: {detail}")]
    Decode {
        /// Method and path.
        what: String,
        /// What is wrong.
        detail: String,
    },
}

/// What the demo reads of `GET /api/v1/site`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteView {
    /// The VMs the controller has.
    pub vms: BTreeSet<String>,
    /// Plans in its history.
    pub plans: u64,
    /// Its total gain over the greedy baseline.
    pub gain: f64,
    /// Actions that did not happen, as it keeps them.
    pub failed_actions: usize,
    /// Batch jobs it counted done (its latest ones).
    pub finished: BTreeSet<String>,
}

#[derive(Deserialize)]
struct SiteBody {
    vms: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    history: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    total_gain: f64,
    #[serde(default)]
    failed_actions: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    finished: Vec<FinishedBody>,
}

#[derive(Deserialize)]
struct FinishedBody {
    id: String,
}

/// A client of one controller's API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client of the API at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<String, ApiError> {
        let what = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| ApiError::Transport {
            what: what.clone(),
            detail: e.to_string(),
        };
        let mut resp = match body {
            Some(b) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b)
                .map_err(transport)?,
            None => self.agent.get(&url).call().map_err(transport)?,
        };
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ApiError::Transport {
                what: what.clone(),
                detail: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                what,
                status,
                body: text.chars().take(200).collect(),
            });
        }
        Ok(text)
    }

    /// Admit `vm` (pending: the controller's planner places it).
    pub async fn admit(&self, vm: &Vm) -> Result<(), ApiError> {
        let body = serde_json::to_string(vm).map_err(|e| ApiError::Decode {
            what: "POST /api/v1/vms".into(),
            detail: e.to_string(),
        })?;
        let api = self.clone();
        tokio::task::spawn_blocking(move || api.call("POST", "/api/v1/vms", Some(body)))
            .await
            .map_err(|e| ApiError::Transport {
                what: "POST /api/v1/vms".into(),
                detail: e.to_string(),
            })?
            .map(|_| ())
    }

    /// Read what the demo prints of the site.
    pub async fn site(&self) -> Result<SiteView, ApiError> {
        let what = "GET /api/v1/site";
        let api = self.clone();
        let text = tokio::task::spawn_blocking(move || api.call("GET", "/api/v1/site", None))
            .await
            .map_err(|e| ApiError::Transport {
                what: what.into(),
                detail: e.to_string(),
            })??;
        let body: SiteBody = serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            what: what.into(),
            detail: e.to_string(),
        })?;
        Ok(SiteView {
            vms: body.vms.into_keys().collect(),
            plans: body.history.len() as u64,
            gain: body.total_gain,
            failed_actions: body.failed_actions.len(),
            finished: body.finished.into_iter().map(|f| f.id).collect(),
        })
    }
}
