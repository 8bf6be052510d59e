"""The model catalog and ModelSpec (docs/reference/models.md, docs/reference/sglang.md §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.models import ModelConfigError, ModelNotFound, catalog_specs, load_model

DATA = Path(__file__).parent / "data"
CATALOG = Path(__file__).parents[1] / "autotune" / "models" / "catalog"

# docs/reference/models.md: S and F bytes per token (bf16, TP 1, K and V cached), S/F, windows as SGLang runs them.
EXPECTED = {
    "gemma-4-31B-it": (819200, 81920, 10.0, 1023, (50, 10)),
    "gemma-4-26B-A4B-it": (204800, 20480, 10.0, 1023, (25, 5)),
    "gemma-4-E4B-it": (71680, 28672, 2.5, 511, (35, 7)),
    "gemma-4-E2B-it": (28672, 14336, 2.0, 511, (28, 7)),
    "gemma-4-12B-it": (327680, 16384, 20.0, 1023, (40, 8)),
    "gpt-oss-20b": (24576, 24576, 1.0, 127, (12, 12)),
    "gpt-oss-120b": (36864, 36864, 1.0, 127, (18, 18)),
    "Llama-4-Scout-17B-16E": (147456, 49152, 3.0, 8192, (36, 12)),
    "MiMo-V2-Flash": (199680, 23040, 199680 / 23040, 128, (39, 9)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_catalog_kv_bytes_match_reference(name: str) -> None:
    swa, full, s_over_f, window, (n_swa, n_full) = EXPECTED[name]
    model = load_model(name)
    assert model.hybrid_swa
    assert model.swa_bytes_per_token() == swa
    assert model.full_bytes_per_token() == full
    assert model.s_over_f == pytest.approx(s_over_f)
    assert model.window == window
    assert (len(model.swa_layer_ids), len(model.full_layer_ids)) == (n_swa, n_full)


def test_issue_s_over_f_figures() -> None:
    assert load_model("31B").s_over_f == 10
    assert load_model("26B-A4B").s_over_f == 10
    assert load_model("E4B").s_over_f == 2.5
    assert load_model("gpt-oss-20b").s_over_f == 1.0
    assert load_model("gpt-oss-120b").s_over_f == 1.0


def test_gemma4_layer_ids_and_remapping() -> None:
    model = load_model("31B")
    assert model.full_layer_ids == tuple(range(5, 60, 6))  # [S,S,S,S,S,F] x 10
    # docs/reference/sglang.md §2: head_dim / kv heads describe the full layers after remapping.
    assert (model.full_attention.kv_heads, model.full_attention.head_dim) == (4, 512)
    assert (model.swa_attention.kv_heads, model.swa_attention.head_dim) == (16, 256)
    # attention_k_eq_v shares the projection, but both K and V are cached: 4 x (512 + 512) x 2.
    assert model.full_layer_bytes() == 4 * 1024 * 2


def test_config_already_rearranged_for_sglang_reads_the_same() -> None:
    """docs/reference/real-sglang.md: a Gemma4ForCausalLM text config with SGLang's fields written out."""
    text = load_model(str(DATA / "gemma4-text"))
    catalog = load_model("26B-A4B")
    assert text.architecture == "Gemma4ForCausalLM"
    assert text.swa_bytes_per_token() == catalog.swa_bytes_per_token()
    assert text.full_bytes_per_token() == catalog.full_bytes_per_token()
    assert text.window == 1023


def test_llama4_and_mimo_layer_rules() -> None:
    scout = load_model("scout")
    assert scout.full_layer_ids == tuple(i for i in range(48) if (i + 1) % 4 == 0)
    mimo = load_model("mimo")
    assert mimo.full_attention.head_dim == 192 and mimo.full_attention.v_head_dim == 128
    assert mimo.swa_attention.kv_heads == 8 and mimo.full_attention.kv_heads == 4


def test_tensor_parallel_divides_heads_but_never_below_one() -> None:
    model = load_model("26B-A4B")  # 8 sliding / 2 full KV heads
    assert model.swa_layer_bytes(tp=2) == model.swa_layer_bytes() // 2
    assert model.full_layer_bytes(tp=2) == model.full_layer_bytes() // 2
    # tp=4: full layers have 2 heads -> one head per rank, not zero.
    assert model.full_layer_bytes(tp=4) == 1 * 1024 * 2
    assert model.full_layer_bytes(tp=8) == 1 * 1024 * 2
    assert model.swa_layer_bytes(tp=8) == 1 * 512 * 2


