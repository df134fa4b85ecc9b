# Every target sets up what it needs: a venv in .venv with the package and its test tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup iterate test real-setup real-iterate bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## The main job: the acceptance suite on the embedded mock endpoint, reports in reports/
iterate: $(STAMP)
	$(BIN)/pytest --iterate -p no:randomly examples/

## The project's own tests
test: $(STAMP)
	$(BIN)/pytest -q -m "not real"

clean:
	rm -rf $(VENV) .iterate_cache reports/*.json reports/*.md reports/*.html reports/*.prom
