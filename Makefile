# Each target installs what it needs: the virtualenv (.venv), the pinned tools
# (scripts/install-tools, cached in ~/.cache/sizeguard/tools) and the browser the approval
# page's tests and the demo drive (scripts/install-browser: Debian's chromium + chromium-driver).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= .sandbox/demo

.PHONY: test demo demo-down lint unit integration policy-test tools browser venv bench clean

$(STAMP): pyproject.toml
	@echo "==> virtualenv $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

tools:
	@scripts/install-tools

browser:
	@scripts/install-browser

lint: $(STAMP)
	@echo "==> ruff"
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@echo "==> mypy --strict"
	@$(BIN)/mypy

policy-test: tools
	@echo "==> policy tests"
	@scripts/policy-test

unit: $(STAMP)
	@$(BIN)/pytest tests/unit

integration: $(STAMP) tools browser
	@$(BIN)/pytest tests/integration

# The whole suite: lint, policy tests, unit and integration tests (real sandbox).
test: $(STAMP) tools browser lint policy-test
	@echo "==> pytest (unit + integration)"
	@$(BIN)/pytest

# The sandbox with the webhook, the MCP server over HTTP, the walkthrough; Ctrl-C stops it all.
demo: $(STAMP) tools browser
	@DEMO_DIR=$(DEMO_DIR) scripts/demo

demo-down: $(STAMP)
	@$(BIN)/sizeguard sandbox down --dir $(DEMO_DIR)

bench: $(STAMP) tools
	@for b in tests/bench/bench_*.py; do echo "==> $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .sandbox
