package core

import "sync"

// Version of the library; include/nanossm.h carries the same numbers as macros.
const (
	VersionMajor = 0
	VersionMinor = 2
	VersionPatch = 0
	// VersionNumber is major*10000 + minor*100 + patch, like NANOSSM_VERSION.
	VersionNumber = VersionMajor*10000 + VersionMinor*100 + VersionPatch
)

// Backend runs validated scans on one kind of memory.
type Backend interface {
	// Name says which backend this is ("cpu", "cuda").
	Name() string
	// WorkspaceSize is the scratch the call needs, in bytes (0: none).
	WorkspaceSize(a *ScanArgs, p Problem) (int64, error)
	// Scan computes out (and the final state). A device backend only enqueues on a.Stream.
	Scan(a *ScanArgs, p Problem) error
	// BackwardWorkspaceSize is the scratch a backward call needs (p: its reverse scan).
	BackwardWorkspaceSize(a *BackwardArgs, p Problem) (int64, error)
	// Backward computes grad_x, grad_A (and grad_initial_state).
	Backward(a *BackwardArgs, p Problem) error
}

var (
	backendMu   sync.RWMutex
	cudaBackend Backend
	cudaErr     error = NoCUDA("this build of nanossm has no CUDA backend (CPU-only flavour)")
)

// RegisterCUDA installs the CUDA backend (core/cuda does this in its init).
func RegisterCUDA(b Backend) {
	backendMu.Lock()
	defer backendMu.Unlock()
	cudaBackend, cudaErr = b, nil
}

// HasCUDA reports whether a CUDA backend is linked in.
func HasCUDA() bool {
	backendMu.RLock()
	defer backendMu.RUnlock()
	return cudaBackend != nil
}

func backendFor(device int) (Backend, error) {
	if device == CPU {
		return cpuBackend{}, nil
	}
	backendMu.RLock()
	defer backendMu.RUnlock()
	if cudaBackend == nil {
		return nil, cudaErr
	}
	return cudaBackend, nil
}

// dispatch is the sequence of every entry point: validate, find the backend for the device,
// size the workspace; then, when run is given, check the caller's workspace and run.
func dispatch(device int, ws uintptr, wsLen int64, validate func() (Problem, error),
	size func(Backend, Problem) (int64, error), run func(Backend, Problem) error) (int64, error) {
	p, err := validate()
	if err != nil {
		return 0, err
	}
	b, err := backendFor(device)
	if err != nil {
		return 0, err
	}
	need, err := size(b, p)
	if err != nil || run == nil {
		return need, err
	}
	if err := checkWorkspace(ws, wsLen, need); err != nil {
		return need, err
	}
	return need, run(b, p)
}

// WorkspaceSize validates the call and returns the scratch bytes it needs.
func WorkspaceSize(a *ScanArgs) (int64, error) {
	return dispatch(a.Device, 0, 0, func() (Problem, error) { return Validate(a) },
		func(b Backend, p Problem) (int64, error) { return b.WorkspaceSize(a, p) }, nil)
}

// Scan validates the call and runs it on the backend for a.Device.
func Scan(a *ScanArgs) error {
	_, err := dispatch(a.Device, a.Workspace, a.WorkspaceLen, func() (Problem, error) { return Validate(a) },
		func(b Backend, p Problem) (int64, error) { return b.WorkspaceSize(a, p) },
		func(b Backend, p Problem) error { return b.Scan(a, p) })
	return err
}

// BackwardWorkspaceSize validates a backward call and returns the scratch bytes it needs.
func BackwardWorkspaceSize(a *BackwardArgs) (int64, error) {
	return dispatch(a.Device, 0, 0, func() (Problem, error) { return ValidateBackward(a) },
		func(b Backend, p Problem) (int64, error) { return b.BackwardWorkspaceSize(a, p) }, nil)
}

// ScanBackward validates a backward call and runs it on the backend for a.Device.
func ScanBackward(a *BackwardArgs) error {
	_, err := dispatch(a.Device, a.Workspace, a.WorkspaceLen, func() (Problem, error) { return ValidateBackward(a) },
		func(b Backend, p Problem) (int64, error) { return b.BackwardWorkspaceSize(a, p) },
		func(b Backend, p Problem) error { return b.Backward(a, p) })
	return err
}

func checkWorkspace(ptr uintptr, have, need int64) error {
	if need > 0 && (ptr == 0 || have < need) {
		return Invalid("workspace", "this call needs %d bytes of device scratch, got %d bytes at %#x (ask the matching *_workspace_size)",
			need, have, ptr)
	}
	if need > 0 && ptr%256 != 0 {
		return Invalid("workspace", "pointer %#x must be 256-byte aligned", ptr)
	}
	return nil
}
