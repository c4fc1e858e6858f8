# Every target works on a fresh clone: it makes .venv with the machine's python3 first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo install install-gpu test test-runtime-only test-js test-browser js-install chromium golden web screenshots bench-js tiny-bundle model bench bench-anomaly bench-score-cost bench-default-score bench-one-class bench-scale bench-series series-venv bench-multivariate bench-fleet bench-nab compat lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime only (numpy, onnxruntime, click, Pillow): no torch.
demo: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/vae-edge sample -n 64 -o samples.png
	$(BIN)/python examples/demo.py

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[train,dev,ray]'

# The runtime on a CUDA machine: onnxruntime-gpu instead of onnxruntime. Both install the
# package `onnxruntime`; removing the CPU one deletes files the GPU one shares, so the GPU
# one is reinstalled after it. (pip then reports onnxruntime as missing: the GPU build
# provides it.)
install-gpu: $(BIN)/python
	$(BIN)/pip install -q -e '.[gpu]'
	$(BIN)/pip uninstall -q -y onnxruntime
	$(BIN)/pip install -q --force-reinstall --no-deps onnxruntime-gpu
	$(BIN)/python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

test: install
	$(BIN)/python -m pytest
	$(MAKE) test-runtime-only
	$(MAKE) test-js
	$(MAKE) test-browser

# The JavaScript runtime (js/): npm packages from the committed lockfile. onnxruntime-node's
# install script downloads binaries from outside and is not run: its CPU binary is inside
# the package.
js/node_modules/.package-lock.json: js/package-lock.json
	cd js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

js-install: js/node_modules/.package-lock.json

# Node's own test runner: the golden vectors with onnxruntime-node and onnxruntime-web's
# wasm, the refusals, samples, timestamps.
test-js: js-install
	cd js && node --test test/runtime.test.js

# Debian's chromium, installed when missing (root or sudo): no package downloads a browser.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The page in real headless Chromium (playwright-core drives /usr/bin/chromium).
test-browser: js-install chromium
	cd js && SCREENSHOTS=0 node --test test/browser.test.js

# The page's screenshots in docs/images (the browser test, writing them).
screenshots: js-install chromium
	cd js && node --test test/browser.test.js

# Inputs and Python's outputs that hold every port to Python (js/test/golden); MODELS=1
# also retrains the two small bundles they use.
golden: install
	$(BIN)/python tests/make_golden.py $(if $(MODELS),--models)

# The page on http://127.0.0.1:8000/ (static files only; PORT=... for another port).
PORT ?= 8000
web: js-install
	node js/web/serve.js $(PORT)

