# Two entry points, both self-contained on a fresh machine with only Python 3.11+:
#   make demo   -> creates .venv, installs istpan with the pinned constraints, runs `istpan demo`
#   make test   -> same set-up plus dev extras, runs ruff and the test suite (make test-fast: without slow tests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --constraint constraints.txt

# The oldest Python the pinned versions install on (numpy, av, pillow, matplotlib, onnxruntime... need 3.11;
# pyproject.toml's requires-python says the same).
PY_MIN := 3.11
# "3.10" for the interpreter named by $(1), empty when it does not run.
py_version = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# "ok" when version $(1) >= PY_MIN (sort -V orders 3.9 < 3.10 < 3.11).
py_new_enough = $(if $(1),$(shell printf '%s\n' $(PY_MIN) $(1) | sort -V -C && echo ok))
# A .venv is complete when its python runs, is new enough and has pip. Anything less is removed and remade: a failed
# `python3 -m venv` (Debian/Ubuntu without python3-venv) leaves bin/python without pip behind.
VENV_OK = $(BIN)/python -c 'import sys, pip; sys.exit(sys.version_info < ($(subst .,$(comma) ,$(PY_MIN))))' \
	>/dev/null 2>&1
comma := ,

.PHONY: demo test test-fast lint install install-dev browser clean

# The interpreter is checked (one line, then stop) only when a venv has to be made.
$(VENV)/.venv-ok:
	$(if $(shell $(VENV_OK) && echo ok),,$(if $(call py_new_enough,$(call py_version,$(PYTHON))),,$(error \
	istpan needs Python >= $(PY_MIN) but $(PYTHON) is $(or $(addprefix Python ,$(call py_version,$(PYTHON))),not found): install \
	Python $(PY_MIN) or newer with its venv module (e.g. apt install python3.11-venv) and run make PYTHON=python3.11)))
	@$(VENV_OK) || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV) && $(VENV_OK) || { rm -rf $(VENV); echo "error: \
	$(PYTHON) -m venv made no venv with pip; on Debian/Ubuntu: apt install python3-venv (or python$(PY_MIN)-venv)"; \
	exit 1; }; }
	@touch $@

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/.venv-ok
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
