# ops-autopilot. `make help` lists the targets. Every target sets up .venv itself from the
# pinned requirements-dev.txt, so a fresh clone needs nothing but Python 3.11+ and make.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# The first Python 3.11+ found (override with `make PYTHON=/path/to/python3.12 ...`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements-dev.txt | cut -d' ' -f1)
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv test stress demo bench mutate check lint format typecheck scan validate build release org-deploy new-automation docs lock clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The stamp is named after the pins' checksum, so it is current exactly when the venv was built
# from these pins: a fresh checkout (new file times) or a touch never rebuilds it, a changed pin does.
$(STAMP):
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer is needed (none found on PATH)"; exit 1; }
	@echo "Setting up $(VENV) with $$($(PYTHON) --version) from requirements-dev.txt ..."
	@rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(STAMP) ## Create or refresh the local virtualenv

# The tests run on 2 pytest-xdist workers (measured fastest on 2 cores); tests marked
# xdist_group share one worker. The workers' figures and the observed-IAM judgement are added
# up once at the end (tests/conftest.py). PYTEST_ARGS come after: PYTEST_ARGS="-n 0" runs in
# one process, PYTEST_ARGS="tests/shared" runs one folder.
PYTEST_XDIST ?= -n 2 --dist loadgroup

test: $(STAMP) ## Run every test: unit, moto integration, template checks, sam validate/build
	@$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

# Every test that runs two deliveries (or runs) at once, STRESS_COUNT times, on 2 workers: a
# race that shows only under load fails here. STRESS_ARGS come after (e.g. -x).
STRESS_COUNT ?= 50
stress: $(STAMP) ## Run the concurrency tests STRESS_COUNT (50) times under load, 2 workers
	@$(BIN)/python -m pytest -n 2 -q -p no:cacheprovider -k concurrent --repeat $(STRESS_COUNT) $(STRESS_ARGS)

demo: $(STAMP) ## Run every automation locally against a moto sandbox and print the mails
	@PYTHONPATH=layers/autopilot/python:functions:. $(BIN)/python -m demo $(DEMO_ARGS)

bench: $(STAMP) ## Benchmarks: API calls per resource, scaling, cold start, cost (writes docs/benchmarks.md)
	@PYTHONPATH=layers/autopilot/python:functions:. $(BIN)/python -m bench $(BENCH_ARGS)

# Never through $(STAMP): .venv is neither built nor touched. tools/mutate.py builds its own
# .venv-mutate (requirements-dev.txt + requirements-mutate.txt) and mutates only a copy in /tmp.
# MUTATE_ARGS: group names (--list), --template, --python, --jobs 1, --keep, --no-write.
mutate: ## Mutation testing: mutmut on the safety modules, IAM policy mutants (writes docs/mutation.json)
	@$(PYTHON) tools/mutate.py $(MUTATE_ARGS)

lint: $(STAMP) ## ruff lint and format check
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

format: $(STAMP) ## Format the code with ruff
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy (strict) over the layer and the functions
	@$(BIN)/mypy

scan: $(STAMP) ## checkov on the transformed template (its own pinned .venv-scan; checkov's pins clash with SAM's)
	@$(BIN)/python tools/security_scan.py

validate: $(STAMP) ## sam validate --lint
	@$(BIN)/sam validate --lint

build: $(STAMP) ## sam build (no Docker; the layer is built for arm64 by pip)
	@$(BIN)/sam build

# The artifact for an AWS Organization (docs/organizations.md): one bucket per target region,
# the template without transforms (a service-managed StackSet refuses them).
release: $(STAMP) ## make release PREFIX=<bucket prefix> REGIONS=eu-west-1,us-east-1 [ORG_ID=o-... CREATE_BUCKETS=1] [NO_UPLOAD=1]
	@test -n "$(PREFIX)" -a -n "$(REGIONS)" || { echo "usage: make release PREFIX=<bucket prefix> REGIONS=<region,region> [ORG_ID=o-... CREATE_BUCKETS=1] [NO_UPLOAD=1]"; exit 2; }
	@$(BIN)/python tools/release.py --prefix $(PREFIX) --regions $(REGIONS) $(if $(ORG_ID),--org-id $(ORG_ID)) \
	  $(if $(filter 1 true yes,$(CREATE_BUCKETS)),--create-buckets) $(if $(filter 1 true yes,$(NO_UPLOAD)),--no-upload)

org-deploy: $(STAMP) ## Create or update the StackSet from dist/ (org/stackset.json) [ALARM_EMAIL=... CALL_AS=SELF REGION=...]
	@$(BIN)/python tools/org_deploy.py $(if $(ALARM_EMAIL),--alarm-email $(ALARM_EMAIL)) \
	  $(if $(CALL_AS),--call-as $(CALL_AS)) $(if $(REGION),--region $(REGION)) $(if $(CONFIG),--config $(CONFIG))

check: lint typecheck test scan ## The full gate CI runs: lint, types, tests (with template checks), checkov

new-automation: $(STAMP) ## Scaffold one: make new-automation NAME=snake_name [TRIGGER=schedule|cloudtrail:EventA,EventB|ec2-state:running,terminated] [MUTATING=1]
	@test -n "$(NAME)" || { echo "usage: make new-automation NAME=snake_name [TRIGGER=schedule|cloudtrail:EventA,EventB|ec2-state:running,terminated] [MUTATING=1]"; exit 2; }
	@$(BIN)/python tools/new_automation.py $(NAME) $(if $(TRIGGER),--trigger $(TRIGGER)) $(if $(filter 1 true yes,$(MUTATING)),--mutating)

docs: $(STAMP) ## Regenerate the README's parameter table from template.yaml
	@$(BIN)/python tools/params_table.py

lock: ## Re-pin requirements-dev.txt from requirements-dev.in
	@rm -rf /tmp/ops-autopilot-lock && $(PYTHON) -m venv /tmp/ops-autopilot-lock
	@/tmp/ops-autopilot-lock/bin/pip install --quiet -r requirements-dev.in
	@{ echo "# Generated from requirements-dev.in by 'make lock' (pip freeze of a fresh venv). Do not edit by hand."; \
	  /tmp/ops-autopilot-lock/bin/pip freeze; } > requirements-dev.txt

clean: ## Remove the virtualenv and build output
	rm -rf $(VENV) .venv-scan .venv-mutate .aws-sam dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
