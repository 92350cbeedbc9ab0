package main

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// abiCall lays out a whole argument block: three descriptors, then the options.
type abiCall struct {
	t         [3]tensorDesc
	flags     uint32
	size      uint32 // options.struct_size
	ws        uint64
	wsLen     int64
	maxSeqlen int64 // options.max_seqlen (since 0.2)
}

type tensorDesc struct {
	data           uint64
	dtype, ndim    int32
	shape, strides []int64
}

func (c abiCall) bytes() []byte {
	var b bytes.Buffer
	for _, t := range c.t {
		b.Write(desc(t.data, t.dtype, t.ndim, t.shape, t.strides))
	}
	binary.Write(&b, binary.LittleEndian, c.size)
	binary.Write(&b, binary.LittleEndian, c.flags)
	b.Write(make([]byte, 3*80))
	binary.Write(&b, binary.LittleEndian, c.ws)
	binary.Write(&b, binary.LittleEndian, c.wsLen)
	binary.Write(&b, binary.LittleEndian, c.maxSeqlen)
	return b.Bytes()
}

func good() abiCall {
	return abiCall{
		t: [3]tensorDesc{
			{1 << 20, 0, 3, []int64{2, 33, 3}, []int64{99, 3, 1}},
			{1 << 24, 0, 4, []int64{2, 33, 3, 8}, []int64{792, 24, 8, 1}},
			{1 << 28, 0, 4, []int64{2, 33, 3, 8}, []int64{792, 24, 8, 1}},
		},
		size: abiBytes - 3*80,
	}
}

// TestABIBadInputMatrix: each row is refused through the C ABI with its status and a message
// naming the argument; the process survives every row. Device calls in the CPU-only build never
// dereference the pointers; host calls are refused before any dereference.
func TestABIBadInputMatrix(t *testing.T) {
	rows := []struct {
		name   string
		edit   func(c *abiCall)
		device int32
		status int32
		msg    string
	}{
		{"NULL A", func(c *abiCall) { c.t[0].data = 0 }, -1, 1, "A: data pointer is NULL"},
		{"NULL x", func(c *abiCall) { c.t[1].data = 0 }, -1, 1, "x: data pointer is NULL"},
		{"NULL out", func(c *abiCall) { c.t[2].data = 0 }, -1, 1, "out: data pointer is NULL"},
		{"misaligned x", func(c *abiCall) { c.t[1].data += 2 }, -1, 1, "x: data pointer 0x1000002 is not aligned to its 4-byte elements"},
		{"x ndim 0", func(c *abiCall) { c.t[1].ndim = 0 }, -1, 1, "x: ndim must be 1..4, got 0"},
		{"x ndim 9", func(c *abiCall) { c.t[1].ndim = 9 }, -1, 1, "x: ndim must be 1..4, got 9"},
		{"x 3 dims", func(c *abiCall) { c.t[1].ndim = 3 }, -1, 1, "x: expected 4 dims (B,T,R,C), got 3"},
		{"negative T", func(c *abiCall) { c.t[1].shape[1] = -4 }, -1, 1, "x: size of dim T must be >= 1, got -4"},
		{"zero C", func(c *abiCall) { c.t[1].shape[3] = 0 }, -1, 1, "x: size of dim C must be >= 1, got 0"},
		{"negative stride", func(c *abiCall) { c.t[2].strides[0] = -1 }, -1, 1, "out: stride of dim B must be >= 0, got -1"},
		{"2^63 elements", func(c *abiCall) { c.t[1].shape = []int64{1 << 32, 1 << 32, 3, 8} }, -1, 1, "has more than 2^63 elements"},
		{"2^63 bytes of strides", func(c *abiCall) { c.t[1].strides[0] = 1 << 62 }, -1, 1, "addresses past 2^63 bytes"},
		{"B mismatch", func(c *abiCall) { c.t[0].shape[0] = 3 }, -1, 1, "A: shape (3,33,3) does not match x's (B,T,R) = (2,33,3)"},
		{"int x", func(c *abiCall) { c.t[1].dtype, c.t[2].dtype = 4, 4 }, -1, 1, "x: expected float32, float16, bfloat16 or float64, got int32"},
		{"unknown dtype", func(c *abiCall) { c.t[0].dtype = 77 }, -1, 1, "A: unknown dtype 77"},
		{"half A", func(c *abiCall) { c.t[0].dtype = 1 }, -1, 1, "A: expected float32, got float16"},
		{"half x on the CPU", func(c *abiCall) { c.t[1].dtype, c.t[2].dtype = 1, 1 }, -1, 2, "x: float16 is supported on CUDA devices only"},
		{"float64 x on a GPU", func(c *abiCall) { c.t[1].dtype, c.t[2].dtype = 3, 3 }, 0, 2, "x: float64 is supported on the CPU only"},
		{"out dtype", func(c *abiCall) { c.t[2].dtype = 3 }, -1, 1, "out: expected float32 (2,33,3,8) like x, got float64"},
		{"out overlaps itself", func(c *abiCall) { c.t[2].strides = []int64{0, 24, 8, 1} }, -1, 1, "out: strides (0,24,8,1) make elements overlap"},
		{"out partly over x", func(c *abiCall) { c.t[2].data = c.t[1].data + 64 }, -1, 1, "out: overlaps x without being x itself"},
		{"struct_size", func(c *abiCall) { c.size = 7 }, -1, 1, "options: struct_size must be sizeof(nanossm_scan_options)"},
		{"unknown flags", func(c *abiCall) { c.flags = 6 }, -1, 1, "options: unknown flags 0x6"},
		{"max_seqlen < 0", func(c *abiCall) { c.maxSeqlen = -1 }, -1, 1, "max_seqlen: expected >= 0 (0: unknown), got -1"},
		{"max_seqlen alone", func(c *abiCall) { c.maxSeqlen = 9 }, 0, 1, "max_seqlen: given (9) without cu_seqlens"},
		{"device -2", func(c *abiCall) {}, -2, 1, "device: expected a CUDA ordinal >= 0 or -1 for the CPU, got -2"},
		{"device call without CUDA", func(c *abiCall) {}, 0, 4, "no CUDA backend"},
	}
	for _, r := range rows {
		c := good()
		for i := range c.t { // fresh slices per row
			c.t[i].shape = append([]int64(nil), c.t[i].shape...)
			c.t[i].strides = append([]int64(nil), c.t[i].strides...)
		}
		r.edit(&c)
		ws, st, msg := callABIBytes(c.bytes(), true, r.device)
		if st != r.status || ws != r.status || !strings.Contains(msg, r.msg) {
			t.Errorf("%s: status %d (workspace size %d), %q; want %d and %q", r.name, st, ws, msg, r.status, r.msg)
		}
	}
	t.Logf("%d rows", len(rows))
}

