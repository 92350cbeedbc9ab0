package core

import (
	"math/rand"
	"strings"
	"testing"
)

// Invariants of every plan, over random shapes, dtypes, variants and GPUs: the chunks cover T
// exactly, the tiles cover every lane, the staging fits the shared memory the backend allows,
// the workspace does not depend on the device or the pass knob (it is sized before a device is
// loaded) nor on the number of sequences (callers cache it by layout), a three-pass plan gives
// pass 2 at most one batch (8 chunks) per warp, carries go by groups only in a single pass (a
// 16-bit forward over 8-channel lanes of a deep chain (or of 128+ chunks, SMs unknown) (groupChunks),
// an fp32 forward over 4-float lanes of 128+ chunks over at most SMs / 2 tiles (or SMs unknown) or few tiles, a 16-bit backward over 8-channel
// lanes of a deep chain (or of 1024+ chunks, SMs unknown), or the few-tile groups of fewTileGroup), in the kernel with the grouped path where there is one, and packed calls are
// cut into segments only in a single pass, at most one per sequence and MaxSegments, with a
// look-back slot for every chunk the segments may need (one more per segment). Besides the random
// shapes, a few long one-tile chains (the one-pass grouped backward of fewTileGroup, which the
// random ones seldom reach).
func TestPlanInvariants(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	dtypes := []DType{Float32, Float16, BFloat16}
	long := []Problem{ // fp32 backwards over one tile of 4-float lanes, around T = 131072
		{B: 1, T: 131071, R: 4, C: 32, DType: Float32}, {B: 1, T: 131072, R: 1, C: 8, DType: Float32},
		{B: 1, T: 200001, R: 2, C: 12, DType: Float32}, {B: 1, T: 262144, R: 4, C: 32, DType: Float32},
		{B: 2, T: 140000, R: 1, C: 16, DType: Float32}, {B: 1, T: 300000, R: 3, C: 4, DType: Float32}}
	longGrouped, late, longs, packedFew := 0, 0, map[bool]int{}, map[int64]int{}
	for n := 0; n < 20000+len(long); n++ {
		p := Problem{B: 1 + rng.Int63n(8), T: 1 + rng.Int63n(1<<uint(rng.Intn(19))), R: 1 + rng.Int63n(70),
			C: 1 + rng.Int63n(700), DType: dtypes[rng.Intn(3)]}
		v := Variant(rng.Intn(4))
		if n >= 20000 {
			p, v = long[n-20000], Backward
		}
		if v.packed() {
			p.Seqs = rng.Int63n(3 + p.T/(1+rng.Int63n(64)))
			if rng.Intn(2) == 0 { // (a caller's max_seqlen: any value up to T)
				p.MaxLen = rng.Int63n(p.T + 1)
			}
		}
		vec := int64(1)
		if n >= 20000 || rng.Intn(2) == 0 && p.C%(16/p.DType.Size()) == 0 {
			vec = 16 / p.DType.Size()
		} else if v == Forward && p.DType.Size() == 2 && p.C%4 == 0 && rng.Intn(2) == 0 {
			vec = 4 // (the 16-bit forward's 8-byte packets)
		}
		ref := plan(v, p, vec, Device{})
		// (the workspace does not depend on the number of sequences either: callers cache it by
		// layout)
		q := p
		q.Seqs = map[bool]int64{true: 1, false: 1000}[p.Seqs > 100]
		q.MaxLen = map[bool]int64{true: p.T, false: 0}[p.MaxLen == 0] // (nor on max_seqlen, a hint)
		other := plan(v, q, vec, Device{})
		for _, sms := range []int64{0, 8, 132, 1024} {
			for _, tune := range []int64{0, 1, 3} {
				TunePasses = tune
				pl := plan(v, p, vec, Device{SMs: sms})
				TunePasses = 0
				if n >= 20000 && tune == 0 && pl.Passes == 1 && pl.Group > 1 {
					longGrouped++
				}
				if isLate(pl) {
					late++
				}
				if isLong(pl) {
					longs[v.backward()]++
				}
				// (the few-tile groups: a single pass over few tiles and many chunks)
				fewGroup := tune != 3 && pl.Group == fewTileGroup(v, p.DType, vec, pl.Tiles, p.T) && pl.Chunks >= 64 &&
					pl.Tiles*32 <= sms
				// (deep chains: groupChunks' grids of about one wave or of few tiles)
				wide16 := p.DType.Size() == 2 && vec == 8
				deep := sms > 0 && pl.Chunks >= 4 && (pl.Tiles*pl.Chunks <= oneWaveBlocks*sms || pl.Tiles*4 <= sms)
				edge := sms > 0 && pl.Chunks >= 4 && (pl.Tiles*pl.Chunks <= 6*sms || pl.Tiles*8 <= 3*sms)
				want16 := int64(1) // (the 16-bit kernels' exact group, band by band)
				switch {
				case v == Backward && deep && pl.Tiles*16 <= sms && pl.Chunks >= 128:
					want16 = 8
				case v == Backward && deep && pl.Tiles*8 <= sms && pl.Chunks >= 128:
					want16 = 3
				case v == Backward && deep && pl.Tiles*8 <= sms:
					want16 = 4
				case v == Backward && (deep || sms == 0 && pl.Chunks >= 1024):
					want16 = 2
				case v == Forward && deep && pl.Chunks < 16:
					want16 = 2
				case v == Forward && (deep || sms == 0 && pl.Chunks >= 128):
					want16 = 3
				case v == Forward && edge:
					want16 = 2
				}
				// (the fp32 forward over 4-float lanes' exact group, outside fewTileGroup's plans)
				wantF32 := int64(1)
				if deep && pl.Tiles*4 <= sms || pl.Chunks >= 128 && (sms == 0 || pl.Tiles*2 <= sms) {
					wantF32 = 2
				}
				chunk := pl.Warps * pl.Steps
				base := pl.Chunks - (pl.Segments - 1)          // the chunks of one row
				segs := packedSegments(p.Seqs, pl.Tiles, base) // (a pack's, one pass or three)
				lanes := p.B * p.R * (p.C / vec)
				if v.backward() && p.C/vec <= 32 {
					lanes = p.B * p.R * 32 / (32 / (p.C / vec))
				}
				switch {
				case pl.Kernel == "" || base*chunk < p.T || (base-1)*chunk >= p.T:
					t.Fatalf("%+v %v vec %d: chunks %+v", p, v, vec, pl)
				case pl.Tiles*32 < lanes && pl.K == 1 || pl.Shared > ScanMaxSharedBytes:
					t.Fatalf("%+v %v vec %d: tiles or shared %+v", p, v, vec, pl)
				case pl.Workspace != ref.Workspace || pl.Partials != ref.Partials || pl.Lookback > pl.Workspace ||
					pl.Workspace != other.Workspace ||
					pl.Passes == 1 && !isLong(pl) && pl.Lookback != ref.Lookback ||
					isLong(pl) && (pl.Lookback > ref.Lookback || pl.Passes == 1 && pl.Chunks > 1 && pl.Lookback != 2*align256(pl.Chunks*pl.Tiles*32*vec*4)) ||
					pl.Passes == 3 && (pl.Lookback > pl.Partials || pl.Lookback <= 2*align256(pl.Chunks*pl.Tiles*32*vec*4)):
					t.Fatalf("%+v %v vec %d on %d SMs (passes knob %d): workspace %+v, %+v without a device, %+v with %d sequences",
						p, v, vec, sms, tune, pl, ref, other, q.Seqs)
				case pl.Passes == 3 && (pl.Chunks <= 2 || pl.Tiles > maxPrefixTiles || pl.Prefix == "" ||
					pl.PrefixWarps < 1 || pl.PrefixWarps > PrefixMaxWarps || pl.Groups*pl.PrefixWarps*8 < pl.Chunks-2):
					t.Fatalf("%+v %v vec %d: three passes %+v", p, v, vec, pl)
				// (groups only in a single pass of a plain call, where a rule gives them: which group,
				// the exact checks below)
				case pl.Group < 1 || pl.Group > 1 && (pl.Passes != 1 || v.packed() ||
					!(wide16 || v == Forward && p.DType == Float32 && vec == 4 || fewGroup)):
					t.Fatalf("%+v %v vec %d: carry group %+v", p, v, vec, pl)
				case pl.Group > pl.Chunks:
					t.Fatalf("%+v %v vec %d: carry group %d over %d chunks", p, v, vec, pl.Group, pl.Chunks)
				case wide16 && pl.Passes == 1 && pl.Chunks > 1 && !v.packed() && !fewGroup && pl.Group != want16:
					t.Fatalf("%+v %v on %d SMs: carry group %d, want %d (%+v)", p, v, sms, pl.Group, want16, pl)
				case v == Forward && p.DType == Float32 && vec == 4 && pl.Passes == 1 && pl.Chunks > 1 && !fewGroup &&
					pl.Group != wantF32:
					t.Fatalf("%+v %v on %d SMs: fp32 carry group %d, want %d (%+v)", p, v, sms, pl.Group, wantF32, pl)
				case strings.Contains(pl.Kernel, "_grouped_") != (pl.Group > 1 && hasGrouped(p.DType, v, vec)):
					t.Fatalf("%+v %v vec %d: kernel %s for carry group %d", p, v, vec, pl.Kernel, pl.Group)
				// (the late kernel: exactly the plain backward single passes of per-chunk look-back
				// over up to SMs / 2 tiles, where the width has one)
				case isLate(pl) != (v == Backward && pl.Passes == 1 && pl.Group == 1 && pl.Chunks >= 2 && sms > 0 &&
					pl.Tiles*2 <= sms && scanKernels[kernelKey{p.DType, v, vec, formLate, false, false}] != ""):
					t.Fatalf("%+v %v vec %d on %d SMs: late copies %+v", p, v, vec, sms, pl)
				case pl.Segments < 1 || pl.Segments > 1 && (pl.Passes != 1 || v != ForwardPacked && v != BackwardPacked ||
					pl.Segments > min(p.Seqs, MaxSegments) || base < 4*pl.Segments) ||
					pl.Chunks > 1 && pl.Lookback < 2*align256(pl.Chunks*pl.Tiles*32*vec*4):
					t.Fatalf("%+v %v vec %d: segments %+v", p, v, vec, pl)
				// (long chunks: exactly the 16-bit grouped forwards over 4-channel lanes of few tiles of
				// T >= 32768, the 16-bit forwards over 8-channel lanes of T >= 1536 over few tiles or
				// two long blocks a SM (packed: the latter, over more tiles than SMs / 32), on a device, and the
				// fp32 late backwards over SMs / 4 tiles or fewer of T >= 8192)
				case isLong(pl) != (pl.Passes == 1 && (v == Forward && p.DType.Size() == 2 && vec == 4 && pl.Group > 1 &&
					pl.Tiles*32 <= sms && p.T >= 32768 || isLate(pl) && p.DType == Float32 && pl.Tiles*4 <= sms && p.T >= 8192) ||
					v == Forward && p.DType.Size() == 2 && vec == 8 && sms > 0 && p.T >= 1536 && (pl.Tiles*32 <= sms || pl.Tiles*((p.T+175)/176) >= 2*sms) ||
					v == ForwardPacked && p.DType.Size() == 2 && vec == 8 && sms > 0 && p.T >= 1536 && pl.Tiles*32 > sms && pl.Tiles*((p.T+175)/176) >= 2*sms) ||
					isLong(pl) && (pl.Steps != map[int64]int64{4: longForwardSteps, 8: longForwardSteps8}[vec] && !v.backward() ||
						v.backward() && pl.Steps != longBackwardSteps || pl.Warps > ScanMaxWarps):
					t.Fatalf("%+v %v vec %d on %d SMs: long chunks %+v", p, v, vec, sms, pl)
				case pl.Passes == 3 && tune == 0 && pl.Tiles*32 > sms:
					t.Fatalf("%+v %v vec %d on %d SMs: three passes with many tiles %+v", p, v, vec, sms, pl)
				// (v83: a pack of few tiles takes three passes exactly where its segments would
				// average more than packedChain chunks, or its longest sequence, where known, spans
				// more)
				case tune == 0 && v.packed() && (pl.Passes == 3) != (pl.Tiles*32 <= sms && base >= 64 &&
					pl.Tiles <= maxPrefixTiles && ((base+segs-1)/segs > packedChain || (p.MaxLen+chunk-1)/chunk > packedChain)):
					t.Fatalf("%+v %v vec %d on %d SMs: packed passes %+v", p, v, vec, sms, pl)
				}
				if tune == 0 && v.packed() && pl.Tiles*32 <= sms && base >= 64 {
					packedFew[pl.Passes]++
				}
			}
		}
	}
	if longGrouped == 0 {
		t.Fatal("no long one-tile backward took the one-pass grouped plan")
	}
	if late == 0 {
		t.Fatal("no plan took the late backward kernel")
	}
	if longs[false] == 0 || longs[true] == 0 {
		t.Fatalf("plans over long chunks: %d forward, %d backward", longs[false], longs[true])
	}
	if packedFew[1] == 0 || packedFew[3] == 0 {
		t.Fatalf("packs of few tiles and many chunks: %d in one pass, %d in three", packedFew[1], packedFew[3])
	}
}

