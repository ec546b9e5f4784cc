# Two commands do all the set-up:  `make demo` (the main job) and `make test` (the tests).
# Both create .venv on first use. Override the torch pair with e.g. TORCH='torch==2.9.1 torchvision==0.24.1'.

PYTHON ?= python3
VENV ?= .venv
# torch and the torchvision built against it, installed together: timm, open_clip and the
# Qwen-VL processors need torchvision, and PyPI's torchvision only loads beside its own torch.
# x86_64: the 2.14.1 pair (a CUDA build that runs on the CPU); aarch64: the 2.9.1 CPU pair.
ifeq ($(shell uname -m),aarch64)
TORCH ?= torch==2.9.1 torchvision==0.24.1
else
TORCH ?= torch==2.14.1 torchvision==0.29.1
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.medagent-installed

.PHONY: demo test lint install system-deps clean

$(STAMP): pyproject.toml
	@echo "install: $(VENV) with torch and every extra (first time: several minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned, so the [hf] and [pathology] ranges are already satisfied.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[hf,pathology,dicom,eval,distributed,server,mcp,optimize,postgres,trace,dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: the GIANT navigator on a built-in gigapixel slide, offline (see `medagent demo --help`)
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/medagent demo

## lint: ruff and mypy, as CI runs them
lint: $(STAMP)
	@echo "lint: ruff check and ruff format --check..."
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	@echo "lint: mypy, strict (about a minute, silent until done)..."
	$(BIN)/mypy

## system-deps: Debian packages real-part tests drive, installed when missing (as root):
## chromium for the browser tests, postgresql for the web app's Postgres path, orthanc and
## its DICOMweb plugin for the DICOMweb archive tests, nginx for the web app behind a proxy
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  missing="$$missing postgresql"; \
	command -v Orthanc >/dev/null 2>&1 || missing="$$missing orthanc"; \
	ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* >/dev/null 2>&1 || \
	  missing="$$missing orthanc-dicomweb"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "system-deps: installing$$missing with apt-get..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## test: lint, then the whole test suite (slow and browser tests included)
test: lint system-deps
	@echo "tests: pytest, the whole suite (slow, real-model and browser tests included); the"
	@echo "       first run builds a real vLLM server into a venv: several minutes, no output..."
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .medagent .pytest_cache .mypy_cache .ruff_cache
