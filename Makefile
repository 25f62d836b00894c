# The two commands: `make run` serves a demo set-up on loopback ports; `make test` runs
# the whole suite. Both do all their own set-up on a fresh Debian machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG := etc/maild.toml
DEV_CERT := var/tls/cert.pem
DEV_KEY := var/tls/key.pem
# The local development CA that signs DEV_CERT: import it into a mail client once.
DEV_CA := var/tls/ca.pem
# Debian packages the test suite drives as real peers and engines.
TEST_DEBS := clamav-daemon rspamd redis-server swaks libnet-ssleay-perl isync fetchmail getmail6 postfix openssl offlineimap3 fail2ban procmail systemd make
# Debian packages `make bench-compare` runs as peers (the test suite does not need them).
BENCH_DEBS := dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix

# pytest-xdist processes: most tests wait on real daemons and timers, so two processes on
# two cores finish the suite in about two thirds of the time. TEST_JOBS=0: in-process.
TEST_JOBS ?= 2

.PHONY: run maild dev-cert test venv deps-debian deps-bench bench bench-compare lint clean

$(BIN)/maild: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/maild

# A leaf certificate for localhost and 127.0.0.1 signed by the development CA (made once,
# kept in var/tls); remade when any of the three files is missing.
dev-cert: venv
	@if [ ! -f $(DEV_CA) ] || [ ! -f $(DEV_CERT) ] || [ ! -f $(DEV_KEY) ]; then \
	  mkdir -p var/tls && \
	  $(BIN)/maild dev-cert --hostname localhost --cert $(DEV_CERT) --key $(DEV_KEY) --ca $(DEV_CA); \
	fi

run: venv dev-cert
	$(BIN)/maild -c $(CONFIG) demo-init
	@echo "TLS: import $(DEV_CA) into your mail client once (the server's certificate is signed by it)"
	exec $(BIN)/maild -c $(CONFIG) serve

# Administration commands on the `make run` set-up: make maild ARGS="user list"
maild: venv
	@$(BIN)/maild -c $(CONFIG) $(ARGS)

deps-debian:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(TEST_DEBS)); tests needing them will fail"; fi

deps-bench: venv
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(BENCH_DEBS)); the peers need them and root"; fi
	$(BIN)/pip install -q -e '.[bench]'

test: venv deps-debian
	$(BIN)/ruff check maild tests bench
	$(BIN)/mypy
	$(BIN)/python -m compileall -q maild tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile --durations=25; rc=$$?; \
	  if [ $$rc = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: venv
	$(BIN)/python -m bench

bench-compare: venv deps-bench
	$(BIN)/python -m bench --compare

lint: venv
	$(BIN)/ruff check maild tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache
