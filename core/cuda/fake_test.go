//go:build cuda && fakecuda

// What each call enqueues against the fake driver: kernels, launch shapes, parameters, the
// look-back reset, three passes, the backward; and that the launch path allocates nothing.

package cuda

import (
	"runtime"
	"strings"
	"testing"

	"github.com/nanossm/nanossm/core"
)

func TestModuleLoadsOnceWithEveryKernel(t *testing.T) {
	run(t, 0, func() error { return core.Scan(forward(t, core.Float32, 1, 5, 2, 4, nil)) })
	loaded := fakeModulesLoaded() // cuda:0's, and those of devices earlier tests used
	run(t, fakePrimary, func() error { return core.Scan(forward(t, core.Float32, 1, 5, 2, 4, nil)) })
	run(t, 0, func() error { return core.Scan(forward(t, core.Float32, 2, 500, 3, 8, nil)) })
	if n := fakeModulesLoaded(); loaded < 1 || n != loaded {
		t.Fatalf("modules loaded: %d after the first call, %d after two more", loaded, n)
	}
	// (cuda:0: an H200's 227 KB less the fake's 16 KB of static shared memory hold the most a
	// plan stages)
	for _, name := range core.ScanKernelNames() {
		if got := fakeMaxShared(name); got != core.ScanMaxSharedBytes || got+16<<10 > 232448 {
			t.Errorf("%s: dynamic shared memory limit %d, want %d", name, got, core.ScanMaxSharedBytes)
		}
	}
}

// A caller whose current context is already the primary one (PyTorch's) costs no context
// switch; any other caller gets the primary context for the call and its own back after.
func TestContext(t *testing.T) {
	a := forward(t, core.Float32, 2, 40, 3, 8, nil)
	run(t, fakePrimary, func() error { return core.Scan(a) })
	if n := fakeCtxSets(); n != 0 {
		t.Fatalf("%d context switches with the primary context current", n)
	}
	for _, ctx := range []uintptr{0, 0x5000} {
		ls := run(t, ctx, func() error { return core.Scan(a) })
		if len(ls) != 1 || ls[0].Ctx != fakePrimary {
			t.Fatalf("from context %#x: %+v", ctx, ls)
		}
	}
}

