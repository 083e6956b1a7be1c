//! Reading a server's Prometheus `/metrics`: device samples and histogram deltas.
//!
//! The exposition text format is small and stable; a 60-line parser that handles
//! quoted, escaped label values is easier to trust than the available crates
//! (which split label sets on commas).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {detail}")]
pub struct ParseError {
    pub line: usize,
    pub detail: String,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Label pairs, in exposition order.
type Labels = Vec<(String, String)>;

/// Parse `k="v",...}` (after the `{`); returns the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let key = rest[..eq].trim().to_string();
        let mut chars = rest[eq + 1..].trim_start().char_indices();
        let body = rest[eq + 1..].trim_start();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} value is not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => value.push('\n'),
                (true, c) => value.push(c),
                (false, '\\') => {}
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, c) => value.push(c),
            }
            escaped = !escaped && c == '\\';
        }
        let end = end.ok_or_else(|| format!("label {key} value is not terminated"))?;
        labels.push((key, value));
        rest = &body[end + 1..];
    }
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut samples = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |detail: String| ParseError {
                line: n + 1,
                detail,
            };
            let name_end = line
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(line.len());
            let name = line[..name_end].to_string();
            let (labels, rest) = match line[name_end..].strip_prefix('{') {
                Some(after) => parse_labels(after).map_err(err)?,
                None => (Vec::new(), &line[name_end..]),
            };
            let value_text = rest.split_whitespace().next().unwrap_or("");
            let value =
                parse_value(value_text).ok_or_else(|| err(format!("bad value '{value_text}'")))?;
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Ok(Self { samples })
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && filter.iter().all(|(k, v)| s.label(k) == Some(v)))
    }

    /// Sum over all label sets of the first name in `names` that is present.
    pub fn sum(&self, names: &[&str]) -> Option<f64> {
        names.iter().find_map(|n| {
            let v: Vec<f64> = self.matching(n, &[]).map(|s| s.value).collect();
            (!v.is_empty()).then(|| v.iter().sum())
        })
    }

    /// The largest value of `name` among label sets matching `filter`.
    pub fn max(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, filter)
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }

    /// Mean over label sets (e.g. utilization over several GPUs).
    pub fn mean(&self, names: &[&str]) -> Option<f64> {
        names.iter().find_map(|n| {
            let v: Vec<f64> = self.matching(n, &[]).map(|s| s.value).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        })
    }

    /// The histogram `base`, summed over the label sets that match `filter`.
    pub fn histogram(&self, base: &str, filter: &[(&str, &str)]) -> Option<Histogram> {
        let bucket = format!("{base}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.matching(&bucket, filter) {
            let le = s.label("le").and_then(parse_value)?;
            // Order-preserving key for f64 bounds (all non-negative here).
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
        }
        if by_le.is_empty() {
            return None;
        }
        let sum_name = format!("{base}_sum");
        let count_name = format!("{base}_count");
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram {
            buckets,
            sum: self.matching(&sum_name, filter).map(|s| s.value).sum(),
            count: self.matching(&count_name, filter).map(|s| s.value).sum(),
        })
    }
}

/// A cumulative histogram: `(upper bound, count of samples <= bound)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// `self - before`: what was observed between two scrapes.
    pub fn since(&self, before: Option<&Histogram>) -> Histogram {
        let Some(before) = before else {
            return self.clone();
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c - before.count_at(*le)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The cumulative count at bucket bound `le` (0 where there is no such bound).
    fn count_at(&self, le: f64) -> f64 {
        self.buckets
            .iter()
            .find(|(b, _)| *b == le)
            .map_or(0.0, |(_, c)| *c)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile, interpolated inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|b| b.1)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut prev = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(prev.0); // above the last finite bound
                }
                let within = (rank - prev.1) / (count - prev.1).max(f64::MIN_POSITIVE);
                return Some(prev.0 + (le - prev.0) * within);
            }
            prev = (le, count);
        }
        Some(prev.0)
    }

    /// Adds `other`'s counts (same bucket bounds) to these.
    pub fn plus(&self, other: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c + other.count_at(*le)))
                .collect(),
            sum: self.sum + other.sum,
            count: self.count + other.count,
        }
    }
}

/// How client-side samples compare with a server histogram over the same requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub client_count: usize,
    pub server_count: f64,
    pub client_mean: Option<f64>,
    pub server_mean: Option<f64>,
    /// Largest number of samples that would have to move more than one bucket
    /// to make the two cumulative distributions match.
    pub worst_excess: f64,
    /// True when counts match and every sample is within one bucket.
    pub within_one_bucket: bool,
}

