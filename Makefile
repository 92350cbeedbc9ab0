# nanossm: `make demo` builds everything and runs the demo; `make test` runs every test.
# Everything the build needs comes from requirements.txt into .venv (Go and gcc come with the
# machine). No GPU, driver or system CUDA is needed to build.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CUDA12_INC = $(SITE)/nvidia/cuda_runtime/include
NVCC = $(SITE)/nvidia/cu13/bin/nvcc
LIBDIR := python/nanossm/_lib
BUILD := build

# sm_80 and sm_90 machine code plus compute_90 PTX for newer GPUs. nvcc 13.0's PTX needs an
# R580+ driver to JIT; the machine code runs on any driver that supports CUDA 12+ (R525+).
GENCODE := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
           -gencode arch=compute_90,code=compute_90
NVCCFLAGS := -O3 -std=c++17 $(GENCODE)

# gorgonia.org/cu compiles against CUDA 12.x cuda.h and links -lcuda: the stub in build/stub
# satisfies the linker; at run time the real driver's libcuda.so.1 is used.
CGO_ENV = CGO_CFLAGS="-I$(CUDA12_INC)" CGO_LDFLAGS="-L$(CURDIR)/$(BUILD)/stub"

# The CUDA backend's host-side tests link and run against the fake driver (tests/fakecuda).
FAKE_CUDA_ENV = CGO_CFLAGS="-I$(CUDA12_INC)" CGO_LDFLAGS="-L$(CURDIR)/$(BUILD)/fakecuda" \
                LD_LIBRARY_PATH="$(CURDIR)/$(BUILD)/fakecuda"

.PHONY: all setup lib kernels check-kernels demo test test-go test-c test-py bench bench-go fuzz clean

all: lib

# One package per pip call, no cache (requirements.txt says why: the disk peak).
$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	set -e; for req in $$(grep -Ev '^[[:space:]]*(#|$$)' requirements.txt); do \
	  $(VENV)/bin/pip install -q --disable-pip-version-check --no-cache-dir --no-deps "$$req"; done
	touch $@

setup: $(VENV)/.installed

$(BUILD)/stub/libcuda.so: tools/cuda_stub.py | setup
	mkdir -p $(BUILD)/stub
	$(PY) tools/cuda_stub.py $(CUDA12_INC) $(BUILD)/stub/cuda_stub.c
	gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o $@ $(BUILD)/stub/cuda_stub.c

# A fake driver for host-side tests of the CUDA backend (tests/fakecuda/fake_cuda.c over the stub).
$(BUILD)/fakecuda/libcuda.so: $(BUILD)/stub/libcuda.so tests/fakecuda/fake_cuda.c tests/fakecuda/fake_cuda.h
	mkdir -p $(BUILD)/fakecuda
	gcc -shared -fPIC -O1 -Wall -Werror -I$(CUDA12_INC) -Wl,-soname,libcuda.so.1 -o $@ \
	  tests/fakecuda/fake_cuda.c $(BUILD)/stub/cuda_stub.c -lpthread
	ln -sf libcuda.so $(BUILD)/fakecuda/libcuda.so.1

# Go's build cache makes these cheap when nothing changed, so they always run.
lib: setup $(BUILD)/stub/libcuda.so
	mkdir -p $(LIBDIR)
	$(CGO_ENV) go build -buildmode=c-shared -o $(LIBDIR)/libnanossm_cpu.so ./capi
	$(CGO_ENV) go build -tags cuda -buildmode=c-shared -o $(LIBDIR)/libnanossm.so ./capi
	rm -f $(LIBDIR)/*.h

# Rebuild the committed module from its source (needs only the pip-installed nvcc).
kernels: setup
	$(NVCC) -fatbin $(NVCCFLAGS) -o kernels/scan.fatbin kernels/scan.cu

# Prove the committed module is what kernels/scan.cu compiles to.
check-kernels: setup
	mkdir -p $(BUILD)
	$(NVCC) -fatbin $(NVCCFLAGS) -o $(BUILD)/scan.fatbin kernels/scan.cu
	cmp $(BUILD)/scan.fatbin kernels/scan.fatbin && echo "check-kernels: kernels/scan.fatbin matches kernels/scan.cu"

demo: lib
	PYTHONPATH=python $(PY) -m nanossm.demo

# vet's unsafeptr check is off: tensor addresses are integers the caller hands over (C or device
# memory, never Go's heap), and core turns host ones into slices on purpose (core/cpu.go).
test-go: setup $(BUILD)/stub/libcuda.so $(BUILD)/fakecuda/libcuda.so
	$(CGO_ENV) go vet -unsafeptr=false ./core/... ./capi/ ./kernels/
	$(CGO_ENV) go test -count=1 ./core/ ./capi/
	$(FAKE_CUDA_ENV) go vet -tags cuda,fakecuda -unsafeptr=false ./core/cuda/
	$(FAKE_CUDA_ENV) go test -race -count=1 -tags cuda,fakecuda ./core/cuda/
	$(CGO_ENV) go test ./capi/ -run '^$$' -fuzz FuzzScanABI -fuzztime $(FUZZ_SMOKE)
	$(CGO_ENV) go test ./capi/ -run '^$$' -fuzz FuzzBackwardABI -fuzztime $(FUZZ_SMOKE)

# Host cost of the C ABI's Go side (conversion, validation, planning, launch against the fake
# driver) and the CPU backend's throughput: programs, not tests.
bench-go: setup $(BUILD)/stub/libcuda.so $(BUILD)/fakecuda/libcuda.so
	$(CGO_ENV) go test ./capi/ -run '^$$' -bench . -benchtime 1000000x -count 3
	go test ./core/ -run '^$$' -bench CPU -benchtime 10x -count 3
	$(FAKE_CUDA_ENV) go test -tags cuda,fakecuda ./core/cuda/ -run '^$$' -bench . -benchtime 1000000x -count 3

# The full fuzz run of the C ABI's argument validation (CI runs a smoke run of it in test-go).
FUZZ_SMOKE ?= 50000x
FUZZTIME ?= 1000000x
fuzz: setup $(BUILD)/stub/libcuda.so
	$(CGO_ENV) go test ./capi/ -run '^$$' -fuzz FuzzScanABI -fuzztime $(FUZZTIME)
	$(CGO_ENV) go test ./capi/ -run '^$$' -fuzz FuzzBackwardABI -fuzztime $(FUZZTIME)

# The C ABI test runs against the CPU flavour here; build/capi_test_cuda (linked against the CUDA
# flavour) also runs the scan on device 0 where a GPU exists (run it there).
test-c: lib
	mkdir -p $(BUILD)
	gcc -O2 -Wall -Werror -Iinclude tests/capi_test.c -o $(BUILD)/capi_test -L$(LIBDIR) -lnanossm_cpu -Wl,-rpath,'$$ORIGIN/../$(LIBDIR)' -lm -ldl
	gcc -O2 -Wall -Werror -Iinclude tests/capi_test.c -o $(BUILD)/capi_test_cuda -L$(LIBDIR) -lnanossm -Wl,-rpath,'$$ORIGIN/../$(LIBDIR)' -Wl,-rpath-link,$(BUILD)/stub -Wl,--allow-shlib-undefined -lm -ldl
	$(BUILD)/capi_test

test-py: lib
	PYTHONPATH=python $(PY) -m pytest -q -rs tests

test: check-kernels test-go test-c test-py

bench: lib
	PYTHONPATH=python $(PY) -m nanossm.bench

clean:
	rm -rf $(BUILD) $(LIBDIR)
