//! `memory_growth`: RSS that rises steadily under load and is not given back.
//!
//! The slope is a least-squares fit over the loaded part of the window (after
//! warm-up), so allocator steps and noise do not pass for growth: the growth
//! must be large in bytes, steady (R²), and still held after the load ends
//! when the series goes on that long. Memory the server's KV pool took for a
//! higher peak of concurrent tokens is not growth: it stays and is reused, by
//! design, so RSS is judged net of the pool's high-water mark when known.

use super::{check, remedies, Ctx, Outcome};
use crate::finding::{Bottleneck, Evidence, Severity, Unit};
use crate::signals::Series;
use crate::stats::LinearFit;

const MEMORY_REMEDIES: &[&str] = &[
    "Look for memory held per request and never freed: caches without a bound, buffers kept after a request ends (the guide: tensors or caches never freed).",
    "Confirm with a longer run at constant load: a leak keeps its slope; warm-up growth levels off.",
    "Until fixed: restart replicas before they reach the memory limit, and alert on CandlelightMemoryGrowing.",
];

/// RSS minus the KV pool's resident high-water mark at each sample, when known.
fn net_rss(cx: &Ctx) -> Option<Series> {
    let rss = cx.s.host.process_rss.as_ref()?;
    let Some(kv) = &cx.s.host.kv_cache_resident else {
        return Some(rss.clone());
    };
    let points = rss
        .points()
        .iter()
        .map(|&(t, v)| (t, v - kv.at(t).unwrap_or(0.0)))
        .collect();
    Series::new(points).ok()
}

/// The retained share of the growth after the load ended, if the series goes on.
fn retained(cx: &Ctx, rss: &Series, fit: &LinearFit, start_t: f64, grown: f64) -> Evidence {
    let w = &cx.s.window;
    let after = rss.between(w.load_end(), w.end_s);
    match after.iter().rev().find(|p| p.0 > w.load_end()) {
        Some(&(_, last)) if grown > 0.0 => {
            let share = (last - fit.at(start_t)) / grown;
            check!(
                cx,
                "rss_retained_after_load",
                share,
                Ratio,
                Above,
                MEMORY_GIVEN_BACK_FRACTION
            )
        }
        Some(_) => cx.missing(
            "rss_retained_after_load",
            Unit::Ratio,
            "no growth to give back",
        ),
        None => cx.missing(
            "rss_retained_after_load",
            Unit::Ratio,
            "no samples after the load ended: release not checked",
        ),
    }
}

pub(super) fn memory_growth(cx: &Ctx) -> Outcome {
    let w = &cx.s.window;
    let Some(rss) = net_rss(cx) else {
        let note = "memory_growth: no process memory (RSS) signal";
        return Outcome::Clear(vec![cx.missing("rss_growth", Unit::Bytes, note)]);
    };
    let loaded = rss.between(w.start_s, w.load_end());
    let (Some(fit), Some(first), Some(last)) =
        (LinearFit::fit(loaded), loaded.first(), loaded.last())
    else {
        let note = "too few RSS samples for a slope";
        return Outcome::Clear(vec![cx.missing("rss_growth", Unit::Bytes, note)]);
    };
    let grown = fit.slope * (last.0 - first.0);
    let mut ev = vec![
        check!(
            cx,
            "rss_growth",
            grown,
            Bytes,
            AtLeast,
            MEMORY_GROWTH_MIN_BYTES
        ),
        check!(
            cx,
            "rss_growth_r2",
            fit.r2,
            Ratio,
            AtLeast,
            MEMORY_GROWTH_MIN_R2
        ),
    ];
    let kept = retained(cx, &rss, &fit, first.0, grown);
    let leak = ev.iter().all(Evidence::is_met) && kept.met != Some(false);
    ev.push(kept);
    ev.push(cx.info("rss_slope", fit.slope, Unit::BytesPerSecond));
    if let Some(n) = cx.s.server.requests_finished.filter(|n| *n > 0.0) {
        ev.push(cx.info(
            "rss_growth_per_1k_requests",
            grown / n * 1000.0,
            Unit::Bytes,
        ));
    }
    let mut severity = Severity::Warning;
    if let Some(limit) = cx.s.host.memory_limit.filter(|l| *l > 0.0) {
        // Sets the severity only: shown as a check when it escalates.
        let e = check!(
            cx,
            "rss_of_memory_limit",
            last.1 / limit,
            Ratio,
            AtLeast,
            MEMORY_NEAR_LIMIT
        );
        if e.is_met() {
            severity = Severity::Critical;
            ev.push(e);
        } else {
            ev.push(cx.info("rss_of_memory_limit", last.1 / limit, Unit::Ratio));
        }
    }
    if !leak {
        return Outcome::Clear(ev);
    }
    let summary = format!(
        "Memory grows: RSS rose {:.0} MiB over {:.0} s ({:.0} KiB/s, R² {:.2}) and was not given back.",
        grown / 1048576.0,
        last.0 - first.0,
        fit.slope / 1024.0,
        fit.r2
    );
    Outcome::Fired(cx.finding(
        Bottleneck::MemoryGrowth,
        severity,
        summary,
        ev,
        remedies(MEMORY_REMEDIES),
    ))
}

