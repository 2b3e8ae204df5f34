# The two commands a new user needs: `make run` and `make test`.
# Both create the virtual environment on first use; nothing else must be installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: run test validate lint bench bench-paper clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

# out-of-sample validation on every phantom preset (reuses the default run's model; ~see docs/results.md)
validate: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/validate.yaml -- results/validation/robustness.csv

# CORES pytest-xdist workers, a module to a worker at a time; those that run whole workflows start first (tests/conftest.py)
test: $(STAMP)
	$(BIN)/python -m pytest -n $(CORES) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

bench: $(STAMP)
	@for b in threshold metrics linking diffusion maskrcnn memory paper_scale dag probe contact_reading halo_view; do \
	  echo "== benchmarks/$$b.py"; $(BIN)/python benchmarks/$$b.py || exit 1; done
	@echo "== benchmarks/paper_volume.py --side 256 --depth 32"
	$(BIN)/python benchmarks/paper_volume.py --side 256 --depth 32 --skip-without-model

# the end-to-end run at paper scale (1024 x 1024 x 256, the default run's model; target <= 60 min, <= 4 GiB);
# the volume without TTA, two slices timed with and without it
bench-paper: $(STAMP)
	$(BIN)/python benchmarks/paper_volume.py --side 1024 --depth 256 --volume-tta off --tta-slices 2

clean-results:
	rm -rf results logs
