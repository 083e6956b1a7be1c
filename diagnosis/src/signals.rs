//! What the rules read: time series and distribution summaries of the signals
//! candlelight measures, from its server, its host, its GPU and a load test.
//!
//! Every field is optional: a missing signal skips the rules that need it, and
//! the diagnosis says so in its evidence. Fractions are 0..1; times are seconds.

use serde::{Deserialize, Serialize};

/// A time series: `(seconds, value)` points in time order, all finite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<(f64, f64)>", into = "Vec<(f64, f64)>")]
pub struct Series {
    points: Vec<(f64, f64)>,
}

/// Why a series was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignalError {
    #[error("series point {index} is not finite: ({t}, {value})")]
    NotFinite { index: usize, t: f64, value: f64 },
}

impl Series {
    /// A series from points in any order; refuses NaN and infinities.
    pub fn new(mut points: Vec<(f64, f64)>) -> Result<Self, SignalError> {
        if let Some((index, &(t, value))) = points
            .iter()
            .enumerate()
            .find(|(_, (t, v))| !t.is_finite() || !v.is_finite())
        {
            return Err(SignalError::NotFinite { index, t, value });
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Self { points })
    }

    /// `n` points from `start` every `step` seconds, valued `f(t)`; points whose
    /// value is not finite are left out.
    pub fn sampled(start: f64, step: f64, n: usize, f: impl Fn(f64) -> f64) -> Self {
        let points = (0..n)
            .map(|i| start + step * i as f64)
            .map(|t| (t, f(t)))
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .collect();
        Self { points }
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points with `from <= t <= to`.
    pub fn between(&self, from: f64, to: f64) -> &[(f64, f64)] {
        let lo = self.points.partition_point(|p| p.0 < from);
        let hi = self.points.partition_point(|p| p.0 <= to);
        &self.points[lo..hi.max(lo)]
    }

    /// The last value at or before `t` (the first value before the series starts).
    pub fn at(&self, t: f64) -> Option<f64> {
        let i = self.points.partition_point(|p| p.0 <= t);
        match i {
            0 => self.points.first().map(|p| p.1),
            i => Some(self.points[i - 1].1),
        }
    }
}

impl TryFrom<Vec<(f64, f64)>> for Series {
    type Error = SignalError;
    fn try_from(points: Vec<(f64, f64)>) -> Result<Self, SignalError> {
        Series::new(points)
    }
}

impl From<Series> for Vec<(f64, f64)> {
    fn from(s: Series) -> Self {
        s.points
    }
}

/// A distribution over the window (seconds for latencies). From loadgen: exact
/// percentiles of its samples; from Prometheus: `histogram_quantile`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    #[serde(default)]
    pub mean: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub count: Option<u64>,
}

impl Summary {
    pub fn new(p50: f64, p99: f64) -> Self {
        Self {
            p50,
            p99,
            mean: None,
            max: None,
            count: None,
        }
    }
}

/// The stretch of time judged, in the clock of the series' timestamps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// After warm-up: points before it are ignored.
    pub start_s: f64,
    pub end_s: f64,
    /// When the load stopped, if the series go on after it (memory rules look
    /// there for memory given back).
    #[serde(default)]
    pub load_end_s: Option<f64>,
    /// How evidence names the window ("5m", "step 2"); default: its length in seconds.
    #[serde(default)]
    pub label: Option<String>,
}

impl Window {
    pub fn new(start_s: f64, end_s: f64) -> Self {
        Self {
            start_s,
            end_s,
            load_end_s: None,
            label: None,
        }
    }

    pub fn seconds(&self) -> f64 {
        (self.end_s - self.start_s).max(0.0)
    }

    /// The end of the loaded part of the window.
    pub fn load_end(&self) -> f64 {
        self.load_end_s
            .map_or(self.end_s, |e| e.clamp(self.start_s, self.end_s))
    }
}

/// The server's own view (its `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSignals {
    /// `candlelight_requests_waiting`.
    pub requests_waiting: Option<Series>,
    /// `candlelight_requests_running`.
    pub requests_running: Option<Series>,
    /// `candlelight_batch_limit` (`--max-batch-size`).
    pub batch_limit: Option<f64>,
    /// Mean sequences per decode step over the window (batch size sum / count).
    pub decode_batch_mean: Option<f64>,
    /// `candlelight_kv_cache_utilization_ratio`: reserved KV / capacity.
    pub kv_cache_utilization: Option<Series>,
    pub queue_time: Option<Summary>,
    pub ttft: Option<Summary>,
    /// Inter-token latency (gaps between consecutive tokens of a request).
    pub itl: Option<Summary>,
    pub e2e: Option<Summary>,
    /// `candlelight_step_duration_seconds{candlelight_step_kind="prefill"}`.
    pub prefill_step: Option<Summary>,
    /// `candlelight_step_duration_seconds{candlelight_step_kind="decode"}`.
    pub decode_step: Option<Summary>,
    /// Context for the caller's report; no rule reads it.
    pub prompt_tokens_per_s: Option<f64>,
    /// Context for the caller's report; no rule reads it.
    pub generated_tokens_per_s: Option<f64>,
    /// Requests finished in the window (scales memory growth per request).
    pub requests_finished: Option<f64>,
    /// Failed requests / all requests (clients that left not counted). Names
    /// no bottleneck; shown in the evidence, checked against `SLO_ERROR_RATIO`.
    pub error_fraction: Option<f64>,
    /// Requests refused with "queue full" / all requests.
    pub rejected_fraction: Option<f64>,
}

