"""`pricer export`: a study's best (or chosen) trial -> an adapter folder with a model card.

The adapter is downloaded from the trial's MLflow run, so export works from any machine that
reaches the tracking store. The folder is portable (its base named by hub id or catalog name, not
by a path on the training machine) and is what `pricer predict` / `pricer evaluate --adapter`
load; so is its ``merged/`` folder.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pricer.atomic import replacing_folder, write_text
from pricer.errors import SpecError
from pricer.model.adapter import base_model_id, make_portable, merge_into_base, read_meta
from pricer.model.catalog import ModelSpec, how_to_fetch
from sweeps.results.leaderboard import Row, best_trial_row, leaderboard, objective_of
from sweeps.track.redact import redact
from sweeps.track.tracking import REFIT_OF, MlflowTracker

CARD = "README.md"
MERGED = "merged"
_MARKER = "<!-- exported by pricer export -->"


def _chosen(rows: list[Row], trial: int | None) -> Row:
    if trial is None:
        return best_trial_row(rows)
    for row in rows:
        if not row.baseline and row.trial == trial and row.refit_of is None:
            if row.state != "COMPLETE":
                raise SpecError(f"trial {trial} is {row.state}, it has no final adapter; pick a COMPLETE trial")
            return row
    raise SpecError(f"no trial {trial} in this study; see `pricer leaderboard`")


def check_replaceable(out: Path) -> None:
    """`out` may be (re)written: absent, empty, or a previous export; never a folder of
    something else."""
    if not out.exists():
        return
    card = out / CARD
    previous = card.is_file() and _MARKER in card.read_text(errors="replace")
    if not out.is_dir() or (any(out.iterdir()) and not previous):
        raise SpecError(f"{out}: exists and is not a previous export; choose another --out")


def export(tracking_uri: str, study: str, out: Path, *, trial: int | None = None, merge: bool = False) -> Path:
    """Download a trial's adapter into `out` and write its model card.

    The whole folder (adapter, card, merged model) is built beside `out` and takes its place
    when complete (`pricer.atomic.replacing_folder`): a full disk or a kill leaves the previous
    export as it was, never a folder that can't load.

    Args:
        trial: the Optuna trial number; None takes the leaderboard's best finished refit (the
            winner retrained on all the data), else its best finished trial.
        merge: also write ``out/merged``: the LoRA merged into the base dequantized to bf16.

    Returns:
        `out`.
    """
    rows = leaderboard(tracking_uri, study)
    row = _chosen(rows, trial)
    tracker = MlflowTracker(tracking_uri, study, create=False)
    run = tracker.client.get_run(row.run_id)
    out = Path(out)
    check_replaceable(out)
    with replacing_folder(out) as staged:
        try:
            adapter = Path(tracker.client.download_artifacts(row.run_id, "adapter", str(staged)))
        except OSError as exc:
            raise SpecError(f"trial {row.trial}: its adapter can't be downloaded from {redact(tracking_uri)} "
                            f"({redact(exc)})") from exc
        for part in list(adapter.iterdir()):
            part.rename(staged / part.name)
        adapter.rmdir()
        entry = read_meta(staged)["model"]
        make_portable(staged, ModelSpec.from_dict(entry))  # adapters trained before folders were portable
        parent = tracker.client.get_run(tracker.study_runs(study)[0]).data.params
        data = parent.get("data_source") or parent.get("data", "?")
        metric, _ = objective_of(tracker, study)
        trials = [r for r in rows if not r.baseline and r.rank is not None]
        standing = f"#{trials.index(row) + 1} of {len(trials)} finished trials by validation {metric}"
        if row.refit_of is not None:
            standing += f"; the refit of trial {row.refit_of} on all the data"
        write_text(staged / CARD, model_card(study, row, run, entry, data, tracking_uri, standing))
        if merge:
            merge_into_base(staged, entry, staged / MERGED)
    return out


# the run metrics a registered version carries
VERSION_METRICS = tuple(f"{split}_{m}" for split in ("val", "test") for m in ("mae", "rmsle", "hit_rate", "n"))


def register(tracking_uri: str, study: str, folder: Path, name: str, *, trial: int | None = None) -> tuple[str, str]:
    """Log an exported folder as an MLflow model on its trial's run and register it as a new
    version of `name`, tagged with the study, the trial and the trial's metrics.

    Args:
        folder: what `export` wrote for the same `trial` (the adapter, or its ``merged/``).

    Returns:
        (the logged model's URI, the new version).
    """
    from sweeps.track.registry import log_predictor

    rows = leaderboard(tracking_uri, study)
    row = _chosen(rows, trial)
    run = MlflowTracker(tracking_uri, study, create=False).client.get_run(row.run_id)
    metrics = {k: v for k, v in run.data.metrics.items() if k in VERSION_METRICS}
    tags = {"pricer.study": study, "pricer.trial": str(row.trial), "pricer.model": row.model,
            **({REFIT_OF: str(row.refit_of)} if row.refit_of is not None else {}),
            "pricer.kind": read_meta(folder).get("kind", "adapter")}
    description = (f"{study}, {_what(row)}: {row.model} price predictor; validation $ error "
                   f"{metrics.get('val_mae', float('nan')):.2f}, RMSLE {metrics.get('val_rmsle', float('nan')):.3f}")
    uri, version = log_predictor(tracking_uri, row.run_id, Path(folder), register=name, metrics=metrics,
                                 tags=tags, description=description)
    return uri, str(version)


def _what(row: Row) -> str:
    return f"refit of trial {row.trial}" if row.refit_of is not None else f"trial {row.trial}"


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def model_card(study: str, row: Row, run, entry: dict, data: str, tracking_uri: str, standing: str) -> str:
    """The exported folder's README: base model, data, metrics, parameters, how to use it."""
    m, params = run.data.metrics, run.data.params

    def metric(split: str) -> str:
        if f"{split}_mae" not in m:
            return f"| {split} | – | – | – | – |"
        return (f"| {split} | ${m[f'{split}_mae']:,.2f} | {m[f'{split}_rmsle']:.3f} | "
                f"{100 * m[f'{split}_hit_rate']:.1f} | {int(m.get(f'{split}_n', 0))} |")

    base = [(k, f"`{v}`") for k, v in entry.items() if v not in (None, "")]
    spec = ModelSpec.from_dict(entry)
    base_id = base_model_id(spec)
    parameters = [(k, f"`{v}`") for k, v in sorted(params.items()) if not k.startswith("optuna.")]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""{_MARKER}
# {study}, {_what(row)}: {row.model} LoRA price predictor

A 4-bit QLoRA adapter that predicts a product's price from its description (the prompt ends in
"Price is $"). Exported {when} from MLflow run `{row.run_id}` in `{redact(tracking_uri)}`:
{standing}.

