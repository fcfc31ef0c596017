// Our declarations of the ggml backend interface (the tables of function
// pointers a backend fills in: ggml-backend-impl.h of the pinned ggml,
// interface version 2 with ollama's additions), for the one backend of our
// own: the virtual GPU that tests run GPU code paths on (vgpu.c). Field
// order must match the library; vgpu_test.go checks it by driving the
// library through these tables (a buffer type, buffer, backend, device and
// registry built here are used by ggml's own scheduler and allocator).
#ifndef PHOTOMAKER_VGPU_H
#define PHOTOMAKER_VGPU_H

#include "ggml_api.h"

typedef void * ggml_backend_graph_plan_t;
typedef struct ggml_backend_event * ggml_backend_event_t;
typedef struct {
	unsigned char bytes[16];
} ggml_guid;
typedef ggml_guid * ggml_guid_t;

struct ggml_backend_buffer_type_i {
	const char * (*get_name)(ggml_backend_buffer_type_t buft);
	ggml_backend_buffer_t (*alloc_buffer)(ggml_backend_buffer_type_t buft, size_t size);
	size_t (*get_alignment)(ggml_backend_buffer_type_t buft);
	size_t (*get_max_size)(ggml_backend_buffer_type_t buft);
	size_t (*get_alloc_size)(ggml_backend_buffer_type_t buft, const struct ggml_tensor * tensor);
	bool (*is_host)(ggml_backend_buffer_type_t buft);
	ggml_backend_buffer_t (*noalloc_buffer)(ggml_backend_buffer_type_t buft, size_t size);
};

struct ggml_backend_buffer_type {
	struct ggml_backend_buffer_type_i iface;
	ggml_backend_dev_t device;
	void * context;
	bool no_alloc;
};

struct ggml_backend_buffer_i {
	void (*free_buffer)(ggml_backend_buffer_t buffer);
	void * (*get_base)(ggml_backend_buffer_t buffer);
	enum ggml_status (*init_tensor)(ggml_backend_buffer_t buffer, struct ggml_tensor * tensor);
	void (*memset_tensor)(ggml_backend_buffer_t buffer, struct ggml_tensor * tensor, uint8_t value, size_t offset, size_t size);
	void (*set_tensor)(ggml_backend_buffer_t buffer, struct ggml_tensor * tensor, const void * data, size_t offset, size_t size);
	void (*get_tensor)(ggml_backend_buffer_t buffer, const struct ggml_tensor * tensor, void * data, size_t offset, size_t size);
	bool (*cpy_tensor)(ggml_backend_buffer_t buffer, const struct ggml_tensor * src, struct ggml_tensor * dst);
	void (*clear)(ggml_backend_buffer_t buffer, uint8_t value);
	void (*reset)(ggml_backend_buffer_t buffer);
};

struct ggml_backend_buffer {
	struct ggml_backend_buffer_i iface;
	ggml_backend_buffer_type_t buft;
	void * context;
	size_t size;
	enum ggml_backend_buffer_usage usage;
	bool no_alloc;
};

ggml_backend_buffer_t ggml_backend_buffer_init(ggml_backend_buffer_type_t buft, struct ggml_backend_buffer_i iface, void * context, size_t size);

struct ggml_backend_i {
	const char * (*get_name)(ggml_backend_t backend);
	void (*free)(ggml_backend_t backend);
	void (*set_tensor_async)(ggml_backend_t backend, struct ggml_tensor * tensor, const void * data, size_t offset, size_t size);
	void (*get_tensor_async)(ggml_backend_t backend, const struct ggml_tensor * tensor, void * data, size_t offset, size_t size);
	bool (*cpy_tensor_async)(ggml_backend_t backend_src, ggml_backend_t backend_dst, const struct ggml_tensor * src, struct ggml_tensor * dst);
	void (*synchronize)(ggml_backend_t backend);
	ggml_backend_graph_plan_t (*graph_plan_create)(ggml_backend_t backend, const struct ggml_cgraph * cgraph);
	void (*graph_plan_free)(ggml_backend_t backend, ggml_backend_graph_plan_t plan);
	void (*graph_plan_update)(ggml_backend_t backend, ggml_backend_graph_plan_t plan, const struct ggml_cgraph * cgraph);
	enum ggml_status (*graph_plan_compute)(ggml_backend_t backend, ggml_backend_graph_plan_t plan);
	enum ggml_status (*graph_compute)(ggml_backend_t backend, struct ggml_cgraph * cgraph, int batch_size); // ollama: batch_size
	void (*event_record)(ggml_backend_t backend, ggml_backend_event_t event);
	void (*event_wait)(ggml_backend_t backend, ggml_backend_event_t event);
	void (*graph_optimize)(ggml_backend_t backend, struct ggml_cgraph * cgraph);
	enum ggml_status (*graph_reserve)(ggml_backend_t backend, struct ggml_cgraph * cgraph, bool alloc); // ollama
	size_t (*buffer_size)(ggml_backend_t backend);                                                    // ollama
	void (*reset)(ggml_backend_t backend);                                                            // ollama
};

