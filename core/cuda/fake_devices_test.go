//go:build cuda && fakecuda

// Devices against the fake driver (three: cuda:2 allows 48 KB of shared memory per block):
// contexts and modules per device, the device's limits, and concurrent calls.

package cuda

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/nanossm/nanossm/core"
)

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

// The shared memory a block may use is read from the device, less the kernels' largest static
// arrays (the fake's 17 KB): on cuda:2 (48 KB) a plan that stages 64 KB per block is refused by name
// before anything is enqueued, and a smaller one runs.
func TestSharedMemoryLimitOfTheDevice(t *testing.T) {
	big := forward(t, core.Float32, 2, 1000, 3, 8, func(a *core.ScanArgs) { a.Device = 2 })
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fakeSetCurrent(0)
	fakeReset()
	err := core.Scan(big)
	if err == nil || core.StatusOf(err) != core.StatusUnsupported ||
		!strings.Contains(err.Error(), "stages 65536 bytes of shared memory per block; this device allows 31744") {
		t.Fatalf("got %v", err)
	}
	if ls := fakeRecords(); len(ls) != 0 { // (not even the workspace's memset)
		t.Fatalf("the refused call enqueued %+v", ls)
	}
	small := forward(t, core.Float32, 2, 40, 3, 8, func(a *core.ScanArgs) { a.Device = 2 })
	if ls := run(t, 0, func() error { return core.Scan(small) }); len(ls) != 1 || ls[0].Ctx != fakePrimary+2 {
		t.Fatalf("small plan on cuda:2: %+v", ls)
	}
}

// Long chunks only where an SM holds the blocks their rule assumes (core Device.holds): the
// 16-bit forward over 8-channel lanes stages 88 KB a block over long chunks, two a SM on cuda:0
// (an H200's 228 KB an SM), one on cuda:3 (an A100's 164 KB), which keeps the module's chunks.
// The device reads the SM's shared memory and each scan kernel's block's share beside its
// staging (the fake's 16 KB of static arrays, 17 KB in the packed long forwards, and the
// driver's 1 KB; the six others, the three pass-2 kernels, dA's two and the workspace reset,
// are not scan kernels and not among them).
func TestLongChunksWhereAnSMHoldsTwoBlocks(t *testing.T) {
	for _, c := range []struct {
		dev      int
		smShared int64
		kernel   string
		blocks   uint32 // one tile: the chunks
	}{{0, 232448 + 1024, "nanossm_scan_fwd_long_bf16_v8", 24}, {3, 166912 + 1024, "nanossm_scan_fwd_bf16_v8", 32}} {
		a := forward(t, core.BFloat16, 1, 4096, 4, 64, func(a *core.ScanArgs) { a.Device = c.dev })
		ls := run(t, 0, func() error { return core.Scan(a) })
		d, err := getDevice(c.dev)
		if err != nil {
			t.Fatal(err)
		}
		if d.info.SMShared != c.smShared || len(d.info.BlockShared) != len(core.ScanKernelNames())-6 ||
			d.info.BlockShared[c.kernel] != 16<<10+1024 || d.info.BlockShared["nanossm_scan_fwd_packed_long_bf16_v8"] != 17<<10+1024 {
			t.Errorf("cuda:%d: %+v, want %d bytes an SM and each scan kernel's own share beside its staging (%d; the packed long "+
				"forward's %d)", c.dev, d.info, c.smShared, 16<<10+1024, 17<<10+1024)
		}
		last := ls[len(ls)-1]
		if last.Kernel != c.kernel || last.Grid[0]*last.Grid[1]*last.Grid[2] != c.blocks {
			t.Errorf("cuda:%d: launched %+v, want %s over %d chunks", c.dev, last, c.kernel, c.blocks)
		}
	}
}

