//! Workers and `loadgen merge`: three worker processes share one seeded load
//! against loadgen's mock SSE server, and the merged report's counts and
//! percentiles equal those computed here, independently, from all their raw
//! records. Merges of different loads or incomplete worker sets are refused.

mod common;

use std::path::Path;

use common::{args, loadgen_async as loadgen, mock, read_result, text};
use loadgen::mock::MockConfig;
use serde_json::Value;

/// The raw records of one worker's `records.jsonl`.
fn raw_records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("records.jsonl"))
        .expect("a worker writes records.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Nearest-rank percentile, as the README defines it.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(v: &Value) -> f64 {
    v.as_u64().expect("nanoseconds") as f64 / 1e9
}

/// TTFT, E2E and ITL samples (seconds) of the successful records.
fn samples(records: &[Value]) -> [Vec<f64>; 3] {
    let (mut ttft, mut e2e, mut itl) = (Vec::new(), Vec::new(), Vec::new());
    for r in records.iter().filter(|r| r["error_kind"].is_null()) {
        let tokens: Vec<f64> = r["token_times_ns"]
            .as_array()
            .expect("token times")
            .iter()
            .map(secs)
            .collect();
        ttft.push(tokens[0] - secs(&r["sent_ns"]));
        e2e.push(secs(&r["end_ns"]) - secs(&r["sent_ns"]));
        itl.extend(tokens.windows(2).map(|w| w[1] - w[0]));
    }
    for v in [&mut ttft, &mut e2e, &mut itl] {
        v.sort_by(f64::total_cmp);
    }
    [ttft, e2e, itl]
}

async fn workers(url: &str, root: &Path, name: &str, shape: &[&str], seed: &str) -> Vec<String> {
    let runs = (0..3).map(|k| {
        let dir = root.join(format!("{name}{k}"));
        let mut flags = vec![
            "--worker-id".to_string(),
            k.to_string(),
            "--workers".into(),
            "3".into(),
        ];
        flags.extend(
            [
                "--seed",
                seed,
                "--input-len",
                "8",
                "--output-len",
                "6",
                "--no-plots",
            ]
            .map(String::from),
        );
        flags.extend(shape.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let a = args(url, &dir, &refs);
        async move { (dir, loadgen(a).await) }
    });
    let mut dirs = Vec::new();
    for (dir, out) in futures::future::join_all(runs).await {
        assert!(out.status.success(), "{}", text(&out));
        dirs.push(dir.display().to_string());
    }
    dirs
}

async fn merge(dirs: &[&str], out: &Path) -> std::process::Output {
    let mut a = vec!["merge".to_string()];
    a.extend(dirs.iter().map(|d| d.to_string()));
    a.extend(["--output-dir".into(), out.display().to_string()]);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(&refs)
            .output()
            .expect("run loadgen merge")
    })
    .await
    .expect("merge thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_merge_into_exactly_the_whole() {
    let url = mock(MockConfig::default()).await;
    let root = tempfile::tempdir().expect("temp dir");
    let shapes: [(&str, &[&str]); 2] = [
        ("closed", &["--concurrency", "3", "--requests", "30"]),
        ("open", &["--rate", "90", "--requests", "30"]),
    ];
    for (name, shape) in shapes {
        let dirs = workers(&url, root.path(), name, shape, "5").await;
        let mut all = Vec::new();
        for (k, d) in dirs.iter().enumerate() {
            let recs = raw_records(Path::new(d));
            assert_eq!(recs.len(), 10, "{name}: worker {k} runs a third");
            assert!(recs
                .iter()
                .all(|r| r["id"].as_u64().is_some_and(|i| i % 3 == k as u64)));
            all.extend(recs);
        }
        let mut ids: Vec<u64> = all.iter().filter_map(|r| r["id"].as_u64()).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..30).collect::<Vec<_>>(),
            "{name}: no overlap, nothing missing"
        );

        let out_dir = root.path().join(format!("{name}-merged"));
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let out = merge(&refs, &out_dir).await;
        assert!(out.status.success(), "{}", text(&out));
        let r = read_result(&out_dir);
        let s = &r["steps"][0];
        assert_eq!(s["requests"]["sent"], 30, "{name}: {s}");
        assert_eq!(s["requests"]["counted"], 30);
        let [ttft, e2e, itl] = samples(&all);
        for (metric, v) in [("ttft", &ttft), ("e2e", &e2e), ("itl", &itl)] {
            let d = &s[metric];
            assert_eq!(d["count"], v.len(), "{name} {metric}");
            for (stat, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
                let got = d[stat].as_f64().unwrap_or(f64::NAN);
                let want = percentile(v, q);
                assert!(
                    (got - want).abs() < 1e-9,
                    "{name} {metric} {stat}: {got} vs {want}"
                );
            }
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            assert!((d["mean"].as_f64().unwrap_or(f64::NAN) - mean).abs() < 1e-9);
        }
        assert_eq!(r["merged_from"].as_array().map(Vec::len), Some(3));
        let csv = std::fs::read_to_string(out_dir.join("requests.csv")).expect("requests.csv");
        assert_eq!(
            csv.lines().count(),
            31,
            "{name}: every request in the merged CSV"
        );
    }

    // A worker of another load (another seed) is refused, in one line.
    let odd = workers(&url, root.path(), "odd", shapes[0].1, "6").await;
    let closed: Vec<String> = (0..3)
        .map(|k| root.path().join(format!("closed{k}")).display().to_string())
        .collect();
    let bad = merge(&[&closed[0], &closed[1], &odd[2]], &root.path().join("bad")).await;
    let err = String::from_utf8_lossy(&bad.stderr).trim().to_string();
    assert!(!bad.status.success() && err.lines().count() == 1, "{err}");
    assert!(
        err.contains("different loads") && err.contains("--seed"),
        "{err}"
    );
    // And so is a set with a worker missing or repeated.
    let bad = merge(
        &[&closed[0], &closed[0], &closed[1]],
        &root.path().join("bad2"),
    )
    .await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("exactly once"),
        "{err}"
    );
}
