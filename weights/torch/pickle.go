package torch

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/gophotomaker/photomaker/weights/safetensors"
)

// Limits of the pickle machine. A state dict of a few thousand tensors needs
// a few hundred kilobytes of pickle, a stack of a few thousand entries and a
// memo of a few thousand objects; these bounds leave ample room for real
// checkpoints while keeping a hostile data.pkl from allocating without end.
const (
	// MaxPickleSize bounds data.pkl.
	MaxPickleSize = 256 << 20
	maxStack      = 1 << 20 // values on the stack
	maxMarks      = 512     // nested MARKs
	maxMemo       = 1 << 20 // memoised objects
	maxMemoIndex  = 1 << 24 // largest memo index accepted
	maxString     = 16 << 20
	maxItems      = 1 << 24 // container items created in total
	maxDims       = 32      // tensor dimensions
	maxDepth      = 64      // nesting of dicts when flattening names
	maxEntries    = 1 << 20 // dict entries visited when flattening names
)

// Pickle opcodes (see CPython's Lib/pickletools.py for their meaning).
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opNone           = 'N'
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opBinString      = 'T'
	opShortBinString = 'U'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opAppends        = 'e'
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opEmptyList      = ']'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opSetItems       = 'u'
	opEmptyDict      = '}'
	opEmptyTuple     = ')'
	opBinFloat       = 'G'
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opProto          = 0x80
	opNewObj         = 0x81
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
)

// opNames names the opcodes we refuse, for error messages.
var opNames = map[byte]string{
	'I': "INT", 'L': "LONG", 'S': "STRING", 'V': "UNICODE", 'F': "FLOAT",
	'P': "PERSID", 'g': "GET", 'p': "PUT", 'd': "DICT", 'l': "LIST",
	'i': "INST", 'o': "OBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
	0x8b: "LONG4", 0x8f: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
	0x92: "NEWOBJ_EX", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
	0x98: "READONLY_BUFFER",
}

// global is a reference to an allow-listed Python callable or class.
type global struct{ module, name string }

func (g global) String() string { return g.module + "." + g.name }

// storageDTypes maps the torch storage classes to element types.
var storageDTypes = map[string]safetensors.DType{
	"FloatStorage":    safetensors.F32,
	"HalfStorage":     safetensors.F16,
	"BFloat16Storage": safetensors.BF16,
	"DoubleStorage":   safetensors.F64,
	"LongStorage":     safetensors.I64,
	"IntStorage":      safetensors.I32,
	"ShortStorage":    safetensors.I16,
	"CharStorage":     safetensors.I8,
	"ByteStorage":     safetensors.U8,
	"BoolStorage":     safetensors.Bool,
}

// allowedGlobal reports whether module.name may be referenced at all. Only
// the handful of names torch.save emits for tensor data are allowed.
func allowedGlobal(module, name string) bool {
	switch module {
	case "collections":
		return name == "OrderedDict"
	case "torch._utils":
		return name == "_rebuild_tensor_v2" || name == "_rebuild_tensor" || name == "_rebuild_parameter"
	case "torch":
		_, ok := storageDTypes[name]
		return ok
	}
	return false
}

type tuple []any

type plist struct{ items []any }

// pdict is an insertion-ordered dict with string, int, float, bool or None
// keys (what a state dict can hold).
type pdict struct {
	keys, vals []any
	index      map[any]int
}

func newDict() *pdict { return &pdict{index: map[any]int{}} }

// storageRef is a persistent id resolved to a storage record.
type storageRef struct {
	dtype    safetensors.DType
	key      string
	location string
	numel    int64
}

// tensorRef is a tensor view on a storage.
type tensorRef struct {
	st     *storageRef
	offset int64
	size   []int64
	stride []int64
}

func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case tuple:
		return "tuple"
	case *plist:
		return "list"
	case *pdict:
		return "dict"
	case global:
		return v.String()
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

// machine runs a pickle program restricted to the opcodes and globals that
// torch.save emits. No Python semantics beyond building containers and
// tensor descriptions are implemented, so nothing a file says can run code.
type machine struct {
	data   []byte
	pos    int
	op     int // offset of the current opcode
	stack  []any
	marks  []int
	memo   map[uint32]any
	items  int
	stores map[string]*storageRef
}

func (m *machine) errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: data.pkl offset %d: %s", sentinel, m.op, fmt.Sprintf(format, args...))
}

