package core

// Launch planning for kernels/scan.cu. Pure arithmetic, so it is tested without a GPU.

// ScanSteps is STEPS in kernels/scan_common.cuh: time steps per thread of the forward; the
// backward's are BackwardSteps (BWD_STEPS, 8), its warps at most 64 / BackwardSteps.
const ScanSteps = 16

// ScanMaxWarps is MAX_WARPS in kernels/scan_common.cuh.
const ScanMaxWarps = 8

// ForwardSteps and BackwardSteps are STEPS and BWD_STEPS of the module; NANOSSM_TUNE_FWD_STEPS
// and NANOSSM_TUNE_BWD_STEPS (read by core/cuda) set them to time a module built with another
// NANOSSM_FWD_STEPS or NANOSSM_BWD_STEPS (benchmarking knobs, not an API).
var ForwardSteps, BackwardSteps int64 = ScanSteps, 8

// longForwardSteps, longForwardSteps8 and longBackwardSteps are the steps per thread of the
// long-chunk kernels (LONG_STEPS, V8_LONG_STEPS and BWD_LONG_STEPS in kernels/scan_common.cuh;
// their blocks have at most ScanMaxWarps warps): the 16-bit forward's over 8-byte packets, over
// 16-byte packets, and the fp32 backward's (see longChunks).
const longForwardSteps, longForwardSteps8, longBackwardSteps = 32, 22, 16

// longSteps is the steps per thread of the long-chunk kernel of variant v over vec-channel lanes.
func longSteps(v Variant, vec int64) int64 {
	switch {
	case v.backward():
		return longBackwardSteps
	case vec == 8:
		return longForwardSteps8
	}
	return longForwardSteps
}

// BackwardMaxWarps, when above 0, replaces 64 / BackwardSteps as the backward's most warps a
// block (NANOSSM_TUNE_BWD_MAX_WARPS, for a module built with NANOSSM_BWD_MAX_WARPS; a
// benchmarking knob, not an API).
var BackwardMaxWarps int64

// TuneWarps, when in 1..ScanMaxWarps, replaces the heuristic's warps per block, and TunePasses,
// when 1 or 3, the choice between the single pass and three passes: benchmarking knobs
// (NANOSSM_TUNE_WARPS, NANOSSM_TUNE_PASSES, read by core/cuda), not an API.
var TuneWarps, TunePasses int64

// PrefixMaxWarps is PREFIX_MAX_WARPS in kernels/chunk_prefix.cuh: warps of pass 2 of three.
// A block of pass 2 takes prefixGroupChunks chunks (8 per warp: one batch of loads each), so a
// tile of 2048 chunks spreads over 16 blocks; maxPrefixTiles bounds the tiles (and so the group
// workspace) of a three-pass plan.
const (
	PrefixMaxWarps    = 16
	prefixGroupChunks = 128
	maxPrefixTiles    = 64
)

// ScanMaxSharedBytes is the most dynamic shared memory a scan block stages in: MAX_WARPS * STEPS
// rows of 32 lanes x one 16-byte packet (the backward: 3 tensors x 64 rows per thread column;
// the long-chunk kernels: the forward's 8-byte packets, 128 rows' worth, its 16-byte ones, 176
// rows, and the backward's 3 x 128 rows, 192 KB).
const ScanMaxSharedBytes = max(ScanMaxWarps*ScanSteps, 3*64, ScanMaxWarps*longForwardSteps/2,
	ScanMaxWarps*longForwardSteps8, 3*ScanMaxWarps*longBackwardSteps) * 32 * 16

// StagedSharedBytes is the most dynamic shared memory a scan plan can ask for under the steps
// and warps knobs (ScanMaxSharedBytes without them): what the CUDA backend allows its kernels.
func StagedSharedBytes() int64 {
	return max(ScanMaxSharedBytes, ScanMaxWarps*ForwardSteps*32*16, 3*backwardMaxWarps()*BackwardSteps*32*16)
}

