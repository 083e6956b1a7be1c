//! Checks before any load: the server is reachable, speaks the selected API, and
//! what it tells about itself (`/info`, models, `/metrics`, `/tokenize`).
//!
//! The probe is a real two-token request through the same code path as the load,
//! so "another API shape" is judged by exactly the parser the run will use.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::measure::record::{ErrorKind, Outcome, RunClock};
use crate::plan::workload::{words, Item, Prompt};
use crate::report::otel::Tracing;
use crate::send::client::{execute, Job, Target};

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot reach {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{url}/health answered {status}: the server is not ready (use --wait to wait for it)")]
    NotReady { url: String, status: u16 },
    #[error("{url} answered {status}: this server has no {api} endpoint there (is --api right?)")]
    NoEndpoint {
        url: String,
        status: u16,
        api: &'static str,
    },
    #[error("{url} answered with another API shape than {api}: {detail}")]
    Shape {
        url: String,
        api: &'static str,
        detail: String,
    },
    #[error("{url} rejected the probe request ({status}): {message}")]
    Rejected {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "{url} answered {status}: the server requires credentials (use --api-key or --header)"
    )]
    Unauthorized { url: String, status: u16 },
    #[error("--model is needed: {0} lists no model")]
    NoModel(String),
}

/// What the server said about itself.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub info: Option<Value>,
    /// `/metrics` answered with Prometheus text.
    pub metrics: bool,
    /// The GPU name from `/info` or the `hw_name` label of the GPU gauges.
    pub gpu_name: Option<String>,
    /// Server tokens per word of the synthetic vocabulary, if `/tokenize` works.
    pub tokens_per_word: Option<f64>,
}

fn cause(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// Wait (up to `wait`) for the server to accept connections and report ready.
/// A server without `/health` (404) counts as ready.
pub async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    wait: Duration,
) -> Result<(), PreflightError> {
    let deadline = Instant::now() + wait;
    loop {
        let res = http
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let retry = Instant::now() < deadline;
        match res {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => return Ok(()),
            Ok(r) if !retry => {
                return Err(PreflightError::NotReady {
                    url: base.to_string(),
                    status: r.status().as_u16(),
                })
            }
            Err(e) if !retry => {
                return Err(PreflightError::Unreachable {
                    url: base.to_string(),
                    cause: cause(&e),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn get_json(http: &reqwest::Client, url: String) -> Option<Value> {
    get_checked(http, url).await.ok().flatten()
}

/// GET a JSON document; `Err` only when the server refused the credentials,
/// which every later request would meet too.
async fn get_checked(http: &reqwest::Client, url: String) -> Result<Option<Value>, PreflightError> {
    let Ok(r) = http.get(&url).timeout(Duration::from_secs(5)).send().await else {
        return Ok(None);
    };
    let status = r.status().as_u16();
    if status == 401 || status == 403 {
        return Err(PreflightError::Unauthorized { url, status });
    }
    if !r.status().is_success() {
        return Ok(None);
    }
    Ok(r.json().await.ok())
}

/// The model to name in OpenAI requests when `--model` is not given.
pub async fn discover_model(
    http: &reqwest::Client,
    base: &str,
    info: Option<&Value>,
) -> Result<String, PreflightError> {
    let listed = get_checked(http, format!("{base}/v1/models"))
        .await?
        .and_then(|v| {
            v.get("data")?
                .get(0)?
                .get("id")?
                .as_str()
                .map(str::to_string)
        });
    listed
        .or_else(|| info?.get("model_id")?.as_str().map(str::to_string))
        .ok_or_else(|| PreflightError::NoModel(base.to_string()))
}

/// Learn what the server offers beyond the streaming endpoint. Nothing here is
/// required; absent facts are reported as absent.
pub async fn facts(http: &reqwest::Client, base: &str) -> ServerFacts {
    let info = get_json(http, format!("{base}/info")).await;
    let scrape = crate::measure::server::scrape(http, base).await.ok();
    let gpu_from_metrics = scrape.as_ref().and_then(|s| {
        s.samples
            .iter()
            .find(|x| x.name.starts_with("hw_gpu_"))
            .and_then(|x| x.label("hw_name").map(str::to_string))
    });
    let gpu_from_info = info.as_ref().and_then(|i| {
        i.get("gpu_name")
            .or_else(|| i.get("gpu"))?
            .as_str()
            .map(str::to_string)
    });
    ServerFacts {
        info,
        metrics: scrape.is_some(),
        gpu_name: gpu_from_info.or(gpu_from_metrics),
        tokens_per_word: tokens_per_word(http, base).await,
    }
}

/// Calibrate synthetic prompt length against the server's own tokenizer (so
/// `--input-len` means server tokens, not some other tokenizer's).
async fn tokens_per_word(http: &reqwest::Client, base: &str) -> Option<f64> {
    use rand::SeedableRng;
    const WORDS: usize = 400;
    let text = words(WORDS, &mut rand::rngs::StdRng::seed_from_u64(1));
    let r = http
        .post(format!("{base}/tokenize"))
        .json(&serde_json::json!({"inputs": text, "add_special_tokens": false}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    let v: Value = r.json().await.ok()?;
    let count = match &v {
        Value::Array(a) => Some(a.len() as u64),
        Value::Object(o) => ["tokens", "ids", "input_ids", "token_ids"]
            .iter()
            .find_map(|k| o.get(*k)?.as_array().map(|a| a.len() as u64))
            .or_else(|| {
                ["count", "num_tokens", "length"]
                    .iter()
                    .find_map(|k| o.get(*k)?.as_u64())
            }),
        _ => None,
    }?;
    (count > 0).then(|| count as f64 / WORDS as f64)
}

/// Send one short request and judge the answer's shape.
pub async fn probe(target: &Target, tracing: &Tracing) -> Result<(), PreflightError> {
    let clock = RunClock::now();
    let job = Job {
        id: u64::MAX,
        step: 0,
        scheduled: clock.start,
        item: Item {
            prompt: Prompt::Text("Say hello.".into()),
            max_tokens: 2,
        },
        turn: None,
    };
    let rec = execute(target, &clock, tracing, job).await.record;
    let url = target.endpoint.clone();
    let api = target.api.name();
    match rec.outcome {
        Outcome::Ok if rec.chunks > 0 || rec.output_tokens.is_some() => Ok(()),
        Outcome::Ok => Err(PreflightError::Shape {
            url,
            api,
            detail: "the stream completed without any content event".into(),
        }),
        Outcome::Error { kind, message } => Err(match kind {
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Transport => {
                PreflightError::Unreachable {
                    url,
                    cause: message,
                }
            }
            ErrorKind::Http(status @ (401 | 403)) => PreflightError::Unauthorized { url, status },
            ErrorKind::Http(status @ (404 | 405)) => {
                PreflightError::NoEndpoint { url, status, api }
            }
            ErrorKind::Http(status) => PreflightError::Rejected {
                url,
                status,
                message,
            },
            ErrorKind::Truncated if rec.chunks == 0 => PreflightError::Shape {
                url,
                api,
                detail: format!("no {api} stream events in the response ({message})"),
            },
            ErrorKind::Stream(k) => PreflightError::Rejected {
                url,
                status: rec.http_status.unwrap_or(200),
                message: format!("{k}: {message}"),
            },
            ErrorKind::BadEvent | ErrorKind::Truncated => PreflightError::Shape {
                url,
                api,
                detail: message,
            },
        }),
    }
}
