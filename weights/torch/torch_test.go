package torch

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gophotomaker/photomaker/internal/golden"
	"github.com/gophotomaker/photomaker/internal/half"
	"github.com/gophotomaker/photomaker/weights/safetensors"
	"github.com/stretchr/testify/require"
)

// pk writes pickle byte streams by hand.
type pk struct{ bytes.Buffer }

func newPK() *pk { p := &pk{}; p.op(opProto, 2); return p }

func (p *pk) op(b ...byte) *pk { p.Write(b); return p }

func (p *pk) str(s string) *pk {
	p.WriteByte(opBinUnicode)
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}

func (p *pk) short(s string) *pk {
	p.op(opShortBinUni, byte(len(s)))
	p.WriteString(s)
	return p
}

func (p *pk) int(v int64) *pk {
	switch {
	case v >= 0 && v < 256:
		p.op(opBinInt1, byte(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.WriteByte(opBinInt)
		binary.Write(p, binary.LittleEndian, int32(v))
	default:
		p.op(opLong1, 8)
		binary.Write(p, binary.LittleEndian, v)
	}
	return p
}

func (p *pk) u32op(op byte, v uint32) *pk {
	p.WriteByte(op)
	binary.Write(p, binary.LittleEndian, v)
	return p
}

func (p *pk) global(module, name string) *pk {
	p.WriteByte(opGlobal)
	p.WriteString(module + "\n" + name + "\n")
	return p
}

func (p *pk) ints(v []int64) *pk {
	p.op(opMark)
	for _, x := range v {
		p.int(x)
	}
	return p.op(opTuple)
}

// spec is one tensor of a hand-written state dict.
type spec struct {
	name, storage, key string
	numel, offset      int64
	size, stride       []int64
}

func (p *pk) tensor(s spec) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2").op(opMark)
	p.op(opMark).str("storage").global("torch", s.storage).str(s.key).str("cpu").int(s.numel).op(opTuple, opBinPersID)
	p.int(s.offset).ints(s.size).ints(s.stride).op(opNewFalse)
	p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce)
	return p.op(opTuple, opReduce)
}

func stateDict(specs ...spec) []byte {
	p := newPK().op(opEmptyDict, opMark)
	for _, s := range specs {
		p.str(s.name).tensor(s)
	}
	return p.op(opSetItems, opStop).Bytes()
}

type member struct {
	name string
	data []byte
	// deflate compresses data; claim, when non-zero, overrides the
	// uncompressed size written in the headers.
	deflate bool
	claim   uint64
}

func zipBytes(t testing.TB, members ...member) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		if !m.deflate && m.claim == 0 {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: m.name, Method: zip.Store})
			require.NoError(t, err)
			w.Write(m.data)
			continue
		}
		var comp bytes.Buffer
		fw, _ := flate.NewWriter(&comp, flate.BestCompression)
		fw.Write(m.data)
		fw.Close()
		size := uint64(len(m.data))
		if m.claim != 0 {
			size = m.claim
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: m.name, Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(m.data),
			CompressedSize64: uint64(comp.Len()), UncompressedSize64: size})
		require.NoError(t, err)
		w.Write(comp.Bytes())
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func writeZip(t *testing.T, members ...member) string {
	p := filepath.Join(t.TempDir(), "x.bin")
	require.NoError(t, os.WriteFile(p, zipBytes(t, members...), 0o644))
	return p
}