// backwardMaxWarps is the backward's most warps a block: 64 / BackwardSteps (the module's
// BWD_MAX_WARPS), or BackwardMaxWarps when set.
func backwardMaxWarps() int64 {
	if BackwardMaxWarps > 0 {
		return BackwardMaxWarps
	}
	return 64 / BackwardSteps
}

// Variant is what a scan kernel computes.
type Variant int

const (
	Forward Variant = iota
	ForwardPacked
	Backward
	BackwardPacked
)

func (v Variant) backward() bool { return v == Backward || v == BackwardPacked }

func (v Variant) packed() bool { return v == ForwardPacked || v == BackwardPacked }

// ScanPlan is one launch of a scan kernel.
type ScanPlan struct {
	Kernel    string
	Vec       int64 // channels per thread packet
	Warps     int64 // S: warps per block, stacked along T
	Steps     int64 // steps per thread (a chunk is Warps * Steps steps)
	Tiles     int64 // 32-lane tiles over (b, r, c/Vec)
	Chunks    int64 // blocks along T (each Warps*Steps steps); > 1 needs the look-back
	K         int64 // backward: tiles per (b, r) row (> 1: dA is summed from partials)
	Shared    int64 // bytes of dynamic shared memory: the staged rows
	Lookback  int64 // bytes of workspace set to 0xff bytes before the launch (look-back)
	Workspace int64 // bytes of device scratch in all: look-back, pass 2's groups, dA's partials
	Partials  int64 // offset of dA's partial sums in the workspace (backward, K > 1)
	// Passes is 1 (single pass) or 3: aggregates, then every chunk's prefix (Prefix: Groups
	// blocks of PrefixWarps warps per tile), then the scan (see kernels/scan.cu).
	Passes      int64
	Prefix      string
	Groups      int64
	PrefixWarps int64
	// Group: single pass, carries by groups of Group chunks (> 1; see groupChunks and
	// group_carry and group_carry_wide in kernels/carries.cuh), or 1: each chunk's own look-back
	Group int64
	// Segments: packed, single pass: the pack is cut into this many segments at sequence starts,
	// each chunked from its own start (> 1; see packedSegments), or 1: one row of chunks. Chunks
	// then counts the blocks per tile the segments' chunks may need.
	Segments int64
}

// Device is what a plan needs to know of the GPU it runs on.
type Device struct {
	SMs int64 // streaming multiprocessors
	// MaxShared: bytes of dynamic shared memory every scan kernel may stage per block (the opt-in
	// limit less the kernels' static arrays; 0: unknown)
	MaxShared int64
	// EarlyLaunch: programmatic dependent launch (compute capability 9.0+): the workspace is reset
	// by KernelWSReset, and the scan after it launched to overlap it (kernels/scan.cu)
	EarlyLaunch bool
	// SMShared: the shared memory an SM gives its resident blocks (0: unknown), and BlockShared:
	// what a block of each scan kernel takes there beside its staging (its static arrays and the
	// driver's reservation per block; a kernel not in it: unknown). See holds.
	SMShared    int64
	BlockShared map[string]int64
}

// holds is whether an SM of dev holds n blocks of kernel that stage `shared` bytes each (true
// when unknown): an H200's 228 KB holds two long 16-bit forward blocks of 88 KB, an A100's 164 KB
// one. Each kernel's own static arrays count: the largest of them all (the packed long forward's
// 17 KB) would leave an A100 one grouped long forward block of 64 KB where its own 13 KB leave two.
func (dev Device) holds(n int64, kernel string, shared int64) bool {
	block, known := dev.BlockShared[kernel]
	return dev.SMShared == 0 || !known || n*(shared+block) <= dev.SMShared
}

// longBlocks is the blocks an SM must hold of the long-chunk kernel of variant v for its rule
// (longChunks) to stand: the forwards' two (they were measured at two a SM: the 8-channel one is
// taken for the bytes two blocks keep in flight), the backward's one.
func longBlocks(v Variant) int64 {
	if v.backward() {
		return 1
	}
	return 2
}

