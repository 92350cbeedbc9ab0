package core

// Launch planning for kernels/scan.cu. Pure arithmetic, so it is tested without a GPU.

// ScanSteps is STEPS in kernels/scan.cu: time steps per thread.
const ScanSteps = 16

// ScanMaxWarps is MAX_WARPS in kernels/scan.cu.
const ScanMaxWarps = 8

// TuneWarps, when in 1..ScanMaxWarps, replaces the heuristic's warps per block: a benchmarking
// knob (NANOSSM_TUNE_WARPS, read by core/cuda), not an API.
var TuneWarps int64

// ScanMaxSharedBytes is the most dynamic shared memory a scan block stages x in: MAX_WARPS *
// STEPS rows of 32 lanes x one 16-byte packet.
const ScanMaxSharedBytes = ScanMaxWarps * ScanSteps * 32 * 16

// kernelKey is one row of the dispatch table: element type x vector width.
type kernelKey struct {
	dtype DType
	vec   int64
}

// scanKernels is the one dispatch table of the forward scan: (dtype, variant) -> kernel.
// The variant is the vector width: 16-byte packets when the layout allows, else 1 channel.
var scanKernels = map[kernelKey]string{
	{Float32, 4}:  "nanossm_scan_fwd_f32_v4",
	{Float32, 1}:  "nanossm_scan_fwd_f32_v1",
	{Float16, 8}:  "nanossm_scan_fwd_f16_v8",
	{Float16, 1}:  "nanossm_scan_fwd_f16_v1",
	{BFloat16, 8}: "nanossm_scan_fwd_bf16_v8",
	{BFloat16, 1}: "nanossm_scan_fwd_bf16_v1",
}

// ScanKernelNames lists every kernel of the table (the CUDA backend resolves them at load).
func ScanKernelNames() []string {
	names := make([]string, 0, len(scanKernels))
	for _, n := range scanKernels {
		names = append(names, n)
	}
	return names
}

// ScanPlan is one launch of the forward kernel.
type ScanPlan struct {
	Kernel    string
	Vec       int64 // channels per thread packet
	Warps     int64 // S: warps per block, stacked along T
	Tiles     int64 // 32-lane tiles over (b, r, c/Vec)
	Chunks    int64 // blocks along T (each Warps*ScanSteps steps); > 1 needs the workspace
	Shared    int64 // bytes of dynamic shared memory: the staged rows of x
	Workspace int64 // bytes of device scratch, set to 0xff bytes before the launch (look-back)
}

func align256(v int64) int64 { return (v + 255) / 256 * 256 }

// vectorWidth is the packet width the layout allows: 16 bytes when the channel dim is unit-stride,
// C and every other stride are multiples of it and both base pointers are 16-byte aligned.
func vectorWidth(a *ScanArgs, p Problem) int64 {
	vec := 16 / p.DType.Size()
	if p.C%vec != 0 {
		return 1
	}
	for _, t := range []Tensor{a.X, a.Out} {
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

// PlanScan picks the kernel and its launch shape.
//
// Heuristic: a block is 32 lanes x S warps; S = 8 (256 threads) gives each block 8*16 = 128
// steps, 64 KB of x staged in shared memory for 16-byte packets, so three resident blocks per SM
// keep ~190 KB in flight (4.2 TB/s x ~1 us latency needs ~32 KB per SM) and the block's fixed
// latency chain (ticket, look-back, barriers) is paid once per 128 KB moved. Short sequences
// use fewer warps so no warp is idle. T longer than one block's 64 steps is split into chunks that pass carries through the
// workspace (decoupled look-back), so every shape exposes tiles*chunks blocks of parallelism.
func PlanScan(a *ScanArgs, p Problem) ScanPlan {
	vec := vectorWidth(a, p)
	maxWarps := int64(ScanMaxWarps)
	if TuneWarps >= 1 && TuneWarps <= ScanMaxWarps {
		maxWarps = TuneWarps
	}
	warps := min(maxWarps, (p.T+ScanSteps-1)/ScanSteps)
	chunkLen := warps * ScanSteps
	pl := ScanPlan{
		Kernel: scanKernels[kernelKey{p.DType, vec}],
		Vec:    vec,
		Warps:  warps,
		Tiles:  (p.B*p.R*(p.C/vec) + 31) / 32,
		Chunks: (p.T + chunkLen - 1) / chunkLen,
		Shared: warps * ScanSteps * 32 * vec * p.DType.Size(),
	}
	if pl.Chunks > 1 { // aggregates and inclusive prefixes, 32 lanes x vec floats per block
		pl.Workspace = 2 * align256(pl.Chunks*pl.Tiles*32*vec*4)
	}
	return pl
}