// h200 is the device of the named plans below: an H200's SMs and shared memory per block (227 KB
// less the kernels' largest static arrays, 21.5 KB, as core/cuda reports it), and per SM (228 KB;
// each scan block's share beside its staging: blockShared).
var h200 = Device{SMs: 132, MaxShared: 227<<10 - 22016, EarlyLaunch: true, SMShared: 228 << 10, BlockShared: blockShared()}

// Plans of named shapes on an H200 (132 SMs): the shapes the GPU tests and the benchmark rely
// on to reach a given path (tests/test_torch_op.py captures the first two in a CUDA graph).
func TestNamedPlans(t *testing.T) {
	for _, c := range []struct {
		name                  string
		v                     Variant
		p                     Problem
		vec                   int64
		chunks, passes, group int64
	}{
		{"single pass behind the reset", Forward, Problem{B: 2, T: 300, R: 3, C: 8, DType: Float32}, 4, 3, 1, 1},
		{"one tile, carries by groups of 48", Forward, Problem{B: 1, T: 8300, R: 1, C: 8, DType: Float32}, 4, 65, 1, 48},
		{"one tile of 16-bit 4-channel lanes, carries by groups of 64", Forward, Problem{B: 1, T: 8300, R: 1, C: 32, DType: BFloat16}, 4, 65, 1, 64},
		{"three passes, forward (single-channel lanes)", Forward, Problem{B: 1, T: 8300, R: 1, C: 5, DType: Float32}, 1, 65, 3, 1},
		{"three passes, backward (4 warps)", Backward, Problem{B: 1, T: 8300, R: 1, C: 8, DType: Float32}, 4, 260, 3, 1},
		{"fp32 grouped by 2", Forward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, 512, 1, 2},
		{"fp32, 64 tiles of 512 chunks: grouped by 2", Forward, Problem{B: 2, T: 65536, R: 64, C: 64, DType: Float32}, 4, 512, 1, 2},
		{"fp32, SMs / 2 tiles of 128 chunks: grouped by 2", Forward, Problem{B: 1, T: 16384, R: 66, C: 128, DType: Float32}, 4, 128, 1, 2},
		{"fp32, SMs / 2 + 1 tiles of 128 chunks: not grouped", Forward, Problem{B: 1, T: 16384, R: 67, C: 128, DType: Float32}, 4, 128, 1, 1},
		{"fp32, 96 tiles of 512 chunks: not grouped (G = 2 lost there)", Forward, Problem{B: 3, T: 65536, R: 64, C: 64, DType: Float32}, 4, 512, 1, 1},
		{"fp32, 256 tiles of 128 chunks: not grouped", Forward, Problem{B: 8, T: 16384, R: 64, C: 64, DType: Float32}, 4, 128, 1, 1},
		{"fp32, 64 chunks, not grouped", Forward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: Float32}, 4, 64, 1, 1},
		{"bench: one tile, groups of 48", Forward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: Float32}, 4, 2048, 1, 48},
		{"bench bf16: one tile of 4-channel lanes, long chunks, groups of 64", Forward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: BFloat16}, 4, 1024, 1, 64},
		{"tests/test_plans.py's bf16-long (one tile of 4-channel lanes): long chunks, groups of 64", Forward, Problem{B: 1, T: 40000, R: 1, C: 64, DType: BFloat16}, 4, 157, 1, 64},
		{"tests/test_plans.py's bf16 (one tile of 4-channel lanes, T below 32768): groups of 64", Forward, Problem{B: 1, T: 20000, R: 1, C: 64, DType: BFloat16}, 4, 157, 1, 64},
		{"fp32 backward, 10 tiles: long chunks", Backward, Problem{B: 1, T: 65601, R: 20, C: 64, DType: Float32}, 4, 513, 1, 1},
		{"tests/test_plans.py's long-bwd (10 tiles): long chunks", Backward, Problem{B: 1, T: 9000, R: 20, C: 64, DType: Float32}, 4, 71, 1, 1},
		{"tests/test_plans.py's wide (5 tiles of one row): long chunks", Backward, Problem{B: 1, T: 9000, R: 1, C: 640, DType: Float32}, 4, 71, 1, 1},
		{"fp32 backward, 10 tiles, T below 8192: short chunks", Backward, Problem{B: 1, T: 8000, R: 20, C: 64, DType: Float32}, 4, 125, 1, 1},
		{"two tiles, groups of 32", Forward, Problem{B: 1, T: 131072, R: 8, C: 32, DType: Float32}, 4, 1024, 1, 32},
		{"four tiles, groups of 16", Forward, Problem{B: 2, T: 262144, R: 8, C: 32, DType: Float32}, 4, 2048, 1, 16},
		{"bf16 backward, 16 tiles of 1024 chunks: groups of 3", Backward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 1024, 1, 3},
		{"bf16 backward, 64 tiles of 1024 chunks: not grouped (G = 2 lost there)", Backward, Problem{B: 4, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 1024, 1, 1},
		{"tests/test_backward.py's long chain (5 tiles): groups of 8", Backward, Problem{B: 1, T: 65601, R: 20, C: 64, DType: Float16}, 8, 1026, 1, 8},
		{"fp32 backward, 32 tiles: long chunks, not grouped", Backward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, 512, 1, 1},
		{"fp32 backward, 64 tiles: the module's chunks", Backward, Problem{B: 2, T: 8192, R: 64, C: 64, DType: Float32}, 4, 128, 1, 1},
		{"bf16 backward, 16 tiles of 512 chunks: groups of 3", Backward, Problem{B: 1, T: 32768, R: 64, C: 64, DType: BFloat16}, 8, 512, 1, 3},
		{"bf16 backward, 8 tiles of 1024 chunks: groups of 8", Backward, Problem{B: 1, T: 65536, R: 32, C: 64, DType: BFloat16}, 8, 1024, 1, 8},
		{"bf16 backward, 12 tiles of 1024 chunks: groups of 3", Backward, Problem{B: 1, T: 65536, R: 48, C: 64, DType: BFloat16}, 8, 1024, 1, 3},
		{"bf16 backward, 64 tiles of 128 chunks: not grouped", Backward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 128, 1, 1},
		{"bf16 backward, 32 tiles of 128 chunks: groups of 2", Backward, Problem{B: 2, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 128, 1, 2},
		{"backward, one tile of 4096 chunks: one pass, groups of 32", Backward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: Float32}, 4, 4096, 1, 32},
		{"tests/test_plans.py's long chain: one pass, groups of 32", Backward, Problem{B: 1, T: 131100, R: 2, C: 8, DType: Float32}, 4, 2049, 1, 32},
		{"backward, one tile, T below 131072: three passes over 4-warp blocks", Backward, Problem{B: 1, T: 100000, R: 4, C: 32, DType: Float32}, 4, 3125, 3, 1},
		{"backward, one tile of 1024 chunks: three passes", Backward, Problem{B: 1, T: 32768, R: 4, C: 32, DType: Float32}, 4, 1024, 3, 1},
		{"bf16 backward, one tile: three passes", Backward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: BFloat16}, 8, 4096, 3, 1},
		{"backward, two tiles: three passes", Backward, Problem{B: 1, T: 131072, R: 8, C: 32, DType: Float32}, 4, 4096, 3, 1},
		{"bf16, one wave (32 tiles x 8 chunks): groups of 2", Forward, Problem{B: 2, T: 1024, R: 64, C: 64, DType: BFloat16}, 8, 8, 1, 2},
		{"bf16, 1024 blocks: not grouped", Forward, Problem{B: 16, T: 1024, R: 16, C: 128, DType: BFloat16}, 8, 8, 1, 1},
		{"bf16, 768 blocks: groups of 2", Forward, Problem{B: 6, T: 1024, R: 64, C: 64, DType: BFloat16}, 8, 8, 1, 2},
		{"fp32, one wave of 128 tiles: not grouped", Forward, Problem{B: 4, T: 512, R: 64, C: 64, DType: Float32}, 4, 4, 1, 1},
		{"fp32, 32 tiles: groups of 2", Forward, Problem{B: 1, T: 1024, R: 64, C: 64, DType: Float32}, 4, 8, 1, 2},
		{"bf16 backward, one wave of 16 tiles (16 chunks): groups of 4", Backward, Problem{B: 1, T: 1024, R: 64, C: 64, DType: BFloat16}, 8, 16, 1, 4},
		{"bf16 backward, one wave of 32 tiles: groups of 2", Backward, Problem{B: 2, T: 1024, R: 64, C: 64, DType: BFloat16}, 8, 16, 1, 2},
		{"bf16 backward, 2048 blocks: not grouped", Backward, Problem{B: 8, T: 1024, R: 64, C: 64, DType: BFloat16}, 8, 16, 1, 1},
		{"fp32 backward, one wave: not grouped", Backward, Problem{B: 1, T: 1024, R: 64, C: 64, DType: Float32}, 4, 16, 1, 1},
		// the 16-bit forward over 8-channel lanes of T >= 1536 over few tiles or at least two long
		// blocks per SM takes long chunks (176 steps), carry groups by their count
		{"bf16 long chunks (16 tiles): groups of 3", Forward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 373, 1, 3},
		{"bf16 long chunks, 64 tiles of 47 chunks: not grouped", Forward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 47, 1, 1},
		{"bf16 long chunks, 16 tiles of 47 chunks: groups of 3", Forward, Problem{B: 1, T: 8192, R: 64, C: 64, DType: BFloat16}, 8, 47, 1, 3},
		{"bf16 long chunks, two tiles: groups of 8", Forward, Problem{B: 2, T: 262144, R: 8, C: 32, DType: BFloat16}, 8, 1490, 1, 8},
		{"bf16 long chunks, one tile: groups of 16", Forward, Problem{B: 1, T: 131072, R: 8, C: 32, DType: BFloat16}, 8, 745, 1, 16},
		{"tests/test_plans.py's bf16-wide-long (one tile of 8-channel lanes): long chunks, groups of 16", Forward, Problem{B: 1, T: 48000, R: 4, C: 64, DType: BFloat16}, 8, 273, 1, 16},
		{"tests/test_plans.py's bf16-wide (one tile, under a wave): long chunks, groups of 16", Forward, Problem{B: 1, T: 20000, R: 4, C: 64, DType: BFloat16}, 8, 114, 1, 16},
		{"bf16 T below 1536: the module's chunks", Forward, Problem{B: 6, T: 1024, R: 64, C: 64, DType: BFloat16}, 8, 8, 1, 2},
		{"bf16 long chunks from T = 1536 (64 tiles x 9)", Forward, Problem{B: 4, T: 1536, R: 64, C: 64, DType: BFloat16}, 8, 9, 1, 2},
		{"bf16 under a wave of long blocks (16 tiles x 12): the module's chunks", Forward, Problem{B: 1, T: 2048, R: 64, C: 64, DType: BFloat16}, 8, 16, 1, 3},
		{"bf16 a wave of long blocks (32 tiles x 12): long chunks", Forward, Problem{B: 2, T: 2048, R: 64, C: 64, DType: BFloat16}, 8, 12, 1, 2},
	} {
		pl := plan(c.v, c.p, c.vec, h200)
		if pl.Chunks != c.chunks || pl.Passes != c.passes || pl.Group != c.group {
			t.Errorf("%s: chunks %d, passes %d, group %d; want %d, %d, %d", c.name, pl.Chunks, pl.Passes, pl.Group,
				c.chunks, c.passes, c.group)
		}
	}
}

