"""The model catalog: entries, study-file entries, local folders, and the one-line error for hub
weights that are not available here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pricer.errors import ModelUnavailable, SpecError
from pricer.model.catalog import CATALOG, ModelSpec, cache_root, materialize, resolve

HUB = {
    "llama-3.1-8b": ("llama", "base", "meta-llama/Llama-3.1-8B"),
    "llama-3.1-8b-instruct": ("llama", "instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    "gemma-2-2b": ("gemma2", "base", "google/gemma-2-2b"),
    "gemma-2-2b-it": ("gemma2", "instruct", "google/gemma-2-2b-it"),
    "qwen2.5-7b": ("qwen2", "base", "Qwen/Qwen2.5-7B"),
    "qwen2.5-7b-instruct": ("qwen2", "instruct", "Qwen/Qwen2.5-7B-Instruct"),
}


def test_catalog_holds_the_hub_entries_and_the_two_pypi_models() -> None:
    for name, (family, variant, source) in HUB.items():
        spec = CATALOG[name]
        assert (spec.family, spec.variant, spec.source) == (family, variant, source)
    assert CATALOG["gemma-3-270m"].variant == "base"
    assert CATALOG["smollm2-135m-instruct"].variant == "instruct"
    assert all(CATALOG[n].source.startswith("pypi:") for n in ("gemma-3-270m", "smollm2-135m-instruct"))


def test_family_settings_fill_what_an_entry_leaves_out() -> None:
    assert CATALOG["gemma-2-2b"].attn_implementation == "eager"  # soft-capped attention logits
    assert CATALOG["qwen2.5-7b"].attn_implementation == "sdpa"
    assert CATALOG["llama-3.1-8b"].pad_token == "<|finetune_right_pad_id|>"
    assert CATALOG["gemma-2-2b-it"].pad_token == "<pad>"
    assert CATALOG["qwen2.5-7b-instruct"].pad_token == "<|endoftext|>"
    assert all(s.padding_side == "left" for s in CATALOG.values())
    spec = CATALOG["llama-3.1-8b"]
    assert spec.target_modules("attention") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert spec.target_modules("all-linear")[4:] == ["gate_proj", "up_proj", "down_proj"]


def test_hub_entry_without_weights_fails_with_one_line_saying_how_to_get_them(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelUnavailable) as err:
        materialize(CATALOG["gemma-2-2b"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("gemma-2-2b: weights of google/gemma-2-2b are not available")
    assert "huggingface-cli login" in message and "licence" in message and "local folder" in message


def test_study_file_entry_from_dict_and_its_errors(tiny_models) -> None:
    spec = ModelSpec.from_dict({"name": "my-qwen", "family": "qwen2", "variant": "instruct",
                                "source": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert spec.pad_token == "<|endoftext|>" and spec.chat
    local = ModelSpec.from_dict({"name": "mine", "variant": "base",
                                 "source": str(materialize(tiny_models["gemma-3-270m"]))})
    assert local.family == "gemma3_text"
    with pytest.raises(SpecError, match=r"^studies/x.yaml: models\[0\]: variant: must be one of base, instruct \(got 'chat'\)$"):
        ModelSpec.from_dict({"name": "m", "family": "llama", "variant": "chat", "source": "a/b"},
                            where="studies/x.yaml: models[0]")
    with pytest.raises(SpecError, match="unknown field.*lora_r"):
        ModelSpec.from_dict({"name": "m", "family": "llama", "variant": "base", "source": "a/b", "lora_r": 8})
    with pytest.raises(SpecError, match="family: required unless source is a local model folder"):
        ModelSpec.from_dict({"name": "m", "variant": "base", "source": "owner/model"})


def test_a_local_folder_resolves_to_an_ad_hoc_entry(tiny_models) -> None:
    smol = resolve(str(materialize(tiny_models["smollm2-135m-instruct"])))
    assert (smol.family, smol.variant) == ("llama", "instruct")  # it ships a chat template
    gemma = resolve(str(materialize(tiny_models["gemma-3-270m"])))
    assert (gemma.family, gemma.variant, gemma.pad_token) == ("gemma3_text", "base", "<pad>")
    extra = {"house": ModelSpec("house", "llama", "base", str(materialize(tiny_models["gemma-3-270m"])))}
    assert resolve("house", extra) is extra["house"]
    with pytest.raises(SpecError, match="unknown model 'no-such-model'"):
        resolve("no-such-model")


def test_gguf_models_are_converted_once_into_the_cache(tiny_models) -> None:
    folder = materialize(tiny_models["smollm2-135m-instruct"])
    assert folder == cache_root() / "models" / "smollm2-135m-instruct"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    # no half-written scratch folder is left beside the finished ones
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]
    assert materialize(tiny_models["smollm2-135m-instruct"]) == folder


def test_a_missing_local_folder_is_model_unavailable(tmp_path: Path) -> None:
    spec = ModelSpec("gone", "llama", "base", str(tmp_path / "nothing"))
    with pytest.raises(ModelUnavailable, match="is not a model folder"):
        materialize(spec)