func noise(n int) []byte {
	b := make([]byte, n)
	x := uint32(1)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestViews(t *testing.T) {
	pkl := newPK().op(opEmptyDict, opMark).
		str("model").op(opEmptyDict, opMark).
		str("t").tensor(spec{storage: "FloatStorage", key: "0", numel: 6, size: []int64{3, 2}, stride: []int64{1, 3}}).
		str("slice").tensor(spec{storage: "FloatStorage", key: "0", numel: 6, offset: 2, size: []int64{2}, stride: []int64{1}}).
		str("col").tensor(spec{storage: "FloatStorage", key: "0", numel: 6, offset: 1, size: []int64{2}, stride: []int64{3}}).
		str("expand").tensor(spec{storage: "FloatStorage", key: "0", numel: 6, offset: 5, size: []int64{2, 2}, stride: []int64{0, 0}}).
		str("scalar").tensor(spec{storage: "FloatStorage", key: "0", numel: 6, offset: 4, size: []int64{}, stride: []int64{}}).
		str("empty").tensor(spec{storage: "FloatStorage", key: "0", numel: 6, size: []int64{0, 3}, stride: []int64{3, 1}}).
		str("half").tensor(spec{storage: "HalfStorage", key: "1", numel: 2, size: []int64{2}, stride: []int64{1}}).
		op(opSetItems).
		int(7).str("not a dict").
		op(opSetItems, opStop).Bytes()
	for _, deflate := range []bool{false, true} {
		p := writeZip(t,
			member{name: "ckpt/data.pkl", data: pkl},
			member{name: "ckpt/byteorder", data: []byte("little")},
			member{name: "ckpt/data/0", data: f32bytes(0, 1, 2, 3, 4, 5), deflate: deflate},
			member{name: "ckpt/data/1", data: []byte{0x00, 0x3c, 0x00, 0xc0}, deflate: deflate})
		f, err := Open(p)
		require.NoError(t, err)
		var names []string
		for _, tt := range f.Tensors() {
			names = append(names, tt.Name)
		}
		require.Equal(t, []string{"model.col", "model.empty", "model.expand", "model.half", "model.scalar", "model.slice", "model.t"}, names)
		get := func(name string) []float32 {
			v, err := f.Float32(name)
			require.NoError(t, err, name)
			return v
		}
		require.Equal(t, []float32{0, 3, 1, 4, 2, 5}, get("model.t"))
		require.Equal(t, []float32{2, 3}, get("model.slice"))
		require.Equal(t, []float32{1, 4}, get("model.col"))
		require.Equal(t, []float32{5, 5, 5, 5}, get("model.expand"))
		require.Equal(t, []float32{4}, get("model.scalar"))
		require.Equal(t, []float32{}, get("model.empty"))
		require.Equal(t, []float32{1, -2}, get("model.half"))
		info, ok := f.Tensor("model.t")
		require.True(t, ok)
		require.Equal(t, Tensor{Name: "model.t", DType: safetensors.F32, Shape: []int64{3, 2}}, info)
		_, err = f.Bytes("nope")
		require.Error(t, err)
		require.NoError(t, f.Close())
	}
}

// requireMatchesTwin checks every tensor of a torch file against the fp16
// safetensors twin cast to the tensor's dtype; dtypes, when given, are the
// facts from realformats.json.
func requireMatchesTwin(t *testing.T, binPath, twinPath string, dtypes map[string]string) {
	f, err := Open(binPath)
	require.NoError(t, err)
	defer f.Close()
	twin, err := safetensors.Open(twinPath)
	require.NoError(t, err)
	defer twin.Close()
	require.Len(t, f.Tensors(), len(twin.Tensors()))
	counts := map[safetensors.DType]int{}
	for _, tt := range f.Tensors() {
		want, ok := twin.Tensor(tt.Name)
		require.True(t, ok, "twin lacks %s", tt.Name)
		require.Equal(t, want.Shape, tt.Shape, tt.Name)
		require.Equal(t, safetensors.F16, want.DType)
		if dtypes != nil {
			d := map[string]safetensors.DType{"float32": safetensors.F32, "bfloat16": safetensors.BF16, "float16": safetensors.F16}[dtypes[tt.Name]]
			require.Equal(t, d, tt.DType, tt.Name)
		}
		counts[tt.DType]++
		got, err := f.Bytes(tt.Name)
		require.NoError(t, err)
		ref, err := twin.Float32(tt.Name)
		require.NoError(t, err)
		exp := make([]byte, len(ref)*tt.DType.Size())
		switch tt.DType {
		case safetensors.F32:
			copy(exp, f32bytes(ref...))
		case safetensors.BF16:
			half.EncodeBF16(exp, ref)
		case safetensors.F16:
			exp, _ = twin.Bytes(tt.Name)
		default:
			t.Fatalf("%s: unexpected dtype %s", tt.Name, tt.DType)
		}
		require.True(t, bytes.Equal(exp, got), "%s (%s) differs from its twin", tt.Name, tt.DType)
	}
	t.Logf("%s: %d tensors %v", filepath.Base(binPath), len(f.Tensors()), counts)
}

func realDTypes(t *testing.T, file string) map[string]string {
	p := filepath.Join(golden.Root(), "..", "shared", "reference", "realformats", "realformats.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Logf("realformats.json not present; dtypes not checked")
		return nil
	}
	var facts map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &facts))
	var groups map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(facts[file], &groups))
	out := map[string]string{}
	for _, g := range []string{"id_encoder", "lora_weights"} {
		var m map[string]string
		require.NoError(t, json.Unmarshal(groups[g], &m))
		for k, v := range m {
			out[g+"."+k] = v
		}
	}
	return out
}

