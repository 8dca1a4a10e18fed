# Two entry points, both self-contained on a fresh machine with only Python 3.10+:
#   make demo   -> creates .venv, installs istpan with the pinned constraints, runs `istpan demo`
#   make test   -> same set-up plus dev extras, runs ruff and the test suite (make test-fast: without slow tests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --constraint constraints.txt

.PHONY: demo test test-fast lint install install-dev browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/istpan demo $(DEMO_ARGS)

lint: install-dev
	$(BIN)/ruff check .

# The report test drives a real headless Chromium (Debian's package). Installed here when missing and we are root;
# otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "note: chromium not installed; the browser test will be skipped"; }

test: install-dev browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (torchrun DDP, SIGKILL/Ctrl-C resume, ONNX export, demo,
# ablation, multi-process predict). `make test` still runs them all.
test-fast: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