func align256(v int64) int64 { return (v + 255) / 256 * 256 }

// PlanScan plans a forward scan on dev.
func PlanScan(a *ScanArgs, p Problem, dev Device) ScanPlan {
	if p.Seqs > 0 || a.CuSeqlens.Present() {
		return plan(ForwardPacked, p, vectorWidth(p, 16, a.X, a.Out), dev)
	}
	bytes := forwardPacketBytes(p)
	vec := vectorWidth(p, bytes, a.X, a.Out)
	if vec == 1 && bytes == 16 && p.DType.Size() == 2 { // (e.g. C = 12: 4-channel lanes beat single channels)
		vec = vectorWidth(p, 8, a.X, a.Out)
	}
	return plan(Forward, p, vec, dev)
}

// PlanBackward plans a backward call (p: the problem of its reverse scan) on dev.
func PlanBackward(a *BackwardArgs, p Problem, dev Device) ScanPlan {
	v := Backward
	if a.CuSeqlens.Present() {
		v = BackwardPacked
	}
	return plan(v, p, vectorWidth(p, 16, a.GradOut, a.GradX, a.X, a.Out), dev)
}

// plan picks the kernel and its launch shape.
//
// Heuristic: a block is 32 lanes x S warps; S = 8 (256 threads) gives each block 8*16 = 128
// steps, 64 KB of x staged in shared memory for 16-byte packets, so three resident blocks per SM
// keep ~190 KB in flight (4.2 TB/s x ~1 us latency needs ~32 KB per SM) and the block's fixed
// latency chain (look-back, barrier) is paid once per 128 KB moved. The backward stages three
// tensors at 8 steps per thread, so S = 8 keeps a block at 96 KB and two fit an SM (the fp32
// backward in three passes takes S = 4: see below). Short sequences use fewer warps
// so no warp is idle. T longer than one block is split into chunks that pass carries through
// the workspace (decoupled look-back), so every shape exposes tiles*chunks blocks of parallelism.
//
// Three passes (the backward, and the forward over single-channel lanes; the forward over
// packets and the fp32 backward over one tile take large carry groups instead, fewTileGroup,
// and packs whose segments are short one pass, packedChain):
// the look-back's chain advances one chunk per L2 round trip (~0.4 us on an H200)
// for each tile, while the tiles together move ~128 KB per block at ~4.2 TB/s (~31 ns per
// block); with few tiles the chain, not the bandwidth, sets the time (measured: one tile of
// 2048 chunks at 12x the copy). Three passes read x twice and pay two more launches, so they
// win only with few tiles (measured on an H200: 4 tiles, 512 chunks: 3.2x single, 2.8x three;
// 8 tiles: 2.0x single, 2.7x three): at most one tile per 32 SMs, and 64+ chunks. The
// workspace holds pass 2's group aggregates whenever a device could choose three passes.
func plan(v Variant, p Problem, vec int64, dev Device) ScanPlan {
	pl := shortPlan(v, p, vec, dev)
	// Long chunks (longChunks) where the plan's form has a kernel for them and the device's
	// shared memory holds their staging (an A100's does not hold the backward's 192 KB), and an
	// SM the blocks the rule assumes (an A100's holds one long 16-bit forward block of 88 KB). The
	// workspace stays the short plan's: callers size
	// it without a device. Fewer chunks need less, but under the steps and warps knobs a long
	// chunk can be the shorter one: then its look-back would not fit, and the short plan stays.
	lp := layout(v, p, vec, dev, 0, true)
	if lp.Kernel != "" && lp.Lookback <= pl.Partials && (dev.MaxShared == 0 || lp.Shared <= dev.MaxShared) &&
		dev.holds(longBlocks(v), lp.Kernel, lp.Shared) {
		lp.Workspace, lp.Partials = pl.Workspace, pl.Partials
		return lp
	}
	return pl
}

