package gguf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTypes(t *testing.T) {
	cases := []struct {
		t          Type
		name       string
		block, siz int64
	}{
		{TypeF32, "f32", 1, 4}, {TypeF16, "f16", 1, 2}, {TypeBF16, "bf16", 1, 2},
		{TypeQ4_0, "q4_0", 32, 18}, {TypeQ4_1, "q4_1", 32, 20}, {TypeQ5_0, "q5_0", 32, 22},
		{TypeQ5_1, "q5_1", 32, 24}, {TypeQ8_0, "q8_0", 32, 34}, {TypeQ2_K, "q2_K", 256, 84},
		{TypeQ3_K, "q3_K", 256, 110}, {TypeQ4_K, "q4_K", 256, 144}, {TypeQ5_K, "q5_K", 256, 176},
		{TypeQ6_K, "q6_K", 256, 210}, {TypeQ8_K, "q8_K", 256, 292}, {TypeI8, "i8", 1, 1},
		{TypeI16, "i16", 1, 2}, {TypeI32, "i32", 1, 4}, {TypeI64, "i64", 1, 8}, {TypeF64, "f64", 1, 8},
	}
	for _, c := range cases {
		require.Equal(t, c.name, c.t.Name())
		require.Equal(t, c.block, c.t.BlockSize(), c.name)
		require.Equal(t, c.siz, c.t.TypeSize(), c.name)
		p, err := ParseType(c.name)
		require.NoError(t, err)
		require.Equal(t, c.t, p)
	}
	require.Equal(t, Type(12), TypeQ4_K)
	require.Equal(t, Type(30), TypeBF16)
	require.Equal(t, int64(16*144), TypeQ4_K.RowBytes(4096))
	require.Equal(t, int64(-1), TypeQ4_0.RowBytes(100))
	require.Equal(t, int64(400), TypeF32.RowBytes(100))
	p, err := ParseType("Q4_K")
	require.NoError(t, err)
	require.Equal(t, TypeQ4_K, p)
	_, err = ParseType("q4_2")
	require.Error(t, err)
	require.False(t, Type(4).Valid())
	require.Equal(t, "type(4)", Type(4).Name())
}

var allValues = []struct {
	key string
	val any
}{
	{"u8", uint8(200)}, {"i8", int8(-100)}, {"u16", uint16(60000)}, {"i16", int16(-30000)},
	{"u32", uint32(4000000000)}, {"i32", int32(-2000000000)}, {"f32", float32(1.5)},
	{"bool", true}, {"str", "héllo"}, {"u64", uint64(1 << 60)}, {"i64", int64(-1 << 60)},
	{"f64", 3.25}, {"empty", ""},
	{"a.u8", []uint8{1, 2}}, {"a.i8", []int8{-1}}, {"a.u16", []uint16{7}}, {"a.i16", []int16{-7, 7}},
	{"a.u32", []uint32{1, 2, 3}}, {"a.i32", []int32{-3}}, {"a.f32", []float32{0.5, -0.25}},
	{"a.bool", []bool{true, false}}, {"a.str", []string{"a", "", "ccc"}}, {"a.u64", []uint64{9}},
	{"a.i64", []int64{-9}}, {"a.f64", []float64{1e300}}, {"a.none", []string{}},
}

type tensorCase struct {
	name  string
	typ   Type
	shape []int64
}

var someTensors = []tensorCase{
	{"f32", TypeF32, []int64{3, 2}},
	{"f16", TypeF16, []int64{5}},
	{"bf16.4d", TypeBF16, []int64{2, 2, 2, 3}},
	{"q4_0", TypeQ4_0, []int64{64, 2}},
	{"q8_0", TypeQ8_0, []int64{32}},
	{"q4_K", TypeQ4_K, []int64{256, 3}},
	{"q6_K", TypeQ6_K, []int64{512}},
	{"empty", TypeF32, []int64{0, 4}},
	{strings.Repeat("n", MaxNameLen), TypeI32, []int64{7}},
}

func payload(n int64, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*31 + seed
	}
	return b
}

