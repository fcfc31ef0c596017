# photomaker build. `make` builds bin/photomaker tuned for this CPU;
# `make portable` builds one that runs on any x86-64/arm64 CPU;
# `make cuda` (vulkan, rocm) adds a GPU backend library next to the binary.
GO        ?= go
BIN       := bin/photomaker
GGML_SRC   = $(shell $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama)/ml/backend/ggml/ggml
CUDA_ARCH ?= native
# cgo compiles ggml; without SIMD flags its CPU kernels are several times slower.
NATIVE_FLAGS := -O3 -march=native
PORTABLE_FLAGS := -O3

.PHONY: all build portable cuda vulkan rocm test bench fuzz clean demo

all: build

build:
	CGO_CFLAGS="$(NATIVE_FLAGS)" CGO_CXXFLAGS="$(NATIVE_FLAGS)" $(GO) build -o $(BIN) ./cmd/photomaker

portable:
	CGO_CFLAGS="$(PORTABLE_FLAGS)" CGO_CXXFLAGS="$(PORTABLE_FLAGS)" $(GO) build -o $(BIN) ./cmd/photomaker

# GPU backends: built from the pinned ggml source as loadable libraries.
cuda vulkan:
	cmake -S . -B build/$@ -G Ninja -DGGML_SRC=$(GGML_SRC) -DPM_BACKEND=$@ -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCH)
	cmake --build build/$@ -j

rocm:
	cmake -S . -B build/rocm -G Ninja -DGGML_SRC=$(GGML_SRC) -DPM_BACKEND=hip -DCMAKE_BUILD_TYPE=Release
	cmake --build build/rocm -j

# The test command (README and .ci/run use exactly this).
test:
	$(GO) vet ./... && $(GO) test ./...

bench:
	CGO_CFLAGS="$(NATIVE_FLAGS)" CGO_CXXFLAGS="$(NATIVE_FLAGS)" $(GO) test -run '^$$' -bench . -benchtime 3x ./bindings/... ./models/...

# Longer fuzzing by hand: make fuzz FUZZTIME=10m
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzHeader -fuzztime $(FUZZTIME) ./weights/safetensors

demo: build
	./$(BIN) demo

clean:
	rm -rf bin build
