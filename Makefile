# The two commands: `make run` serves a demo set-up on loopback ports; `make test` runs
# the whole suite. Both do all their own set-up on a fresh Debian machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG := etc/maild.toml
DEV_CERT := var/tls/cert.pem
DEV_KEY := var/tls/key.pem
# Debian packages the test suite drives as real peers and engines.
TEST_DEBS := clamav-daemon rspamd redis-server swaks libnet-ssleay-perl isync fetchmail getmail6 postfix openssl offlineimap3 fail2ban
# Debian packages `make bench-compare` runs as peers (the test suite does not need them).
BENCH_DEBS := dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix

.PHONY: run test venv deps-debian deps-bench bench bench-compare lint clean

$(BIN)/maild: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/maild

$(DEV_CERT):
	mkdir -p var/tls
	$(BIN)/maild dev-cert --hostname localhost --cert $(DEV_CERT) --key $(DEV_KEY)

run: venv $(DEV_CERT)
	$(BIN)/maild -c $(CONFIG) demo-init
	exec $(BIN)/maild -c $(CONFIG) serve

deps-debian:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(TEST_DEBS)); tests needing them will fail"; fi

deps-bench:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(BENCH_DEBS)); the peers need them and root"; fi

test: venv deps-debian
	$(BIN)/ruff check maild tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: venv
	$(BIN)/python -m bench

bench-compare: venv deps-bench
	$(BIN)/python -m bench --compare

lint: venv
	$(BIN)/ruff check maild tests bench

clean:
	rm -rf $(VENV) var .pytest_cache
