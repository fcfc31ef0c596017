// Our CPU kernels for several targets in one binary, where cgo compiles
// for x86-64 CPUs without AVX-512.
//
// cgo compiles C for the compiler's default target, which on x86-64 is
// SSE2: a plain `go build`, `go install` or Go program importing us got our
// kernels with a quarter of their vector width and without the integer
// products of quantized weights (a q4_K product at 3.5 GFLOP/s in ggml's
// SSE2 code against 150 in ours with AVX2, on the 2-core Zen 3 dev VM).
// Such a build also compiles every kernel file for x86-64-v3 (AVX2, FMA,
// F16C: cpu_x86_64_v3.c) and for x86-64-v4 with VNNI (AVX-512 F, BW, CD,
// DQ, VL and VNNI: cpu_x86_64_v4.c), each target's symbols renamed here
// (suffixes _base, _x86_64_v3 and _x86_64_v4), and cpu_dispatch.c defines
// cpu_kernels.h's functions to call the target that simd.go picks for this
// CPU at start. A build for x86-64-v3 (make portable) adds the x86-64-v4
// one alone, so that its binaries run our kernels with AVX-512 where the
// CPU has it (1.6× faster than AVX2 on a Zen 5). Builds for AVX-512
// (make on such a CPU) and other architectures compile the kernels once,
// under their own names.
#ifndef PHOTOMAKER_CPU_TARGETS_H
#define PHOTOMAKER_CPU_TARGETS_H

// PM_OWN_LEVEL is what the build's own target reaches, evaluated where this
// header is first included (before any target pragma): 3 for x86-64-v3's
// AVX2, FMA and F16C, else 1. A target file compiles the kernels again only
// for a level above it (cpu_kernel_files.h).
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define PM_OWN_LEVEL 3
#else
#define PM_OWN_LEVEL 1
#endif

#if defined(__x86_64__) && !defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define PM_MULTI_TARGET 1
#else
#define PM_MULTI_TARGET 0
#endif

// PM_HAS_V3_TARGET: the kernels are also compiled for x86-64-v3
// (cpu_x86_64_v3.c); in a multi-target build, always for x86-64-v4.
#define PM_HAS_V3_TARGET (PM_MULTI_TARGET && PM_OWN_LEVEL < 3)

// Every symbol of the kernel files, renamed for the target they are
// compiled for (cpu_dispatch.c, which calls them, defines PM_CALLER).
#if PM_MULTI_TARGET && !defined(PM_CALLER)
#ifndef PM_TARGET
#define PM_TARGET base
#endif
#define PM_PASTE(name, target) name##_##target
#define PM_SUFFIX(name, target) PM_PASTE(name, target)
#define PM_RENAMED(name) PM_SUFFIX(name, PM_TARGET)
// cpu_kernels.h
#define pm_geglu_erf PM_RENAMED(pm_geglu_erf)
#define pm_group_norm PM_RENAMED(pm_group_norm)
#define pm_group_norm_fits PM_RENAMED(pm_group_norm_fits)
#define pm_layer_norm PM_RENAMED(pm_layer_norm)
#define pm_layer_norm_fits PM_RENAMED(pm_layer_norm_fits)
#define pm_im2col PM_RENAMED(pm_im2col)
#define pm_im2col_fits PM_RENAMED(pm_im2col_fits)
#define pm_attention PM_RENAMED(pm_attention)
#define pm_attention_fits PM_RENAMED(pm_attention_fits)
#define pm_mul_mat PM_RENAMED(pm_mul_mat)
#define pm_mul_mat_fits PM_RENAMED(pm_mul_mat_fits)
#define pm_mul_mat_bias_fits PM_RENAMED(pm_mul_mat_bias_fits)
#define pm_mul_mat_takes_int PM_RENAMED(pm_mul_mat_takes_int)
#define pm_mul_mat_takes_bf16 PM_RENAMED(pm_mul_mat_takes_bf16)
#define pm_mul_mat_widen_min_n PM_RENAMED(pm_mul_mat_widen_min_n)
#define pm_mul_mat_q8_levels PM_RENAMED(pm_mul_mat_q8_levels)
#define pm_quantize PM_RENAMED(pm_quantize)
#define pm_fuses_multiply_add PM_RENAMED(pm_fuses_multiply_add)
#define pm_conv3x3 PM_RENAMED(pm_conv3x3)
#define pm_conv3x3_fits PM_RENAMED(pm_conv3x3_fits)
#define pm_conv3x3_tile PM_RENAMED(pm_conv3x3_tile)
#define pm_conv3x3_groups PM_RENAMED(pm_conv3x3_groups)
#define pm_set_wino_group_floats PM_RENAMED(pm_set_wino_group_floats)
#define pm_conv1x1 PM_RENAMED(pm_conv1x1)
#define pm_conv1x1_fits PM_RENAMED(pm_conv1x1_fits)
#define pm_kernel_lanes PM_RENAMED(pm_kernel_lanes)
#define pm_kernel_flops PM_RENAMED(pm_kernel_flops)
// cpu_internal.h
#define pm_gemm_block PM_RENAMED(pm_gemm_block)
#define add_tile PM_RENAMED(add_tile)
#define pm_mul_mat_int_fits PM_RENAMED(pm_mul_mat_int_fits)
#define pm_mul_mat_int PM_RENAMED(pm_mul_mat_int)
#define pm_attention_op PM_RENAMED(pm_attention_op)
#define pm_gemm_op PM_RENAMED(pm_gemm_op)
#define pm_int_product_op PM_RENAMED(pm_int_product_op)
#define pm_conv1x1_op PM_RENAMED(pm_conv1x1_op)
#define pm_wino_conv_op PM_RENAMED(pm_wino_conv_op)
#define pm_wino_operands PM_RENAMED(pm_wino_operands)
#endif

#endif