func TestForwardSinglePass(t *testing.T) {
	cases := []struct {
		name       string
		dt         core.DType
		B, T, R, C int64
		edit       func(a *core.ScanArgs)
		flags, vec int64
	}{
		{"f32 vec4", core.Float32, 2, 300, 3, 8, nil, 0, 4},
		{"f32 C=5", core.Float32, 2, 1000, 3, 5, nil, 0, 1},
		// one tile of 32 chunks: a grid of one wave, carries by groups of 3 (groupChunks)
		{"bf16 vec8", core.BFloat16, 1, 4096, 4, 64, nil, 3 << 8, 8},
		{"f16 reverse (narrow: vec4)", core.Float16, 2, 129, 2, 16, func(a *core.ScanArgs) { a.Reverse = true }, 1, 4},
		{"f32 strided x", core.Float32, 2, 64, 3, 8, func(a *core.ScanArgs) {
			a.X.Strides = []int64{64 * 3 * 16, 3 * 16, 16, 1} // a slice of a wider tensor
		}, 0, 4},
		// (one tile of 6 chunks: carries by groups of 2, groupChunks' few tiles)
		{"f32 states", core.Float32, 2, 700, 3, 4, func(a *core.ScanArgs) {
			a.InitialState, a.FinalState = tensor(addrH0, core.Float32, 2, 3, 4), tensor(addrHT, core.Float32, 2, 3, 4)
		}, 2 << 8, 4},
		// 3 sequences, 8 chunks of 128 steps, one tile: 2 segments (flag bits 16-23; segments
		// of 4+ chunks, core/plan_packed.go packedSegments)
		{"f32 packed int32", core.Float32, 1, 900, 3, 4, func(a *core.ScanArgs) {
			a.CuSeqlens = tensor(addrSeq, core.Int32, 4)
		}, 16 | 2<<16, 4},
		// 256 chunks of 128 steps, 5 tiles of 8-channel lanes: carries by groups of 3 (flag bits
		// 8-15); the fp32 forward groups by 2 from 128 chunks or over few tiles, in its grouped
		// kernel
		{"bf16 grouped carries", core.BFloat16, 1, 256 * 128, 20, 64, nil, 3 << 8, 8},
		{"f32 grouped carries", core.Float32, 1, 128 * 128, 20, 64, nil, 2 << 8, 4},
		{"f32 64 chunks of 40 tiles, not grouped", core.Float32, 1, 64 * 128, 320, 16, nil, 0, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := forward(t, c.dt, c.B, c.T, c.R, c.C, c.edit)
			p, err := core.Validate(a)
			if err != nil {
				t.Fatal(err)
			}
			pl := core.PlanScan(a, p, core.Device{SMs: 132})
			if pl.Passes != 1 || pl.Vec != c.vec {
				t.Fatalf("plan %+v: want one pass of %d-channel packets", pl, c.vec)
			}
			ls := run(t, fakePrimary, func() error { return core.Scan(a) })
			if pl.Chunks > 1 {
				if len(ls) != 2 || !ls[0].Memset || ls[0].Dst != addrWS || ls[0].Value != 0xffffffff ||
					int64(ls[0].Count)*4 != pl.Lookback || ls[0].Stream != stream {
					t.Fatalf("want a memset of the %d look-back bytes then the scan, got %+v", pl.Lookback, ls)
				}
				ls = ls[1:]
			}
			if len(ls) != 1 {
				t.Fatalf("want one launch, got %+v", ls)
			}
			// (carries by groups over 4-channel lanes are kernels of their own)
			if grouped := c.vec == 4 && c.flags>>8&0xff > 1; grouped != strings.Contains(pl.Kernel, "_grouped_") {
				t.Fatalf("kernel %s for flags %#x", pl.Kernel, c.flags)
			}
			checkLaunch(t, ls[0], pl.Kernel, pl.Tiles*pl.Chunks, pl.Warps, pl.Shared)
			checkCommon(t, ls[0], a, c.flags, pl.Chunks, pl.Tiles)
		})
	}
}

func TestForwardThreePasses(t *testing.T) {
	core.TunePasses = 3
	defer func() { core.TunePasses = 0 }()
	a := forward(t, core.Float32, 1, 9000, 1, 4, nil)
	p, _ := core.Validate(a)
	pl := core.PlanScan(a, p, core.Device{SMs: 132})
	if pl.Passes != 3 {
		t.Fatalf("plan %+v", pl)
	}
	ls := run(t, fakePrimary, func() error { return core.Scan(a) })
	if len(ls) != 4 || !ls[0].Memset || int64(ls[0].Count)*4 != pl.Lookback {
		t.Fatalf("want a memset and three launches, got %+v", ls)
	}
	checkLaunch(t, ls[1], pl.Kernel, pl.Tiles*pl.Chunks, pl.Warps, pl.Shared)
	checkCommon(t, ls[1], a, 32, pl.Chunks, pl.Tiles) // F_AGG_ONLY
	checkLaunch(t, ls[2], pl.Prefix, pl.Tiles*pl.Groups, pl.PrefixWarps, 0)
	checkCommon(t, ls[2], a, 0, pl.Chunks, pl.Tiles)
	if got := ls[2].Params[26:]; got[0] != 0 || got[1] != pl.K || got[2] != pl.Warps*pl.Steps {
		t.Fatalf("prefix parameters (bwd, K, chunk_len) %v, want 0 %d %d", got, pl.K, pl.Warps*pl.Steps)
	}
	checkLaunch(t, ls[3], pl.Kernel, pl.Tiles*pl.Chunks, pl.Warps, pl.Shared)
	checkCommon(t, ls[3], a, 64, pl.Chunks, pl.Tiles) // F_PREFIXED
}

