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
		// (declared on its own; the longest prefix wins in the fake driver)
		{"nanossm_scan_fwd_grouped", "#define NANOSSM_FWD_GROUPED(", "NAME(", true},
		{"nanossm_scan_bwd", "#define NANOSSM_BWD_KERNEL(", "NAME(", true}, // (grouped ones too)
		{"nanossm_chunk_prefix", "#define NANOSSM_PREFIX(", "NAME(", true},
		{core.KernelDAReduce, "void " + core.KernelDAReduce, "(", false},
		{core.KernelDAH0Term, "void " + core.KernelDAH0Term, "(", false},
		{core.KernelWSReset, "void " + core.KernelWSReset, "(", false},
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
	fakeSetDevices(4)
	fakeSetOptinShared(2, 48*1024) // cuda:2: a small GPU
	fakeSetOptinShared(3, 166912)  // cuda:3: an A100's 163 KB a block
	fakeSetCCMajor(1, 9)           // cuda:1: a Hopper (early launch); cuda:0 and cuda:2 before it
	os.Exit(m.Run())
}

// The counts read from the source are what core/cuda passes (nScanParams, and the extras).
func TestKernelParamCounts(t *testing.T) {
	counts, _ := kernelParamCounts()
	want := map[string]int{"nanossm_scan_fwd": nScanParams, "nanossm_scan_fwd_grouped": nScanParams,
		"nanossm_scan_bwd":     nScanParams + 16,
		"nanossm_chunk_prefix": nScanParams + 3, core.KernelDAReduce: 9, core.KernelDAH0Term: 11, core.KernelWSReset: 2}
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
