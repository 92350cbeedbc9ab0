package core

import (
	"strings"
	"testing"
	"unsafe"
)

// TestValidateErrors: each bad call is refused with its status and a message naming the argument.
func TestValidateErrors(t *testing.T) {
	buf := make([]float64, 4096)
	base := uintptr(unsafe.Pointer(&buf[0]))
	base = (base + 255) &^ 255
	f32 := func(off int, shape ...int64) Tensor {
		return Tensor{base + uintptr(off), Float32, shape, Contiguous(shape...)}
	}
	good := func() ScanArgs {
		return ScanArgs{A: f32(0, 2, 3, 4), X: f32(4096, 2, 3, 4, 5), Out: f32(12288, 2, 3, 4, 5), Device: CPU}
	}
	cases := []struct {
		name   string
		mutate func(a *ScanArgs)
		status Status
		msg    string
	}{
		{"x rank", func(a *ScanArgs) { a.X = f32(4096, 2, 3, 4) }, StatusInvalidArgument, "x: expected 4 dims (B,T,R,C), got 3"},
		{"A rank", func(a *ScanArgs) { a.A = f32(0, 2, 3) }, StatusInvalidArgument, "A: expected 3 dims (B,T,R), got 2"},
		{"A shape", func(a *ScanArgs) { a.A = f32(0, 2, 5, 4) }, StatusInvalidArgument, "A: shape (2,5,4) does not match x's (B,T,R) = (2,3,4)"},
		{"zero T", func(a *ScanArgs) { a.X.Shape[1] = 0 }, StatusInvalidArgument, "x: size of dim T must be >= 1, got 0"},
		{"negative size", func(a *ScanArgs) { a.X.Shape[0] = -1 }, StatusInvalidArgument, "x: size of dim B must be >= 1, got -1"},
		{"negative stride", func(a *ScanArgs) { a.X.Strides[2] = -5 }, StatusInvalidArgument, "x: stride of dim R must be >= 0, got -5"},
		{"NULL x", func(a *ScanArgs) { a.X.Data = 0 }, StatusInvalidArgument, "x: data pointer is NULL"},
		{"misaligned x", func(a *ScanArgs) { a.X.Data++ }, StatusInvalidArgument, "x: data pointer"},
		{"int x", func(a *ScanArgs) { a.X.DType = Int32 }, StatusInvalidArgument, "x: expected float32, float16, bfloat16 or float64, got int32"},
		{"unknown dtype", func(a *ScanArgs) { a.X.DType = 42 }, StatusInvalidArgument, "x: unknown dtype 42"},
		{"A dtype", func(a *ScanArgs) { a.A.DType = Float16 }, StatusInvalidArgument, "A: expected float32, got float16"},
		{"half on CPU", func(a *ScanArgs) { a.X.DType, a.Out.DType = Float16, Float16 }, StatusUnsupported, "x: float16 is supported on CUDA devices only"},
		{"float64 on GPU", func(a *ScanArgs) { a.X.DType, a.Out.DType, a.Device = Float64, Float64, 0 }, StatusUnsupported, "x: float64 is supported on the CPU only"},
		{"out shape", func(a *ScanArgs) { a.Out = f32(12288, 2, 3, 4, 6) }, StatusInvalidArgument, "out: expected float32 (2,3,4,5) like x, got float32 (2,3,4,6)"},
		{"out overlaps itself", func(a *ScanArgs) { a.Out.Strides = []int64{0, 20, 5, 1} }, StatusInvalidArgument, "out: strides (0,20,5,1) make elements overlap"},
		{"out overlaps x", func(a *ScanArgs) { a.Out.Data = a.X.Data + 4 }, StatusInvalidArgument, "out: overlaps x"},
		{"h0 shape", func(a *ScanArgs) { a.InitialState = f32(20000, 2, 4, 4) }, StatusInvalidArgument, "initial_state: expected shape (2,4,5), got (2,4,4)"},
		{"h0 dtype", func(a *ScanArgs) {
			a.InitialState = f32(20000, 2, 4, 5)
			a.InitialState.DType = Float64
		}, StatusInvalidArgument, "initial_state: expected float32, got float64"},
		{"h0 strides", func(a *ScanArgs) {
			a.InitialState = f32(20000, 2, 4, 5)
			a.InitialState.Strides = []int64{20, 1, 4}
		}, StatusInvalidArgument, "initial_state: expected contiguous strides (20,5,1), got (20,1,4)"},
		{"h0 with reverse", func(a *ScanArgs) { a.InitialState, a.Reverse = f32(20000, 2, 4, 5), true }, StatusUnsupported, "initial_state: not defined for reverse scans"},
		{"final overlaps out", func(a *ScanArgs) { a.FinalState = f32(12288, 2, 4, 5) }, StatusInvalidArgument, "final_state: overlaps A, x or out"},
		{"final overlaps A", func(a *ScanArgs) { a.FinalState = f32(0, 2, 4, 5) }, StatusInvalidArgument, "final_state: overlaps A, x or out"},
		{"out overlaps A", func(a *ScanArgs) { a.Out = f32(0, 2, 3, 4, 5) }, StatusInvalidArgument, "out: overlaps A"},
		{"cu_seqlens with B = 2", func(a *ScanArgs) { a.CuSeqlens = Tensor{base, Int64, []int64{2}, []int64{1}} }, StatusInvalidArgument, "cu_seqlens: packed sequences need B = 1, got B = 2"},
		{"cu_seqlens dtype", func(a *ScanArgs) { a.CuSeqlens = Tensor{base, Float32, []int64{2}, []int64{1}} }, StatusInvalidArgument, "cu_seqlens: expected int32 or int64, got float32"},
		{"device", func(a *ScanArgs) { a.Device = -7 }, StatusInvalidArgument, "device: expected a CUDA ordinal >= 0 or -1 for the CPU, got -7"},
		{"huge", func(a *ScanArgs) { a.X.Shape = []int64{1 << 40, 1 << 40, 4, 5} }, StatusInvalidArgument, "x: shape (1099511627776,1099511627776,4,5) has more than 2^63 elements"},
	}
	for _, c := range cases {
		a := good()
		c.mutate(&a)
		_, err := Validate(&a)
		if StatusOf(err) != c.status || err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v (status %v), want status %v and %q", c.name, err, StatusOf(err), c.status, c.msg)
		}
	}
	a := good()
	if _, err := Validate(&a); err != nil {
		t.Fatalf("the good call is refused: %v", err)
	}
}

