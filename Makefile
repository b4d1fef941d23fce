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
VENV_STAMP := $(VENV)/.stamp-deps
WHEELHOUSE := $(CACHE)/wheelhouse
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.stamp

export HEALBOT_CLAUDE_BIN := $(abspath $(CLAUDE_BIN))
export HEALBOT_PM2_BIN := $(abspath $(PM2_BIN))
export HEALBOT_BWRAP_BIN := $(abspath $(BWRAP_BIN))
export HEALBOT_WHEELHOUSE := $(abspath $(WHEELHOUSE))
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

$(PM2_BIN): tests/tools/package.json tests/tools/package-lock.json
	cd tests/tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Wheels for the offline install tests (pipx and a venv install without a package index).
$(WHEELHOUSE_STAMP): pyproject.toml tests/tools/fill_wheelhouse.py $(VENV_STAMP)
	$(BIN)/python tests/tools/fill_wheelhouse.py $(WHEELHOUSE)
	touch $@

tools: $(CLAUDE_BIN) $(PM2_BIN) $(BWRAP_BIN) $(WHEELHOUSE_STAMP)

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

tools: $(SUDO_BIN)

# the demo's check runs sandboxed when bwrap is installed, or fetched by `make tools`
demo: $(VENV_STAMP) $(CLAUDE_BIN)
	PATH=$(abspath $(BWRAP_DIR))/usr/bin:$$PATH $(BIN)/healbot demo --yes $(DEMO_ARGS)

lint: $(VENV_STAMP)
	$(BIN)/ruff check bot healers tests
	$(BIN)/ruff format --check bot healers tests

typecheck: $(VENV_STAMP)
	$(BIN)/mypy

test: $(VENV_STAMP) tools lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.stamp-bench

$(BENCH_STAMP): $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

bench: $(VENV_STAMP) $(BENCH_STAMP) tools
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CACHE) tests/tools/node_modules
