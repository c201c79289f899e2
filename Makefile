# Two commands do all set-up (a .venv is created once by scripts/install.sh):
#   make demo   short Omniglot ProtoNet training + test on CPU, prints accuracy with its 95% CI
#   make test   the unit tests (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python

# LINT=strict (the default) fails `make test` on a lint or format finding; LINT=warn prints the findings and
# goes on to the tests (for a local run in the middle of a change).
LINT ?= strict

.PHONY: install demo test test-slow lint

install:
	bash scripts/install.sh

demo: install
	$(PY) train.py +experiment=omniglot/protonet_demo

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check . || [ "$(LINT)" = warn ]

test: install lint
	TRITON_INTERPRET=1 WANDB_MODE=offline $(PY) -m pytest -m "not slow" --timeout=900 tests

test-slow: install
	TRITON_INTERPRET=1 WANDB_MODE=offline $(PY) -m pytest -m slow tests