func TestPlanScan(t *testing.T) {
	mk := func(dt DType, data uintptr, shape, strides []int64) *ScanArgs {
		x := Tensor{data, dt, shape, strides}
		return &ScanArgs{X: x, Out: x}
	}
	p := func(T, C int64, dt DType) Problem { return Problem{B: 2, T: T, R: 3, C: C, DType: dt} }
	cases := []struct {
		name    string
		args    *ScanArgs
		prob    Problem
		kernel  string
		vec     int64
		warps   int64
		chunks  int64
		needsWS bool
	}{
		{"fp32 vector", mk(Float32, 1<<20, []int64{2, 200, 3, 8}, Contiguous(2, 100, 3, 8)), p(200, 8, Float32), "nanossm_scan_fwd_f32_v4", 4, 8, 2, true},
		{"fp32 C=7 scalar", mk(Float32, 1<<20, []int64{2, 3, 3, 7}, Contiguous(2, 3, 3, 7)), p(3, 7, Float32), "nanossm_scan_fwd_f32_v1", 1, 1, 1, false},
		{"fp32 misaligned", mk(Float32, 1<<20+4, []int64{2, 64, 3, 8}, Contiguous(2, 64, 3, 8)), p(64, 8, Float32), "nanossm_scan_fwd_f32_v1", 1, 4, 1, false},
		{"fp32 strided c", mk(Float32, 1<<20, []int64{2, 64, 3, 8}, []int64{3072, 48, 16, 2}), p(64, 8, Float32), "nanossm_scan_fwd_f32_v1", 1, 4, 1, false},
		{"bf16 vector", mk(BFloat16, 1<<20, []int64{2, 9, 3, 64}, Contiguous(2, 9, 3, 64)), p(9, 64, BFloat16), "nanossm_scan_fwd_bf16_v8", 8, 1, 1, false},
		// 8-channel lanes would leave the warp idle (12 lanes): 4-channel ones
		{"bf16 narrow", mk(BFloat16, 1<<20, []int64{2, 9, 3, 16}, Contiguous(2, 9, 3, 16)), p(9, 16, BFloat16), "nanossm_scan_fwd_bf16_v4", 4, 1, 1, false},
		// C = 12 allows no 16-byte packet, and 8-byte ones beat single channels
		{"f16 C=12", mk(Float16, 1<<20, []int64{2, 9, 3, 12}, Contiguous(2, 9, 3, 12)), p(9, 12, Float16), "nanossm_scan_fwd_f16_v4", 4, 1, 1, false},
		{"f16 C=12 wide", mk(Float16, 1<<20, []int64{2, 9, 16, 12}, Contiguous(2, 9, 16, 12)), Problem{B: 2, T: 9, R: 16, C: 12, DType: Float16}, "nanossm_scan_fwd_f16_v4", 4, 1, 1, false},
		{"f16 8-byte aligned", mk(Float16, 1<<20+8, []int64{2, 9, 8, 64}, Contiguous(2, 9, 8, 64)), Problem{B: 2, T: 9, R: 8, C: 64, DType: Float16}, "nanossm_scan_fwd_f16_v4", 4, 1, 1, false},
		{"f16 C=6", mk(Float16, 1<<20, []int64{2, 9, 3, 6}, Contiguous(2, 9, 3, 6)), p(9, 6, Float16), "nanossm_scan_fwd_f16_v1", 1, 1, 1, false},
	}
	for _, c := range cases {
		pl := PlanScan(c.args, c.prob, Device{SMs: 132})
		if pl.Kernel != c.kernel || pl.Vec != c.vec || pl.Warps != c.warps || pl.Chunks != c.chunks || (pl.Workspace > 0) != c.needsWS {
			t.Errorf("%s: got %+v", c.name, pl)
		}
		if pl.Steps != ScanSteps || pl.Shared != pl.Warps*ScanSteps*32*pl.Vec*c.prob.DType.Size() || pl.Shared > ScanMaxSharedBytes {
			t.Errorf("%s: shared bytes %d", c.name, pl.Shared)
		}
		if pl.Chunks > 1 && (pl.Workspace%256 != 0 || pl.Workspace < 2*pl.Chunks*pl.Tiles*32*pl.Vec*4) {
			t.Errorf("%s: workspace layout too small: %+v", c.name, pl)
		}
	}
	// Few tiles and many chunks take three passes over single-channel lanes (over packets: one
	// pass with carries by large groups, fewTileGroup); many tiles, few chunks, a knob or a small
	// GPU change that, and the workspace never depends on it.
	x := func(B, T, R, C int64) (*ScanArgs, Problem) {
		return mk(Float32, 1<<20, []int64{B, T, R, C}, Contiguous(B, T, R, C)), Problem{B: B, T: T, R: R, C: C, DType: Float32}
	}
	passes := []struct {
		name       string
		B, T, R, C int64
		sms        int64
		tune       int64
		want       int64
	}{
		{"one tile, 2048 chunks", 1, 262144, 4, 31, 132, 0, 3},
		{"4 tiles", 1, 65536, 1, 127, 132, 0, 3},
		{"one tile of packets, 2048 chunks: groups", 1, 262144, 4, 32, 132, 0, 1},
		{"4 tiles of packets: groups", 1, 65536, 4, 128, 132, 0, 1},
		{"8 tiles", 1, 65536, 8, 128, 132, 0, 1},
		{"32 tiles", 1, 65536, 64, 64, 132, 0, 1},
		{"one tile, 63 chunks", 1, 63 * 128, 4, 32, 132, 0, 1},
		{"4 tiles on 64 SMs", 1, 65536, 4, 128, 64, 0, 1},
		{"forced single pass", 1, 262144, 4, 32, 132, 1, 1},
		{"group knob 1: three passes", 1, 262144, 4, 32, 132, -1, 3},
		{"forced three passes", 2, 1024, 64, 64, 132, 3, 3},
		{"two chunks stay single", 1, 256, 4, 32, 132, 3, 1},
	}
	for _, c := range passes {
		a, pr := x(c.B, c.T, c.R, c.C)
		TunePasses = c.tune
		if c.tune < 0 { // (-1: NANOSSM_TUNE_GROUP=1, the per-chunk look-back)
			TunePasses, TuneGroup = 0, 1
		}
		pl := PlanScan(a, pr, Device{SMs: c.sms})
		single := plan(Forward, pr, pl.Vec, Device{})
		TunePasses, TuneGroup = 0, 0
		if pl.Passes != c.want || (pl.Passes == 3) != (pl.Prefix == prefixKernels[pl.Vec]) ||
			pl.Passes == 3 && (pl.PrefixWarps < 1 || pl.PrefixWarps > PrefixMaxWarps || pl.Groups < 1 ||
				pl.Groups*pl.PrefixWarps*8 < pl.Chunks-2 || // 8 chunks per warp at most (one batch)
				pl.Lookback < 2*align256(pl.Chunks*pl.Tiles*32*pl.Vec*4)+pl.Tiles*pl.Groups*32*(pl.Vec+2)*4) {
			t.Errorf("%s: passes %d (%s, %d warps), want %d", c.name, pl.Passes, pl.Prefix, pl.PrefixWarps, c.want)
		}
		if pl.Workspace != single.Workspace || pl.Partials != single.Partials {
			t.Errorf("%s: the workspace depends on the passes: %+v vs %+v", c.name, pl, single)
		}
		if pl.Passes == 1 && pl.Lookback != single.Lookback || pl.Passes == 3 && pl.Lookback != pl.Workspace {
			t.Errorf("%s: %d passes reset %d bytes of %d (one pass: %d)", c.name, pl.Passes, pl.Lookback, pl.Workspace, single.Lookback)
		}
	}
	// The backward: 8 warps x 8 steps, three staged tensors (96 KB), whole rows per tile; 3 tiles
	// take the late kernel (lateXY).
	gx := Tensor{1 << 20, Float32, []int64{2, 1000, 3, 64}, Contiguous(2, 1000, 3, 64)}
	bp := PlanBackward(&BackwardArgs{GradOut: gx, GradX: gx, X: gx, Out: gx}, Problem{B: 2, T: 1000, R: 3, C: 64, DType: Float32}, Device{SMs: 132})
	if bp.Kernel != "nanossm_scan_bwd_late_f32_v4" || bp.Steps != 8 || bp.Warps != 8 || bp.Chunks != 16 || bp.Tiles != 3 || bp.K != 1 ||
		bp.Shared != 3*8*8*32*16 || bp.Shared > ScanMaxSharedBytes {
		t.Errorf("backward plan: %+v", bp)
	}
	for key, name := range scanKernels {
		if !strings.Contains(name, map[DType]string{Float32: "f32", Float16: "f16", BFloat16: "bf16"}[key.dtype]) ||
			strings.Contains(name, "_grouped_") != (key.form == formGrouped) || strings.Contains(name, "_late_") != (key.form == formLate) ||
			strings.Contains(name, "_long_") != key.long {
			t.Errorf("dispatch table: %v -> %s", key, name)
		}
	}
}

