//! docs/diagnosis.md stays in step with the crate: the thresholds table is the
//! crate's, every bottleneck has its section, and the stubs the lead fills exist.

use std::path::PathBuf;

use diagnosis::{thresholds, Bottleneck};

fn docs() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnosis.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

#[test]
fn the_thresholds_table_is_the_crates() {
    let table = thresholds::markdown_table();
    assert!(
        docs().contains(&table),
        "docs/diagnosis.md's thresholds table differs from the crate's; replace it with:\n\n{table}"
    );
}

#[test]
fn every_bottleneck_has_a_section_with_its_anchor() {
    let d = docs();
    for b in Bottleneck::ALL {
        let anchor = format!("<a id=\"{b}\"></a>");
        assert!(d.contains(&anchor), "missing {anchor}");
        let section = &d[d.find(&anchor).expect("anchor")..];
        for part in ["How it shows", "How to confirm", "Likely causes", "Fixes"] {
            assert!(section.contains(part), "section {b} lacks '{part}'");
        }
    }
}

#[test]
fn the_stubs_for_the_lead_exist() {
    let d = docs();
    for heading in ["## Fault injection for tests", "## Trace ids in findings"] {
        assert!(d.contains(heading), "missing {heading}");
    }
    assert!(d.contains("CANDLELIGHT_FAULT_LEAK_BYTES_PER_REQUEST"));
}
