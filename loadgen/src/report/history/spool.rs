//! The spool: a run's history rows, kept on disk while PostgreSQL cannot take
//! them, until `loadgen history push` writes them (once, by run id).
//!
//! A run that misses the database is spooled twice: beside its results
//! (`<output-dir>/history-spool.json`) and in the spool directory
//! (`<spool-dir>/<run_id>.json`, default `$XDG_STATE_HOME/candlelight/spool`),
//! which `loadgen history push` empties when called without files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunHistory;

/// The spool file beside a run's results.
pub const FILE_NAME: &str = "history-spool.json";

/// Version of the spool file layout.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot write the spool file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the spool {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("no spool directory: set --spool-dir, $XDG_STATE_HOME or $HOME")]
    NoDir,
}

#[derive(Serialize, Deserialize)]
struct SpoolFile {
    spool_version: u32,
    run: RunHistory,
}

/// `$XDG_STATE_HOME/candlelight/spool`, else `$HOME/.local/state/candlelight/spool`.
pub fn default_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("candlelight/spool"))
}

/// Where `run` will be spooled: beside the results, and in the spool directory.
pub fn paths(run: &RunHistory, output_dir: &Path, spool_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![output_dir.join(FILE_NAME)];
    if let Some(dir) = spool_dir.map(Path::to_path_buf).or_else(default_dir) {
        out.push(dir.join(format!("{}.json", run.run_id)));
    }
    out
}

/// Write `run` to `path`, whole (through a rename).
pub fn save(run: &RunHistory, path: &Path) -> Result<(), SpoolError> {
    let text = serde_json::to_vec_pretty(&SpoolFile {
        spool_version: VERSION,
        run: run.clone(),
    })
    .expect("invariant: the history rows always serialize");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| SpoolError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Read one spool file.
pub fn load(path: &Path) -> Result<RunHistory, SpoolError> {
    let err = |detail: String| SpoolError::Read {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: SpoolFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if file.spool_version != VERSION {
        return Err(err(format!(
            "spool version {} is not {VERSION}",
            file.spool_version
        )));
    }
    Ok(file.run)
}

/// The spool files `given` names: files as they are; a directory's
/// `history-spool.json`, or else every `*.json` in it. Nothing given: every
/// file in the spool directory.
pub fn find(given: &[PathBuf], spool_dir: Option<&Path>) -> Result<Vec<PathBuf>, SpoolError> {
    let dirs: Vec<PathBuf> = if given.is_empty() {
        let dir = spool_dir
            .map(Path::to_path_buf)
            .or_else(default_dir)
            .ok_or(SpoolError::NoDir)?;
        if !dir.exists() {
            return Ok(Vec::new());
        }
        vec![dir]
    } else {
        given.to_vec()
    };
    let mut files = Vec::new();
    for path in dirs {
        if !path.is_dir() {
            files.push(path);
            continue;
        }
        if path.join(FILE_NAME).is_file() {
            files.push(path.join(FILE_NAME));
            continue;
        }
        let read = std::fs::read_dir(&path).map_err(|e| SpoolError::Read {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let mut jsons: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        jsons.sort();
        files.extend(jsons);
    }
    Ok(files)
}
