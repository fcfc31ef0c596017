package rng

// mt19937 is the 32-bit Mersenne Twister (Matsumoto & Nishimura 1998) as
// std::mt19937 and PyTorch's at::mt19937 define it.
type mt19937 struct {
	state [624]uint32
	index int
}

func newMT19937(seed uint64) *mt19937 {
	m := &mt19937{}
	m.seed(seed)
	return m
}

// seed uses the low 32 bits of seed, like at::mt19937.
func (m *mt19937) seed(seed uint64) {
	m.state[0] = uint32(seed)
	for j := 1; j < 624; j++ {
		prev := m.state[j-1]
		m.state[j] = 1812433253*(prev^(prev>>30)) + uint32(j)
	}
	m.index = 624
}

func (m *mt19937) twist() {
	const (
		n, mid  = 624, 397
		matrixA = 0x9908b0df
		upper   = 0x80000000
		lower   = 0x7fffffff
	)
	st := &m.state
	mix := func(a, b, c uint32) uint32 {
		y := a&upper | b&lower
		v := c ^ y>>1
		if y&1 != 0 {
			v ^= matrixA
		}
		return v
	}
	i := 0
	for ; i < n-mid; i++ {
		st[i] = mix(st[i], st[i+1], st[i+mid])
	}
	for ; i < n-1; i++ {
		st[i] = mix(st[i], st[i+1], st[i+mid-n])
	}
	st[n-1] = mix(st[n-1], st[0], st[mid-1])
	m.index = 0
}

// next returns the next 32-bit output.
func (m *mt19937) next() uint32 {
	if m.index >= 624 {
		m.twist()
	}
	y := m.state[m.index]
	m.index++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}
