//! One running sequence: its tokens, KV cache, sampler, and the text/stop logic
//! that turns sampled ids into released text and a finish reason.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::events::{FinishReason, RequestId, SpanHandle};
use super::kv_cache::KvCache;
use super::request::{GenerationEvent, StoppingCriteria, Token, TopToken};
use super::sampler::{Sampled, Sampler};
use super::tokenizer::{IncrementalDecoder, Tokenizer};

pub struct Sequence {
    pub id: RequestId,
    pub span: SpanHandle,
    pub reply: UnboundedSender<GenerationEvent>,
    /// Prompt followed by every generated token.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub cache: KvCache,
    pub sampler: Sampler,
    pub stopping: StoppingCriteria,
    pub queued_at: Instant,
    pub first_token_at: Option<Instant>,
    pub last_token_at: Option<Instant>,
    /// Finished or failed; leaves the batch before the next step.
    pub done: bool,
    text: TextReleaser,
}

impl Sequence {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: RequestId,
        span: SpanHandle,
        reply: UnboundedSender<GenerationEvent>,
        prompt: Vec<u32>,
        cache: KvCache,
        sampler: Sampler,
        stopping: StoppingCriteria,
        queued_at: Instant,
    ) -> Self {
        let text = TextReleaser::new(stopping.stop_sequences.clone());
        Self {
            id,
            span,
            reply,
            prompt_len: prompt.len(),
            tokens: prompt,
            cache,
            sampler,
            stopping,
            queued_at,
            first_token_at: None,
            last_token_at: None,
            done: false,
            text,
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens not yet fed through the model (the whole prompt, then the last sample).
    pub fn pending_input(&self) -> &[u32] {
        &self.tokens[self.cache.len()..]
    }

    pub fn token_budget(&self) -> usize {
        self.prompt_len + self.stopping.max_new_tokens
    }

    pub fn client_gone(&self) -> bool {
        self.reply.is_closed()
    }

    /// Samples from `logits`, records the token, and builds the event to send.
    /// Returns the token and, if the sequence is done, why.
    pub fn accept(
        &mut self,
        logits: &mut [f32],
        tokenizer: &Tokenizer,
    ) -> (Token, Option<FinishReason>) {
        let Sampled { id, logprob, top } = self.sampler.sample(logits, &self.tokens);
        self.tokens.push(id);
        let is_eos = id == tokenizer.eos_id() && !self.stopping.ignore_eos;
        let special = tokenizer.is_special(id);
        let (text, stopped) = if is_eos {
            (self.text.flush(), false)
        } else {
            let piece = self.text.decoder.push(tokenizer, id);
            self.text.push(&piece)
        };
        let reason = if stopped {
            Some(FinishReason::StopSequence)
        } else if is_eos {
            Some(FinishReason::EosToken)
        } else if self.generated() >= self.stopping.max_new_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let mut text = text;
        if reason == Some(FinishReason::Length) {
            text.push_str(&self.text.flush());
        }
        let top = top
            .into_iter()
            .map(|(id, logprob)| TopToken {
                id,
                text: tokenizer.token_text(id),
                logprob,
            })
            .collect();
        let token = Token {
            id,
            text,
            logprob,
            special,
            top,
        };
        (token, reason)
    }
}

/// Releases generated text, holding back any tail that could be the start of a
/// stop sequence, and cutting the text where a stop sequence completes.
pub struct TextReleaser {
    decoder: IncrementalDecoder,
    stops: Vec<String>,
    text: String,
    released: usize,
}

impl TextReleaser {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            decoder: IncrementalDecoder::default(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            released: 0,
        }
    }

    /// Adds decoded text; returns what may be shown now and whether a stop matched.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        let search_from = floor_char_boundary(
            &self.text,
            self.released
                .saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0)),
        );
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[search_from..].find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let end = (search_from + at).max(self.released);
            let out = self.text[self.released..end].to_owned();
            self.released = end;
            return (out, true);
        }
        let safe = self.text.len() - self.longest_stop_prefix_suffix();
        let safe = floor_char_boundary(&self.text, safe.max(self.released));
        let out = self.text[self.released..safe].to_owned();
        self.released = safe;
        (out, false)
    }

    /// Everything still held back (the generation ended without a stop match).
    pub fn flush(&mut self) -> String {
        let out = self.text[self.released..].to_owned();
        self.released = self.text.len();
        out
    }

    /// Length of the longest suffix of the text that is a proper prefix of a stop.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for len in (1..stop.len()).rev() {
                if len <= best {
                    break;
                }
                if stop.is_char_boundary(len) && self.text.ends_with(&stop[..len]) {
                    best = len;
                }
            }
        }
        best
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut r = TextReleaser::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (t, stopped) = r.push(p);
            out.push_str(&t);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&r.flush());
        (out, false)
    }

    #[test]
    fn text_without_stops_is_released_as_it_comes() {
        let mut r = TextReleaser::new(vec![]);
        assert_eq!(r.push("Hel").0, "Hel");
        assert_eq!(r.push("lo").0, "lo");
    }

    #[test]
    fn a_stop_sequence_split_across_tokens_is_cut_and_never_shown() {
        assert_eq!(
            run(&["\n\n"], &["Paris", ".\n", "\nMore"]),
            ("Paris.".into(), true)
        );
        assert_eq!(run(&["END"], &["abcE", "N", "Dxyz"]), ("abc".into(), true));
    }

    #[test]
    fn a_held_back_prefix_is_released_when_it_does_not_complete() {
        let mut r = TextReleaser::new(vec!["END".into()]);
        assert_eq!(r.push("abE").0, "ab");
        assert_eq!(r.push("x").0, "Ex");
        assert_eq!(run(&["END"], &["aEN"]), ("aEN".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["c", "b"], &["abc"]), ("a".into(), true));
    }

    #[test]
    fn multibyte_text_is_never_split() {
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&["éx"], &["café", "y"]), ("caféy".into(), false));
    }
}
