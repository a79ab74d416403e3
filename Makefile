# Each target installs what it needs: the virtualenv (.venv) and the pinned tools
# (scripts/install-tools, cached in ~/.cache/sizeguard/tools).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= .sandbox/demo
KUBECTL := $${SIZEGUARD_TOOLS:-$$HOME/.cache/sizeguard/tools}/bin/kubectl

.PHONY: test demo demo-down lint unit integration policy-test tools venv bench clean

$(STAMP): pyproject.toml
	@echo "==> virtualenv $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

tools:
	@scripts/install-tools

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

integration: $(STAMP) tools
	@$(BIN)/pytest tests/integration

# The whole suite: lint, policy tests, unit and integration tests (real sandbox).
test: $(STAMP) tools lint policy-test
	@echo "==> pytest (unit + integration)"
	@$(BIN)/pytest

demo: $(STAMP) tools
	@-$(BIN)/sizeguard sandbox down --dir $(DEMO_DIR) 2>/dev/null
	@rm -rf $(DEMO_DIR)
	@$(BIN)/sizeguard sandbox up --dir $(DEMO_DIR) --with-webhook
	@$(BIN)/sizeguard sandbox status --dir $(DEMO_DIR)
	@echo
	@echo "==> an unapproved change, refused by the cluster itself:"
	@. $(DEMO_DIR)/env && $(KUBECTL) -n shop-prod set resources deployment/web --requests=cpu=400m 2>&1 | fold -s -w 100 || true
	@echo
	@echo "==> recommendations for shop-prod from the sandbox's Prometheus:"
	@. $(DEMO_DIR)/env && $(BIN)/sizeguard scan --namespace shop-prod --format table
	@echo
	@echo "The sandbox runs in the background. Try:"
	@echo "  source $(DEMO_DIR)/env && $(KUBECTL) get deploy,sts,ds,hpa -A"
	@echo "Stop it with: make demo-down"

demo-down: $(STAMP)
	@$(BIN)/sizeguard sandbox down --dir $(DEMO_DIR)

bench: $(STAMP) tools
	@for b in tests/bench/bench_*.py; do echo "==> $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .sandbox
