# Two set-up commands: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The exact releases every install here uses (a pip constraints file); `make lock` refreshes it.
LOCK := requirements/dev.lock

.PHONY: demo test bench clean system-deps lock test-latest

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/costspan demo

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q

# Prometheus (promtool) and Chromium back the dashboard and metrics tests. Installed from Debian's
# packages when missing and we may (root with apt-get); otherwise those tests skip and say why.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "not installed:$$missing (the tests that need them will skip)"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.bench_pricing
	$(BIN)/python -m tests.benchmarks.bench_instrumentation

# Resolve .[dev] afresh on the newest releases (in a scratch venv) and write them to the lock.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,2p' $(LOCK); .venv-lock/bin/python -m pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock
	@echo "$(LOCK) refreshed: run make test, then commit it"

# The suite against the newest releases, unlocked: reports what an upgrade would break, never fails.
test-latest: system-deps
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet -e '.[dev]'
	@.venv-latest/bin/python -m pip freeze --exclude-editable | diff $(LOCK) - | grep '^[<>]' || echo "the newest releases are the locked ones"
	@if .venv-latest/bin/pytest -q -x; then echo "test-latest: the newest releases pass"; \
	else echo "test-latest: the newest releases BREAK the tests above (the lock keeps make test green)"; fi

clean:
	rm -rf $(VENV) .venv-lock .venv-latest .mypy_cache .ruff_cache