func TestRealV1(t *testing.T) {
	requireMatchesTwin(t, golden.Path("photomaker/photomaker-v1-real.bin"),
		golden.Path("photomaker/photomaker-v1-tiny.safetensors"), realDTypes(t, "photomaker-v1.bin"))
}

func TestRealV2(t *testing.T) {
	requireMatchesTwin(t, golden.SharedPath(t, "realformats/photomaker-v2.bin"),
		golden.Path("photomaker/photomaker-v2-tiny.safetensors"), realDTypes(t, "photomaker-v2.bin"))
}

func TestTinyBins(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		requireMatchesTwin(t, golden.SharedPath(t, "photomaker/photomaker-"+v+"-tiny.bin"),
			golden.SharedPath(t, "photomaker/photomaker-"+v+"-tiny.safetensors"), nil)
	}
}

func TestRefused(t *testing.T) {
	okStorage := member{name: "a/data/0", data: f32bytes(1, 2, 3, 4)}
	good := spec{name: "w", storage: "FloatStorage", key: "0", numel: 4, size: []int64{4}, stride: []int64{1}}
	deep := newPK()
	for range 100000 {
		deep.op(opMark)
	}
	hugeStr := newPK().u32op(opBinUnicode, 0xffffffff)
	var pklBomb bytes.Buffer
	pklBomb.Write(newPK().op(opEmptyDict).Bytes())
	pklBomb.Write(bytes.Repeat([]byte{opNone, opPop}, 4<<20))
	pklBomb.WriteByte(opStop)
	shared := newPK().op(opEmptyDict).u32op(opLongBinPut, 0).op(opPop)
	for i := uint32(1); i <= 40; i++ {
		shared.op(opEmptyDict, opMark).short("a").u32op(opLongBinGet, i-1).short("b").u32op(opLongBinGet, i-1).op(opSetItems)
		shared.u32op(opLongBinPut, i).op(opPop)
	}
	shared.u32op(opLongBinGet, 40).op(opStop)
	cases := []struct {
		name    string
		members []member
		unsafe  bool
		want    string
	}{
		{name: "os.system", unsafe: true, want: "refusing pickle global os.system: only tensor data is allowed",
			members: []member{{name: "a/data.pkl", data: newPK().global("os", "system").str("echo pwned").op(opTuple1, opReduce, opStop).Bytes()}}},
		{name: "builtins.eval", unsafe: true, want: "refusing pickle global builtins.eval",
			members: []member{{name: "a/data.pkl", data: newPK().global("builtins", "eval").str("1").op(opTuple1, opReduce, opStop).Bytes()}}},
		{name: "builtins.exec", unsafe: true, want: "refusing pickle global builtins.exec",
			members: []member{{name: "a/data.pkl", data: newPK().global("builtins", "exec").Bytes()}}},
		{name: "subprocess.Popen", unsafe: true, want: "refusing pickle global subprocess.Popen",
			members: []member{{name: "a/data.pkl", data: newPK().global("subprocess", "Popen").Bytes()}}},
		{name: "stack os.system", unsafe: true, want: "refusing pickle global os.system",
			members: []member{{name: "a/data.pkl", data: newPK().short("os").short("system").op(opStackGlobal).str("id").op(opTuple1, opReduce, opStop).Bytes()}}},
		{name: "stack builtins.eval", unsafe: true, want: "refusing pickle global builtins.eval",
			members: []member{{name: "a/data.pkl", data: newPK().short("builtins").short("eval").op(opStackGlobal).Bytes()}}},
		{name: "stack builtins.exec", unsafe: true, want: "refusing pickle global builtins.exec",
			members: []member{{name: "a/data.pkl", data: newPK().short("builtins").short("exec").op(opStackGlobal).Bytes()}}},
		{name: "stack subprocess.Popen", unsafe: true, want: "refusing pickle global subprocess.Popen",
			members: []member{{name: "a/data.pkl", data: newPK().short("subprocess").short("Popen").op(opStackGlobal).Bytes()}}},
		{name: "stack global of non-strings", unsafe: true, want: "STACK_GLOBAL with a int",
			members: []member{{name: "a/data.pkl", data: newPK().int(1).short("x").op(opStackGlobal).Bytes()}}},
		{name: "torch.load", unsafe: true, want: "refusing pickle global torch.load",
			members: []member{{name: "a/data.pkl", data: newPK().global("torch", "load").Bytes()}}},
		{name: "reduce chain", unsafe: true, want: "cannot call a dict",
			members: []member{{name: "a/data.pkl", data: newPK().global("collections", "OrderedDict").op(opEmptyTuple, opReduce, opEmptyTuple, opReduce, opStop).Bytes()}}},
		{name: "call a storage class", unsafe: true, want: "refusing to call torch.FloatStorage",
			members: []member{{name: "a/data.pkl", data: newPK().global("torch", "FloatStorage").op(opEmptyTuple, opReduce, opStop).Bytes()}}},
		{name: "OrderedDict with items", unsafe: true, want: "OrderedDict called with 1 arguments",
			members: []member{{name: "a/data.pkl", data: newPK().global("collections", "OrderedDict").op(opEmptyList, opTuple1, opReduce, opStop).Bytes()}}},
		{name: "INST opcode", unsafe: true, want: "refusing pickle opcode 0x69 (INST)",
			members: []member{{name: "a/data.pkl", data: newPK().op(opMark).op([]byte("ios\nsystem\n")...).Bytes()}}},
		{name: "NEWOBJ of a storage", unsafe: true, want: "refusing to instantiate torch.FloatStorage",
			members: []member{{name: "a/data.pkl", data: newPK().global("torch", "FloatStorage").op(opEmptyTuple, opNewObj).Bytes()}}},
		{name: "BUILD on a list", unsafe: true, want: "refusing BUILD on a list",
			members: []member{{name: "a/data.pkl", data: newPK().op(opEmptyList, opEmptyDict, opBuild).Bytes()}}},
		{name: "persistent id not storage", unsafe: true, want: "only 'storage' is allowed",
			members: []member{{name: "a/data.pkl", data: newPK().op(opMark).str("module").global("torch", "FloatStorage").str("0").str("cpu").int(1).op(opTuple, opBinPersID).Bytes()}}},
		{name: "huge memo get", want: "memo index 4294967295 was never stored",
			members: []member{{name: "a/data.pkl", data: newPK().u32op(opLongBinGet, 0xffffffff).Bytes()}}},
		{name: "unset memo get", want: "memo index 200 was never stored",
			members: []member{{name: "a/data.pkl", data: newPK().op(opBinGet, 200).Bytes()}}},
		{name: "huge long binput", want: "memo index 4294967295 exceeds the limit",
			members: []member{{name: "a/data.pkl", data: newPK().op(opNone).u32op(opLongBinPut, 0xffffffff).Bytes()}}},
		{name: "deeply nested marks", want: "MARKs nested deeper than 512",
			members: []member{{name: "a/data.pkl", data: deep.Bytes()}}},
		{name: "huge string", want: "string of 4294967295 bytes exceeds",
			members: []member{{name: "a/data.pkl", data: hugeStr.Bytes()}}},
		{name: "string beyond the pickle", want: "truncated pickle: need 1000 bytes",
			members: []member{{name: "a/data.pkl", data: newPK().u32op(opBinUnicode, 1000).Bytes()}}},
		{name: "no stop", want: "pickle ends without STOP",
			members: []member{{name: "a/data.pkl", data: newPK().op(opEmptyDict).Bytes()}}},
		{name: "stack underflow", want: "pickle stack underflow",
			members: []member{{name: "a/data.pkl", data: newPK().op(opTuple2).Bytes()}}},
		{name: "not a dict", want: "data.pkl holds a list",
			members: []member{{name: "a/data.pkl", data: newPK().op(opEmptyList, opStop).Bytes()}}},
		{name: "dict contains itself", want: `dict "x" contains itself`,
			members: []member{{name: "a/data.pkl", data: newPK().op(opEmptyDict, opBinPut, 0).str("x").op(opBinGet, 0, opSetItem, opStop).Bytes()}}},
		{name: "shared dicts blow up", want: "more than 1048576 dict entries",
			members: []member{{name: "a/data.pkl", data: shared.Bytes()}}},
		{name: "protocol 0", want: "pickle protocol 0",
			members: []member{{name: "a/data.pkl", data: []byte{opProto, 0, opStop}}}},
		{name: "no pickle", want: "no <root>/data.pkl",
			members: []member{okStorage}},
		{name: "storage key missing", want: `storage "7" is missing: no zip entry a/data/7`,
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "7", numel: 4, size: []int64{4}, stride: []int64{1}})}, okStorage}},
		{name: "storage too small", want: `storage "0" holds 16 bytes but 8 F32 elements need 32`,
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 8, size: []int64{8}, stride: []int64{1}})}, okStorage}},
		{name: "size beyond storage", want: "reaches element 4 of a 4-element storage",
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 4, size: []int64{5}, stride: []int64{1}})}, okStorage}},
		{name: "offset beyond storage", want: "reaches element 5 of a 4-element storage",
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 4, offset: 2, size: []int64{2, 2}, stride: []int64{2, 1}})}, okStorage}},
		{name: "stride overflow", want: "extent overflows",
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 4, size: []int64{3}, stride: []int64{math.MaxInt64/2 + 1}})}, okStorage}},
		{name: "huge expansion", want: "expands its storage beyond the size limit",
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 4, size: []int64{1 << 40}, stride: []int64{0}})}, okStorage}},
		{name: "conflicting storages", want: "declared twice",
			members: []member{{name: "a/data.pkl", data: stateDict(good, spec{name: "v", storage: "HalfStorage", key: "0", numel: 8, size: []int64{4}, stride: []int64{1}})}, okStorage}},
		{name: "big endian", want: `byte order "big" is not supported`,
			members: []member{{name: "a/byteorder", data: []byte("big")}, {name: "a/data.pkl", data: stateDict(good)}, okStorage}},
		{name: "zip bomb storage", want: "claims 1099511627776 bytes from",
			members: []member{{name: "a/data.pkl", data: stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 1 << 38, size: []int64{4}, stride: []int64{1}})},
				{name: "a/data/0", data: make([]byte, 1<<16), deflate: true, claim: 1 << 40}}},
		{name: "zip bomb pickle", want: `zip entry "a/data.pkl" does not hold the 100 bytes its header says (zip bomb?)`,
			members: []member{{name: "a/data.pkl", data: pklBomb.Bytes(), claim: 100}}},
		{name: "pickle over the limit", want: "more than the 268435456-byte limit",
			members: []member{{name: "a/data.pkl", data: noise(300 << 10), deflate: true, claim: 300 << 20}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(writeZip(t, c.members...))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
			if c.unsafe {
				require.ErrorIs(t, err, ErrUnsafe)
			} else {
				require.ErrorIs(t, err, ErrFormat)
			}
			require.Contains(t, err.Error(), "x.bin: ")
		})
	}
}

