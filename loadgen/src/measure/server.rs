//! The server's own view of a step, from `/metrics` deltas: its latency
//! histograms compared with the client's samples, and the batch it really ran.

use std::time::{Duration, Instant};

use serde::Serialize;

use diagnosis::Summary;

use crate::measure::promtext::{agreement, Agreement, Histogram, Scrape};
use crate::measure::record::RequestRecord;

/// The server's own view of the step, from `/metrics` deltas.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerView {
    pub ttft: Option<Agreement>,
    pub e2e: Option<Agreement>,
    /// Mean sequences per decoding step (decode and mixed steps): the batch
    /// size the server really ran.
    pub decode_batch_size_mean: Option<f64>,
    /// Time requests waited for admission (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<Summary>,
    /// Steps that carried prompt tokens (prefill and mixed), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_step: Option<Summary>,
    /// Pure decode steps, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_step: Option<Summary>,
}

/// p50 and p99 of a histogram delta (Prometheus' interpolation).
fn summary(h: Option<Histogram>) -> Option<Summary> {
    let h = h?;
    Some(Summary {
        count: Some(h.count.round() as u64),
        mean: h.mean(),
        ..Summary::new(h.quantile(0.5)?, h.quantile(0.99)?)
    })
}

const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
const STEP: &str = "candlelight_step_duration_seconds";
const STEP_KIND: &str = "candlelight_step_kind";
const E2E: &str = "gen_ai_server_request_duration_seconds";

/// Fetch and parse `/metrics`.
pub async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<Scrape> {
    let resp = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?;
    Ok(Scrape::parse(&resp.text().await?)?)
}

/// The server's histograms over the step, compared with the client's samples.
/// Waits (up to 2 s) for the server to record the step's last requests.
pub async fn server_view(
    http: &reqwest::Client,
    base: &str,
    before: &Scrape,
    records: &[RequestRecord],
) -> Option<ServerView> {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.outcome.is_ok()).collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = scrape(http, base).await.ok()?;
    loop {
        let seen = after
            .histogram(E2E, &[])
            .map(|h| h.since(before.histogram(E2E, &[]).as_ref()).count);
        if seen.is_none_or(|n| n >= ok.len() as f64) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(http, base).await.ok()?;
    }
    let delta = |name: &str, filter: &[(&str, &str)]| {
        after
            .histogram(name, filter)
            .map(|h| h.since(before.histogram(name, filter).as_ref()))
    };
    let ttft: Vec<f64> = records.iter().filter_map(|r| r.ttft()).collect();
    let e2e: Vec<f64> = ok.iter().map(|r| r.e2e()).collect();
    let kind = |k: &'static str| [(STEP_KIND, k)];
    let both = |name: &str, a: &'static str, b: &'static str| match (
        delta(name, &kind(a)),
        delta(name, &kind(b)),
    ) {
        (Some(x), Some(y)) => Some(x.plus(&y)),
        (x, y) => x.or(y),
    };
    Some(ServerView {
        ttft: delta(TTFT, &[]).map(|h| agreement(&ttft, &h)),
        e2e: delta(E2E, &[]).map(|h| agreement(&e2e, &h)),
        decode_batch_size_mean: both("candlelight_batch_size", "decode", "mixed")
            .and_then(|h| h.mean()),
        queue_time: summary(delta("candlelight_queue_duration_seconds", &[])),
        prefill_step: summary(both(STEP, "prefill", "mixed")),
        decode_step: summary(delta(STEP, &kind("decode"))),
    })
}
