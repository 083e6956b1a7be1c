//! The tokenizer, built from GGUF metadata alone (no `tokenizer.json` needed).
//!
//! GGUF "gpt2" tokenizers are byte-level BPE. `tokenizer.ggml.pre` names the
//! pre-tokenizer llama.cpp applies before BPE; it changes the ids, so it must be
//! honoured. For "smollm" llama.cpp first isolates every digit, then applies the
//! GPT-2 regex.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::gguf::{GgufError, GgufFile};

/// llama.cpp token type for control tokens (`<|im_start|>` and friends).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// llama.cpp token type for user-defined tokens, always matched whole.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported tokenizer model `{0}` (only gpt2-style BPE is supported)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer `{0}`")]
    UnsupportedPre(String),
    #[error("tokenizer: {0}")]
    Tokenizers(String),
}

fn tk_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

/// Encodes text to ids and back. Two inner tokenizers: one that parses special
/// tokens in the text (prompts rendered from a chat template) and one that
/// treats them as plain text (user-supplied raw prompts stay harmless).
pub struct Tokenizer {
    with_special: tokenizers::Tokenizer,
    plain: tokenizers::Tokenizer,
    eos_id: u32,
    bos_id: Option<u32>,
    add_bos: bool,
    special_ids: Vec<u32>,
    vocab_size: usize,
}

/// What a tokenizer is built from: the vocabulary and merges of a GGUF's
/// `tokenizer.ggml.*` metadata.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSpec {
    pub tokens: Vec<String>,
    /// `"a b"` pairs, in merge priority order.
    pub merges: Vec<String>,
    /// llama.cpp token types (1 normal, 3 control, 4 user-defined).
    pub types: Vec<i32>,
    /// llama.cpp pre-tokenizer name (`tokenizer.ggml.pre`).
    pub pre: String,
    pub eos_id: u32,
    pub bos_id: Option<u32>,
    pub add_bos: bool,
}

impl TokenizerSpec {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model));
        }
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let types = if gguf.has("tokenizer.ggml.token_type") {
            gguf.i32s("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        Ok(Self {
            merges: gguf.strings("tokenizer.ggml.merges")?,
            types,
            pre: if gguf.has("tokenizer.ggml.pre") {
                gguf.string("tokenizer.ggml.pre")?
            } else {
                "default".to_owned()
            },
            eos_id: gguf.usize("tokenizer.ggml.eos_token_id")? as u32,
            bos_id: gguf
                .usize("tokenizer.ggml.bos_token_id")
                .ok()
                .map(|x| x as u32),
            add_bos: gguf
                .metadata()
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
            tokens,
        })
    }
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        Self::from_spec(TokenizerSpec::from_gguf(gguf)?)
    }

    pub fn from_spec(spec: TokenizerSpec) -> Result<Self, TokenizerError> {
        let vocab: tokenizers::models::bpe::Vocab = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = spec
            .merges
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tk_err)?;
        let mut plain = tokenizers::Tokenizer::new(bpe);
        plain.with_pre_tokenizer(Some(pre_tokenizer(&spec.pre)?));
        plain.with_decoder(Some(ByteLevelDecoder::default()));

        let mut with_special = plain.clone();
        let mut special_ids = Vec::new();
        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (id, (token, ty)) in spec.tokens.iter().zip(spec.types.iter()).enumerate() {
            match *ty {
                TOKEN_TYPE_CONTROL => {
                    special_ids.push(id as u32);
                    special.push(AddedToken::from(token.clone(), true));
                }
                TOKEN_TYPE_USER_DEFINED => {
                    user_defined.push(AddedToken::from(token.clone(), false));
                }
                _ => {}
            }
        }
        with_special.add_special_tokens(special).map_err(tk_err)?;
        with_special
            .add_tokens(user_defined.clone())
            .map_err(tk_err)?;
        plain.add_tokens(user_defined).map_err(tk_err)?;
        Ok(Self {
            with_special,
            plain,
            eos_id: spec.eos_id,
            bos_id: spec.bos_id,
            add_bos: spec.add_bos,
            special_ids,
            vocab_size: spec.tokens.len(),
        })
    }

    /// Token ids of `text`. With `parse_special`, `<|im_start|>` and the like
    /// become their single control ids; without, they are spelled out as text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let tk = if parse_special {
            &self.with_special
        } else {
            &self.plain
        };
        let enc = tk.encode_fast(text, false).map_err(tk_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.with_special.decode(ids, skip_special).map_err(tk_err)
    }

    /// The text of one token as stored in the vocabulary, decoded from bytes.
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id], false).unwrap_or_default()
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.with_special.id_to_token(id)
    }
}

/// Maps llama.cpp's pre-tokenizer names onto `tokenizers` pre-tokenizers.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    // GPT-2's regex, which `ByteLevel` applies when `use_regex` is on.
    let byte_level = ByteLevel::new(false, false, true);
    match pre {
        "default" | "gpt2" | "gpt-2" => Ok(byte_level.into()),
        "smollm" => {
            let digits = Split::new(
                SplitPattern::Regex(r"\p{N}".to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tk_err)?;
            Ok(Sequence::new(vec![digits.into(), byte_level.into()]).into())
        }
        other => Err(TokenizerError::UnsupportedPre(other.to_owned())),
    }
}

/// Turns a growing list of ids into text pieces, holding back bytes that do not
/// yet form whole UTF-8 characters (a multi-byte emoji spans several tokens).
#[derive(Debug, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Adds one token; returns the new text it completes, possibly empty.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let prefix = tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset], false)
            .unwrap_or_default();
        let full = tokenizer
            .decode(&self.ids[self.prefix_offset..], false)
            .unwrap_or_default();
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let piece = full[prefix.len()..].to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            piece
        } else {
            String::new()
        }
    }
}