func writeFile(t *testing.T, path string, alignment uint32) {
	w, err := Create(path)
	require.NoError(t, err)
	if alignment != 0 {
		require.NoError(t, w.SetMetadata(AlignmentKey, alignment))
	}
	for _, kv := range allValues {
		require.NoError(t, w.SetMetadata(kv.key, kv.val))
	}
	for _, tc := range someTensors {
		require.NoError(t, w.AddTensor(tc.name, tc.typ, tc.shape))
	}
	for i, tc := range someTensors {
		n, err := tensorBytes(tc.typ, tc.shape)
		require.NoError(t, err)
		require.NoError(t, w.WriteTensorData(tc.name, payload(n, byte(i))))
	}
	require.NoError(t, w.Close())
}

func TestRoundTrip(t *testing.T) {
	for _, align := range []uint32{0, 64, 1} {
		dir := t.TempDir()
		p := filepath.Join(dir, "m.gguf")
		writeFile(t, p, align)
		ents, _ := os.ReadDir(dir)
		require.Len(t, ents, 1, "temporary file left behind")
		f, err := Open(p)
		require.NoError(t, err)
		require.Equal(t, uint32(3), f.Version())
		want := int64(align)
		if align == 0 {
			want = DefaultAlignment
		}
		require.Equal(t, want, f.Alignment())
		keys := f.Keys()
		if align != 0 {
			require.Equal(t, AlignmentKey, keys[0])
			keys = keys[1:]
		}
		require.Len(t, keys, len(allValues))
		for i, kv := range allValues {
			require.Equal(t, kv.key, keys[i])
			require.Equal(t, kv.val, f.Metadata()[kv.key], kv.key)
		}
		s, ok := f.String("str")
		require.True(t, ok)
		require.Equal(t, "héllo", s)
		u, ok := f.Uint32("u32")
		require.True(t, ok)
		require.Equal(t, uint32(4000000000), u)
		_, ok = f.Uint32("i32")
		require.False(t, ok)
		ss, ok := f.Strings("a.str")
		require.True(t, ok)
		require.Equal(t, []string{"a", "", "ccc"}, ss)
		fl, _ := f.Float32("f32")
		require.Equal(t, float32(1.5), fl)
		b, _ := f.Bool("bool")
		require.True(t, b)

		require.Len(t, f.Tensors(), len(someTensors))
		for i, tc := range someTensors {
			info, ok := f.Tensor(tc.name)
			require.True(t, ok)
			require.Equal(t, f.Tensors()[i], info)
			require.Equal(t, tc.typ, info.Type)
			require.Equal(t, tc.shape, info.Shape)
			require.Zero(t, (info.Offset-f.DataOffset())%f.Alignment())
			n, _ := tensorBytes(tc.typ, tc.shape)
			require.Equal(t, n, info.Size)
			data, err := f.Bytes(tc.name)
			require.NoError(t, err)
			require.Equal(t, payload(n, byte(i)), data, tc.name)
		}
		// ggml reads a data section padded after its last tensor too.
		st, _ := os.Stat(p)
		last := f.Tensors()[len(someTensors)-1]
		require.Equal(t, pad(last.Offset+last.Size, f.Alignment()), st.Size())
		require.NoError(t, f.Close())
	}
}

func TestWriterErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "w.gguf")
	w, err := Create(p)
	require.NoError(t, err)
	require.ErrorContains(t, w.AddTensor(strings.Repeat("x", 64), TypeF32, []int64{1}), "is 64 bytes, ggml allows 63")
	require.NoError(t, w.AddTensor("a", TypeF32, []int64{2}))
	require.ErrorContains(t, w.AddTensor("a", TypeF32, []int64{2}), "duplicate tensor name")
	require.ErrorContains(t, w.AddTensor("b", Type(4), []int64{2}), "unknown ggml type 4")
	require.ErrorContains(t, w.AddTensor("b", TypeQ4_0, []int64{31}), "not a multiple of the q4_0 block size 32")
	require.ErrorContains(t, w.AddTensor("b", TypeF32, []int64{1, 1, 1, 1, 1}), "5 dimensions")
	require.ErrorContains(t, w.AddTensor("b", TypeF32, []int64{-1}), "negative dimension")
	require.ErrorContains(t, w.AddTensor("b", TypeF32, []int64{1 << 40, 1 << 30}), "too large")
	require.ErrorContains(t, w.SetMetadata("k", 1), "unsupported value type int")
	require.ErrorContains(t, w.SetMetadata("k", []any{"x"}), "unsupported value type")
	require.ErrorContains(t, w.SetMetadata(AlignmentKey, uint32(3)), "power of two")
	require.ErrorContains(t, w.SetMetadata(AlignmentKey, uint32(64)), "before tensors are added")
	require.NoError(t, w.AddTensor("b", TypeF16, []int64{3}))
	require.ErrorContains(t, w.WriteTensorData("b", make([]byte, 6)), `written out of order: "a" comes next`)
	require.ErrorContains(t, w.WriteTensorData("a", make([]byte, 7)), "got 7 bytes")
	require.NoError(t, w.WriteTensorData("a", make([]byte, 8)))
	require.ErrorContains(t, w.SetMetadata("k", "v"), "after tensor data")
	require.ErrorContains(t, w.AddTensor("c", TypeF32, []int64{1}), "after tensor data")
	require.ErrorContains(t, w.Close(), `tensor "b" was declared but never written`)
	ents, _ := os.ReadDir(dir)
	require.Empty(t, ents)

	w, err = Create(p)
	require.NoError(t, err)
	require.NoError(t, w.AddTensor("a", TypeF32, []int64{2}))
	require.NoError(t, w.WriteTensorData("a", make([]byte, 8)))
	require.NoError(t, w.Abort())
	ents, _ = os.ReadDir(dir)
	require.Empty(t, ents)

	// An empty file (no tensors, no metadata) is valid.
	w, err = Create(p)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	f, err := Open(p)
	require.NoError(t, err)
	require.Empty(t, f.Tensors())
	f.Close()
}

