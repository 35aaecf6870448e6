# Every target builds what it needs in .venv from nothing but python3.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test bench soak clean

$(VENV)/.stamp-base: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q -e .
	touch $@

# torch is pinned to the CPU build on this platform's disk (a range would pull a CUDA build).
$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.stamp-bench: $(VENV)/.stamp-test
	$(VPY) -m pip install -q -e '.[bench]'
	touch $@

demo: $(VENV)/.stamp-base
	$(VPY) examples/demo.py

# The system tests mostly wait on timers and the network: 3 workers on 2 cores
# cut the wall time about 3x (TEST_WORKERS=0 runs them in one process).
TEST_WORKERS ?= 3

test: $(VENV)/.stamp-test
	$(VPY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(VENV)/.stamp-bench
	$(VPY) -m pytest -m bench -s -p no:cacheprovider $(PYTEST_ARGS) benchmarks

soak: $(VENV)/.stamp-test
	$(VPY) -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
