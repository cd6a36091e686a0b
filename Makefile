# mgr-agent developer targets. Every target installs what it needs on a fresh Debian 12 (as root).
PYTHON ?= python3
VENV   ?= .venv
APT_PACKAGES = python3-venv python3-dev php-cli libsystemd-dev pkg-config zip unzip strace e2fsprogs xfsprogs util-linux systemd-container debootstrap openssh-server
STAMP  = $(VENV)/.installed

.PHONY: all deps venv demo test lint ansible-lint unit quick integration system clean bench reliability

# Ansible tools run with a home of their own (caches) and this checkout's collection.
ANSIBLE_ENV = PATH=$(CURDIR)/$(VENV)/bin:$$PATH HOME=$(CURDIR)/$(VENV)/ansible-home ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/deploy NO_COLOR=1
MODULES = mgr.agent.aps mgr.agent.plugin mgr.agent.plugin_info

all: test

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,systemd]'
	touch $@

venv: deps $(STAMP)

demo: venv
	$(VENV)/bin/python -m mgr_agent.sandbox.demo

lint: venv ansible-lint
	$(VENV)/bin/ruff check agent tests
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests

# the collection: ansible-lint on the role and the example playbooks, ansible-doc on every
# module, documented options == argument_spec
ansible-lint: venv
	cd deploy/examples && $(ANSIBLE_ENV) $(CURDIR)/$(VENV)/bin/ansible-lint --offline -q \
	    ../ansible_collections/mgr/agent/roles/agent .
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-doc -t module --json $(MODULES) | $(VENV)/bin/python -c \
	    'import json, sys; d = json.load(sys.stdin); missing = set(sys.argv[1:]) - {k for k, v in d.items() if v["doc"]["options"]}; sys.exit(f"ansible-doc: no documentation for {missing}" if missing else 0)' $(MODULES)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_ansible_modules.py -k documented

test: venv lint
	$(VENV)/bin/python -m pytest -q tests

unit: venv
	$(VENV)/bin/python -m pytest -q -m "not slow" tests/unit

# unit + integration without the long crash and fault runs (marker `slow`)
quick: venv
	$(VENV)/bin/python -m pytest -q -m "not slow" tests/unit tests/integration

integration: venv
	$(VENV)/bin/python -m pytest -q tests/integration

# real systemd in an nspawn container, the Ansible role on a plain distribution (root)
system: venv
	$(VENV)/bin/python -m pytest -q tests/system

# the benchmark, then docs/performance.md and its plot regenerated from its JSON
# (make bench BENCH_ARGS="--sizes 5000 --reps 3" for a shorter run)
BENCH_STAMP = $(VENV)/.bench-installed
BENCH_ARGS ?=
$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[test,systemd,bench]'
	touch $@

bench: venv $(BENCH_STAMP)
	$(VENV)/bin/python -m tests.bench.run $(BENCH_ARGS)
	$(VENV)/bin/python -m tests.bench.report

reliability: venv
	$(VENV)/bin/python -m tests.reliability

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
