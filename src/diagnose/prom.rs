//! A small client of Prometheus' HTTP query API, and the queries of one
//! replica over one window.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context as _};
use diagnosis::Series;
use serde::Deserialize;

/// The window of a diagnosis, in Unix seconds.
pub struct Span {
    pub start: f64,
    pub end: f64,
    /// Resolution of range queries, seconds.
    pub step: f64,
    /// The window as a PromQL range (`600s`).
    pub range: String,
}

pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<ApiData>,
}

#[derive(Deserialize)]
struct ApiData {
    result: Vec<ApiSeries>,
}

#[derive(Deserialize)]
struct ApiSeries {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// How replicas are told apart: by the direct scrape's `instance` (job
/// `candlelight`), or, when only the collector's copy exists, by its
/// `exported_instance` (the server's `service.instance.id`).
pub struct Replicas {
    label: &'static str,
    direct: bool,
    names: BTreeSet<String>,
}

impl Replicas {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    /// The label matchers that select `instance`.
    fn selector(&self, instance: &str) -> String {
        let value = instance.replace('\\', "\\\\").replace('"', "\\\"");
        if self.direct {
            format!(r#"job="candlelight", instance="{value}""#)
        } else {
            format!(r#"{}="{value}""#, self.label)
        }
    }
}

impl Prometheus {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn query(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Vec<ApiSeries>> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .with_context(|| format!("cannot reach Prometheus at {}", self.base))?;
        let status = resp.status();
        let body: ApiResponse = resp
            .json()
            .await
            .with_context(|| format!("{url} answered {status} with no Prometheus API response"))?;
        if body.status != "success" {
            bail!(
                "Prometheus refused a query: {}",
                body.error.unwrap_or_else(|| status.to_string())
            );
        }
        Ok(body.data.map(|d| d.result).unwrap_or_default())
    }

    /// Which replicas had candlelight series in the window.
    pub async fn replicas(&self, span: &Span) -> anyhow::Result<Replicas> {
        for (label, direct, selector) in [
            ("instance", true, r#"{job="candlelight"}"#),
            ("exported_instance", false, r#"{exported_instance!=""}"#),
        ] {
            let expr = format!(
                "max by ({label}) (max_over_time(candlelight_requests_running{selector}[{}]))",
                span.range
            );
            let result = self
                .query(
                    "/api/v1/query",
                    &[("query", expr), ("time", span.end.to_string())],
                )
                .await?;
            let names: BTreeSet<String> = result
                .into_iter()
                .filter_map(|s| s.metric.get(label).cloned())
                .collect();
            if !names.is_empty() {
                return Ok(Replicas {
                    label,
                    direct,
                    names,
                });
            }
        }
        Ok(Replicas {
            label: "instance",
            direct: true,
            names: BTreeSet::new(),
        })
    }
}

/// The queries of one replica over one window. In query templates `R` is the
/// replica label, `S` the replica's matchers and `W` the window's range.
pub struct Queries<'a> {
    pub prom: &'a Prometheus,
    pub replicas: &'a Replicas,
    pub instance: &'a str,
    pub span: &'a Span,
}

impl Queries<'_> {
    fn expand(&self, template: &str) -> String {
        template
            .replace("(R)", &format!("({})", self.replicas.label))
            .replace("(R, le)", &format!("({}, le)", self.replicas.label))
            .replace(
                "{S}",
                &format!("{{{}}}", self.replicas.selector(self.instance)),
            )
            .replace(
                "{S,",
                &format!("{{{},", self.replicas.selector(self.instance)),
            )
            .replace("[W]", &format!("[{}]", self.span.range))
    }

    /// A gauge over the window (seconds from its start), or `None` if absent.
    pub async fn series(&self, template: &str) -> anyhow::Result<Option<Series>> {
        let params = [
            ("query", self.expand(template)),
            ("start", self.span.start.to_string()),
            ("end", self.span.end.to_string()),
            ("step", self.span.step.to_string()),
        ];
        let result = self.prom.query("/api/v1/query_range", &params).await?;
        let Some(s) = result.into_iter().next() else {
            return Ok(None);
        };
        let points = s
            .values
            .iter()
            .filter_map(|(t, v)| Some((t - self.span.start, v.parse::<f64>().ok()?)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        Ok(Series::new(points).ok().filter(|s| !s.is_empty()))
    }

    /// A value at the window's end, or `None` if absent or not a number.
    pub async fn last(&self, template: &str) -> anyhow::Result<Option<f64>> {
        let params = [
            ("query", self.expand(template)),
            ("time", self.span.end.to_string()),
        ];
        let result = self.prom.query("/api/v1/query", &params).await?;
        Ok(result
            .into_iter()
            .next()
            .and_then(|s| s.value)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .filter(|v| v.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_to_one_replica_and_the_window() {
        let prom = Prometheus::new("http://p:9090/").expect("client");
        let replicas = Replicas {
            label: "instance",
            direct: true,
            names: BTreeSet::new(),
        };
        let span = Span {
            start: 0.0,
            end: 600.0,
            step: 15.0,
            range: "600s".into(),
        };
        let q = Queries {
            prom: &prom,
            replicas: &replicas,
            instance: "10.0.0.1:3000",
            span: &span,
        };
        assert_eq!(
            q.expand("sum by (R) (increase(x_count{S, k=\"v\"}[W]))"),
            r#"sum by (instance) (increase(x_count{job="candlelight", instance="10.0.0.1:3000", k="v"}[600s]))"#
        );
        assert_eq!(prom.url(), "http://p:9090");
    }
}