// The workspace holds pass 2's group region whenever three passes are possible, but a single
// pass resets only the look-back's two arrays (chunks x tiles x 32 lanes x vec floats each).
func TestSinglePassResetsOnlyTheLookback(t *testing.T) {
	for _, passes := range []int64{1, 3} {
		core.TunePasses = passes
		a := forward(t, core.Float32, 1, 9000, 1, 4, nil)
		p, _ := core.Validate(a)
		pl := core.PlanScan(a, p, core.Device{SMs: 132})
		core.TunePasses = passes
		ls := run(t, fakePrimary, func() error { return core.Scan(a) })
		core.TunePasses = 0
		arrays := 2 * ((pl.Chunks*pl.Tiles*32*4*4 + 255) / 256 * 256)
		if pl.Passes != passes || pl.Workspace <= arrays || !ls[0].Memset {
			t.Fatalf("plan %+v, records %+v", pl, ls)
		}
		got := int64(ls[0].Count) * 4
		if passes == 1 && got != arrays || passes == 3 && got != pl.Workspace {
			t.Errorf("%d passes: reset %d bytes; look-back arrays %d, workspace %d", passes, got, arrays, pl.Workspace)
		}
	}
}

// The backward runs the reverse scan of grad_out into grad_x (its x and out slots), then the
// forward's x, out and dA in its own parameters; K > 1 tiles per row add the dA reduction.
func TestBackward(t *testing.T) {
	for _, c := range []struct {
		name       string
		B, T, R, C int64
		reverse    bool
	}{{"rows", 2, 300, 3, 8, false}, {"K tiles per row", 1, 700, 2, 256, false}, {"reverse", 2, 90, 3, 8, true}} {
		t.Run(c.name, func(t *testing.T) {
			sh := []int64{c.B, c.T, c.R, c.C}
			a := &core.BackwardArgs{A: tensor(addrA, core.Float32, c.B, c.T, c.R), X: tensor(addrX, core.Float32, sh...),
				Out: tensor(addrOut, core.Float32, sh...), GradOut: tensor(0x80000000, core.Float32, sh...),
				GradX: tensor(0x90000000, core.Float32, sh...), GradA: tensor(0xA0000000, core.Float32, c.B, c.T, c.R),
				Reverse: c.reverse, Device: 0, Stream: stream}
			n, err := core.BackwardWorkspaceSize(a)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				a.Workspace, a.WorkspaceLen = addrWS, n
			}
			p, _ := core.ValidateBackward(a)
			pl := core.PlanBackward(a, p, core.Device{SMs: 132})
			ls := run(t, fakePrimary, func() error { return core.ScanBackward(a) })
			if pl.Chunks > 1 {
				if !ls[0].Memset || int64(ls[0].Count)*4 != pl.Lookback {
					t.Fatalf("want the look-back memset first, got %+v", ls[0])
				}
				ls = ls[1:]
			}
			want := 1
			if pl.K > 1 {
				want = 2
			}
			if len(ls) != want {
				t.Fatalf("want %d launches, got %+v", want, ls)
			}
			checkLaunch(t, ls[0], pl.Kernel, pl.Tiles*pl.Chunks, pl.Warps, pl.Shared)
			s := a.ReverseScan()
			flags := int64(2 | 4) // F_UNDECAYED | F_SCALE_FINAL, and the reverse bit
			if c.reverse {
				flags = 2 | 8 // F_UNDECAYED | F_NEG_DA, forward direction
			} else {
				flags |= 1
			}
			checkCommon(t, ls[0], &s, flags, pl.Chunks, pl.Tiles)
			part := int64(0)
			if pl.K > 1 {
				part = addrWS + pl.Workspace - (pl.K*c.B*c.T*c.R*4+255)/256*256 // the last region
			}
			extra := []int64{addrX, c.T * c.R * c.C, c.R * c.C, c.C, 1, addrOut, c.T * c.R * c.C, c.R * c.C, c.C, 1,
				0xA0000000, c.T * c.R, c.R, 1, part, pl.K}
			for i, w := range extra {
				if got := ls[0].Params[26+i]; got != w {
					t.Fatalf("backward parameter %d is %d, want %d (%v)", 26+i, got, w, ls[0].Params[26:])
				}
			}
			if pl.K > 1 {
				r := ls[1]
				if r.Kernel != core.KernelDAReduce || r.Params[0] != part || r.Params[1] != 0xA0000000 || r.Params[8] != pl.K {
					t.Fatalf("dA reduction %+v", r)
				}
			}
		})
	}
}

