//! Helpers for the telemetry end-to-end test: the project's service scripts
//! (collector, Prometheus) as values that stop their process when dropped, a
//! Prometheus query client, the trace backend's JSON-lines file, and the
//! dashboards' PromQL.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use testkit::ScriptService;

/// `scripts/services/<script> ACTION DIR ARGS` (collector.sh, prometheus.sh,
/// jaeger.sh), which prints `KEY=VALUE` lines (pid, ports, paths). Stopped on
/// drop, also on failure.
pub fn service(
    script: &str,
    action: &str,
    dir: &Path,
    args: &[&str],
) -> anyhow::Result<ScriptService> {
    ScriptService::start(&format!("scripts/services/{script}"), action, dir, args)
}

/// Poll `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            bail!("gave up after {timeout:?} waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub struct Prometheus {
    url: String,
    client: reqwest::Client,
}

impl Prometheus {
    pub fn new(url: &str) -> Prometheus {
        Prometheus {
            url: url.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// The `data` of an instant query evaluated at `time` (Unix seconds), or now.
    pub async fn query_data(&self, expr: &str, time: Option<f64>) -> anyhow::Result<Value> {
        let mut params = vec![("query", expr.to_owned())];
        if let Some(t) = time {
            params.push(("time", format!("{t:.3}")));
        }
        let body: Value = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&params)
            .send()
            .await?
            .json()
            .await?;
        if body["status"] != "success" {
            bail!("query {expr} failed: {body}");
        }
        Ok(body["data"].clone())
    }

    /// Instant query; the samples of a vector result (a scalar becomes one sample).
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.query_data(expr, None).await?;
        Ok(match &data["result"] {
            Value::Array(items) if data["resultType"] == "scalar" => {
                vec![serde_json::json!({ "value": items })]
            }
            Value::Array(items) => items.clone(),
            _ => Vec::new(),
        })
    }
}

/// A server on the real model exporting OTLP/gRPC to `collector`: spans
/// leave every 200 ms, metrics every second.
pub fn server_exporting_to(
    collector: &ScriptService,
    max_batch_size: &str,
) -> anyhow::Result<crate::common::TestServer> {
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");
    let endpoint = format!("http://127.0.0.1:{}", collector.get("grpc")?);
    Ok(crate::common::server_with(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--metric-export-interval-ms",
        "1000",
        "--max-batch-size",
        max_batch_size,
    ]))
}

/// The value of one sample of a query result (NaN and infinities included).
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// A sample's value from Prometheus text (the first series whose labels contain `labels`).
pub fn text_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn trace_header(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Every Prometheus query of every dashboard, with Grafana's interval variables
/// replaced: `(panel title, expr)`.
pub fn dashboard_queries(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let datasource = if target["datasource"].is_null() {
                    &panel["datasource"]
                } else {
                    &target["datasource"]
                };
                let prometheus = datasource["type"] == "prometheus"
                    || datasource["uid"] == "candlelight-prometheus";
                if let (true, Some(expr)) = (prometheus, target["expr"].as_str()) {
                    out.push((title.clone(), substitute(expr)?));
                }
            }
        }
    }
    Ok(out)
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.extend(p["panels"].as_array().into_iter().flatten());
        out.push(p);
    }
    out
}

/// Grafana's built-in interval variables; any other variable is an error, so a
/// dashboard cannot carry a query this test cannot run.
fn substitute(expr: &str) -> anyhow::Result<String> {
    let mut s = expr.to_owned();
    for (var, value) in [
        ("__rate_interval", "5m"),
        ("__interval", "15s"),
        ("__range", "10m"),
    ] {
        s = s
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    if s.contains('$') {
        bail!("unknown Grafana variable in {expr}");
    }
    Ok(s)
}

/// One span as the trace backend wrote it (OTLP/JSON).
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub name: String,
    /// OTLP SpanKind: 1 internal, 2 server.
    pub kind: i64,
    attributes: Vec<Value>,
    pub events: Vec<String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl Span {
    /// An attribute's value: strings and bools as JSON, ints as strings (OTLP/JSON
    /// encodes int64 so), doubles as numbers, arrays as arrays.
    pub fn attr(&self, key: &str) -> Option<Value> {
        self.attributes
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| any_value(&a["value"]))
    }
}

fn any_value(v: &Value) -> Value {
    for kind in ["stringValue", "intValue", "doubleValue", "boolValue"] {
        if let Some(x) = v.get(kind) {
            return x.clone();
        }
    }
    let items = v["arrayValue"]["values"].as_array().into_iter().flatten();
    Value::Array(items.map(any_value).collect())
}

/// The trace backend's output file.
pub struct SpanFile(PathBuf);

impl SpanFile {
    pub fn new(path: &str) -> SpanFile {
        SpanFile(PathBuf::from(path))
    }

    pub fn read(&self) -> anyhow::Result<Vec<Span>> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut spans = Vec::new();
        // The last line may be half written: skip what does not parse.
        for line in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            for rs in line["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        spans.push(parse_span(&service, s));
                    }
                }
            }
        }
        Ok(spans)
    }
}

fn parse_span(service: &str, s: &Value) -> Span {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Span {
        service: service.to_owned(),
        trace_id: text(&s["traceId"]),
        span_id: text(&s["spanId"]),
        parent: text(&s["parentSpanId"]),
        name: text(&s["name"]),
        kind: s["kind"].as_i64().unwrap_or(0),
        attributes: s["attributes"].as_array().cloned().unwrap_or_default(),
        events: s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| text(&e["name"]))
            .collect(),
        links: s["links"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| (text(&l["traceId"]), text(&l["spanId"])))
            .collect(),
    }
}
