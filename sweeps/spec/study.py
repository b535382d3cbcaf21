"""A study file (``studies/*.yaml``) as frozen dataclasses: `load_study(path)` is the one door.

`load_study` checks the whole file and raises one `SpecError` listing every problem, each naming
its field: ``studies/x.yaml: search_space.learning_rate: low must be < high (got 0.001, 1e-05)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pricer.errors import SpecError

# Searched instead of `lora_alpha`: alpha = round(ratio * lora_r), so rank and scale vary apart.
ALPHA_RATIO = "lora_alpha_ratio"
SAMPLERS = ("tpe", "gp", "random", "grid")
STEP_PRUNERS = ("median", "hyperband", "successive_halving")
# a step pruner alone, the paired per-item test alone, or a step pruner and then the test
PRUNERS = (*STEP_PRUNERS, "wilcoxon", *(f"{p}+wilcoxon" for p in STEP_PRUNERS), "none")
# metric -> Optuna direction; every metric is on the validation items the trial evaluates.
METRICS = {"mae": "minimize", "rmsle": "minimize", "hit_rate": "maximize"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; learning rates are written that way, so read floats
    the YAML 1.2 way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$|^[-+]?(?:\d+\.\d*|\.\d+)$"),
    list("-+0123456789."),
)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataSpec:
    """Where the items come from and how they are curated (`pricer.data.dataset.build` options).

    Args:
        source: a curated or raw Amazon 2023 jsonl (relative paths are tried against the current
            folder, then the folder above the study file's), a built dataset folder, or a URL.
        fallback: used when `source` is a local path that does not exist (e.g. the ``hf://``
            Amazon 2023 metadata when the offline sample is absent).
        limit: read at most this many source lines.
        seed: the split hash.
        balance: at most this many items per whole-dollar price bucket.
    """

    source: str
    fallback: str | None = None
    limit: int | None = None
    seed: int = 42
    balance: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise SpecError("source: a path or URL is required")
        for name in ("limit", "balance"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SpecError(f"{name}: must be a whole number >= 1 (got {value!r})")
        if not isinstance(self.seed, int):
            raise SpecError(f"seed: must be a whole number (got {self.seed!r})")

    def resolve(self, study_path: Path | None = None) -> str:
        """The source to read: the first existing local candidate, else the fallback, else
        `source` unchanged (reading it then fails with a DataError naming it)."""
        if "://" in self.source:
            return self.source
        path = Path(self.source).expanduser()
        candidates = [path] if path.is_absolute() else [Path.cwd() / path]
        if study_path is not None and not path.is_absolute():
            candidates.append(Path(study_path).resolve().parent.parent / path)
        for candidate in candidates:
            if candidate.exists():
                return str(candidate.resolve())
        return self.fallback or self.source


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter.

    Args:
        name: the Optuna parameter name (the key in ``search_space``).
        target: the `TrainConfig` field it sets (``param:`` in YAML; default `name`), or
            ``lora_alpha_ratio``.
        kind: ``categorical``, ``int`` or ``float``.
        when: conditions on earlier parameters, ``((name, (allowed values...)), ...)``; the
            parameter is only suggested when all hold (e.g. a per-model batch size).
    """

    name: str
    target: str
    kind: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    when: tuple[tuple[str, tuple], ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "categorical":
            if not self.choices:
                raise SpecError("choices: must be a non-empty list")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise SpecError(f"choices: has duplicates ({list(self.choices)})")
            return
        if self.kind not in ("int", "float"):
            raise SpecError(f"type: must be categorical, int or float (got {self.kind!r})")
        if not (_is_number(self.low) and _is_number(self.high)):
            raise SpecError(f"low and high: both must be numbers (got {self.low!r}, {self.high!r})")
        if self.kind == "int" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise SpecError(f"low and high: must be whole numbers for type int (got {self.low}, {self.high})")
        if not self.low < self.high:
            raise SpecError(f"low must be < high (got {self.low:g}, {self.high:g})")
        if self.log and self.low <= 0:
            raise SpecError(f"log: needs low > 0 (got {self.low:g})")
        if self.step is not None:
            if self.log:
                raise SpecError("step: can't be combined with log")
            if not _is_number(self.step) or self.step <= 0:
                raise SpecError(f"step: must be a number > 0 (got {self.step!r})")

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


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = None

    def __post_init__(self) -> None:
        if self.type not in SAMPLERS:
            raise SpecError(f"type: must be one of {', '.join(SAMPLERS)} (got {self.type!r})")
        if self.n_startup_trials is not None and self.type not in ("tpe", "gp"):
            raise SpecError(f"n_startup_trials: only tpe and gp take it (sampler is {self.type})")


@dataclass(frozen=True)
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

    type: str = "median"
    eval_every: int = 0
    n_startup_trials: int = 2
    n_warmup_steps: int = 0
    min_resource: int = 1
    reduction_factor: int = 3
    p_threshold: float = 0.1

    def __post_init__(self) -> None:
        if not _is_number(self.p_threshold) or not 0 < self.p_threshold < 1:
            raise SpecError(f"p_threshold: must be a number in (0, 1) (got {self.p_threshold!r})")
        if self.type not in PRUNERS:
            raise SpecError(f"type: must be one of {', '.join(PRUNERS)} (got {self.type!r})")
        for name in ("eval_every", "n_startup_trials", "n_warmup_steps", "min_resource"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise SpecError(f"{name}: must be a whole number >= 0 (got {value!r})")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 2:
            raise SpecError(f"reduction_factor: must be a whole number >= 2 (got {self.reduction_factor!r})")
        if self.type != "none" and self.eval_every < 1:
            raise SpecError(f"eval_every: a {self.type} pruner needs validation reports; set eval_every >= 1 "
                            "(steps between evaluations) or type: none")


@dataclass(frozen=True)
class ObjectiveSpec:
    """What Optuna optimises: a validation metric, optionally with device-hours as a second
    objective (a Pareto front; no pruning then)."""

    metric: str = "mae"
    gpu_hours: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise SpecError(f"metric: must be one of {', '.join(METRICS)} (got {self.metric!r})")
        if not isinstance(self.gpu_hours, bool):
            raise SpecError(f"gpu_hours: must be true or false (got {self.gpu_hours!r})")

    @property
    def names(self) -> list[str]:
        return [self.metric, "gpu_hours"] if self.gpu_hours else [self.metric]

    @property
    def directions(self) -> list[str]:
        return [METRICS[self.metric]] + (["minimize"] if self.gpu_hours else [])

    @property
    def maximize(self) -> bool:
        return METRICS[self.metric] == "maximize"


@dataclass(frozen=True)
class FidelitySpec:
    """Search on part of the data: every trial trains on the same `train_fraction` of the train
    split, a nested seeded subset (`pricer.data.fraction`); validation and test are unchanged.

    Args:
        train_fraction: in (0, 1]; 1 is the whole train split.
        seed: which subset (the 0.1 subset of a seed lies inside its 0.25 subset).
    """

    train_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        from pricer.data.fraction import check_fraction

        check_fraction(self.train_fraction)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise SpecError(f"seed: must be a whole number (got {self.seed!r})")


@dataclass(frozen=True)
class RefitSpec:
    """Once the search is done, retrain its `top_k` finished configurations on `train_fraction`
    of the train split (`sweeps.run.refit`).

    Args:
        top_k: how many of the best finished trials (by the objective) to refit.
        train_fraction: in (0, 1]; the refit's share of the train split (1: all of it).
        overrides: training fields that differ from ``fixed`` for the refits (e.g. ``epochs``,
            ``eval_every``); written beside top_k in YAML: ``refit: {top_k: 2, epochs: 1}``.
    """

    top_k: int = 1
    train_fraction: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pricer.data.fraction import check_fraction

        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            raise SpecError(f"top_k: must be a whole number >= 1 (got {self.top_k!r})")
        check_fraction(self.train_fraction)
        for key in ("train_fraction", "fraction_seed", "model"):
            if key in self.overrides:
                raise SpecError(f"{key}: can't be overridden by a refit" if key != "train_fraction"
                                else "train_fraction: set it once, beside top_k")


@dataclass(frozen=True)
class StudySpec:
    """A whole study: what to search, how, and where its results live.

    Args:
        workdir: the study's folder (data build, trial outputs); default ``runs/<name>``.
        storage: Optuna storage URL; default ``sqlite:///<workdir>/optuna.db``.
        tracking_uri: MLflow URI; default ``sqlite:///<workdir>/mlflow.db``.
        models: extra catalog entries (`pricer.model.catalog.ModelSpec`) by name.
        enqueue: parameter sets (by search_space name) that run first, once per study.
        timeout: seconds after which a worker starts no new trial (each worker counts its own).
        trial_timeout: seconds after which a trial still running is failed (a hung trial).
        fidelity: the share of the train split every trial trains on.
        refit: the best trials retrained on all the data once the search is done (None: no refit).
    """

    name: str
    data: DataSpec
    search_space: dict[str, ParamSpec]
    fixed: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    enqueue: tuple[dict, ...] = ()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec(type="none")
    n_trials: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None
    objective: ObjectiveSpec = ObjectiveSpec()
    fidelity: FidelitySpec = FidelitySpec()
    refit: RefitSpec | None = None
    workdir: Path = Path("runs")
    storage: str = ""
    tracking_uri: str = ""
    path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(f"name: letters, digits, '_', '.', '-' only (got {self.name!r})")
        if self.n_trials is None and self.timeout is None:
            raise SpecError("n_trials: set n_trials and/or timeout, or the study never ends")
        if self.objective.gpu_hours and self.pruner.type != "none":
            raise SpecError("pruner: Optuna can't prune multi-objective studies; use type: none "
                            "with objective.gpu_hours")
        if self.sampler.type == "gp" and self.objective.gpu_hours:
            raise SpecError("sampler: gp is single-objective here; use tpe with objective.gpu_hours")
        if self.refit is not None and self.objective.gpu_hours:
            raise SpecError("refit: ranks trials by one objective; not with objective.gpu_hours")
        if self.refit is not None and self.n_trials is not None and self.refit.top_k > self.n_trials:
            raise SpecError(f"refit.top_k: {self.refit.top_k} is more than n_trials ({self.n_trials}); "
                            "lower top_k or raise n_trials")

    def with_overrides(self, *, storage: str | None = None, tracking_uri: str | None = None,
                       n_trials: int | None = None) -> StudySpec:
        """The same study with command-line overrides (None keeps the file's value)."""
        changes = {k: v for k, v in {"storage": storage, "tracking_uri": tracking_uri,
                                     "n_trials": n_trials}.items() if v is not None}
        return dataclasses.replace(self, **changes)


def _train_fields() -> set[str]:
    from pricer.train.loop import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _param(name: str, raw: object, earlier: list[str], fields: set[str]) -> ParamSpec:
    if not isinstance(raw, Mapping):
        raise SpecError("must be a mapping such as {choices: [...]} or {low: 1, high: 8}")
    known = {"type", "choices", "low", "high", "log", "step", "when", "param"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    target = raw.get("param", name)
    if target != ALPHA_RATIO and target not in fields:
        raise SpecError(f"{target!r} is not a training parameter; one of {', '.join(sorted(fields))} "
                        f"or {ALPHA_RATIO}")
    if target == "model" and name != "model":
        raise SpecError("the model is searched under the name 'model'")
    when = raw.get("when") or {}
    if not isinstance(when, Mapping):
        raise SpecError("when: must map an earlier parameter to a value or a list of values")
    for other in when:
        if other not in earlier:
            raise SpecError(f"when: {other!r} must be a search_space parameter listed above this one")
    conditions = tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in when.items())
    if "choices" in raw:
        if not isinstance(raw["choices"], list):
            raise SpecError("choices: must be a list")
        kind = raw.get("type", "categorical")
        if kind != "categorical":
            raise SpecError(f"type: choices make a categorical parameter (got type {kind!r})")
        return ParamSpec(name, target, "categorical", choices=tuple(raw["choices"]), when=conditions)
    low, high = raw.get("low"), raw.get("high")
    if low is None or high is None:
        raise SpecError("needs choices, or low and high")
    both_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
    kind = raw.get("type", "int" if both_int else "float")
    return ParamSpec(name, target, kind, low=low, high=high, log=bool(raw.get("log", False)),
                     step=raw.get("step"), when=conditions)


class _Problems:
    """Collects every problem of a file so the user fixes them in one go."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def run(self, where: str, make, *args, **kwargs):
        try:
            return make(*args, **kwargs)
        except SpecError as exc:
            self.items.append(f"{where}: {exc}" if where else str(exc))
        except (TypeError, ValueError) as exc:
            self.items.append(f"{where}: {exc}")
        return None


def _mapping(problems: _Problems, raw: Mapping, key: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        problems.items.append(f"{key}: must be a mapping")
        return {}
    return dict(value)


def _section(cls, raw: object, default_key: str):
    """A section given as a bare string (``sampler: random``) or as a mapping."""
    if isinstance(raw, str):
        raw = {default_key: raw}
    if not isinstance(raw, Mapping):
        raise SpecError(f"must be a string or a mapping (got {raw!r})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise SpecError(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(names))}")
    return cls(**raw)


def _duration(value: object) -> float | None:
    """Seconds, or a string such as ``90s``, ``30m``, ``2h``."""
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
        if not match:
            raise SpecError(f"must be seconds or a duration like 30m or 2h (got {value!r})")
        value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not _is_number(value) or value <= 0:
        raise SpecError(f"must be > 0 seconds (got {value!r})")
    return float(value)


def _check_configs(spec: StudySpec, problems: _Problems) -> None:
    """Build one TrainConfig per model choice so bad fixed values or models show up now."""
    from pricer.model import catalog
    from sweeps.spec.space import to_config

    models = spec.search_space["model"].choices if "model" in spec.search_space else (spec.fixed.get("model"),)
    where = "search_space.model" if "model" in spec.search_space else "fixed.model"
    unknown = [m for m in models if not catalog.known(m, spec.models)]
    if unknown:  # one problem for them all: the catalog is named once, not per model
        problems.items.append(f"{where}: {catalog.unknown_models(unknown)}")
    for model in models:
        if model not in unknown:
            problems.run(where, catalog.resolve, model, spec.models)
    chosen: dict[str, Any] = {}
    for param in spec.search_space.values():
        if param.active(chosen):
            chosen[param.name] = param.first
    problems.run("fixed", to_config, spec, chosen)


def load_study(path: str | Path) -> StudySpec:
    """Read and check a study file.

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
    problems = _Problems()
    known = {"name", "data", "search_space", "fixed", "models", "enqueue", "sampler", "pruner",
             "n_trials", "timeout", "trial_timeout", "objective", "storage", "tracking_uri", "workdir",
             "fidelity", "refit"}
    for key in sorted(set(raw) - known):
        problems.items.append(f"{key}: unknown section; expected one of {', '.join(sorted(known))}")

    fields = problems.run("", _train_fields) or set()
    data = None
    if raw.get("data") is None:
        problems.items.append("data: required, e.g. data: {source: items.jsonl}")
    else:
        data = problems.run("data", _section, DataSpec, raw["data"], "source")
    space: dict[str, ParamSpec] = {}
    for name, entry in _mapping(problems, raw, "search_space").items():
        param = problems.run(f"search_space.{name}", _param, str(name), entry, list(space), fields)
        if param is not None:
            space[str(name)] = param
    if not raw.get("search_space"):
        problems.items.append("search_space: must list at least one parameter")

    fixed = _mapping(problems, raw, "fixed")
    for key in fixed:
        if key not in fields:
            problems.items.append(f"fixed.{key}: not a training parameter; one of {', '.join(sorted(fields))}")
        elif key in {p.target for p in space.values()}:
            problems.items.append(f"fixed.{key}: also in search_space; keep it in one place")
    if "eval_every" in fixed and isinstance(raw.get("pruner"), Mapping) and "eval_every" in raw["pruner"]:
        problems.items.append("fixed.eval_every: also set as pruner.eval_every; keep it in one place")
    if "model" not in space and "model" not in fixed:
        problems.items.append("search_space.model: the model must be searched or fixed")

    models: dict[str, Any] = {}
    for name, entry in _mapping(problems, raw, "models").items():
        models[name] = problems.run(f"models.{name}", _model_spec, name, entry)

    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(e, Mapping) for e in enqueue):
        problems.items.append("enqueue: must be a list of mappings (parameter: value)")
        enqueue = []
    for i, trial in enumerate(enqueue):
        for key, value in trial.items():
            if key not in space:
                problems.items.append(f"enqueue[{i}].{key}: not a search_space parameter")
            elif not space[key].contains(value):
                problems.items.append(f"enqueue[{i}].{key}: {value!r} is outside the search space")

    sampler = problems.run("sampler", _section, SamplerSpec, raw.get("sampler", "tpe"), "type")
    pruner = problems.run("pruner", _section, PrunerSpec, raw.get("pruner", "none"), "type")
    objective = problems.run("objective", _section, ObjectiveSpec, raw.get("objective", "mae"), "metric")
    if sampler is not None and sampler.type == "grid":
        for param in space.values():
            problems.run(f"search_space.{param.name}", param.grid_values)
    fidelity = problems.run("fidelity", _section, FidelitySpec, raw.get("fidelity") or {}, "train_fraction")
    refit = problems.run("refit", _refit, raw["refit"], fields, space) if raw.get("refit") is not None else None
    if "train_fraction" in fixed or "fraction_seed" in fixed:
        problems.items.append("fixed.train_fraction: set the search's share of the data as "
                              "fidelity: {train_fraction: ...}")
    timeout = problems.run("timeout", _duration, raw.get("timeout"))
    trial_timeout = problems.run("trial_timeout", _duration, raw.get("trial_timeout"))
    n_trials = raw.get("n_trials")
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
        problems.items.append(f"n_trials: must be a whole number >= 1 (got {n_trials!r})")
    if problems.items:
        raise SpecError(f"{path}: " + "; ".join(problems.items))

    name = raw.get("name")
    workdir = Path(raw.get("workdir") or Path("runs") / str(name))
    spec = problems.run("", StudySpec, name=name, data=data, search_space=space, fixed=fixed, models=models,
                        enqueue=tuple(dict(e) for e in enqueue), sampler=sampler, pruner=pruner,
                        n_trials=n_trials, timeout=timeout, trial_timeout=trial_timeout, objective=objective,
                        fidelity=fidelity or FidelitySpec(), refit=refit, workdir=workdir,
                        storage=raw.get("storage") or f"sqlite:///{workdir / 'optuna.db'}",
                        tracking_uri=raw.get("tracking_uri") or f"sqlite:///{workdir / 'mlflow.db'}",
                        path=path)
    if spec is not None:
        _check_configs(spec, problems)
    if problems.items:
        raise SpecError(f"{path}: " + "; ".join(problems.items))
    return spec


def _refit(raw: object, fields: set[str], space: Mapping[str, ParamSpec]) -> RefitSpec:
    """``refit: {top_k: 2, train_fraction: 1.0, <training field>: value, ...}``."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"top_k": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(f"must be a mapping such as {{top_k: 2, train_fraction: 1.0}} (got {raw!r})")
    own = {k: raw[k] for k in ("top_k", "train_fraction") if k in raw}
    overrides = {k: v for k, v in raw.items() if k not in own}
    for key in overrides:
        if key not in fields:
            raise SpecError(f"{key}: neither top_k, train_fraction nor a training parameter; one of "
                            f"{', '.join(sorted(fields))}")
        if key in {p.target for p in space.values()}:
            raise SpecError(f"{key}: is searched; a refit keeps each winner's own value")
    return RefitSpec(**own, overrides=overrides)


def _model_spec(name: str, entry: object):
    from pricer.model.catalog import ModelSpec

    if not isinstance(entry, Mapping):
        raise SpecError("must be a mapping of catalog fields")
    return ModelSpec.from_dict({"name": name, **entry})


def locate(ref: str | Path, tracking_uri: str | None = None) -> tuple[str, str]:
    """(study name, MLflow tracking URI) from a study file or a bare study name.

    A name alone means the default store, ``sqlite:///runs/<name>/mlflow.db``.
    """
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        spec = load_study(path)
        return spec.name, tracking_uri or spec.tracking_uri
    name = str(ref)
    if not _NAME.match(name):
        raise SpecError(f"{name!r}: neither a study file nor a study name")
    return name, tracking_uri or f"sqlite:///{Path('runs') / name / 'mlflow.db'}"
