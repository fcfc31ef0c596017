// Our own declarations of exactly the parts of the ggml C API that the Go
// bindings call. The implementation is compiled by ollama's cgo package
// github.com/ollama/ollama/ml/backend/ggml/ggml/src (pinned in go.mod).
// api_test.go checks these declarations against the linked library: struct
// size through ggml_tensor_overhead, enum values through ggml_type_name and
// ggml_op_name, and a round trip through every bound op.
#ifndef PHOTOMAKER_GGML_API_H
#define PHOTOMAKER_GGML_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PM_GGML_MAX_DIMS 4
#define PM_GGML_MAX_SRC 10
#define PM_GGML_MAX_OP_PARAMS 64
#define PM_GGML_MAX_NAME 64 // ollama builds ggml with the default name length

// Element types; values are the GGUF/ggml type ids (a file-format contract).
enum ggml_type {
	GGML_TYPE_F32 = 0,
	GGML_TYPE_F16 = 1,
	GGML_TYPE_Q4_0 = 2,
	GGML_TYPE_Q4_1 = 3,
	GGML_TYPE_Q5_0 = 6,
	GGML_TYPE_Q5_1 = 7,
	GGML_TYPE_Q8_0 = 8,
	GGML_TYPE_Q2_K = 10,
	GGML_TYPE_Q3_K = 11,
	GGML_TYPE_Q4_K = 12,
	GGML_TYPE_Q5_K = 13,
	GGML_TYPE_Q6_K = 14,
	GGML_TYPE_I32 = 26,
	GGML_TYPE_BF16 = 30,
};

enum ggml_prec { GGML_PREC_DEFAULT = 0, GGML_PREC_F32 = 10 };

enum ggml_status {
	GGML_STATUS_ALLOC_FAILED = -2,
	GGML_STATUS_FAILED = -1,
	GGML_STATUS_SUCCESS = 0,
	GGML_STATUS_ABORTED = 1,
};

enum ggml_log_level {
	GGML_LOG_LEVEL_NONE = 0,
	GGML_LOG_LEVEL_DEBUG = 1,
	GGML_LOG_LEVEL_INFO = 2,
	GGML_LOG_LEVEL_WARN = 3,
	GGML_LOG_LEVEL_ERROR = 4,
	GGML_LOG_LEVEL_CONT = 5,
};

enum ggml_scale_mode { GGML_SCALE_MODE_NEAREST = 0 };

enum ggml_glu_op { GGML_GLU_OP_GEGLU_ERF = 4 };

enum ggml_backend_dev_type {
	GGML_BACKEND_DEVICE_TYPE_CPU = 0,
	GGML_BACKEND_DEVICE_TYPE_GPU = 1,
	GGML_BACKEND_DEVICE_TYPE_IGPU = 2,
	GGML_BACKEND_DEVICE_TYPE_ACCEL = 3,
};

enum ggml_backend_buffer_usage {
	GGML_BACKEND_BUFFER_USAGE_ANY = 0,
	GGML_BACKEND_BUFFER_USAGE_WEIGHTS = 1,
	GGML_BACKEND_BUFFER_USAGE_COMPUTE = 2,
};

struct ggml_context;
struct ggml_cgraph;
struct ggml_backend_buffer;
typedef struct ggml_backend * ggml_backend_t;
typedef struct ggml_backend_buffer * ggml_backend_buffer_t;
typedef struct ggml_backend_buffer_type * ggml_backend_buffer_type_t;
typedef struct ggml_backend_device * ggml_backend_dev_t;
typedef struct ggml_backend_reg * ggml_backend_reg_t;
typedef struct ggml_backend_sched * ggml_backend_sched_t;

struct ggml_init_params {
	size_t mem_size;
	void * mem_buffer;
	bool no_alloc;
};

// The tensor header. Field order and sizes must match ggml.h; the Go side
// reads type, ne, nb, op, op_params, src, data and name.
struct ggml_tensor {
	enum ggml_type type;
	struct ggml_backend_buffer * buffer;
	int64_t ne[PM_GGML_MAX_DIMS];
	size_t nb[PM_GGML_MAX_DIMS];
	int op; // enum ggml_op
	int32_t op_params[PM_GGML_MAX_OP_PARAMS / sizeof(int32_t)];
	int32_t flags;
	struct ggml_tensor * src[PM_GGML_MAX_SRC];
	struct ggml_tensor * view_src;
	size_t view_offs;
	void * data;
	char name[PM_GGML_MAX_NAME];
	void * extra;
	char padding[8];
};

typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data);
typedef bool (*ggml_abort_callback)(void * data);
typedef void (*ggml_abort_callback_t)(const char * error_message);

