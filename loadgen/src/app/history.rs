//! `loadgen history push`: write spooled runs to PostgreSQL. A run already
//! there (by its run id) is not written again, so pushing twice is harmless.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::report::history::{self, spool};

/// Push every spool named (or every file in the spool directory); files in
/// the spool directory are removed once their run is in the database.
pub async fn push(url: &str, given: &[PathBuf], spool_dir: Option<&Path>) -> ExitCode {
    let files = match spool::find(given, spool_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let owned_dir = spool_dir.map(Path::to_path_buf).or_else(spool::default_dir);
    let mut failed = false;
    for file in &files {
        let pushed = async {
            let run = spool::load(file)?;
            let w = history::write(url, &run).await?;
            anyhow::Ok((run.run_id, w))
        };
        match pushed.await {
            Ok((run_id, w)) => {
                let how = if w.inserted {
                    "written"
                } else {
                    "already recorded"
                };
                println!(
                    "{}: run {run_id} {how} as benchmark {}",
                    file.display(),
                    w.benchmark_id
                );
                if owned_dir
                    .as_deref()
                    .is_some_and(|d| file.parent() == Some(d))
                {
                    let _ = std::fs::remove_file(file);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {}: {e}", file.display());
            }
        }
    }
    if files.is_empty() {
        println!("nothing to push");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
