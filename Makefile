# pop3-ingest developer tasks (GNU make). `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DELETE_ON_ERROR:
.DEFAULT_GOAL := venv
MAKEFLAGS += --no-builtin-rules

VENV ?= .venv
# The venv's interpreter: python3.11 where present, else python3 (>= 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := functions cli tests scripts benchmarks examples

# `sam build` needs an interpreter matching the function runtime on PATH.
LAMBDA_PYTHON := 3.12
SAM_BUILD_DIR := .aws-sam/build
SAM_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

# Integration tests fail instead of skipping when CI=true.
ifdef CI
export CI
endif

DOVECOT_PACKAGES := dovecot-core dovecot-pop3d openssl

.PHONY: help venv deps deps-system lint typecheck security audit lock template test test-runtime unit demo fmt clean distclean

help:
	@cat <<'EOF'
	make venv         create $(VENV) (python3.11) and pip install -e '.[dev]' (default)
	make deps         venv + deps-system
	make deps-system  install Dovecot (POP3) and OpenSSL for the integration tests
	make lint         ruff check + ruff format --check
	make typecheck    mypy (strict)
	make template     cfn-lint, sam validate --lint, checkov (both Modes), sam build (offline) + artifact check
	make test         deps + lint + typecheck + security + template + test-runtime + pytest (everything)
	make test-runtime tests/unit on python$(LAMBDA_PYTHON), the function's runtime (skipped, and said so, without it)
	make security     bandit on functions/ and cli/ (offline)
	make audit        vulnerability scan of requirements.lock (needs PyPI's advisory API; not in make test)
	make lock         re-pin requirements.lock from pyproject.toml (uv)
	make unit         pytest tests/unit
	make simulate     the long simulation search (10,000 examples; SIM_MAX_EXAMPLES=N to resize)
	make bench-fleet  fleet benchmark against moto: benchmarks/fleet.{json,md} (BENCH_FLEET_N=100000 for the long run)
	make cost         docs/cost.md from benchmarks/fleet.json (AWS list prices, 1 / 1,000 / 100,000 mailboxes)
	make demo         deps + scripts/demo.py
	make fmt          ruff --fix + ruff format
	make clean        remove build and tool caches (distclean also removes $(VENV))
	EOF

venv: $(STAMP)

# Reinstalls whenever pyproject.toml changes.
# Installs the pinned set from requirements.lock, then the project itself.
$(STAMP): pyproject.toml requirements.lock
	if [ ! -x "$(BIN)/python" ]; then "$(PYTHON)" -m venv "$(VENV)"; fi
	"$(BIN)/python" -m pip install -r requirements.lock
	"$(BIN)/python" -m pip install --no-deps -e .
	touch "$@"

deps: venv deps-system

deps-system:
	@export PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"
	have_all() {
	  command -v dovecot >/dev/null && command -v doveadm >/dev/null &&
	  command -v openssl >/dev/null && command -v popa3d >/dev/null &&
	  { [ -x /usr/lib/dovecot/pop3 ] || [ -x /usr/libexec/dovecot/pop3 ]; }
	}
	if have_all; then echo "deps-system: dovecot (with pop3), popa3d and openssl present"; exit 0; fi
	if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null; then
	  echo "deps-system: the integration tests need Dovecot with its POP3 server, and OpenSSL." >&2
	  echo "  Debian/Ubuntu: apt-get install $(DOVECOT_PACKAGES); bash scripts/install_popa3d.sh" >&2
	  echo "  Fedora/RHEL:   dnf install dovecot openssl" >&2
	  echo "  macOS:         brew install dovecot openssl" >&2
	  echo "No system service is needed: the tests run their own dovecot on high ports." >&2
	  exit 1
	fi
	if [ "$$(id -u)" != 0 ]; then
	  echo "deps-system: run as root, or install them yourself:" >&2
	  echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y $(DOVECOT_PACKAGES)" >&2
	  echo "  sudo bash scripts/install_popa3d.sh   # popa3d unpacked: its package conflicts with dovecot-pop3d" >&2
	  exit 1
	fi
	# Keep the package scripts from starting a system-wide dovecot: the tests
	# start their own. An existing policy-rc.d is left as it is.
	bash scripts/apt_install.sh $(DOVECOT_PACKAGES)
	# popa3d conflicts with dovecot-pop3d as a package: it is unpacked instead.
	bash scripts/install_popa3d.sh
	# Should a daemon have started anyway, stop it (failing here just means none runs).
	doveadm stop >/dev/null 2>&1 || true
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
	  systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
	fi
	have_all || { echo "deps-system: dovecot/popa3d/openssl still missing after apt-get" >&2; exit 1; }
	echo "deps-system: installed $(DOVECOT_PACKAGES) popa3d"

lint: venv
	"$(BIN)/ruff" check $(SOURCES)
	"$(BIN)/ruff" format --check $(SOURCES)

typecheck: venv
	"$(BIN)/mypy"

template: venv
	@echo "template: cfn-lint, sam validate --lint, checkov (Mode single and fleet), sam build -> $(SAM_BUILD_DIR)"
	"$(BIN)/cfn-lint" template.yaml
	# The Powertools layer the template resolves is the release requirements.lock pins.
	"$(BIN)/python" scripts/check_powertools_layer.py
	"$(BIN)/sam" validate --lint --region "$(SAM_REGION)" --template-file template.yaml
	# checkov pins boto3/botocore far below the project's own, so it gets a venv
	# of its own. Skipped checks carry their reason in template.yaml (docs/security.md).
	checkov_venv=.venv-checkov
	checkov_version=3.3.30
	if [ "$$("$$checkov_venv/bin/checkov" --version 2>/dev/null || true)" != "$$checkov_version" ]; then
	  [ -x "$$checkov_venv/bin/python" ] || "$(PYTHON)" -m venv "$$checkov_venv"
	  "$$checkov_venv/bin/python" -m pip install --quiet "checkov==$$checkov_version"
	fi
	"$$checkov_venv/bin/checkov" --file template.yaml --framework cloudformation \
	  --skip-download --compact --quiet
	# checkov drops resources whose Condition is false under the parameter
	# defaults, so the Mode=fleet resources (reconciler, schedules, jobs queues, their IAM)
	# are scanned in a copy of the template whose Mode defaults to fleet.
	fleet_dir=$$(mktemp -d)
	trap 'rm -rf "$$fleet_dir"' EXIT
	sed '/^  Mode:$$/,/^    Default:/ s/^    Default: single$$/    Default: fleet/' template.yaml \
	  >"$$fleet_dir/template-fleet.yaml"
	grep -q '^    Default: fleet$$' "$$fleet_dir/template-fleet.yaml" ||
	  { echo "template: could not make the Mode=fleet copy for checkov" >&2; exit 1; }
	"$$checkov_venv/bin/checkov" --file "$$fleet_dir/template-fleet.yaml" --framework cloudformation \
	  --skip-download --compact --quiet
	runtime_python=$$(bash scripts/runtime_python.sh $(LAMBDA_PYTHON) || true)
	if [ -z "$$runtime_python" ]; then
	  echo "template: sam build needs python$(LAMBDA_PYTHON) (the function runtime) on PATH;" \
	       "install it, e.g. 'pyenv install $(LAMBDA_PYTHON)'." >&2
	  exit 1
	fi
	PATH="$$(dirname "$$runtime_python"):$$PATH" \
	  "$(BIN)/sam" build --template-file template.yaml --build-dir "$(SAM_BUILD_DIR)"
	# The artifact holds the Lambda package only: no CLI, no tests.
	"$(BIN)/python" scripts/check_artifact.py "$(SAM_BUILD_DIR)"

test: deps lint typecheck security template test-runtime
	"$(BIN)/python" -m pytest

# The function runs on python$(LAMBDA_PYTHON) (the template's Runtime), the suite on the venv's
# Python: the unit tests run on the runtime's too, in a venv of their own with the locked
# versions. Without that interpreter they are skipped, and the line says so: uv could
# download one, but from GitHub, which a machine that reaches only the package index cannot.
RUNTIME_VENV := .venv-py$(subst .,,$(LAMBDA_PYTHON))
# What tests/unit imports besides the project and its own dependencies (setuptools and
# wheel: a test builds the CLI's wheel offline).
RUNTIME_TEST_PACKAGES := pytest pytest-timeout hypothesis "moto[server]" setuptools wheel

test-runtime: venv
	if ! runtime_python=$$(bash scripts/runtime_python.sh $(LAMBDA_PYTHON)); then
	  echo "test-runtime: SKIPPED: no python$(LAMBDA_PYTHON) (the function's runtime) here;" \
	       "install it (e.g. 'pyenv install $(LAMBDA_PYTHON)') to run tests/unit on it too"
	  exit 0
	fi
	stamp="$(RUNTIME_VENV)/.installed"
	if [ ! -f "$$stamp" ] || [ requirements.lock -nt "$$stamp" ] || [ pyproject.toml -nt "$$stamp" ]; then
	  "$(BIN)/uv" venv --quiet --seed --allow-existing --python "$$runtime_python" "$(RUNTIME_VENV)"
	  "$(BIN)/uv" pip install --quiet --python "$(RUNTIME_VENV)/bin/python" \
	    --constraint requirements.lock -e . $(RUNTIME_TEST_PACKAGES)
	  touch "$$stamp"
	fi
	echo "test-runtime: tests/unit on $$("$(RUNTIME_VENV)/bin/python" --version)"
	"$(RUNTIME_VENV)/bin/python" -m pytest -q -p no:cacheprovider tests/unit

# Security lint of the code: offline, so part of `make test`.
security: venv
	"$(BIN)/bandit" -q -r functions cli -c pyproject.toml

# The vulnerability scan asks PyPI's advisory API, which a machine that reaches only
# the package index cannot: its own target, never a condition of `make test`.
audit: venv
	"$(BIN)/python" scripts/audit_dependencies.py

# Re-pin every dependency (needs the package index); commit the result.
lock: venv
	"$(BIN)/uv" pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu -o requirements.lock

unit: venv
	"$(BIN)/python" -m pytest tests/unit

demo: deps
	"$(BIN)/python" scripts/demo.py

fmt: venv
	"$(BIN)/ruff" check --fix $(SOURCES)
	"$(BIN)/ruff" format $(SOURCES)

clean:
	rm -rf .aws-sam build .mypy_cache .ruff_cache .pytest_cache functions/*.egg-info cli/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)" "$(RUNTIME_VENV)"

# -- benchmark (issue 3): kept out of `make test`, whose smoke run needs none of this --
BENCH_PACKAGES := getmail6 fetchmail time
BENCH_ARGS ?=

.PHONY: deps-bench bench bench-smoke

deps-bench: deps
	have_all() { command -v getmail >/dev/null && command -v fetchmail >/dev/null && [ -x /usr/bin/time ]; }
	if have_all; then echo "deps-bench: getmail6, fetchmail and GNU time present"; exit 0; fi
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	  echo "deps-bench: install the peers the benchmark compares against:" >&2
	  echo "  sudo apt-get install $(BENCH_PACKAGES)" >&2
	  exit 1
	fi
	bash scripts/apt_install.sh $(BENCH_PACKAGES)
	have_all || { echo "deps-bench: still missing after apt-get" >&2; exit 1; }

# Full run (~15 min on 2 cores): writes benchmarks/results.md and messages_per_second.png.
# Quick look: make bench BENCH_ARGS=--quick (50 messages, 0 and 20 ms, into benchmarks/out/quick).
bench: deps-bench
	"$(BIN)/python" -m benchmarks.run $(BENCH_ARGS)

# The smoke test `make test` also runs: the harness on a tiny corpus, no timings.
bench-smoke: deps
	"$(BIN)/python" -m pytest tests/bench

# -- simulation (issue 8): `make test` runs its fast profile with everything else --
# The long search: at least 10,000 examples of servers, networks and AWS misbehaving,
# then the coverage (faults fired, stop reasons). SIM_ARGS adds pytest options.
SIM_ARGS ?=

.PHONY: simulate

simulate: venv
	HYPOTHESIS_PROFILE=simulate "$(BIN)/python" -m pytest tests/simulation -p no:cacheprovider \
	  --timeout=0 --hypothesis-show-statistics $(SIM_ARGS)

# -- fleet benchmark and cost model (issue 10): kept out of `make test` (its smoke test runs there) --
# N mailboxes (BENCH_FLEET_N, default 10,000) against moto with latency per call, a sample of
# them run for real on Dovecot: benchmarks/fleet.json and fleet.md (~5 minutes at 10,000).
.PHONY: bench-fleet cost

bench-fleet: deps
	"$(BIN)/python" -m benchmarks.fleet

# docs/cost.md from benchmarks/fleet.json: per line item, per mailbox-month, against the goal.
cost: venv
	"$(BIN)/python" scripts/cost_model.py
