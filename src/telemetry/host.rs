//! Host metrics sampled in the background: process CPU and RSS, system CPU,
//! memory and I/O wait. Together with the GPU monitor this answers "is
//! throughput limited by the CPU, the GPU or memory, and does memory grow?".
//!
//! sysinfo supplies CPU and memory. It has no I/O-wait figure, so that one comes
//! from the first line of `/proc/stat` (Linux; elsewhere it is simply absent).
//! One monitor thread (not a tokio task: refreshing reads `/proc` and NVML
//! synchronously) ticks every [`SAMPLE_EVERY`].

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::metrics::{Gauge, Meter};
use opentelemetry::KeyValue;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::gpu::GpuMonitor;
use super::metrics::{f64_gauge, u64_gauge};
use super::names::{self, attr};

/// How often host and GPU metrics are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Cumulative CPU jiffies from `/proc/stat`, enough for an I/O-wait fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub iowait: u64,
    /// Time the hypervisor gave this VM's virtual CPUs to someone else.
    pub steal: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Parse the aggregate `cpu` line: user nice system idle iowait irq softirq
    /// steal (guest time is already inside user and nice).
    pub fn parse(proc_stat: &str) -> Option<CpuTimes> {
        let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if fields.len() < 5 {
            return None;
        }
        Some(CpuTimes {
            iowait: fields[4],
            steal: fields.get(7).copied().unwrap_or(0),
            total: fields.iter().sum(),
        })
    }

    /// Fraction of CPU time spent waiting for I/O between two readings.
    pub fn iowait_since(&self, earlier: &CpuTimes) -> Option<f64> {
        Self::fraction(self.iowait, earlier.iowait, self.total, earlier.total)
    }

    /// Fraction of CPU time stolen by the hypervisor between two readings.
    pub fn steal_since(&self, earlier: &CpuTimes) -> Option<f64> {
        Self::fraction(self.steal, earlier.steal, self.total, earlier.total)
    }

    fn fraction(part: u64, part_before: u64, total: u64, total_before: u64) -> Option<f64> {
        let total = total.checked_sub(total_before)?;
        let part = part.checked_sub(part_before)?;
        (total > 0).then(|| part as f64 / total as f64)
    }

    fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }
}

/// Samples this process and the machine.
pub struct HostMonitor {
    system: System,
    pid: Option<Pid>,
    cpus: f64,
    last_times: Option<CpuTimes>,
    process_cpu: Gauge<f64>,
    process_memory: Gauge<u64>,
    system_cpu: Gauge<f64>,
    memory_usage: Gauge<u64>,
    memory_limit: Gauge<u64>,
    cores: Gauge<u64>,
}

impl HostMonitor {
    pub fn new(meter: &Meter) -> anyhow::Result<HostMonitor> {
        let mut system = System::new()?;
        system.refresh_cpu_usage();
        let cpus = system.cpus().len().max(1) as f64;
        Ok(HostMonitor {
            system,
            pid: sysinfo::get_current_pid().ok(),
            cpus,
            last_times: CpuTimes::read(),
            process_cpu: f64_gauge(meter, &names::PROCESS_CPU_UTILIZATION),
            process_memory: u64_gauge(meter, &names::PROCESS_MEMORY_USAGE),
            system_cpu: f64_gauge(meter, &names::SYSTEM_CPU_UTILIZATION),
            memory_usage: u64_gauge(meter, &names::SYSTEM_MEMORY_USAGE),
            memory_limit: u64_gauge(meter, &names::SYSTEM_MEMORY_LIMIT),
            cores: u64_gauge(meter, &names::SYSTEM_CPU_LOGICAL_COUNT),
        })
    }

