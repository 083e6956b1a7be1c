//! The Prometheus alert rules use the crate's thresholds: each alert's
//! `threshold_name`/`threshold`/`thresholds` annotations equal the constants,
//! and each number appears literally in the alert's expression (or in a
//! recording rule it reads). Also: labels, runbook links, and which
//! bottlenecks have alerts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use diagnosis::thresholds;
use diagnosis::Bottleneck;
use serde_yaml::Value;

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

struct Rules {
    alerts: Vec<Value>,
    /// Recording rule name -> expression.
    records: BTreeMap<String, String>,
}

fn rules() -> Rules {
    let doc: Value = serde_yaml::from_str(&repo_file("prometheus/rules/candlelight-alerts.yml"))
        .expect("rules file is YAML");
    let mut out = Rules {
        alerts: Vec::new(),
        records: BTreeMap::new(),
    };
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(name) = rule["record"].as_str() {
                let expr = rule["expr"].as_str().expect("record expr");
                out.records.insert(name.to_string(), expr.to_string());
            } else {
                out.alerts.push(rule.clone());
            }
        }
    }
    out
}

/// Numeric literals of a PromQL expression: numbers outside strings and
/// identifiers, durations (`5m`) left out.
fn numbers(expr: &str) -> Vec<f64> {
    let c: Vec<char> = expr.chars().collect();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            while i < c.len() && c[i] != ch {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            if i < c.len()
                && c[i] == 'e'
                && c.get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '-' || *n == '+')
            {
                i += 2;
                while i < c.len() && c[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let duration = i < c.len() && c[i].is_ascii_alphabetic();
            let text: String = c[start..i].iter().collect();
            if duration {
                while i < c.len() && c[i].is_ascii_alphanumeric() {
                    i += 1;
                }
            } else {
                out.push(text.parse().unwrap_or_else(|_| panic!("number {text}")));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The alert's expression and those of the recording rules it reads (transitively).
fn expr_with_records(alert: &Value, records: &BTreeMap<String, String>) -> String {
    let mut text = alert["expr"].as_str().expect("alert expr").to_string();
    let mut seen = Vec::new();
    loop {
        let more: Vec<(&String, &String)> = records
            .iter()
            .filter(|(name, _)| !seen.contains(*name) && text.contains(name.as_str()))
            .collect();
        if more.is_empty() {
            return text;
        }
        for (name, expr) in more {
            seen.push(name.clone());
            text = format!("{text}\n{expr}");
        }
    }
}

fn annotation<'a>(alert: &'a Value, key: &str) -> &'a str {
    alert["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{:?} lacks annotation {key}", alert["alert"]))
}

#[test]
fn every_alert_threshold_equals_the_crates_constant() {
    let r = rules();
    assert!(!r.alerts.is_empty());
    for alert in &r.alerts {
        let name = alert["alert"].as_str().expect("alert name");
        let expr = expr_with_records(alert, &r.records);
        let literals = numbers(&expr);
        let main = annotation(alert, "threshold_name");
        let main_value: f64 = annotation(alert, "threshold")
            .parse()
            .expect("threshold is a number");
        let mut listed = Vec::new();
        for pair in annotation(alert, "thresholds").split_whitespace() {
            let (t, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: '{pair}' is not NAME=VALUE"));
            let v: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("{name}: '{pair}' has no number"));
            let constant = thresholds::by_name(t)
                .unwrap_or_else(|| panic!("{name}: {t} is not a crate threshold"));
            assert_eq!(
                v, constant.value,
                "{name}: {t} is {v} in the rules but {} in the crate",
                constant.value
            );
            assert!(
                literals.contains(&v),
                "{name}: {t} = {v} does not appear in its expression:\n{expr}\nnumbers: {literals:?}"
            );
            listed.push(t);
        }
        assert!(
            listed.contains(&main),
            "{name}: threshold_name {main} not in thresholds"
        );
        let constant = thresholds::by_name(main).expect("main threshold");
        assert_eq!(
            main_value, constant.value,
            "{name}: threshold differs from {main}"
        );
    }
}

#[test]
fn alerts_carry_severity_bottleneck_and_a_runbook_section() {
    let r = rules();
    let docs = repo_file("docs/diagnosis.md");
    for alert in &r.alerts {
        let name = alert["alert"].as_str().expect("alert name");
        let labels = &alert["labels"];
        let severity = labels["severity"].as_str().expect("severity label");
        assert!(
            ["info", "warning", "critical"].contains(&severity),
            "{name}: severity {severity}"
        );
        let anchor = match (labels["bottleneck"].as_str(), labels["slo"].as_str()) {
            (Some(b), None) => {
                let parsed: Bottleneck =
                    serde_yaml::from_str(b).unwrap_or_else(|_| panic!("{name}: bottleneck {b}"));
                parsed.as_str().to_string()
            }
            (None, Some(_)) => "slo".to_string(),
            _ => panic!("{name}: needs exactly one of the labels bottleneck, slo"),
        };
        let url = annotation(alert, "runbook_url");
        assert!(
            url.ends_with(&format!("/diagnosis.md#{anchor}")),
            "{name}: runbook_url {url}"
        );
        assert!(
            docs.contains(&format!("<a id=\"{anchor}\"></a>")),
            "docs/diagnosis.md lacks anchor {anchor}"
        );
        for key in ["summary", "description"] {
            assert!(!annotation(alert, key).is_empty(), "{name}: empty {key}");
        }
        assert!(
            alert["for"].as_str().is_some(),
            "{name}: no `for:` duration"
        );
    }
}

#[test]
fn every_bottleneck_but_client_has_an_alert() {
    let r = rules();
    for b in Bottleneck::ALL {
        let n = r
            .alerts
            .iter()
            .filter(|a| a["labels"]["bottleneck"].as_str() == Some(b.as_str()))
            .count();
        match b {
            Bottleneck::Client => {
                assert_eq!(n, 0, "client lives in loadgen: no PromQL alert can see it")
            }
            _ => assert!(n > 0, "no alert for {b}"),
        }
    }
}

#[test]
fn number_scanner_skips_names_strings_and_durations() {
    let e = r#"quantile_over_time(1 - 0.75, candlelight:x_p99_5m{le="0.5"}[5m]) >= 0.7 and y offset 30m > 33554432 * 1e-3"#;
    assert_eq!(numbers(e), vec![1.0, 0.75, 0.7, 33554432.0, 1e-3]);
}
