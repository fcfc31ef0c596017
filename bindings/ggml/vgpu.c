// The virtual GPU: a ggml backend for tests that behaves like a discrete
// GPU towards ggml's scheduler and allocator, and computes on the CPU.
//
// Its buffers are plain host memory that it reports as device memory
// (is_host false), so a graph that mixes it with the CPU splits as it would
// on CUDA: inputs and CPU results are copied in, weights the CPU backend
// holds are copied or their ops offloaded (batches of 32 rows or more, as
// ggml-cuda), and nothing is read through a host pointer unless ggml would
// on a GPU. Each graph split is computed by a CPU backend of its own over
// that memory. GPU-only bugs (operands left pointing at copies nobody fills,
// ops placed on the CPU) then show up in CI, which has no GPU. Our CPU
// kernels (custom ops) are not supported, as on a real GPU.
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

ggml_backend_t ggml_backend_cpu_init(void);
ggml_backend_dev_t ggml_backend_dev_by_type(enum ggml_backend_dev_type type);
enum ggml_status ggml_backend_graph_compute(ggml_backend_t backend, struct ggml_cgraph * cgraph);
int64_t ggml_nrows(const struct ggml_tensor * tensor);

#define VGPU_ALIGN 128

static _Atomic size_t vgpu_total, vgpu_used;
static _Atomic int vgpu_threads = 1;
static struct ggml_backend_device vgpu_dev;

// buffers

struct vgpu_buffer {
	void * data;
	size_t size;
};

static void vgpu_buffer_free(ggml_backend_buffer_t buffer) {
	struct vgpu_buffer * b = buffer->context;
	atomic_fetch_sub(&vgpu_used, b->size);
	free(b->data);
	free(b);
}

static void * vgpu_buffer_base(ggml_backend_buffer_t buffer) { return ((struct vgpu_buffer *)buffer->context)->data; }

static void vgpu_memset_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor * t, uint8_t value, size_t offset, size_t size) {
	(void)buffer;
	memset((char *)t->data + offset, value, size);
}

static void vgpu_set_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor * t, const void * data, size_t offset, size_t size) {
	(void)buffer;
	memcpy((char *)t->data + offset, data, size);
}

static void vgpu_get_tensor(ggml_backend_buffer_t buffer, const struct ggml_tensor * t, void * data, size_t offset, size_t size) {
	(void)buffer;
	memcpy(data, (const char *)t->data + offset, size);
}

// Copies from host memory (the CPU's buffers) or from itself; anything else
// goes through ggml's staging copy.
static bool vgpu_cpy_tensor(ggml_backend_buffer_t buffer, const struct ggml_tensor * src, struct ggml_tensor * dst) {
	(void)buffer;
	if (ggml_backend_buffer_is_host(src->buffer) || src->buffer->buft == dst->buffer->buft) {
		memcpy(dst->data, src->data, ggml_nbytes(src));
		return true;
	}
	return false;
}

static void vgpu_buffer_clear(ggml_backend_buffer_t buffer, uint8_t value) {
	struct vgpu_buffer * b = buffer->context;
	memset(b->data, value, b->size);
}

static const struct ggml_backend_buffer_i vgpu_buffer_iface = {
	.free_buffer = vgpu_buffer_free,
	.get_base = vgpu_buffer_base,
	.memset_tensor = vgpu_memset_tensor,
	.set_tensor = vgpu_set_tensor,
	.get_tensor = vgpu_get_tensor,
	.cpy_tensor = vgpu_cpy_tensor,
	.clear = vgpu_buffer_clear,
};

// buffer type

static const char * vgpu_buft_name(ggml_backend_buffer_type_t buft) {
	(void)buft;
	return "VGPU";
}

static ggml_backend_buffer_t vgpu_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
	size_t rounded = (size + VGPU_ALIGN - 1) / VGPU_ALIGN * VGPU_ALIGN;
	if (rounded == 0) {
		rounded = VGPU_ALIGN;
	}
	// Like a GPU, refuse what does not fit its memory.
	if (atomic_load(&vgpu_used) + size > atomic_load(&vgpu_total)) {
		return NULL;
	}
	struct vgpu_buffer * b = malloc(sizeof *b);
	void * data = aligned_alloc(VGPU_ALIGN, rounded);
	if (b == NULL || data == NULL) {
		free(b);
		free(data);
		return NULL;
	}
	b->data = data;
	b->size = size;
	atomic_fetch_add(&vgpu_used, size);
	return ggml_backend_buffer_init(buft, vgpu_buffer_iface, b, size);
}

static size_t vgpu_alignment(ggml_backend_buffer_type_t buft) {
	(void)buft;
	return VGPU_ALIGN;
}

static bool vgpu_is_host(ggml_backend_buffer_type_t buft) {
	(void)buft;
	return false;
}

static struct ggml_backend_buffer_type vgpu_buft = {
	.iface = {
		.get_name = vgpu_buft_name,
		.alloc_buffer = vgpu_alloc_buffer,
		.get_alignment = vgpu_alignment,
		.is_host = vgpu_is_host,
	},
	.device = &vgpu_dev,
};

// backend: a CPU backend of its own computes each split

static const char * vgpu_name(ggml_backend_t backend) {
	(void)backend;
	return "VGPU0";
}

static void vgpu_free(ggml_backend_t backend) {
	ggml_backend_free(backend->context);
	free(backend);
}

static enum ggml_status vgpu_graph_compute(ggml_backend_t backend, struct ggml_cgraph * cgraph, int batch_size) {
	(void)batch_size;
	return ggml_backend_graph_compute(backend->context, cgraph);
}

