//! `client`: the load generator cannot keep up, so the run measures it, not
//! the server. Only a load test knows this; no Prometheus alert can say it.

use super::{check, pct, remedies, Ctx, Outcome};
use crate::finding::{Bottleneck, Severity, Unit};

const CLIENT_REMEDIES: &[&str] = &[
    "Give the load generator more CPU, or run it on another machine than the server.",
    "Split the load over several loadgen processes, or use fewer streams per process.",
    "Until then, distrust latencies measured from the schedule: they include the load generator's own slip.",
];

pub(super) fn client(cx: &Ctx) -> Outcome {
    let Some(load) = &cx.s.load else {
        let note = "client: no load-test signals (a live deployment has no load generator)";
        return Outcome::Clear(vec![cx.missing("client_cpu_mean", Unit::Ratio, note)]);
    };
    let mut ev = Vec::new();
    let mut why = Vec::new();
    match cx.mean(&load.client_cpu) {
        Some(c) => {
            let e = check!(cx, "client_cpu_mean", c, Ratio, AtLeast, CLIENT_CPU_HIGH);
            if e.is_met() {
                why.push(format!("it keeps {} of its cores busy", pct(c)));
            }
            ev.push(e);
        }
        None => ev.push(cx.missing(
            "client_cpu_mean",
            Unit::Ratio,
            "no load generator CPU signal",
        )),
    }
    match load.send_lag {
        Some(lag) => {
            let e = check!(
                cx,
                "send_lag_p99",
                lag.p99,
                Seconds,
                AtLeast,
                SEND_LAG_P99_HIGH
            );
            if e.is_met() {
                why.push(format!(
                    "it sends requests {:.0} ms late (p99)",
                    lag.p99 * 1e3
                ));
            }
            ev.push(e);
        }
        None => ev.push(cx.missing("send_lag_p99", Unit::Seconds, "no send lag signal")),
    }
    if why.is_empty() {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "The load generator is the bottleneck: {}.",
        why.join(" and ")
    );
    Outcome::Fired(cx.finding(
        Bottleneck::Client,
        Severity::Warning,
        summary,
        ev,
        remedies(CLIENT_REMEDIES),
    ))
}

#[cfg(test)]
mod tests {
    use crate::finding::Bottleneck::Client;
    use crate::rules::testkit::*;
    use crate::signals::Summary;

    fn loadgen(cpu: f64, lag_p99: f64) -> crate::Signals {
        let mut s = baseline();
        if let Some(l) = s.load.as_mut() {
            l.client_cpu = flat(cpu);
            l.send_lag = Some(Summary::new(lag_p99 / 4.0, lag_p99));
        }
        s
    }

    #[test]
    fn client_fires_on_a_starved_load_generator() {
        let d = expect_fires(&loadgen(0.98, 0.001), Client);
        assert!(d.finding(Client).expect("client").summary.contains("98%"));
        expect_fires(&loadgen(0.2, 0.05), Client);
    }

    #[test]
    fn client_near_miss_just_below_both_thresholds() {
        expect_quiet(&loadgen(0.72, 0.009), Client);
    }

    #[test]
    fn client_is_skipped_without_a_load_test() {
        let mut s = baseline();
        s.load = None;
        let d = expect_quiet(&s, Client);
        assert!(d
            .evidence
            .iter()
            .any(|e| e.signal == "client_cpu_mean" && e.value.is_none()));
    }
}