    /// Take one sample. CPU figures are averages since the previous call.
    pub fn sample(&mut self) {
        self.system.refresh_memory();
        let used = [KeyValue::new(attr::SYSTEM_MEMORY_STATE, attr::MEMORY_USED)];
        self.memory_usage.record(self.system.used_memory(), &used);
        self.memory_limit.record(self.system.total_memory(), &[]);
        self.cores.record(self.cpus as u64, &[]);

        self.system.refresh_cpu_usage();
        let busy = f64::from(self.system.global_cpu_usage()) / 100.0;
        self.system_cpu.record(
            busy.clamp(0.0, 1.0),
            &[KeyValue::new(attr::CPU_MODE, attr::CPU_BUSY)],
        );
        if let Some(now) = CpuTimes::read() {
            if let Some(before) = self.last_times {
                for (mode, value) in [
                    (attr::CPU_IOWAIT, now.iowait_since(&before)),
                    (attr::CPU_STEAL, now.steal_since(&before)),
                ] {
                    if let Some(v) = value {
                        self.system_cpu
                            .record(v, &[KeyValue::new(attr::CPU_MODE, mode)]);
                    }
                }
            }
            self.last_times = Some(now);
        }

        let Some(pid) = self.pid else { return };
        let what = ProcessRefreshKind::nothing().with_cpu().with_memory();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, what);
        if let Some(process) = self.system.process(pid) {
            // sysinfo reports percent of one core; normalise to all cores (0..1).
            let cpu = f64::from(process.cpu_usage()) / 100.0 / self.cpus;
            self.process_cpu.record(cpu.clamp(0.0, 1.0), &[]);
            self.process_memory.record(process.memory(), &[]);
        }
    }
}

/// The background monitor thread; stops when dropped or on [`MonitorThread::stop`].
#[derive(Debug)]
pub struct MonitorThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorThread {
    /// Start sampling host and GPU every `every`. The first sample (and the
    /// one-line "no GPU" notice) comes after one period, once logging is set up.
    pub fn spawn(
        mut host: Option<HostMonitor>,
        mut gpu: GpuMonitor,
        every: Duration,
    ) -> std::io::Result<MonitorThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("candlelight-monitor".into())
            .spawn(move || {
                // A message or a dropped sender both mean stop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Some(host) = host.as_mut() {
                        host.sample();
                    }
                    gpu.sample();
                }
            })?;
        Ok(MonitorThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MonitorThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_1: &str = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n";
    const STAT_2: &str = "cpu  130 5 60 880 60 3 2 7 0 0\ncpu0 65 2 30 440 30 1 1 0 0 0\n";

    #[test]
    fn proc_stat_iowait_fraction() {
        let a = CpuTimes::parse(STAT_1).expect("invariant: fixture parses");
        let b = CpuTimes::parse(STAT_2).expect("invariant: fixture parses");
        assert_eq!(
            a,
            CpuTimes {
                iowait: 40,
                steal: 0,
                total: 1000
            }
        );
        // 20 of 147 jiffies waited for I/O, 7 were stolen.
        let f = b.iowait_since(&a).expect("invariant: time moved forward");
        assert!((f - 20.0 / 147.0).abs() < 1e-12);
        let f = b.steal_since(&a).expect("invariant: time moved forward");
        assert!((f - 7.0 / 147.0).abs() < 1e-12);
        assert_eq!(a.iowait_since(&b), None, "counters never go backwards");
        assert_eq!(CpuTimes::parse("intr 1\n"), None);
    }

    #[test]
    fn host_monitor_exports_memory_and_cpu() -> anyhow::Result<()> {
        let (provider, registry) = super::super::testing::prometheus_meter();
        let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "test");
        let mut host = HostMonitor::new(&meter)?;
        host.sample();
        let text = super::super::testing::scrape(&registry);
        for m in [
            &names::PROCESS_MEMORY_USAGE,
            &names::PROCESS_CPU_UTILIZATION,
            &names::SYSTEM_MEMORY_LIMIT,
            &names::SYSTEM_MEMORY_USAGE,
            &names::SYSTEM_CPU_UTILIZATION,
            &names::SYSTEM_CPU_LOGICAL_COUNT,
        ] {
            let value = super::super::testing::value(&text, &m.prometheus_name(), "");
            assert!(
                value.is_some(),
                "{} missing in\n{text}",
                m.prometheus_name()
            );
        }
        let rss = super::super::testing::value(&text, "process_memory_usage_bytes", "");
        assert!(
            rss.unwrap_or(0.0) > 1e6,
            "RSS of a running test is over 1 MB"
        );
        Ok(())
    }
}
