# Two commands on a fresh machine: `make sweep` and `make test`.
# TORCH_SPEC is the torch requirement pip installs first. From PyPI, torch==2.13.0 on Linux x86-64 is the
# CUDA build (what a GPU cluster wants; cluster.yaml uses it); the development machines' local index
# serves the small CPU wheel under the same pin. For a CPU build from PyPI's side use
# `make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" ...`; TORCH_SPEC= keeps
# whatever torch pip resolves.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
SPEC        ?= search_spaces/char_lm_small.yaml
ARGS        ?=
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
EXTRAS      ?= test
WORKERS     ?= 2
CLUSTER     ?= cluster.yaml

BIN   := $(VENV)/bin
# Reinstall only when the project's dependencies or install recipe change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: install browser test lint sync report bench bench-quick sweep lr-test coarse fine seeds stage validate show mlflow-ui clean \
        cluster-local cluster-fake cluster-local-down sweep-cluster-local \
        cluster-up cluster-credentials cluster-down cluster-attach cluster-dashboard sweep-cluster

install: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install -q $(TORCH_SPEC))
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-* && touch $@

# Lint first (ruff: pyflakes, pycodestyle, import order, bugbear, pyupgrade; see pyproject.toml), then the suite
# in PYTEST_WORKERS processes (pytest-xdist; 0: in this one). Most of the suite's wall time is waiting (servers,
# clusters, outages, kills), so two workers on two cores overlap it; a file's tests stay on one worker, and
# tests/cluster/ shares one cluster on one worker (tests/conftest.py).
test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The report's and the MLflow UI's browser tests drive the system's Chromium (browsers cannot be
# downloaded here): Debian's package, installed when missing and apt-get can (as root).
CHROMIUM ?= /usr/bin/chromium
APT      := DEBIAN_FRONTEND=noninteractive apt-get
browser:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { $(APT) install -y -q chromium >/dev/null 2>&1 || { $(APT) update -q && $(APT) install -y -q chromium; } >/dev/null; }; } || \
	  echo "no Chromium at $(CHROMIUM): the browser tests will be skipped (install Debian's chromium)"

lint: install
	$(BIN)/ruff check .

# The staged pipeline; each target stops after its stage and the next one goes on from there.
RUN = $(BIN)/raysweep run $(SPEC) $(ARGS)

sweep: install
	$(RUN)

lr-test: install
	$(RUN) --until lr_range_test

coarse: install
	$(RUN) --until coarse

fine: install
	$(RUN) --until fine

seeds: install
	$(RUN) --until seeds

# One search stage of the spec as written, outside the pipeline.
stage: install
	$(BIN)/raysweep sweep $(SPEC) $(ARGS)

# Write to MLflow what a sweep could not (MLflow was down at a stage's end).
sync: install
	$(BIN)/raysweep sync $(SPEC) $(ARGS)

report: install
	$(BIN)/raysweep report $(SPEC) $(ARGS)

# Benchmarks as ratios measured side by side in one run, each with its goal: bench/results/bench.{json,md}
# (bench-quick: the same at small scale, bench_quick.{json,md}).
bench: install
	$(BIN)/python bench/suite.py $(ARGS)

bench-quick: install
	$(BIN)/python bench/suite.py --quick $(ARGS)

MLFLOW_DB   ?= $(CURDIR)/runs/mlflow.db
MLFLOW_PORT ?= 5000
# MLflow 3 opens an experiment in its GenAI view until you pick "Model training" (top left) once; the
# "its runs" link raysweep prints at the end of a command opens the runs directly.
mlflow-ui: install
	@echo "MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)  (runs: pick 'Model training' at the top left, or open the link raysweep printed)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(MLFLOW_PORT)

validate: install
	$(BIN)/raysweep validate search_spaces/*.yaml

show: install
	$(BIN)/raysweep show $(SPEC) -n 5

# A multi-node Ray cluster on this machine: a head and WORKERS worker nodes (token auth, 127.0.0.1 only,
# a `worker` resource on each worker node); it prints the address and token to use. cluster-fake lets
# Ray's autoscaler (fake multi-node provider) start the workers instead.
LOCAL = $(BIN)/python -m raysweep.sweep.local_cluster

cluster-local: install
	$(LOCAL) up --workers $(WORKERS)

cluster-fake: install
	$(LOCAL) up --fake

cluster-local-down:
	$(LOCAL) down

# The pipeline of SPEC as a Ray job on the local cluster (this checkout is the job's working directory).
sweep-cluster-local: install
	$(LOCAL) submit run $(SPEC) $(ARGS)

# AWS, from cluster.yaml: launch (with a token for the cluster), attach, forward the dashboard, stop.
cluster-up: install cluster-credentials
	@test -s ~/.ray/auth_token || $(BIN)/ray get-auth-token --generate >/dev/null
	$(BIN)/ray up -y $(CLUSTER)

# The cluster's MLflow user, made once with a random password, kept in your home (never in the repo):
# the server's basic-auth config and CSRF key, and the client's environment (MLFLOW_TRACKING_USERNAME/PASSWORD).
cluster-credentials:
	@test -s ~/.raysweep/mlflow.env || { mkdir -p ~/.raysweep && chmod 700 ~/.raysweep && \
	pw=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))') && umask 077 && \
	printf '[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///mlflow_auth.db\nadmin_username = raysweep\nadmin_password = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' "$$pw" > ~/.raysweep/mlflow_auth.ini && \
	printf 'MLFLOW_TRACKING_USERNAME=raysweep\nMLFLOW_TRACKING_PASSWORD=%s\n' "$$pw" > ~/.raysweep/mlflow.env && \
	printf 'MLFLOW_FLASK_SERVER_SECRET_KEY=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')" \
	> ~/.raysweep/mlflow_server.env; }

cluster-down: install
	$(BIN)/ray down -y $(CLUSTER)

cluster-attach: install
	$(BIN)/ray attach $(CLUSTER)

cluster-dashboard: install
	$(BIN)/ray dashboard $(CLUSTER)

# The pipeline of SPEC as a Ray job on the AWS cluster, through the dashboard forwarded over SSH.
sweep-cluster: install
	@mkdir -p runs; $(BIN)/ray dashboard $(CLUSTER) > runs/dashboard-forward.log 2>&1 & fwd=$$!; \
	trap "kill $$fwd" EXIT; sleep 5; $(LOCAL) submit --dashboard http://127.0.0.1:8265 run $(SPEC) $(ARGS)

clean:
	rm -rf $(VENV) runs mlruns .pytest_cache
