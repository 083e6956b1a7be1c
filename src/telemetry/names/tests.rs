//! Name derivation and completeness of the metric list.

use super::*;
use std::collections::HashSet;

/// The names the issue lists, in the order of [`ALL_METRICS`].
const EXPECTED_PROMETHEUS: &[&str] = &[
    "gen_ai_server_request_duration_seconds",
    "gen_ai_server_time_to_first_token_seconds",
    "gen_ai_server_time_per_output_token_seconds",
    "gen_ai_server_token_usage",
    "candlelight_queue_duration_seconds",
    "candlelight_request_prefill_duration_seconds",
    "candlelight_request_decode_duration_seconds",
    "candlelight_step_duration_seconds",
    "candlelight_inter_token_duration_seconds",
    "candlelight_batch_size",
    "candlelight_batch_tokens",
    "candlelight_batch_limit",
    "candlelight_requests_running",
    "candlelight_requests_waiting",
    "candlelight_kv_cache_usage_bytes",
    "candlelight_kv_cache_utilization_ratio",
    "candlelight_kv_cache_cached_bytes",
    "candlelight_kv_cache_resident_bytes",
    "candlelight_kv_cache_capacity_bytes",
    "candlelight_prefix_cache_queries_total",
    "candlelight_prefix_cache_hits_total",
    "candlelight_cache_config_info",
    "candlelight_compute_threads",
    "candlelight_tokens_prompt_total",
    "candlelight_tokens_generated_total",
    "candlelight_requests_finished_total",
    "candlelight_requests_rejected_total",
    "candlelight_requests_cancelled_total",
    "candlelight_requests_failed_total",
    "candlelight_telemetry_dropped_total",
    "process_cpu_utilization_ratio",
    "process_memory_usage_bytes",
    "system_cpu_utilization_ratio",
    "system_cpu_logical_count",
    "system_memory_usage_bytes",
    "system_memory_limit_bytes",
    "hw_gpu_utilization_ratio",
    "hw_gpu_memory_usage_bytes",
    "hw_gpu_memory_limit_bytes",
    "hw_gpu_power_watts",
    "hw_gpu_temperature_celsius",
    "hw_gpu_clock_sm_hertz",
    "candlelight_gpu_process_memory_usage_bytes",
    "candlelight_gpu_available",
];

#[test]
fn prometheus_names_follow_unit_and_kind() {
    let derived: Vec<String> = ALL_METRICS.iter().map(|m| m.prometheus_name()).collect();
    assert_eq!(derived, EXPECTED_PROMETHEUS);
}

#[test]
fn every_metric_has_unit_description_and_unique_name() {
    let mut names = HashSet::new();
    for m in ALL_METRICS {
        assert!(!m.unit.is_empty(), "{} has no unit", m.name);
        assert!(m.description.ends_with('.'), "{}: one sentence", m.name);
        assert!(!m.description.contains('\n'), "{}: one line", m.name);
        assert!(names.insert(m.name), "{} listed twice", m.name);
    }
}

#[test]
fn histograms_have_sorted_buckets_and_others_none() {
    for m in ALL_METRICS {
        match m.kind {
            Kind::Histogram => {
                assert!(!m.buckets.is_empty(), "{} needs buckets", m.name);
                assert!(
                    m.buckets.windows(2).all(|w| w[0] < w[1]),
                    "{} unsorted",
                    m.name
                );
            }
            Kind::Counter | Kind::Gauge => assert!(m.buckets.is_empty(), "{}", m.name),
        }
    }
}

#[test]
fn histogram_series_and_labels_are_prometheus_shaped() {
    assert_eq!(
        TIME_TO_FIRST_TOKEN.prometheus_series(),
        [
            "gen_ai_server_time_to_first_token_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_sum",
            "gen_ai_server_time_to_first_token_seconds_count",
        ]
    );
    assert_eq!(
        prometheus_label(attr::GEN_AI_TOKEN_TYPE),
        "gen_ai_token_type"
    );
    assert!(markdown_table().contains("`candlelight_gpu_available`"));
}

#[test]
fn docs_telemetry_lists_every_metric() {
    let doc = include_str!("../../../docs/telemetry.md");
    assert!(
        doc.contains(&markdown_table()),
        "docs/telemetry.md's metric table is stale; paste telemetry::names::markdown_table():\n{}",
        markdown_table()
    );
}
