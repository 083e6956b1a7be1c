//! The server's own view of a step, from `/metrics` deltas: its latency
//! histograms compared with the client's samples, and the batch it really ran.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::measure::promtext::{agreement, Agreement, Scrape};
use crate::measure::record::RequestRecord;

/// The server's own view of the step, from `/metrics` deltas.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerView {
    pub ttft: Option<Agreement>,
    pub e2e: Option<Agreement>,
    /// Mean sequences per decode step: what batch size the server really ran.
    pub decode_batch_size_mean: Option<f64>,
}

const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
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
    let decode = [("candlelight_step_kind", "decode")];
    Some(ServerView {
        ttft: delta(TTFT, &[]).map(|h| agreement(&ttft, &h)),
        e2e: delta(E2E, &[]).map(|h| agreement(&e2e, &h)),
        decode_batch_size_mean: delta("candlelight_batch_size", &decode).and_then(|h| h.mean()),
    })
}
