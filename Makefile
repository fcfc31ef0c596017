# photomaker build. `make` builds bin/photomaker tuned for this CPU;
# `make portable` builds one for any x86-64-v3 (Haswell or later) or arm64 CPU;
# `make cuda` (vulkan, rocm) adds a GPU backend library next to the binary.
GO        ?= go
BIN       := bin/photomaker
GGML_SRC   = $(shell $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama)/ml/backend/ggml/ggml
CUDA_ARCH ?= native
# cgo compiles ggml; without SIMD flags its CPU kernels are several times slower.
NATIVE_FLAGS := -O3 -march=native
# Portable: any x86-64 CPU since 2013 (AVX2, FMA, F16C: x86-64-v3), any arm64.
PORTABLE_FLAGS := -O3 $(if $(filter x86_64 amd64,$(shell uname -m)),-march=x86-64-v3)
# ggml's CPU backend then stores q4_K and q4_0 weights interleaved for its
# faster products (about 1.6× for q4_K on AVX2); plain `go build` leaves it out.
CGO_CPPFLAGS += -DGGML_USE_CPU_REPACK
export CGO_CPPFLAGS

.PHONY: all build portable cuda vulkan rocm test test-arm64 bench fuzz clean demo docs

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

# The test command (README and .ci/run use exactly this): vet, every test,
# then each parser's fuzz target for a few seconds beyond its seed corpus.
# Tests run ggml as `make portable` compiles it (SIMD where this CPU has
# AVX2), which is both what users run and several times faster than cgo's
# defaults; plain `go test ./...` works too. Our CPU kernels' tests run
# again as `make` compiles them, for this CPU (AVX-512's wider vectors,
# VNNI), and as cgo's defaults compile them (SSE2 on x86-64: ggml and our
# kernels for that target, ours also for x86-64-v3 and v4, bindings/ggml/
# cpu_targets.h), with our k-quant quantizers, which must then match
# ggml's byte for byte (no fused multiply-adds), and one end-to-end golden.
# On x86-64-v3 our kernels' code for AVX-512 with VNNI, and for AVX-VNNI,
# runs too, its few AVX-512 and VNNI intrinsics emulated (bindings/ggml/
# cpu_emulated.h): the kernel tests, the layers' and models' goldens and
# one end-to-end golden with AVX-512's, the products' tests with AVX-VNNI's.
TEST_FLAGS := -O2 $(if $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo y),-march=x86-64-v3)
EMULATED   := $(if $(findstring x86-64-v3,$(TEST_FLAGS)), \
	$(GO) test -tags pm_emulate_avx512 ./bindings/ggml ./nn ./models/... && \
	$(GO) test -tags pm_emulate_avx512 -run 'EndToEndGoldens/v1$$' ./photomaker && \
	$(GO) test -tags pm_emulate_avxvnni -run 'Emulated|MulMat|Quantiz' ./bindings/ggml &&)
test:
	@unformatted="$$(gofmt -l $$(find . -name '*.go' -not -path './.carry/*' -not -path './build/*'))"; \
	test -z "$$unformatted" || { echo "not gofmt-ed: $$unformatted"; exit 1; }
	export CGO_CFLAGS="$(TEST_FLAGS)" CGO_CXXFLAGS="$(TEST_FLAGS)"; \
	$(GO) vet ./... && $(GO) test ./... && $(EMULATED) \
	CGO_CFLAGS="$(NATIVE_FLAGS)" CGO_CXXFLAGS="$(NATIVE_FLAGS)" $(GO) test -run 'Kernel|MulMatBias|Repack' ./bindings/ggml && \
	CGO_CFLAGS=-O2 CGO_CXXFLAGS=-O2 $(GO) test -run 'QuantizeMatchesGGML|KernelTarget|MissingSIMD' ./bindings/ggml && \
	CGO_CFLAGS=-O2 CGO_CXXFLAGS=-O2 $(GO) test -run 'EndToEndGoldens/v1$$' ./photomaker && \
	$(MAKE) --no-print-directory fuzz FUZZTIME=20000x FUZZMIN=100x

