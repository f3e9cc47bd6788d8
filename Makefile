# Developer and CI entry points. mod_wsgi embeds Debian's /usr/bin/python3,
# so the venv is made from that interpreter, not from whatever python3 is first
# on PATH (pyenv shims and the like).
SYS_PYTHON := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
APT_PKGS   := apache2 libapache2-mod-wsgi-py3 pebble python3-venv openssl curl
STAMP      := $(VENV)/.installed

export DEBIAN_FRONTEND := noninteractive

.PHONY: deps venv test demo clean

# Install the Debian packages only when one is missing, and only as root.
# policy-rc.d keeps apt from starting a system apache2 (on port 80) that
# nothing here uses.
deps:
	@missing=""; \
	for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "missing Debian packages:$$missing; run 'sudo make deps'" >&2; exit 1; \
	fi; \
	echo "installing:$$missing"; \
	guard=""; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; \
	fi; \
	rc=0; \
	{ apt-get update -q && apt-get install -y -q $$missing; } || rc=$$?; \
	if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	exit $$rc

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements-test.txt
	@if ! $(SYS_PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q python3-venv; \
	  else echo "python3-venv is missing; run 'sudo make deps'" >&2; exit 1; fi; \
	fi
	@if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.base_prefix != "/usr")'; then \
	  rm -rf $(VENV) && $(SYS_PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q -e . -r requirements-test.txt
	@touch $@

test: deps venv
	$(PY) -m pytest -q tests

demo: deps venv
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
