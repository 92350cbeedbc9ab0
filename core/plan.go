package core

import "fmt"

// Launch planning for kernels/scan.cu. Pure arithmetic, so it is tested without a GPU.

// ScanSteps is STEPS in kernels/scan.cu: time steps per thread.
const ScanSteps = 16

// ScanMaxWarps is MAX_WARPS in kernels/scan.cu; BackwardMaxWarps is BWD_MAX_WARPS.
const (
	ScanMaxWarps     = 8
	BackwardMaxWarps = 4
)

// TuneWarps, when in 1..ScanMaxWarps, replaces the heuristic's warps per block: a benchmarking
// knob (NANOSSM_TUNE_WARPS, read by core/cuda), not an API.
var TuneWarps int64

// ScanMaxSharedBytes is the most dynamic shared memory a scan block stages in: MAX_WARPS * STEPS
// rows of 32 lanes x one 16-byte packet (the backward: 3 tensors x BWD_MAX_WARPS warps).
const ScanMaxSharedBytes = max(ScanMaxWarps, 3*BackwardMaxWarps) * ScanSteps * 32 * 16

// Variant is what a scan kernel computes.
type Variant int

const (
	Forward Variant = iota
	ForwardPacked
	Backward
	BackwardPacked
)

func (v Variant) backward() bool { return v == Backward || v == BackwardPacked }

// kernelKey is one row of the dispatch table: element type x variant x vector width.
type kernelKey struct {
	dtype   DType
	variant Variant
	vec     int64
}

// scanKernels is the one dispatch table of the scan kernels: (dtype, variant, width) -> kernel,
// nanossm_scan_<variant>_<dtype>_v<width> as NANOSSM_ALL in kernels/scan.cu defines them. The
// width is 16-byte packets when the layout allows, else 1 channel.
var scanKernels = func() map[kernelKey]string {
	variants := map[Variant]string{Forward: "fwd", ForwardPacked: "fwd_packed", Backward: "bwd", BackwardPacked: "bwd_packed"}
	dtypes := map[DType]string{Float32: "f32", Float16: "f16", BFloat16: "bf16"}
	t := map[kernelKey]string{}
	for v, vn := range variants {
		for d, dn := range dtypes {
			for _, w := range []int64{1, 16 / d.Size()} {
				t[kernelKey{d, v, w}] = fmt.Sprintf("nanossm_scan_%s_%s_v%d", vn, dn, w)
			}
		}
	}
	return t
}()

// Helper kernels of the backward (kernels/scan.cu).
const (
	KernelDAReduce = "nanossm_dA_reduce"  // sums dA's partial sums when K > 1 tiles share a row
	KernelDAH0Term = "nanossm_dA_h0_term" // packed sequences with h0: dA[s-1] -= sum_c h0 * dh0
)

// ScanKernelNames lists every kernel of the table and the helpers (the CUDA backend resolves
// them at load).
func ScanKernelNames() []string {
	names := []string{KernelDAReduce, KernelDAH0Term}
	for _, n := range scanKernels {
		names = append(names, n)
	}
	return names
}

// ScanPlan is one launch of a scan kernel.
type ScanPlan struct {
	Kernel    string
	Vec       int64 // channels per thread packet
	Warps     int64 // S: warps per block, stacked along T
	Tiles     int64 // 32-lane tiles over (b, r, c/Vec)
	Chunks    int64 // blocks along T (each Warps*ScanSteps steps); > 1 needs the look-back
	K         int64 // backward: tiles per (b, r) row (> 1: dA is summed from partials)
	Shared    int64 // bytes of dynamic shared memory: the staged rows
	Lookback  int64 // bytes of workspace set to 0xff bytes before the launch (look-back)
	Workspace int64 // bytes of device scratch in all: look-back, then dA's partial sums
}

func align256(v int64) int64 { return (v + 255) / 256 * 256 }

// vectorWidth is the packet width the layout allows: 16 bytes when the channel dim of every
// tensor is unit-stride, C and every other stride are multiples of it and every base pointer is
// 16-byte aligned.
func vectorWidth(p Problem, ts ...Tensor) int64 {
	vec := 16 / p.DType.Size()
	if p.C%vec != 0 {
		return 1
	}
	for _, t := range ts {
		if t.Strides[3] != 1 || t.Data%16 != 0 {
			return 1
		}
		for _, s := range t.Strides[:3] {
			if s%vec != 0 {
				return 1
			}
		}
	}
	return vec
}

// PlanScan plans a forward scan.
func PlanScan(a *ScanArgs, p Problem) ScanPlan {
	v := Forward
	if p.Seqs > 0 || a.CuSeqlens.Present() {
		v = ForwardPacked
	}
	return plan(v, p, vectorWidth(p, a.X, a.Out))
}

// PlanBackward plans a backward call (p: the problem of its reverse scan).
func PlanBackward(a *BackwardArgs, p Problem) ScanPlan {
	v := Backward
	if a.CuSeqlens.Present() {
		v = BackwardPacked
	}
	return plan(v, p, vectorWidth(p, a.GradOut, a.GradX, a.X, a.Out))
}

// plan picks the kernel and its launch shape.
//
// Heuristic: a block is 32 lanes x S warps; S = 8 (256 threads) gives each block 8*16 = 128
// steps, 64 KB of x staged in shared memory for 16-byte packets, so three resident blocks per SM
// keep ~190 KB in flight (4.2 TB/s x ~1 us latency needs ~32 KB per SM) and the block's fixed
// latency chain (look-back, barrier) is paid once per 128 KB moved. The backward stages three
// tensors, so S <= 4 keeps a block at 96 KB and two fit an SM. Short sequences use fewer warps
// so no warp is idle. T longer than one block is split into chunks that pass carries through
// the workspace (decoupled look-back), so every shape exposes tiles*chunks blocks of parallelism.
func plan(v Variant, p Problem, vec int64) ScanPlan {
	maxWarps, staged := int64(ScanMaxWarps), int64(1)
	if v.backward() {
		maxWarps, staged = BackwardMaxWarps, 3
	}
	if TuneWarps >= 1 && TuneWarps <= maxWarps {
		maxWarps = TuneWarps
	}
	warps := min(maxWarps, (p.T+ScanSteps-1)/ScanSteps)
	chunkLen := warps * ScanSteps
	cv := p.C / vec
	pl := ScanPlan{
		Kernel: scanKernels[kernelKey{p.DType, v, vec}],
		Vec:    vec,
		Warps:  warps,
		Tiles:  (p.B*p.R*cv + 31) / 32,
		Chunks: (p.T + chunkLen - 1) / chunkLen,
		K:      1,
		Shared: staged * warps * ScanSteps * 32 * vec * p.DType.Size(),
	}
	if v.backward() { // whole (b, r) rows per tile, or K tiles per row (see kernels/scan.cu)
		if cv <= 32 {
			pl.Tiles = (p.B*p.R + 32/cv - 1) / (32 / cv)
		} else {
			pl.K = (cv + 31) / 32
			pl.Tiles = p.B * p.R * pl.K
		}
	}
	if pl.Chunks > 1 { // aggregates and inclusive prefixes, 32 lanes x vec floats per block
		pl.Lookback = 2 * align256(pl.Chunks*pl.Tiles*32*vec*4)
	}
	pl.Workspace = pl.Lookback
	if pl.K > 1 {
		pl.Workspace += align256(pl.K * p.B * p.T * p.R * 4)
	}
	return pl
}
