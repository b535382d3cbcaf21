"""Refit: the search's best configurations retrained on all the data once the search is done.

A study that searches on a fraction of the train split (``fidelity``) ranks configurations
cheaply; ``refit: {top_k: K}`` then spends the full data on its K best only.

Each refit is a trial of a sibling Optuna study, ``<name>-refit``, in the study's own storage,
enqueued with a winner's parameters and the number of the trial it refits in its user attrs.
Being an Optuna trial run by the same `Objective`, a refit gets what a search trial has without
new code: its own process, a heartbeat, a retry with the same parameters and user attrs when its
worker dies (`RetryHeartbeatStaleTrialCallback` copies both), and a resume from the checkpoint its
failed try left. A record in the study's user attrs would have needed all of that written again.
Its MLflow run sits beside the search's trials under the same parent run, tagged
``pricer.role=refit`` and ``pricer.refit_of=<trial>``; the leaderboard shows it and `pricer
export` prefers it.

Every worker that leaves the search loop with the search done runs refits until none is left
(the last one out finishes them; a worker that joins later picks up any not yet done), and
`pricer refit STUDY` does the same by hand, refitting any new top-K trial not refitted yet.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import SpecError, TrialFailed
from sweeps.run.objective import Objective
from sweeps.run.presence import Presence, end_parent_run
from sweeps.run.studies import (
    WAIT_POLL_S,
    FailStaleRun,
    heartbeat_settings,
    open_storage,
    optuna_experimental,
)
from sweeps.spec.study import FidelitySpec, PrunerSpec, SamplerSpec, StudySpec
from sweeps.track.tracking import REFIT_OF, ROLE, STATE, TRIAL, MlflowTracker

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

REFIT_ATTR = "refit_of"  # the search trial a refit retrains (`REFIT_OF`), in its Optuna user attrs
READY = "refits_enqueued"  # the refit study's user attr, set once its trials are queued


def refit_spec(spec: StudySpec) -> StudySpec:
    """The sibling study's spec: the refit's share of the data and overrides, no pruning, no
    sampling of its own (every trial is enqueued), its folders under ``<workdir>/refit``, and
    `trial_timeout` scaled by the data it trains on."""
    if spec.refit is None:
        raise SpecError(f"{spec.path or spec.name}: refit: the study has no refit section; add e.g. "
                        "refit: {top_k: 2, train_fraction: 1.0}")
    r = spec.refit
    # a refit trains on train_fraction / fidelity as many items: a hung-trial limit scales with it
    scale = r.train_fraction / spec.fidelity.train_fraction
    return dataclasses.replace(
        spec, name=f"{spec.name}-refit", fixed={**spec.fixed, **r.overrides},
        trial_timeout=spec.trial_timeout * max(1.0, scale) if spec.trial_timeout else None,
        fidelity=FidelitySpec(train_fraction=r.train_fraction, seed=spec.fidelity.seed),
        pruner=PrunerSpec(type="none"), sampler=SamplerSpec(type="random"), enqueue=(), n_trials=r.top_k,
        timeout=None, refit=None, workdir=Path(spec.workdir) / "refit")


def winners(spec: StudySpec, search: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The search's `refit.top_k` best finished trials, best first.

    Raises:
        SpecError: fewer finished trials than ``top_k``.
    """
    from optuna.trial import TrialState

    k = spec.refit.top_k if spec.refit else 1
    done = search.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < k:
        raise SpecError(f"{spec.path or spec.name}: refit.top_k: {k} but study {spec.name} has only "
                        f"{len(done)} finished trial(s); lower top_k or run more trials")
    return sorted(done, key=lambda t: -t.value if spec.objective.maximize else t.value)[:k]


class RefitObjective(Objective):
    """`Objective` for a refit trial: the same trial, another MLflow run name and role."""

    def _start_run(self, trial: optuna.Trial) -> str:
        of = trial.user_attrs.get(REFIT_ATTR)
        if of is None:  # a worker asked for a trial just after another took the last refit
            raise TrialFailed("no refit left to run")
        return self.tracker.start_run(f"refit-of-{of}", parent_id=self.parent_id,
                                      tags={ROLE: "refit", TRIAL: str(of), REFIT_OF: str(of), STATE: "RUNNING",
                                            "pricer.refit_trial": str(trial.number),
                                            "pricer.optuna_trial_id": str(trial._trial_id)})


