# Two commands do all set-up (a .venv is created once by scripts/install.sh):
#   make demo   short Omniglot ProtoNet training + test on CPU, prints accuracy with its 95% CI
#   make test   the unit tests (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-slow

install:
	bash scripts/install.sh

demo: install
	$(PY) train.py +experiment=omniglot/protonet_demo

test: install
	TRITON_INTERPRET=1 WANDB_MODE=offline $(PY) -m pytest -m "not slow" --timeout=900 tests

test-slow: install
	TRITON_INTERPRET=1 WANDB_MODE=offline $(PY) -m pytest -m slow tests