// core
void ggml_log_set(ggml_log_callback cb, void * user_data);
ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t cb);
struct ggml_context * ggml_init(struct ggml_init_params params);
void ggml_free(struct ggml_context * ctx);
size_t ggml_tensor_overhead(void);
size_t ggml_graph_overhead_custom(size_t size, bool grads);
const char * ggml_type_name(enum ggml_type type);
const char * ggml_op_name(int op);
const char * ggml_op_desc(const struct ggml_tensor * t);
size_t ggml_type_size(enum ggml_type type);
int64_t ggml_blck_size(enum ggml_type type);
size_t ggml_row_size(enum ggml_type type, int64_t ne);
size_t ggml_nbytes(const struct ggml_tensor * t);
int64_t ggml_nelements(const struct ggml_tensor * t);
bool ggml_is_contiguous(const struct ggml_tensor * t);
struct ggml_tensor * ggml_new_tensor(struct ggml_context * ctx, enum ggml_type type, int n_dims, const int64_t * ne);
struct ggml_tensor * ggml_set_name(struct ggml_tensor * t, const char * name);
void ggml_set_input(struct ggml_tensor * t);
void ggml_set_output(struct ggml_tensor * t);
struct ggml_tensor * ggml_get_first_tensor(const struct ggml_context * ctx);
struct ggml_tensor * ggml_get_next_tensor(const struct ggml_context * ctx, struct ggml_tensor * t);
struct ggml_cgraph * ggml_new_graph_custom(struct ggml_context * ctx, size_t size, bool grads);
void ggml_build_forward_expand(struct ggml_cgraph * g, struct ggml_tensor * t);
int ggml_graph_n_nodes(struct ggml_cgraph * g);
struct ggml_tensor * ggml_graph_node(struct ggml_cgraph * g, int i);
bool ggml_quantize_requires_imatrix(enum ggml_type type);
typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
typedef void (*ggml_from_float_t)(const float * x, void * y, int64_t k);
// Field order and sizes must match ggml.h (api_test.go checks the fields
// against ggml_type_name/ggml_blck_size/ggml_type_size and to_float
// against a round trip).
struct ggml_type_traits {
	const char * type_name;
	int64_t blck_size;
	int64_t blck_size_interleave;
	size_t type_size;
	bool is_quantized;
	ggml_to_float_t to_float;
	ggml_from_float_t from_float_ref;
};
const struct ggml_type_traits * ggml_get_type_traits(enum ggml_type type);
size_t ggml_quantize_chunk(enum ggml_type type, const float * src, void * dst, int64_t start, int64_t nrows, int64_t n_per_row, const float * imatrix);

