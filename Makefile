# `make plan STACK=dev` and `make test` create or refresh .venv from the requirements files themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK ?= dev
OUT ?=

.PHONY: venv plan test lint accuracy clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

plan: $(STAMP)
	$(BIN)/python -m llmctl plan $(STACK) $(if $(OUT),--out $(OUT))

# pytest exits 5 when it collected no test: a suite that silently runs nothing must fail, not pass.
test: $(STAMP)
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .

# The capacity planner's error against public vLLM start-up logs (tests/data/vllm_measurements.yaml).
accuracy: $(STAMP)
	$(BIN)/python -m tests.planner_accuracy

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
