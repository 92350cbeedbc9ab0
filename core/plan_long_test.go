package core

import (
	"fmt"
	"math/rand"
	"testing"
)

// Plans over long chunks (longChunks) on devices and under knobs the default plans never meet.

// a100 is an A100 as core/cuda reports it: 108 SMs, 163 KB a block less 21.5 KB of static
// arrays, 164 KB an SM, each scan block's share beside its staging (blockShared).
var a100 = Device{SMs: 108, MaxShared: 166912 - 22016, SMShared: 164 << 10, BlockShared: blockShared()}

// blockShared is a block's share of an SM beside its staging for every scan kernel, as core/cuda
// reads it: its static arrays (cuobjdump -res-usage -arch sm_80 kernels/scan.fatbin, session 33;
// the sm_90 figures are these and the driver's 1 KB) and the driver's 1 KB. The long-chunk kernels', the only ones Device.holds is asked about, as
// measured; the rest at the largest.
func blockShared() map[string]int64 {
	m := map[string]int64{}
	for _, name := range scanKernels {
		m[name] = 17440 + 1024
	}
	for name, static := range map[string]int64{"grouped_long_%s_v4": 13472, "long_%s_v8": 17024, "packed_long_%s_v8": 17440,
		"packed_nostate_long_%s_v8": 16032} {
		for _, dt := range []string{"f16", "bf16"} {
			m["nanossm_scan_fwd_"+fmt.Sprintf(name, dt)] = static + 1024
		}
	}
	m["nanossm_scan_bwd_late_long_f32_v4"] = 9856 + 1024
	return m
}

// On an A100 the long fp32 backward's 192 KB does not fit: the short plan stays; the long 16-bit
// forward over 4-channel lanes (64 KB) fits two blocks a SM, but over 8-channel lanes (88 KB) one:
// its rule stands on two (Device.holds), so the short plan stays, plain or packed.
func TestLongPlansFitTheDevice(t *testing.T) {
	if pl := plan(Backward, Problem{B: 1, T: 65601, R: 20, C: 64, DType: Float32}, 4, a100); isLong(pl) || pl.Chunks != 1026 {
		t.Errorf("A100 fp32 backward, 10 tiles: %+v", pl)
	}
	if pl := plan(Forward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: BFloat16}, 4, a100); !isLong(pl) || pl.Chunks != 1024 {
		t.Errorf("A100 bf16 forward, one tile: %+v", pl)
	}
	for _, p := range []Problem{{B: 4, T: 8192, R: 64, C: 64, DType: BFloat16}, {B: 1, T: 4096, R: 4, C: 64, DType: Float16}} {
		if pl := plan(Forward, p, 8, a100); isLong(pl) {
			t.Errorf("A100 %+v over 8-channel lanes: %+v", p, pl)
		}
		if pl := plan(Forward, p, 8, h200); !isLong(pl) {
			t.Errorf("H200 %+v over 8-channel lanes: %+v", p, pl)
		}
	}
	// The packed forward's alike over more tiles than SMs / 32 (`bench --packed`'s packs; 2 x 1024
	// is under a wave of long blocks; few tiles lost, session 33).
	for _, c := range []struct {
		p    Problem
		long bool
	}{{Problem{B: 1, T: 8 * 2048, R: 64, C: 64, DType: BFloat16, Seqs: 8}, true},
		{Problem{B: 1, T: 16 * 1024, R: 16, C: 128, DType: Float16, Seqs: 16, HasInitial: true}, true},
		{Problem{B: 1, T: 2 * 1024, R: 64, C: 64, DType: BFloat16, Seqs: 2}, false},
		{Problem{B: 1, T: 4 * 16384, R: 4, C: 64, DType: BFloat16, Seqs: 4}, false},
		{Problem{B: 1, T: 16 * 2048, R: 16, C: 32, DType: Float16, Seqs: 16}, false}} {
		if pl := plan(ForwardPacked, c.p, 8, h200); isLong(pl) != c.long || isLong(pl) && pl.Steps != longForwardSteps8 {
			t.Errorf("H200 packed %+v: %+v, long chunks wanted: %v", c.p, pl, c.long)
		}
		if pl := plan(ForwardPacked, c.p, 8, a100); isLong(pl) {
			t.Errorf("A100 packed %+v: %+v", c.p, pl)
		}
	}
	if pl := plan(Backward, Problem{B: 1, T: 65601, R: 20, C: 64, DType: Float32}, 4, h200); !isLong(pl) ||
		pl.Shared > h200.MaxShared {
		t.Errorf("H200 fp32 backward, 10 tiles: %+v", pl)
	}
}