func (m *machine) take(n int) ([]byte, error) {
	if n < 0 || n > len(m.data)-m.pos {
		return nil, m.errf(ErrFormat, "truncated pickle: need %d bytes, %d left", n, len(m.data)-m.pos)
	}
	b := m.data[m.pos : m.pos+n]
	m.pos += n
	return b, nil
}

func (m *machine) u8() (int, error) {
	b, err := m.take(1)
	if err != nil {
		return 0, err
	}
	return int(b[0]), nil
}

func (m *machine) u16() (int, error) {
	b, err := m.take(2)
	if err != nil {
		return 0, err
	}
	return int(binary.LittleEndian.Uint16(b)), nil
}

func (m *machine) u32() (uint32, error) {
	b, err := m.take(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (m *machine) u64() (uint64, error) {
	b, err := m.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads n bytes of string payload after checking n against the limits.
// pushSized reads a little-endian length of width bytes, then that many
// bytes, and pushes them as a string (or []byte for the BYTES opcodes).
func (m *machine) pushSized(width int, asBytes bool) error {
	var n uint64
	switch width {
	case 1:
		v, err := m.u8()
		if err != nil {
			return err
		}
		n = uint64(v)
	case 4:
		v, err := m.u32()
		if err != nil {
			return err
		}
		n = uint64(v)
	default:
		v, err := m.u64()
		if err != nil {
			return err
		}
		n = v
	}
	s, err := m.str(n)
	if err != nil {
		return err
	}
	if asBytes {
		return m.push([]byte(s))
	}
	return m.push(s)
}

func (m *machine) str(n uint64) (string, error) {
	if n > maxString {
		return "", m.errf(ErrFormat, "string of %d bytes exceeds the %d-byte limit", n, maxString)
	}
	b, err := m.take(int(n))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (m *machine) push(v any) error {
	if len(m.stack) >= maxStack {
		return m.errf(ErrFormat, "pickle stack deeper than %d", maxStack)
	}
	m.stack = append(m.stack, v)
	return nil
}

func (m *machine) pop() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) <= m.marks[len(m.marks)-1]) {
		return nil, m.errf(ErrFormat, "pickle stack underflow")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

func (m *machine) top() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) <= m.marks[len(m.marks)-1]) {
		return nil, m.errf(ErrFormat, "pickle stack underflow")
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark removes and returns the values above the last MARK.
func (m *machine) popMark() ([]any, error) {
	if len(m.marks) == 0 {
		return nil, m.errf(ErrFormat, "no MARK on the pickle stack")
	}
	k := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	vals := append([]any(nil), m.stack[k:]...)
	clear(m.stack[k:])
	m.stack = m.stack[:k]
	return vals, nil
}

func (m *machine) count(n int) error {
	m.items += n
	if m.items > maxItems {
		return m.errf(ErrFormat, "more than %d container items", maxItems)
	}
	return nil
}

func (m *machine) memoPut(idx uint64) error {
	if idx >= maxMemoIndex {
		return m.errf(ErrFormat, "memo index %d exceeds the limit %d", idx, maxMemoIndex)
	}
	v, err := m.top()
	if err != nil {
		return err
	}
	if _, ok := m.memo[uint32(idx)]; !ok && len(m.memo) >= maxMemo {
		return m.errf(ErrFormat, "more than %d memoised objects", maxMemo)
	}
	m.memo[uint32(idx)] = v
	return nil
}

func (m *machine) memoGet(idx uint64) error {
	v, ok := m.memo[uint32(idx)]
	if idx >= maxMemoIndex || !ok {
		return m.errf(ErrFormat, "memo index %d was never stored", idx)
	}
	return m.push(v)
}

func (m *machine) global(module, name string) error {
	if !allowedGlobal(module, name) {
		return m.errf(ErrUnsafe, "refusing pickle global %s.%s: only tensor data is allowed", printable(module), printable(name))
	}
	return m.push(global{module, name})
}

// printable keeps hostile names from garbling error messages.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	q := strconv.QuoteToASCII(s)
	if q[1:len(q)-1] == s {
		return s
	}
	return q
}

func (m *machine) setItems(d any, kv []any) error {
	dict, ok := d.(*pdict)
	if !ok {
		return m.errf(ErrUnsafe, "SETITEM on a %s, not a dict", typeName(d))
	}
	if len(kv)%2 != 0 {
		return m.errf(ErrFormat, "SETITEMS with an odd number of values")
	}
	if err := m.count(len(kv) / 2); err != nil {
		return err
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i]
		switch k.(type) {
		case nil, bool, int64, float64, string:
		default:
			return m.errf(ErrFormat, "dict key of type %s is not supported", typeName(k))
		}
		if j, ok := dict.index[k]; ok {
			dict.vals[j] = kv[i+1]
			continue
		}
		dict.index[k] = len(dict.keys)
		dict.keys = append(dict.keys, k)
		dict.vals = append(dict.vals, kv[i+1])
	}
	return nil
}