// Errors of the backend name what failed: a device that does not exist.
func TestNoSuchDevice(t *testing.T) {
	a := forward(t, core.Float32, 1, 5, 2, 4, nil)
	a.Device = 4
	err := core.Scan(a)
	if err == nil || core.StatusOf(err) != core.StatusInvalidArgument || !strings.Contains(err.Error(), "cuda:4 does not exist (4 CUDA devices visible)") {
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

// On a device of compute capability 9.0+ (cuda:1) the look-back workspace is reset by a kernel
// of at most one block per SM, not a memset, and the scan after it launches early, and so do
// passes 2 and 3 of three (each behind the pass before it); forward, backward and the three
// passes. The launches after the reset are the very ones (kernels, grids, blocks, shared memory,
// parameters) that cuda:0 enqueues after its memset. Calls without a workspace launch as before.
func TestEarlyLaunchAfterTheReset(t *testing.T) {
	t.Cleanup(func() { core.TunePasses = 0 })
	single := forward(t, core.Float32, 2, 700, 3, 8, nil)
	three := forward(t, core.Float32, 1, 9000, 1, 4, nil)
	none := forward(t, core.Float32, 2, 40, 3, 8, func(a *core.ScanArgs) { a.Device = 1 })
	b := &core.BackwardArgs{A: tensor(addrA, core.Float32, 2, 700, 3), X: tensor(addrX, core.Float32, 2, 700, 3, 8),
		Out: tensor(addrOut, core.Float32, 2, 700, 3, 8), GradOut: tensor(0x80000000, core.Float32, 2, 700, 3, 8),
		GradX: tensor(0x90000000, core.Float32, 2, 700, 3, 8), GradA: tensor(0xA0000000, core.Float32, 2, 700, 3),
		Stream: stream}
	n, err := core.BackwardWorkspaceSize(b)
	if err != nil {
		t.Fatal(err)
	}
	b.Workspace, b.WorkspaceLen = addrWS, n
	for _, c := range []struct {
		name   string
		passes int64
		call   func(dev int) error
	}{
		{"forward", 0, func(dev int) error { single.Device = dev; return core.Scan(single) }},
		{"backward", 0, func(dev int) error { b.Device = dev; return core.ScanBackward(b) }},
		{"three passes", 3, func(dev int) error { three.Device = dev; return core.Scan(three) }},
	} {
		core.TunePasses = c.passes
		late := run(t, 0, func() error { return c.call(0) })
		ls := run(t, 0, func() error { return c.call(1) })
		core.TunePasses = 0
		if len(late) < 2 || !late[0].Memset || len(ls) != len(late) || ls[0].Memset || ls[0].Kernel != core.KernelWSReset || ls[0].Early {
			t.Fatalf("%s: want the reset kernel in place of cuda:0's memset %+v, got %+v", c.name, late, ls)
		}
		lookback := int64(late[0].Count) * 4
		r := ls[0]
		if r.Params[0] != addrWS || r.Params[1]*16 != lookback || r.Grid[0] < 1 || r.Grid[0] > 132 ||
			int64(r.Grid[0]-1)*256 >= r.Params[1] || r.Block != [3]uint32{32, 8, 1} || r.Stream != stream || r.Ctx != fakePrimary+1 {
			t.Fatalf("%s: reset launch %+v for %d look-back bytes", c.name, r, lookback)
		}
		for i, l := range ls[1:] {
			want := late[i+1]
			if l.Memset || l.Early != (i == 0 || c.passes == 3 && i < 3) || l.Kernel != want.Kernel || l.Grid != want.Grid || l.Block != want.Block ||
				l.Shared != want.Shared || l.Stream != stream || l.Ctx != fakePrimary+1 || !reflect.DeepEqual(l.Params, want.Params) {
				t.Fatalf("%s: launch %d after the reset: %+v, want %+v launched early only if first (or a pass of three)", c.name, i, l, want)
			}
		}
	}
	if ls := run(t, 0, func() error { return core.Scan(none) }); len(ls) != 1 || ls[0].Early || ls[0].Kernel == core.KernelWSReset {
		t.Fatalf("one chunk, no workspace: %+v", ls)
	}
	// memory the device cannot reach (the fake: below 0x1000) is refused before anything is enqueued
	single.Workspace, single.Device = 0x800, 1
	fakeReset()
	err = core.Scan(single)
	if err == nil || core.StatusOf(err) != core.StatusCUDA || !strings.Contains(err.Error(), "cuPointerGetAttribute(workspace)") {
		t.Fatalf("host workspace: got %v", err)
	}
	if ls := fakeRecords(); len(ls) != 0 {
		t.Fatalf("host workspace: enqueued %+v", ls)
	}
}
