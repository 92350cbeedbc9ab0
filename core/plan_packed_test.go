package core

import (
	"fmt"
	"strings"
	"testing"
)

// The benchmark's packs (`bench --packed`) and session 34's skewed ones, on the H200: their
// segments, chunks and passes (core/plan_packed.go, core/plan.go layout).
func TestPackedPlans(t *testing.T) {
	// Segments spread a chunk and its predecessor 256 blocks apart (packedSegments), at most one
	// per sequence; a pack of few tiles takes one pass with segments of up to packedChain chunks
	// (and a longest sequence, where max_seqlen gives it, of up to as many), else three passes
	// and no segments.
	for _, c := range []struct {
		v                     Variant
		p                     Problem
		vec, segments, chunks int64
	}{
		{ForwardPacked, Problem{B: 1, T: 8 * 2048, R: 64, C: 64, DType: Float32, Seqs: 8}, 4, 8, 128 + 7},
		{ForwardPacked, Problem{B: 1, T: 8 * 2048, R: 64, C: 64, DType: BFloat16, Seqs: 8}, 8, 8, 94 + 7}, // (long chunks)
		{ForwardPacked, Problem{B: 1, T: 4 * 8192, R: 64, C: 64, DType: Float32, Seqs: 4}, 4, 4, 256 + 3},
		{ForwardPacked, Problem{B: 1, T: 16 * 1024, R: 16, C: 128, DType: BFloat16, Seqs: 16}, 8, 16, 94 + 15},
		{ForwardPacked, Problem{B: 1, T: 2 * 1024, R: 64, C: 64, DType: Float32, Seqs: 2}, 4, 2, 16 + 1},
		{BackwardPacked, Problem{B: 1, T: 8 * 2048, R: 64, C: 64, DType: Float32, Seqs: 8}, 4, 8, 256 + 7},
		{ForwardPacked, Problem{B: 1, T: 100000, R: 1, C: 8, DType: Float32, Seqs: 40}, 4, 31, 782 + 30},
		{ForwardPacked, Problem{B: 1, T: 100000, R: 1, C: 8, DType: Float32, Seqs: 4}, 4, 1, 782},
		{ForwardPacked, Problem{B: 1, T: 16 * 2048, R: 16, C: 32, DType: BFloat16, Seqs: 16}, 8, 16, 256 + 15},
		{BackwardPacked, Problem{B: 1, T: 8 * 4096, R: 8, C: 64, DType: BFloat16, Seqs: 8}, 8, 8, 512 + 7},
		{ForwardPacked, Problem{B: 1, T: 4 * 16384, R: 4, C: 64, DType: BFloat16, Seqs: 4}, 8, 1, 512},
		// one sequence of 90% among 40 (session 34): one pass with 31 segments unless the caller
		// says how long the longest is (max_seqlen); then three passes
		{ForwardPacked, Problem{B: 1, T: 65536, R: 4, C: 64, DType: BFloat16, Seqs: 40}, 8, 31, 512 + 30},
		{ForwardPacked, Problem{B: 1, T: 65536, R: 4, C: 64, DType: BFloat16, Seqs: 40, MaxLen: 58982}, 8, 1, 512},
		{BackwardPacked, Problem{B: 1, T: 65536, R: 4, C: 64, DType: BFloat16, Seqs: 40, MaxLen: 58982}, 8, 1, 1024},
		{ForwardPacked, Problem{B: 1, T: 65536, R: 4, C: 64, DType: BFloat16, Seqs: 40, MaxLen: 8192}, 8, 31, 512 + 30},
	} {
		pl := plan(c.v, c.p, c.vec, h200)
		if pl.Segments != c.segments || pl.Chunks != c.chunks || (pl.Passes == 3) != (c.segments == 1 && pl.Tiles*32 <= 132) {
			t.Errorf("%v %+v: segments %d, chunks %d, passes %d; want %d, %d (three passes: one segment over few tiles)",
				c.v, c.p, pl.Segments, pl.Chunks, pl.Passes, c.segments, c.chunks)
		}
	}
}

// A packed forward with no initial and no final state takes the lean packed kernel (nostate), of
// the same width; with either state, the general one. The same for the backward (its states:
// the final state's gradient in, the initial state's gradient out).
func TestPackedPlansWithoutStates(t *testing.T) {
	for _, d := range []DType{Float32, Float16, BFloat16} {
		for _, c := range []int64{64, 5} {
			x := Tensor{Data: 1 << 20, DType: d, Shape: []int64{1, 4096, 8, c}, Strides: Contiguous(1, 4096, 8, c)}
			state := Tensor{Data: 1 << 30, DType: Float32, Shape: []int64{3, 8, c}, Strides: Contiguous(3, 8, c)}
			for _, s := range []struct {
				h0, hT Tensor
				want   string
			}{{Tensor{}, Tensor{}, "nostate_"}, {state, Tensor{}, ""}, {Tensor{}, state, ""}, {state, state, ""}} {
				// the problem as Validate records it (the states' presence included)
				A := Tensor{Data: 1 << 24, DType: Float32, Shape: []int64{1, 4096, 8}, Strides: Contiguous(1, 4096, 8)}
				out := x
				out.Data = 1 << 28
				cu := Tensor{Data: 1 << 32, DType: Int64, Shape: []int64{4}, Strides: []int64{1}}
				a := ScanArgs{A: A, X: x, Out: out, InitialState: s.h0, FinalState: s.hT, CuSeqlens: cu}
				if s.hT.Present() {
					a.FinalState.Data = 1 << 31
				}
				p, err := Validate(&a)
				if err != nil || p.Seqs != 3 {
					t.Fatalf("%v C=%d: %v (%+v)", d, c, err, p)
				}
				pl := PlanScan(&a, p, h200)
				want := fmt.Sprintf("nanossm_scan_fwd_packed_%s%s_v%d", s.want, map[DType]string{Float32: "f32", Float16: "f16", BFloat16: "bf16"}[d], pl.Vec)
				if pl.Kernel != want || pl.Vec != map[bool]int64{true: 16 / d.Size(), false: 1}[c == 64] {
					t.Errorf("%v C=%d h0 %v hT %v: kernel %s (vec %d), want %s", d, c, s.h0.Present(), s.hT.Present(), pl.Kernel, pl.Vec, want)
				}
				if pl.Group != 1 {
					t.Errorf("%v C=%d: carry group %d with 32 chunks", d, c, pl.Group)
				}
				// the backward's reverse scan: the final state's gradient is its initial state, dh0
				// its final one (a packed forward with h0 always asks for dh0: here only its plan)
				gA := A
				gA.Data = 1 << 33
				b := BackwardArgs{A: A, X: x, Out: out, GradOut: x, GradX: out, GradA: gA, CuSeqlens: cu,
					GradFinalState: s.h0, GradInitialState: a.FinalState}
				b.GradX.Data = 1 << 34
				rp, err := ValidateBackward(&b)
				if err != nil {
					t.Fatalf("backward %v C=%d: %v", d, c, err)
				}
				bl := PlanBackward(&b, rp, h200)
				want = strings.Replace(want, "fwd", "bwd", 1)
				if bl.Kernel != want {
					t.Errorf("backward %v C=%d gT %v dh0 %v: kernel %s, want %s", d, c, s.h0.Present(), s.hT.Present(), bl.Kernel, want)
				}
			}
		}
	}
}