func TestTruncatedZip(t *testing.T) {
	full, err := os.ReadFile(golden.Path("photomaker/photomaker-v1-real.bin"))
	require.NoError(t, err)
	for _, n := range []int{0, 10, len(full) / 2, len(full) - 30} {
		p := filepath.Join(t.TempDir(), "cut.bin")
		require.NoError(t, os.WriteFile(p, full[:n], 0o644))
		_, err := Open(p)
		require.ErrorIs(t, err, ErrFormat, "cut at %d", n)
		require.True(t, strings.Contains(err.Error(), "not a zip archive"), err.Error())
	}
}

var fuzzStorage = f32bytes(1, 2, 3, 4, 5, 6, 7, 8)

// fuzzDeflated is fuzzStorage deflated once: a flate writer per fuzz
// execution would dominate the run time.
var fuzzDeflated = sync.OnceValue(func() []byte {
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	fw.Write(fuzzStorage)
	fw.Close()
	return comp.Bytes()
})

// fuzzZip wraps a pickle in an archive with two storages, one stored and
// one deflated.
func fuzzZip(t testing.TB, pkl []byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range []member{{name: "a/data.pkl", data: pkl}, {name: "a/data/0", data: fuzzStorage}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: m.name, Method: zip.Store})
		require.NoError(t, err)
		w.Write(m.data)
	}
	comp := fuzzDeflated()
	w, err := zw.CreateRaw(&zip.FileHeader{Name: "a/data/1", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(fuzzStorage),
		CompressedSize64: uint64(len(comp)), UncompressedSize64: uint64(len(fuzzStorage))})
	require.NoError(t, err)
	w.Write(comp)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// torchLike is a small state dict laid out the way torch.save writes one:
