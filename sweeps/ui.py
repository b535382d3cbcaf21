"""`pricer ui`: MLflow's own UI server on a study's tracking store.

`mlflow server` takes ~15 s to answer and forks workers that outlive a killed parent, so it runs
in its own process group (stopped as a group), with one worker and the job runner switched off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pricer.errors import SpecError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def experiment_id(tracking_uri: str, study: str) -> str:
    """The study's MLflow experiment (SpecError if the study was never launched there)."""
    from sweeps.tracking import MlflowTracker

    return MlflowTracker(tracking_uri, study, create=False).experiment_id


def server_command(tracking_uri: str, host: str, port: int, artifacts: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        # where runs logged through this server (not the study's own) put their artifacts
        cmd += ["--artifacts-destination", str(artifacts)]
    return cmd


def start(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000,
          artifacts: Path | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start the server in its own process group; `stop` ends the whole group."""
    if tracking_uri.startswith(("http://", "https://")):
        raise SpecError(f"tracking_uri {tracking_uri} is already a server: open it in a browser")
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise SpecError(f"no MLflow store at {tracking_uri}: launch the study first, "
                        "or pass the --tracking-uri it was launched with")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 -- the child owns it
    try:
        return subprocess.Popen(server_command(tracking_uri, host, port, artifacts), env=env,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
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
