# Two commands do all the set-up (see README):
#   make mock   install everything, run the main job (pipelines/parametric_mock.yaml)
#   make test   install everything, run the test suite (what .ci/run calls)
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install mock test bench

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[test]'

mock: install
	astrogen run pipelines/parametric_mock.yaml

test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/parametric_throughput.py
