//go:build cuda && fakecuda

// Devices against the fake driver (three: cuda:2 allows 48 KB of shared memory per block):
// contexts and modules per device, the device's limits, and concurrent calls.

package cuda

import (
	"fmt"
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

// On a device of compute capability 9.0+ (cuda:1) the look-back workspace is reset by a kernel
// of at most one block per SM, not a memset, and the scan after it (only that one) launches
// early; forward, backward and the three passes. Calls without a workspace launch as before.
func TestEarlyLaunchAfterTheReset(t *testing.T) {
	onDev1 := func(a *core.ScanArgs) { a.Device = 1 }
	single := forward(t, core.Float32, 2, 700, 3, 8, onDev1)
	three := forward(t, core.Float32, 1, 9000, 1, 4, onDev1)
	none := forward(t, core.Float32, 2, 40, 3, 8, onDev1)
	b := &core.BackwardArgs{A: tensor(addrA, core.Float32, 2, 700, 3), X: tensor(addrX, core.Float32, 2, 700, 3, 8),
		Out: tensor(addrOut, core.Float32, 2, 700, 3, 8), GradOut: tensor(0x80000000, core.Float32, 2, 700, 3, 8),
		GradX: tensor(0x90000000, core.Float32, 2, 700, 3, 8), GradA: tensor(0xA0000000, core.Float32, 2, 700, 3),
		Device: 1, Stream: stream}
	n, err := core.BackwardWorkspaceSize(b)
	if err != nil {
		t.Fatal(err)
	}
	b.Workspace, b.WorkspaceLen = addrWS, n
	core.TunePasses = 3
	ls3 := run(t, 0, func() error { return core.Scan(three) })
	core.TunePasses = 0
	dev := core.Device{SMs: 132, EarlyLaunch: true}
	p1, _ := core.Validate(single)
	p3, _ := core.Validate(three)
	pb, _ := core.ValidateBackward(b)
	core.TunePasses = 3
	pl3 := core.PlanScan(three, p3, dev)
	core.TunePasses = 0
	for _, c := range []struct {
		name     string
		ls       []fakeRecord
		lookback int64
		launches int
	}{
		{"forward", run(t, 0, func() error { return core.Scan(single) }), core.PlanScan(single, p1, dev).Lookback, 1},
		{"backward", run(t, 0, func() error { return core.ScanBackward(b) }), core.PlanBackward(b, pb, dev).Lookback, 1},
		{"three passes", ls3, pl3.Lookback, 3},
	} {
		ls := c.ls
		if c.lookback <= 0 || len(ls) < 1+c.launches || ls[0].Memset || ls[0].Kernel != core.KernelWSReset || ls[0].Early {
			t.Fatalf("%s: want the reset kernel first, got %+v", c.name, ls)
		}
		r := ls[0]
		if r.Params[0] != addrWS || r.Params[1]*16 != c.lookback || r.Grid[0] < 1 || r.Grid[0] > 132 ||
			int64(r.Grid[0]-1)*256 >= r.Params[1] || r.Block != [3]uint32{32, 8, 1} || r.Stream != stream || r.Ctx != fakePrimary+1 {
			t.Fatalf("%s: reset launch %+v for %d look-back bytes", c.name, r, c.lookback)
		}
		for i, l := range ls[1:] {
			if l.Memset || l.Early != (i == 0) || l.Stream != stream {
				t.Fatalf("%s: launch %d after the reset: %+v (only the first launches early)", c.name, i, l)
			}
		}
	}
	if ls := run(t, 0, func() error { return core.Scan(none) }); len(ls) != 1 || ls[0].Early || ls[0].Kernel == core.KernelWSReset {
		t.Fatalf("one chunk, no workspace: %+v", ls)
	}
	// memory the device cannot reach (the fake: below 0x1000) is refused before anything is enqueued
	single.Workspace = 0x800
	fakeReset()
	err = core.Scan(single)
	if err == nil || core.StatusOf(err) != core.StatusCUDA || !strings.Contains(err.Error(), "cuPointerGetAttribute(workspace)") {
		t.Fatalf("host workspace: got %v", err)
	}
	if ls := fakeRecords(); len(ls) != 0 {
		t.Fatalf("host workspace: enqueued %+v", ls)
	}
}
