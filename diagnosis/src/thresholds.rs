//! Every threshold the rules use, written once, each with its reason and source.
//!
//! The same names and values appear in `docs/diagnosis.md` (the thresholds
//! table) and in `prometheus/rules/candlelight-alerts.yml` (each alert's
//! `threshold_name` / `threshold` annotations, and the number itself in its
//! expression); tests in `tests/` fail when either drifts from [`ALL`].

use crate::finding::Unit;

/// One threshold as a row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The constant's name, e.g. `CPU_SATURATION`.
    pub name: &'static str,
    pub value: f64,
    pub unit: Unit,
    /// Why this number.
    pub reason: &'static str,
    /// Where the number comes from (the guide, an anchor project, or a measurement here).
    pub source: &'static str,
}

/// Looks a threshold up by its constant's name.
pub fn by_name(name: &str) -> Option<&'static Threshold> {
    ALL.iter().find(|t| t.name == name)
}

/// The thresholds table of `docs/diagnosis.md` (a test keeps the docs equal to it).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| Threshold | Value | Unit | Reason | Source |\n|---|---|---|---|---|\n");
    for t in ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            t.name,
            t.value,
            t.unit.as_str(),
            t.reason,
            t.source
        ));
    }
    out
}

/// Declares each threshold as a documented `pub const` and as a row of [`ALL`],
/// so the doc comment and the table share one reason string.
macro_rules! thresholds {
    ($( $name:ident = $value:expr, $unit:ident, source: $source:literal, reason: $reason:literal; )*) => {
        $(
            #[doc = $reason]
            #[doc = ""]
            #[doc = concat!("Source: ", $source, ".")]
            pub const $name: f64 = $value;
        )*
        /// Every threshold, in the order of the docs table.
        pub const ALL: &[Threshold] = &[
            $( Threshold { name: stringify!($name), value: $name, unit: Unit::$unit, reason: $reason, source: $source }, )*
        ];
    };
}