static ggml_guid vgpu_guid = {{0x70, 0x6d, 0x2d, 0x76, 0x67, 0x70, 0x75, 0x00, 0x74, 0x65, 0x73, 0x74, 0x73, 0x00, 0x00, 0x01}};

static const struct ggml_backend_i vgpu_backend_iface = {
	.get_name = vgpu_name,
	.free = vgpu_free,
	.graph_compute = vgpu_graph_compute,
};

// device

static const char * vgpu_dev_name(ggml_backend_dev_t dev) {
	(void)dev;
	return "VGPU0";
}

static const char * vgpu_dev_description(ggml_backend_dev_t dev) {
	(void)dev;
	return "virtual GPU for tests (computes on the CPU)";
}

static void vgpu_dev_memory(ggml_backend_dev_t dev, size_t * free, size_t * total) {
	(void)dev;
	size_t t = atomic_load(&vgpu_total), u = atomic_load(&vgpu_used);
	*total = t;
	*free = u < t ? t - u : 0;
}

static enum ggml_backend_dev_type vgpu_dev_type(ggml_backend_dev_t dev) {
	(void)dev;
	return GGML_BACKEND_DEVICE_TYPE_GPU;
}

static void vgpu_dev_props(ggml_backend_dev_t dev, struct ggml_backend_dev_props * props) {
	props->name = vgpu_dev_name(dev);
	props->description = vgpu_dev_description(dev);
	props->id = "0";
	vgpu_dev_memory(dev, &props->memory_free, &props->memory_total);
	props->type = GGML_BACKEND_DEVICE_TYPE_GPU;
	props->library = "VGPU";
}

static ggml_backend_t vgpu_init_backend(ggml_backend_dev_t dev, const char * params) {
	(void)params;
	ggml_backend_t cpu = ggml_backend_cpu_init();
	struct ggml_backend * b = calloc(1, sizeof *b);
	if (cpu == NULL || b == NULL) {
		if (cpu != NULL) {
			ggml_backend_free(cpu);
		}
		free(b);
		return NULL;
	}
	// As many threads as the CPU backend: ggml's threads wait for each
	// other spinning, so more than the cores would crawl.
	ggml_backend_cpu_set_n_threads(cpu, atomic_load(&vgpu_threads));
	b->guid = &vgpu_guid;
	b->iface = vgpu_backend_iface;
	b->device = dev;
	b->context = cpu;
	return b;
}

static ggml_backend_buffer_type_t vgpu_dev_buft(ggml_backend_dev_t dev) {
	(void)dev;
	return &vgpu_buft;
}

// Every op ggml's CPU backend has, but our CPU kernels (custom ops).
static bool vgpu_supports_op(ggml_backend_dev_t dev, const struct ggml_tensor * op) {
	(void)dev;
	return strcmp(ggml_op_name(op->op), "CUSTOM") != 0 && ggml_backend_dev_supports_op(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU), op);
}

static bool vgpu_supports_buft(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft) {
	(void)dev;
	return buft == &vgpu_buft;
}

// ggml-cuda's rule: ops on host weights are worth moving to the device from
// 32 rows (products: columns of the activations) up.
static bool vgpu_offload_op(ggml_backend_dev_t dev, const struct ggml_tensor * op) {
	(void)dev;
	const char * name = ggml_op_name(op->op);
	int64_t batch = ggml_nrows(op);
	if (strcmp(name, "GET_ROWS") == 0) {
		batch = 0;
	} else if (strcmp(name, "MUL_MAT") == 0) {
		batch = op->ne[1];
	}
	return batch >= 32;
}

static struct ggml_backend_device vgpu_dev = {
	.iface = {
		.get_name = vgpu_dev_name,
		.get_description = vgpu_dev_description,
		.get_memory = vgpu_dev_memory,
		.get_type = vgpu_dev_type,
		.get_props = vgpu_dev_props,
		.init_backend = vgpu_init_backend,
		.get_buffer_type = vgpu_dev_buft,
		.supports_op = vgpu_supports_op,
		.supports_buft = vgpu_supports_buft,
		.offload_op = vgpu_offload_op,
	},
};

// registry

static const char * vgpu_reg_name(ggml_backend_reg_t reg) {
	(void)reg;
	return "VGPU";
}

static size_t vgpu_reg_count(ggml_backend_reg_t reg) {
	(void)reg;
	return 1;
}

static ggml_backend_dev_t vgpu_reg_device(ggml_backend_reg_t reg, size_t i) {
	(void)reg;
	(void)i;
	return &vgpu_dev;
}

static void * vgpu_reg_proc(ggml_backend_reg_t reg, const char * name) {
	(void)reg;
	(void)name;
	return NULL;
}

static struct ggml_backend_reg vgpu_reg = {
	.api_version = 2,
	.iface = {
		.get_name = vgpu_reg_name,
		.get_device_count = vgpu_reg_count,
		.get_device = vgpu_reg_device,
		.get_proc_address = vgpu_reg_proc,
	},
};

ggml_backend_dev_t pm_vgpu_register(size_t memory, int threads) {
	static atomic_flag registered = ATOMIC_FLAG_INIT;
	atomic_store(&vgpu_total, memory);
	atomic_store(&vgpu_threads, threads);
	if (!atomic_flag_test_and_set(&registered)) {
		vgpu_dev.reg = &vgpu_reg;
		ggml_backend_register(&vgpu_reg);
	}
	return &vgpu_dev;
}
