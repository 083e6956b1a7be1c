//! One running sequence: its tokens, KV blocks, sampler, and the text/stop logic
//! that turns sampled ids into released text and a finish reason.
//!
//! Its fields are private: the invariants (tokens = prompt then generated;
//! `computed <= tokens.len()`; the block table covers `computed` positions) are
//! kept by its methods.

use std::time::Instant;

use super::events::{FinishReason, RequestId, SpanHandle};
use super::kv::{KvBlocks, SeqBlocks};
use super::request::{
    Finish, GenerationEvent, GenerationRequest, StoppingCriteria, Token, TopToken,
};
use super::sampler::{Sampled, Sampler};
use super::tokenizer::{IncrementalDecoder, Tokenizer};
use super::{InFlight, QueueSlot};
use tokio::sync::mpsc::UnboundedSender;

/// A request as it waits in the queue.
pub struct Submission {
    pub id: RequestId,
    pub request: GenerationRequest,
    pub reply: UnboundedSender<GenerationEvent>,
    pub queued_at: Instant,
    /// Its place in the queue count, given back when it starts or is dropped.
    pub slot: QueueSlot,
    /// Counts it in flight until its last event is out.
    pub held: InFlight,
}

pub struct Sequence {
    id: RequestId,
    span: SpanHandle,
    reply: UnboundedSender<GenerationEvent>,
    /// Prompt followed by every generated token.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Positions whose keys and values are in the KV cache.
    computed: usize,
    /// Of the prompt, positions that came from the prefix cache.
    cached: usize,
    blocks: SeqBlocks,
    sampler: Sampler,
    stopping: StoppingCriteria,
    queued_at: Instant,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    /// Finished or failed; leaves the batch before the next step.
    done: bool,
    /// Its last event, sent once it has left the batch.
    last: Option<GenerationEvent>,
    /// Dropped with the sequence, after its last event.
    _held: InFlight,
    text: TextReleaser,
}

impl Sequence {
    /// Starts a queued request whose first `cached` prompt positions are already
    /// in `blocks` (prefix-cache hits).
    pub fn start(sub: Submission, blocks: SeqBlocks, cached: usize) -> Self {
        let Submission {
            id,
            request,
            reply,
            queued_at,
            slot,
            held,
        } = sub;
        drop(slot); // no longer waiting
        let span = request.span.clone();
        let sampler = Sampler::new(request.sampling.clone());
        let stopping = request.stopping.clone();
        let tokens = request.into_prompt_ids();
        Self {
            id,
            span,
            reply,
            prompt_len: tokens.len(),
            tokens,
            computed: cached,
            cached,
            blocks,
            sampler,
            text: TextReleaser::new(stopping.stop_sequences.clone()),
            stopping,
            queued_at,
            first_token_at: None,
            last_token_at: None,
            done: false,
            last: None,
            _held: held,
        }
    }

    pub fn id(&self) -> RequestId {
        self.id
    }

    pub fn span(&self) -> &SpanHandle {
        &self.span
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn cached_tokens(&self) -> usize {
        self.cached
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Positions already in the KV cache (the next input's position).
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// Tokens not yet fed through the model (the rest of the prompt, then the last sample).
    pub fn pending_input(&self) -> &[u32] {
        &self.tokens[self.computed..]
    }

    /// Still working through its prompt (no token sampled yet).
    pub fn is_prefilling(&self) -> bool {
        self.computed < self.prompt_len
    }

    pub fn blocks(&self) -> &SeqBlocks {
        &self.blocks
    }

    pub fn blocks_mut(&mut self) -> &mut SeqBlocks {
        &mut self.blocks
    }

    /// Registers its full, computed blocks in the prefix cache.
    pub fn commit_blocks(&mut self, kv: &mut KvBlocks) {
        kv.commit(&mut self.blocks, &self.tokens, self.computed);
    }

    /// Gives back its blocks (when it leaves).
    pub fn take_blocks(&mut self) -> SeqBlocks {
        std::mem::take(&mut self.blocks)
    }

    /// Records that `n` more positions went through the model.
    pub fn advance(&mut self, n: usize) {
        self.computed += n;
        debug_assert!(self.computed <= self.tokens.len());
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn client_gone(&self) -> bool {
        self.reply.is_closed()
    }

    pub fn deadline_passed(&self, now: Instant) -> bool {
        self.stopping.deadline.is_some_and(|d| now >= d)
    }

    pub fn seed(&self) -> u64 {
        self.sampler.params().seed
    }

    /// The time since its previous token, or `None` for its first (recording `now`).
    pub fn mark_token(&mut self, now: Instant) -> Option<std::time::Duration> {
        let prev = self.last_token_at.replace(now);
        match prev {
            None => {
                self.first_token_at = Some(now);
                None
            }
            Some(p) => Some(now.saturating_duration_since(p)),
        }
    }

    /// Marks it done and describes how it ended.
    pub fn finish(&mut self, reason: FinishReason) -> Finish {
        self.done = true;
        Finish {
            reason,
            prompt_tokens: self.prompt_len,
            cached_tokens: self.cached,
            generated_tokens: self.generated(),
            seed: self.seed(),
            queued_at: self.queued_at,
            first_token_at: self.first_token_at,
        }
    }

    /// Marks it done without a finish (a failure; the caller tells the client).
    pub fn abort(&mut self) {
        self.done = true;
    }

    /// Sends an event to the client (ignored if it left).
    pub fn send(&self, event: GenerationEvent) {
        let _ = self.reply.send(event);
    }

    /// Keeps its last event until it has left the batch ([`Self::send_last`]).
    pub fn send_at_retire(&mut self, event: GenerationEvent) {
        self.last = Some(event);
    }

    pub fn send_last(&mut self) {
        if let Some(event) = self.last.take() {
            self.send(event);
        }
    }

    /// Samples from `logits`, records the token, and builds the event to send.
    /// Returns the token and, if the sequence is done, why.
    pub fn accept(
        &mut self,
        logits: &mut [f32],
        tokenizer: &Tokenizer,
    ) -> (Token, Option<FinishReason>) {
        let eos = tokenizer.eos_id();
        let early = self.generated() < self.stopping.min_new_tokens && !self.stopping.ignore_eos;
        let banned: &[u32] = if early { &[eos] } else { &[] };
        let Sampled { id, logprob, top } =
            self.sampler
                .sample(logits, &self.tokens, self.generated(), banned);
        self.tokens.push(id);
        let is_eos = id == eos && !self.stopping.ignore_eos;
        let stop_token = self.stopping.stop_token_ids.contains(&id);
        let special = tokenizer.is_special(id);
        let (mut text, stopped) = if is_eos {
            (self.text.flush(), false)
        } else if stop_token {
            (self.text.flush(), true)
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

    /// Text held back for a possible stop sequence, released when the sequence
    /// ends for another reason (a timeout).
    pub fn flush_text(&mut self) -> String {
        self.text.flush()
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