// raw builds GGUF bytes by hand.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw { binary.Write(r, binary.LittleEndian, v); return r }
func (r *raw) u64(v uint64) *raw { binary.Write(r, binary.LittleEndian, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.WriteString(s); return r }

func hdr(nTensors, nKV uint64) *raw {
	r := &raw{}
	r.WriteString("GGUF")
	return r.u32(3).u64(nTensors).u64(nKV)
}

// tensor appends a tensor description.
func (r *raw) tensor(name string, typ uint32, off uint64, shape ...uint64) *raw {
	r.str(name).u32(uint32(len(shape)))
	for _, d := range shape {
		r.u64(d)
	}
	return r.u32(typ).u64(off)
}

// data pads to 32 and appends n bytes.
func (r *raw) data(n int) *raw {
	for r.Len()%32 != 0 {
		r.WriteByte(0)
	}
	r.Write(make([]byte, n))
	return r
}

func TestBadFiles(t *testing.T) {
	good := hdr(1, 1).str("k").u32(typeUint32).u32(7).tensor("t", 0, 0, 4).data(16).Bytes()
	_, err := parse(bytes.NewReader(good), int64(len(good)))
	require.NoError(t, err)
	v1 := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(v1[4:], 1)
	be := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(be[4:], 3)

	cases := map[string]struct {
		data []byte
		want string
	}{
		"short":              {[]byte("GGUF"), "too short"},
		"magic":              {append([]byte("GGML"), good[4:]...), `magic is "GGML"`},
		"version 1":          {v1, "version 1 is not supported"},
		"big endian":         {be, "a big-endian file?"},
		"lying tensor count": {hdr(1<<40, 0).data(64).Bytes(), "tensor count 1099511627776 cannot fit"},
		"lying kv count":     {hdr(0, 1<<40).data(64).Bytes(), "metadata count 1099511627776 cannot fit"},
		"lying key length":   {hdr(0, 1).u64(1 << 40).data(64).Bytes(), "metadata key 0 claims 1099511627776 bytes"},
		"lying string value": {hdr(0, 1).str("k").u32(typeString).u64(1 << 62).Bytes(), `metadata "k" claims 4611686018427387904 bytes`},
		"lying array length": {hdr(0, 1).str("k").u32(typeArray).u32(typeUint32).u64(1 << 50).data(64).Bytes(), `metadata "k" claims 1125899906842624 elements`},
		"lying string array": {hdr(0, 1).str("k").u32(typeArray).u32(typeString).u64(2).u64(1 << 40).data(64).Bytes(), `metadata "k" claims 1099511627776 bytes`},
		"array of arrays":    {hdr(0, 1).str("k").u32(typeArray).u32(typeArray).u64(1).data(64).Bytes(), "array of unsupported value type 9"},
		"unknown value type": {hdr(0, 1).str("k").u32(13).data(64).Bytes(), "unknown value type 13"},
		"truncated value":    {hdr(0, 1).str("k").u32(typeUint64).u32(1).Bytes(), `file ends at byte 41 inside metadata "k"`},
		"duplicate key":      {hdr(0, 2).str("k").u32(typeBool).WriteByte1(1).str("k").u32(typeBool).WriteByte1(1).Bytes(), `duplicate metadata key "k"`},
		"alignment type":     {hdr(0, 1).str(AlignmentKey).u32(typeUint64).u64(32).Bytes(), "general.alignment must be a uint32 power of two"},
		"alignment value":    {hdr(0, 1).str(AlignmentKey).u32(typeUint32).u32(48).Bytes(), "got 48"},
		"name too long":      {hdr(1, 0).tensor(strings.Repeat("x", 64), 0, 0, 4).data(16).Bytes(), "is 64 bytes, ggml allows 63"},
		"too many dims":      {hdr(1, 0).tensor("t", 0, 0, 1, 1, 1, 1, 1).data(16).Bytes(), "has 5 dimensions, ggml allows 4"},
		"unknown type":       {hdr(1, 0).tensor("t", 99, 0, 4).data(16).Bytes(), "unknown ggml type 99"},
		"removed type":       {hdr(1, 0).tensor("t", 4, 0, 4).data(16).Bytes(), "unknown ggml type 4"},
		"negative dim":       {hdr(1, 0).tensor("t", 0, 0, 1<<63).data(16).Bytes(), "negative dimension"},
		"huge shape":         {hdr(1, 0).tensor("t", 0, 0, 1<<40, 1<<40).data(16).Bytes(), "too large"},
		"partial block":      {hdr(1, 0).tensor("t", uint32(TypeQ4_K), 0, 100).data(144).Bytes(), "not a multiple of the q4_K block size 256"},
		"misaligned offset":  {hdr(2, 0).tensor("a", 0, 0, 4).tensor("b", 0, 16, 4).data(64).Bytes(), `tensor "b" offset 16 is not a multiple of the alignment 32`},
		"offset beyond file": {hdr(1, 0).tensor("t", 0, 1<<40, 4).data(16).Bytes(), "offset 1099511627776 is beyond"},
		"data beyond file":   {hdr(1, 0).tensor("t", 0, 32, 4).data(40).Bytes(), "lie beyond its 40 bytes (truncated file?)"},
		"truncated data":     {hdr(1, 0).tensor("t", 0, 0, 1024).data(100).Bytes(), `tensor "t" bytes [0,4096)`},
		"overlap":            {hdr(2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 4).data(64).Bytes(), `tensors "a" and "b" overlap`},
		"duplicate tensor":   {hdr(2, 0).tensor("a", 0, 0, 4).tensor("a", 0, 32, 4).data(64).Bytes(), `duplicate tensor name "a"`},
		"truncated header":   {good[:60], "file ends at byte 60"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.gguf")
			require.NoError(t, os.WriteFile(p, c.data, 0o644))
			_, err := Open(p)
			require.ErrorIs(t, err, ErrFormat)
			require.ErrorContains(t, err, c.want)
			require.ErrorContains(t, err, "bad.gguf: ")
		})
	}
}

