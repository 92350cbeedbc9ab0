package core

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// Invariants of every plan, over random shapes, dtypes, variants and GPUs: the chunks cover T
// exactly, the tiles cover every lane, the staging fits the shared memory the backend allows,
// the workspace does not depend on the device or the pass knob (it is sized before a device is
// loaded), a three-pass plan gives pass 2 at most one batch (8 chunks) per warp, and carries go
// by groups only in a single-pass 16-bit forward over 8-channel lanes of 128+ chunks or an fp32
// forward over 4-float lanes of 128+ chunks (the fp32 one in its grouped kernel).
func TestPlanInvariants(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	dtypes := []DType{Float32, Float16, BFloat16}
	for n := 0; n < 20000; n++ {
		p := Problem{B: 1 + rng.Int63n(8), T: 1 + rng.Int63n(1<<uint(rng.Intn(19))), R: 1 + rng.Int63n(70),
			C: 1 + rng.Int63n(700), DType: dtypes[rng.Intn(3)]}
		v := Variant(rng.Intn(4))
		vec := int64(1)
		if rng.Intn(2) == 0 && p.C%(16/p.DType.Size()) == 0 {
			vec = 16 / p.DType.Size()
		}
		ref := plan(v, p, vec, Device{})
		for _, sms := range []int64{0, 8, 132, 1024} {
			for _, tune := range []int64{0, 1, 3} {
				TunePasses = tune
				pl := plan(v, p, vec, Device{SMs: sms})
				TunePasses = 0
				chunk := pl.Warps * pl.Steps
				lanes := p.B * p.R * (p.C / vec)
				if v.backward() && p.C/vec <= 32 {
					lanes = p.B * p.R * 32 / (32 / (p.C / vec))
				}
				switch {
				case pl.Kernel == "" || pl.Chunks*chunk < p.T || (pl.Chunks-1)*chunk >= p.T:
					t.Fatalf("%+v %v vec %d: chunks %+v", p, v, vec, pl)
				case pl.Tiles*32 < lanes && pl.K == 1 || pl.Shared > ScanMaxSharedBytes:
					t.Fatalf("%+v %v vec %d: tiles or shared %+v", p, v, vec, pl)
				case pl.Workspace != ref.Workspace || pl.Partials != ref.Partials ||
					(pl.Passes == 3) != (pl.Lookback > ref.Lookback) || pl.Passes == 1 && pl.Lookback != ref.Lookback:
					t.Fatalf("%+v %v vec %d on %d SMs (passes knob %d): workspace %d, %d without a device", p, v, vec, sms, tune, pl.Workspace, ref.Workspace)
				case pl.Passes == 3 && (pl.Chunks <= 2 || pl.Tiles > maxPrefixTiles || pl.Prefix == "" ||
					pl.PrefixWarps < 1 || pl.PrefixWarps > PrefixMaxWarps || pl.Groups*pl.PrefixWarps*8 < pl.Chunks-2):
					t.Fatalf("%+v %v vec %d: three passes %+v", p, v, vec, pl)
				case pl.Group < 1 || pl.Group > 1 && (pl.Passes != 1 || v != Forward ||
					!(p.DType.Size() == 2 && vec == 8 && pl.Chunks >= 128 || p.DType == Float32 && vec == 4 && pl.Chunks >= 128)):
					t.Fatalf("%+v %v vec %d: carry group %+v", p, v, vec, pl)
				case (pl.Kernel == scanKernels[kernelKey{p.DType, v, vec, true, false}]) != (pl.Group > 1 && p.DType == Float32):
					t.Fatalf("%+v %v vec %d: kernel %s for carry group %d", p, v, vec, pl.Kernel, pl.Group)
				case pl.Passes == 3 && tune == 0 && pl.Tiles*32 > sms:
					t.Fatalf("%+v %v vec %d on %d SMs: three passes with many tiles %+v", p, v, vec, sms, pl)
				}
			}
		}
	}
}