func (m *machine) appendItems(l any, vals []any) error {
	list, ok := l.(*plist)
	if !ok {
		return m.errf(ErrUnsafe, "APPEND on a %s, not a list", typeName(l))
	}
	if err := m.count(len(vals)); err != nil {
		return err
	}
	list.items = append(list.items, vals...)
	return nil
}

// persistentLoad resolves ('storage', StorageType, key, location, numel).
func (m *machine) persistentLoad(pid any) (any, error) {
	t, ok := pid.(tuple)
	if !ok || len(t) != 5 {
		return nil, m.errf(ErrUnsafe, "persistent id %s is not a ('storage', type, key, location, numel) tuple", typeName(pid))
	}
	if s, _ := t[0].(string); s != "storage" {
		return nil, m.errf(ErrUnsafe, "persistent id of kind %s, only 'storage' is allowed", printable(fmt.Sprint(t[0])))
	}
	g, ok := t[1].(global)
	dt, known := storageDTypes[g.name]
	if !ok || g.module != "torch" || !known {
		return nil, m.errf(ErrFormat, "persistent id names storage type %s", typeName(t[1]))
	}
	key, ok1 := t[2].(string)
	loc, ok2 := t[3].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 || numel > math.MaxInt64/8 {
		return nil, m.errf(ErrFormat, "malformed storage record (%s, %s, %s)", typeName(t[2]), typeName(t[3]), typeName(t[4]))
	}
	if st, ok := m.stores[key]; ok {
		if st.dtype != dt || st.numel != numel {
			return nil, m.errf(ErrFormat, "storage %q is declared twice with different types or sizes", printable(key))
		}
		return st, nil
	}
	if len(m.stores) >= maxMemo {
		return nil, m.errf(ErrFormat, "more than %d storages", maxMemo)
	}
	st := &storageRef{dtype: dt, key: key, location: loc, numel: numel}
	m.stores[key] = st
	return st, nil
}

func (m *machine) ints(v any, what string) ([]int64, error) {
	t, ok := v.(tuple)
	if !ok {
		return nil, m.errf(ErrFormat, "tensor %s is a %s, not a tuple", what, typeName(v))
	}
	if len(t) > maxDims {
		return nil, m.errf(ErrFormat, "tensor %s has %d dimensions (limit %d)", what, len(t), maxDims)
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, m.errf(ErrFormat, "tensor %s has a bad entry %v", what, x)
		}
		out[i] = n
	}
	return out, nil
}

// call applies an allow-listed callable. Every case builds plain data.
func (m *machine) call(fn any, args any) (any, error) {
	g, ok := fn.(global)
	if !ok {
		return nil, m.errf(ErrUnsafe, "cannot call a %s", typeName(fn))
	}
	a, ok := args.(tuple)
	if !ok {
		return nil, m.errf(ErrFormat, "arguments to %s are a %s, not a tuple", g, typeName(args))
	}
	switch g {
	case global{"collections", "OrderedDict"}:
		if len(a) != 0 {
			return nil, m.errf(ErrUnsafe, "OrderedDict called with %d arguments", len(a))
		}
		return newDict(), nil
	case global{"torch._utils", "_rebuild_tensor_v2"}, global{"torch._utils", "_rebuild_tensor"}:
		if g.name == "_rebuild_tensor" && len(a) != 4 || g.name == "_rebuild_tensor_v2" && (len(a) < 6 || len(a) > 7) {
			return nil, m.errf(ErrFormat, "%s called with %d arguments", g, len(a))
		}
		st, ok := a[0].(*storageRef)
		if !ok {
			return nil, m.errf(ErrFormat, "%s: storage argument is a %s", g, typeName(a[0]))
		}
		off, ok := a[1].(int64)
		if !ok || off < 0 {
			return nil, m.errf(ErrFormat, "%s: bad storage offset %v", g, a[1])
		}
		size, err := m.ints(a[2], "size")
		if err != nil {
			return nil, err
		}
		stride, err := m.ints(a[3], "stride")
		if err != nil {
			return nil, err
		}
		if len(size) != len(stride) {
			return nil, m.errf(ErrFormat, "tensor size %v and stride %v differ in rank", size, stride)
		}
		return &tensorRef{st: st, offset: off, size: size, stride: stride}, nil
	case global{"torch._utils", "_rebuild_parameter"}:
		if len(a) != 3 {
			return nil, m.errf(ErrFormat, "%s called with %d arguments", g, len(a))
		}
		t, ok := a[0].(*tensorRef)
		if !ok {
			return nil, m.errf(ErrFormat, "%s: data is a %s, not a tensor", g, typeName(a[0]))
		}
		return t, nil
	}
	return nil, m.errf(ErrUnsafe, "refusing to call %s", g)
}

