//! The `loadgen` binary: parse flags, run, print the table, exit.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use loadgen::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line, like every other bad-input error.
            let text = e.render().to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
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
    match runtime.block_on(loadgen::app::run(cli, progress)) {
        Ok(report) => {
            print!(
                "{}",
                loadgen::report::render_table(&report.result.steps, &report.result.sweep)
            );
            println!("results: {}", report.output_dir.display());
            if let Some(e) = report.database_error {
                eprintln!(
                    "error: results written to {} but not to PostgreSQL: {e}",
                    report.output_dir.display()
                );
                return ExitCode::FAILURE;
            }
            if report.result.steps.iter().all(|s| s.requests.ok == 0) {
                eprintln!("error: no request succeeded");
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