## Base model

{_table(base)}

Its weights: {how_to_fetch(spec)}. `adapter_config.json` names the base as `{base_id}`.

## Data

`{data}`, curated and split into train / validation / test by a hash of the title. Validation:
the first `eval_items` of the validation split; test: the first `test_items` of the test split.

## Metrics

| split | $ error | RMSLE | hits % | n |
|---|---|---|---|---|
{metric("val")}
{metric("test")}

## Parameters

{_table(parameters)}

## Use

```bash
pricer predict --adapter {{this folder}} "Product title" "Another title\\nIts description ..."
pricer predict --adapter {{this folder}} --input catalog.csv --text-columns title,description --out priced.csv
pricer evaluate --adapter {{this folder}} --items items.jsonl --json
```

With plain peft (no pricer): `AutoPeftModelForCausalLM.from_pretrained(folder)` loads it where
`{base_id}` is reachable (a hub id, or a folder of that name); otherwise load the base yourself and
put the adapter on top. Prompts must be built as `pricer.json` says (question, price prefix, token
budget, chat template for instruct models):

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
from pricer.model.catalog import CATALOG, materialize  # or any local copy of the base

base = AutoModelForCausalLM.from_pretrained(materialize(CATALOG["{spec.name}"]))
model = PeftModel.from_pretrained(base, "{{this folder}}")
```
"""
