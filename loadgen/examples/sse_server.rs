//! A trivial local SSE server for the 1,000-stream bench (scripts/bench-loadgen.sh).
//!
//! Usage: sse-server PORT [TOKEN_DELAY_MS] [FIRST_TOKEN_DELAY_MS] [WORKERS]

use std::time::Duration;

use loadgen::mock::{serve, MockConfig};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let port: u16 = arg(1, 0);
    let cfg = MockConfig {
        token_delay: Duration::from_millis(arg(2, 20)),
        first_token_delay: Duration::from_millis(arg(3, 20)),
        ..MockConfig::default()
    };
    let workers: usize = arg(4, 1);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            eprintln!("sse-server listening on {}", listener.local_addr()?);
            serve(listener, cfg).await?;
            Ok(())
        })
}
