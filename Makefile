# cpdm: `make demo` builds an offline demo workspace and serves the app;
# `make test` installs what the tests need and runs the whole suite.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.cpdm-installed
# torch is pinned here, not in pyproject.toml: these builds are the ones the
# project is tested with (and the ones that install without a large download).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install demo test test-fast browser-deps bench gpu-wheels bench-gpu clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[test]' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cpdm demo

# Debian's chromium drives the browser tests (Playwright never downloads a browser).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium (Debian) for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

test: $(STAMP) browser-deps
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script --quick || exit 1; done

# The GPU suite (benchmarks/gpu_suite.py) runs on a machine that has torch and transformers but no package
# registry and no project venv: `make gpu-wheels`, here, downloads the other packages it needs as wheels into
# $(GPU_WHEELS) (git-ignored; carry it with the tree); `make bench-gpu`, there, installs those its python lacks
# into $(GPU_SITE) and runs the suite (results in benchmarks/results/). GPU_ARGS=--dry-run runs it on a CPU.
GPU_PYTHON ?= python3
GPU_WHEELS ?= .gpu-wheels
GPU_SITE ?= .gpu-site
GPU_ARGS ?=

gpu-wheels:
	$(GPU_PYTHON) -m benchmarks.gpu.wheels download --dest $(GPU_WHEELS)

bench-gpu:
	$(GPU_PYTHON) -m benchmarks.gpu.wheels install --wheels $(GPU_WHEELS) --target $(GPU_SITE)
	PYTHONPATH="$(abspath $(GPU_SITE)):$(CURDIR)" $(GPU_PYTHON) benchmarks/gpu_suite.py $(GPU_ARGS)

clean-demo:
	rm -rf annotations/workspace