# The runtime's tests again, installed as a runtime-only user on a device with an old
# onnxruntime installs it: `pip install .` beside the oldest onnxruntime supported, with the
# NumPy 1 it was built for (no torch, no onnx; pytest and hypothesis to run them). The
# tests above ran on the newest. The checkout has no vae_edge folder, so the installed
# package is the one tested (checked first).
RUNTIME_VENV := .venv-runtime
OLDEST_ONNXRUNTIME := 1.15.1
test-runtime-only:
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install -q . 'onnxruntime==$(OLDEST_ONNXRUNTIME)' 'numpy<2' 'pytest>=8' 'hypothesis>=6'
	$(RUNTIME_VENV)/bin/python -c "import onnxruntime as o; assert o.__version__ == '$(OLDEST_ONNXRUNTIME)', o.__version__"
	$(RUNTIME_VENV)/bin/python -c "import importlib.util as u; missing = [m for m in ('torch', 'onnx') if u.find_spec(m)]; assert not missing, missing"
	$(RUNTIME_VENV)/bin/python -c "import vae_edge.runtime as r; assert '$(RUNTIME_VENV)' in r.__file__, r.__file__"
	$(RUNTIME_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_scoring.py tests/test_runtime.py tests/test_alarm.py
	$(RUNTIME_VENV)/bin/python -c "from vae_edge.runtime import EdgeVAE; from vae_edge.runtime.score_graphs import check_graphs; [print('score graphs on onnxruntime $(OLDEST_ONNXRUNTIME):', p or 'shipped', check_graphs(EdgeVAE.load(p))) for p in (None, 'tests/data/tiny_bundle', 'tests/data/tiny_series_bundle')]"

# Rebuild tests/data/tiny_bundle, the few-kB table model the runtime tests use (seeded:
# tests/test_export.py checks that it comes out the same).
tiny-bundle: install
	$(BIN)/python tests/make_tiny_bundle.py

# The training run behind the shipped model (about 4 minutes on 2 cores).
build/mnist-run/checkpoint.pt:
	$(MAKE) install
	$(BIN)/vae-edge train --data mnist --out build/mnist-run --epochs 50 --seed 0

# Rebuild the default model shipped in runtime/default_model.
model: build/mnist-run/checkpoint.pt
	$(BIN)/vae-edge export build/mnist-run --out runtime/default_model --force

# Latency, throughput, cold start and installed size against PyTorch eager on the same
# weights (about 6 minutes after installs); writes benchmarks/results/latency.{json,md,png}.
bench: $(BIN)/python build/mnist-run/checkpoint.pt
	$(BIN)/pip install -q -e '.[train,dev,bench]'
	$(BIN)/python benchmarks/latency.py build/mnist-run

# Tabular anomaly benchmark on $(VAE_EDGE_DATA)/odds against PyOD's VAE and IForest
# with the design choices and a leave-one-set-out check (about 40 minutes on 2 cores); writes
# benchmarks/results/anomaly.{json,md}.
bench-anomaly: install
	$(BIN)/pip install -q -e '.[train,dev,bench]'
	$(BIN)/python benchmarks/anomaly.py

# Each default score against the one it replaced (tables, an MNIST digit): batch-1 latency,
# throughput, bundle size (about 2 minutes).
bench-score-cost: install
	$(BIN)/python benchmarks/score_cost.py

# The shipped model's default score against floors of the same quantity: batch 1 against
# the hand-written score, threads, batch 4096 against a NumPy matmul roof, cold start
# against the imports (about 3 minutes).
bench-default-score: install
	$(BIN)/python benchmarks/default_score.py

# One-class MNIST: a model per digit, AUROC on the whole test set (about 7 minutes).
bench-one-class: install
	$(BIN)/python benchmarks/one_class.py

# vae-edge score --engine ray (1 and 2 actors) against the local engine on 1,000,000 table
# rows and 100,000 MNIST-sized images, and a local Ray's start-up (about 5 minutes);
# writes benchmarks/results/scale.{json,md}.
bench-scale: install
	$(BIN)/python benchmarks/scale.py

# Sensor series: vae-edge's windowed models against TSB-AD's own Sub-PCA, Sub-IForest and
# Donut and a rolling z-score on the 28 evaluated NAB series of $(VAE_EDGE_DATA)/nab, and
# the streaming latency per reading (about 45 minutes on 2 cores); writes
# benchmarks/results/series.{json,md,png}. tsb-ad 1.5 asks for numpy < 2 and an unpinned
# torch, so it lives in its own throwaway venv: installed with --no-deps beside what its
# modules import (scikit-learn < 1.6: later releases refuse its estimators) and vae-edge.
SERIES_VENV := .venv-series
bench-series: $(BIN)/python
	$(MAKE) series-venv
	$(SERIES_VENV)/bin/python benchmarks/series.py

series-venv: $(BIN)/python
	test -x $(SERIES_VENV)/bin/python || $(PYTHON) -m venv $(SERIES_VENV)
	$(SERIES_VENV)/bin/pip install -q 'numpy<2' torch==2.13.0 scipy 'scikit-learn<1.6' statsmodels pandas joblib hurst tqdm torchinfo matplotlib numba
	$(SERIES_VENV)/bin/pip install -q --no-deps tsb-ad==1.5
	$(SERIES_VENV)/bin/pip install -q -e '.[train]' 'numpy<2'

# Machines with many sensors: ASD's 12 servers against TSB-AD's multivariate peers (PCA,
# KMeansAD, IForest, KNN, AutoEncoder, CNN, OmniAnomaly) in the same run, the metrics
# vae-edge blames against the experts' (HitRate), and SKAB's 34 runs under its
# leaderboard protocol beside its published board (about 60 minutes on 2 cores, 20 once
# the peers are cached in build/); writes benchmarks/results/multivariate.{json,md,png}.
# The same throwaway venv as bench-series.
bench-multivariate: $(BIN)/python
	$(MAKE) series-venv
	$(SERIES_VENV)/bin/python benchmarks/multivariate.py

# A fleet on Ray: 1,000 series x 1,000 readings through `score --engine ray --series-id`,
# against each series streamed locally, bit for bit, and again with a worker killed
# (about 5 minutes on 2 cores; STEPS=10000 for ten times the readings); writes
# benchmarks/results/fleet.{json,md}.
STEPS ?= 1000
bench-fleet: install
	$(BIN)/python benchmarks/fleet.py --series 1000 --steps $(STEPS) --kill

# Alarms as readings arrive, judged by NAB's own scorer (shared/tools/nab) beside NAB's
# published detectors: every public NAB series of $(VAE_EDGE_DATA)/nab trained on its
# probationary rows and streamed through `vae-edge score - --stream` (about 10 minutes on 2
# cores); writes benchmarks/results/nab.{json,md}, and with DESIGNS=1 nab-designs.{json,md}
# (how the likelihood's constants and the default alarm were chosen). NAB's scorer needs
# pandas < 2 and numpy < 2: its own venv.
NAB_VENV := .venv-nab
bench-nab: install
	test -x $(NAB_VENV)/bin/python || $(PYTHON) -m venv $(NAB_VENV)
	$(NAB_VENV)/bin/pip install -q 'pandas<2' 'numpy<2'
	$(BIN)/python benchmarks/nab.py --python $(NAB_VENV)/bin/python
	test -z "$(DESIGNS)" || $(BIN)/python benchmarks/nab.py --python $(NAB_VENV)/bin/python --designs

# Which onnxruntime releases load the bundles (shipped, MLP and conv, fp32/int8/fp16) and
# give the same numbers: 1.15.1, 1.20.1 and 1.32.0 in throwaway venvs, no torch there
# (about 2 minutes after the install); writes benchmarks/results/compat.{json,md}.
compat: install
	$(BIN)/python benchmarks/compat.py

# The JavaScript runtime's latency and throughput in Node and in Chromium (wasm, one
# thread) beside Python on the same bundles in the same run, and the page's time to its
# first score (about 5 minutes); writes benchmarks/results/js.{json,md}.
bench-js: install js-install chromium
	$(BIN)/python benchmarks/js.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) $(SERIES_VENV) $(NAB_VENV) build samples.png .pytest_cache js/node_modules
