"""A tiny local Hugging Face tokenizer for bench_serving against the simulated server.

`python -m sglang.benchmark.serving` insists on loading a tokenizer with
`AutoTokenizer.from_pretrained` (random-ids prompts, retokenising the output), and this
machine reaches no model hub. The simulated server streams the filler text " tok" once per
generated token, so a byte-level BPE whose merges turn " tok" into one token encodes and
decodes that output exactly (one token per generated token, as a real tokenizer would count
the real model's output). The 256 byte-level symbols make any other text encodable too, and
the vocabulary is padded with unreachable `<pad_i>` entries to `vocab_size` ids so
bench_serving's random-ids draws look like a real vocabulary's.

Built into a directory at run time (never committed):

    python bench/tiny_tokenizer.py DIR        # writes DIR/tokenizer.json, DIR/tokenizer_config.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FILLER_TEXT = " tok"  # autotune.sim.api.FILLER_TEXT


def build(directory: str | Path, vocab_size: int = 32000) -> Path:
    """Write the tokenizer into `directory` (created if missing) and return it. Needs `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte-level symbols
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    merges = [("t", "o"), ("to", "k"), ("Ġ", "tok")]  # " tok" -> "Ġtok" -> one token
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for i in range(len(vocab), vocab_size):
        vocab[f"<pad_{i}>"] = i
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1 << 20,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    # Round-trip check: the filler output is one token per generated token, decoded exactly.
    text = FILLER_TEXT * 5
    ids = tokenizer.encode(text).ids
    if len(ids) != 5 or tokenizer.decode(ids) != text:
        raise RuntimeError(f"tiny tokenizer does not round-trip {text!r}: {ids}")
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.rsplit("\n\n", 1)[1])
    print(build(sys.argv[1]))
