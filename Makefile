# The interface: `make demo`, `make test`, `make bench`. Each installs what it needs, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := .cache
CLAUDE_SDK_VERSION := 0.2.187
CLAUDE_BIN := $(CACHE)/claude-cli-$(CLAUDE_SDK_VERSION)/claude_agent_sdk/_bundled/claude
PM2_BIN := tests/tools/node_modules/.bin/pm2
# bubblewrap sandboxes check commands; the tests use this pinned Debian build (no setuid needed)
BWRAP_VERSION := 0.8.0-2+deb12u1
BWRAP_DIR := $(CACHE)/bwrap-0.8.0
BWRAP_BIN := $(BWRAP_DIR)/usr/bin/bwrap
# the metrics and alert tests run the real Prometheus (with promtool) and Alertmanager: pinned Debian builds
PROMETHEUS_VERSION := 2.42.0+ds-5+deb12u1
ALERTMANAGER_VERSION := 0.25.0-1+b4
PROMETHEUS_DIR := $(CACHE)/prometheus-2.42.0
ALERTMANAGER_DIR := $(CACHE)/alertmanager-0.25.0
PROMETHEUS_BIN := $(PROMETHEUS_DIR)/usr/bin/prometheus
ALERTMANAGER_BIN := $(ALERTMANAGER_DIR)/usr/bin/prometheus-alertmanager
# Docker: Debian's engine, pinned, unpacked (not installed) for the real-daemon tests (tests/fakes/docker_env.py)
DOCKER_DEBS := docker.io=20.10.24+dfsg1-1+deb12u1+b6 containerd=1.6.20~ds1-1+deb12u3 \
	runc=1.1.5+ds1-1+deb12u1 tini=0.19.0-1+b3
DOCKER_DIR := $(CACHE)/docker-20.10.24
DOCKERD_BIN := $(DOCKER_DIR)/usr/sbin/dockerd
VENV_STAMP := $(VENV)/.stamp-deps
WHEELHOUSE := $(CACHE)/wheelhouse
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.stamp

export HEALBOT_CLAUDE_BIN := $(abspath $(CLAUDE_BIN))
export HEALBOT_PM2_BIN := $(abspath $(PM2_BIN))
export HEALBOT_BWRAP_BIN := $(abspath $(BWRAP_BIN))
export HEALBOT_DOCKER_DIR := $(abspath $(DOCKER_DIR))
export HEALBOT_WHEELHOUSE := $(abspath $(WHEELHOUSE))
export HEALBOT_PROMETHEUS_BIN := $(abspath $(PROMETHEUS_BIN))
export HEALBOT_ALERTMANAGER_BIN := $(abspath $(ALERTMANAGER_BIN))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test bench lint typecheck install tools clean

install: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(CLAUDE_BIN):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps \
		--target $(CACHE)/claude-cli-$(CLAUDE_SDK_VERSION) claude-agent-sdk==$(CLAUDE_SDK_VERSION)
	test -x $@

$(BWRAP_BIN):
	mkdir -p $(BWRAP_DIR)
	cd $(BWRAP_DIR) && rm -f bubblewrap_*.deb && \
		{ apt-get download bubblewrap=$(BWRAP_VERSION) || \
		  { apt-get update -qq && apt-get download bubblewrap=$(BWRAP_VERSION); }; }
	dpkg -x $(BWRAP_DIR)/bubblewrap_*.deb $(BWRAP_DIR)
	test -x $@

$(PROMETHEUS_BIN):
	mkdir -p $(PROMETHEUS_DIR)
	cd $(PROMETHEUS_DIR) && rm -f prometheus_*.deb && \
		{ apt-get download prometheus=$(PROMETHEUS_VERSION) || \
		  { apt-get update -qq && apt-get download prometheus=$(PROMETHEUS_VERSION); }; }
	dpkg -x $(PROMETHEUS_DIR)/prometheus_*.deb $(PROMETHEUS_DIR)
	test -x $@ && test -x $(PROMETHEUS_DIR)/usr/bin/promtool