thresholds! {
    CPU_SATURATION = 0.70, Ratio,
        source: "the guide: CPU steadily above 70% may mean a CPU bottleneck",
        reason: "Server process CPU, as a fraction of the cores it may use, at or above which its compute counts as saturated.";
    GPU_SATURATION = 0.80, Ratio,
        source: "the guide: GPU steadily above 80% may mean a GPU bottleneck",
        reason: "GPU utilization at or above which the GPU counts as the limit.";
    STEADY_FRACTION = 0.75, Ratio,
        source: "candlelight; the guide says 'steadily'",
        reason: "'Steadily' means in at least this share of the samples of the window: one sample in four may dip (between bursts, or a scrape that lands in a pause) without breaking it. The alerts read it as quantile_over_time(1 - 0.75, ...).";
    CPU_BATCH_PLATEAU = 8.0, Requests,
        source: "docs/performance.md: aggregate decode 5.08x at 8 sequences, 5.03x at 16; the kernels reuse an unpacked weight block for up to 8 rows",
        reason: "Decode batch size beyond which larger batches no longer raise throughput on the CPU backend.";
    BATCH_FULL_FRACTION = 0.90, Ratio,
        source: "candlelight",
        reason: "Mean decode batch at or above this fraction of the batch limit counts as 'at the limit': sequences finish and are replaced between steps, so the mean sits a little under the limit even when the limit binds.";
    COMPUTE_LIGHT = 0.30, Ratio,
        source: "llm-d LLMDGPUUnderutilization (GPU below 30%)",
        reason: "CPU (of the cores the server may use) or GPU utilization below which compute counts as lightly used.";
    INTERFERENCE_OTHER_CPU = 0.25, Ratio,
        source: "candlelight; the guide: large swings mean other heavy work on the machine",
        reason: "Host CPU busy beyond the server's own and the load generator's own, as a fraction of all cores: a quarter of the machine doing other work. The stack's own helpers (collector, Prometheus) stay far below it.";
    CPU_STEAL_HIGH = 0.10, Ratio,
        source: "common cloud guidance: steal above 10% means the hypervisor takes noticeable CPU",
        reason: "CPU steal (time the hypervisor gave to other guests), as a fraction of all cores.";
    CLIENT_CPU_HIGH = 0.75, Ratio,
        source: "loadgen's own report warning (mean above 75% of its cores)",
        reason: "Load generator CPU, mean over the window as a fraction of the cores it may use, at or above which it may be the bottleneck.";
    SEND_LAG_P99_HIGH = 0.010, Seconds,
        source: "candlelight: about one decode step of the default model",
        reason: "p99 delay between a request's scheduled and actual send at or above which the load generator is not keeping its schedule; loadgen's report already warns above 1 ms for open loops.";
    QUEUE_PRESENT_MIN = 1.0, Requests,
        source: "candlelight",
        reason: "Mean waiting requests over the window at or above which a queue is really there (a request waiting for the next step averages far below 1).";
    QUEUE_GROWTH_MIN = 5.0, Requests,
        source: "guidellm over-saturation detection (a positive slope beyond its margin of error)",
        reason: "Growth of the waiting queue over the window (regression slope x window) at or above which, with the slope's 95% interval above zero, the queue is growing: demand exceeds capacity.";
    QUEUE_TIME_SHARE = 0.50, Ratio,
        source: "candlelight",
        reason: "Queue time p99 as a share of end-to-end p99 at or above which requests spend more time waiting than being served.";
    OPEN_LOOP_MIN_ACHIEVED = 0.90, Ratio,
        source: "guidellm: over-saturation is the response rate not keeping up with the request rate",
        reason: "Achieved / offered request rate of an open-loop run below which the server did not keep up.";
    REJECTED_FRACTION_HIGH = 0.01, Ratio,
        source: "llm-d LLMDElevatedErrorRate (1%)",
        reason: "Share of requests refused with 'queue full' (HTTP 429) at or above which the queue is saturated.";
    UNDER_BATCHING_DEMAND_RATIO = 2.0, Factor,
        source: "candlelight",
        reason: "Offered concurrency (closed-loop clients, or running + waiting) at or above this multiple of the batch limit means the limit, not the load, sets the batch.";
    KV_BLOCKING_USAGE = 0.50, Ratio,
        source: "candlelight; llm-d alerts at 0.90 for paged caches",
        reason: "KV reserved fraction at or above which a waiting queue beside a batch below its limit is blamed on the KV cache: each sequence reserves prompt + max new tokens at admission, so a request that does not fit leaves the cache at least half reserved when budgets are alike.";
    PREFILL_STALL_ITL_RATIO = 5.0, Factor,
        source: "AIPerf prefill-decode interference study: ITL inflated 1.2x to 5x by colocated prefill",
        reason: "Inter-token latency p99 / p50 at or above which the tail gaps are stalls, not noise.";
    PREFILL_STEP_RATIO = 5.0, Factor,
        source: "AIPerf prefill-decode interference study",
        reason: "Prefill step p99 / decode step p50 at or above which a prefill step holds decoding streams for several steps' time.";
    PREFILL_STALL_MIN_GAP = 0.5, Seconds,
        source: "candlelight: a half-second pause in a stream is visible to a reader",
        reason: "Inter-token latency p99 below which stalls are too short to matter, however large the ratio (on a CPU any prefill step is many decode steps long).";
    MEMORY_GROWTH_MIN_BYTES = 33_554_432.0, Bytes,
        source: "candlelight: allocator arenas and KV pages touched on first use move RSS by a few MiB without a leak",
        reason: "RSS growth over the window (regression slope x window, 32 MiB) at or above which growth counts.";
    MEMORY_GROWTH_MIN_R2 = 0.80, Ratio,
        source: "candlelight",
        reason: "R-squared of the RSS regression at or above which growth is steady, not steps and noise.";
    MEMORY_GIVEN_BACK_FRACTION = 0.50, Ratio,
        source: "the guide: a leak is memory not released when requests end",
        reason: "After the load ends, RSS back within this fraction of the growth above its start counts as given back (not a leak).";
    MEMORY_NEAR_LIMIT = 0.90, Ratio,
        source: "the guide: memory near the physical limit is a memory bottleneck",
        reason: "RSS as a fraction of host memory at or above which a growth finding is critical.";
    IOWAIT_HIGH = 0.10, Ratio,
        source: "candlelight: with the model in the page cache, a serving host's iowait stays near 0",
        reason: "System CPU time waiting on I/O, as a fraction of all cores, at or above which I/O is suspect.";
    MIN_SAMPLES = 5.0, Count,
        source: "guidellm over-saturation detection: minimum_window_size 5",
        reason: "Samples a series needs in the window before a slope or a steady level is read from it.";
    SLOPE_CONFIDENCE = 0.95, Ratio,
        source: "guidellm over-saturation detection: confidence 0.95",
        reason: "Confidence of the interval a slope must clear zero by (two-sided, Student's t).";
    SWEEP_FLAT_GAIN = 0.10, Ratio,
        source: "candlelight, stricter than guidellm's knee detection (tail slope up to 25% of the rising one); docs/performance.md: 8 -> 16 sequences gave 4% more, 4 -> 8 gave 49%",
        reason: "In a batch sweep, throughput has stopped rising at a batch size when every larger size adds less than this share of what linear scaling would.";
    SWEEP_LATENCY_GROWTH = 0.50, Ratio,
        source: "Little's law: with throughput flat, latency grows with concurrency",
        reason: "Beyond the knee, latency growth at or above this share of the batch growth means the added requests only queue.";
    SLO_TTFT_P99 = 2.0, Seconds,
        source: "default; llm-d's TTFT SLO example is p95 below 3 s",
        reason: "Default objective for time to first token p99 (alert CandlelightTtftSlo; change it in the recording rule candlelight:slo_ttft_p99:seconds).";
    SLO_E2E_P99 = 30.0, Seconds,
        source: "default; llm-d warns at p99 above 10 s for shorter answers",
        reason: "Default objective for end-to-end latency p99 (alert CandlelightE2eSlo; recording rule candlelight:slo_e2e_p99:seconds).";
    SLO_ERROR_RATIO = 0.01, Ratio,
        source: "llm-d LLMDElevatedErrorRate (1%)",
        reason: "Default objective for the share of failed requests, clients that left not counted (alert CandlelightErrorRate; recording rule candlelight:slo_error:ratio).";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for t in ALL {
            assert_eq!(ALL.iter().filter(|o| o.name == t.name).count(), 1);
            assert_eq!(by_name(t.name).map(|f| f.value), Some(t.value));
        }
        assert_eq!(by_name("CPU_SATURATION").map(|t| t.value), Some(0.7));
        assert!(by_name("NOPE").is_none());
    }
}
