# Two commands do all the set-up (see README):
#   make mock   install everything, run the main job (pipelines/parametric_mock.yaml)
#   make test   install everything, run the test suite (what .ci/run calls)
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install mock test bench docs

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[test]'

mock: install
	astrogen run pipelines/parametric_mock.yaml

test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m pytest -q -n auto --dist loadfile

# the docs site (Sphinx, warnings are errors; runs the tutorials): HTML in docs/_build/html
docs:
	$(PIP) install --quiet --disable-pip-version-check -e '.[docs]'
	TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: install
	$(PYTHON) benchmarks/parametric_throughput.py

# Separate environment for the BaryonForge training-data builder and the baryon benchmark
# (BaryonForge 1.0.0 pins pyccl==2.8.0, numpy 1.*, scipy<1.14): never the main env.
BARYONS_VENV ?= /work/venv-baryons
.PHONY: baryons-env
baryons-env:
	apt-get install -y libgsl-dev libfftw3-dev swig cmake || sudo apt-get install -y libgsl-dev libfftw3-dev swig cmake
	$(PYTHON) -m venv $(BARYONS_VENV)
	$(BARYONS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/baryons.txt
	$(BARYONS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation -r requirements/baryons-post.txt
	$(BARYONS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BARYONS_VENV)/bin/python -c "import BaryonForge, pyccl; print('BaryonForge', BaryonForge.__version__ if hasattr(BaryonForge, '__version__') else '1.0.0', 'pyccl', pyccl.__version__)"
