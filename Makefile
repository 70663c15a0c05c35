# Set-up is part of every target: a fresh clone needs only `make serve` or `make test`.
VENV ?= .venv
PYTHON ?= python3

.PHONY: serve test lint bench .swaks

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# swaks (an SMTP client) drives the SMTP tests; install it from Debian when missing.
.swaks:
	@command -v swaks >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks; fi; }

serve: $(VENV)/.installed
	$(VENV)/bin/relay serve --config config/relay.toml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check relay tests bench
	$(VENV)/bin/ruff format --check relay tests bench

test: lint .swaks
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py
