# Two commands do all the set-up on a fresh machine:
#   make book   build the static book site with executed notebooks into _build/html
#   make test   run the whole test suite (unit tests + every notebook in book/ and labs/ in DGMLAB_FAST=1 mode)
# Optional: make lab (JupyterLab on this repo), make book-fast (the book with the CI budget).

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline machines: use the staged data folder when it exists; elsewhere the loaders download with checksum checks.
SHARED_DATA := $(abspath ../shared/data)
export DGMLAB_DATA ?= $(if $(wildcard $(SHARED_DATA)/mnist),$(SHARED_DATA),)

.PHONY: book book-fast test lab labs install clean check-site

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(BIN)/.installed

labs: install
	$(BIN)/python labs/make_labs.py

book: labs
	@start=$$(date +%s); \
	DGMLAB_PROGRESS=0 $(BIN)/jupyter-book build -W -n --keep-going . && \
	echo "Book built in $$(( $$(date +%s) - start )) s. Open $(CURDIR)/_build/html/index.html"

book-fast: labs
	DGMLAB_FAST=1 DGMLAB_PROGRESS=0 $(BIN)/jupyter-book build -W -n --keep-going .
	@echo "Open $(CURDIR)/_build/html/index.html"

test: labs
	DGMLAB_FAST=1 DGMLAB_PROGRESS=0 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile \
		--nbval-lax -q tests book labs/solution

lab: install
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=8899 --allow-root

# After `make book`: every page in headless Chromium (math rendered, widgets and explorers live, no outside requests).
# Needs Debian's chromium (apt-get install -y chromium).
check-site:
	$(BIN)/python scripts/check_site.py --all

clean:
	rm -rf _build labs/student labs/solution