/// The server's host and process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostSignals {
    /// Logical cores of the server's host.
    pub cores: Option<f64>,
    /// Compute threads the server may use (`--threads`); `None`: all cores.
    pub server_threads: Option<f64>,
    /// `process_cpu_utilization_ratio`: server CPU as a fraction of ALL cores.
    pub process_cpu: Option<Series>,
    /// `system_cpu_utilization_ratio{cpu_mode="busy"}`, fraction of all cores.
    pub host_cpu_busy: Option<Series>,
    /// `system_cpu_utilization_ratio{cpu_mode="iowait"}`.
    pub iowait: Option<Series>,
    /// `system_cpu_utilization_ratio{cpu_mode="steal"}`.
    pub steal: Option<Series>,
    /// `process_memory_usage_bytes` (RSS).
    pub process_rss: Option<Series>,
    /// `candlelight_kv_cache_resident_bytes`: the KV pool's high-water mark.
    /// It grows with peak use and stays (blocks are reused, not returned), so
    /// the memory rule judges RSS minus this.
    pub kv_cache_resident: Option<Series>,
    /// `system_memory_limit_bytes`.
    pub memory_limit: Option<f64>,
}

impl HostSignals {
    /// The fraction of all cores the server may use (1 when unknown).
    pub fn cpu_allowance(&self) -> f64 {
        match (self.server_threads, self.cores) {
            (Some(t), Some(c)) if t > 0.0 && c > 0.0 => (t / c).clamp(f64::MIN_POSITIVE, 1.0),
            _ => 1.0,
        }
    }
}

/// The GPU the server runs on (the busiest one where there are several).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuSignals {
    /// `hw_gpu_utilization_ratio`.
    pub utilization: Option<Series>,
    /// `hw_gpu_memory_usage_bytes`.
    pub memory_used: Option<Series>,
    /// `hw_gpu_memory_limit_bytes`.
    pub memory_limit: Option<f64>,
}

/// How a load test offered its load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadShape {
    /// N clients, each sending its next request when the last one ends.
    Closed { concurrency: u64 },
    /// Requests arriving at a rate (per second), whether or not earlier ones ended.
    Open { rate: f64 },
}

/// What only a load generator knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSignals {
    pub shape: LoadShape,
    /// Completed requests per second.
    #[serde(default)]
    pub achieved_rate: Option<f64>,
    /// The load generator's CPU as a fraction of the cores IT may use.
    #[serde(default)]
    pub client_cpu: Option<Series>,
    /// Cores the load generator may use (its affinity).
    #[serde(default)]
    pub client_cores: Option<f64>,
    /// Whether it ran on the server's host (its CPU then counts in the host's busy time).
    #[serde(default)]
    pub client_on_server_host: bool,
    /// Delay between each request's scheduled and actual send.
    #[serde(default)]
    pub send_lag: Option<Summary>,
}

impl LoadSignals {
    pub fn new(shape: LoadShape) -> Self {
        Self {
            shape,
            achieved_rate: None,
            client_cpu: None,
            client_cores: None,
            client_on_server_host: false,
            send_lag: None,
        }
    }
}

/// One level of a batch sweep (closed loop at `batch_size` clients).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Offered concurrency at this level.
    pub batch_size: f64,
    /// Output tokens per second (or requests per second: the same unit at every level).
    pub throughput: f64,
    /// End-to-end latency p50, seconds.
    #[serde(default)]
    pub latency_p50_s: Option<f64>,
    /// Mean sequences per decode step the server really ran.
    #[serde(default)]
    pub server_batch_mean: Option<f64>,
    /// Server process CPU, fraction of ALL cores (as `process_cpu_utilization_ratio`).
    #[serde(default)]
    pub process_cpu: Option<f64>,
    #[serde(default)]
    pub gpu_utilization: Option<f64>,
}

impl SweepPoint {
    pub fn new(batch_size: f64, throughput: f64) -> Self {
        Self {
            batch_size,
            throughput,
            latency_p50_s: None,
            server_batch_mean: None,
            process_cpu: None,
            gpu_utilization: None,
        }
    }
}

/// Everything a diagnosis reads for one window (and one replica).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Signals {
    pub window: Window,
    /// The replica (Prometheus `instance`), named in every finding.
    pub instance: Option<String>,
    pub server: ServerSignals,
    pub host: HostSignals,
    pub gpu: GpuSignals,
    /// Present for load tests only.
    pub load: Option<LoadSignals>,
    /// A batch sweep's levels (empty: no sweep).
    pub sweep: Vec<SweepPoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_sorts_refuses_nan_and_slices() {
        assert!(Series::new(vec![(0.0, f64::NAN)]).is_err());
        let s = Series::new(vec![(2.0, 20.0), (0.0, 0.0), (1.0, 10.0)]).expect("finite");
        assert_eq!(s.points()[0], (0.0, 0.0));
        assert_eq!(s.between(0.5, 2.0), &[(1.0, 10.0), (2.0, 20.0)]);
        assert!(s.between(3.0, 4.0).is_empty());
        assert_eq!(s.at(1.5), Some(10.0));
        assert_eq!(s.at(-1.0), Some(0.0));
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(json, "[[0.0,0.0],[1.0,10.0],[2.0,20.0]]");
        let back: Series = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Series>("[[0.0, 1e999]]").is_err());
    }

    #[test]
    fn allowance_is_threads_over_cores() {
        let mut h = HostSignals::default();
        assert_eq!(h.cpu_allowance(), 1.0);
        h.cores = Some(8.0);
        h.server_threads = Some(2.0);
        assert_eq!(h.cpu_allowance(), 0.25);
        h.server_threads = Some(16.0);
        assert_eq!(h.cpu_allowance(), 1.0);
    }
}
