//go:build cuda && fakecuda

// Host-side tests of the CUDA backend against a fake driver (tests/fakecuda; make test-go runs
// them on machines without a GPU): what each call enqueues, in which context and on which
// stream, with which parameters in which slots, and that nothing synchronises the host,
// allocates or copies. The kernels' parameter lists are read from kernels/scan.cu, so a slot
// the Go side and the kernels disagree on fails here, not on a GPU.

package cuda

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/nanossm/nanossm/core"
)

// kernelParamCounts counts the parameters of every kernel in kernels/scan.cu: the common list of
// NANOSSM_COMMON_PARAMS, plus what each kernel macro or kernel declares after it.
func kernelParamCounts() (map[string]int, error) {
	b, err := os.ReadFile("../../kernels/scan.cu")
	if err != nil {
		return nil, err
	}
	src := strings.ReplaceAll(string(b), "\\\n", " ")
	// list is the balanced (...) list after the first "open" that follows marker.
	list := func(marker, open string) (string, error) {
		i := strings.Index(src, marker)
		j := strings.Index(src[max(i, 0):], open)
		if i < 0 || j < 0 {
			return "", fmt.Errorf("kernels/scan.cu: %q then %q not found", marker, open)
		}
		i += j + len(open)
		for k, depth := i, 1; k < len(src); k++ {
			switch src[k] {
			case '(':
				depth++
			case ')':
				if depth--; depth == 0 {
					return src[i:k], nil
				}
			}
		}
		return "", fmt.Errorf("kernels/scan.cu: unbalanced list after %q", marker)
	}
	count := func(l string) int { // top-level commas + 1, a nested (...) counting as one
		depth, n := 0, 1
		for _, c := range l {
			switch c {
			case '(':
				depth++
			case ')':
				depth--
			case ',':
				if depth == 0 {
					n++
				}
			}
		}
		return n
	}
	common := regexp.MustCompile(`#define NANOSSM_COMMON_PARAMS\(TYPE\)\s+(.*?)\s*#define`).FindStringSubmatch(src)
	if common == nil {
		return nil, fmt.Errorf("kernels/scan.cu: NANOSSM_COMMON_PARAMS not found")
	}
	nc := count(common[1])
	out := map[string]int{}
	for _, k := range []struct {
		prefix, marker, open string
		common               bool
	}{
		{"nanossm_scan_fwd", "#define NANOSSM_FWD(", "NAME(", true},
		{"nanossm_scan_bwd", "#define NANOSSM_BWD(", "NAME(", true},
		{"nanossm_chunk_prefix", "#define NANOSSM_PREFIX(", "NAME(", true},
		{core.KernelDAReduce, "void " + core.KernelDAReduce, "(", false},
		{core.KernelDAH0Term, "void " + core.KernelDAH0Term, "(", false},
	} {
		l, err := list(k.marker, k.open)
		if err != nil {
			return nil, err
		}
		out[k.prefix] = count(l)
		if k.common { // NANOSSM_COMMON_PARAMS(...) is one entry of the list
			out[k.prefix] += nc - 1
		}
	}
	return out, nil
}

func TestMain(m *testing.M) {
	counts, err := kernelParamCounts()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for prefix, n := range counts {
		fakeSetParamCount(prefix, n)
	}
	fakeSetDevices(3)
	fakeSetOptinShared(2, 48*1024) // cuda:2: a small GPU
	os.Exit(m.Run())
}

// The counts read from the source are what core/cuda passes (nScanParams, and the extras).
func TestKernelParamCounts(t *testing.T) {
	counts, _ := kernelParamCounts()
	want := map[string]int{"nanossm_scan_fwd": nScanParams, "nanossm_scan_bwd": nScanParams + 16,
		"nanossm_chunk_prefix": nScanParams + 3, core.KernelDAReduce: 9, core.KernelDAH0Term: 11}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%s: %d parameters in kernels/scan.cu, core/cuda passes %d", k, counts[k], n)
		}
	}
}

// the addresses of a call's tensors: device addresses are plain integers to the fake
const (
	addrA, addrX, addrOut, addrH0, addrHT, addrSeq, addrWS = 0x10000000, 0x20000000, 0x30000000, 0x40000000, 0x50000000, 0x60000000, 0x70000000
	stream                                                 = 0xABC0
)

func tensor(data uintptr, dt core.DType, shape ...int64) core.Tensor {
	return core.Tensor{Data: data, DType: dt, Shape: shape, Strides: core.Contiguous(shape...)}
}

