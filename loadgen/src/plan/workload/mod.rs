//! What to send: synthetic prompts, shared-prefix prompts, multi-turn
//! conversations, or prompts from a JSONL file.
//!
//! The i-th request's prompt and output length depend only on the seed and i
//! (the c-th conversation's turns only on the seed and c), not on the order
//! requests are issued in, so a seed reproduces the workload across load
//! shapes, concurrency levels and workers.

mod conversation;
mod dataset;
mod words;

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

pub use conversation::{Conversation, Conversations, TurnOf};
#[cfg(test)]
pub(crate) use dataset::parse_line as parse_line_for_fuzz;
pub use dataset::{load_jsonl, Entry};
pub use words::words;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A prompt as text or as a chat message list.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

impl Prompt {
    pub fn as_text(&self) -> String {
        match self {
            Prompt::Text(t) => t.clone(),
            // Text APIs get the contents joined by newlines, roles dropped.
            Prompt::Messages(m) => m
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    pub fn as_messages(&self) -> Vec<Message> {
        match self {
            Prompt::Text(t) => vec![Message {
                role: "user".into(),
                content: t.clone(),
            }],
            Prompt::Messages(m) => m.clone(),
        }
    }
}

/// A length distribution: `128`, `uniform:64:256` or `normal:128:32`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LenDist {
    Fixed { value: u32 },
    Uniform { min: u32, max: u32 },
    Normal { mean: f64, std: f64 },
}

impl FromStr for LenDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("'{p}' is not a non-negative number in '{s}'"))
        };
        let dist = match parts.as_slice() {
            [v] => LenDist::Fixed {
                value: num(v)? as u32,
            },
            ["uniform", a, b] => LenDist::Uniform {
                min: num(a)? as u32,
                max: num(b)? as u32,
            },
            ["normal", m, sd] => LenDist::Normal {
                mean: num(m)?,
                std: num(sd)?,
            },
            _ => {
                return Err(format!(
                    "'{s}': expected N, uniform:MIN:MAX or normal:MEAN:STD"
                ))
            }
        };
        match dist {
            LenDist::Fixed { value: 0 } => Err("a length must be at least 1".into()),
            LenDist::Uniform { min, max } if min == 0 || min > max => {
                Err(format!("'{s}': need 1 <= MIN <= MAX"))
            }
            _ => Ok(dist),
        }
    }
}

impl LenDist {
    /// Draw one length, at least 1.
    pub fn sample(&self, rng: &mut StdRng) -> u32 {
        match *self {
            LenDist::Fixed { value } => value,
            LenDist::Uniform { min, max } => rng.random_range(min..=max),
            LenDist::Normal { mean, std } => Normal::new(mean, std)
                .map(|n| n.sample(rng).round().max(1.0) as u32)
                .unwrap_or(mean.max(1.0) as u32),
        }
    }
}

/// A prepared request: prompt plus the number of tokens to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub prompt: Prompt,
    pub max_tokens: u32,
}

/// Synthetic text: prompts of `input` server tokens from the fixed vocabulary.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub input: LenDist,
    pub output: LenDist,
    /// Server tokens per word of the synthetic vocabulary (calibrated through
    /// `/tokenize` when the server has it, else an estimate).
    pub tokens_per_word: f64,
    pub seed: u64,
}

impl Synthetic {
    /// About `tokens` server tokens of text drawn from `rng`.
    fn text(&self, tokens: u32, rng: &mut StdRng) -> String {
        let words = ((f64::from(tokens) / self.tokens_per_word).round() as usize).max(1);
        words::words(words, rng)
    }
}

/// The source of requests for a run.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Fresh random prompts: no prefix cache can shortcut them.
    Synthetic(Synthetic),
    /// vLLM's `prefix_repetition` shape: each request is one of `prefixes`
    /// common prefixes of `prefix_len` tokens, then a unique suffix of
    /// `text.input` tokens.
    SharedPrefix {
        text: Synthetic,
        prefix_len: u32,
        prefixes: u32,
    },
    /// Multi-turn conversations (`--multi-turn`).
    MultiTurn(Conversations),
    Dataset {
        entries: Vec<Entry>,
        output: LenDist,
        seed: u64,
    },
}

/// Independent random streams of one seed, so that adding a kind of draw
/// (prefixes, conversation turns) never shifts another's.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Stream {
    Prefix = 1,
    SystemPrompt = 2,
    Turn = 3,
}