// The backward's late copies of x and out (lateXY): plain single passes of per-chunk look-back
// over up to SMs / 2 tiles in the late kernel of their width, never grouped, packed, three-pass,
// one-chunk or forward plans, nor single-channel lanes (no late kernel).
func TestLateXYPlans(t *testing.T) {
	for _, c := range []struct {
		name string
		v    Variant
		p    Problem
		vec  int64
		sms  int64
		want bool
	}{
		{"bench f32 1,65536: 32 tiles", Backward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, 132, true},
		{"bench f32 2,1024: 64 tiles", Backward, Problem{B: 2, T: 1024, R: 64, C: 64, DType: Float32}, 4, 132, true},
		{"SMs / 2 tiles", Backward, Problem{B: 1, T: 1024, R: 132, C: 64, DType: Float32}, 4, 132, true},
		{"SMs / 2 + 1 tiles", Backward, Problem{B: 1, T: 1024, R: 134, C: 64, DType: Float32}, 4, 132, false},
		{"bench f32 4,8192: 128 tiles", Backward, Problem{B: 4, T: 8192, R: 64, C: 64, DType: Float32}, 4, 132, false},
		{"bench bf16 8,2048: 128 tiles", Backward, Problem{B: 8, T: 2048, R: 64, C: 64, DType: BFloat16}, 8, 132, false},
		{"bf16 1,65536: grouped", Backward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: BFloat16}, 8, 132, false},
		{"f32 1,262144,4,32: grouped", Backward, Problem{B: 1, T: 262144, R: 4, C: 32, DType: Float32}, 4, 132, false},
		{"three passes", Backward, Problem{B: 1, T: 32768, R: 4, C: 32, DType: Float32}, 4, 132, false},
		{"one chunk", Backward, Problem{B: 1, T: 64, R: 4, C: 32, DType: Float32}, 4, 132, false},
		{"packed", BackwardPacked, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32, Seqs: 2}, 4, 132, false},
		{"forward", Forward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, 132, false},
		{"single-channel lanes: no late kernel", Backward, Problem{B: 1, T: 65536, R: 64, C: 63, DType: Float32}, 1, 132, false},
		{"no device", Backward, Problem{B: 1, T: 65536, R: 64, C: 64, DType: Float32}, 4, 0, false},
	} {
		dev := h200
		dev.SMs = c.sms
		pl := plan(c.v, c.p, c.vec, dev)
		if isLate(pl) != c.want {
			t.Errorf("%s: kernel %s, late copies wanted: %v", c.name, pl.Kernel, c.want)
		}
	}
	for _, c := range []struct {
		tune int64
		want bool
	}{{1, false}, {2, true}} { // (the knob: 8,2048 takes none by itself)
		TuneLateXY = c.tune
		got := isLate(plan(Backward, Problem{B: 8, T: 2048, R: 64, C: 64, DType: Float32}, 4, h200))
		TuneLateXY = 0
		if got != c.want {
			t.Errorf("TuneLateXY %d: late kernel %v, want %v", c.tune, got, c.want)
		}
	}
}

// isLate: the plan takes a late backward kernel (lateXY).
func isLate(pl ScanPlan) bool { return strings.Contains(pl.Kernel, "_late_") }

// isLong: the plan takes a long-chunk kernel (longChunks).
func isLong(pl ScanPlan) bool { return strings.Contains(pl.Kernel, "_long_") }

// hasGrouped: the dispatch table has a kernel with carries by groups for (dtype, variant, width).
func hasGrouped(dt DType, v Variant, vec int64) bool {
	_, ok := scanKernels[kernelKey{dt, v, vec, formGrouped, false, false}]
	return ok
}
