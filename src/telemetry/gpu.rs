//! NVIDIA GPU metrics through NVML (nvml-wrapper), per device.
//!
//! Where there is no driver or no GPU, `Nvml::init()` fails (a libloading error
//! when `libnvidia-ml.so` is absent). That is a normal deployment, not a fault:
//! the monitor logs one line, exports `candlelight.gpu.available = 0` and the
//! server runs on. Individual readings a device does not support (power on
//! some boards, for instance) are skipped quietly.

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use opentelemetry::metrics::{Gauge, Meter};
use opentelemetry::KeyValue;

use super::metrics::{f64_gauge, u64_gauge};
use super::names::{self, attr};

/// What the NVML probe found.
#[derive(Debug)]
enum Probe {
    /// Not probed yet (the probe runs on the monitor thread's first tick).
    Pending,
    /// No NVML or no device: nothing more to sample.
    Absent,
    Present {
        nvml: Box<Nvml>,
        devices: Vec<[KeyValue; 2]>,
    },
}

/// Samples every NVIDIA device NVML sees.
pub struct GpuMonitor {
    probe: Probe,
    pid: u32,
    available: Gauge<u64>,
    utilization: Gauge<f64>,
    memory_usage: Gauge<u64>,
    memory_limit: Gauge<u64>,
    power: Gauge<f64>,
    temperature: Gauge<f64>,
    clock_sm: Gauge<f64>,
    process_memory: Gauge<u64>,
}

impl GpuMonitor {
    pub fn new(meter: &Meter) -> GpuMonitor {
        GpuMonitor {
            probe: Probe::Pending,
            pid: std::process::id(),
            available: u64_gauge(meter, &names::GPU_AVAILABLE),
            utilization: f64_gauge(meter, &names::GPU_UTILIZATION),
            memory_usage: u64_gauge(meter, &names::GPU_MEMORY_USAGE),
            memory_limit: u64_gauge(meter, &names::GPU_MEMORY_LIMIT),
            power: f64_gauge(meter, &names::GPU_POWER),
            temperature: f64_gauge(meter, &names::GPU_TEMPERATURE),
            clock_sm: f64_gauge(meter, &names::GPU_CLOCK_SM),
            process_memory: u64_gauge(meter, &names::GPU_PROCESS_MEMORY_USAGE),
        }
    }

    /// Number of devices found (0 before the probe or without NVML).
    pub fn device_count(&self) -> usize {
        match &self.probe {
            Probe::Present { devices, .. } => devices.len(),
            Probe::Pending | Probe::Absent => 0,
        }
    }

    /// Take the result of `Nvml::init()`. Failure is the "no GPU" path: one log
    /// line and `candlelight.gpu.available = 0`.
    pub fn start(&mut self, init: Result<Nvml, NvmlError>) {
        let nvml = match init {
            Ok(nvml) => nvml,
            Err(e) => return self.absent(&format!("NVML unavailable ({e})")),
        };
        let count = match nvml.device_count() {
            Ok(n) => n,
            Err(e) => return self.absent(&format!("NVML cannot count devices ({e})")),
        };
        let devices: Vec<[KeyValue; 2]> = (0..count)
            .map(|i| {
                let name = nvml
                    .device_by_index(i)
                    .and_then(|d| d.name())
                    .unwrap_or_else(|_| "unknown".to_string());
                [
                    KeyValue::new(attr::HW_ID, format!("gpu{i}")),
                    KeyValue::new(attr::HW_NAME, name),
                ]
            })
            .collect();
        if devices.is_empty() {
            return self.absent("NVML found no GPU");
        }
        tracing::info!(gpus = devices.len(), "GPU metrics from NVML");
        self.available.record(devices.len() as u64, &[]);
        self.probe = Probe::Present {
            nvml: Box::new(nvml),
            devices,
        };
    }

    fn absent(&mut self, why: &str) {
        tracing::info!("{why}: no GPU metrics; candlelight.gpu.available = 0");
        self.available.record(0, &[]);
        self.probe = Probe::Absent;
    }