def open_refit_study(spec: StudySpec, search: optuna.Study, tracker: MlflowTracker, *,
                     enqueue_new: bool = False) -> optuna.Study:
    """The ``<name>-refit`` study with its refits queued.

    The worker that creates the study (creation is atomic in the storage) queues the winners;
    others wait for its ``refits_enqueued`` mark (and queue them themselves if it never comes,
    the creator having died). `enqueue_new` also queues top-K trials not refitted yet (a search
    that went on after its refits).
    """
    import optuna

    rspec = refit_spec(spec)
    storage = open_storage(spec.storage, FailStaleRun(tracker))
    sampler, pruner = optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    try:
        study = optuna.create_study(study_name=rspec.name, storage=storage, sampler=sampler, pruner=pruner,
                                    directions=spec.objective.directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=rspec.name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
    if not created and not enqueue_new:
        deadline = time.monotonic() + heartbeat_settings()[1]
        while READY not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(min(WAIT_POLL_S, 1.0))
        if READY in study.user_attrs:
            return study
    queued = {t.user_attrs.get(REFIT_ATTR) for t in study.get_trials(deepcopy=False)}
    best = winners(spec, search)
    for trial in best:
        if trial.number not in queued:
            study.enqueue_trial(dict(trial.params), user_attrs={REFIT_ATTR: trial.number})
    study.set_user_attr(READY, sorted({*queued - {None}, *(t.number for t in best)}))
    return study


def run_refits(spec: StudySpec, search: optuna.Study, data: str, tracker: MlflowTracker, parent_id: str, *,
               enqueue_new: bool = False, progress: bool = False) -> optuna.Study:
    """Run queued refits until none is waiting or running (others' included: a refit whose worker
    died goes stale, is re-queued and runs here, resuming from its checkpoint).

    Returns:
        The refit study.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    rspec = refit_spec(spec)
    study = open_refit_study(spec, search, tracker, enqueue_new=enqueue_new)
    objective = RefitObjective(rspec, data, tracker, parent_id, progress=progress)
    said = False
    while True:
        with optuna_experimental():
            fail_stale_trials(study)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            objective.backoff.wait()
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return study
        if not said:
            log.warning("study %s: waiting for refit(s) %s run by other workers", spec.name,
                        ", ".join(str(t.user_attrs.get(REFIT_ATTR)) for t in running))
            said = True
        time.sleep(WAIT_POLL_S)


def refit(spec: StudySpec, *, progress: bool = True) -> optuna.Study:
    """`pricer refit STUDY`: refit the study's current top K (those not refitted yet), after or
    beside its search. The data is the search's (built once per data section).

    Returns:
        The refit study.
    """
    from sweeps.run.studies import close_storage, open_study, prepare_data
    from sweeps.track.preflight import check_stores

    refit_spec(spec)  # no refit section: one line, before anything is opened
    check_stores(spec.storage, spec.tracking_uri)
    data = prepare_data(spec, progress=progress)
    tracker = MlflowTracker(spec.tracking_uri, spec.name)
    search = open_study(spec, tracker)
    try:
        winners(spec, search)  # too few finished trials: one line, before the parent run is touched
        parent_id, _ = tracker.study_run(spec.name, {"pricer.objective": spec.objective.metric,
                                                     "pricer.direction": spec.objective.directions[0]})
        # on the workers' roll like a worker: the parent run is ended by the last one out, not here
        # while others may still be searching
        presence = Presence(search, *heartbeat_settings())
        try:
            refits = run_refits(spec, search, str(data), tracker, parent_id, enqueue_new=True, progress=progress)
        finally:
            if presence.leave():
                end_parent_run(tracker, parent_id, search)
    finally:
        close_storage(search)
    close_storage(refits)  # the caller reads its trials, which were loaded: no connection needed
    return refits
