//! Resource use over a run, read in the background: loadgen's own CPU
//! ([`ClientCpuMeter`]) and the server's device gauges ([`DeviceScraper`]).
//!
//! Device use is read from the server's `/metrics` rather than from this host,
//! because the server may run on another machine (and has the GPU).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};

use crate::measure::promtext::Scrape;
use crate::measure::record::RunClock;
use crate::measure::server::scrape;
use crate::measure::stats::ClientUsage;

/// Percent of all cores loadgen's process used over the last interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CpuSample {
    pub t_s: f64,
    pub cpu_pct: f64,
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Samples this process's CPU use every 500 ms on its own thread.
pub struct ClientCpuMeter {
    samples: Arc<Mutex<Vec<CpuSample>>>,
    stop: Arc<AtomicBool>,
}

impl ClientCpuMeter {
    pub fn start(clock: RunClock) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, halt) = (samples.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("loadgen-cpu".into())
            .spawn(move || {
                let (Ok(pid), Ok(mut sys)) = (sysinfo::get_current_pid(), System::new()) else {
                    return; // no /proc: no CPU figures, reported as absent
                };
                let kind = ProcessRefreshKind::nothing().with_cpu();
                let n = cores() as f64;
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
                while !halt.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
                    if let (Some(p), Ok(mut v)) = (sys.process(pid), out.lock()) {
                        v.push(CpuSample {
                            t_s: clock.elapsed().as_secs_f64(),
                            cpu_pct: f64::from(p.cpu_usage()) / n,
                        });
                    }
                }
            });
        if spawned.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        Self { samples, stop }
    }

    /// Usage between two run offsets.
    pub fn usage(&self, from: Duration, to: Duration) -> ClientUsage {
        let v: Vec<f64> = self
            .samples()
            .iter()
            .filter(|s| s.t_s >= from.as_secs_f64() && s.t_s <= to.as_secs_f64() + 0.5)
            .map(|s| s.cpu_pct)
            .collect();
        ClientUsage {
            cpu_mean_pct: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
            cpu_max_pct: v.iter().copied().reduce(f64::max),
            cores: cores(),
        }
    }

    pub fn samples(&self) -> Vec<CpuSample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One reading of the server's device gauges (the `device_measurements` row).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceSample {
    pub t_s: f64,
    /// Wall-clock time of the reading (not in JSON: `t_s` is).
    #[serde(skip, default = "unix_epoch")]
    pub time: SystemTime,
    /// Server process CPU, percent of all its host's cores.
    pub cpu_util: Option<f64>,
    /// Server process resident memory, megabytes (10^6 bytes).
    pub mem_megabytes: Option<f64>,
    /// Mean GPU utilization over the server's GPUs, percent.
    pub gpu_util: Option<f64>,
    /// GPU memory in use, summed over GPUs, megabytes.
    pub gpu_mem_megabytes: Option<f64>,
    /// The server's scheduler and host gauges at that moment (what the
    /// diagnosis reads); absent when the server does not export them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gauges: Option<ServerGauges>,
}

/// Gauges of a candlelight server, as its `/metrics` had them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerGauges {
    pub requests_waiting: Option<f64>,
    pub requests_running: Option<f64>,
    pub batch_limit: Option<f64>,
    pub kv_cache_utilization: Option<f64>,
    pub kv_cache_resident_bytes: Option<f64>,
    /// Server process CPU, fraction of all its host's cores.
    pub process_cpu: Option<f64>,
    pub process_rss_bytes: Option<f64>,
    /// Host CPU by mode, fractions of all cores.
    pub host_busy: Option<f64>,
    pub host_iowait: Option<f64>,
    pub host_steal: Option<f64>,
    pub host_cores: Option<f64>,
    pub compute_threads: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    /// The busiest GPU's utilization (0..1).
    pub gpu_utilization: Option<f64>,
}

impl ServerGauges {
    /// `None` when the scrape has none of them (not a candlelight server).
    fn from_scrape(s: &Scrape) -> Option<Self> {
        let cpu = |mode: &'static str| s.max("system_cpu_utilization_ratio", &[("cpu_mode", mode)]);
        let g = Self {
            requests_waiting: s.max("candlelight_requests_waiting", &[]),
            requests_running: s.max("candlelight_requests_running", &[]),
            batch_limit: s.max("candlelight_batch_limit", &[]),
            kv_cache_utilization: s.max("candlelight_kv_cache_utilization_ratio", &[]),
            kv_cache_resident_bytes: s.max("candlelight_kv_cache_resident_bytes", &[]),
            process_cpu: s.max("process_cpu_utilization_ratio", &[]),
            process_rss_bytes: s.max("process_memory_usage_bytes", &[]),
            host_busy: cpu("busy"),
            host_iowait: cpu("iowait"),
            host_steal: cpu("steal"),
            host_cores: s.max("system_cpu_logical_count", &[]),
            compute_threads: s.max("candlelight_compute_threads", &[]),
            memory_limit_bytes: s.max("system_memory_limit_bytes", &[]),
            gpu_utilization: s.max("hw_gpu_utilization_ratio", &[]),
        };
        (g != Self::default()).then_some(g)
    }
}

fn unix_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

impl DeviceSample {
    pub fn from_scrape(s: &Scrape, t: Duration, clock: &RunClock) -> Self {
        Self {
            t_s: t.as_secs_f64(),
            time: clock.wall + t,
            cpu_util: s
                .mean(&["process_cpu_utilization_ratio", "process_cpu_utilization"])
                .map(|v| v * 100.0),
            mem_megabytes: s
                .sum(&[
                    "process_memory_usage_bytes",
                    "process_resident_memory_bytes",
                ])
                .map(|v| v / 1e6),
            gpu_util: s
                .mean(&["hw_gpu_utilization_ratio", "hw_gpu_utilization"])
                .map(|v| v * 100.0),
            gpu_mem_megabytes: s.sum(&["hw_gpu_memory_usage_bytes"]).map(|v| v / 1e6),
            gauges: ServerGauges::from_scrape(s),
        }
    }
}

/// Scrapes the server's `/metrics` every `interval` until dropped.
pub struct DeviceScraper {
    samples: Arc<Mutex<Vec<DeviceSample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DeviceScraper {
    pub fn start(http: reqwest::Client, base: String, interval: Duration, clock: RunClock) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let t = clock.elapsed();
                // A failed scrape (server busy or gone) is a gap, not an error.
                if let Ok(s) = scrape(&http, &base).await {
                    if let Ok(mut v) = out.lock() {
                        v.push(DeviceSample::from_scrape(&s, t, &clock));
                    }
                }
            }
        });
        Self { samples, task }
    }

    pub fn finish(self) -> Vec<DeviceSample> {
        self.task.abort();
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
