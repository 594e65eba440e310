# ofdb_fast: one-command setup. `make demo` runs the main job, `make test` the tests.
# Both create .venv and install what they need; torch/torchvision are pinned so no
# install pulls a multi-GB wheel (these versions install from local disk on CI machines).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OFDB_WITH_CUDA ?= AUTO
export OMP_WAIT_POLICY ?= PASSIVE

TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEV_DEPS := $(TORCH_PINS) "numpy>=1.24,<2.4" pillow tqdm \
	pytest pytest-benchmark scipy scikit-learn opencv-python-headless safetensors \
	faiss-cpu numba timm open-clip-torch scikit-build-core pybind11 ninja
DEMO_DIR ?= runs/demo

.PHONY: all venv install test demo ext sanitize bench clean

all: test

$(VENV)/.deps-stamp: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(DEV_DEPS)
	touch $@

venv: $(VENV)/.deps-stamp

# A real (non-editable) wheel build through scikit-build-core; CMake's build dir persists
# under build/, so reinstalling after an edit only recompiles what changed.
install: venv
	rm -f python/ofdb_fast/_C*.so  # an in-place `make ext` build must not ride along in the wheel
	OFDB_WITH_CUDA=$(OFDB_WITH_CUDA) $(PIP) install --quiet --no-build-isolation --no-deps .

# OFDB_FAST_REQUIRE_EXT=1: a missing or CUDA-less _C fails the run instead of skipping tests.
test: install
	OFDB_FAST_REQUIRE_EXT=1 OFDB_WITH_CUDA=$(OFDB_WITH_CUDA) $(PY) -m pytest -q

demo: install
	$(VENV)/bin/ofdb-fast demo --out $(DEMO_DIR) --overwrite

# Developer loop: build _C in place (python/ofdb_fast/_C*.so), then
#   PYTHONPATH=python $(PY) -m pytest tests/...
ext: venv
	cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) \
		-DOFDB_WITH_CUDA=$(OFDB_WITH_CUDA)
	cmake --build build/dev

# The C++ kernels under AddressSanitizer + UBSan: a CPU-only _C built into a copy of the package
# (build/sanitize/python), the sanitizer runtimes preloaded into Python, the tests that call it;
# the Triton kernels' interpreted loads and stores (memcpy calls) are checked too. (The CUDA
# sources get the same checks in tests/ops/test_cuda_shim.py.) Any invalid access or
# undefined behaviour aborts the run; --capture=sys leaves the sanitizer's report (written to
# file descriptor 2 as the process dies) on the console. CI runs it after `make test`.
SAN_PKG := build/sanitize/python
SANITIZE_TESTS ?= tests/ops tests/fractal tests/patchcore tests/cluster
sanitize: venv
	rm -rf $(SAN_PKG) && mkdir -p $(SAN_PKG) && cp -r python/ofdb_fast $(SAN_PKG)/ && rm -f $(SAN_PKG)/ofdb_fast/_C*.so
	cmake -S . -B build/sanitize/cmake -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) \
		-DOFDB_WITH_CUDA=OFF -DOFDB_SANITIZE=ON -DOFDB_EXT_OUTPUT_DIR=$(abspath $(SAN_PKG))/ofdb_fast
	cmake --build build/sanitize/cmake
	PYTHONPATH=$(SAN_PKG) $(PY) -c "import ofdb_fast; assert '$(SAN_PKG)' in ofdb_fast.__file__, ofdb_fast.__file__"
	LD_PRELOAD="$$(c++ -print-file-name=libasan.so) $$(c++ -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		OFDB_FAST_REQUIRE_EXT=1 OFDB_WITH_CUDA=OFF PYTHONPATH=$(SAN_PKG) \
		$(PY) -m pytest -q -p no:cacheprovider --capture=sys -k "not shim" $(SANITIZE_TESTS)

# Benchmarks (never beside another job: OpenMP timings are meaningless on a busy machine).
bench: install
	$(PY) -m pytest bench -q --benchmark-only --benchmark-json=build/bench.json

clean:
	rm -rf build python/ofdb_fast/_C*.so
