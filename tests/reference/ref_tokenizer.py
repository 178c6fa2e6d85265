"""Reference tokenizer for ponder, built from a GGUF file's embedded vocabulary.

Builds a Hugging Face `tokenizers` byte-level BPE tokenizer from the GGUF
metadata (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`,
`tokenizer.ggml.token_type`, `tokenizer.ggml.pre`) that mirrors the model's
original tokenizer.json. Two pre-tokenizer types are known:

`smollm` (SmolLM2):
  * normalizer:     none
  * pre-tokenizer:  Sequence[Digits(individual_digits=True),
                             ByteLevel(add_prefix_space=False, use_regex=True)]

`qwen2` (Qwen2 / Qwen2.5):
  * normalizer:     NFC
  * pre-tokenizer:  Sequence[Split(QWEN2_PATTERN, behavior=isolated),
                             ByteLevel(add_prefix_space=False, use_regex=False)]
                    (the pattern splits every digit on its own, and keeps a
                    single leading non-letter with a run of letters)

Both:
  * model:          BPE (byte-level alphabet, no unk token, no byte fallback)
  * decoder:        ByteLevel
  * post-processor: none (no BOS is added: tokenizer.ggml.add_bos_token=False)
  * special tokens: every token whose token_type is 3 (CONTROL); these are
                    matched as whole tokens anywhere in the input text.
                    Tokens of type 4 (USER_DEFINED, Qwen's `<tool_call>` and
                    `</tool_call>`) are matched whole too but are not special
                    (decoding with skip_special_tokens keeps them).
                    Type 5 (UNUSED, Qwen's `[PAD151665]`...) stay plain vocab
                    entries that no merge produces.

Usage:
    python ref_tokenizer.py MODEL.gguf "some text"
"""

import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# Qwen2's pre-tokenizer split (its tokenizer.json's Split pattern).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def build_tokenizer(gguf_path, reader=None):
    """Return a `tokenizers.Tokenizer` equivalent to the GGUF's embedded one."""
    reader = reader or GGUFReader(gguf_path)
    model_kind = _field(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ValueError(f"only byte-level BPE ('gpt2') is supported, got {model_kind!r}")
    if _field(reader, "tokenizer.ggml.add_bos_token"):
        raise ValueError("add_bos_token=True is not handled by this reference")

    tokens = _field(reader, "tokenizer.ggml.tokens")
    token_types = _field(reader, "tokenizer.ggml.token_type")
    merges = _field(reader, "tokenizer.ggml.merges")

    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate token strings in vocab"
    merge_pairs = []
    for m in merges:
        a, b = m.split(" ")  # byte-level tokens never contain a literal space
        merge_pairs.append((a, b))

    bpe = models.BPE(
        vocab=vocab,
        merges=merge_pairs,
        unk_token=None,
        fuse_unk=False,
        byte_fallback=False,
    )
    tok = Tokenizer(bpe)
    pre = _field(reader, "tokenizer.ggml.pre")
    if pre == "smollm":
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        raise ValueError(f"pre-tokenizer {pre!r} is not handled by this reference (smollm, qwen2)")
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None

    specials = [
        AddedToken(tokens[i], special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for i, t in enumerate(token_types)
        if t == TOKEN_TYPE_CONTROL
    ]
    tok.add_special_tokens(specials)
    user = [
        AddedToken(tokens[i], special=False, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for i, t in enumerate(token_types)
        if t == TOKEN_TYPE_USER_DEFINED
    ]
    if user:
        tok.add_tokens(user)
    # Adding must not have created new ids: they all exist in the vocab.
    for s in specials + user:
        assert tok.token_to_id(s.content) == vocab[s.content]
    assert tok.get_vocab_size(with_added_tokens=True) == len(tokens)
    return tok


def encode(tok, text):
    """Encode text to ids; special tokens in the text are matched whole."""
    return tok.encode(text, add_special_tokens=False).ids


def decode(tok, ids):
    """Decode ids to text, keeping special tokens' text."""
    return tok.decode(ids, skip_special_tokens=False)


if __name__ == "__main__":
    t = build_tokenizer(sys.argv[1])
    ids = encode(t, sys.argv[2])
    print(ids)
    print(repr(decode(t, ids)))