// packedSeqlens: cu_seqlens of one sequence of 2 steps, at a stable address (read on the CPU).
var packedSeqlens = []int64{0, 2}

// TestPackedStateOffsetLimit: the packed forward kernels with states hold a lane's offset in a
// state row in 32 bits, so packed CUDA forward calls with states need R*C < 2^31; every other
// call of the same shapes is accepted (validation only: the tensors are far-apart addresses
// never read, but cu_seqlens on the CPU).
func TestPackedStateOffsetLimit(t *testing.T) {
	far := func(i uintptr, shape ...int64) Tensor { return Tensor{i << 40, Float32, shape, Contiguous(shape...)} }
	cu := Tensor{uintptr(unsafe.Pointer(&packedSeqlens[0])), Int64, []int64{2}, []int64{1}}
	call := func(r, c int64, device int, h0, hT bool) *ScanArgs {
		a := &ScanArgs{A: far(1, 1, 2, r), X: far(2, 1, 2, r, c), Out: far(3, 1, 2, r, c), CuSeqlens: cu, Device: device}
		if h0 {
			a.InitialState = far(4, 1, r, c)
		}
		if hT {
			a.FinalState = far(5, 1, r, c)
		}
		return a
	}
	const wide = 1 << 15 // R = 2^16 rows of C = 2^15: R*C = 2^31
	for _, c := range []struct {
		name    string
		a       *ScanArgs
		refused bool
	}{
		{"final state", call(1<<16, wide, 0, false, true), true},
		{"initial state", call(1<<16, wide, 0, true, false), true},
		{"both", call(1<<16, wide, 0, true, true), true},
		{"no states (the lean kernels)", call(1<<16, wide, 0, false, false), false},
		{"on the CPU", call(1<<16, wide, CPU, true, true), false},
		{"R*C = 2^31-1", call(1, 1<<31-1, 0, true, true), false},
	} {
		_, err := Validate(c.a)
		if c.refused != (err != nil) || (c.refused && (StatusOf(err) != StatusUnsupported ||
			!strings.Contains(err.Error(), "x: R*C = 2147483648 state elements per step; packed CUDA calls with states take at most 2^31-1"))) {
			t.Errorf("%s: got %v, refused want %v", c.name, err, c.refused)
		}
	}
	// the backward's packed kernels keep 64-bit offsets
	b := &BackwardArgs{A: far(1, 1, 2, 1<<16), X: far(2, 1, 2, 1<<16, wide), Out: far(3, 1, 2, 1<<16, wide),
		GradOut: far(6, 1, 2, 1<<16, wide), GradX: far(7, 1, 2, 1<<16, wide), GradA: far(8, 1, 2, 1<<16),
		InitialState: far(4, 1, 1<<16, wide), GradInitialState: far(9, 1, 1<<16, wide), CuSeqlens: cu, Device: 0}
	if _, err := ValidateBackward(b); err != nil {
		t.Errorf("backward: refused: %v", err)
	}
}
