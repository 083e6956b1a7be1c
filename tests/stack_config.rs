//! Static checks of the observability stack's configuration files, with the
//! real tools where one exists: the collector distribution built from
//! `collector/` validates `otel-collector.yaml`, Debian's `promtool` checks
//! `prometheus/prometheus.yml`, and the Grafana dashboards are checked against
//! the provisioned datasources and the metric list in `telemetry::names`.
//! YAML files are parsed with Python's PyYAML (Debian `python3-yaml`), which
//! keeps a YAML parser out of the crate's dependencies.
//!
//! The dashboards' queries are *run* against a real Prometheus by the
//! end-to-end test; here they are only checked to name known series.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use candlelight::telemetry::names::{prometheus_label, ALL_METRICS};
use serde_json::Value;
use testkit::workspace_root;

/// Runs a command and fails the test with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The collector binary, built once per test process (the script is cached
/// across runs: it rebuilds only when `collector/` changed).
fn collector_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = run_ok(&mut Command::new(
            workspace_root().join("scripts/build-collector.sh"),
        ));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .last()
            .expect("invariant: build-collector.sh prints the binary's path last");
        PathBuf::from(path.trim())
    })
}

/// Parses a YAML file into JSON values with PyYAML.
fn yaml(path: &str) -> Value {
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg("import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)")
            .arg(workspace_root().join(path)),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn collector_validates_its_pipeline_and_the_trace_backend_config() {
    for config in ["otel-collector.yaml", "collector/trace-backend.yaml"] {
        run_ok(
            Command::new(collector_bin())
                .current_dir(workspace_root())
                .args(["validate", "--config", config]),
        );
    }
}

#[test]
fn collector_distribution_has_exactly_the_components_the_configs_use() {
    let out = run_ok(Command::new(collector_bin()).arg("components"));
    let path = std::env::temp_dir().join(format!(
        "candlelight-components-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, &out.stdout).expect("write temp file");
    let listed = yaml(path.to_str().expect("utf-8 temp path"));
    let _ = std::fs::remove_file(&path);

    let names = |kind: &str| -> BTreeSet<String> {
        listed[kind]
            .as_array()
            .unwrap_or_else(|| panic!("`components` output has no {kind}: {listed}"))
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(names("receivers"), set(&["otlp"]));
    // k8s_attributes and resource serve the Helm chart's collector agent.
    assert_eq!(
        names("processors"),
        set(&["batch", "k8s_attributes", "memory_limiter", "resource"])
    );
    // `otlp` is the deprecated alias of `otlp_grpc` in release 0.161.0; `file`
    // is for collector/trace-backend.yaml.
    let exporters = names("exporters");
    assert!(
        exporters.is_superset(&set(&["otlp_grpc", "prometheus", "file"])),
        "{exporters:?}"
    );
    assert!(
        exporters.is_subset(&set(&["otlp_grpc", "otlp", "prometheus", "file"])),
        "{exporters:?}"
    );
    assert_eq!(names("extensions"), set(&["health_check"]));

    // The pipeline itself: metrics to Prometheus, traces to Tempo, limiter first.
    let cfg = yaml("otel-collector.yaml");
    let pipelines = &cfg["service"]["pipelines"];
    assert_eq!(
        pipelines["metrics"]["exporters"],
        serde_json::json!(["prometheus"])
    );
    assert_eq!(
        pipelines["traces"]["exporters"],
        serde_json::json!(["otlp_grpc"])
    );
    for p in ["metrics", "traces"] {
        assert_eq!(
            pipelines[p]["processors"],
            serde_json::json!(["memory_limiter", "batch"])
        );
    }
}

#[test]
fn prometheus_config_passes_promtool() {
    run_ok(
        Command::new("promtool")
            .current_dir(workspace_root())
            .args(["check", "config", "prometheus/prometheus.yml"]),
    );
    let cfg = yaml("prometheus/prometheus.yml");
    let jobs: BTreeMap<String, Value> = cfg["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .map(|j| {
            (
                j["job_name"].as_str().unwrap_or_default().to_string(),
                j.clone(),
            )
        })
        .collect();
    let target = |job: &str| jobs[job]["static_configs"][0]["targets"][0].clone();
    assert_eq!(target("otel-collector"), "otel-collector:8889");
    assert_eq!(target("candlelight"), "candlelight:3000");
    // The diagnosis alerts are loaded and routed to Alertmanager.
    assert_eq!(cfg["rule_files"][0], "rules/candlelight-alerts.yml");
    assert_eq!(
        cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
        "alertmanager:9093"
    );
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = workspace_root().join("prometheus/rules");
    run_ok(Command::new("promtool").current_dir(&rules).args([
        "check",
        "rules",
        "candlelight-alerts.yml",
    ]));
    // For every alert: a series that fires it and a near miss that does not.
    run_ok(Command::new("promtool").current_dir(&rules).args([
        "test",
        "rules",
        "candlelight-alerts.test.yml",
    ]));
}

#[test]
fn alertmanager_config_passes_amtool() {
    run_ok(
        Command::new("amtool")
            .current_dir(workspace_root())
            .args(["check-config", "prometheus/alertmanager.yml"]),
    );
}

#[test]
fn compose_and_tempo_files_parse_and_pin_their_images() {
    let tempo = yaml("tempo.yaml");
    assert!(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"].is_object());
    let remote = &tempo["metrics_generator"]["storage"]["remote_write"][0];
    assert_eq!(remote["url"], "http://prometheus:9090/api/v1/write");

    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let expected = set(&[
        "candlelight",
        "otel-collector",
        "prometheus",
        "alertmanager",
        "jaeger",
        "tempo-init",
        "tempo",
        "grafana",
        "postgres",
        "loadgen",
    ]);
    assert_eq!(keys(services), expected);
    for (name, svc) in services.as_object().expect("services map") {
        let image = svc["image"].as_str().unwrap_or_default();
        assert!(
            svc.get("build").is_some() || (image.contains(':') && !image.ends_with(":latest")),
            "service {name} must be built here or use a pinned image, not {image:?}"
        );
    }
    assert_eq!(
        services["loadgen"]["profiles"],
        serde_json::json!(["loadgen"])
    );
    let prom_args = services["prometheus"]["command"].to_string();
    assert!(prom_args.contains("--web.enable-remote-write-receiver"));
    assert!(prom_args.contains("--enable-feature=exemplar-storage"));
    assert_eq!(
        services["candlelight"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector:4317"
    );
}

/// The datasource uids that provisioning creates.
fn provisioned_uids() -> BTreeSet<String> {
    let dir = workspace_root().join("grafana/provisioning/datasources");
    let mut uids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("datasources dir") {
        let path = entry.expect("dir entry").path();
        let rel = path
            .strip_prefix(workspace_root())
            .expect("under repo")
            .to_string_lossy()
            .to_string();
        for ds in yaml(&rel)["datasources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            uids.insert(
                ds["uid"]
                    .as_str()
                    .expect("every datasource has a uid")
                    .to_string(),
            );
        }
    }
    uids
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = workspace_root().join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.display().to_string(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, including those nested in collapsed rows; rows themselves excluded.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(p);
        }
    }
    out
}

fn datasource_uid(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.get("uid").and_then(Value::as_str).map(str::to_string),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[test]
fn dashboard_panels_target_provisioned_datasources() {
    let uids = provisioned_uids();
    assert_eq!(
        uids,
        set(&[
            "candlelight-prometheus",
            "candlelight-tempo",
            "candlelight-jaeger",
            "candlelight-postgres"
        ])
    );
    let all = dashboards();
    assert!(all
        .iter()
        .any(|(p, _)| p.ends_with("candlelight-serving.json")));
    for (path, dash) in &all {
        assert!(
            dash["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{path}: no uid"
        );
        let mut ids = BTreeSet::new();
        for panel in panels(dash) {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            assert!(
                ids.insert(panel["id"].to_string()),
                "{path}: duplicate panel id in {title}"
            );
            let uid = datasource_uid(&panel["datasource"]);
            assert!(
                uid.as_ref().is_some_and(|u| uids.contains(u)),
                "{path}: panel {title:?} targets datasource {uid:?}, not one of {uids:?}"
            );
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{path}: panel {title:?} has no query");
            for t in targets {
                if let Some(u) = datasource_uid(&t["datasource"]) {
                    assert!(
                        uids.contains(&u),
                        "{path}: a query of {title:?} targets {u:?}"
                    );
                }
            }
        }
    }
}

/// PromQL words that are not metric or label names (aggregations may stand
/// before `by`, so they are not always followed by a parenthesis).
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "le",
    "job",
    "instance",
    "inf",
    "nan",
];

/// Identifiers in a PromQL expression that name a series or label, i.e. not a
/// function call, string, number, duration or `$variable`.
fn promql_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '$' || c.is_ascii_digit() {
            // A variable, a number or a duration such as 10m.
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if next != Some(&'(') || PROMQL_WORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn serving_dashboard_queries_name_only_known_metrics_and_labels() {
    let mut known: BTreeSet<String> = PROMQL_WORDS.iter().map(|s| s.to_string()).collect();
    for m in ALL_METRICS {
        known.extend(m.prometheus_series());
        known.extend(m.attributes.iter().map(|a| prometheus_label(a)));
    }
    let text = std::fs::read_to_string(
        workspace_root().join("grafana/dashboards/candlelight-serving.json"),
    )
    .expect("serving dashboard");
    let dash: Value = serde_json::from_str(&text).expect("serving dashboard is JSON");
    let mut exprs = 0;
    for panel in panels(&dash) {
        for t in panel["targets"].as_array().cloned().unwrap_or_default() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            exprs += 1;
            for name in promql_names(expr) {
                assert!(known.contains(&name), "unknown name {name:?} in {expr}");
            }
        }
    }
    assert!(
        exprs > 40,
        "expected the serving dashboard's PromQL, found {exprs} queries"
    );
}

#[test]
fn promql_names_skips_functions_strings_and_durations() {
    let names = promql_names(
        r#"max by (hw_id) (deriv(process_memory_usage_bytes{cpu_mode="io(wait"}[10m])) / on() vector(1) > $__rate_interval"#,
    );
    assert_eq!(
        names,
        [
            "max",
            "by",
            "hw_id",
            "process_memory_usage_bytes",
            "cpu_mode",
            "on"
        ]
    );
}
