# Set-up is part of every target: a fresh clone needs only `make serve` or `make test`.
VENV ?= .venv
PYTHON ?= python3

.PHONY: serve test lint bench .packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Debian packages the tests drive: swaks (an SMTP client) and postfix (a private
# instance generates real DSNs; the package is installed unconfigured and not started).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.packages:
	@command -v swaks >/dev/null && [ -x /usr/sbin/postfix ] || { \
		echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks postfix; }

serve: $(VENV)/.installed
	$(VENV)/bin/relay serve --config config/relay.toml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check relay tests bench
	$(VENV)/bin/ruff format --check relay tests bench

test: lint .packages
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py
