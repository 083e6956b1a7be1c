//! `loadgen merge DIR...`: the workers' results as one run, written like a
//! run's own (files, plots, history) and printed as its table.

use std::time::SystemTime;

use crate::app::finish::{default_dir, finish, Destination, RunReport};
use crate::plan::cli::MergeArgs;
use crate::report::merge::merge;

pub async fn run(args: MergeArgs) -> anyhow::Result<RunReport> {
    let merged = merge(&args.dirs)?;
    let place = Destination {
        output_dir: args
            .output_dir
            .clone()
            .unwrap_or_else(|| default_dir(SystemTime::now(), "-merged")),
        database_url: args.database_url.clone(),
        spool_dir: args.spool_dir.clone(),
        plots: !args.no_plots,
    };
    finish(&place, merged.result, &merged.records).await
}