// ops
struct ggml_tensor * ggml_mul_mat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
void ggml_mul_mat_set_prec(struct ggml_tensor * a, enum ggml_prec prec);
struct ggml_tensor * ggml_add(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_sub(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_mul(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_div(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_scale(struct ggml_context * ctx, struct ggml_tensor * a, float s);
struct ggml_tensor * ggml_clamp(struct ggml_context * ctx, struct ggml_tensor * a, float min, float max);
struct ggml_tensor * ggml_repeat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_concat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, int dim);
struct ggml_tensor * ggml_fill(struct ggml_context * ctx, struct ggml_tensor * a, float c);
struct ggml_tensor * ggml_gelu(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_gelu_erf(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_gelu_quick(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_silu(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_sigmoid(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_tanh(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_glu(struct ggml_context * ctx, struct ggml_tensor * a, enum ggml_glu_op op, bool swapped);
// Custom ops: fun runs on the CPU backend's threads (ith of nth); n_tasks
// GGML_N_TASKS_MAX takes them all.
typedef void (*ggml_custom2_op_t)(struct ggml_tensor * dst, const struct ggml_tensor * a, const struct ggml_tensor * b, int ith, int nth, void * userdata);
#define GGML_N_TASKS_MAX (-1)
typedef void (*ggml_custom_op_t)(struct ggml_tensor * dst, int ith, int nth, void * userdata);
struct ggml_tensor * ggml_custom_4d(struct ggml_context * ctx, enum ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, struct ggml_tensor ** args, int n_args, ggml_custom_op_t fun, int n_tasks, void * userdata);
// ggml_custom_inplace is a view of a (src[0]) that fun writes, args after it.
struct ggml_tensor * ggml_custom_inplace(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor ** args, int n_args, ggml_custom_op_t fun, int n_tasks, void * userdata);
struct ggml_tensor * ggml_map_custom2(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, ggml_custom2_op_t fun, int n_tasks, void * userdata);
struct ggml_tensor * ggml_norm(struct ggml_context * ctx, struct ggml_tensor * a, float eps);
struct ggml_tensor * ggml_group_norm(struct ggml_context * ctx, struct ggml_tensor * a, int n_groups, float eps);
struct ggml_tensor * ggml_soft_max_ext(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * mask, float scale, float max_bias);
struct ggml_tensor * ggml_flash_attn_ext(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k, struct ggml_tensor * v, struct ggml_tensor * mask, float scale, float max_bias, float logit_softcap);
void ggml_flash_attn_ext_set_prec(struct ggml_tensor * a, enum ggml_prec prec);
struct ggml_tensor * ggml_im2col(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, int s0, int s1, int p0, int p1, int d0, int d1, bool is_2D, enum ggml_type dst_type);
struct ggml_tensor * ggml_conv_2d(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, int s0, int s1, int p0, int p1, int d0, int d1);
struct ggml_tensor * ggml_conv_2d_direct(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, int s0, int s1, int p0, int p1, int d0, int d1);
struct ggml_tensor * ggml_pad_ext(struct ggml_context * ctx, struct ggml_tensor * a, int lp0, int rp0, int lp1, int rp1, int lp2, int rp2, int lp3, int rp3);
struct ggml_tensor * ggml_upscale(struct ggml_context * ctx, struct ggml_tensor * a, int scale_factor, enum ggml_scale_mode mode);
struct ggml_tensor * ggml_interpolate(struct ggml_context * ctx, struct ggml_tensor * a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, uint32_t mode);
struct ggml_tensor * ggml_permute(struct ggml_context * ctx, struct ggml_tensor * a, int axis0, int axis1, int axis2, int axis3);
struct ggml_tensor * ggml_transpose(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_reshape_4d(struct ggml_context * ctx, struct ggml_tensor * a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
struct ggml_tensor * ggml_view_4d(struct ggml_context * ctx, struct ggml_tensor * a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, size_t nb1, size_t nb2, size_t nb3, size_t offset);
struct ggml_tensor * ggml_cont(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_acc_inplace(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, size_t nb1, size_t nb2, size_t nb3, size_t offset);
struct ggml_tensor * ggml_set_inplace(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, size_t nb1, size_t nb2, size_t nb3, size_t offset);
struct ggml_tensor * ggml_cpy(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_cast(struct ggml_context * ctx, struct ggml_tensor * a, enum ggml_type type);
struct ggml_tensor * ggml_get_rows(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_timestep_embedding(struct ggml_context * ctx, struct ggml_tensor * timesteps, int dim, int max_period);
struct ggml_tensor * ggml_arange(struct ggml_context * ctx, float start, float stop, float step);

// backends and devices
size_t ggml_backend_dev_count(void);
ggml_backend_dev_t ggml_backend_dev_get(size_t index);
const char * ggml_backend_dev_name(ggml_backend_dev_t dev);
const char * ggml_backend_dev_description(ggml_backend_dev_t dev);
void ggml_backend_dev_memory(ggml_backend_dev_t dev, size_t * free, size_t * total);
enum ggml_backend_dev_type ggml_backend_dev_type(ggml_backend_dev_t dev);
ggml_backend_t ggml_backend_dev_init(ggml_backend_dev_t dev, const char * params);
ggml_backend_buffer_type_t ggml_backend_dev_buffer_type(ggml_backend_dev_t dev);
ggml_backend_buffer_type_t ggml_backend_dev_host_buffer_type(ggml_backend_dev_t dev);
ggml_backend_buffer_type_t ggml_backend_cpu_buffer_type(void);
bool ggml_backend_dev_supports_op(ggml_backend_dev_t dev, const struct ggml_tensor * op);
ggml_backend_reg_t ggml_backend_dev_backend_reg(ggml_backend_dev_t dev);
const char * ggml_backend_reg_name(ggml_backend_reg_t reg);
ggml_backend_reg_t ggml_backend_load(const char * path);
void * ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name);
// What ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts")
// returns: the device's extra buffer types (the CPU's "CPU_REPACK"), a
// NULL-terminated list.
typedef ggml_backend_buffer_type_t * (*ggml_backend_dev_get_extra_bufts_t)(ggml_backend_dev_t device);
void ggml_backend_free(ggml_backend_t backend);
const char * ggml_backend_name(ggml_backend_t backend);
ggml_backend_dev_t ggml_backend_get_device(ggml_backend_t backend);
int ggml_cpu_has_avx2(void);
int ggml_cpu_has_fma(void);
int ggml_cpu_has_f16c(void);
int ggml_cpu_has_dotprod(void);     // arm64: compiled with ARMv8.2's int8 dot products
int ggml_cpu_has_matmul_int8(void); // arm64: compiled with ARMv8.6's i8mm
int ggml_cpu_has_fp16_va(void);     // arm64: compiled with ARMv8.2's f16 vector arithmetic
void ggml_backend_cpu_set_n_threads(ggml_backend_t backend, int n_threads);
void ggml_backend_cpu_set_abort_callback(ggml_backend_t backend, ggml_abort_callback cb, void * data);
typedef uint16_t ggml_fp16_t;
ggml_fp16_t ggml_fp32_to_fp16(float x); // one value, as ggml's reference quantizers round
float ggml_fp16_to_fp32(ggml_fp16_t x);
void ggml_cpu_fp32_to_fp16(const float * x, ggml_fp16_t * y, int64_t n); // the CPU backend's vectorized conversion
void ggml_cpu_fp16_to_fp32(const ggml_fp16_t * x, float * y, int64_t n);
typedef struct { uint16_t bits; } ggml_bf16_t;
void ggml_cpu_bf16_to_fp32(const ggml_bf16_t * x, float * y, int64_t n);
void ggml_backend_synchronize(ggml_backend_t backend);

// buffers and tensor data
const char * ggml_backend_buft_name(ggml_backend_buffer_type_t buft);
size_t ggml_backend_alloc_ctx_tensors_from_buft_size(struct ggml_context * ctx, ggml_backend_buffer_type_t buft);
ggml_backend_buffer_t ggml_backend_alloc_ctx_tensors_from_buft(struct ggml_context * ctx, ggml_backend_buffer_type_t buft);
void ggml_backend_buffer_free(ggml_backend_buffer_t buffer);
size_t ggml_backend_buffer_get_size(ggml_backend_buffer_t buffer);
ggml_backend_buffer_type_t ggml_backend_buffer_get_type(ggml_backend_buffer_t buffer);
bool ggml_backend_buffer_is_host(ggml_backend_buffer_t buffer);
ggml_backend_buffer_t ggml_backend_buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size);
size_t ggml_backend_buft_get_alignment(ggml_backend_buffer_type_t buft);
size_t ggml_backend_buft_get_alloc_size(ggml_backend_buffer_type_t buft, const struct ggml_tensor * tensor);
void * ggml_backend_buffer_get_base(ggml_backend_buffer_t buffer);
enum ggml_status ggml_backend_tensor_alloc(ggml_backend_buffer_t buffer, struct ggml_tensor * tensor, void * addr);
void ggml_backend_buffer_set_usage(ggml_backend_buffer_t buffer, enum ggml_backend_buffer_usage usage);
enum ggml_backend_buffer_usage ggml_backend_buffer_get_usage(ggml_backend_buffer_t buffer);
enum ggml_status ggml_backend_view_init(struct ggml_tensor * tensor);
void ggml_backend_tensor_set(struct ggml_tensor * t, const void * data, size_t offset, size_t size);
void ggml_backend_tensor_get(const struct ggml_tensor * t, void * data, size_t offset, size_t size);
void ggml_backend_tensor_copy(struct ggml_tensor * src, struct ggml_tensor * dst);

// scheduler
ggml_backend_sched_t ggml_backend_sched_new(ggml_backend_t * backends, ggml_backend_buffer_type_t * bufts, int n_backends, size_t graph_size, bool parallel, bool op_offload);
void ggml_backend_sched_free(ggml_backend_sched_t sched);
bool ggml_backend_sched_reserve(ggml_backend_sched_t sched, struct ggml_cgraph * g);
bool ggml_backend_sched_alloc_graph(ggml_backend_sched_t sched, struct ggml_cgraph * g);
enum ggml_status ggml_backend_sched_graph_compute(ggml_backend_sched_t sched, struct ggml_cgraph * g);
void ggml_backend_sched_reset(ggml_backend_sched_t sched);
void ggml_backend_sched_set_batch_size(ggml_backend_sched_t sched, int batch_size); // ollama's ggml
void ggml_backend_sched_reserve_size(ggml_backend_sched_t sched, struct ggml_cgraph * g, size_t * sizes); // ollama's ggml
int ggml_backend_sched_get_n_splits(ggml_backend_sched_t sched);
size_t ggml_backend_sched_get_buffer_size(ggml_backend_sched_t sched, ggml_backend_t backend);
size_t ggml_backend_sched_get_attempted_buffer_size(ggml_backend_sched_t sched, ggml_backend_t backend);
void ggml_backend_sched_set_tensor_backend(ggml_backend_sched_t sched, struct ggml_tensor * node, ggml_backend_t backend);
ggml_backend_t ggml_backend_sched_get_tensor_backend(ggml_backend_sched_t sched, struct ggml_tensor * node);
// Called with ask=true to learn whether the caller wants node t (the
// scheduler then computes up to t alone and synchronizes), then with
// ask=false once t is computed; returning false there stops the graph.
typedef bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data);
void ggml_backend_sched_set_eval_callback(ggml_backend_sched_t sched, ggml_backend_sched_eval_callback callback, void * user_data);

#endif