// nested dicts, memoised globals and strings, mixed storages. (The real
// 53 KB data.pkl is a poor seed: the fuzzer spends minutes minimising
// inputs derived from it.)
func torchLike() []byte {
	p := newPK().op(opEmptyDict, opBinPut, 0, opMark).str("id_encoder").op(opBinPut, 1, opEmptyDict, opBinPut, 2, opMark)
	p.str("w").op(opBinPut, 3).global("torch._utils", "_rebuild_tensor_v2").op(opBinPut, 4, opMark, opMark)
	p.str("storage").op(opBinPut, 5).global("torch", "BFloat16Storage").op(opBinPut, 6).str("0").op(opBinPut, 7).str("cpu").op(opBinPut, 8)
	p.op(opBinInt1, 16, opTuple, opBinPut, 9, opBinPersID, opBinInt1, 0, opBinInt1, 4, opBinInt1, 4, opTuple2, opBinPut, 10)
	p.op(opBinInt1, 4, opBinInt1, 1, opTuple2, opBinPut, 11, opNewFalse).global("collections", "OrderedDict").op(opBinPut, 12)
	p.op(opEmptyTuple, opReduce, opBinPut, 13, opTuple, opBinPut, 14, opReduce, opBinPut, 15)
	p.str("b").op(opBinGet, 4, opMark, opMark, opBinGet, 5).global("torch", "FloatStorage").str("1").op(opBinGet, 8, opBinInt1, 8, opTuple)
	p.op(opBinPersID, opBinInt1, 2, opBinInt1, 3, opTuple1, opBinInt1, 2, opTuple1, opNewFalse, opBinGet, 12, opEmptyTuple, opReduce)
	p.op(opTuple, opReduce, opSetItems)
	p.str("lora_weights").op(opEmptyDict, opMark).str("x").op(opBinGet, 15, opSetItems, opSetItems, opStop)
	return p.Bytes()
}

