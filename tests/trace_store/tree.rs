//! One request's trace as a trace store holds it: the GenAI request span with
//! its `tokenize`, `queue`, `prefill` and `decode` children, and the
//! `engine.step` root spans (each in a trace of its own) that the phases link
//! to and that link back to the request span.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use candlelight::telemetry::names::{attr, span};

use super::jaeger::{Jaeger, Span, Trace};

/// How long a trace may take to reach the store: the server's batch span
/// processor, the collector's batch and Jaeger's batch each hold spans briefly.
const ARRIVAL: Duration = Duration::from_secs(60);

/// The request's children, in the order the request lives through them.
const PHASES: [&str; 4] = [span::TOKENIZE, span::QUEUE, span::PREFILL, span::DECODE];

/// A checked request trace and the step spans its phases rode in.
pub struct RequestTree {
    pub trace: Trace,
    /// Index of the GenAI request span in `trace.spans`.
    genai: usize,
    /// The step spans linked from `prefill` and `decode`, in link order.
    pub steps: Vec<Span>,
}

impl RequestTree {
    pub fn genai(&self) -> &Span {
        &self.trace.spans[self.genai]
    }
}

/// Fetches `trace_id` from Jaeger (waiting until the request's spans have all
/// arrived) and checks its tree: a GenAI span (`gen_ai.operation.name` set)
/// under the HTTP server span, with exactly one `tokenize`, `queue`, `prefill`
/// and `decode` child; `prefill` linked to at least one `engine.step prefill`
/// (or `mixed`: prompt chunks ride beside other requests' decodes) and `decode`
/// to one `engine.step decode` (or `mixed`) per token after the first (links
/// beyond the cap counted in `candlelight.links.dropped`); and every linked
/// step a root span of its own trace that links back to the GenAI span.
pub async fn check_request_tree(jaeger: &Jaeger, trace_id: &str) -> anyhow::Result<RequestTree> {
    let trace = jaeger.trace_when(trace_id, ARRIVAL, arrived).await?;
    let genai = trace
        .spans
        .iter()
        .position(is_genai)
        .context("no GenAI span")?;
    let g = &trace.spans[genai];
    ensure!(
        trace.spans.iter().all(|s| s.service == attr::PROVIDER),
        "every span comes from service {}",
        attr::PROVIDER
    );
    let http = trace
        .span(g.parent.as_deref().unwrap_or_default())
        .context("the GenAI span's parent is in the trace")?;
    ensure!(
        http.tag("span.kind").and_then(|v| v.as_str()) == Some("server"),
        "the GenAI span's parent is the HTTP server span: {http:?}"
    );
    let children = trace.children(g);
    for phase in PHASES {
        let n = children.iter().filter(|s| s.name == phase).count();
        ensure!(n == 1, "one {phase} span under the GenAI span, found {n}");
    }
    let output = g
        .tag_i64(attr::GEN_AI_USAGE_OUTPUT_TOKENS)
        .context("gen_ai.usage.output_tokens on the GenAI span")?;
    let mut steps = Vec::new();
    for (phase, step_name) in [
        (span::PREFILL, span::STEP_PREFILL),
        (span::DECODE, span::STEP_DECODE),
    ] {
        let s = children
            .iter()
            .find(|s| s.name == phase)
            .context("phase span")?;
        let dropped = s.tag_i64(attr::DROPPED_STEP_LINKS).unwrap_or(0);
        let linked = i64::try_from(s.links.len())?;
        if phase == span::PREFILL {
            ensure!(linked >= 1, "prefill links to its prefill step(s)");
        } else {
            ensure!(
                linked + dropped == output - 1,
                "{output} output tokens: the first from prefill, one decode step each after it; \
                 decode links {linked} (+{dropped} dropped)"
            );
        }
        for link in &s.links {
            steps.push(linked_step(jaeger, link, step_name, &trace.trace_id, g).await?);
        }
    }
    Ok(RequestTree {
        trace: trace.clone(),
        genai,
        steps,
    })
}

fn is_genai(s: &Span) -> bool {
    s.tag(attr::GEN_AI_OPERATION_NAME).is_some()
}

/// The request's spans are all in: the GenAI span, its parent and its phases.
fn arrived(t: &Trace) -> bool {
    let Some(g) = t.spans.iter().find(|s| is_genai(s)) else {
        return false;
    };
    let parent_in = g.parent.as_deref().is_some_and(|p| t.span(p).is_some());
    let children = t.children(g);
    parent_in && PHASES.iter().all(|p| children.iter().any(|s| s.name == *p))
}

/// The step span a phase links to: the root of its own trace, named
/// `step_name`, linking back to the GenAI span among the requests it served.
async fn linked_step(
    jaeger: &Jaeger,
    (step_trace, step_id): &(String, String),
    step_name: &str,
    trace_id: &str,
    genai: &Span,
) -> anyhow::Result<Span> {
    let names = [step_name, span::STEP_MIXED];
    let t = jaeger
        .trace_when(step_trace, ARRIVAL, |t| t.span(step_id).is_some())
        .await?;
    let step = t.span(step_id).context("step span")?.clone();
    ensure!(
        names.contains(&step.name.as_str()),
        "{names:?} expected: {step:?}"
    );
    ensure!(step.parent.is_none(), "a step is a root span: {step:?}");
    ensure!(
        step.trace_id != trace_id,
        "a step has a trace of its own, apart from the requests it served"
    );
    ensure!(
        step.links
            .contains(&(trace_id.to_owned(), genai.span_id.clone())),
        "{step_name} {} links back to the GenAI span: {:?}",
        step.span_id,
        step.links
    );
    ensure!(
        step.tag_i64(attr::BATCH_SIZE) == Some(i64::try_from(step.links.len())?),
        "{}: one link per request in the batch",
        attr::BATCH_SIZE
    );
    Ok(step)
}

/// The tree as text, for the test log (durations are printed, never checked).
pub fn render(tree: &RequestTree) -> String {
    let t = &tree.trace;
    let g = tree.genai();
    let ms = |s: &Span| s.duration_us as f64 / 1000.0;
    let mut out = format!("trace {}\n", t.trace_id);
    let mut depth = 0;
    let mut chain = Vec::new();
    let mut cur = g.parent.as_deref().and_then(|p| t.span(p));
    while let Some(s) = cur {
        chain.push(s);
        cur = s.parent.as_deref().and_then(|p| t.span(p));
    }
    for s in chain.iter().rev() {
        let _ = writeln!(
            out,
            "{:depth$}{} ({:.1} ms)",
            "",
            s.name,
            ms(s),
            depth = depth * 2
        );
        depth += 1;
    }
    let _ = writeln!(
        out,
        "{:depth$}{} ({:.1} ms)",
        "",
        g.name,
        ms(g),
        depth = depth * 2
    );
    depth += 1;
    for c in t.children(g) {
        let _ = writeln!(
            out,
            "{:depth$}{} ({:.1} ms)",
            "",
            c.name,
            ms(c),
            depth = depth * 2
        );
        for (trace, id) in &c.links {
            let Some(s) = tree.steps.iter().find(|s| &s.span_id == id) else {
                continue;
            };
            let batch = s.tag_i64(attr::BATCH_SIZE).unwrap_or(0);
            let _ = writeln!(
                out,
                "{:indent$}~> {} [trace {}…] batch {batch}, links back to {} request span(s)",
                "",
                s.name,
                &trace[..8],
                s.links.len(),
                indent = depth * 2 + 2
            );
        }
    }
    out
}
