#!/usr/bin/env bash
# Runs the GPU checks on a machine that has CUDA, CMake and Ninja but no Go
# and no network (the lent GPU machine). Two halves:
#
#   ggml/gpu-session.sh prepare   # here, with Go: fills .carry/ (ignored by git)
#   ggml/gpu-session.sh run       # there, from the repository root; results in $OUT
#   ggml/gpu-session.sh slim [e2e] | restore   # here, around a call: see below
#   ggml/gpu-session.sh pack      # here, after prepare: .carry as one archive
#   ggml/gpu-session.sh cudalib DIR   # here: a CUDA library brought back (keeplib)
#
# prepare copies the pinned ggml source (the same one cgo compiles) and
# builds portable binaries: photomaker, and the test binaries of
# bindings/ggml (GPU vs CPU op suite) and photomaker (end-to-end golden on
# the GPU). run builds libggml-cuda.so with our CMakeLists.txt (kept in
# build/cuda between calls), then runs the op suite, the end-to-end golden
# (if testdata/ came along) and `photomaker bench --random` at the issue's
# sizes. A call carries at most 64 MiB: slim moves testdata/ (52 MB) out of
# the checkout, keeping only what TestEndToEndOnGPU and
# TestGPUVariantsMatchCPU read with "slim e2e" (about 41 MB); restore brings
# it back (see ggml/README.md). pack squeezes
# .carry (50 MB) into .pack/carry.txz (9 MB), which run unpacks: with
# "slim e2e" everything fits one call.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.carry
case "${1:-}" in
prepare)
	src="$(go list -m -f '{{.Dir}}' github.com/ollama/ollama)/ml/backend/ggml/ggml"
	rm -rf "$CARRY" && mkdir -p "$CARRY"
	cp -r "$src" "$CARRY/ggml" && chmod -R u+w "$CARRY/ggml"
	# No -march=native: the GPU machine's CPU differs from this one.
	export CGO_CFLAGS="-O3 -march=x86-64-v3" CGO_CXXFLAGS="-O3 -march=x86-64-v3" CGO_CPPFLAGS="-DGGML_USE_CPU_REPACK"
	go build -ldflags "-s -w" -o "$CARRY/photomaker" ./cmd/photomaker
	go test -c -ldflags "-s -w" -o "$CARRY/ggml.test" ./bindings/ggml
	go test -c -ldflags "-s -w" -o "$CARRY/photomaker.test" ./photomaker
	go test -c -ldflags "-s -w" -o "$CARRY/unet.test" ./models/unet
	# VULKAN_LIBS: a folder with libggml-vulkan.so built here (`make vulkan`;
	# the GPU machine has no glslc). The machine may lack the Vulkan loader:
	# its package comes along.
	if [ -n "${VULKAN_LIBS:-}" ]; then
		mkdir -p "$CARRY/vulkan" "$CARRY/gl"
		cp "$VULKAN_LIBS"/libggml-vulkan.so "$VULKAN_LIBS"/libggml-base.so* "$CARRY/vulkan/"
		strip "$CARRY/vulkan/"*.so*
		(cd "$CARRY/gl" && apt-get download libvulkan1)
	fi
	du -sh "$CARRY"
	;;
pack)
	# PACK names what of .carry to take (default all): with a carried
	# library, the binaries alone, e.g. PACK="photomaker unet.test".
	# xz: 9 MB where gzip gave 20 (the call's 64 MiB hold the checkout too).
	mkdir -p .pack && rm -f .pack/carry.tgz && tar -cf - $(printf "$CARRY/%s " ${PACK:-.}) | xz -9 -T0 >.pack/carry.txz
	du -sh .pack/carry.txz
	;;
