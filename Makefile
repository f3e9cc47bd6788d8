# Developer and CI entry points. mod_wsgi embeds Debian's /usr/bin/python3,
# so the venv is made from that interpreter, not from whatever python3 is first
# on PATH (pyenv shims and the like).
SYS_PYTHON := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
# chromium: the status page's screenshot test renders /md-status in it.
# etcd-server, haproxy: the fleet tests (docs/cluster.md) run a real etcd and balancer.
APT_PKGS   := apache2 libapache2-mod-wsgi-py3 pebble python3-venv openssl curl chromium \
              etcd-server haproxy
STAMP      := $(VENV)/.installed
# acme2certifier, the second ACME server of the e2e tests (tests/harness/a2c.py): a
# venv of its own, its pinned dependencies are not ours.
A2C_VENV    := .venv-a2c
A2C_VERSION := 0.46.3

export DEBIAN_FRONTEND := noninteractive

.PHONY: deps venv a2c-venv test demo bench-status clean

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
	{ apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; } || rc=$$?; \
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

a2c-venv: $(A2C_VENV)/.installed-$(A2C_VERSION)

$(A2C_VENV)/.installed-$(A2C_VERSION):
	rm -rf $(A2C_VENV) && $(SYS_PYTHON) -m venv $(A2C_VENV)
	$(A2C_VENV)/bin/pip install -q acme2certifier==$(A2C_VERSION)
	@touch $@

# -rs: the summary says why a test was skipped
test: deps venv a2c-venv
	$(PY) -m pytest -q -rs tests

# KEEP=1: keep the demo running until Ctrl-C and print the URLs of its status page
demo: deps venv
	$(PY) scripts/demo.py $(if $(KEEP),--keep)

# md-status requests/s of apache-md against Debian's mod_md (installs wrk if missing).
bench-status: deps venv
	$(PY) bench/md_status.py

clean:
	rm -rf $(VENV) $(A2C_VENV) .pytest_cache *.egg-info

# Debian package: apache-md_<version>_all.deb in $(DEB_DIR), built from a copy
# of the tracked (and new, not ignored) files, checked by lintian (errors fail).
DEB_DIR ?= build/deb
DEB_BUILD_PKGS := build-essential debhelper dh-python pybuild-plugin-pyproject python3-all \
                  python3-setuptools python3-acme python3-cryptography python3-filelock \
                  python3-josepy python3-openssl python3-requests python3-sdnotify python3-pytest \
                  python3-etcd3gw \
                  python3-prometheus-client \
                  lintian fakeroot
.PHONY: deb deb-deps
deb-deps:
	@missing=""; \
	for p in $(DEB_BUILD_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "missing Debian packages:$$missing; run 'sudo make deb-deps'" >&2; exit 1; \
	fi; \
	echo "installing:$$missing"; \
	apt-get update -q && apt-get install -y -q --no-install-recommends $$missing

deb: deb-deps
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src && echo '*' > $(DEB_DIR)/.gitignore
	git ls-files -z --cached --others --exclude-standard \
	  | xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh \
	  | tar --null -T - -cf - | tar -xf - -C $(DEB_DIR)/src
	# Debian's python3, not one earlier on PATH (pyenv and the like)
	cd $(DEB_DIR)/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	lintian --fail-on error $(DEB_DIR)/*.changes
	@ls -1 $(DEB_DIR)/*.deb

# All benchmarks: apache-md against Debian's mod_md on this machine, printing
# times and ratios (bench/*.py). Not tests: nothing is asserted. issuance,
# faults and scale use ports 14700, 14710, 15700, 8753, 8755, 5701 and
# 5702 (E2E_PORT_OFFSET shifts them).
.PHONY: bench bench-scale
bench: deps venv
	$(PY) bench/issuance.py
	$(PY) bench/faults.py
	$(PY) bench/scale.py --sizes 100,1000
	$(PY) bench/md_status.py

# The scale curve up to 10,000 MDs (takes many minutes; writes bench/README.md).
bench-scale: deps venv
	$(PY) bench/scale.py --sizes 100,1000,10000 --readme