// Under every steps, warps and long-chunk knob the plans keep the workspace of the plan without a
// device (callers size it so), their look-back inside it before dA's partial sums, and those
// inside the workspace: a long chunk shorter than the knobs' short one must not take its plan.
func TestLongPlansKeepTheWorkspaceUnderKnobs(t *testing.T) {
	defer func(f, b, w, l int64) { ForwardSteps, BackwardSteps, BackwardMaxWarps, TuneLong = f, b, w, l }(
		ForwardSteps, BackwardSteps, BackwardMaxWarps, TuneLong)
	rng := rand.New(rand.NewSource(29))
	longs := 0
	for _, k := range []struct{ fwd, bwd, bwdWarps int64 }{{16, 8, 0}, {8, 4, 0}, {32, 16, 0}, {16, 16, 8}, {16, 16, 16}, {24, 16, 12}} {
		ForwardSteps, BackwardSteps, BackwardMaxWarps = k.fwd, k.bwd, k.bwdWarps
		for n := 0; n < 3000; n++ {
			p := Problem{B: 1 + rng.Int63n(4), T: 1 + rng.Int63n(1<<uint(8+rng.Intn(11))), R: 1 + rng.Int63n(40),
				C: 4 * (1 + rng.Int63n(40)), DType: []DType{Float32, Float16, BFloat16}[rng.Intn(3)]}
			v := []Variant{Forward, Backward, ForwardPacked}[rng.Intn(3)]
			if v == ForwardPacked {
				p.B, p.Seqs = 1, 1+rng.Int63n(9)
			}
			vec := map[bool]int64{true: 4, false: 16 / p.DType.Size()}[v == Forward && p.DType.Size() == 2 && rng.Intn(2) == 0]
			if p.C%vec != 0 {
				continue
			}
			for _, tl := range []int64{0, 2} {
				TuneLong = tl
				ref := plan(v, p, vec, Device{})
				for _, dev := range []Device{h200, {SMs: 1024, MaxShared: 227 << 10}, a100} {
					pl := plan(v, p, vec, dev)
					if isLong(pl) {
						longs++
					}
					part := int64(0)
					if pl.K > 1 {
						part = align256(pl.K * p.B * p.T * p.R * 4)
					}
					if pl.Kernel == "" || pl.Workspace != ref.Workspace || pl.Lookback > pl.Partials ||
						pl.Partials+part > pl.Workspace || isLong(pl) && (pl.Shared > dev.MaxShared || !dev.holds(longBlocks(v), pl.Kernel, pl.Shared)) {
						t.Fatalf("knobs %+v long %d, %+v %v vec %d on %+v: %+v (without a device %+v)", k, tl, p, v, vec, dev, pl, ref)
					}
				}
			}
		}
	}
	if longs == 0 {
		t.Fatal("no plan took long chunks")
	}
}

// The shared-memory allowance follows the steps and warps knobs (a module built with longer
// chunks must be allowed its staging) and is ScanMaxSharedBytes without them.
func TestStagedSharedBytes(t *testing.T) {
	defer func(f, b, w int64) { ForwardSteps, BackwardSteps, BackwardMaxWarps = f, b, w }(ForwardSteps, BackwardSteps, BackwardMaxWarps)
	if got := StagedSharedBytes(); got != ScanMaxSharedBytes {
		t.Fatalf("default: %d, want %d", got, ScanMaxSharedBytes)
	}
	// (the default holds the long-chunk backward's 192 KB)
	if ScanMaxSharedBytes != 192<<10 {
		t.Fatalf("ScanMaxSharedBytes %d, want %d", ScanMaxSharedBytes, 192<<10)
	}
	ForwardSteps = 64
	if got := StagedSharedBytes(); got != 256<<10 {
		t.Fatalf("forward 64 steps: %d, want %d", got, 256<<10)
	}
	ForwardSteps, BackwardSteps, BackwardMaxWarps = ScanSteps, 16, 16
	if got := StagedSharedBytes(); got != 384<<10 {
		t.Fatalf("backward 16 steps x 16 warps: %d, want %d", got, 384<<10)
	}
	BackwardMaxWarps = 8
	if pl := plan(Backward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, h200); pl.Warps != 8 || pl.Shared != 192<<10 {
		t.Fatalf("backward 16 steps x 8 warps: plan %+v", pl)
	}
}

// The carry groups of the 16-bit forward over 8-channel lanes at the module's chunks (128
// steps), as groupChunks and fewTileGroup were measured: the plans of T < 1536 or under a
// wave of long blocks (f16, one wave, below, takes them), and of any T
// on a device without the long kernels' shared memory or under NANOSSM_TUNE_LONG=1.
func TestShortPlansOfThe16BitForward(t *testing.T) {
	for _, c := range []struct {
		name                  string
		v                     Variant
		p                     Problem
		vec                   int64
		chunks, passes, group int64
	}{
		{"carry groups of 3", Forward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 512, 1, 3},
		{"few chunks, not grouped", Forward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 64, 1, 1},
		{"bf16 two tiles of 8-channel lanes, groups of 8", Forward, Problem{B: 2, T: 262144, R: 8, C: 32, DType: BFloat16}, 8, 2048, 1, 8},
		{"bf16 one tile of 8-channel lanes, groups of 16", Forward, Problem{B: 1, T: 131072, R: 8, C: 32, DType: BFloat16}, 8, 1024, 1, 16},
		{"bf16, 64 tiles of 512 chunks: not grouped", Forward, Problem{B: 4, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 512, 1, 1},
		{"bf16, 128 tiles of 128 chunks: not grouped (G = 3 lost there)", Forward, Problem{B: 8, T: 16384, R: 64, C: 64, DType: BFloat16}, 8, 128, 1, 1},
		{"bf16, 32 tiles of 512 chunks: groups of 3", Forward, Problem{B: 2, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 512, 1, 3},
		{"f16, one wave (16 tiles x 16 chunks): groups of 3", Forward, Problem{B: 1, T: 2048, R: 64, C: 64, DType: Float16}, 8, 16, 1, 3},
		{"bf16, 48 tiles of 64 chunks: groups of 2", Forward, Problem{B: 3, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 64, 1, 2},
		{"bf16, 64 tiles of 64 chunks: not grouped", Forward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 64, 1, 1},
		{"bf16, 16 tiles of 64 chunks: groups of 3", Forward, Problem{B: 1, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 64, 1, 3},
	} {
		pl := shortPlan(c.v, c.p, c.vec, h200)
		if pl.Chunks != c.chunks || pl.Passes != c.passes || pl.Group != c.group || isLong(pl) {
			t.Errorf("%s (short): chunks %d, passes %d, group %d; want %d, %d, %d", c.name, pl.Chunks, pl.Passes, pl.Group,
				c.chunks, c.passes, c.group)
		}
	}
}