// TestABIOptionsOfVersion01: a caller built against 0.1's header passes the options struct
// without max_seqlen (8 bytes shorter): it is taken, and the bytes after it are never read
// (here a max_seqlen the full struct would refuse).
func TestABIOptionsOfVersion01(t *testing.T) {
	c := good()
	c.maxSeqlen = -1
	if st := workspaceSizeCalls(c.bytes(), false, -1, 1); st != 1 {
		t.Fatalf("full struct with max_seqlen -1: status %d, want 1 (invalid)", st)
	}
	c.size -= 8
	if st := workspaceSizeCalls(c.bytes(), false, -1, 1); st != 0 {
		t.Errorf("0.1's struct_size (%d): status %d, want 0", c.size, st)
	}
	b := goodBackward()
	off := 6*80 + 8 + 4*80 + 16 // the backward options' max_seqlen: after size and flags, 4 descriptors, the workspace
	binary.LittleEndian.PutUint64(b[off:], ^uint64(0))
	if st := workspaceSizeCalls(b, true, -1, 1); st != 1 {
		t.Fatalf("backward, full struct with max_seqlen -1: status %d, want 1", st)
	}
	binary.LittleEndian.PutUint32(b[6*80:], binary.LittleEndian.Uint32(b[6*80:])-8)
	if st := workspaceSizeCalls(b, true, -1, 1); st != 0 {
		t.Errorf("backward, 0.1's struct_size: status %d, want 0", st)
	}
}

// TestHostPathAllocatesNothing: converting, validating and planning a call allocates no Go
// memory (the arguments live in a pooled call; see call in main.go). An allocation per call
// costs ~0.1 us and GC work, and small calls are dominated by host time.
func TestHostPathAllocatesNothing(t *testing.T) {
	for _, c := range []struct {
		name     string
		raw      []byte
		backward bool
	}{{"scan", good().bytes(), false}, {"backward", goodBackward(), true}} {
		if st := workspaceSizeCalls(c.raw, c.backward, -1, 1); st != 0 {
			t.Fatalf("%s: status %d", c.name, st)
		}
		if n := testing.AllocsPerRun(50, func() { workspaceSizeCalls(c.raw, c.backward, -1, 20) }); n != 0 {
			t.Errorf("%s: %v allocations per 20 calls, want 0", c.name, n)
		}
	}
}
