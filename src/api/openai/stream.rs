//! OpenAI SSE streams: one chunk per token, a usage chunk when asked, then
//! `[DONE]`; a failure ends the stream with an error event from the error table.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde::Serialize;

use crate::engine::{Finish, GenerationEvent, Token};

use super::super::error::ApiError;
use super::super::generation::{engine_gone, Submitted};
use super::wire::*;
use super::{finish_reason, F};

/// What every chunk of one response repeats.
pub struct Meta {
    pub id: String,
    pub model: String,
    pub created: u64,
}

/// Which flavour of chunks a stream produces.
#[derive(Clone, Copy)]
pub enum Kind {
    Completion { logprobs: bool },
    Chat { logprobs: bool },
}

struct ChunkState {
    s: Submitted,
    meta: Meta,
    kind: Kind,
    include_usage: bool,
    /// Text bytes streamed so far (completion logprobs' `text_offset`).
    offset: usize,
    /// SSE events ready to go out, in order.
    pending: VecDeque<Event>,
    finished: bool,
}

fn event<T: Serialize>(body: &T) -> Event {
    Event::default().json_data(body).unwrap_or_default()
}

impl ChunkState {
    fn chunk<C: Serialize>(&self, choice: Option<C>, usage: Option<Usage>) -> Event {
        let object = match self.kind {
            Kind::Completion { .. } => "text_completion",
            Kind::Chat { .. } => "chat.completion.chunk",
        };
        event(&Chunk {
            id: self.meta.id.clone(),
            object,
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices: choice.into_iter().collect(),
            usage,
        })
    }

    fn on_token(&mut self, token: &Token, finish: Option<&Finish>) {
        let reason = finish.map(finish_reason);
        let ev = match self.kind {
            Kind::Completion { logprobs } => {
                let lp = logprobs.then(|| {
                    CompletionLogprobs::from_offset(std::slice::from_ref(token), self.offset)
                });
                self.chunk(
                    Some(CompletionChunkChoice {
                        index: 0,
                        text: token.text.clone(),
                        logprobs: lp,
                        finish_reason: reason,
                    }),
                    None,
                )
            }
            Kind::Chat { logprobs } => self.chunk(
                Some(ChatChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: None,
                        content: token.text.clone(),
                    },
                    logprobs: logprobs.then(|| ChatLogprobs::of(std::slice::from_ref(token))),
                    finish_reason: reason,
                }),
                None,
            ),
        };
        self.offset += token.text.len();
        self.pending.push_back(ev);
        if let Some(f) = finish {
            self.finished = true;
            if self.include_usage {
                let usage = Usage::of(self.s.prompt_tokens, f);
                let ev = self.chunk::<CompletionChunkChoice>(None, Some(usage));
                self.pending.push_back(ev);
            }
            self.pending.push_back(Event::default().data("[DONE]"));
        }
    }

    fn on_error(&mut self, e: ApiError) {
        self.finished = true;
        self.pending.push_back(e.sse_event());
    }
}

pub fn sse(s: Submitted, meta: Meta, kind: Kind, include_usage: bool) -> Response {
    let mut st = ChunkState {
        s,
        meta,
        kind,
        include_usage,
        offset: 0,
        pending: VecDeque::new(),
        finished: false,
    };
    if let Kind::Chat { .. } = kind {
        // OpenAI opens a chat stream with the assistant role.
        let first = st.chunk(
            Some(ChatChunkChoice {
                index: 0,
                delta: Delta {
                    role: Some("assistant"),
                    content: String::new(),
                },
                logprobs: None,
                finish_reason: None,
            }),
            None,
        );
        st.pending.push_back(first);
    }
    Sse::new(chunk_stream(st))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn chunk_stream(st: ChunkState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            match st.s.events.recv().await {
                Some(GenerationEvent::Token { token, finish }) => {
                    st.on_token(&token, finish.as_ref())
                }
                Some(GenerationEvent::Failed(f)) => st.on_error(ApiError::from_failure(F, f)),
                None => st.on_error(engine_gone(F)),
            }
        }
    })
}
