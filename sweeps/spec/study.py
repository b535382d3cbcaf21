"""A study file (``studies/*.yaml``) as one declared model, `StudySpec`: `load_study(path)` is the
one door, and `to_config` turns a trial's parameters into its `TrainConfig`.

`load_study` checks the whole file and raises one `SpecError` listing every problem, each naming
its field: ``studies/x.yaml: search_space.learning_rate: low must be < high (got 0.001, 1e-05)``.
Each section checks its own fields (`sweeps.spec.sections`); the field validators here check what
spans sections, each seeing the sections declared above it, so every problem is found in one pass.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from pricer.declared import DECLARED, Problems, one_line, validate
from pricer.errors import SpecError
from pricer.model import catalog
from pricer.model.catalog import ModelSpec
from pricer.train.config import TrainConfig
from sweeps.spec.sections import (
    ALPHA_RATIO,
    METRICS,
    PRUNERS,
    SAMPLERS,
    STEP_PRUNERS,
    DataSpec,
    FidelitySpec,
    ObjectiveSpec,
    ParamSpec,
    PrunerSpec,
    RefitSpec,
    SamplerSpec,
)
from sweeps.spec.urls import sqlite_url

__all__ = ["ALPHA_RATIO", "METRICS", "PRUNERS", "SAMPLERS", "STEP_PRUNERS", "DataSpec", "FidelitySpec",
           "ObjectiveSpec", "ParamSpec", "PrunerSpec", "RefitSpec", "SamplerSpec", "StudySpec", "load_study", "locate", "to_config"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; learning rates are written that way, so read floats
    the YAML 1.2 way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$|^[-+]?(?:\d+\.\d*|\.\d+)$"),
    list("-+0123456789."),
)


def _study_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"letters, digits, '_', '.', '-' only (got {value!r})")
    return value


def _duration(value: object) -> object:
    """Seconds, or a string such as ``90s``, ``30m``, ``2h``."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
        if not match:
            raise ValueError(f"must be seconds or a duration like 30m or 2h (got {value!r})")
        return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return value


def _named(entries: object, *, own_name: bool) -> object:
    """``{key: {...}}`` -> each entry with ``name: key``; `own_name`: an entry's own ``name`` wins."""
    if not isinstance(entries, Mapping):
        return entries
    return {k: ({"name": str(k), **v} if own_name else {**v, "name": str(k)}) if isinstance(v, Mapping) else v
            for k, v in entries.items()}


Seconds = Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_duration)]