#[cfg(test)]
mod tests {
    use crate::finding::Bottleneck::MemoryGrowth;
    use crate::finding::Severity;
    use crate::rules::testkit::*;
    use crate::signals::{Series, Window};

    const MIB: f64 = 1048576.0;

    fn growing(from_mib: f64, to_mib: f64) -> crate::Signals {
        let mut s = baseline();
        s.host.process_rss = ramp(from_mib * MIB, to_mib * MIB);
        s
    }

    #[test]
    fn memory_fires_on_steady_growth() {
        let d = expect_fires(&growing(300.0, 400.0), MemoryGrowth);
        let f = d.finding(MemoryGrowth).expect("finding");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.summary.contains("100 MiB"), "{}", f.summary);
        let per_k = f
            .evidence
            .iter()
            .find(|e| e.signal == "rss_growth_per_1k_requests")
            .and_then(|e| e.value)
            .expect("per-request growth");
        assert!((per_k - 100.0 * MIB / 120.0 * 1000.0).abs() < 1.0);
    }

    #[test]
    fn memory_near_miss_on_small_growth() {
        expect_quiet(&growing(300.0, 320.0), MemoryGrowth);
    }

    #[test]
    fn memory_near_miss_on_noise_without_trend() {
        let mut s = baseline();
        s.host.process_rss = alternating(300.0 * MIB, 360.0 * MIB);
        expect_quiet(&s, MemoryGrowth);
    }

    /// 60 s of load growing 300 -> 400 MiB, then 20 s idle at `after_mib`.
    fn with_tail(after_mib: f64) -> crate::Signals {
        let mut s = baseline();
        let rss = (0..=40).map(|i| {
            let t = i as f64 * 2.0;
            let v = if t <= 60.0 {
                300.0 + 100.0 * t / 60.0
            } else {
                after_mib
            };
            (t, v * MIB)
        });
        s.host.process_rss = Series::new(rss.collect()).ok();
        s.window = Window {
            load_end_s: Some(60.0),
            ..Window::new(0.0, 80.0)
        };
        s
    }

    #[test]
    fn memory_given_back_after_the_load_is_no_leak() {
        expect_quiet(&with_tail(310.0), MemoryGrowth);
        expect_fires(&with_tail(398.0), MemoryGrowth);
    }

    #[test]
    fn kv_pool_growth_to_a_higher_peak_is_not_a_leak() {
        let mut s = growing(300.0, 400.0);
        // The pool's touched part rose by the same 100 MiB.
        s.host.kv_cache_resident = ramp(0.0, 100.0 * MIB);
        expect_quiet(&s, MemoryGrowth);
        s.host.kv_cache_resident = ramp(0.0, 20.0 * MIB);
        expect_fires(&s, MemoryGrowth);
    }

    #[test]
    fn memory_near_the_limit_is_critical() {
        let mut s = growing(300.0, 400.0);
        s.host.memory_limit = Some(420.0 * MIB);
        let d = expect_fires(&s, MemoryGrowth);
        assert_eq!(
            d.finding(MemoryGrowth).map(|f| f.severity),
            Some(Severity::Critical)
        );
    }
}