$(ALERTMANAGER_BIN):
	mkdir -p $(ALERTMANAGER_DIR)
	cd $(ALERTMANAGER_DIR) && rm -f prometheus-alertmanager_*.deb && \
		{ apt-get download prometheus-alertmanager=$(ALERTMANAGER_VERSION) || \
		  { apt-get update -qq && apt-get download prometheus-alertmanager=$(ALERTMANAGER_VERSION); }; }
	dpkg -x $(ALERTMANAGER_DIR)/prometheus-alertmanager_*.deb $(ALERTMANAGER_DIR)
	test -x $@

# dockerd, containerd, runc and docker-init run from where dpkg -x puts them; the .debs are dropped after
$(DOCKERD_BIN):
	mkdir -p $(DOCKER_DIR)
	cd $(DOCKER_DIR) && rm -f *.deb && \
		{ apt-get download $(DOCKER_DEBS) || { apt-get update -qq && apt-get download $(DOCKER_DEBS); }; }
	for deb in $(DOCKER_DIR)/*.deb; do dpkg -x "$$deb" $(DOCKER_DIR) || exit 1; done
	rm -f $(DOCKER_DIR)/*.deb
	test -x $@

$(PM2_BIN): tests/tools/package.json tests/tools/package-lock.json
	cd tests/tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Wheels for the offline install tests (pipx and a venv install without a package index).
$(WHEELHOUSE_STAMP): pyproject.toml tests/tools/fill_wheelhouse.py $(VENV_STAMP)
	$(BIN)/python tests/tools/fill_wheelhouse.py $(WHEELHOUSE)
	touch $@

tools: $(CLAUDE_BIN) $(PM2_BIN) $(BWRAP_BIN) $(DOCKERD_BIN) $(PROMETHEUS_BIN) $(ALERTMANAGER_BIN) $(WHEELHOUSE_STAMP)

# Debian's sudo, for the tests only: `visudo -c` of deploy/sudoers.d and sudo inside the booted systemd
# (tests/fakes/systemd_env.py copies it into that namespace's /usr); unpacked here, not setuid, never installed.
SUDO_VERSION := 1.9.13p3-1+deb12u4
SUDO_DIR := $(CACHE)/sudo-1.9.13p3-1-deb12u4
SUDO_BIN := $(SUDO_DIR)/usr/bin/sudo
export HEALBOT_SUDO_DIR := $(abspath $(SUDO_DIR))

$(SUDO_BIN):
	mkdir -p $(SUDO_DIR)
	cd $(SUDO_DIR) && rm -f sudo_*.deb && \
		{ apt-get download sudo=$(SUDO_VERSION) || \
		  { apt-get update -qq && apt-get download sudo=$(SUDO_VERSION); }; }
	dpkg -x $(SUDO_DIR)/sudo_*.deb $(SUDO_DIR)
	chmod u-s $@  # setuid only inside the namespace (install_sudo), never on the host
	test -x $@

tools: $(SUDO_BIN)  # after SUDO_BIN is defined: a rule's prerequisites expand as make reads it

# the demo's check runs sandboxed when bwrap is installed, or fetched by `make tools`
demo: $(VENV_STAMP) $(CLAUDE_BIN)
	PATH=$(abspath $(BWRAP_DIR))/usr/bin:$$PATH $(BIN)/healbot demo --yes $(DEMO_ARGS)

lint: $(VENV_STAMP)
	$(BIN)/ruff check bot healers tests
	$(BIN)/ruff format --check bot healers tests

typecheck: $(VENV_STAMP)
	$(BIN)/mypy

# pytest-xdist: most tests wait on real processes (claude, git, supervisord, systemd); two workers keep
# both cores busy. TEST_WORKERS=0 runs the tests in this one process
TEST_WORKERS ?= 2

test: $(VENV_STAMP) tools lint typecheck
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.stamp-bench

$(BENCH_STAMP): $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

bench: $(VENV_STAMP) $(BENCH_STAMP) tools
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CACHE) tests/tools/node_modules
