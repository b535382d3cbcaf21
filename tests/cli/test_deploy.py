"""The deploy/ recipes parse, run `pricer launch` with a total, and keep the password off every
command line (it comes from a Secret, a compose secret file or a private env file)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

DEPLOY = REPO / "deploy"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_slurm_script_is_valid_bash_and_reads_the_urls_from_a_private_file() -> None:
    script = DEPLOY / "slurm" / "pricer-array.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --array=" in text and "PRICER_WORKER=${SLURM_ARRAY_TASK_ID" in text
    assert 'pricer launch "$study" --n-trials "$total"' in text and "postgresql://" not in text.split("set -euo")[1]


def test_the_kubernetes_job_takes_its_storage_from_a_secret_and_runs_the_total() -> None:
    manifests = {d["kind"] + "/" + d["metadata"]["name"]: d
                 for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in _docs(f)}
    assert {"Job/pricer-workers", "StatefulSet/postgres", "Service/postgres", "Deployment/mlflow",
            "Service/mlflow", "Secret/pricer-db"} <= set(manifests)
    job = manifests["Job/pricer-workers"]["spec"]
    assert job["parallelism"] >= 2 and job["completionMode"] == "Indexed"
    container = job["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["launch"] and "--n-trials" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PRICER_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "pricer-db"
    mlflow = manifests["Deployment/mlflow"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in mlflow["env"]} >= {"MLFLOW_BACKEND_STORE_URI"}
    for doc in manifests.values():
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert "postgresql://" not in " ".join(c.get("command", []) + c.get("args", []))


def test_the_compose_file_builds_each_url_from_the_secret_file_inside_the_container() -> None:
    compose = _docs(DEPLOY / "compose" / "compose.yaml")[0]
    services = compose["services"]
    assert {"postgres", "mlflow", "worker"} <= set(services)
    worker = " ".join(services["worker"]["command"])
    assert "$$(cat /run/secrets/db_password)" in worker and 'pricer launch' in worker and "--n-trials" in worker
    assert "db_password" in services["mlflow"]["secrets"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose client here")
def test_docker_compose_accepts_the_compose_file(tmp_path: Path) -> None:
    folder = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", folder)
    (folder / "db_password").write_text("x")
    subprocess.run(["docker-compose", "-f", str(folder / "compose.yaml"), "config", "-q"], check=True)
