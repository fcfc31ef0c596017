package ggml

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestVirtualGPU checks vgpu.h's declarations of ggml's backend interface
// by driving the virtual GPU through the library's own accessors: each
// table entry must be the one ggml calls, and the props struct must read
// back as the accessors say. The GPU tests then run on it in CI.
func TestVirtualGPU(t *testing.T) {
	dev := RegisterVirtualGPU(1 << 30)
	require.Equal(t, "VGPU0", dev.Name)
	require.Equal(t, "VGPU", dev.Library)
	require.Equal(t, DeviceGPU, dev.Type)
	require.Contains(t, dev.Description, "virtual GPU")
	found, err := FindDevice("vgpu")
	require.NoError(t, err)
	require.Equal(t, dev.p, found.p)
	if auto, err := FindDevice("auto"); err == nil {
		require.NotEqual(t, dev.p, auto.p, "auto never picks the virtual GPU")
	}

	for _, d := range []Device{dev, Devices()[0]} {
		name, desc, typ, free, total := deviceProps(d)
		f, tot := d.Memory()
		require.Equal(t, []any{d.Name, d.Description, d.Type, f, tot}, []any{name, desc, typ, free, total}, d.Name)
	}

	b, err := NewBackend(dev, 0)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, "VGPU0", b.Name())
	require.False(t, b.IsCPU())

	free0, total := dev.Memory()
	require.Equal(t, uint64(1<<30), total)
	ctx := NewContext(1, 0)
	defer ctx.Free()
	x := ctx.NewTensor(TypeF32, 1000)
	buf, err := b.Alloc(ctx)
	require.NoError(t, err)
	require.False(t, x.InHostMemory())
	free1, _ := dev.Memory()
	require.GreaterOrEqual(t, free0-free1, uint64(4000), "device memory in use")
	require.Less(t, free0-free1, uint64(4000+128), "device memory in use (aligned)")
	v := make([]float32, 1000)
	for i := range v {
		v[i] = float32(i) / 7
	}
	require.NoError(t, x.SetData(F32Bytes(v)))
	require.Equal(t, v, x.Float32())
	buf.Free()
	free2, _ := dev.Memory()
	require.Equal(t, free0, free2)

	big := NewContext(1, 0)
	defer big.Free()
	big.NewTensor(TypeF32, 1<<29) // 2 GiB on a 1 GiB device
	_, err = b.Alloc(big)
	require.ErrorIs(t, err, ErrOutOfMemory)
	RegisterVirtualGPU(8 << 30)
}
