//! The end of every command that produces a run: the history in PostgreSQL
//! (if asked), then the files, whatever the database did.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;

use crate::measure::record::RequestRecord;
use crate::report::history::{self, spool, RunHistory};
use crate::report::{self, DatabaseOutcome, RunResult};

/// How a finished run went, for the exit status.
#[derive(Debug)]
pub struct RunReport {
    pub output_dir: PathBuf,
    pub result: RunResult,
    /// Set when results are on disk but not in PostgreSQL.
    pub database_error: Option<String>,
    /// Where the history went instead.
    pub spooled: Vec<PathBuf>,
}

/// Where a run's results go.
pub struct Destination {
    pub output_dir: PathBuf,
    pub database_url: Option<String>,
    pub spool_dir: Option<PathBuf>,
    pub plots: bool,
}

/// `results/<start time><suffix>`.
pub fn default_dir(start: SystemTime, suffix: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(start)
        .to_string()
        .replace(':', "-");
    PathBuf::from("results").join(format!("{stamp}{suffix}"))
}

/// Record the history (if asked), then write the files whatever the database did.
pub async fn finish(
    to: &Destination,
    mut result: RunResult,
    records: &[RequestRecord],
) -> anyhow::Result<RunReport> {
    let mut database_error = None;
    let mut spooled = Vec::new();
    if let Some(url) = &to.database_url {
        let history = RunHistory::of(&result);
        let outcome = match history::write(url, &history).await {
            Ok(w) => DatabaseOutcome {
                written: true,
                benchmark_id: Some(w.benchmark_id),
                error: None,
                spool: Vec::new(),
            },
            Err(e) => {
                let mut error = e.to_string();
                spooled = spool_run(&history, to, &mut error);
                database_error = Some(error.clone());
                DatabaseOutcome {
                    written: false,
                    benchmark_id: None,
                    error: Some(error),
                    spool: spooled.iter().map(|p| p.display().to_string()).collect(),
                }
            }
        };
        result.database = Some(outcome);
    }
    report::write_files(&to.output_dir, &result, records)?;
    if to.plots {
        report::write_plots(&to.output_dir, records, &result.steps).context("writing plots")?;
    }
    Ok(RunReport {
        output_dir: to.output_dir.clone(),
        result,
        database_error,
        spooled,
    })
}

/// Spool the run beside its results and in the spool directory; returns the
/// copies written. A copy that cannot be written is added to `error`, and the
/// run still ends with its files and table.
fn spool_run(history: &RunHistory, to: &Destination, error: &mut String) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for path in spool::paths(history, &to.output_dir, to.spool_dir.as_deref()) {
        match spool::save(history, &path) {
            Ok(()) => written.push(path),
            Err(e) => error.push_str(&format!(" (and {e})")),
        }
    }
    written
}
