//! Jaeger as the trace store: started by `scripts/services/jaeger.sh` (in
//! memory), queried through the HTTP API that Jaeger's UI and Grafana's Jaeger
//! datasource use (`GET /api/traces/{id}`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::e2e::{eventually, service};
use testkit::ScriptService;

/// Set (by `scripts/test.sh`) where a missing Jaeger must fail the test, not skip it.
pub const REQUIRE_ENV: &str = "CANDLELIGHT_REQUIRE_JAEGER";

/// A running Jaeger; stopped on drop.
pub struct Jaeger {
    service: ScriptService,
    query_url: String,
    client: reqwest::Client,
}

impl Jaeger {
    /// Starts Jaeger in `dir`. `None` (after saying why on stderr) when its
    /// binary has not been built and [`REQUIRE_ENV`] is unset; with the variable
    /// set, a missing binary is built by the service script (minutes) instead.
    pub fn start(dir: &Path) -> anyhow::Result<Option<Jaeger>> {
        let cached = cached_binary()?;
        let required = std::env::var_os(REQUIRE_ENV).is_some();
        if cached.is_none() && !required {
            eprintln!(
                "SKIPPED: no Jaeger binary (scripts/build-jaeger.sh builds it in minutes); \
                 set {REQUIRE_ENV}=1 to build it here and run this test"
            );
            return Ok(None);
        }
        if let Some(bin) = &cached {
            std::env::set_var("CANDLELIGHT_JAEGER", bin);
        }
        let service = service("jaeger.sh", "start", dir, &[])?;
        let query_url = service.get("query_url")?.to_owned();
        Ok(Some(Jaeger {
            service,
            query_url,
            client: reqwest::Client::new(),
        }))
    }

    /// `host:port` of the OTLP gRPC receiver, for the collector's `--tempo`.
    pub fn otlp_grpc(&self) -> anyhow::Result<String> {
        Ok(format!("127.0.0.1:{}", self.service.get("otlp_grpc")?))
    }

    /// The trace as stored now; `None` while Jaeger has no span of it.
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Option<Trace>> {
        let url = format!("{}/api/traces/{trace_id}", self.query_url);
        let response = self.client.get(&url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = response.error_for_status()?.json().await?;
        match body["data"].as_array().map(Vec::as_slice) {
            Some([trace]) => Trace::parse(trace).map(Some),
            Some([]) | None => Ok(None),
            Some(more) => bail!("{url}: {} traces for one id", more.len()),
        }
    }

    /// Polls until the trace satisfies `complete` (spans arrive in batches, a
    /// trace's spans possibly in several), or fails after `timeout`.
    pub async fn trace_when(
        &self,
        trace_id: &str,
        timeout: Duration,
        complete: impl Fn(&Trace) -> bool,
    ) -> anyhow::Result<Trace> {
        let complete = &complete;
        eventually(
            &format!("trace {trace_id} in Jaeger"),
            timeout,
            || async move { Ok(self.trace(trace_id).await?.filter(|t| complete(t))) },
        )
        .await
    }
}

/// The cached binary `scripts/build-jaeger.sh --check` names, if built.
fn cached_binary() -> anyhow::Result<Option<String>> {
    if let Some(bin) = std::env::var_os("CANDLELIGHT_JAEGER") {
        return Ok(Some(bin.to_string_lossy().into_owned()));
    }
    let script = testkit::workspace_root().join("scripts/build-jaeger.sh");
    let out = Command::new(&script)
        .arg("--check")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((out.status.success() && !path.is_empty()).then_some(path))
}

/// One trace as Jaeger's query API returns it.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

/// One span in Jaeger's model: OTLP's parent became a `CHILD_OF` reference and
/// each link a `FOLLOWS_FROM` reference.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
    pub service: String,
    /// The `CHILD_OF` reference's span id; `None` for a root span.
    pub parent: Option<String>,
    /// `(trace id, span id)` of each `FOLLOWS_FROM` reference (OTLP links).
    pub links: Vec<(String, String)>,
    pub start_us: u64,
    pub duration_us: u64,
    tags: Vec<(String, Value)>,
}

impl Span {
    /// A tag's value as Jaeger typed it (strings, numbers, bools).
    pub fn tag(&self, key: &str) -> Option<&Value> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tag_i64(&self, key: &str) -> Option<i64> {
        self.tag(key).and_then(Value::as_i64)
    }
}

impl Trace {
    fn parse(trace: &Value) -> anyhow::Result<Trace> {
        let trace_id = hex_id(&trace["traceID"], 32).context("a trace without traceID")?;
        let processes = &trace["processes"];
        let spans = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| parse_span(s, processes))
            .collect::<anyhow::Result<_>>()?;
        Ok(Trace { trace_id, spans })
    }

    pub fn span(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }

    /// The children of `parent`, oldest first.
    pub fn children<'a>(&'a self, parent: &'a Span) -> Vec<&'a Span> {
        let mut out: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| s.parent.as_deref() == Some(parent.span_id.as_str()))
            .collect();
        out.sort_by_key(|s| s.start_us);
        out
    }
}

fn parse_span(s: &Value, processes: &Value) -> anyhow::Result<Span> {
    let trace_id = hex_id(&s["traceID"], 32).context("span without traceID")?;
    let mut parent = None;
    let mut links = Vec::new();
    for r in s["references"].as_array().into_iter().flatten() {
        let target = (
            hex_id(&r["traceID"], 32).context("reference without traceID")?,
            hex_id(&r["spanID"], 16).context("reference without spanID")?,
        );
        match r["refType"].as_str() {
            Some("CHILD_OF") if parent.is_none() && target.0 == trace_id => parent = Some(target.1),
            Some("FOLLOWS_FROM") => links.push(target),
            other => bail!("unexpected reference {other:?} in {s}"),
        }
    }
    let process = s["processID"].as_str().unwrap_or_default();
    Ok(Span {
        span_id: hex_id(&s["spanID"], 16).context("span without spanID")?,
        trace_id,
        name: s["operationName"].as_str().unwrap_or_default().to_owned(),
        service: processes[process]["serviceName"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        parent,
        links,
        start_us: s["startTime"].as_u64().unwrap_or_default(),
        duration_us: s["duration"].as_u64().unwrap_or_default(),
        tags: s["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["key"].as_str()?.to_owned(), t["value"].clone())))
            .collect(),
    })
}

/// Jaeger prints a trace id whose high 64 bits are zero as 16 digits; pad ids
/// back to OTLP's width (32 for traces, 16 for spans) so they compare with
/// `x-trace-id`.
fn hex_id(v: &Value, width: usize) -> Option<String> {
    let s = v.as_str()?.to_ascii_lowercase();
    Some(format!("{s:0>width$}"))
}
