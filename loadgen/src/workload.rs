//! What to send: synthetic prompts or prompts from a JSONL file.
//!
//! The i-th request's prompt and output length depend only on the seed and i, not
//! on the order requests are issued in, so a seed reproduces the workload across
//! load shapes and concurrency levels.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
            Prompt::Messages(m) => crate::protocol::flatten(m),
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

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {detail}")]
    Line {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{0}: no prompts in file")]
    Empty(PathBuf),
}

/// One dataset entry: the prompt and, if the line gave one, its output length.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
}

/// A prepared request: prompt plus the number of tokens to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub prompt: Prompt,
    pub max_tokens: u32,
}

/// The source of requests for a run.
#[derive(Debug, Clone)]
pub enum Workload {
    Synthetic {
        input: LenDist,
        output: LenDist,
        /// Server tokens per word of the synthetic vocabulary (calibrated through
        /// `/tokenize` when the server has it, else an estimate).
        tokens_per_word: f64,
        seed: u64,
    },
    Dataset {
        entries: Vec<Entry>,
        output: LenDist,
        seed: u64,
    },
}

/// Plain English words; random sequences of them make prompts no prefix cache
/// can shortcut.
const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "river",
    "garden",
    "music",
    "light",
    "stone",
    "table",
    "window",
    "paper",
];

impl Workload {
    /// Text of about `n` words from the fixed vocabulary, reproducible from `rng`.
    pub fn words(n: usize, rng: &mut StdRng) -> String {
        let mut out = String::with_capacity(n * 7);
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
        out
    }

    /// The i-th request of the run.
    pub fn item(&self, i: u64) -> Item {
        match self {
            Workload::Synthetic {
                input,
                output,
                tokens_per_word,
                seed,
            } => {
                let mut rng = item_rng(*seed, i);
                let tokens = input.sample(&mut rng);
                let words = ((tokens as f64 / tokens_per_word).round() as usize).max(1);
                let max_tokens = output.sample(&mut rng);
                Item {
                    prompt: Prompt::Text(Self::words(words, &mut rng)),
                    max_tokens,
                }
            }
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
}

fn item_rng(seed: u64, i: u64) -> StdRng {
    // Mix the index so neighbouring seeds/indices do not share streams.
    StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Load a JSONL file: one prompt or message list per line.
///
/// Accepted lines: a JSON string; `{"prompt": "..."}`; `{"messages": [{role, content}]}`;
/// ShareGPT `{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}`.
/// An optional `max_tokens` (or `output_len`) fixes that line's output length.
/// For ShareGPT, the turns before the last assistant turn form the prompt.
pub fn load_jsonl(path: &Path) -> Result<Vec<Entry>, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(line).map_err(|detail| WorkloadError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            detail,
        })?;
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(WorkloadError::Empty(path.to_path_buf()));
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let prompt = match &v {
        Value::String(s) => Prompt::Text(s.clone()),
        Value::Object(o) => {
            if let Some(p) = o.get("prompt") {
                Prompt::Text(p.as_str().ok_or("\"prompt\" must be a string")?.to_string())
            } else if let Some(m) = o.get("messages") {
                Prompt::Messages(
                    serde_json::from_value(m.clone())
                        .map_err(|e| format!("\"messages\" must be [{{role, content}}]: {e}"))?,
                )
            } else if let Some(c) = o.get("conversations") {
                Prompt::Messages(sharegpt(c)?)
            } else {
                return Err("expected \"prompt\", \"messages\" or \"conversations\"".into());
            }
        }
        _ => return Err("expected a string or an object".into()),
    };
    if let Prompt::Messages(m) = &prompt {
        if m.is_empty() {
            return Err("empty message list".into());
        }
    }
    let max_tokens = ["max_tokens", "output_len"]
        .iter()
        .find_map(|k| v.get(k))
        .map(|n| {
            n.as_u64()
                .filter(|n| *n >= 1 && *n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or("\"max_tokens\" must be a positive integer")
        })
        .transpose()?;
    Ok(Entry { prompt, max_tokens })
}

fn sharegpt(c: &Value) -> Result<Vec<Message>, String> {
    let turns = c.as_array().ok_or("\"conversations\" must be an array")?;
    let mut messages = Vec::new();
    for t in turns {
        let from = t
            .get("from")
            .and_then(Value::as_str)
            .ok_or("turn without \"from\"")?;
        let value = t
            .get("value")
            .and_then(Value::as_str)
            .ok_or("turn without \"value\"")?;
        let role = match from {
            "human" | "user" => "user",
            "gpt" | "assistant" | "chatgpt" | "bard" => "assistant",
            "system" => "system",
            other => return Err(format!("unknown ShareGPT speaker '{other}'")),
        };
        messages.push(Message {
            role: role.into(),
            content: value.into(),
        });
    }
    // The prompt is everything before the final assistant answer.
    if let Some(last) = messages.iter().rposition(|m| m.role == "assistant") {
        messages.truncate(last);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    #[test]
    fn same_seed_same_workload_regardless_of_order() {
        let w = Workload::Synthetic {
            input: LenDist::Uniform { min: 10, max: 50 },
            output: LenDist::Normal {
                mean: 16.0,
                std: 4.0,
            },
            tokens_per_word: 1.0,
            seed: 7,
        };
        let forward: Vec<Item> = (0..20).map(|i| w.item(i)).collect();
        let backward: Vec<Item> = (0..20).rev().map(|i| w.item(i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        let other = Workload::Synthetic {
            input: LenDist::Uniform { min: 10, max: 50 },
            output: LenDist::Normal {
                mean: 16.0,
                std: 4.0,
            },
            tokens_per_word: 1.0,
            seed: 8,
        };
        assert_ne!(w.item(0), other.item(0));
    }

    #[test]
    fn jsonl_accepts_every_documented_line_shape() {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        let lines = [
            r#""plain string""#,
            r#"{"prompt": "p", "max_tokens": 5}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
        ];
        writeln!(f, "{}", lines.join("\n")).expect("write");
        let entries = load_jsonl(f.path()).expect("valid file");
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].max_tokens, Some(5));
        assert_eq!(
            entries[3].prompt.as_messages().len(),
            1,
            "answer turn dropped"
        );
    }

    #[test]
    fn malformed_jsonl_names_file_and_line() {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(f, "{{\"prompt\": \"ok\"}}\n{{\"prompt\": 3}}").expect("write");
        let err = load_jsonl(f.path()).expect_err("bad line").to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(!err.contains('\n'));
    }
}
