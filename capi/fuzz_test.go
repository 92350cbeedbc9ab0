package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// desc lays out one nanossm_tensor as the C ABI reads it (little-endian x86-64/arm64).
func desc(data uint64, dtype, ndim int32, shape, strides []int64) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, data)
	binary.Write(&b, binary.LittleEndian, dtype)
	binary.Write(&b, binary.LittleEndian, ndim)
	for i := 0; i < 4; i++ {
		v := int64(0)
		if i < len(shape) {
			v = shape[i]
		}
		binary.Write(&b, binary.LittleEndian, v)
	}
	for i := 0; i < 4; i++ {
		v := int64(0)
		if i < len(strides) {
			v = strides[i]
		}
		binary.Write(&b, binary.LittleEndian, v)
	}
	return b.Bytes()
}

// goodCall is a valid call's argument block (device pointers as plain integers).
func goodCall() []byte {
	var b bytes.Buffer
	b.Write(desc(1<<20, 0, 3, []int64{2, 33, 3}, []int64{99, 3, 1}))
	b.Write(desc(1<<24, 0, 4, []int64{2, 33, 3, 8}, []int64{792, 24, 8, 1}))
	b.Write(desc(1<<28, 0, 4, []int64{2, 33, 3, 8}, []int64{792, 24, 8, 1}))
	binary.Write(&b, binary.LittleEndian, uint32(abiBytes-3*80)) // struct_size
	binary.Write(&b, binary.LittleEndian, uint32(0))             // flags
	b.Write(make([]byte, 3*80+24))                               // no states, seqlens, workspace or max_seqlen
	return b.Bytes()
}

// FuzzScanABI feeds arbitrary bytes as the C ABI's descriptors and options (sizes, strides,
// dtypes, flags, pointers as integers) to a device call. In the CPU-only build nothing is ever
// dereferenced: every call must end in a clean refusal - invalid argument, unsupported, or no
// CUDA - with a message, never a recovered panic (internal error) or a crash.
func FuzzScanABI(f *testing.F) {
	good := goodCall()
	f.Add(good, true, int32(0))
	f.Add(good, false, int32(3))
	f.Add(good[:80], true, int32(0))
	bad := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(bad[80+16:], 1<<62) // huge B
	f.Add(bad, true, int32(1))
	f.Fuzz(func(t *testing.T, raw []byte, withOptions bool, device int32) {
		if device < 0 { // host calls would dereference the fuzzed pointers
			device = -(device + 1)
		}
		ws, st, msg := callABIBytes(raw, withOptions, device)
		for _, s := range []int32{ws, st} {
			switch s {
			case 1, 2, 4: // invalid argument, unsupported, no CUDA in this build
			default:
				t.Fatalf("status %d (%q) for %x", s, msg, raw)
			}
		}
		if st != 4 && !strings.Contains(msg, ": ") {
			t.Fatalf("message %q does not name an argument", msg)
		}
	})
}

// goodBackward is a valid backward call's argument block (device pointers as plain integers).
func goodBackward() []byte {
	var b bytes.Buffer
	b.Write(desc(1<<20, 0, 3, []int64{2, 33, 3}, []int64{99, 3, 1}))
	for i := 0; i < 4; i++ { // x, out, grad_out, grad_x
		b.Write(desc(uint64(1+i)<<26, 0, 4, []int64{2, 33, 3, 8}, []int64{792, 24, 8, 1}))
	}
	b.Write(desc(1<<30, 0, 3, []int64{2, 33, 3}, []int64{99, 3, 1})) // grad_A
	binary.Write(&b, binary.LittleEndian, uint32(backwardBytes-6*80))
	binary.Write(&b, binary.LittleEndian, uint32(0))
	b.Write(make([]byte, 4*80+24)) // no states, seqlens, workspace or max_seqlen
	return b.Bytes()
}

// FuzzBackwardABI is FuzzScanABI for nanossm_scan_backward: arbitrary bytes as its six
// descriptors and options, to a device call; every call ends in a clean refusal.
func FuzzBackwardABI(f *testing.F) {
	good := goodBackward()
	f.Add(good, true, int32(0))
	f.Add(good, false, int32(2))
	f.Add(good[:200], true, int32(0))
	f.Fuzz(func(t *testing.T, raw []byte, withOptions bool, device int32) {
		if device < 0 {
			device = -(device + 1)
		}
		ws, st, msg := callBackwardABIBytes(raw, withOptions, device)
		for _, s := range []int32{ws, st} {
			switch s {
			case 1, 2, 4:
			default:
				t.Fatalf("status %d (%q) for %x", s, msg, raw)
			}
		}
		if st != 4 && !strings.Contains(msg, ": ") {
			t.Fatalf("message %q does not name an argument", msg)
		}
	})
}

// The message read after a refused call is that call's, with goroutines moving between OS
// threads (the message is kept per thread): the fuzz targets read it through callABIBytes and
// callBackwardABIBytes, which keep their goroutine on one thread for the call and the read.
func TestLastErrorStaysWithItsCall(t *testing.T) {
	bad := goodCall()
	binary.LittleEndian.PutUint64(bad[80+16:], 1<<62) // huge B
	badBackward := goodBackward()[:200]
	failed := make(chan string, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			for i := 0; i < 3000; i++ {
				_, _, msg := callABIBytes(bad, true, 0)
				if g%2 == 1 {
					_, _, msg = callBackwardABIBytes(badBackward, true, 0)
				}
				if !strings.Contains(msg, ": ") {
					failed <- fmt.Sprintf("%q", msg)
					return
				}
			}
			failed <- ""
		}(g)
	}
	for g := 0; g < 8; g++ {
		if msg := <-failed; msg != "" {
			t.Fatalf("a refused call read the message %s", msg)
		}
	}
}
