//! The checks that reject contradictory or out-of-range flags before any load,
//! each with a one-line message.

use crate::plan::cli::Cli;
use crate::plan::schedule::Arrivals;
use crate::send::protocol::ApiKind;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

fn bad(msg: impl Into<String>) -> Result<(), FlagError> {
    Err(FlagError(msg.into()))
}

impl Cli {
    /// Reject contradictory or out-of-range flags, one line each.
    pub fn validate(&self) -> Result<(), FlagError> {
        self.validate_shape()?;
        self.validate_limits()?;
        self.validate_workload()?;
        self.validate_workers()?;
        if self.dataset.is_some() && self.input_len.is_some() {
            return bad("--input-len applies to synthetic prompts; it contradicts --dataset");
        }
        if self.slo_search && self.slo.is_none() {
            return bad("--slo-search needs --slo");
        }
        if !(self.slo_attainment > 0.0 && self.slo_attainment <= 1.0) {
            return bad("--slo-attainment must be in (0, 1]");
        }
        if self.timeout <= 0.0 {
            return bad("--timeout must be positive");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("--temperature must be in [0, 2]");
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return bad(format!("--url '{}' is not an http(s) URL", self.url)),
        }
        if let Some(db) = &self.database_url {
            if let Err(e) = db.parse::<tokio_postgres::Config>() {
                return bad(format!("--database-url is not a PostgreSQL URL: {e}"));
            }
        }
        Ok(())
    }