@dataclass(frozen=True, config=DECLARED, kw_only=True)
class StudySpec:
    """A whole study: what to search, how, and where its results live.

    The field order is the order of the checks: a field's validator sees the fields above it
    (constraints go in ``Annotated``: pydantic checks fields with a ``Field(...)`` default first).

    Args:
        workdir: the study's folder (data build, trial outputs); default ``runs/<name>``.
        storage: Optuna storage URL; default ``sqlite:///<workdir>/optuna.db``.
        tracking_uri: MLflow URI; default ``sqlite:///<workdir>/mlflow.db``.
        models: extra catalog entries (`pricer.model.catalog.ModelSpec`) by name.
        fixed: `TrainConfig` fields every trial shares.
        enqueue: parameter sets (by search_space name) that run first, once per study.
        timeout: seconds after which a worker starts no new trial (each worker counts its own).
        trial_timeout: seconds after which a trial still running is failed (a hung trial).
        fidelity: the share of the train split every trial trains on.
        refit: the best trials retrained on all the data once the search is done (None: no refit).
        path: the study file (set by `load_study`).
    """

    _set_by_loader: ClassVar[tuple[str, ...]] = ("path",)

    name: Annotated[str, AfterValidator(_study_name)]
    data: Annotated[DataSpec, Field(examples=["{source: items.jsonl}"])]
    objective: ObjectiveSpec = ObjectiveSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec(type="none")
    models: dict[str, ModelSpec] = field(default_factory=dict)
    search_space: Annotated[dict[str, ParamSpec], Field(
        min_length=1, examples=["{model: {choices: [smollm2-135m-instruct, gemma-3-270m]}}"])]
    fixed: Annotated[dict[str, Any], Field(validate_default=True)] = field(default_factory=dict)
    enqueue: tuple[dict[str, Any], ...] = ()
    timeout: Seconds = None
    trial_timeout: Seconds = None
    n_trials: Annotated[int | None, Field(ge=1, validate_default=True)] = None
    fidelity: FidelitySpec = FidelitySpec()
    refit: RefitSpec | None = None
    workdir: Path | None = None
    storage: str = ""
    tracking_uri: str = ""
    path: Path | None = None

    @field_validator("search_space", "models", mode="before")
    @classmethod
    def _name_entries(cls, value: object, info: ValidationInfo) -> object:
        # a parameter is its key (Optuna's name); a model entry may name itself, as before
        return _named(value, own_name=info.field_name == "models")

    @field_validator("sampler")
    @classmethod
    def _sampler_fits_objective(cls, sampler: SamplerSpec, info: ValidationInfo) -> SamplerSpec:
        objective = info.data.get("objective")
        if sampler.type == "gp" and objective is not None and objective.gpu_hours:
            raise ValueError("gp is single-objective here; use tpe with objective.gpu_hours")
        return sampler

    @field_validator("pruner")
    @classmethod
    def _pruner_fits_objective(cls, pruner: PrunerSpec, info: ValidationInfo) -> PrunerSpec:
        objective = info.data.get("objective")
        if pruner.type != "none" and objective is not None and objective.gpu_hours:
            raise ValueError("Optuna can't prune multi-objective studies; use type: none with objective.gpu_hours")
        return pruner

    @field_validator("search_space")
    @classmethod
    def _conditions_and_grid(cls, space: dict[str, ParamSpec], info: ValidationInfo) -> dict[str, ParamSpec]:
        problems = Problems()
        sampler = info.data.get("sampler")
        for i, param in enumerate(space.values()):
            earlier = list(space)[:i]
            for other, _ in param.when:
                if other not in earlier:
                    problems.add((param.name, "when"), f"{other!r} must be a search_space parameter listed above "
                                                       "this one")
            if sampler is not None and sampler.type == "grid":
                try:
                    param.grid_values()
                except SpecError as exc:
                    problems.add((param.name,), str(exc))
        problems.check()
        return space

    @field_validator("fixed")
    @classmethod
    def _fixed_fields(cls, fixed: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problems = Problems()
        fields = sorted(TrainConfig.__pydantic_fields__)
        space, pruner = info.data.get("search_space"), info.data.get("pruner")
        searched = {p.target for p in space.values()} if space else set()
        for key in fixed:
            if key not in fields:
                problems.add((key,), f"not a training parameter; one of {', '.join(fields)}")
            elif key in searched:
                problems.add((key,), "also in search_space; keep it in one place")
        if "eval_every" in fixed and pruner is not None and (pruner.type != "none" or pruner.eval_every):
            problems.add(("eval_every",), "also set as pruner.eval_every; keep it in one place")
        for key in ("train_fraction", "fraction_seed"):
            if key in fixed:
                problems.add((key,), "set the search's share of the data as fidelity.train_fraction (and fidelity.seed)")
        if space is not None and "model" not in space and "model" not in fixed:
            problems.add(("model",), "the model must be searched (search_space.model) or fixed")
        problems.check()
        return fixed

    @field_validator("enqueue")
    @classmethod
    def _enqueued_in_space(cls, enqueue: tuple[dict, ...], info: ValidationInfo) -> tuple[dict, ...]:
        problems = Problems()
        space = info.data.get("search_space")
        # a bad entry leaves no checked space: then the names as written (`load_study`'s context)
        names = space if space is not None else (info.context or {}).get("raw", {}).get("search_space") or {}
        for i, trial in enumerate(enqueue if isinstance(names, Mapping) else ()):
            for key, value in trial.items():
                if key not in names:
                    problems.add((i, key), "not a search_space parameter")
                elif space is not None and not space[key].contains(value):
                    problems.add((i, key), f"{value!r} is outside the search space")
        problems.check()
        return enqueue

    @field_validator("n_trials")
    @classmethod
    def _ends(cls, n_trials: int | None, info: ValidationInfo) -> int | None:
        if n_trials is None and info.data.get("timeout") is None:
            raise ValueError("set n_trials and/or timeout, or the study never ends")
        return n_trials

    @field_validator("refit")
    @classmethod
    def _refit_fits_study(cls, refit: RefitSpec | None, info: ValidationInfo) -> RefitSpec | None:
        if refit is None:
            return refit
        problems = Problems()
        objective, n_trials, space = info.data.get("objective"), info.data.get("n_trials"), info.data.get("search_space")
        if objective is not None and objective.gpu_hours:
            problems.add((), "ranks trials by one objective; not with objective.gpu_hours")
        if n_trials is not None and refit.top_k > n_trials:
            problems.add(("top_k",), f"{refit.top_k} is more than n_trials ({n_trials}); lower top_k or raise n_trials")
        searched = {p.target for p in space.values()} if space else set()
        for key in refit.overrides:
            if key in searched:
                problems.add((key,), "is searched; a refit keeps each winner's own value")
        problems.check()
        return refit

    @model_validator(mode="after")
    def _models_and_configs(self, info: ValidationInfo) -> StudySpec:
        """Once every section is sound: the models exist and each builds a `TrainConfig`. A hub id
        is checked against the hub (a download of its config) unless the loader says not to
        fetch: readers of a study's results never download."""
        fetch = (info.context or {}).get("fetch", True)
        problems = Problems()
        where = ("search_space", "model") if "model" in self.search_space else ("fixed", "model")
        models = self.search_space["model"].choices if "model" in self.search_space else (self.fixed["model"],)
        unknown = [m for m in models if not catalog.known(m, self.models)]
        if unknown:  # one problem for them all: the catalog is named once, not per model
            problems.add(where, catalog.unknown_models(unknown))
        for model in models:
            local = model in self.models or model in catalog.CATALOG or not catalog.is_hub_id(model)
            if model not in unknown and (fetch or local):
                try:
                    catalog.resolve(model, self.models)
                except SpecError as exc:
                    problems.add(where, str(exc))
        chosen: dict[str, Any] = {}
        for param in self.search_space.values():
            if param.active(chosen):
                chosen[param.name] = param.first
        try:
            to_config(self, chosen)
        except SpecError as exc:
            problems.add(("fixed",), str(exc))
        problems.check()
        if self.workdir is None:
            object.__setattr__(self, "workdir", Path("runs") / self.name)
        for name, file in (("storage", "optuna.db"), ("tracking_uri", "mlflow.db")):
            if not getattr(self, name):
                object.__setattr__(self, name, sqlite_url(self.workdir / file))
        return self

    def with_overrides(self, *, storage: str | None = None, tracking_uri: str | None = None,
                       n_trials: int | None = None) -> StudySpec:
        """The same study with command-line overrides (None keeps the file's value).

        Raises:
            SpecError: an override the study can't take, naming it.
        """
        changes = {k: v for k, v in {"storage": storage, "tracking_uri": tracking_uri,
                                     "n_trials": n_trials}.items() if v is not None}
        try:
            return dataclasses.replace(self, **changes)
        except ValidationError as exc:
            raise SpecError(one_line(exc, f"{self.path or self.name} with command-line flags", StudySpec)) from None


def to_config(spec: StudySpec, params: Mapping[str, Any]) -> TrainConfig:
    """The trial's `TrainConfig`: the study's fixed values, its share of the train split
    (``fidelity``), the evaluation interval its pruner needs, then the suggested parameters
    (``lora_alpha_ratio`` becomes ``lora_alpha``).

    Raises:
        SpecError: a combination TrainConfig rejects, naming the field.
    """
    values: dict[str, Any] = dict(spec.fixed)
    if spec.fidelity.train_fraction < 1:
        values["train_fraction"] = spec.fidelity.train_fraction
        values["fraction_seed"] = spec.fidelity.seed
    if spec.pruner.type != "none" or spec.pruner.eval_every:
        values["eval_every"] = spec.pruner.eval_every
    ratio = None
    for name, value in params.items():
        target = spec.search_space[name].target
        if target == ALPHA_RATIO:
            ratio = value
        else:
            values[target] = value
    if ratio is not None:
        rank = values.get("lora_r", TrainConfig.__pydantic_fields__["lora_r"].default)
        values["lora_alpha"] = max(1, round(ratio * rank))
    return TrainConfig.from_dict(values)


def load_study(path: str | Path, *, fetch: bool = True) -> StudySpec:
    """Read and check a study file.

    Args:
        fetch: check hub-id models against the hub (a download of their configs); readers of a
            study's results (`locate`) pass False.

    Raises:
        SpecError: every problem in the file, one message (``<file>: <field>: <problem>; ...``).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such study file")
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise SpecError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: must be a YAML mapping with at least name, data, search_space")
    return validate(StudySpec, {**raw, "path": path}, str(path), context={"raw": raw, "fetch": fetch})


# where the README's scale-out, a fleet's workers and a Job keep the URLs: out of argv (``ps``
# shows argv to everyone on the machine), so a password in them stays off the command line
STORAGE_ENV, TRACKING_ENV = "PRICER_STORAGE", "PRICER_TRACKING_URI"


def store_urls(storage: str | None = None, tracking_uri: str | None = None) -> tuple[str | None, str | None]:
    """(Optuna storage, MLflow tracking URI) a command was given, else ``PRICER_STORAGE`` /
    ``PRICER_TRACKING_URI``, else None (the study file's, else the defaults). Every verb that
    opens a study's stores takes them from here."""
    return (storage or os.environ.get(STORAGE_ENV) or None, tracking_uri or os.environ.get(TRACKING_ENV) or None)


def locate(ref: str | Path, tracking_uri: str | None = None) -> tuple[str, str]:
    """(study name, MLflow tracking URI) from a study file or a bare study name.

    The URI is `tracking_uri`, else ``PRICER_TRACKING_URI``, else the study file's; a name alone
    means the default store, ``sqlite:///runs/<name>/mlflow.db``.
    """
    _, tracking_uri = store_urls(tracking_uri=tracking_uri)
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        spec = load_study(path, fetch=False)  # a reader never downloads
        return spec.name, tracking_uri or spec.tracking_uri
    name = str(ref)
    if not _NAME.match(name):
        raise SpecError(f"{name!r}: neither a study file nor a study name")
    return name, tracking_uri or sqlite_url(Path("runs") / name / "mlflow.db")