struct ggml_backend {
	ggml_guid_t guid;
	struct ggml_backend_i iface;
	ggml_backend_dev_t device;
	void * context;
};

struct ggml_backend_dev_caps {
	bool async;
	bool host_buffer;
	bool buffer_from_host_ptr;
	bool events;
};

// ollama's layout: id, device_id, driver and compute versions, library.
struct ggml_backend_dev_props {
	const char * name;
	const char * description;
	size_t memory_free;
	const char * id;
	size_t memory_total;
	enum ggml_backend_dev_type type;
	const char * device_id;
	struct ggml_backend_dev_caps caps;
	int driver_major;
	int driver_minor;
	int compute_major;
	int compute_minor;
	int integrated;
	const char * library;
};

void ggml_backend_dev_get_props(ggml_backend_dev_t device, struct ggml_backend_dev_props * props);

struct ggml_backend_device_i {
	const char * (*get_name)(ggml_backend_dev_t dev);
	const char * (*get_description)(ggml_backend_dev_t dev);
	void (*get_memory)(ggml_backend_dev_t dev, size_t * free, size_t * total);
	enum ggml_backend_dev_type (*get_type)(ggml_backend_dev_t dev);
	void (*get_props)(ggml_backend_dev_t dev, struct ggml_backend_dev_props * props);
	ggml_backend_t (*init_backend)(ggml_backend_dev_t dev, const char * params);
	ggml_backend_buffer_type_t (*get_buffer_type)(ggml_backend_dev_t dev);
	ggml_backend_buffer_type_t (*get_host_buffer_type)(ggml_backend_dev_t dev);
	ggml_backend_buffer_t (*buffer_from_host_ptr)(ggml_backend_dev_t dev, void * ptr, size_t size, size_t max_tensor_size);
	bool (*supports_op)(ggml_backend_dev_t dev, const struct ggml_tensor * op);
	bool (*supports_buft)(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft);
	bool (*offload_op)(ggml_backend_dev_t dev, const struct ggml_tensor * op);
	ggml_backend_event_t (*event_new)(ggml_backend_dev_t dev);
	void (*event_free)(ggml_backend_dev_t dev, ggml_backend_event_t event);
	void (*event_synchronize)(ggml_backend_dev_t dev, ggml_backend_event_t event);
	void (*reset)(ggml_backend_dev_t dev); // ollama
};

struct ggml_backend_device {
	struct ggml_backend_device_i iface;
	ggml_backend_reg_t reg;
	void * context;
};

struct ggml_backend_reg_i {
	const char * (*get_name)(ggml_backend_reg_t reg);
	size_t (*get_device_count)(ggml_backend_reg_t reg);
	ggml_backend_dev_t (*get_device)(ggml_backend_reg_t reg, size_t index);
	void * (*get_proc_address)(ggml_backend_reg_t reg, const char * name);
};

struct ggml_backend_reg {
	int api_version; // 2
	struct ggml_backend_reg_i iface;
	void * context;
};

void ggml_backend_register(ggml_backend_reg_t reg);

// The virtual GPU (vgpu.c): registers it once (later calls change only its
// memory and the threads of backends made next) and returns its device.
ggml_backend_dev_t pm_vgpu_register(size_t memory, int threads);

#endif
