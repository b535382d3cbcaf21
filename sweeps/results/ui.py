"""`pricer ui`: MLflow's own UI server on a study's tracking store.

`mlflow server` takes ~15 s to answer and forks workers that outlive a killed parent, so it runs
in its own process group (stopped as a group), with one worker and the job runner switched off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pricer.errors import SpecError
from sweeps.run.stop import stop_with_parent
from sweeps.spec.urls import sqlite_path
from sweeps.track.redact import redact

LOOPBACK = ("127.0.0.1", "localhost", "::1")
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"


# MLflow 3's UI opens an experiment on its GenAI "Overview" page with the trials folded under the
# study's parent run and no metric column. A shared view (an experiment tag the runs page reads
# when the URL names its key) lists trials and baselines flat, sorted by the objective, with the
# metric columns shown; ``workflowType`` switches the UI to its model-training menus.
SHARED_VIEW = "mlflow.sharedViewState."
VIEW_KEY = "pricer-leaderboard"
METRICS = ("val_mae", "val_rmsle", "val_hit_rate", "test_mae", "minutes")
PARAMS = ("model", "lora_r", "learning_rate")


def runs_view(tracking_uri: str, study: str) -> str:
    """Store the study's runs-table view in its experiment and return the page's URL path.

    Raises:
        SpecError: the study was never launched on this store.
    """
    from sweeps.results.leaderboard import objective_of
    from sweeps.track.tracking import EXPERIMENT_KIND, MODEL_TRAINING, ROLE, STATE, MlflowTracker

    tracker = MlflowTracker(tracking_uri, study, create=False)
    metric, maximize = objective_of(tracker, study)
    view = {"searchFilter": f"tags.`{ROLE}` != 'study'", "orderByKey": f"metrics.`val_{metric}`",
            "orderByAsc": not maximize,
            "selectedColumns": [*(f"metrics.`{m}`" for m in METRICS), *(f"params.`{p}`" for p in PARAMS),
                                f"tags.`{STATE}`"]}
    experiment = tracker.experiment_id
    tracker.client.set_experiment_tag(experiment, SHARED_VIEW + VIEW_KEY, json.dumps(view))
    tracker.client.set_experiment_tag(experiment, EXPERIMENT_KIND, MODEL_TRAINING)  # studies made before it
    return f"#/experiments/{experiment}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def server_command(host: str, port: int, artifacts: Path | None = None) -> list[str]:
    """The server's argv. The store's URI is not in it: any local user reads a process's argv
    (``ps``, ``/proc/*/cmdline``), and the URI may hold a password; `start` hands it over in
    ``MLFLOW_BACKEND_STORE_URI``, which ``mlflow server`` reads for ``--backend-store-uri``."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        # where runs logged through this server (not the study's own) put their artifacts
        cmd += ["--artifacts-destination", str(artifacts)]
    return cmd


def server_url(host: str, port: int) -> str:
    """The server's address for a browser: an IPv6 host (``::1``) goes in brackets, or the colons
    of the address read as a port."""
    import ipaddress

    try:
        bracketed = ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        bracketed = False
    return f"http://[{host.strip('[]')}]:{port}" if bracketed else f"http://{host}:{port}"


def start(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000,
          artifacts: Path | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start the server in its own process group; `stop` ends the whole group."""
    if tracking_uri.startswith(("http://", "https://")):
        raise SpecError(f"tracking_uri {redact(tracking_uri)} is already a server: open it in a browser")
    if (db := sqlite_path(tracking_uri)) is not None and not db.is_file():
        raise SpecError(f"no MLflow store at {redact(tracking_uri)}: launch the study first, "
                        "or pass the --tracking-uri it was launched with")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", BACKEND_ENV: tracking_uri}
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 -- the child owns it
    try:
        return subprocess.Popen(server_command(host, port, artifacts), env=env,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=stop_with_parent)  # no server left behind by a killed pricer ui
    finally:
        if log is not None:
            output.close()


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120.0) -> None:
    """Block until ``url/health`` answers.

    Raises:
        SpecError: the server exited (port taken?) or did not answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SpecError(f"mlflow server exited with code {proc.returncode} (is the port in use? try --port)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SpecError(f"mlflow server did not answer at {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """End the server and every worker it forked."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the leader
    except ProcessLookupError:
        pass
    proc.wait()