// The launch path allocates no Go memory: forward and backward, one and three passes.
func TestLaunchPathAllocatesNothing(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fakeSetCurrent(fakePrimary)
	small := forward(t, core.Float32, 2, 8, 64, 64, nil)
	long := forward(t, core.Float32, 1, 9000, 1, 4, nil)
	sh := []int64{1, 700, 2, 256}
	bwd := &core.BackwardArgs{A: tensor(addrA, core.Float32, 1, 700, 2), X: tensor(addrX, core.Float32, sh...),
		Out: tensor(addrOut, core.Float32, sh...), GradOut: tensor(0x80000000, core.Float32, sh...),
		GradX: tensor(0x90000000, core.Float32, sh...), GradA: tensor(0xA0000000, core.Float32, 1, 700, 2), Stream: stream}
	n, _ := core.BackwardWorkspaceSize(bwd)
	bwd.Workspace, bwd.WorkspaceLen = addrWS, n
	for name, f := range map[string]func() error{
		"small forward": func() error { return core.Scan(small) }, "long forward": func() error { return core.Scan(long) },
		"backward": func() error { return core.ScanBackward(bwd) },
	} {
		core.TunePasses = 3
		allocs := testing.AllocsPerRun(20, func() {
			fakeReset()
			if err := f(); err != nil {
				t.Fatal(err)
			}
		})
		core.TunePasses = 0
		if allocs != 0 {
			t.Errorf("%s: %v allocations per call", name, allocs)
		}
	}
}

// Packed sequences with initial states: the backward scan (packed kernel, int32 offsets, the
// gradients of the states in its h0/hT slots), then dA's initial-state term (nanossm_dA_h0_term).
func TestBackwardPackedWithInitialState(t *testing.T) {
	const T, R, C, S = 500, 3, 8, 4
	sh := []int64{1, T, R, C}
	a := &core.BackwardArgs{A: tensor(addrA, core.Float32, 1, T, R), X: tensor(addrX, core.Float32, sh...),
		Out: tensor(addrOut, core.Float32, sh...), GradOut: tensor(0x80000000, core.Float32, sh...),
		GradX: tensor(0x90000000, core.Float32, sh...), GradA: tensor(0xA0000000, core.Float32, 1, T, R),
		InitialState: tensor(addrH0, core.Float32, S, R, C), GradFinalState: tensor(addrHT, core.Float32, S, R, C),
		GradInitialState: tensor(0xB0000000, core.Float32, S, R, C), CuSeqlens: tensor(addrSeq, core.Int32, S+1),
		Device: 0, Stream: stream}
	n, err := core.BackwardWorkspaceSize(a)
	if err != nil {
		t.Fatal(err)
	}
	a.Workspace, a.WorkspaceLen = addrWS, n
	p, _ := core.ValidateBackward(a)
	pl := core.PlanBackward(a, p, core.Device{SMs: 132, MaxShared: 232448})
	ls := run(t, fakePrimary, func() error { return core.ScanBackward(a) })
	if pl.Chunks > 1 {
		ls = ls[1:] // the look-back reset (TestBackward checks it)
	}
	if len(ls) != 2 || !strings.Contains(pl.Kernel, "_packed_") {
		t.Fatalf("plan %+v: want the packed backward and the h0 term, got %+v", pl, ls)
	}
	s := a.ReverseScan()
	checkLaunch(t, ls[0], pl.Kernel, pl.Tiles*pl.Chunks, pl.Warps, pl.Shared)
	// undecayed, scale final, reverse, int32 offsets; 2 segments (8 chunks of 64 steps)
	checkCommon(t, ls[0], &s, 2|4|1|16|2<<16, pl.Chunks, pl.Tiles)
	h := ls[1]
	want := []int64{addrH0, 0xB0000000, addrSeq, S, T, R, C, 0xA0000000, R, 1, 16}
	checkLaunch(t, h, core.KernelDAH0Term, (S*R+255)/256, 8, 0)
	for i, w := range want {
		if h.Params[i] != w {
			t.Fatalf("%s parameter %d is %d, want %d (%v)", h.Kernel, i, h.Params[i], w, h.Params)
		}
	}
}