func TestTorchLike(t *testing.T) {
	z := fuzzZip(t, torchLike())
	f, err := parse(bytes.NewReader(z), int64(len(z)))
	require.NoError(t, err)
	require.Equal(t, []Tensor{
		{Name: "id_encoder.b", DType: safetensors.F32, Shape: []int64{3}},
		{Name: "id_encoder.w", DType: safetensors.BF16, Shape: []int64{4, 4}},
		{Name: "lora_weights.x", DType: safetensors.BF16, Shape: []int64{4, 4}},
	}, f.Tensors())
	b, err := f.Float32("id_encoder.b")
	require.NoError(t, err)
	require.Equal(t, []float32{3, 5, 7}, b)
}

func FuzzPickle(f *testing.F) {
	f.Add(stateDict(spec{name: "w", storage: "FloatStorage", key: "0", numel: 8, size: []int64{2, 4}, stride: []int64{4, 1}}))
	f.Add(stateDict(spec{name: "w", storage: "HalfStorage", key: "1", numel: 16, offset: 1, size: []int64{3, 2}, stride: []int64{1, 3}}))
	f.Add(stateDict(spec{name: "w", storage: "BFloat16Storage", key: "0", numel: 16, size: []int64{2, 2}, stride: []int64{0, 2}}))
	f.Add(newPK().global("os", "system").Bytes())
	f.Add(newPK().short("os").short("system").op(opStackGlobal).Bytes())
	f.Add(newPK().op(opEmptyList, opBinPut, 0, opBinGet, 0, opAppend, opStop).Bytes())
	f.Add(torchLike())
	f.Fuzz(func(t *testing.T, pkl []byte) {
		z := fuzzZip(t, pkl)
		tf, err := parse(bytes.NewReader(z), int64(len(z)))
		if err != nil {
			return
		}
		for i, tt := range tf.Tensors() {
			if i >= 16 || tt.Elements() > 1<<16 {
				continue // big zero-stride expansions only cost time
			}
			b, err := tf.Bytes(tt.Name)
			if err == nil && int64(len(b)) != tt.Elements()*int64(tt.DType.Size()) {
				t.Fatalf("%s: %d bytes for shape %v of %s", tt.Name, len(b), tt.Shape, tt.DType)
			}
			tf.Float32(tt.Name)
		}
	})
}

