#!/usr/bin/env bash
# Checks that an x86-64 build's extra kernel targets (cpu_x86_64_v3.c,
# cpu_x86_64_v4.c: our kernels under a target pragma, bindings/ggml/
# cpu_targets.h) compile to the same instructions as the kernel files
# compiled with that target's flags on the command line, as `make` compiles
# them on such a CPU: x86-64-v3 and v4 in a plain build (SSE2), v4 in an
# x86-64-v3 one (make portable). For a target this machine cannot run
# (AVX-512 on the Zen 3 dev VM), this is the check there is. Usage:
#   bash ggml/check-target-codegen.sh [gcc|clang ...]
# Prints, per compiler, build and target, the instructions that differ
# (padding, addresses and the operand order of vpcmpeq* aside), and exits 1
# if any do, for a person to read: on the Zen 3 dev VM (session 28) GCC 12
# gave none, and clang 14 for x86-64-v4 named the registers of one block of
# quantize_q8 differently, the same computation (session 29: likewise in
# the x86-64-v3 build). Session 31: GCC 12's x86-64-v4 code (both builds)
# orders the fifth-bit constants of pack_q5_0 and pack_q5_1 (cpu_quant.c)
# differently, in other registers (107 lines), and clang 14 names the
# registers of quantize_act32 differently (13 lines for x86-64-v3, 24 for
# v4): per function, the same instructions but for register names.
set -euo pipefail
src="$(cd "$(dirname "$0")/../bindings/ggml" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
v3="-mavx -mavx2 -mfma -mf16c -mbmi -mbmi2 -mlzcnt -mpopcnt -mmovbe"
v4="$v3 -mavx512f -mavx512bw -mavx512cd -mavx512dq -mavx512vl -mavx512vnni"
# The reference: the same files, a multi-target build forced with the
# target's flags on the command line, its own level (cpu_targets.h's
# PM_OWN_LEVEL) set to the plain build's: 1 (SSE2) or 3.
for level in 1 3; do
	mkdir "$tmp/ref$level"
	cp "$src"/*.c "$src"/*.h "$tmp/ref$level/"
	h="$tmp/ref$level/cpu_targets.h"
	sed -i 's/^#if defined(__x86_64__) \&\& !defined(__AVX512F__) \&\& (defined(__GNUC__) || defined(__clang__))$/#if 1/' "$h"
	sed -i "s/^#if defined(__AVX2__) \&\& defined(__FMA__) \&\& defined(__F16C__)\$/#if $((level / 3))/" "$h"
	[ "$(grep -c '^#if [01]$' "$h")" = 2 ] || { echo "cpu_targets.h's target tests changed: update this script" >&2; exit 1; }
done
# disassemble without addresses, and commutative comparisons in one order
listing() {
	objdump -d --no-show-raw-insn "$1" | grep -v 'file format' |
		sed -E 's/^ *[0-9a-f]+:\s*//; s/[0-9a-f]+ <([^>+]+)(\+0x[0-9a-f]+)?>/<\1>/; s/^[0-9a-f]+ </</; s/ *#.*//; s/-?0x[0-9a-f]+\(%rip\)/(%rip)/' |
		perl -pe 's/(vpcmpeq[bwdq]) %([xyz]mm\d+),%([xyz]mm\d+),/"$1 {" . join(",", sort($2, $3)) . "},"/e' |
		grep -vE '^(nop|xchg +%ax,%ax|cs nopw|data16)' || true
}
compilers=("$@")
[ ${#compilers[@]} -gt 0 ] || compilers=(gcc clang)
status=0
for cc in "${compilers[@]}"; do
	for pair in "plain v3" "plain v4" "x86-64-v3 v4"; do
		read -r build target <<<"$pair"
		base="" level=1 flags=$v3
		[ "$build" = x86-64-v3 ] && base="-march=x86-64-v3" level=3
		[ "$target" = v4 ] && flags=$v4
		"$cc" -O3 -DNDEBUG $base -c "$src/cpu_x86_64_$target.c" -o "$tmp/plain.o"
		"$cc" -O3 -DNDEBUG $base $flags -I"$tmp/ref$level" -c "$tmp/ref$level/cpu_x86_64_$target.c" -o "$tmp/flags.o"
		listing "$tmp/plain.o" >"$tmp/plain.s"
		listing "$tmp/flags.o" >"$tmp/flags.s"
		n=$(diff "$tmp/plain.s" "$tmp/flags.s" | grep -c '^<' || true)
		echo "$cc, $build build, x86-64-$target: $(wc -l <"$tmp/plain.s") instructions, $n differ"
		if [ "$n" -gt 0 ]; then
			diff "$tmp/plain.s" "$tmp/flags.s" | head -20 || true
			status=1
		fi
	done
done
exit $status