fn item_rng(seed: u64, i: u64) -> StdRng {
    // Mix the index so neighbouring seeds/indices do not share streams.
    StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The generator of draw `(a, b)` of `stream`: splitmix64 over the inputs.
fn stream_rng(seed: u64, stream: Stream, a: u64, b: u64) -> StdRng {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut h = mix(seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    h = mix(h ^ a);
    h = mix(h ^ b.rotate_left(32));
    StdRng::seed_from_u64(h)
}

impl Workload {
    /// Requests per unit of work: the turns of a conversation, else 1.
    pub fn turns(&self) -> u32 {
        match self {
            Workload::MultiTurn(c) => c.turns,
            _ => 1,
        }
    }

    /// Set the measured server tokens per word (synthetic text only).
    pub fn calibrate(&mut self, tokens_per_word: f64) {
        match self {
            Workload::Synthetic(t) | Workload::SharedPrefix { text: t, .. } => {
                t.tokens_per_word = tokens_per_word;
            }
            Workload::MultiTurn(c) => c.text.tokens_per_word = tokens_per_word,
            Workload::Dataset { .. } => {}
        }
    }

    /// Whether the prompts are synthetic (their lengths are calibrated).
    pub fn is_synthetic(&self) -> bool {
        !matches!(self, Workload::Dataset { .. })
    }

    /// The i-th request of the run (for multi-turn workloads: the first turn
    /// of conversation i; the runner drives conversations through
    /// [`Workload::conversation`]).
    pub fn item(&self, i: u64) -> Item {
        match self {
            Workload::Synthetic(t) => {
                let mut rng = item_rng(t.seed, i);
                let tokens = t.input.sample(&mut rng);
                let max_tokens = t.output.sample(&mut rng);
                Item {
                    prompt: Prompt::Text(t.text(tokens, &mut rng)),
                    max_tokens,
                }
            }
            Workload::SharedPrefix {
                text,
                prefix_len,
                prefixes,
            } => {
                let mut rng = item_rng(text.seed, i);
                let k = rng.random_range(0..*prefixes);
                let tokens = text.input.sample(&mut rng);
                let max_tokens = text.output.sample(&mut rng);
                let suffix = text.text(tokens, &mut rng);
                let mut prefix_rng = stream_rng(text.seed, Stream::Prefix, u64::from(k), 0);
                let prefix = text.text(*prefix_len, &mut prefix_rng);
                Item {
                    prompt: Prompt::Text(format!("{prefix} {suffix}")),
                    max_tokens,
                }
            }
            Workload::MultiTurn(c) => c.conversation(i).first_item(),
            Workload::Dataset {
                entries,
                output,
                seed,
            } => {
                let mut rng = item_rng(*seed, i);
                let entry = &entries[(i % entries.len() as u64) as usize];
                Item {
                    prompt: entry.prompt.clone(),
                    max_tokens: entry.max_tokens.unwrap_or_else(|| output.sample(&mut rng)),
                }
            }
        }
    }

    /// Conversation `c` of a multi-turn workload.
    pub fn conversation(&self, c: u64) -> Option<Conversation> {
        match self {
            Workload::MultiTurn(conv) => Some(conv.conversation(c)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_distributions_parse_and_reject_nonsense() {
        assert_eq!("128".parse(), Ok(LenDist::Fixed { value: 128 }));
        assert_eq!(
            "uniform:4:8".parse(),
            Ok(LenDist::Uniform { min: 4, max: 8 })
        );
        assert!("normal:100:10".parse::<LenDist>().is_ok());
        for bad in ["0", "uniform:9:3", "lognormal:1:2", "x", "normal:1"] {
            assert!(bad.parse::<LenDist>().is_err(), "{bad}");
        }
    }

    fn synthetic(seed: u64) -> Synthetic {
        Synthetic {
            input: LenDist::Uniform { min: 10, max: 50 },
            output: LenDist::Normal {
                mean: 16.0,
                std: 4.0,
            },
            tokens_per_word: 1.0,
            seed,
        }
    }

    #[test]
    fn same_seed_same_workload_regardless_of_order() {
        let w = Workload::Synthetic(synthetic(7));
        let forward: Vec<Item> = (0..20).map(|i| w.item(i)).collect();
        let backward: Vec<Item> = (0..20).rev().map(|i| w.item(i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        let other = Workload::Synthetic(synthetic(8));
        assert_ne!(w.item(0), other.item(0));
    }

    #[test]
    fn shared_prefixes_repeat_and_suffixes_do_not() {
        let w = Workload::SharedPrefix {
            text: Synthetic {
                input: LenDist::Fixed { value: 8 },
                ..synthetic(3)
            },
            prefix_len: 40,
            prefixes: 3,
        };
        let texts: Vec<String> = (0..60).map(|i| w.item(i).prompt.as_text()).collect();
        let prefix = |t: &String| t.split(' ').take(40).collect::<Vec<_>>().join(" ");
        let suffix = |t: &String| t.split(' ').skip(40).collect::<Vec<_>>().join(" ");
        let prefixes: std::collections::HashSet<String> = texts.iter().map(prefix).collect();
        assert_eq!(prefixes.len(), 3, "every request uses one of 3 prefixes");
        let suffixes: std::collections::HashSet<String> = texts.iter().map(suffix).collect();
        assert_eq!(suffixes.len(), 60, "suffixes are unique");
        assert!(texts.iter().all(|t| t.split(' ').count() == 48));
        assert_eq!(w.item(17), w.item(17), "reproducible");
    }
}
