use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = candlelight::config::Cli::parse();
    match candlelight::server::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("candlelight: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