// Plans of named shapes on an H200 (132 SMs): the shapes the GPU tests and the benchmark rely
// on to reach a given path (tests/test_torch_op.py captures the first two in a CUDA graph).
func TestNamedPlans(t *testing.T) {
	h200 := Device{SMs: 132, MaxShared: 227 << 10, EarlyLaunch: true}
	for _, c := range []struct {
		name                  string
		v                     Variant
		p                     Problem
		vec                   int64
		chunks, passes, group int64
	}{
		{"single pass behind the reset", Forward, Problem{B: 2, T: 300, R: 3, C: 8, DType: Float32}, 4, 3, 1, 1},
		{"three passes, forward", Forward, Problem{B: 1, T: 8300, R: 1, C: 8, DType: Float32}, 4, 65, 3, 1},
		{"three passes, backward (4 warps)", Backward, Problem{B: 1, T: 8300, R: 1, C: 8, DType: Float32}, 4, 260, 3, 1},
		{"carry groups of 3", Forward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 512, 1, 3},
		{"fp32 grouped by 2", Forward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, 512, 1, 2},
		{"fp32, 64 chunks, not grouped", Forward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: Float32}, 4, 64, 1, 1},
		{"few chunks, not grouped", Forward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 64, 1, 1},
		{"bench: one tile, three passes", Forward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: Float32}, 4, 2048, 3, 1},
	} {
		pl := plan(c.v, c.p, c.vec, h200)
		if pl.Chunks != c.chunks || pl.Passes != c.passes || pl.Group != c.group {
			t.Errorf("%s: chunks %d, passes %d, group %d; want %d, %d, %d", c.name, pl.Chunks, pl.Passes, pl.Group,
				c.chunks, c.passes, c.group)
		}
	}
}

// A packed forward with no initial and no final state takes the lean packed kernel (nostate), of
// the same width; with either state, the general one. The same for the backward (its states:
// the final state's gradient in, the initial state's gradient out).
func TestPackedPlansWithoutStates(t *testing.T) {
	h200 := Device{SMs: 132, MaxShared: 227 << 10, EarlyLaunch: true}
	for _, d := range []DType{Float32, Float16, BFloat16} {
		for _, c := range []int64{64, 5} {
			p := Problem{B: 1, T: 4096, R: 8, C: c, DType: d, Seqs: 3}
			x := Tensor{Data: 1 << 20, DType: d, Shape: []int64{1, 4096, 8, c}, Strides: Contiguous(1, 4096, 8, c)}
			state := Tensor{Data: 1 << 30, DType: Float32, Shape: []int64{3, 8, c}, Strides: Contiguous(3, 8, c)}
			for _, s := range []struct {
				h0, hT Tensor
				want   string
			}{{Tensor{}, Tensor{}, "nostate_"}, {state, Tensor{}, ""}, {Tensor{}, state, ""}, {state, state, ""}} {
				a := ScanArgs{X: x, Out: x, InitialState: s.h0, FinalState: s.hT}
				pl := PlanScan(&a, p, h200)
				want := fmt.Sprintf("nanossm_scan_fwd_packed_%s%s_v%d", s.want, map[DType]string{Float32: "f32", Float16: "f16", BFloat16: "bf16"}[d], pl.Vec)
				if pl.Kernel != want || pl.Vec != map[bool]int64{true: 16 / d.Size(), false: 1}[c == 64] {
					t.Errorf("%v C=%d h0 %v hT %v: kernel %s (vec %d), want %s", d, c, s.h0.Present(), s.hT.Present(), pl.Kernel, pl.Vec, want)
				}
				if pl.Group != 1 {
					t.Errorf("%v C=%d: carry group %d with 32 chunks", d, c, pl.Group)
				}
				b := BackwardArgs{X: x, Out: x, GradOut: x, GradX: x, CuSeqlens: x, GradFinalState: s.h0, GradInitialState: s.hT}
				bl := PlanBackward(&b, p, h200)
				want = strings.Replace(want, "fwd", "bwd", 1)
				if bl.Kernel != want {
					t.Errorf("backward %v C=%d gT %v dh0 %v: kernel %s, want %s", d, c, s.h0.Present(), s.hT.Present(), bl.Kernel, want)
				}
			}
		}
	}
}