// A byte flipped inside a storage (a damaged download) fails that
// storage's CRC-32 at its first read instead of giving wrong values; the
// other storages read as before. Deflated storages are checked too.
func TestDamagedStorage(t *testing.T) {
	full, err := os.ReadFile(golden.Path("photomaker/photomaker-v1-real.bin"))
	require.NoError(t, err)
	zr, err := zip.NewReader(bytes.NewReader(full), int64(len(full)))
	require.NoError(t, err)
	var victim *zip.File
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/data/16") {
			victim = zf
		}
	}
	require.NotNil(t, victim)
	off, err := victim.DataOffset()
	require.NoError(t, err)
	damaged := bytes.Clone(full)
	damaged[off+int64(victim.UncompressedSize64)/2] ^= 0x40
	p := filepath.Join(t.TempDir(), "damaged.bin")
	require.NoError(t, os.WriteFile(p, damaged, 0o644))
	good, err := Open(golden.Path("photomaker/photomaker-v1-real.bin"))
	require.NoError(t, err)
	defer good.Close()
	f, err := Open(p)
	require.NoError(t, err, "the damage shows at the storage's first read")
	defer f.Close()
	bad := 0
	for i, tt := range f.Tensors() {
		got, err := f.Bytes(tt.Name)
		if f.views[i].ent.zf.Name == victim.Name && tt.Elements() > 0 {
			require.ErrorIs(t, err, ErrFormat, tt.Name)
			require.ErrorContains(t, err, "checksum error: the file is damaged")
			bad++
			continue
		}
		require.NoError(t, err, tt.Name)
		want, err := good.Bytes(tt.Name)
		require.NoError(t, err)
		require.Equal(t, want, got, tt.Name)
	}
	require.Positive(t, bad)

	// A deflated storage whose header records another CRC.
	pkl := newPK().op(opEmptyDict, opMark).str("t").tensor(spec{storage: "FloatStorage", key: "0", numel: 2, size: []int64{2}, stride: []int64{1}}).op(opSetItems, opStop).Bytes()
	for _, crc := range []bool{true, false} {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "c/data.pkl", Method: zip.Store})
		require.NoError(t, err)
		w.Write(pkl)
		data := f32bytes(1, 2)
		var comp bytes.Buffer
		fw, _ := flate.NewWriter(&comp, flate.BestCompression)
		fw.Write(data)
		fw.Close()
		sum := crc32.ChecksumIEEE(data)
		if !crc {
			sum ^= 1
		}
		w, err = zw.CreateRaw(&zip.FileHeader{Name: "c/data/0", Method: zip.Deflate, CRC32: sum, CompressedSize64: uint64(comp.Len()), UncompressedSize64: uint64(len(data))})
		require.NoError(t, err)
		w.Write(comp.Bytes())
		require.NoError(t, zw.Close())
		tf, err := parse(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		require.NoError(t, err)
		v, err := tf.Float32("t")
		if crc {
			require.NoError(t, err)
			require.Equal(t, []float32{1, 2}, v)
		} else {
			require.ErrorIs(t, err, ErrFormat)
		}
	}
}