func (r *raw) WriteByte1(b byte) *raw { r.WriteByte(b); return r }

func FuzzGGUF(f *testing.F) {
	p := filepath.Join(f.TempDir(), "seed.gguf")
	w, _ := Create(p)
	w.SetMetadata("s", "x")
	w.SetMetadata("a", []string{"a", "b"})
	w.SetMetadata("u", []uint32{1, 2})
	w.AddTensor("t", TypeF32, []int64{4})
	w.AddTensor("q", TypeQ4_0, []int64{32, 2})
	w.WriteTensorData("t", make([]byte, 16))
	w.WriteTensorData("q", make([]byte, 36))
	w.Close()
	seed, _ := os.ReadFile(p)
	f.Add(seed)
	f.Add(hdr(1, 1).str("k").u32(typeUint32).u32(7).tensor("t", 0, 0, 4).data(16).Bytes())
	f.Add(hdr(0, 1).str(AlignmentKey).u32(typeUint32).u32(64).Bytes())
	f.Add(hdr(2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 4).data(64).Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		gf, err := parse(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, ti := range gf.Tensors() {
			b, err := gf.Bytes(ti.Name)
			if err != nil || int64(len(b)) != ti.Size {
				t.Fatalf("%s: %d bytes, %v", ti.Name, len(b), err)
			}
		}
	})
}
