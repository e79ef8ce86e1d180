# synthkit: every target builds its own .venv from scratch if needed.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: venv demo test test-tools wheel-smoke bench lint clean

# .venv/.installed: what synthkit itself needs (the demo); .venv/.installed-dev: plus the test and
# lint tools. `make demo` builds only the first.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	# tests compare the deepbet encoder synthkit ships (synthkit/assets/features) with deepbet's own
	# wheel; only its model file is read, so it is installed without its GUI dependencies.
	$(PY) -m pip install -q --no-deps "deepbet==1.0.2"
	# nnunetv2 (tests: nnU-Net's own dataset integrity check) pulls timm -> torchvision, whose wheel
	# is built against the CUDA torch and fails to import with the pinned CPU build; nothing we run
	# imports either, so they are removed again.
	$(PY) -m pip uninstall -q -y torchvision timm
	touch $(DEV_STAMP)

venv: $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthkit demo --out demo_out

test: $(DEV_STAMP) test-tools
	$(PY) -m pytest -n 2 -q tests

# Build the wheel and smoke-test it in a fresh venv (sample / evaluate / privacy on tiny inputs):
# what `pip install synthkit-med` gives a user. Only package installs download.
wheel-smoke:
	bash .ci/wheel_smoke.sh "$(PYTHON)" "$(TORCH)"

# System tools some tests need (dciodvfy from Debian's dicom3tools: DICOM conformance). Installed
# with apt where we are allowed to; otherwise those tests skip and say why.
test-tools:
	@command -v dciodvfy >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq dicom3tools >/dev/null) ; } || \
	  echo "note: dicom3tools (dciodvfy) not installed; the DICOM conformance test will be skipped"

bench: $(DEV_STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check synthkit tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache
