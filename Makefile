# Two commands on a fresh Debian 12 machine: `make demo` and `make test`.
# Each installs what it needs (Debian packages when missing, a .venv, the project in it).
.PHONY: setup demo test lint bench clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh test

demo: setup
	@$(VENV)/bin/daaas demo

test: setup
	@bash scripts/test.sh

lint: setup
	@$(VENV)/bin/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache out