/// Compare `client` samples (seconds) with `server`, allowing each sample to sit
/// one bucket away: bucket resolution is all a histogram can promise.
pub fn agreement(client: &[f64], server: &Histogram) -> Agreement {
    let cum = |le: f64| client.iter().filter(|v| **v <= le).count() as f64;
    let client_cum: Vec<f64> = server.buckets.iter().map(|(le, _)| cum(*le)).collect();
    let server_cum: Vec<f64> = server.buckets.iter().map(|(_, c)| *c).collect();
    let mut worst: f64 = 0.0;
    for k in 1..server_cum.len() {
        // A sample below bound k-1 on one side must be below bound k on the other.
        worst = worst
            .max(client_cum[k - 1] - server_cum[k])
            .max(server_cum[k - 1] - client_cum[k]);
    }
    let counts_match = (server.count - client.len() as f64).abs() < 0.5;
    Agreement {
        client_count: client.len(),
        server_count: server.count,
        client_mean: (!client.is_empty()).then(|| client.iter().sum::<f64>() / client.len() as f64),
        server_mean: server.mean(),
        worst_excess: worst,
        within_one_bucket: counts_match && worst <= 0.0,
    }
}

#[cfg(test)]
mod quantile_tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = Histogram {
            buckets: vec![(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)],
            sum: 25.0,
            count: 20.0,
        };
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.75), Some(1.5));
        let empty = Histogram {
            buckets: vec![(1.0, 0.0)],
            sum: 0.0,
            count: 0.0,
        };
        assert_eq!(empty.quantile(0.5), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP x_seconds A histogram.
# TYPE x_seconds histogram
x_seconds_bucket{op="chat",le="0.1"} 1
x_seconds_bucket{op="chat",le="0.5"} 3
x_seconds_bucket{op="chat",le="+Inf"} 4
x_seconds_sum{op="chat"} 1.6
x_seconds_count{op="chat"} 4
x_seconds_bucket{op="text",le="0.1"} 0
x_seconds_bucket{op="text",le="0.5"} 1
x_seconds_bucket{op="text",le="+Inf"} 1
x_seconds_sum{op="text"} 0.3
x_seconds_count{op="text"} 1
hw_gpu_utilization_ratio{hw_id="gpu0",hw_name="NVIDIA H100, \"SXM\""} 0.5
hw_gpu_utilization_ratio{hw_id="gpu1",hw_name="b"} 1
process_memory_usage_bytes 2.5e8
"#;

    #[test]
    fn parses_labels_with_commas_and_escapes() {
        let s = Scrape::parse(TEXT).expect("valid text");
        let gpu = s
            .samples
            .iter()
            .find(|x| x.label("hw_id") == Some("gpu0"))
            .expect("gpu0");
        assert_eq!(gpu.label("hw_name"), Some("NVIDIA H100, \"SXM\""));
        assert_eq!(s.mean(&["missing", "hw_gpu_utilization_ratio"]), Some(0.75));
        assert_eq!(s.sum(&["process_memory_usage_bytes"]), Some(2.5e8));
        assert!(Scrape::parse("x{a=1} 2").is_err());
        assert!(Scrape::parse("x 2 3").is_ok(), "timestamps are ignored");
    }

    #[test]
    fn histograms_sum_over_label_sets_and_subtract() {
        let s = Scrape::parse(TEXT).expect("valid text");
        let h = s.histogram("x_seconds", &[]).expect("present");
        assert_eq!(
            h.buckets,
            vec![(0.1, 1.0), (0.5, 4.0), (f64::INFINITY, 5.0)]
        );
        assert_eq!(h.count, 5.0);
        let chat = s
            .histogram("x_seconds", &[("op", "chat")])
            .expect("present");
        let d = h.since(Some(&chat));
        assert_eq!(
            d.buckets,
            vec![(0.1, 0.0), (0.5, 1.0), (f64::INFINITY, 1.0)]
        );
        assert!((d.mean().unwrap_or_default() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn agreement_allows_one_bucket_and_no_more() {
        let server = Histogram {
            buckets: vec![(0.1, 2.0), (0.2, 3.0), (0.4, 4.0), (f64::INFINITY, 4.0)],
            sum: 0.6,
            count: 4.0,
        };
        // Client saw each request slightly later: two samples cross one boundary.
        let near = agreement(&[0.09, 0.11, 0.15, 0.3], &server);
        assert!(near.within_one_bucket, "{near:?}");
        // Every sample two or more buckets later than the server saw it.
        let far = agreement(&[0.5, 0.5, 0.5, 0.5], &server);
        assert!(!far.within_one_bucket, "{far:?}");
        // A missing request.
        assert!(!agreement(&[0.05, 0.05, 0.15], &server).within_one_bucket);
    }
}