// BenchmarkScanLaunch: the host path of a small forward call through the CUDA backend (Go:
// validate, plan, parameters, launch) against the fake driver, whose calls cost next to nothing.
func BenchmarkScanLaunch(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fakeSetCurrent(fakePrimary)
	a := &core.ScanArgs{A: tensor(addrA, core.Float32, 2, 8, 64), X: tensor(addrX, core.Float32, 2, 8, 64, 64),
		Out: tensor(addrOut, core.Float32, 2, 8, 64, 64), Device: 0, Stream: stream}
	if err := core.Scan(a); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fakeReset()
		if err := core.Scan(a); err != nil {
			b.Fatal(err)
		}
	}
}

// max_seqlen reaches the plan through the backend, forward and backward (ReverseScan keeps it):
// a bf16 pack of one tile, 65536 steps in 40 sequences, takes one pass cut into segments without
// it and three passes (the prefix kernel launched) with a longest sequence of 58982 steps; the
// workspace is the same either way (callers cache it by layout).
func TestPackedMaxSeqlenHint(t *testing.T) {
	const T, R, C, S = 65536, 4, 64, 40
	prefixes := func(ls []fakeRecord) int {
		n := 0
		for _, l := range ls {
			if strings.HasPrefix(l.Kernel, "nanossm_chunk_prefix_") {
				n++
			}
		}
		return n
	}
	var ws []int64
	for _, hint := range []int64{0, 58982} {
		a := forward(t, core.BFloat16, 1, T, R, C, func(a *core.ScanArgs) {
			a.CuSeqlens, a.MaxSeqlen = tensor(addrSeq, core.Int32, S+1), hint
		})
		ws = append(ws, a.WorkspaceLen)
		ls := run(t, fakePrimary, func() error { return core.Scan(a) })
		sh := []int64{1, T, R, C}
		b := &core.BackwardArgs{A: a.A, X: a.X, Out: a.Out, GradOut: tensor(0x80000000, core.BFloat16, sh...),
			GradX: tensor(0x90000000, core.BFloat16, sh...), GradA: tensor(0xA0000000, core.Float32, 1, T, R),
			CuSeqlens: a.CuSeqlens, MaxSeqlen: hint, Device: 0, Stream: stream}
		n, err := core.BackwardWorkspaceSize(b)
		if err != nil {
			t.Fatal(err)
		}
		b.Workspace, b.WorkspaceLen = addrWS, n
		ws = append(ws, n)
		lb := run(t, fakePrimary, func() error { return core.ScanBackward(b) })
		want := map[bool]int{false: 0, true: 1}[hint > 0]
		if prefixes(ls) != want || prefixes(lb) != want {
			t.Errorf("max_seqlen %d: %d forward and %d backward prefix passes, want %d (%+v / %+v)",
				hint, prefixes(ls), prefixes(lb), want, ls, lb)
		}
	}
	if ws[0] != ws[2] || ws[1] != ws[3] {
		t.Errorf("workspaces (forward, backward) %v without the hint, %v with it", ws[:2], ws[2:])
	}
}