    /// Sample every device (probing NVML on the first call).
    pub fn sample(&mut self) {
        if matches!(self.probe, Probe::Pending) {
            self.start(Nvml::init());
        }
        let Probe::Present { nvml, devices } = &self.probe else {
            return;
        };
        for (i, labels) in devices.iter().enumerate() {
            match u32::try_from(i).map(|i| nvml.device_by_index(i)) {
                Ok(Ok(device)) => self.sample_device(&device, labels),
                Ok(Err(e)) => tracing::debug!(gpu = i, "NVML device unavailable: {e}"),
                Err(_) => {}
            }
        }
    }

    fn sample_device(&self, device: &Device<'_>, labels: &[KeyValue; 2]) {
        if let Ok(u) = device.utilization_rates() {
            self.utilization.record(f64::from(u.gpu) / 100.0, labels);
        }
        if let Ok(m) = device.memory_info() {
            self.memory_usage.record(m.used, labels);
            self.memory_limit.record(m.total, labels);
        }
        if let Ok(milliwatts) = device.power_usage() {
            self.power.record(f64::from(milliwatts) / 1000.0, labels);
        }
        if let Ok(celsius) = device.temperature(TemperatureSensor::Gpu) {
            self.temperature.record(f64::from(celsius), labels);
        }
        if let Ok(mhz) = device.clock_info(Clock::SM) {
            self.clock_sm.record(f64::from(mhz) * 1e6, labels);
        }
        let mut mine = 0u64;
        let compute = device.running_compute_processes().unwrap_or_default();
        let graphics = device.running_graphics_processes().unwrap_or_default();
        for p in compute
            .iter()
            .chain(&graphics)
            .filter(|p| p.pid == self.pid)
        {
            if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                mine += bytes;
            }
        }
        self.process_memory.record(mine, labels);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{prometheus_meter, scrape, value};
    use super::*;
    use opentelemetry::metrics::MeterProvider;

    #[test]
    fn without_nvml_the_monitor_reports_zero_gpus_and_runs_on() {
        let (provider, registry) = prometheus_meter();
        let mut gpu = GpuMonitor::new(&provider.meter("test"));
        // What `Nvml::init()` returns on a machine without the NVIDIA driver.
        gpu.start(Err(NvmlError::LibraryNotFound));
        gpu.sample(); // must not probe again, panic or block
        assert_eq!(gpu.device_count(), 0);
        let text = scrape(&registry);
        assert_eq!(
            value(&text, "candlelight_gpu_available", ""),
            Some(0.0),
            "{text}"
        );
        assert!(
            !text.contains("hw_gpu_"),
            "no per-device series without a GPU:\n{text}"
        );
    }

    #[test]
    fn real_probe_always_exports_availability() {
        let (provider, registry) = prometheus_meter();
        let mut gpu = GpuMonitor::new(&provider.meter("test"));
        gpu.sample();
        let seen = value(&scrape(&registry), "candlelight_gpu_available", "");
        assert_eq!(seen, Some(gpu.device_count() as f64));
    }

    /// Run on a machine with an NVIDIA GPU:
    /// `cargo test -p candlelight --lib telemetry::gpu -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs an NVIDIA GPU and driver"]
    fn nvml_reports_real_values() {
        let (provider, registry) = prometheus_meter();
        let mut gpu = GpuMonitor::new(&provider.meter("test"));
        gpu.sample();
        gpu.sample();
        let text = scrape(&registry);
        println!("{text}");
        assert!(gpu.device_count() > 0, "NVML found no GPU");
        let limit = value(&text, "hw_gpu_memory_limit_bytes", "hw_id=\"gpu0\"");
        assert!(limit.unwrap_or(0.0) > 1e9, "GPU memory limit in bytes");
        let clock = value(&text, "hw_gpu_clock_sm_hertz", "hw_id=\"gpu0\"");
        assert!(clock.unwrap_or(0.0) > 1e8, "SM clock in Hz");
        assert!(value(&text, "hw_gpu_temperature_celsius", "hw_id=\"gpu0\"").is_some());
    }
}
