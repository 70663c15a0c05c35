# Set-up is part of every target: a fresh clone needs only `make serve` or `make test`.
VENV ?= .venv
# The distribution's python3 when it is 3.11 or later: what a server runs relay on (the README's
# `sudo python3 -m venv`), so the tests and benchmarks run on it too. Distributions build it with PGO
# and LTO and carry security fixes that change behaviour (the email package's CVE-2023-27043 fix, for
# one); a python3 earlier on PATH (pyenv's) can differ in both. Else the python3 on PATH; PYTHON=... to choose.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell /usr/bin/python3 -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo /usr/bin/python3 || echo python3)
endif
PIP = $(VENV)/bin/pip install --quiet --disable-pip-version-check

.PHONY: serve test lint bench tools .packages

# What serving needs: relay and its dependencies. The test tools come on top, for lint/test/bench.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || ! command -v apt-get >/dev/null || { $(APT_INSTALL) python3-venv; }
	$(PYTHON) -m venv --upgrade-deps $(VENV)  # a current pip: it builds a wheel of every sdist (dkimpy, pyspf) and byte-compiles it
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

# Debian packages: swaks and curl (the README's quick tour and the tests use them), postfix
# (the tests run a private instance that generates real DSNs, and one that relays through relay with
# SMTP AUTH, for which libsasl2-modules; installed unconfigured and not started)
# postgresql (the tests run private clusters on loopback; no system cluster is created) and chromium
# (the dashboard's browser tests drive it through Playwright; Playwright's own browser download is not used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
tools:
	@command -v swaks >/dev/null && command -v curl >/dev/null || { $(APT_INSTALL) swaks curl; }

.packages: tools
	@[ -x /usr/sbin/postfix ] || { \
		echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
		$(APT_INSTALL) postfix; }
	@dpkg -s libsasl2-modules >/dev/null 2>&1 || { $(APT_INSTALL) libsasl2-modules; }  # Postfix's SASL client (a test)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		$(SUDO) mkdir -p /etc/postgresql-common/createcluster.d && \
		echo "create_main_cluster = false" | $(SUDO) tee /etc/postgresql-common/createcluster.d/relay-tests.conf >/dev/null; \
		$(APT_INSTALL) postgresql; }
	@[ -x /usr/bin/chromium ] || { $(APT_INSTALL) chromium; }

# The example config as is, but for trying relay out: mail is captured in the sandbox instead of
# delivered, and any From: domain is taken. Set either variable to override (RELAY_DELIVERY_MODE=live).
serve: $(VENV)/.installed
	@echo "make serve: RELAY_DELIVERY_MODE=$${RELAY_DELIVERY_MODE:-sandbox} (sandbox: mail is captured, not delivered)"
	@echo "make serve: RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN=$${RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN:-false}" \
		"(false: any From: domain, for trying relay; production keeps config/relay.toml's true)"
	RELAY_DELIVERY_MODE=$${RELAY_DELIVERY_MODE:-sandbox} \
	RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN=$${RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN:-false} \
	$(VENV)/bin/relay serve --config config/relay.toml

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check relay tests bench
	$(VENV)/bin/ruff format --check relay tests bench
	$(VENV)/bin/mypy

# The whole suite, then the tests that use the store fixtures again on PostgreSQL (tests/conftest.py
# deselects the others: they would only repeat the first run).
test: lint .packages
	$(VENV)/bin/pytest -q
	RELAY_TEST_STORE=postgresql $(VENV)/bin/pytest -q

bench: $(VENV)/.installed-dev
	$(VENV)/bin/python bench/throughput.py