# The tests on arm64 under user-mode emulation, from an x86-64 machine with
# Debian's gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu, clang and qemu-user:
# all of them as a plain arm64 build compiles ggml (ARMv8.0: what `go build`
# and `make portable` give), then ggml's and our CPU kernels and the golden
# pipelines again for an ARMv8.6 core (dotprod, i8mm, fp16: `make` on Apple
# M2, Graviton 3 and the like), with clang: GCC 12 miscompiles ggml there
# (ggml/README.md, "CPU builds"). Go fuses a·b+c into one rounding on arm64
# and not on x86-64, which bit-exact goldens catch only here. Emulated on
# two cores, the photomaker package alone takes more than an hour.
ARM64_GO   := CGO_ENABLED=1 GOARCH=arm64 $(GO)
ARM64_EXEC := qemu-aarch64 -L /usr/aarch64-linux-gnu
ARM64_V86  := -O2 -march=armv8.6-a+dotprod+i8mm+fp16
test-arm64:
	CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ CGO_CFLAGS=-O2 CGO_CXXFLAGS=-O2 \
		$(ARM64_GO) test -exec '$(ARM64_EXEC)' -timeout 180m ./... && \
	CC='clang --target=aarch64-linux-gnu' CXX='clang++ --target=aarch64-linux-gnu' \
		CGO_CFLAGS="$(ARM64_V86)" CGO_CXXFLAGS="$(ARM64_V86)" \
		$(ARM64_GO) test -exec '$(ARM64_EXEC)' -timeout 180m ./bindings/... ./nn/... ./models/... ./photomaker/...

bench:
	CGO_CFLAGS="$(NATIVE_FLAGS)" CGO_CXXFLAGS="$(NATIVE_FLAGS)" $(GO) test -run '^$$' -bench . -benchtime 3x ./bindings/... ./nn/... ./models/...

# Fuzz every parser in turn; longer runs by hand: make fuzz FUZZTIME=1h
# Counts (20000x) rather than durations keep the short CI pass free of
# go test's "context deadline exceeded" when time runs out mid-minimization.
FUZZTIME ?= 1m
FUZZMIN  ?= 3s
FUZZ_TARGETS := FuzzHeader:./weights/safetensors FuzzPickle:./weights/torch FuzzGGUF:./weights/gguf \
	FuzzDecode:./imageproc FuzzEncode:./tokenizer FuzzParseWeights:./tokenizer \
	FuzzDiffusersConfig:./weights FuzzTriggerPrompt:./photomaker FuzzGenerateArgs:./cmd/photomaker \
	FuzzSanitize:./internal/pyjson FuzzNPY:./photomaker FuzzParseRequest:./server
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "== $${t%%:*} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) "$${t#*:}" || exit 1; \
	done

# The main job: a PhotoMaker generation. With models fetched by
# `photomaker pull` it uses them (sdxl + photomaker-v1, 1024², 50 steps);
# otherwise it runs the bundled tiny random-weight model (noise, but the whole
# pipeline runs). MODEL/ADAPTER/ID/PROMPT override.
pulled  = $(shell ./$(BIN) pull --list --json 2>/dev/null | tr '{' '\n' | grep -E '"name":"(sdxl|photomaker-v1)"' | grep -c '"status":"downloaded"')
MODEL   ?= $(if $(filter 2,$(pulled)),sdxl,testdata/tiny-sdxl.safetensors)
ADAPTER ?= $(if $(filter 2,$(pulled)),photomaker-v1,testdata/photomaker/photomaker-v1-tiny.safetensors)
ID      ?= testdata/faces/astronaut_0.png testdata/faces/astronaut_1.png
PROMPT  ?= a photo of a woman img, portrait, sharp focus
DEMO_ARGS ?= $(if $(findstring testdata/,$(MODEL)),--width 128 --height 128 --steps 8 --device cpu,)
# docs/cli.md: the CLI reference, from each command's --help (a test checks it).
docs: build
	@{ echo "# Command-line reference"; echo; \
	  echo "Generated from \`photomaker <command> --help\` (\`make docs\`); every flag also reads \`PHOTOMAKER_<FLAG>\`."; \
	  for c in generate convert info pull serve bench devices version; do \
	    echo; echo "## photomaker $$c"; echo; echo '```'; ./$(BIN) $$c --help 2>&1 | sed 's/[[:space:]]*$$//'; echo '```'; \
	  done; } > docs/cli.md

demo: build
	./$(BIN) generate --model $(MODEL) --photomaker $(ADAPTER) $(foreach f,$(ID),--id-image $(f)) \
		--prompt "$(PROMPT)" $(DEMO_ARGS) --output demo.png --force
	@case "$(MODEL)" in testdata/*) echo "demo.png comes from the tiny random-weight test model (it is noise). For real photos: ./$(BIN) pull (then make demo again), or make demo MODEL=sdxl.safetensors ADAPTER=photomaker-v1.bin ID='a.jpg b.jpg' PROMPT='a photo of a man img, ...'";; esac

clean:
	rm -rf bin build