// shortPlan is plan over the module's chunks (ForwardSteps, BackwardSteps).
func shortPlan(v Variant, p Problem, vec int64, dev Device) ScanPlan {
	pl := layout(v, p, vec, dev, 0, false)
	if v != Backward || p.DType != Float32 || pl.Tiles > fewTiles || TuneWarps != 0 {
		return pl
	}
	// The fp32 backward over three passes takes 4 warps (chunks of 32 steps): measured on the
	// H200 against 8 (ratio to the copy, same run): 1,262144,4,32 3.467 -> 3.283, 2,262144,8,32
	// 3.189 -> 3.078 (bf16 lost: 6.23 -> 6.82, so fp32 only; single-pass plans keep 8 warps,
	// whose chains 4 warps would lengthen). The workspace is sized before a device is known, so
	// it covers both layouts wherever a device could choose three passes (up to fewTiles tiles).
	alt := layout(v, p, vec, dev, 4, false)
	if alt.Groups == 0 { // (no device takes three passes with it)
		return pl
	}
	if pl.Passes == 3 && alt.Passes == 3 {
		pl, alt = alt, pl
	}
	part := pl.Workspace - pl.Partials // dA's partial sums after the scan's scratch
	pl.Partials = max(pl.Partials, alt.Partials)
	pl.Workspace = pl.Partials + part
	return pl
}

// fewTiles bounds the tiles of a plan that may take the 4-warp fp32 backward (plan): three
// passes need tiles * 32 <= SMs, so this covers devices of up to 256 SMs.
const fewTiles = 8