cudalib)
	# The parts of cudalib.tgz that step keeplib brought back (in folder
	# $2), stripped and repacked with xz for the next call's carry.
	tmp=$(mktemp -d) && cat "$2"/cudalib.tgz.* | tar -xzf - -C "$tmp"
	strip "$tmp"/lib/*.so* && mkdir -p .cudalib && tar -cf - -C "$tmp" lib | xz -9 -T0 >.cudalib/cudalib.txz
	rm -rf "$tmp" && du -sh .cudalib/cudalib.txz
	;;
run)
	# Results go to gpu-out/ (ignored); on the device machine, where $OUT is
	# set, they also come back as one archive (a call returns at most 8 files).
	R="$PWD/gpu-out"
	rm -rf "$R" && mkdir -p "$R"
	[ -n "${OUT:-}" ] && trap 'tar -czf "$OUT/results.tgz" -C "$R" .' EXIT
	# unxz FILE: its decompressed bytes, by xz or, without it, python3.
	unxz() {
		if command -v xz >/dev/null; then xz -dc "$1"; else
			python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"
		fi
	}
	# tar keeps the archived times, so a warm machine's build stays current.
	if [ -f .pack/carry.txz ]; then unxz .pack/carry.txz | tar -xf -; fi
	# DEADLINE (seconds from start, 0: none) bounds every step and skips
	# what would not finish, so the call returns before the device time ends.
	deadline=${DEADLINE:-0}
	fits() { ((deadline == 0 || SECONDS + $1 < deadline)) || { echo "skipped $2: deadline" >>"$R/skipped.txt"; false; }; }
	limit() { local cap=$1; ((deadline == 0)) || cap=$((deadline - SECONDS < cap ? deadline - SECONDS : cap)); echo "$((cap > 1 ? cap : 1))"; }
	# STEPS picks parts (a 600 s call may not fit the first CUDA build and
	# every bench): build ops e2e kernels bench vulkan cpu.
	steps=" ${STEPS:-build ops e2e kernels bench vulkan cpu} "
	# A library built by an earlier call (step keeplib; here, `cudalib`
	# repacks it as .cudalib/cudalib.txz, 42 MB) saves the build on a fresh
	# machine; xz or, without it, python3 unpacks it.
	if [[ ! -d "$CARRY/lib" && -f .cudalib/cudalib.txz ]]; then
		mkdir -p "$CARRY"
		unxz .cudalib/cudalib.txz | tar -xf - -C "$CARRY"
	fi
	if [[ $steps == *" build "* || ! -d "$CARRY/lib" ]]; then
		if [ ! -f build/cuda/build.ninja ]; then
			cmake -S . -B build/cuda -G Ninja -DGGML_SRC="$PWD/$CARRY/ggml" -DPM_BACKEND=cuda \
				-DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DPM_OUT="$PWD/$CARRY/lib" \
				>"$R/cmake.txt" 2>&1 || { tail -50 "$R/cmake.txt"; exit 1; }
		fi
		start=$SECONDS
		timeout "$(limit 3600)" cmake --build build/cuda -j "$(nproc)" >"$R/build.txt" 2>&1 || { tail -50 "$R/build.txt"; exit 1; }
		echo "CUDA build: $((SECONDS - start)) s" >>"$R/build.txt"
	fi
	if [[ $steps == *" keeplib "* && -n ${OUT:-} ]]; then
		tar -czf - -C "$CARRY" lib | split -b 15M - "$OUT/cudalib.tgz."
	fi
	nvidia-smi >"$R/nvidia-smi.txt" 2>&1 || true
	# checks PREFIX LIBDIR: the op suite and the e2e golden on that backend.
	checks() {
		export PHOTOMAKER_LIB_PATH="$PWD/$2"
		"$CARRY/photomaker" devices >"$R/${1}devices.txt" 2>&1 || true
		if [[ $steps == *" ops "* ]] && fits 30 "${1}ops"; then
			(cd bindings/ggml && timeout "$(limit 120)" "../../$CARRY/ggml.test" -test.run 'TestGPUMatchesCPU|TestStateUpdatesInPlace|TestWeightOpsRunOnDevice|TestBackendLogsReachLogger' -test.v) >"$R/${1}ops.txt" 2>&1 || true
			(cd models/unet && timeout "$(limit 60)" "../../$CARRY/unet.test" -test.run 'TestGPUGraphPredictsAsCPUKernels' -test.v) >"$R/${1}ops-unet.txt" 2>&1 || true
		fi
		if [[ $steps == *" e2e "* && -f testdata/tiny-sdxl.safetensors ]] && fits 30 "${1}e2e"; then
			(cd photomaker && timeout "$(limit 120)" "../$CARRY/photomaker.test" -test.run 'TestLoadWarmsUpGPU|TestEndToEndOnGPU|TestGPUVariantsMatchCPU' -test.v) >"$R/${1}e2e.txt" 2>&1 || true
			# When the e2e tests fail, and pass again without the warm-up that
			# Load runs on a second backend (nn.Runtime.WarmUp), or with the
			# layer norms kept in the step (unet.foldBlock; the fold broke
			# every f16 GPU image once), the benches run so: timed right.
			passed=$(grep -c '^PASS$' "$R/${1}e2e.txt" || true)
			e2eWithout() { # PREFIX ENV TAG: the e2e tests again with ENV=1; on a pass, keep it
				((passed == 0)) && [[ -z ${!2:-} ]] && fits 30 "${1}e2e with $2" || return 0
				if (cd photomaker && env "$2=1" timeout "$(limit 120)" "../$CARRY/photomaker.test" -test.run 'TestEndToEndOnGPU|TestGPUVariantsMatchCPU' -test.v) >"$R/${1}e2e-$3.txt" 2>&1; then
					export "$2=1"
					passed=1
					echo "$2=1 from here: the e2e tests failed without it and passed with it" >>"$R/skipped.txt"
				fi
			}
			e2eWithout "$1" PHOTOMAKER_NO_WARMUP nowarmup
			e2eWithout "$1" PHOTOMAKER_UNFOLDED unfolded
		fi
	}
	# gguf TYPE: the random weights (made by an earlier --random bench)
	# converted once to a GGUF of TYPE with the adapter merged, so that each
	# quantized bench loads in seconds instead of quantizing on every load.
	gguf() {
		local g="$PWD/build/random/sdxl-pm-$1.gguf" c="$PWD/build/random"
		[ -f "$g" ] && { echo "$g"; return; }
		[ -f "$c/sdxl-full-seed1-g2.safetensors" ] || return 1
		fits 120 "convert $1" || return 1
		timeout "$(limit 300)" "$CARRY/photomaker" convert "$c/sdxl-full-seed1-g2.safetensors" \
			--photomaker "$c/photomaker-v1-full-seed1-g2.safetensors" --type "$1" -o "$g" >"$R/convert-$1.err" 2>&1 || return 1
		echo "$g"
	}
	# benches PREFIX LIBDIR DEVICE SPECS: type:side:steps[:extra flags,
	# comma-separated; NAME=value among them sets the environment, e.g.
	# GGML_CUDA_DISABLE_GRAPHS=1]; a type gguf-T benches the GGUF of type T
	# (see gguf).
	benches() {
		export PHOTOMAKER_LIB_PATH="$PWD/$2"
		[[ $steps == *" bench "* ]] || return 0
		for spec in $4; do
			IFS=: read -r typ side n extra <<<"$spec"
			name="${1}bench-$typ-$side${extra:+-$(tr -cd 'A-Za-z0-9' <<<"$extra")}"
			fits "${BENCH_TIME:-60}" "$name" || continue
			weights=(--random --type "$typ")
			if [[ $typ == gguf-* ]]; then
				g=$(gguf "${typ#gguf-}") || { echo "skipped $name: no GGUF" >>"$R/skipped.txt"; continue; }
				weights=(--model "$g" --type "${typ#gguf-}")
			fi
			envs=() flags=()
			for tok in $(tr , ' ' <<<"$extra"); do
				if [[ $tok =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$tok"); else flags+=("$tok"); fi
			done
			timeout "$(limit "${BENCH_TIMEOUT:-180}")" env "${envs[@]}" "$CARRY/photomaker" bench "${weights[@]}" --device "$3" --width "$side" --height "$side" \
				--steps "$n" --cache-dir "$PWD/build/random" --json "${flags[@]}" >"$R/$name.json" 2>"$R/$name.err" || true
		done
	}
	# Order by worth, in case the deadline comes first: CUDA's checks, the
	# headline bench (verbose: the warm-up's time is logged) and with
	# --vae-f16, the step captured as a CUDA graph (off by default: on an
	# H200 its capture cost more than its replays saved), the same without
	# the warm-up and without the fold (each one's gain on one machine),
	# stream mode, the memory targets, the other CUDA benches, then
	# ggml-vulkan over the NVIDIA driver (when prepared).
	specs=(${BENCH:-f16:1024:20:--profile,--runs=3,PHOTOMAKER_VERBOSE=1 f16:1024:20:--vae-f16,--runs=3 f16:1024:20:--vae-f16,--runs=3,PHOTOMAKER_CUDA_GRAPHS=1 f16:1024:20:PHOTOMAKER_NO_WARMUP=1 f16:1024:20:--runs=3,PHOTOMAKER_UNFOLDED=1 f16:1024:20:--vram=stream gguf-q4_K:1024:20 gguf-q4_K:1024:20:--vram=low f16:512:20 bf16:1024:20 f16:1024:20:--f16-accum gguf-q4_K:1024:20:--quantize-convs q8_0:1024:20})
	checks "" "$CARRY/lib"
	# Our CPU kernels as compiled for x86-64-v4 with VNNI, which the dev VMs
	# could not run (the binaries are x86-64-v3 builds, which add them):
	# their tests where this machine's CPU has AVX-512, and the products
	# and convolutions against x86-64-v3's (GODEBUG leaves AVX-512 out).
	if [[ $steps == *" kernels "* ]] && fits 100 kernels; then
		(
			grep -m1 'model name' /proc/cpuinfo
			grep -m1 -o -w -E 'avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '
			echo
			cd bindings/ggml
			timeout "$(limit 60)" "../../$CARRY/ggml.test" -test.run 'TestKernelTargets|TestKernelTargetsBuilt|TestKernelTargetGODEBUG' -test.v 2>&1 | grep -v -E '^ +--- PASS|^=== RUN'
			for godebug in "" cpu.avx512f=off; do
				echo "GODEBUG=$godebug"
				GODEBUG=$godebug timeout "$(limit 30)" "../../$CARRY/ggml.test" -test.run '^$' -test.bench 'MulMat/(q4_K|q8_0|f16).*ours|MulMat/q6_K|Conv3x3' -test.benchtime 5x 2>&1 | grep -E 'GFLOP|FAIL|panic'
			done
		) >"$R/kernels.txt" 2>&1 || true
	fi
	benches "" "$CARRY/lib" cuda "${specs[*]}"
	if [[ $steps == *" vulkan "* && -d $CARRY/vulkan ]]; then
		ldconfig -p | grep -q libvulkan.so.1 || { for f in "$CARRY"/gl/*.deb; do dpkg -x "$f" /; done; ldconfig; }
		icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
		# Session 6 found no NVIDIA Vulkan ICD: write one when the driver's
		# Vulkan library is there, and record what the machine has.
		glx=$(ldconfig -p | awk '/libGLX_nvidia\.so\.0/ {print $NF; exit}')
		if [[ ! -f $icd && -n $glx ]]; then
			icd="$R/nvidia_icd.json"
			printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$glx" >"$icd"
		fi
		{ ls -l /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; ldconfig -p | grep -i -E 'nvidia|vulkan'; } >"$R/vk-driver.txt" 2>&1 || true
		if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
		checks vk- "$CARRY/vulkan"
		benches vk- "$CARRY/vulkan" vulkan "${VK_BENCH:-f16:1024:20}"
	fi
	# The machine's own CPU, last: 512² steps on all its cores, next to
	# PyTorch fp32's 4.2–7.0 s per batch-2 step there (issue #8).
	if [[ $steps == *" cpu "* ]]; then
		benches cpu- "" cpu "${CPU_BENCH:-q8_0:512:1 gguf-q4_K:512:1 f16:512:1}"
	fi
	# One line per bench (summary.txt), then the ends of the logs.
	for f in "$R"/*bench-*.json; do
		[ -s "$f" ] || { echo "$(basename "$f" .json): no result"; continue; }
		awk -v n="$(basename "$f" .json)" -F': ' '
			/^  "(load_seconds|unet_step_seconds|warm_unet_step_seconds|unet_step_tflop|vae_seconds|vae_tflop_per_s|generate_seconds|warm_generate_seconds|peak_device_bytes|device_used_peak_bytes|warm_encode_seconds|warm_first_step_seconds|warm_vae_seconds|warm_other_seconds|warm_load_seconds|cpu_placed_share|encode_seconds)"/ {
				k = $1; gsub(/[ ",]/, "", k); v = $2; gsub(/[ ,]/, "", v); a[k] = v }
			/^  "unet_steps_seconds": \[/ { getline; v = $0; gsub(/[ ,]/, "", v); a["first_step"] = v }
			END { step = a["warm_unet_step_seconds"] > 0 ? a["warm_unet_step_seconds"] : a["unet_step_seconds"]
				printf "%-44s load %6.2f s  step %7.4f s (warm %7.4f, %5.1f TFLOP/s)  vae %6.3f s (%5.1f TFLOP/s)  generate %6.2f s (warm %6.2f)  peak %5.2f GiB (card %5.2f)\n",
				n, a["load_seconds"], a["unet_step_seconds"], a["warm_unet_step_seconds"], (step > 0 ? a["unet_step_tflop"] / step : 0), a["vae_seconds"], a["vae_tflop_per_s"], a["generate_seconds"],
				a["warm_generate_seconds"], a["peak_device_bytes"] / 2^30, a["device_used_peak_bytes"] / 2^30
				printf "%-44s first run: encode %.3f s, first step %.3f s (the GPU warm-up saves from these)\n", "", a["encode_seconds"], a["first_step"]
				if (a["warm_generate_seconds"] > 0) printf "%-44s warm: encode %.3f s, first step %.3f s, VAE %.3f s, other %.3f s; loading again %.2f s\n", "", a["warm_encode_seconds"], a["warm_first_step_seconds"], a["warm_vae_seconds"], a["warm_other_seconds"], a["warm_load_seconds"]
				if (a["cpu_placed_share"] > 0) printf "%-44s CPU computed %.1f%% of a GPU graph'"'"'s products\n", "", 100 * a["cpu_placed_share"] }' "$f"
	done >"$R/summary.txt" 2>&1 || true
	tail -n 4 "$R"/*.txt "$R"/*.err 2>/dev/null | cut -c1-400 | head -120
	cat "$R/summary.txt"
	;;
slim)
	stash="${STASH:-/tmp/pm-testdata}"
	[ -e "$stash" ] && { echo "$stash exists: run restore first" >&2; exit 1; }
	mv testdata "$stash"
	if [ "${2:-}" = e2e ]; then
		mkdir -p testdata/golden testdata/photomaker testdata/faces
		cp "$stash/tiny-sdxl.safetensors" testdata/
		cp "$stash/photomaker/photomaker-v1-tiny.safetensors" "$stash/photomaker/photomaker-v2-tiny.safetensors" testdata/photomaker/
		cp "$stash/golden/e2e_v1.safetensors" "$stash/golden/id_encoder_v2.safetensors" testdata/golden/
		cp "$stash/faces/astronaut_0.png" "$stash/faces/astronaut_1.png" testdata/faces/
	fi
	du -sh testdata 2>/dev/null || true
	;;
restore)
	stash="${STASH:-/tmp/pm-testdata}"
	[ -d "$stash" ] || { echo "nothing stashed at $stash" >&2; exit 1; }
	rm -rf testdata && mv "$stash" testdata
	git status --short testdata
	;;
*)
	echo "usage: $0 prepare|pack|cudalib DIR|run|slim [e2e]|restore" >&2
	exit 2
	;;
esac
