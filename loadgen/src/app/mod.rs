//! One command from flags to exit status: a load run ([`load`]), a merge of
//! workers' results ([`merge`]), or a push of spooled history ([`history`]).
//! Exit codes are documented in the README.

mod finish;
mod history;
mod load;
mod merge;

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::plan::cli::{Cli, Command, HistoryCommand};
use crate::report;

/// Run what the flags ask for and print the result; returns the documented
/// exit status (0 done, 1 bad input or history not recorded, 3 nothing succeeded).
pub fn run(cli: Cli) -> ExitCode {
    let progress = std::io::stderr().is_terminal() && !cli.no_progress;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.clone() {
        None => run_exit(runtime.block_on(load::run(cli, progress))),
        Some(Command::Merge(args)) => run_exit(runtime.block_on(merge::run(args))),
        Some(Command::History {
            action:
                HistoryCommand::Push {
                    database_url,
                    spools,
                    spool_dir,
                },
        }) => runtime.block_on(history::push(&database_url, &spools, spool_dir.as_deref())),
    }
}

/// Print the run's table (or its error) and say how it went.
fn run_exit(done: anyhow::Result<finish::RunReport>) -> ExitCode {
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            return ExitCode::FAILURE;
        }
    };
    print!(
        "{}",
        report::render_table(&done.result.steps, &done.result.sweep)
    );
    if let Some(d) = &done.result.diagnosis {
        println!("\n{}", diagnosis::render_text(d));
        if let Some(sweep) = &d.sweep {
            print!("{}", diagnosis::render_sweep_text(sweep));
        }
    }
    println!("results: {}", done.output_dir.display());
    if let Some(e) = &done.database_error {
        let spooled = done.spooled.first().map_or(String::new(), |p| {
            format!("; spooled to {} for `loadgen history push`", p.display())
        });
        eprintln!(
            "error: results written to {} but not to PostgreSQL: {e}{spooled}",
            done.output_dir.display()
        );
        return ExitCode::FAILURE;
    }
    if done.result.steps.iter().all(|s| s.requests.ok == 0) {
        eprintln!("error: no request succeeded");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