// layout is plan's launch shape with at most maxWarps warps per block (0: the kernel's most, or
// NANOSSM_TUNE_WARPS's). long: over long chunks (longChunks); the plan then has no kernel (Kernel
// "") unless the form it takes has a long one.
func layout(v Variant, p Problem, vec int64, dev Device, maxWarps int64, long bool) ScanPlan {
	staged, steps := int64(1), ForwardSteps
	if maxWarps == 0 {
		maxWarps = ScanMaxWarps
		if v.backward() {
			maxWarps = backwardMaxWarps()
		}
		if TuneWarps >= 1 && TuneWarps <= maxWarps {
			maxWarps = TuneWarps
		}
	}
	if v.backward() {
		staged, steps = 3, BackwardSteps
	}
	if long {
		maxWarps, steps = min(maxWarps, ScanMaxWarps), longSteps(v, vec)
	}
	warps := min(maxWarps, (p.T+steps-1)/steps)
	chunkLen := warps * steps
	cv := p.C / vec
	// A packed call with no initial and no final state (the backward's reverse scan: no final
	// state's gradient in, no initial state's gradient out; a packed forward with h0 always asks
	// for dh0, ValidateBackward) takes the packed kernel without their code in its step loops
	// (STATES in kernels/scan.cu; measured on the H200: docs/performance.md, v25).
	lean := v.packed() && !p.hasStates()
	pl := ScanPlan{
		Kernel: scanKernels[kernelKey{p.DType, v, vec, formPlain, lean, long}],
		Vec:    vec,
		Warps:  warps,
		Steps:  steps,
		Tiles:  (p.B*p.R*cv + 31) / 32,
		Chunks: (p.T + chunkLen - 1) / chunkLen,
		K:      1,
		Shared: staged * warps * steps * 32 * vec * p.DType.Size(),
	}
	if v.backward() { // whole (b, r) rows per tile, or K tiles per row (see kernels/scan.cu)
		if cv <= 32 {
			pl.Tiles = (p.B*p.R + 32/cv - 1) / (32 / cv)
		} else {
			pl.K = (cv + 31) / 32
			pl.Tiles = p.B * p.R * pl.K
		}
	}
	if long && !longChunks(v, p.DType, vec, pl.Tiles, p.T, dev.SMs) {
		return ScanPlan{}
	}
	lookback := func(chunks int64) int64 { // aggregates and inclusive prefixes, 32 lanes x vec floats per block
		if chunks <= 1 {
			return 0
		}
		return 2 * align256(chunks*pl.Tiles*32*vec*4)
	}
	pl.Passes, pl.Group, pl.Segments = 1, 1, 1
	// Look-back slots per tile of a single pass: a packed one's segments take one more each. The
	// workspace holds those of the most segments any number of sequences could get, so that it
	// depends on the layout alone, not on how many sequences cu_seqlens holds (callers cache it
	// by layout: python/nanossm/_call.py).
	slots := pl.Chunks
	if v.packed() {
		slots += packedSegments(MaxSegments, pl.Tiles, pl.Chunks) - 1
	}
	// Few tiles, many chunks: the look-back's chain would set the time (see plan). (few: not the
	// constant fewTiles, which bounds the tiles of plan's 4-warp fp32 backward)
	// A pack's chains are its segments': three passes only where they are long (packedChain):
	// on average (the host does not know device offsets), or where its longest sequence is, when
	// the caller says (max_seqlen, or host offsets): a segment holds that sequence whole.
	few, fewGroup, segs := pl.Tiles*32 <= dev.SMs && pl.Chunks >= 64, int64(0), int64(1)
	if v.packed() {
		segs = packedSegments(p.Seqs, pl.Tiles, pl.Chunks)
		few = few && max((pl.Chunks+segs-1)/segs, (p.MaxLen+chunkLen-1)/chunkLen) > packedChain
	} else if few {
		fewGroup = fewTileGroup(v, p.DType, vec, pl.Tiles, p.T)
	}
	groupBytes := int64(0)
	if pl.Chunks > 2 && pl.Tiles <= maxPrefixTiles { // chunks 1 .. Chunks-2 need a prefix
		m := pl.Chunks - 2
		pl.Groups = (m + prefixGroupChunks - 1) / prefixGroupChunks
		pl.PrefixWarps = min(PrefixMaxWarps, (m+pl.Groups-1)/pl.Groups)
		groupBytes = align256(pl.Tiles * pl.Groups * 32 * (vec + 2) * 4)
		// (a forward over packets, and the fp32 backward over one tile of T >= 131072, take large
		// carry groups instead, unless the kernel has none or NANOSSM_TUNE_GROUP=1 asks for the
		// per-chunk look-back)
		if TunePasses == 3 || TunePasses != 1 && few && (fewGroup == 0 || TuneGroup == 1) {
			pl.Passes = 3
			pl.Prefix = prefixKernels[vec]
		}
	}
	if pl.Passes == 1 { // (three passes keep one row)
		pl.Segments = segs
		pl.Chunks += segs - 1
	}
	if pl.Passes == 1 && pl.Chunks > 1 {
		pl.Group = groupChunks(v, p.DType, vec, pl.Tiles, pl.Chunks, dev.SMs)
		if fewGroup > 0 && TuneGroup == 0 {
			pl.Group = fewGroup
		}
		if k, ok := scanKernels[kernelKey{p.DType, v, vec, formGrouped, false, long}]; ok && pl.Group > 1 {
			pl.Kernel = k
		}
		if k, ok := scanKernels[kernelKey{p.DType, v, vec, formLate, false, long}]; ok && lateXY(v, pl, dev.SMs) {
			pl.Kernel = k
		}
	}
	// The workspace keeps the group region whenever a device could choose three passes, and the
	// look-back slots of a single pass's segments (it is sized before a device is known); the
	// reset covers the plan's own slots (the kernels place their prefixes after them: n_chunks),
	// and the group region only where three passes read it (after their chunks' slots).
	pl.Workspace = lookback(slots) + groupBytes
	pl.Partials = pl.Workspace
	pl.Lookback = lookback(pl.Chunks)
	if pl.Passes == 3 {
		pl.Lookback += groupBytes
	}
	if pl.K > 1 {
		pl.Workspace += align256(pl.K * p.B * p.T * p.R * 4)
	}
	return pl
}