def test_fp8_kv_halves_bytes() -> None:
    model = load_model("31B")
    assert model.swa_bytes_per_token(kv_dtype="fp8_e4m3") * 2 == model.swa_bytes_per_token()
    with pytest.raises(ValueError, match="unknown KV cache dtype"):
        model.swa_bytes_per_token(kv_dtype="int3")


def test_moe_facts_and_weights() -> None:
    moe = load_model("26B-A4B")
    assert moe.is_moe and moe.moe.num_experts == 128 and moe.moe.top_k == 8
    dense = load_model("31B")
    assert not dense.is_moe
    assert dense.weight_bytes == pytest.approx(62.5e9)
    assert moe.params_active < moe.params_total / 5


@pytest.mark.parametrize("model", catalog_specs(), ids=lambda m: m.name)
def test_shape_estimates_land_near_published_parameter_counts(model) -> None:
    # The estimator serves configs the catalog does not know; check it on the ones it does.
    assert model.params.total == pytest.approx(model.params_total, rel=0.07)
    if model.is_moe:  # published "active" counts for dense models include the vision/audio towers
        assert model.params.active == pytest.approx(model.params_active, rel=0.20)


def test_aliases_hub_ids_and_case() -> None:
    assert load_model("26b-a4b").name == "gemma-4-26B-A4B-it"
    assert load_model("google/gemma-4-31B-it").name == "gemma-4-31B-it"
    assert load_model("GEMMA-4-E4B-IT").name == "gemma-4-E4B-it"
    assert load_model("openai/gpt-oss-120b").name == "gpt-oss-120b"


def test_directory_and_file_references(tmp_path: Path) -> None:
    src = CATALOG / "gpt-oss-20b.json"
    directory = tmp_path / "my-model"
    directory.mkdir()
    (directory / "config.json").write_text(src.read_text())
    from_dir = load_model(str(directory))
    assert from_dir.name == "my-model" and from_dir.s_over_f == 1.0
    assert from_dir.params_source == "estimated from config shapes"
    assert load_model(str(directory / "config.json")).swa_bytes_per_token() == 24576


@pytest.mark.parametrize("fixture", ["gemma3", "llama3"])
def test_models_without_a_hybrid_pool_are_reported_as_such(fixture: str) -> None:
    model = load_model(str(DATA / fixture))
    assert not model.hybrid_swa
    assert "has no effect" in model.hybrid_reason
    assert model.swa_layer_ids == ()


def test_unknown_alias_suggests_close_names() -> None:
    with pytest.raises(ModelNotFound) as info:
        load_model("26B-A4")
    assert "26B-A4B" in info.value.suggestions
    assert "autotune models" in str(info.value)


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="holds no config.json"):
        load_model(str(tmp_path))


def test_malformed_json_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"architectures": ["Gemma4ForCausalLM"],\n "num_hidden_layers": }')
    with pytest.raises(ModelConfigError, match=r"not valid JSON \(line 2"):
        load_model(str(bad))


@pytest.mark.parametrize(
    ("drop", "key"),
    [("architectures", "architectures"), ("num_hidden_layers", "text_config.num_hidden_layers"),
     ("layer_types", "text_config.layer_types"), ("sliding_window", "text_config.sliding_window")],
)
def test_missing_fields_name_the_key(tmp_path: Path, drop: str, key: str) -> None:
    data = json.loads((CATALOG / "gemma-4-31B-it.json").read_text())
    if drop in data:
        del data[drop]
    else:
        del data["text_config"][drop]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelConfigError) as info:
        load_model(str(path))
    assert info.value.key == key
    assert str(path) in str(info.value)


def test_layer_types_length_mismatch(tmp_path: Path) -> None:
    data = json.loads((CATALOG / "gpt-oss-20b.json").read_text())
    data["layer_types"] = data["layer_types"][:-1]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelConfigError, match="has 23 entries but num_hidden_layers is 24"):
        load_model(str(tmp_path))
