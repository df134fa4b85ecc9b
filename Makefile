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
	$(BIN)/pytest -q -m "not real" -n 2  # two processes: most tests wait on loopback I/O

## The real endpoint (llama.cpp + SmolLM2-135M on 127.0.0.1): install, then the real-marked
## tests and the acceptance suite against it, as CI runs them (.ci/real)
real-setup: $(STAMP)
	scripts/real_endpoint.sh install

real-iterate: $(STAMP)
	bash .ci/real

## Every benchmark, one after the other (each prints its own medians and ratios)
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .iterate_cache reports/*.json reports/*.md reports/*.html reports/*.prom
