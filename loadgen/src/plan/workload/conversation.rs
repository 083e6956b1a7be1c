//! Multi-turn conversations (`--multi-turn`): every turn sends the whole
//! history (an optional shared system prompt, the earlier user messages and
//! the server's actual replies) plus a new user message, as a chat client does.

use std::time::Duration;

use super::{stream_rng, Item, Message, Prompt, Stream, Synthetic};

/// Which conversation a request belongs to, and which turn of it (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnOf {
    pub conversation: u64,
    pub turn: u32,
}

/// How conversations are made.
#[derive(Debug, Clone)]
pub struct Conversations {
    /// User messages: `input` tokens each; replies ask for `output` tokens.
    pub text: Synthetic,
    pub turns: u32,
    /// Tokens of a system prompt that every conversation shares.
    pub system_prompt_len: Option<u32>,
    /// The pause between a reply and the next turn (a user reading and typing).
    pub think_time: Duration,
}

impl Conversations {
    /// Conversation `c`: its user messages depend only on the seed and `c`.
    pub fn conversation(&self, c: u64) -> Conversation {
        let seed = self.text.seed;
        let mut history = Vec::new();
        if let Some(len) = self.system_prompt_len {
            let mut rng = stream_rng(seed, Stream::SystemPrompt, 0, 0);
            history.push(Message {
                role: "system".into(),
                content: self.text.text(len, &mut rng),
            });
        }
        let users = (0..self.turns)
            .map(|t| {
                let mut rng = stream_rng(seed, Stream::Turn, c, u64::from(t));
                let tokens = self.text.input.sample(&mut rng);
                let max_tokens = self.text.output.sample(&mut rng);
                (self.text.text(tokens, &mut rng), max_tokens)
            })
            .collect();
        Conversation {
            users,
            history,
            next: 0,
        }
    }
}

/// One conversation in progress.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Each turn's user message and the reply length it asks for.
    users: Vec<(String, u32)>,
    /// Messages so far: system prompt, then user/assistant pairs.
    history: Vec<Message>,
    /// The next turn to send, from 0.
    next: usize,
}

impl Conversation {
    /// The next turn's request, the history plus its user message; `None`
    /// when every turn has been sent.
    pub fn next_turn(&mut self) -> Option<Item> {
        let (user, max_tokens) = self.users.get(self.next)?.clone();
        self.next += 1;
        self.history.push(Message {
            role: "user".into(),
            content: user,
        });
        Some(Item {
            prompt: Prompt::Messages(self.history.clone()),
            max_tokens,
        })
    }

    /// The server's reply to the last turn, sent back with the next one.
    pub fn reply(&mut self, text: String) {
        self.history.push(Message {
            role: "assistant".into(),
            content: text,
        });
    }

    /// The request of the first turn.
    pub fn first_item(mut self) -> Item {
        self.next = 0;
        self.history.retain(|m| m.role == "system");
        self.next_turn().unwrap_or(Item {
            prompt: Prompt::Messages(self.history),
            max_tokens: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::workload::LenDist;

    fn conversations(seed: u64) -> Conversations {
        Conversations {
            text: Synthetic {
                input: LenDist::Uniform { min: 4, max: 12 },
                output: LenDist::Fixed { value: 5 },
                tokens_per_word: 1.0,
                seed,
            },
            turns: 3,
            system_prompt_len: Some(20),
            think_time: Duration::ZERO,
        }
    }

    #[test]
    fn each_turn_resends_the_history_with_the_real_replies() {
        let mut conv = conversations(1).conversation(4);
        let first = conv.next_turn().expect("turn 1");
        let Prompt::Messages(m1) = &first.prompt else {
            panic!("chat messages");
        };
        assert_eq!(
            m1.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
            ["system", "user"]
        );
        conv.reply("reply one".into());
        let second = conv.next_turn().expect("turn 2");
        let Prompt::Messages(m2) = &second.prompt else {
            panic!("chat messages");
        };
        assert_eq!(m2.len(), 4);
        assert_eq!(&m2[..2], &m1[..]);
        assert_eq!(m2[2].content, "reply one");
        assert_eq!(m2[2].role, "assistant");
        conv.reply("reply two".into());
        assert!(conv.next_turn().is_some());
        assert!(conv.next_turn().is_none(), "three turns");
    }

    #[test]
    fn conversations_are_seeded_and_share_the_system_prompt() {
        let a = conversations(1);
        let user = |c: &Conversations, id: u64| {
            let mut conv = c.conversation(id);
            conv.next_turn().map(|i| i.prompt.as_messages())
        };
        assert_eq!(user(&a, 2), user(&a, 2), "same seed, same conversation");
        assert_ne!(user(&a, 2), user(&a, 3), "conversations differ");
        let (x, y) = (
            user(&a, 2).unwrap_or_default(),
            user(&a, 3).unwrap_or_default(),
        );
        assert_eq!(x[0], y[0], "one system prompt for all");
        assert_eq!(x[0].content.split(' ').count(), 20);
        assert_ne!(user(&a, 2), user(&conversations(2), 2), "seed matters");
        assert_eq!(a.conversation(5).first_item(), {
            let mut c = a.conversation(5);
            c.next_turn().expect("turn 1")
        });
    }
}