    fn validate_shape(&self) -> Result<(), FlagError> {
        let shapes = [
            ("--concurrency", self.concurrency.is_some()),
            ("--rate", self.rate.is_some()),
            ("--batch-sizes", self.batch_sizes.is_some()),
            ("--rate-sweep", self.rate_sweep),
            ("--slo-search", self.slo_search),
        ];
        let given: Vec<&str> = shapes.iter().filter(|s| s.1).map(|s| s.0).collect();
        if given.len() > 1 {
            return bad(format!(
                "{} are mutually exclusive load shapes",
                given.join(" and ")
            ));
        }
        if self.concurrency == Some(0) {
            return bad("--concurrency must be at least 1");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("--rate must be a positive number");
            }
        }
        if let Some(b) = &self.batch_sizes {
            if b.is_empty() || b.contains(&0) {
                return bad("--batch-sizes must be positive integers");
            }
        }
        if self
            .sweep_fractions
            .iter()
            .any(|f| !(f.is_finite() && *f > 0.0))
        {
            return bad("--sweep-fractions must be positive");
        }
        if self.sweep_concurrency == 0 {
            return bad("--sweep-concurrency must be at least 1");
        }
        let open = self.rate.is_some() || self.rate_sweep || self.slo_search;
        if (self.arrivals.is_some() || self.burstiness.is_some()) && !open {
            return bad("--arrivals/--burstiness shape an open loop; they need --rate, --rate-sweep or --slo-search");
        }
        if let Some(b) = self.burstiness {
            if self.arrivals.is_some_and(|a| a != Arrivals::Gamma) {
                return bad("--burstiness only applies to --arrivals gamma");
            }
            if !(b.is_finite() && b > 0.0) {
                return bad("--burstiness must be positive");
            }
        }
        Ok(())
    }

    fn validate_workload(&self) -> Result<(), FlagError> {
        let positive = |flag: &str, v: Option<u32>| match v {
            Some(0) => bad(format!("{flag} must be at least 1")),
            _ => Ok(()),
        };
        positive("--multi-turn", self.multi_turn)?;
        positive("--shared-prefix", self.shared_prefix)?;
        positive("--prefixes", self.prefixes)?;
        positive("--system-prompt-len", self.system_prompt_len)?;
        if self.multi_turn.is_none() {
            if self.think_time.is_some() || self.system_prompt_len.is_some() {
                return bad("--think-time and --system-prompt-len shape conversations; they need --multi-turn");
            }
        } else {
            if self.api != ApiKind::Chat {
                return bad(
                    "--multi-turn needs --api chat: each turn sends the conversation as messages",
                );
            }
            if self.shared_prefix.is_some() {
                return bad("--multi-turn and --shared-prefix are different workloads; choose one");
            }
            if self.rate_sweep || self.slo_search {
                return bad("--multi-turn does not combine with --rate-sweep or --slo-search (their rates count requests, not conversations)");
            }
        }
        if self.prefixes.is_some() && self.shared_prefix.is_none() {
            return bad("--prefixes needs --shared-prefix");
        }
        if self.dataset.is_some() && (self.multi_turn.is_some() || self.shared_prefix.is_some()) {
            return bad("--multi-turn and --shared-prefix make synthetic prompts; they contradict --dataset");
        }
        Ok(())
    }

    fn validate_workers(&self) -> Result<(), FlagError> {
        let (Some(id), Some(n)) = (self.worker_id, self.workers) else {
            return Ok(());
        };
        if n == 0 || id >= n {
            return bad("--worker-id must be below --workers (workers are numbered from 0)");
        }
        if self.rate_sweep || self.slo_search {
            return bad("--workers does not combine with --rate-sweep or --slo-search: each worker would search on its own");
        }
        let levels = self
            .concurrency
            .into_iter()
            .chain(self.batch_sizes.iter().flatten().copied());
        if levels.into_iter().any(|c| (c as u64) < n) {
            return bad("with --workers N, each concurrency level must be at least N (the virtual users are split among the workers)");
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), FlagError> {
        if self.duration.is_some() && self.requests.is_some() {
            return bad("--duration and --requests are mutually exclusive limits");
        }
        if self.requests == Some(0) {
            return bad("--requests must be at least 1");
        }
        if let Some(d) = self.duration {
            if d <= 0.0 {
                return bad("--duration must be positive");
            }
            if self.warmup + self.cooldown >= d {
                return bad("--warmup plus --cooldown must be shorter than --duration");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["loadgen"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses")
    }

    #[test]
    fn contradictions_are_one_line_errors() {
        for args in [
            &["--rate", "2", "--concurrency", "3"][..],
            &["--batch-sizes", "1,2", "--rate", "1"],
            &["--duration", "10", "--requests", "5"],
            &["--concurrency", "2", "--burstiness", "0.5"],
            &[
                "--rate",
                "2",
                "--arrivals",
                "poisson",
                "--burstiness",
                "0.5",
            ],
            &["--slo-search"],
            &["--duration", "10", "--warmup", "6", "--cooldown", "4"],
            &["--dataset", "x.jsonl", "--input-len", "5"],
            &["--url", "ftp://x"],
            &["--database-url", "mysql://nope"],
            &["--multi-turn", "3"],
            &["--api", "chat", "--multi-turn", "0"],
            &["--api", "chat", "--multi-turn", "2", "--shared-prefix", "8"],
            &["--api", "chat", "--multi-turn", "2", "--rate-sweep"],
            &["--think-time", "1s"],
            &["--system-prompt-len", "20"],
            &["--prefixes", "4"],
            &["--shared-prefix", "8", "--dataset", "x.jsonl"],
            &["--worker-id", "3", "--workers", "3"],
            &["--worker-id", "0", "--workers", "2", "--rate-sweep"],
            &["--worker-id", "0", "--workers", "4", "--concurrency", "2"],
        ] {
            let err = cli(args).validate().expect_err("contradiction");
            assert!(!err.to_string().contains('\n'), "{args:?}: {err}");
        }
    }

    #[test]
    fn sensible_combinations_pass() {
        for args in [
            &["--concurrency", "4", "--duration", "30s", "--warmup", "5s"][..],
            &["--rate", "2.5", "--burstiness", "0.5", "--requests", "20"],
            &[
                "--batch-sizes",
                "1,2,4",
                "--requests",
                "8",
                "--slo",
                "ttft=1s",
            ],
            &["--rate-sweep", "--duration", "5"],
            &["--slo-search", "--slo", "ttft=500ms"],
            &[
                "--api",
                "chat",
                "--multi-turn",
                "6",
                "--system-prompt-len",
                "200",
                "--think-time",
                "1s",
            ],
            &[
                "--shared-prefix",
                "512",
                "--prefixes",
                "4",
                "--input-len",
                "64",
            ],
            &["--worker-id", "2", "--workers", "3", "--concurrency", "6"],
            &["--worker-id", "0", "--workers", "3", "--rate", "9"],
        ] {
            cli(args)
                .validate()
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert_eq!(
            cli(&["--rate", "1", "--burstiness", "2"]).arrivals(),
            Arrivals::Gamma
        );
    }
}
