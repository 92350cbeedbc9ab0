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
