//! The `loadgen` binary: parse the flags, hand them to [`loadgen::run`].

use std::process::ExitCode;

use clap::Parser;
use loadgen::Cli;

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => loadgen::run(cli),
        Err(e) if e.use_stderr() => {
            // One line, like every other bad-input error.
            let text = e.render().to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            ExitCode::from(2)
        }
        Err(e) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
    }
}
