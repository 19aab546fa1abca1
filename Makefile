# dfa-book: `make book` executes every chapter and builds the HTML book;
# `make test` runs the library's unit tests, executes every notebook with nbval,
# then renders the book and checks it in headless Chromium.
# Both create and fill .venv when it is missing or out of date.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))

# Offline MNIST: use $DFA_MNIST_DIR when set, else ../shared/data/mnist when it exists;
# otherwise dfa_lib downloads MNIST with torchvision.
ifeq ($(DFA_MNIST_DIR),)
  ifneq ($(wildcard ../shared/data/mnist),)
    export DFA_MNIST_DIR := $(abspath ../shared/data/mnist)
  endif
endif
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: all book test unit notebooks-test html-check browser-deps notebooks benchmark clean venv

all: book

venv: $(STAMP)

$(STAMP): requirements/dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

## book: execute every chapter on a fresh kernel and build the HTML into _build/html
book: $(STAMP)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Open _build/html/index.html"

## test: unit tests, then every notebook executed by nbval, then the rendered book in a browser
test: unit notebooks-test html-check

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/browser

## (the yardstick before and after, 12-15 s each, records how fast this machine was:
## tools/chapter_times.py scales the chapter times of the log by it)
notebooks-test: $(STAMP)
	-$(BIN)/python benchmarks/epoch_speed.py --yardstick
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider $(NOTEBOOKS); \
	  status=$$?; $(BIN)/python benchmarks/epoch_speed.py --yardstick || true; exit $$status

## html-check: render the committed notebooks (no re-execution: nbval just ran them) and
## open every page in headless Chromium
html-check: $(STAMP) browser-deps
	rm -rf _build/html-check
	sed 's/execute_notebooks: force/execute_notebooks: "off"/' _config.yml > _build_config_check.yml
	$(BIN)/jupyter-book build . --config _build_config_check.yml --path-output _build/html-check -W --keep-going; \
	  status=$$?; rm -f _build_config_check.yml; exit $$status
	DFA_BOOK_HTML=_build/html-check/_build/html $(BIN)/python -m pytest -q tests/browser

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "could not install chromium: the browser test will say so"; }

## notebooks: re-execute every chapter in place so the committed outputs are those of a fresh run,
## then refresh the README's reproduction table, figure and chapter times from them
notebooks: $(STAMP)
	mkdir -p _build && rm -f _build/chapter_times.txt
	$(BIN)/python benchmarks/epoch_speed.py --yardstick | tee -a _build/chapter_times.txt
	cd book && for nb in $(notdir $(NOTEBOOKS)); do \
	  start=$$(date +%s); ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 $$nb || exit 1; secs=$$(( $$(date +%s) - start )); \
	  echo "== $$nb: $$secs s"; echo "$$nb $$secs" >> ../_build/chapter_times.txt; done
	$(BIN)/python benchmarks/epoch_speed.py --yardstick | tee -a _build/chapter_times.txt
	$(BIN)/python tools/readme_summary.py
	$(BIN)/python tools/chapter_times.py

benchmark: $(STAMP)
	$(BIN)/python benchmarks/epoch_speed.py

clean:
	rm -rf _build .pytest_cache
