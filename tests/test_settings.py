"""Every settings class a user fills in code or with flags is declared (`pricer.declared.declared`):
a bad value, made in code or through `dataclasses.replace`, is one SpecError line naming the class
and the field, with the value it got."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pricer.bench.gpucheck import CheckSettings
from pricer.bench.recipe import RecipeConfig
from pricer.bench.speed import BenchSettings
from pricer.data.corpus import Curation
from pricer.data.sampling import Sampling
from pricer.data.tables import Columns
from pricer.errors import SpecError
from pricer.predict.ensemble import Member


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Sampling(cap=0), "sampling: cap: must be >= 1 (got 0)"),
    (lambda: Sampling(cap=5, category_weights="flat"), "sampling: category_weights: 'inverse' or a mapping"),
    (lambda: Sampling(cap=5, category_weights={"Automotive": 0, "*": 5}),
     "sampling: category_weights.Automotive: must be > 0 (got 0)"),
    (lambda: Sampling(cap=5, keep_all_from=-1), "sampling: keep_all_from: must be > 0 (got -1)"),
    (lambda: Curation(limit=0, balance="many"),
     "curation: limit: must be >= 1 (got 0); balance: must be a whole number (got 'many')"),
    (lambda: Curation(balance=2, sampling=Sampling(cap=3)), "curation: sampling: give balance or sampling, not both"),
    (lambda: Curation(sampling={"cap": 0}), "curation: sampling.cap: must be >= 1 (got 0)"),
    (lambda: Columns.parse("Name,Cost", "Cost"), "columns: price: 'Cost' is also a text column"),
    (lambda: Columns(text=("Name", "")), "columns: text[1]: must not be empty (got '')"),
    (lambda: BenchSettings(max_tokens=10), "bench: max_tokens: must be >= 64 (got 10)"),
    (lambda: dataclasses.replace(BenchSettings(), steps=0), "bench: steps: must be >= 1 (got 0)"),
    (lambda: RecipeConfig(lora_dropout=1.5), "recipe: lora_dropout: must be < 1.0 (got 1.5)"),
    (lambda: CheckSettings(shapes=("llama-3.1-8b", "gpt-5")), "gpu-check: shapes[1]: must be one of"),
    (lambda: CheckSettings(bench={"eval_items": 0}), "gpu-check: bench.eval_items: must be >= 1 (got 0)"),
    (lambda: Member("trial-3", "folder", "members/trial-3", 0.5),
     "ensemble member: kind: must be one of adapter, baseline (got 'folder')"),
])
def test_a_bad_setting_is_one_line_naming_its_field(make, message) -> None:
    with pytest.raises(SpecError, match=f"^{re.escape(message)}") as err:
        make()
    assert "\n" not in str(err.value)


def test_good_settings_keep_their_values() -> None:
    sampling = Sampling(cap=1200, category_weights={"*": 5, "Automotive": 1}, keep_all_from=240)
    # sorted, and ints stay ints: a study file's weights key the same cached build as before
    assert sampling.to_dict() == {"cap": 1200, "category_weights": {"*": 5, "Automotive": 1}, "keep_all_from": 240}
    assert Curation(sampling=sampling, columns=Columns.parse("title,blurb")).key()["columns"] == \
        {"text": ["title", "blurb"], "price": "price"}
