# Two commands on a fresh machine: `make sweep` and `make test`.
# TORCH_SPEC picks the torch build: the default is the small CPU wheel these machines carry;
# on a GPU cluster use e.g. `make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" test`,
# or TORCH_SPEC= to keep whatever torch pip resolves.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
SPEC        ?= search_spaces/digits_mlp.yaml
ARGS        ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
# Reinstall only when the project's dependencies or install recipe change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: install test sweep lr-test coarse fine seeds stage validate show mlflow-ui clean

install: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install -q $(TORCH_SPEC))
	$(BIN)/python -m pip install -q -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db --host 127.0.0.1 --port 5000

validate: install
	$(BIN)/raysweep validate search_spaces/*.yaml

show: install
	$(BIN)/raysweep show $(SPEC) -n 5

clean:
	rm -rf $(VENV) runs mlruns .pytest_cache