// run executes the pickle and returns the object STOP leaves.
func runPickle(data []byte) (any, map[string]*storageRef, error) {
	m := &machine{data: data, memo: map[uint32]any{}, stores: map[string]*storageRef{}}
	for {
		m.op = m.pos
		c, err := m.u8()
		if err != nil {
			return nil, nil, m.errf(ErrFormat, "pickle ends without STOP")
		}
		if err := m.step(byte(c)); err != nil {
			if err == errStop {
				v, err := m.pop()
				if err != nil {
					return nil, nil, err
				}
				return v, m.stores, nil
			}
			return nil, nil, err
		}
	}
}

var errStop = fmt.Errorf("stop")

func (m *machine) step(c byte) error {
	switch c {
	case opProto:
		v, err := m.u8()
		if err != nil {
			return err
		}
		if v < 2 || v > 5 {
			return m.errf(ErrFormat, "pickle protocol %d is not supported (want 2 to 5)", v)
		}
	case opFrame:
		if _, err := m.u64(); err != nil {
			return err
		}
	case opStop:
		return errStop
	case opMark:
		if len(m.marks) >= maxMarks {
			return m.errf(ErrFormat, "MARKs nested deeper than %d", maxMarks)
		}
		m.marks = append(m.marks, len(m.stack))
	case opPop:
		if _, err := m.pop(); err != nil {
			return err
		}
	case opPopMark:
		if _, err := m.popMark(); err != nil {
			return err
		}
	case opDup:
		v, err := m.top()
		if err != nil {
			return err
		}
		return m.push(v)
	case opEmptyDict:
		return m.push(newDict())
	case opEmptyList:
		return m.push(&plist{})
	case opEmptyTuple:
		return m.push(tuple{})
	case opNone:
		return m.push(nil)
	case opNewTrue:
		return m.push(true)
	case opNewFalse:
		return m.push(false)
	case opBinInt:
		v, err := m.u32()
		if err != nil {
			return err
		}
		return m.push(int64(int32(v)))
	case opBinInt1:
		v, err := m.u8()
		if err != nil {
			return err
		}
		return m.push(int64(v))
	case opBinInt2:
		v, err := m.u16()
		if err != nil {
			return err
		}
		return m.push(int64(v))
	case opLong1:
		n, err := m.u8()
		if err != nil {
			return err
		}
		b, err := m.take(n)
		if err != nil {
			return err
		}
		if n > 8 {
			return m.errf(ErrFormat, "%d-byte integer is too large", n)
		}
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		if n > 0 && n < 8 && b[n-1]&0x80 != 0 { // sign-extend
			v |= ^uint64(0) << (8 * n)
		}
		return m.push(int64(v))
	case opBinFloat:
		b, err := m.take(8)
		if err != nil {
			return err
		}
		return m.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case opShortBinUni, opShortBinString, opShortBinBytes:
		return m.pushSized(1, c == opShortBinBytes)
	case opBinUnicode, opBinString, opBinBytes:
		return m.pushSized(4, c == opBinBytes)
	case opBinUnicode8, opBinBytes8:
		return m.pushSized(8, c == opBinBytes8)
	case opTuple1, opTuple2, opTuple3:
		n := int(c-opTuple1) + 1
		if len(m.stack) < n || (len(m.marks) > 0 && len(m.stack)-n < m.marks[len(m.marks)-1]) {
			return m.errf(ErrFormat, "pickle stack underflow")
		}
		if err := m.count(n); err != nil {
			return err
		}
		t := append(tuple(nil), m.stack[len(m.stack)-n:]...)
		m.stack = m.stack[:len(m.stack)-n]
		return m.push(t)
	case opTuple:
		vals, err := m.popMark()
		if err != nil {
			return err
		}
		if err := m.count(len(vals)); err != nil {
			return err
		}
		return m.push(tuple(vals))
	case opAppend:
		v, err := m.pop()
		if err != nil {
			return err
		}
		l, err := m.top()
		if err != nil {
			return err
		}
		return m.appendItems(l, []any{v})
	case opAppends:
		vals, err := m.popMark()
		if err != nil {
			return err
		}
		l, err := m.top()
		if err != nil {
			return err
		}
		return m.appendItems(l, vals)
	case opSetItem:
		v, err := m.pop()
		if err != nil {
			return err
		}
		k, err := m.pop()
		if err != nil {
			return err
		}
		d, err := m.top()
		if err != nil {
			return err
		}
		return m.setItems(d, []any{k, v})
	case opSetItems:
		kv, err := m.popMark()
		if err != nil {
			return err
		}
		d, err := m.top()
		if err != nil {
			return err
		}
		return m.setItems(d, kv)
	case opBinPut:
		n, err := m.u8()
		if err != nil {
			return err
		}
		return m.memoPut(uint64(n))
	case opLongBinPut:
		n, err := m.u32()
		if err != nil {
			return err
		}
		return m.memoPut(uint64(n))
	case opMemoize:
		return m.memoPut(uint64(len(m.memo)))
	case opBinGet:
		n, err := m.u8()
		if err != nil {
			return err
		}
		return m.memoGet(uint64(n))
	case opLongBinGet:
		n, err := m.u32()
		if err != nil {
			return err
		}
		return m.memoGet(uint64(n))
	case opGlobal:
		module, err := m.line()
		if err != nil {
			return err
		}
		name, err := m.line()
		if err != nil {
			return err
		}
		return m.global(module, name)
	case opStackGlobal:
		name, err := m.pop()
		if err != nil {
			return err
		}
		module, err := m.pop()
		if err != nil {
			return err
		}
		ms, ok1 := module.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return m.errf(ErrUnsafe, "STACK_GLOBAL with a %s and a %s instead of two strings", typeName(module), typeName(name))
		}
		return m.global(ms, ns)
	case opReduce:
		args, err := m.pop()
		if err != nil {
			return err
		}
		fn, err := m.pop()
		if err != nil {
			return err
		}
		v, err := m.call(fn, args)
		if err != nil {
			return err
		}
		return m.push(v)
	case opNewObj:
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		if cls != (global{"collections", "OrderedDict"}) {
			return m.errf(ErrUnsafe, "refusing to instantiate %s", typeName(cls))
		}
		v, err := m.call(cls, args)
		if err != nil {
			return err
		}
		return m.push(v)
	case opBuild:
		state, err := m.pop()
		if err != nil {
			return err
		}
		obj, err := m.top()
		if err != nil {
			return err
		}
		// torch attaches a '_metadata' attribute to state dicts and may
		// give tensors a state; neither carries tensor data, so the state
		// is dropped. Nothing else may be built.
		switch obj.(type) {
		case *pdict, *tensorRef:
		default:
			return m.errf(ErrUnsafe, "refusing BUILD on a %s", typeName(obj))
		}
		switch state.(type) {
		case nil, *pdict, tuple:
		default:
			return m.errf(ErrUnsafe, "refusing BUILD with a %s state", typeName(state))
		}
	case opBinPersID:
		pid, err := m.pop()
		if err != nil {
			return err
		}
		v, err := m.persistentLoad(pid)
		if err != nil {
			return err
		}
		return m.push(v)
	default:
		name := opNames[c]
		if name == "" {
			name = "unknown"
		}
		return m.errf(ErrUnsafe, "refusing pickle opcode 0x%02x (%s): not emitted by torch.save", c, name)
	}
	return nil
}

// line reads a newline-terminated GLOBAL argument.
func (m *machine) line() (string, error) {
	for i := m.pos; i < len(m.data) && i-m.pos <= 256; i++ {
		if m.data[i] == '\n' {
			s := string(m.data[m.pos:i])
			m.pos = i + 1
			return s, nil
		}
	}
	return "", m.errf(ErrFormat, "GLOBAL name is not a newline-terminated line of at most 256 bytes")
}
