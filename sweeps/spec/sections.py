"""A study file's sections as declared models: ``data``, one ``search_space`` entry, ``sampler``,
``pruner``, ``objective``. Each checks its own fields; `sweeps.spec.study.StudySpec` holds them
and checks what spans sections.

A new section is one class here (frozen, ``config=DECLARED``) and one field on `StudySpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from pricer.declared import DECLARED, Problems
from pricer.errors import SpecError
from pricer.train.config import TrainConfig

# Searched instead of `lora_alpha`: alpha = round(ratio * lora_r), so rank and scale vary apart.
ALPHA_RATIO = "lora_alpha_ratio"
SAMPLERS = ("tpe", "gp", "random", "grid")
STEP_PRUNERS = ("median", "hyperband", "successive_halving")
# a step pruner alone, the paired per-item test alone, or a step pruner and then the test
PRUNERS = (*STEP_PRUNERS, "wilcoxon", *(f"{p}+wilcoxon" for p in STEP_PRUNERS), "none")
# metric -> Optuna direction; every metric is on the validation items the trial evaluates.
METRICS = {"mae": "minimize", "rmsle": "minimize", "hit_rate": "maximize"}
METRIC_NAMES = tuple(METRICS)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bare(key: str):
    """A section written as a bare string (``sampler: random``) means ``{key: value}``."""
    def read(cls, data: object) -> object:
        return {key: data} if isinstance(data, str) else data
    return model_validator(mode="before")(classmethod(read))


@dataclass(frozen=True, config=DECLARED)
class DataSpec:
    """Where the items come from and how they are curated (`pricer.data.dataset.build` options).

    Args:
        source: a curated or raw Amazon 2023 jsonl (relative paths are tried against the current
            folder, then the folder above the study file's), a built dataset folder, or a URL.
        sources: several of them (files, URLs or ``amazon2023:<Category>``), read in order;
            instead of `source`.
        fallback: used when `source` is a local path that does not exist (e.g. the ``hf://``
            Amazon 2023 metadata when the offline sample is absent).
        limit: read at most this many lines of each source.
        seed: the split hash.
        balance: at most this many items per whole-dollar price bucket.
        sampling: the recipe's sampling, ``{cap, category_weights, keep_all_from}``
            (`pricer.data.sampling.Sampling`); instead of `balance`.
        workers: curating processes (default: the machine's cores).
    """

    source: Annotated[str, Field(min_length=1)] | None = None
    sources: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    fallback: str | None = None
    limit: Annotated[int, Field(ge=1)] | None = None
    seed: int = 42
    balance: Annotated[int, Field(ge=1)] | None = None
    sampling: Any = None
    workers: Annotated[int, Field(ge=1)] | None = None

    _from_string = _bare("source")

    @model_validator(mode="after")
    def _one_form(self) -> DataSpec:
        from pricer.data.sampling import Sampling
        from pricer.data.sources import SHORTHAND, expand
        from pricer.errors import DataError

        problems = Problems()
        if self.source is not None and self.sources:
            problems.add(("sources",), "give source or sources, not both (source is the one-file form of sources)")
        elif self.sources:
            if len(set(self.sources)) != len(self.sources):
                problems.add(("sources",), "each source once (a repeated one reads its items twice)")
            if self.fallback is not None:
                problems.add(("fallback",), "goes with source (one file), not sources")
        elif self.source is None:
            problems.add(("source",), "a path or URL is required (or sources: a list of them)")
        for n, source in enumerate(self.sources or ((self.source,) if self.source else ())):
            if source.startswith(SHORTHAND):
                try:
                    expand(source)
                except DataError as exc:
                    problems.add(("sources", n) if self.sources else ("source",), str(exc))
        if self.sampling is not None:
            if self.balance is not None:
                problems.add(("sampling",), "give balance or sampling, not both (a uniform or a category-weighted "
                                            "per-dollar cap)")
            elif isinstance(self.sampling, Mapping):
                unknown = sorted(set(self.sampling) - {"cap", "category_weights", "keep_all_from"})
                if unknown:
                    problems.add(("sampling",), f"unknown key(s) {', '.join(map(str, unknown))}; expected cap, "
                                                "category_weights, keep_all_from")
                elif "cap" not in self.sampling:
                    problems.add(("sampling", "cap"), "required (items per dollar bucket kept as they are; "
                                                      "the recipe: 1200)")
                else:
                    try:
                        object.__setattr__(self, "sampling", Sampling(**self.sampling))
                    except SpecError as exc:
                        problems.add(("sampling",), str(exc).removeprefix("sampling."))
            elif not isinstance(self.sampling, Sampling):
                problems.add(("sampling",), f"a mapping of cap, category_weights, keep_all_from (got {self.sampling!r})")
        problems.check()
        return self

    def _resolve_one(self, source: str, study_path: Path | None) -> str | None:
        if "://" in source or source.startswith("amazon2023:"):
            return source
        path = Path(source).expanduser()
        candidates = [path] if path.is_absolute() else [Path.cwd() / path]
        if study_path is not None and not path.is_absolute():
            candidates.append(Path(study_path).resolve().parent.parent / path)
        for candidate in candidates:
            if candidate.exists():
                return str(candidate.resolve())
        return None

    def resolve(self, study_path: Path | None = None) -> str:
        """The source to read (the first of `sources`): the first existing local candidate, else
        the fallback, else `source` unchanged (reading it then fails with a DataError naming it)."""
        return self.resolve_all(study_path)[0]

    def resolve_all(self, study_path: Path | None = None) -> list[str]:
        """Every source to read, in order; a missing local one stays as written (the build then
        fails naming it), a missing `source` becomes its fallback when it has one."""
        if self.sources:
            return [self._resolve_one(s, study_path) or s for s in self.sources]
        assert self.source is not None
        return [self._resolve_one(self.source, study_path) or self.fallback or self.source]


@dataclass(frozen=True, config=DECLARED)
class ParamSpec:
    """One searched parameter (a ``search_space`` entry).

    Args:
        name: the Optuna parameter name (the entry's key in ``search_space``).
        target: the `TrainConfig` field it sets (``param:`` in YAML; default `name`), or
            ``lora_alpha_ratio``.
        kind: ``categorical``, ``int`` or ``float`` (``type:`` in YAML; default: categorical with
            choices, int when low and high are whole numbers, else float).
        when: conditions on earlier parameters, ``((name, (allowed values...)), ...)``; the
            parameter is only suggested when all hold (e.g. a per-model batch size). YAML maps a
            name to a value or a list of values.
    """

    _set_by_loader: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    target: str | None = Field(None, alias="param")
    kind: Literal["categorical", "int", "float"] | None = Field(None, alias="type")
    choices: tuple[Any, ...] = ()
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @field_validator("when", mode="before")
    @classmethod
    def _conditions(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, Mapping):
            return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else (v,)) for k, v in value.items())
        if isinstance(value, tuple):
            return value
        raise ValueError("must map an earlier parameter to a value or a list of values")

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.target is None:
            object.__setattr__(self, "target", self.name)
        fields = TrainConfig.__pydantic_fields__
        if self.target != ALPHA_RATIO and self.target not in fields:
            raise ValueError(f"{self.target!r} is not a training parameter; one of {', '.join(sorted(fields))} "
                             f"or {ALPHA_RATIO}")
        if self.target == "model" and self.name != "model":
            raise ValueError("the model is searched under the name 'model'")
        if self.choices or self.kind == "categorical":
            if self.kind not in (None, "categorical"):
                raise ValueError(f"type: choices make a categorical parameter (got type {self.kind!r})")
            object.__setattr__(self, "kind", "categorical")
            if not self.choices:
                raise ValueError("choices: must be a non-empty list")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError(f"choices: has duplicates ({list(self.choices)})")
            return self
        low, high = self.low, self.high
        if low is None or high is None:
            raise ValueError("needs choices, or low and high")
        if self.kind is None:
            object.__setattr__(self, "kind", "int" if isinstance(low, int) and isinstance(high, int) else "float")
        if not (_is_number(low) and _is_number(high)):
            raise ValueError(f"low and high: both must be numbers (got {low!r}, {high!r})")
        if self.kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
            raise ValueError(f"low and high: must be whole numbers for type int (got {low}, {high})")
        if not low < high:
            raise ValueError(f"low must be < high (got {low:g}, {high:g})")
        if self.log and low <= 0:
            raise ValueError(f"log: needs low > 0 (got {low:g})")
        if self.step is not None:
            if self.log:
                raise ValueError("step: can't be combined with log")
            if not _is_number(self.step) or self.step <= 0:
                raise ValueError(f"step: must be a number > 0 (got {self.step!r})")
        return self

    def contains(self, value: object) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return _is_number(value) and self.low <= value <= self.high and (
            self.kind == "float" or float(value).is_integer())

    def active(self, chosen: Mapping[str, object]) -> bool:
        """Whether this parameter is suggested, given the values chosen before it."""
        return all(name in chosen and chosen[name] in allowed for name, allowed in self.when)

    def grid_values(self) -> list:
        """Every value a grid sampler should try (categorical, or int/float with a step)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None:
            raise SpecError("a grid sampler needs choices, or low/high with a step")
        values, value = [], self.low
        while value <= self.high + 1e-12:
            values.append(int(value) if self.kind == "int" else round(value, 12))
            value += self.step
        return values

    @property
    def first(self) -> object:
        """A representative value (checks that the fixed part plus this builds a config)."""
        return self.choices[0] if self.kind == "categorical" else self.low


@dataclass(frozen=True, config=DECLARED)
class SamplerSpec:
    """Optuna's sampler: its type, an optional seed, and TPE's/GP's random start-up trials."""

    type: Literal[SAMPLERS] = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = Field(None, ge=0)

    _from_string = _bare("type")

    @model_validator(mode="after")
    def _startup_only_for_model_based(self) -> SamplerSpec:
        if self.n_startup_trials is not None and self.type not in ("tpe", "gp"):
            problems = Problems()
            problems.add(("n_startup_trials",), f"only tpe and gp take it (sampler is {self.type})")
            problems.check()
        return self


@dataclass(frozen=True, config=DECLARED)
class PrunerSpec:
    """How hopeless trials stop early, on the validation price error reported every
    `eval_every` steps (never on the eval loss).

    Args:
        n_startup_trials: median: trials that run to the end before any is pruned.
        n_warmup_steps: median: steps before a trial can be pruned.
        min_resource, reduction_factor: hyperband's and successive halving's, in steps: a
            configuration is first ranked after `min_resource` steps, and only the best
            1/`reduction_factor` go on to the next rung (multi-fidelity over steps).
        p_threshold: wilcoxon: prune when the paired test on the per-item validation errors says
            the trial is worse than the best trial at the same step with p below this.
    """

    type: Literal[PRUNERS] = "median"
    eval_every: int = Field(0, ge=0)
    n_startup_trials: int = Field(2, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    min_resource: int = Field(1, ge=0)
    reduction_factor: int = Field(3, ge=2)
    p_threshold: float = Field(0.1, gt=0, lt=1)

    _from_string = _bare("type")

    @model_validator(mode="after")
    def _reports_to_prune_on(self) -> PrunerSpec:
        if self.type != "none" and self.eval_every < 1:
            problems = Problems()
            problems.add(("eval_every",), f"a {self.type} pruner needs validation reports; set eval_every >= 1 "
                                          "(steps between evaluations) or type: none")
            problems.check()
        return self


@dataclass(frozen=True, config=DECLARED)
class ObjectiveSpec:
    """What Optuna optimises: a validation metric, optionally with device-hours as a second
    objective (a Pareto front; no pruning then)."""

    metric: Literal[METRIC_NAMES] = "mae"
    gpu_hours: bool = False

    _from_string = _bare("metric")

    @property
    def names(self) -> list[str]:
        return [self.metric, "gpu_hours"] if self.gpu_hours else [self.metric]

    @property
    def directions(self) -> list[str]:
        return [METRICS[self.metric]] + (["minimize"] if self.gpu_hours else [])

    @property
    def maximize(self) -> bool:
        return METRICS[self.metric] == "maximize"


@dataclass(frozen=True, config=DECLARED)
class FidelitySpec:
    """Search on part of the data: every trial trains on the same `train_fraction` of the train
    split, a nested seeded subset (`pricer.data.fraction`); validation and test are unchanged.

    Args:
        train_fraction: in (0, 1]; 1 is the whole train split.
        seed: which subset (the 0.1 subset of a seed lies inside its 0.25 subset).
    """

    train_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    seed: int = 0

    _from_number = model_validator(mode="before")(classmethod(
        lambda cls, data: {"train_fraction": data} if isinstance(data, (int, float)) and not isinstance(data, bool)
        else data))


@dataclass(frozen=True, config=DECLARED)
class RefitSpec:
    """Once the search is done, retrain its `top_k` finished configurations on `train_fraction`
    of the train split (`sweeps.run.refit`).

    Args:
        top_k: how many of the best finished trials (by the objective) to refit.
        train_fraction: in (0, 1]; the refit's share of the train split (1: all of it).
        overrides: training fields that differ from ``fixed`` for the refits (e.g. ``epochs``,
            ``eval_every``); written beside top_k in YAML: ``refit: {top_k: 2, epochs: 1}``.
    """

    top_k: Annotated[int, Field(ge=1)] = 1
    train_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_overrides(cls, data: object) -> object:
        """``refit: 2`` is ``{top_k: 2}``; keys beside top_k and train_fraction are overrides."""
        if isinstance(data, int) and not isinstance(data, bool):
            return {"top_k": data}
        if not isinstance(data, Mapping) or "overrides" in data:
            return data
        own = {k: data[k] for k in ("top_k", "train_fraction") if k in data}
        return {**own, "overrides": {k: v for k, v in data.items() if k not in own}}

    @model_validator(mode="after")
    def _training_fields(self) -> RefitSpec:
        # named beside top_k, as the file writes them (refit.epochs, not refit.overrides.epochs)
        problems = Problems()
        fields = sorted(TrainConfig.__pydantic_fields__)
        for key in self.overrides:
            if key in ("train_fraction", "fraction_seed", "model"):
                problems.add((key,), "set it once, beside top_k" if key == "train_fraction"
                             else "can't be overridden by a refit")
            elif key not in fields:
                problems.add((key,), f"neither top_k, train_fraction nor a training parameter; one of "
                                     f"{', '.join(fields)}")
        problems.check()
        return self
