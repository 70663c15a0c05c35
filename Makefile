# Set-up is part of every target: a fresh clone needs only `make serve` or `make test`.
VENV ?= .venv
PYTHON ?= python3

.PHONY: serve test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/relay serve --config config/relay.toml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check relay tests bench
	$(VENV)/bin/ruff format --check relay tests bench

test: lint
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py
