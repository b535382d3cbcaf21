"""The deploy/ recipes are checked offline by the tools made for them (the Kubernetes manifests
against their schemas with kubernetes-validate, the sbatch script with shellcheck, the compose
file with docker-compose config), run `pricer launch` with a total, run as non-root from a
pinned, versioned image, and keep the password off every command line and out of git (it comes
from a Secret, a compose secret file or a private env file, URL-encoded where it enters a URL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

DEPLOY = REPO / "deploy"
# what openssl rand -base64 gives, and worse: every character a URL treats specially
PASSWORD = "a/b+c=d@e:f%g"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> dict[str, dict]:
    return {d["kind"] + "/" + d["metadata"]["name"]: d for f in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            if f.name != "secret.yaml" for d in _docs(f)}


def _pods(manifests: dict[str, dict]) -> dict[str, dict]:
    return {name: d["spec"]["template"]["spec"] for name, d in manifests.items() if "template" in d.get("spec", {})}


def _needs(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{tool} is not installed here (.ci/run installs it: the Debian package or PyPI)")
    return path


def test_the_kubernetes_manifests_match_their_schemas() -> None:
    tool = _needs("kubernetes-validate")
    files = [str(f) for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")) if f.name != "secret.yaml"]
    done = subprocess.run([tool, "--strict", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == sum(len(_docs(Path(f))) for f in files)


def test_the_slurm_script_passes_shellcheck() -> None:
    done = subprocess.run([_needs("shellcheck"), str(DEPLOY / "slurm" / "pricer-array.sbatch")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_docker_compose_accepts_the_compose_file(tmp_path: Path) -> None:
    tool = _needs("docker-compose")
    folder = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", folder)
    (folder / "db_password").write_text(PASSWORD)
    done = subprocess.run([tool, "-f", str(folder / "compose.yaml"), "config", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_slurm_script_reads_the_urls_from_a_private_file() -> None:
    text = (DEPLOY / "slurm" / "pricer-array.sbatch").read_text()
    assert "#SBATCH --array=" in text and "PRICER_WORKER=${SLURM_ARRAY_TASK_ID" in text
    assert 'pricer launch "$study" --n-trials "$total"' in text and "postgresql://" not in text.split("set -euo")[1]


def test_the_kubernetes_job_takes_its_secrets_from_secrets_and_shares_runs_and_caches() -> None:
    manifests = _manifests()
    assert {"Job/pricer-workers", "StatefulSet/postgres", "Service/postgres", "Deployment/mlflow",
            "Service/mlflow", "Secret/pricer-db", "Secret/pricer-hf"} <= set(manifests)
    job = manifests["Job/pricer-workers"]["spec"]
    assert job["parallelism"] >= 2 and job["completionMode"] == "Indexed"
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:1] == ["launch"] and "--n-trials" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PRICER_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "pricer-db"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "pricer-hf"
    # runs/ (checkpoints) and the caches outlive a pod and are shared by all of them
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/work/runs", "/cache"):
        claim = volumes[mounts[path]]["persistentVolumeClaim"]["claimName"]
        assert manifests[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"] == ["ReadWriteMany"]
    mlflow = manifests["Deployment/mlflow"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in mlflow["env"]} >= {"MLFLOW_BACKEND_STORE_URI"}
    for spec in _pods(manifests).values():
        for c in spec["containers"]:
            assert "postgresql://" not in " ".join(c.get("command", []) + c.get("args", []))


def test_every_pod_runs_as_non_root_with_requests_limits_and_a_pinned_image() -> None:
    for name, spec in _pods(_manifests()).items():
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0, name
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert set(c["resources"]["requests"]) >= {"cpu", "memory"}, name
            assert set(c["resources"]["limits"]) >= {"cpu", "memory"}, name
            tag = c["image"].rpartition(":")[2]
            assert ":" in c["image"] and tag != "latest" and any(ch.isdigit() for ch in tag), c["image"]
            assert c.get("imagePullPolicy") != "Always", name


def test_the_image_runs_as_a_user_from_pinned_packages() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "-r deploy/requirements.txt" in dockerfile and "--no-deps ." in dockerfile
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert base.count(".") >= 2, f"base image {base} is not pinned to a patch release"
    pins = [line for line in (DEPLOY / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    pinned = {line.split("==")[0].split("[")[0].lower().replace("_", "-") for line in pins}
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    needed = {Requirement(r).name.lower().replace("_", "-") for r in requires("pricer-sweeps")
              if "extra ==" not in r} - {"torch"}  # torch: installed first, CUDA or CPU
    assert needed <= pinned, needed - pinned


def test_the_example_secret_is_no_password_and_the_real_ones_are_ignored_by_git() -> None:
    example = {d["metadata"]["name"]: d for d in _docs(DEPLOY / "kubernetes" / "secret.example.yaml")}
    assert example["pricer-db"]["stringData"]["password"] == ""  # postgres refuses to start on it
    for real in ("deploy/kubernetes/secret.yaml", "deploy/compose/db_password"):
        assert subprocess.run(["git", "check-ignore", "-q", real], cwd=REPO).returncode == 0, real


def test_compose_runs_each_worker_on_its_own_gpu_and_restarts_the_servers() -> None:
    services = _docs(DEPLOY / "compose" / "compose.yaml")[0]["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    devices = [d for s in workers.values() for r in [s["deploy"]["resources"]["reservations"]]
               for device in r["devices"] for d in device["device_ids"]]
    assert len(workers) >= 2 and len(devices) == len(workers) == len(set(devices))
    assert services["postgres"]["restart"] == services["mlflow"]["restart"] == "unless-stopped"
    for s in services.values():
        assert not s["image"].endswith(":latest") and ":" in s["image"]


@pytest.mark.parametrize("service", ["worker-0", "mlflow"])
def test_the_compose_url_carries_the_password_url_encoded(service: str, tmp_path: Path) -> None:
    """The service's own shell line, run for real: the URL it exports gives back the password."""
    from sqlalchemy.engine import make_url

    services = _docs(DEPLOY / "compose" / "compose.yaml")[0]["services"]
    secret = tmp_path / "db_password"
    secret.write_text(PASSWORD + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pricer", "mlflow"):  # stand-ins that print the URL they were given
        (bin_dir / tool).write_text('#!/bin/sh\necho "$PRICER_STORAGE$MLFLOW_BACKEND_STORE_URI"\n')
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    line = services[service]["command"][0].replace("$$", "$").replace("/run/secrets/db_password", str(secret))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUDY": "s.yaml", "TRIALS": "1"}
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, check=True)
    url = make_url(done.stdout.strip())
    assert url.password == PASSWORD and url.host == "postgres" and url.username == "pricer"
