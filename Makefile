# synthkit: every target builds its own .venv from scratch if needed.
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	# deepbet ships the pretrained 3D brain-MRI networks behind `--features deepbet`; only its model
	# files are used, so it is installed without its GUI dependencies (customtkinter, fill_voids).
	$(PY) -m pip install -q --no-deps "deepbet==1.0.2"
	# nnunetv2 (tests: nnU-Net's own dataset integrity check) pulls timm -> torchvision, whose wheel
	# is built against the CUDA torch and fails to import with the pinned CPU build; nothing we run
	# imports either, so they are removed again.
	$(PY) -m pip uninstall -q -y torchvision timm
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthkit demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check synthkit tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache
