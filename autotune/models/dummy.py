"""A model directory real SGLang boots without weights: `--load-format dummy --skip-tokenizer-init`.

The pool layout and the memory-bound behaviour depend on the model's shapes, not on weight
values, so a study can run before a checkpoint is downloaded (or where it never can be). The
directory holds only a `config.json`, written from the catalog in the form SGLang accepts:

- Gemma 4: the text model (`Gemma4ForCausalLM`, `model_type: gemma4_text`). The multimodal class
  needs processor and tokenizer files even with `--skip-tokenizer-init`. SGLang 0.5.17 rearranges
  Gemma 4's attention fields only for `model_type: gemma4`, and crashes on the text config
  (`'Gemma4TextConfig' object has no attribute 'swa_num_key_value_heads'`), so the rearranged
  fields are written here: full-layer shape in the base keys, sliding shape in `swa_*` keys
  (docs/reference/real-sglang.md). Later releases read the same keys.
- Other architectures: the catalog's config as it is (not yet booted on real SGLang here).

What dummy weights cannot tell: MoE routing (a random router spreads tokens unlike a trained one),
speculative acceptance, and the vision tower's memory (the text model has none).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autotune.models.catalog import find_entry
from autotune.models.spec import ModelSpec, read_config_file, spec_from_config
from autotune.sglang_facts import LOAD_FORMAT, SKIP_TOKENIZER_INIT

DUMMY_LOAD_FLAGS: dict[str, object] = {LOAD_FORMAT: "dummy", SKIP_TOKENIZER_INIT: True}

CANNOT_TELL = (
    "MoE routing (a random router spreads tokens over experts unlike a trained one, so decode speed is a guide)",
    "speculative-decoding acceptance",
    "the vision tower's memory (the dummy model is text-only, so the KV budget is larger than the real checkpoint's)",
)

_GEMMA4_MULTIMODAL = ("Gemma4ForConditionalGeneration", "Gemma4UnifiedForConditionalGeneration")


@dataclass(frozen=True)
class DummyModel:
    path: Path
    architecture: str
    verified: bool  # booted on real SGLang with this form of config
    notes: tuple[str, ...]


def gemma4_text_config(config: dict[str, Any]) -> dict[str, Any]:
    """Gemma 4's text config with SGLang's attention fields written out (full first, SWA in swa_*)."""
    text = dict(config.get("text_config") or config)
    swa_dim, swa_kv = int(text["head_dim"]), int(text["num_key_value_heads"])
    if text.get("swa_head_dim") is None:  # not yet rearranged
        full_dim = int(text.get("global_head_dim") or swa_dim)
        full_kv = int(text.get("num_global_key_value_heads") or swa_kv)
        text.update(
            head_dim=full_dim, v_head_dim=full_dim, num_key_value_heads=full_kv,
            swa_head_dim=swa_dim, swa_v_head_dim=swa_dim, swa_num_key_value_heads=swa_kv,
            # kept: SGLang's Gemma 4 code still reads them
            global_head_dim=full_dim, num_global_key_value_heads=full_kv,
        )
    text["architectures"] = ["Gemma4ForCausalLM"]
    text["model_type"] = "gemma4_text"
    text.setdefault("torch_dtype", config.get("torch_dtype", "bfloat16"))
    if "tie_word_embeddings" in config:
        text.setdefault("tie_word_embeddings", config["tie_word_embeddings"])
    return text


def dummy_config(config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(config SGLang boots with dummy weights, whether that form was verified on real SGLang)."""
    architecture = (config.get("architectures") or [""])[0]
    if architecture in _GEMMA4_MULTIMODAL or architecture == "Gemma4ForCausalLM":
        return gemma4_text_config(config), True
    return dict(config), False


def write_dummy_model(model: ModelSpec, root: str | Path) -> DummyModel:
    """Write (or reuse) `root/<name>-dummy-<hash>/config.json` for `model`; return its directory.

    The directory name carries a hash of the config, so a changed catalog never reuses a stale one.
    """
    source = _source_config(model)
    config, verified = dummy_config(source)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    path = Path(root).expanduser().resolve() / f"{model.name}-dummy-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    target = path / "config.json"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)  # atomic: a concurrent reader sees the old file or the new one
    notes = () if verified else (
        f"{config.get('architectures', ['?'])[0]}: dummy-weight boot not yet verified on real SGLang; "
        "if it fails, the server log says which config field it wants",
    )
    return DummyModel(path=path, architecture=config["architectures"][0], verified=verified, notes=notes)


def _source_config(model: ModelSpec) -> dict[str, Any]:
    if model.config_path:
        return read_config_file(Path(model.config_path))
    entry = find_entry(model.name)
    if entry is None:
        raise ValueError(f"{model.name}: no config.json to write a dummy model from; pass a catalog name or a directory")
    return read_config_file(entry.config_file)


def dummy_spec(model: ModelSpec, dummy: DummyModel) -> ModelSpec:
    """The model SGLang will boot from the dummy directory (text-only for Gemma 4: no vision
    tower in the weights), under the catalog's name so studies and rules stay keyed by it."""
    config_file = dummy.path / "config.json"
    booted = spec_from_config(read_config_file(config_file), path=str(config_file), name=model.name, hub_id=model.hub_id)
    return replace(booted, notes=booted.notes + ("dummy weights: " + "; ".join(CANNOT_TELL) + " are not measured",))