// forward builds a forward call on cuda:0 with its workspace.
func forward(t *testing.T, dt core.DType, B, T, R, C int64, edit func(a *core.ScanArgs)) *core.ScanArgs {
	a := &core.ScanArgs{A: tensor(addrA, core.Float32, B, T, R), X: tensor(addrX, dt, B, T, R, C),
		Out: tensor(addrOut, dt, B, T, R, C), Device: 0, Stream: stream}
	if edit != nil {
		edit(a)
	}
	n, err := core.WorkspaceSize(a)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		a.Workspace, a.WorkspaceLen = addrWS, n
	}
	return a
}

// run calls f on a locked thread whose current context is ctx, and returns what it enqueued.
func run(t *testing.T, ctx uintptr, f func() error) []fakeRecord {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fakeSetCurrent(ctx)
	fakeReset()
	if err := f(); err != nil {
		t.Fatal(err)
	}
	if got := fakeCurrent(); got != ctx {
		t.Fatalf("the caller's current context %#x was left as %#x", ctx, got)
	}
	if v := fakeViolations(); v != 0 {
		t.Fatalf("%d calls that synchronise, allocate or copy", v)
	}
	return fakeRecords()
}

// checkCommon checks the 26 parameters every scan kernel starts with (NANOSSM_COMMON_PARAMS).
func checkCommon(t *testing.T, l fakeRecord, a *core.ScanArgs, flags, chunks, tiles int64) {
	t.Helper()
	want := []int64{int64(a.A.Data), int64(a.X.Data), int64(a.Out.Data), int64(a.InitialState.Data),
		int64(a.FinalState.Data), int64(a.Workspace), int64(a.CuSeqlens.Data), 0,
		a.X.Shape[0], a.X.Shape[1], a.X.Shape[2], a.X.Shape[3]}
	if a.CuSeqlens.Present() {
		want[7] = a.CuSeqlens.Shape[0] - 1
	}
	want = append(want, a.A.Strides...)
	want = append(want, a.X.Strides...)
	want = append(want, a.Out.Strides...)
	want = append(want, flags, chunks, tiles)
	for i, w := range want {
		if l.Params[i] != w {
			t.Fatalf("%s: parameter %d is %d, want %d (all: %v)", l.Kernel, i, l.Params[i], w, l.Params[:len(want)])
		}
	}
}

func checkLaunch(t *testing.T, l fakeRecord, kernel string, blocks, warps, shared int64) {
	t.Helper()
	if l.Memset || l.Kernel != kernel || l.Grid != [3]uint32{uint32(blocks), 1, 1} ||
		l.Block != [3]uint32{32, uint32(warps), 1} || int64(l.Shared) != shared {
		t.Fatalf("launch %+v, want %s on %d blocks of 32x%d threads with %d bytes of shared memory", l, kernel, blocks, warps, shared)
	}
	if l.Stream != stream || l.Ctx != fakePrimary {
		t.Fatalf("%s on stream %#x in context %#x, want the caller's stream %#x in the primary context", kernel, l.Stream, l.Ctx, stream)
	}
}

