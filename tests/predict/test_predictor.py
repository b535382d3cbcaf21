"""`load_predictor` dispatches on the folder's kind; what it can't load it names in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pricer.errors import SpecError
from pricer.model.adapter import FORMAT, META_FILE, write_meta
from pricer.predict.predictor import load_predictor


def test_a_folder_from_before_kinds_is_opened_as_an_adapter(tmp_path: Path) -> None:
    """No ``kind`` in pricer.json: the adapter loader takes it (and, here, finds its base missing)."""
    from pricer.errors import ModelUnavailable
    from pricer.model.catalog import ModelSpec

    base = ModelSpec("gone", "llama", "base", str(tmp_path / "no-base"))
    write_meta(tmp_path, {"model": base.to_dict(), "prompt": {"max_tokens": 64}})
    with pytest.raises(ModelUnavailable, match="gone: weights not available"):
        load_predictor(tmp_path)


def test_an_ensemble_folder_as_written_is_opened_by_the_same_door(tmp_path: Path) -> None:
    """What `save_ensemble` writes, `load_predictor` opens; a member without weight is not loaded
    (here it could not be: its folder does not exist), and no weighted member means no price."""
    from pricer.predict.ensemble import Member, save_ensemble

    save_ensemble(tmp_path, [Member("trial-0", "adapter", "trial-0", 0.0)], metrics={})
    predictor = load_predictor(tmp_path)
    assert predictor.kind == "ensemble" and predictor.loaded == [None]
    assert predictor.predict(["A kettle."]) == [None]


def test_an_unknown_kind_or_a_foreign_folder_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_text(json.dumps({"format": FORMAT, "kind": "hologram"}))
    with pytest.raises(SpecError, match="kind 'hologram' is not known here.*adapter, merged"):
        load_predictor(tmp_path)
    with pytest.raises(SpecError, match="not an adapter folder"):
        load_predictor(tmp_path / "missing")


def test_adapter_config_names_the_base_by_hub_id_or_catalog_name_never_a_path(tmp_path: Path) -> None:
    from pricer.model.adapter import PEFT_CONFIG, make_portable
    from pricer.model.catalog import CATALOG, ModelSpec

    config = tmp_path / PEFT_CONFIG
    for spec, expected in [(CATALOG["qwen2.5-7b"], "Qwen/Qwen2.5-7B"),
                           (CATALOG["gemma-3-270m"], "gemma-3-270m"),
                           (ModelSpec("my-base", "llama", "base", "./models/my-base"), "my-base")]:
        config.write_text(json.dumps({"base_model_name_or_path": "/root/.cache/pricer/models/x", "r": 8}))
        make_portable(tmp_path, spec)
        written = json.loads(config.read_text())
        assert written == {"base_model_name_or_path": expected, "r": 8}
