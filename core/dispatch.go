package core

import "sync"

// Version of the library; include/nanossm.h carries the same numbers as macros.
const (
	VersionMajor = 0
	VersionMinor = 1
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

// WorkspaceSize validates the call and returns the scratch bytes it needs.
func WorkspaceSize(a *ScanArgs) (int64, error) {
	p, err := Validate(a)
	if err != nil {
		return 0, err
	}
	b, err := backendFor(a.Device)
	if err != nil {
		return 0, err
	}
	return b.WorkspaceSize(a, p)
}

// Scan validates the call and runs it on the backend for a.Device.
func Scan(a *ScanArgs) error {
	p, err := Validate(a)
	if err != nil {
		return err
	}
	b, err := backendFor(a.Device)
	if err != nil {
		return err
	}
	need, err := b.WorkspaceSize(a, p)
	if err != nil {
		return err
	}
	if err := checkWorkspace(a.Workspace, a.WorkspaceLen, need); err != nil {
		return err
	}
	return b.Scan(a, p)
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