func TestModuleLoadsOnceWithEveryKernel(t *testing.T) {
	run(t, 0, func() error { return core.Scan(forward(t, core.Float32, 1, 5, 2, 4, nil)) })
	run(t, fakePrimary, func() error { return core.Scan(forward(t, core.Float32, 1, 5, 2, 4, nil)) })
	if n := fakeModulesLoaded(); n != 1 {
		t.Fatalf("module loaded %d times", n)
	}
	for _, name := range core.ScanKernelNames() {
		if got := fakeMaxShared(name); got != core.ScanMaxSharedBytes {
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
		{"bf16 vec8", core.BFloat16, 1, 4096, 4, 64, nil, 0, 8},
		{"f16 reverse", core.Float16, 2, 129, 2, 16, func(a *core.ScanArgs) { a.Reverse = true }, 1, 8},
		{"f32 strided x", core.Float32, 2, 64, 3, 8, func(a *core.ScanArgs) {
			a.X.Strides = []int64{64 * 3 * 16, 3 * 16, 16, 1} // a slice of a wider tensor
		}, 0, 4},
		{"f32 states", core.Float32, 2, 700, 3, 4, func(a *core.ScanArgs) {
			a.InitialState, a.FinalState = tensor(addrH0, core.Float32, 2, 3, 4), tensor(addrHT, core.Float32, 2, 3, 4)
		}, 0, 4},
		{"f32 packed int32", core.Float32, 1, 900, 3, 4, func(a *core.ScanArgs) {
			a.CuSeqlens = tensor(addrSeq, core.Int32, 4)
		}, 16, 4},
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

// Each device has its own primary context and module: a call on cuda:1 runs in cuda:1's
// context, whichever context the caller had, and leaves the caller's in place.
func TestSecondDevice(t *testing.T) {
	a := forward(t, core.Float32, 2, 300, 3, 8, nil)
	a.Device = 1
	before := fakeModulesLoaded()
	for _, ctx := range []uintptr{0, fakePrimary, fakePrimary + 1} {
		ls := run(t, ctx, func() error { return core.Scan(a) })
		for _, l := range ls {
			if l.Ctx != fakePrimary+1 {
				t.Fatalf("from context %#x: a cuda:1 call enqueued in context %#x", ctx, l.Ctx)
			}
		}
	}
	if n := fakeModulesLoaded() - before; n > 1 {
		t.Fatalf("cuda:1's module loaded %d times", n)
	}
}

// The shared memory a block may use is read from the device: on cuda:2 (48 KB) a plan that
// stages 64 KB per block is refused by name before anything is enqueued, and a smaller one runs.
func TestSharedMemoryLimitOfTheDevice(t *testing.T) {
	big := forward(t, core.Float32, 2, 1000, 3, 8, func(a *core.ScanArgs) { a.Device = 2 })
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fakeSetCurrent(0)
	fakeReset()
	err := core.Scan(big)
	if err == nil || core.StatusOf(err) != core.StatusUnsupported ||
		!strings.Contains(err.Error(), "stages 65536 bytes of shared memory per block; this device allows 49152") {
		t.Fatalf("got %v", err)
	}
	small := forward(t, core.Float32, 2, 40, 3, 8, func(a *core.ScanArgs) { a.Device = 2 })
	if ls := run(t, 0, func() error { return core.Scan(small) }); len(ls) != 1 || ls[0].Ctx != fakePrimary+2 {
		t.Fatalf("small plan on cuda:2: %+v", ls)
	}
}

// Errors of the backend name what failed: a device that does not exist.
func TestNoSuchDevice(t *testing.T) {
	a := forward(t, core.Float32, 1, 5, 2, 4, nil)
	a.Device = 3
	err := core.Scan(a)
	if err == nil || core.StatusOf(err) != core.StatusInvalidArgument || !strings.Contains(err.Error(), "cuda:3 does not exist (3 CUDA devices visible)") {
		t.Fatalf("got %v", err)
	}
}

// Calls from many goroutines at once, on two devices, forward and backward, from threads with
// and without a current context (make test-go runs this package under the race detector).
func TestConcurrentCalls(t *testing.T) {
	fakeSetRecording(false)
	defer fakeSetRecording(true)
	fakeReset()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			mine := uintptr(0) // (a thread may come with a context a previous goroutine left)
			if g%2 == 0 {
				mine = fakePrimary
			}
			fakeSetCurrent(mine)
			dev := g % 4 / 2
			sh := []int64{1, 700, 2, 256}
			for i := 0; i < 200; i++ {
				a := forward(t, core.Float32, 2, int64(50+i), 3, 8, func(a *core.ScanArgs) { a.Device = dev })
				b := &core.BackwardArgs{A: tensor(addrA, core.Float32, 1, 700, 2), X: tensor(addrX, core.Float32, sh...),
					Out: tensor(addrOut, core.Float32, sh...), GradOut: tensor(0x80000000, core.Float32, sh...),
					GradX: tensor(0x90000000, core.Float32, sh...), GradA: tensor(0xA0000000, core.Float32, 1, 700, 2),
					Device: dev, Stream: stream}
				n, _ := core.BackwardWorkspaceSize(b)
				b.Workspace, b.WorkspaceLen = addrWS, n
				if err := core.Scan(a); err != nil {
					errs <- err
					return
				}
				if err := core.ScanBackward(b); err != nil {
					errs <- err
					return
				}
			}
			if got := fakeCurrent(); got != mine {
				errs <- fmt.Errorf("goroutine %d: context %#x left current, want %#x", g, got, mine)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v := fakeViolations(); v != 0 {
		t.Fatalf("%d calls that synchronise, allocate or copy", v)
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
