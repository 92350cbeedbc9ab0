package core

// The launch heuristics of core/plan.go that read the shape: carries by groups of chunks, the
// segments of a packed single pass, and the packet width of a call. Pure arithmetic, tested
// without a GPU (plan_test.go); each rule says what the H200 measured for it.

// MaxGroup is the largest carry group the kernels' flags hold (8 bits); TuneGroup, when in
// 1..MaxGroup, replaces groupChunks' choice (NANOSSM_TUNE_GROUP, read by core/cuda): a
// benchmarking knob, not an API.
const MaxGroup = 255

var TuneGroup int64

// groupChunks is the carry group of a single-pass plan. Each chunk's carry waits on the prefix of
// the chunk before it, one L2 round trip (~0.6 us on the H200) per hop of a tile's chain; when a
// tile has many chunks and few tiles share the GPU, the chain, not the bandwidth, sets the time
// (measured: bf16 1,65536,64,64, 16 tiles of 512 chunks: halving the chunk took 1.44x the copy to
// 2.39x). Groups of G chunks make it one hop per G chunks, for ~G/2 more aggregates read per
// chunk. Measured on the H200 (ratio to the copy, G = 8 against 1, same run): forward
// 1,65536,64,64 bf16 1.43 -> 1.35, f32 1.22 -> 1.18; backward f32 2.54 -> 3.04, bf16 3.20 -> 3.28
// (its blocks hold 96 KB, two per SM: the wait for the group's aggregates costs more than the hops
// it saves). The 4-channel 16-bit forward spilled with the grouped path compiled in, so the
// 16-bit forward over 8-channel lanes and the fp32 forward (its own kernel, groupedKernels) have
// it (kGrouped in kernels/scan_kernel.cuh). Never for packed sequences: a sequence start inside a
// group would end it. (v26 tried: the packed 16-bit forward without states, its carry restarted
// at the last start inside the group; bf16 8,2048,64,64 packed 0.1086 -> 0.1207 ms compiled in,
// 0.1209 at G = 1 and 0.1207 at G = 3: the chains it shortens are not what packed calls wait on.)
// G = 3: a chunk waits on up to G - 1 aggregates, read 2 per round trip (group_carry's batch for
// 8-float lanes), so G = 3 takes one round trip for them and a third of the hops; a larger G
// lengthens every block's wait more than it shortens the chain. Measured on the H200 (ratio to
// the copy, same run): bf16 1,65536,64,64 (512 chunks) G = 1 1.41, 2 1.225, 3 1.233, 4 1.247,
// 6 1.287 (another run: 8 1.34, 16 1.59, 32 1.74); bf16 2,65536,64,64 1.286, 1.220, 1.220,
// 1.267, 1.262; f16 alike. With 64 chunks (bf16 4,8192,64,64) G = 4 read 1.30 against 1.24
// ungrouped (v25: G = 2 1.262, 3 1.247 against 1.234), hence not there; with 128 chunks (bf16
// 1,16384,64,64, 16 tiles; v25) G = 1 1.539, 2 1.344, 3 1.339: from 128 chunks.
// fp32 (4-float lanes, the same batch of 2): G = 2 (v24). Measured on the H200 (ratio to the
// copy, same run; ungrouped / G = 2 / 3 / 4): 1,65536,64,64 (512 chunks) 1.139 / 1.084 / 1.097 /
// 1.117; 2,65536,64,64 1.102 / 1.085 / 1.100 / 1.106; 1,32768,64,64 (256) 1.147 / 1.095 /
// 1.107 / 1.124; 2,16384,64,64 (128) 1.103 / 1.091 / 1.102 / 1.112; 4,8192,64,64 (64) 1.057 /
// 1.067 / 1.099 / 1.088; hence from 128 chunks. (Since v33 the fp32 grouped kernel reads a
// group's aggregates spread over its warps, group_carry_wide: at G = 2 1,65536,64,64 took 1.100
// against group_carry's 1.082, still ahead of the ungrouped kernel; fewTileGroup takes larger
// groups where tiles are few.)
//
// Deep chains (v50; 4+ chunks): a tile's chain holds many of the resident blocks when the grid
// is about one wave (tiles * chunks <= oneWaveBlocks * SMs; the forward holds 3 blocks per SM,
// the backward 2, so most of the grid is resident at once, little queued work hides a hop, and
// a tile's hops are the time after the loads) or when tiles are few (tiles * 4 <= SMs: 12+ of a
// tile's chunks in flight at 3 blocks per SM). There the group's
// extra reads cost less than the hops they save. Measured on the H200 (ratio to the copy, same
// run; session 20 calls 2-3; G = 1 / 2 / 3 / 4), the 16-bit forward over 8-channel lanes:
// bf16 2,1024,64,64 (32 tiles x 8 chunks) 1.638 / 1.469 / 1.454 / 1.479, 4,512,64,64 (64 x 4)
// 1.519 / 1.351 / 1.377 / 1.355, 2,1024,32,128 1.564 / 1.403 / 1.456 / 1.489, 4,1024,64,64 (64 x 8,
// 512 blocks) 1.434 / 1.354 / 1.388 / 1.376, 1,2048,64,64 (16 x 16) 1.913 / 1.627 / 1.560 / 1.513,
// 1,4096,64,64 (16 x 32) 1.695 / 1.463 / 1.436 / 1.494, 1,8192,64,64 (16 x 64, 1024 blocks) 1.599 /
// 1.374 / 1.361, 2,8192,64,64 (32 x 64) 1.399 / 1.320 / 1.325; f16 alike; many tiles past ~4
// blocks per SM gained nothing: 8,1024,64,64 (128 x 8) 1.344 / 1.356 / 1.358 / 1.327,
// 16,1024,16,128 1.313 / 1.353 / - / 1.342, 4,8192,64,64 (64 x 64, v25) 1.234 / 1.262 / 1.247.
// Hence G = 2 below 16 chunks, 3 from 16 (one G per band: the best measured differs by a few %
// in places, bf16 1,2048 G = 4 1.513 against 3's 1.560). Further out (call 6; G = 1 / 2 / 3), 768 blocks:
// bf16 4,1536,64,64 1.375 / 1.331 / 1.371, 3,2048 1.380 / 1.331 / 1.366, 6,1024 1.364 / 1.312 /
// 1.313; 48 tiles x 64 chunks, 3,8192 1.304 / 1.249 / 1.271: G = 2 up to 6 blocks per SM or 48
// tiles (SMs * 3/8). The fp32 forward (4-float lanes), few tiles only:
// 1,1024,64,64 (32 x 8) 1.520 / 1.485 / 1.393, 1,2048 1.393 / 1.317 / 1.329, 1,4096 1.301 / 1.258 /
// 1.277, but one wave of many tiles lost (4,512,64,64, 128 x 4: 1.235 / 1.296): G = 2 for few
// tiles (at 1,1024 G = 3 read better). The 16-bit backward (8-channel lanes; G = 1 / 2 / 4): 16 tiles, bf16 1,1024,64,64 3.209 /
// 2.996 / 2.572, 1,2048 3.017 / 2.891 / 2.648, 1,4096 2.993 / 2.950 / 2.741, 1,8192 3.164 / 3.033
// / 2.949, 1,32768 3.441 / 3.015 / 2.947; 32 tiles, 2,1024,64,64 2.823 / 2.645 / 2.589,
// 2,1024,32,128 2.653 / 2.469 / 2.558, 2,8192,64,64 2.988 / 2.772 / 2.974; one wave of 64 tiles,
// 4,512,64,64 2.614 / 2.471 / 2.507; not past that: 4,1024,64,64 (64 x 16) 2.595 / 2.619 / 2.646,
// 8,1024 2.366 / 2.670 / 2.731, 4,8192 (64 x 128) 2.386 / 2.780 / -. Hence G = 4 over SMs / 8
// tiles or fewer (on chains of 128+ chunks 3, or 8 over SMs / 16 tiles, since session 28: see
// groupChunks), else 2. The fp32 backward gained nowhere (1,1024,64,64 2.396 / 2.375 / 2.473).
// Grids of 1-15 tiles under 64 chunks (above 64, fewTileGroup's larger groups win there) take
// these groups too; timed in session 21 (call 1; lib / G = 1 / 2 / 3 forward, lib / 1 / 2 / 4
// backward; kernels of 2-4 us, so +-10% run to run): forward bf16 1,2048,8,64 (2 tiles x 16)
// 2.470 / 3.178 / 2.855 / 2.690, 1,4096,4,64 (1 x 32) 2.753 / 4.046 / 3.520 / 2.706, 2,4096,8,64
// 2.280 / 3.029 / 2.571 / 2.256, f16 alike; backward bf16 1,2048,8,64 (2 x 32) 3.940 / 4.512 /
// 5.488 / 4.012 (the backward's 1,4096,4,64 and 2,4096,8,64, 1 and 4 tiles of 64 chunks, take
// three passes at every G: their spread, 3.96-5.20, is the run's noise).
// Many tiles (session 21, call 1): the older rules by chunks alone (the 16-bit forward's G = 3
// from 128 chunks, the backward's G = 2 from 1024) were timed on 16-32 tiles, deep chains now;
// over many tiles they lost: forward bf16 8,16384,64,64 (128 tiles x 128 chunks) 1.120 / 1.293 /
// 1.193 (G = 1 / 2 / 3), 4,65536,64,64 (64 x 512) 1.192 / 1.240 / 1.202, f16 alike; backward bf16
// 4,65536,64,64 (64 x 1024) 2.369 / 2.810 / 2.946 (G = 1 / 2 / 4; and for comparison 8,16384,
// 128 x 256, under no rule: 2.571 / 2.697 / 2.918). So with the SMs known they apply only within the deep rule; without (SMs 0)
// they stand as before. The fp32 forward's G = 2 from 128 chunks (timed on 32-64 tiles, above)
// lost over more (call 2; G = 1 / 2): 8,16384,64,64 (256 tiles x 128 chunks) 1.055 / 1.091,
// 3,65536 (96 x 512) 1.066 / 1.084, 4,65536 (128 x 512) 1.057 / 1.068, against 2,65536 (64 x
// 512) 1.103 / 1.086: so up to SMs / 2 tiles. (Call 2 also timed the 16-bit rules as changed:
// bf16 8,16384 forward 1.126, was 1.194; 3,65536 at G = 2 of the outer band 1.211 / 1.265 at 1;
// backward 4,65536 2.376, was 2.812.)
func groupChunks(v Variant, dt DType, vec, tiles, chunks, sms int64) int64 {
	if v.packed() {
		return 1
	}
	// (the knob applies to every plain forward and backward, to time variant modules that compile
	// the grouped path into other kernels; a kernel without it ignores the flag bits. Where the
	// table has a grouped kernel, a group above 1 also selects it, in layout.)
	if TuneGroup >= 1 && TuneGroup <= MaxGroup {
		return TuneGroup
	}
	// The backward has grouped kernels of its own since v35 (the plain one keeps its machine
	// code; since v74 they copy x and out after the group carry: bf16 1,65536,64,64 at G = 4 2.95
	// -> 2.56, the groups below not timed again against the late plain kernel). Measured on the
	// H200 (ratio to the copy, same run; G = 1 / 2 / 4): 1,65536,64,64 (1024 chunks) bf16 3.176 /
	// 3.000 / 2.986, f32 2.538 / 2.679 / 2.855. So the 16-bit backward over 8-channel lanes takes
	// G = 2 on its longest chains (1024+ chunks over SMs / 4 tiles or fewer, deep chains now; over
	// SMs / 8 or fewer 4: v50 above), and the fp32 one none:
	// its blocks wait on the group's aggregates in one warp behind a second barrier, which costs
	// more than the hops save (v19 at G = 8: f32 2.54 -> 3.04). Few tiles stay three passes: a
	// single pass with G = 16 / 64 took f32 1,262144,4,32 from 3.36 to 4.14 / 4.25 (chunks of 64
	// steps, 4096 of them, each block waiting on its group's reads), bf16 2,262144,8,32 from 3.62
	// to 3.44 / 5.93 (docs/performance.md v35); since v37 one class of them, one tile of fp32
	// lanes, takes one pass with G = 32 (fewTileGroup). Since v77 (a batch's loads issued
	// together) the 16-bit backward's best group over SMs / 8 tiles or fewer depends on the tiles
	// and the chain (session 28, calls 3-6, ratio to the copy, same run, G = 3 / 4 / 6 / 8):
	// bf16 1,65601,20,64 (5 tiles x 1026 chunks) 4.77 / 3.76 / 2.91 / 2.76 (the chain sets the
	// time: a third more hops at G = 3 cost 27%); 1,65536,32,64 (8 tiles) 3.10 / 2.71 / 2.70 /
	// 2.61; 1,65536,48,64 (12) 2.57 / 2.64 / 2.68 / 2.69; 16 tiles of 128+ chunks (G = 3 / 4,
	// twice): 1,65536,64,64 2.515 / 2.551, 1,32768 2.529 / 2.564, 1,8192 2.544-2.557 / 2.577,
	// 1,131072 2.525 / 2.565, f16 alike (G = 2, 6, 8 there: 2.59-2.65); 16 tiles of 16-32
	// chunks (kernels of a few us) G = 4 read 1-5% better: 1,1024 bf16 2.32 / 2.24 against 2.43 /
	// 2.39, 1,2048 2.47 / 2.34 against 2.50 / 2.38. Hence 8 over SMs / 16 tiles or fewer and 3
	// over SMs / 8 or fewer, both on chains of 128+ chunks, else 4 (1-4 tiles and 5-8 tiles of
	// short chains not timed: they keep what was).
	deep := sms > 0 && chunks >= 4 && (tiles*chunks <= oneWaveBlocks*sms || tiles*4 <= sms)
	few := deep && tiles*4 <= sms
	w16 := dt.Size() == 2 && vec == 8
	// (the rules by chunks alone, the forward's from 128 and the backward's from 1024, were timed
	// on 16-32 tiles, now deep chains: with the SMs known they are not taken over many tiles,
	// where they lost: see "Many tiles" above)
	unknown := sms <= 0
	if v == Backward {
		switch {
		case w16 && deep && tiles*16 <= sms && chunks >= 128:
			return 8
		case w16 && deep && tiles*8 <= sms && chunks >= 128:
			return 3
		case w16 && deep && tiles*8 <= sms:
			return 4
		case w16 && (deep || unknown && chunks >= 1024):
			return 2
		}
		return 1
	}
	// (the 16-bit forward gains a little further out too: up to 6 blocks per SM, 48 tiles)
	edge := sms > 0 && chunks >= 4 && (tiles*chunks <= 6*sms || tiles*8 <= 3*sms)
	switch {
	case w16 && deep && chunks < 16:
		return 2
	case w16 && (deep || unknown && chunks >= 128):
		return 3
	case w16 && edge:
		return 2
	case dt == Float32 && vec == 4 && (few || chunks >= 128 && (unknown || tiles*2 <= sms)):
		return 2
	}
	return 1
}

// TuneLateXY, when 1 or 2, replaces lateXY's choice: 1 never, 2 in every single pass it may
// take (NANOSSM_TUNE_LATE_XY, read by core/cuda): a benchmarking knob, not an API.
var TuneLateXY int64

// lateXY is whether a plain backward's single pass (per-chunk look-back, G = 1) takes the late
// kernel (*_late_*, where the width has one): its blocks that look back issue their copies of x
// and out after the carry, not with g's before it (v73, LATE in kernels/scan_kernel.cuh), so the
// looker's polls do not come back behind 64 KB of its own block's data; the landing of x and out
// then no longer overlaps the fold and the look-back.
// A few tiles with long chains wait on the hops, many tiles on the bandwidth: measured on the
// H200 (ratio to the copy, same run; early / late, session 26 call 3), fp32 (B*R/2 tiles)
// 1,65536,64,64 (32 tiles x 1024 chunks) 2.41 / 2.19, 1,8192,64,64 (32 x 128) 2.32 / 2.20,
// 1,16384,128,64 (64 x 256) 2.29 / 2.06, 2,1024,64,64 (64 x 16) 2.21 / 2.14; about even at 96
// tiles, 3,8192,64,64 2.09 / 2.06, 1,4096,192,64 2.09 / 2.10; lost over more, 4,8192,64,64 (128 x
// 128) 2.05 / 2.06, 8,2048,64,64 (256 x 32) 2.02 / 2.10, 16,1024,16,128 (256 x 16) 2.05 / 2.10;
// bf16 (B*R/4 tiles, where not grouped) 4,8192,64,64 (64 x 128) 2.29 / 2.24, 3,8192,64,64 (48 x
// 128) 2.41 / 2.27, 1,4096,192,64 (48 x 64) 2.37 / 2.32, but 8,2048,64,64 (128 x 32) 2.19 / 2.24,
// 16,1024,16,128 (128 x 16) 2.26 / 2.30. Hence up to SMs / 2 tiles. (Grouped plans have kernels
// of their own, which copy late too since v74: groupChunks gives groups over few tiles only.
// Not packed ones, whose blocks learn in phase 1 whether they take a carry.)
func lateXY(v Variant, pl ScanPlan, sms int64) bool {
	if v != Backward || pl.Passes != 1 || pl.Group > 1 || pl.Chunks < 2 {
		return false
	}
	switch TuneLateXY {
	case 1:
		return false
	case 2:
		return true
	}
	return sms > 0 && pl.Tiles*2 <= sms
}

// TuneLong, when 1 or 2, replaces longChunks' choice: 1 never, 2 wherever the plan's form has a
// long-chunk kernel (NANOSSM_TUNE_LONG, read by core/cuda): a benchmarking knob, not an API.
var TuneLong int64

// longChunks is whether a plan of `tiles` tiles over T steps takes long chunks (longSteps steps
// per thread: kernels of their own, *_long_*), where its form has such a kernel (layout). A
// tile's chain of chunks advances one chunk per L2 round trip (~0.4-1 us under load); with few
// tiles that chain sets the time, and a chunk twice as long halves it. Three kernels have them:
//   - the 16-bit forward over 4-channel lanes with carries by large groups (few tiles,
//     fewTileGroup): its 16 steps of 8-byte packets moved half of what an fp32 block moves per
//     hop. Measured on the H200 (session 29 call 4; ratio to the copy, same run, 16 steps / 32
//     twice): one tile, bf16 1,262144,4,32 2.18 / 1.81, 1.85, 1,131072 2.16 / 1.74, 1.83, f16
//     alike; two and four tiles even (bf16 2,262144,4,32 1.82 / 1.82, 4,131072 1.71 / 1.71); 128
//     long chunks even (1,32768 bf16 2.20 / 2.24, 2.11), 64 lost (1,16384 2.47 / 2.59, 3.32; f16
//     2.40 / 2.59, 2.42): so few tiles of 128+ long chunks (T >= 32768).
//   - the 16-bit forward over 8-channel lanes, for bytes in flight rather than hops: its blocks
//     take 128 registers a thread, so an SM holds two and 128 KB of staged copies where fp32's
//     three hold 192 KB; at 22 steps two blocks hold 176 KB. Measured on the H200 (session 30
//     call 1, whole modules, ratio to the copy, same run, 16 steps / 22): bf16 1,65536,64,64
//     1.25 / 1.12, 4,8192 1.16 / 1.12, 8,2048 1.16 / 1.13, f16 alike; T = 1024 lost (2,1024
//     1.36-1.43 / 1.50-1.78, 16,1024,16,128 1.23-1.26 / 1.27). Call 2 (the long kernels; short /
//     long, bf16 then f16): 4,1536 1.30 / 1.27, 1.30 / 1.22; 2,2048 (32 tiles x 12 long chunks)
//     1.37 / 1.35, 1.41 / 1.38; 2,4096 1.31 / 1.24, 1.29 / 1.26; few tiles gained most (bf16
//     2,262144,8,32 1.66 / 1.40, 1,131072,8,32 1.86 / 1.72); but a grid under one wave of two
//     long blocks a SM lost: 1,2048 (16 x 12 = 192 blocks) 1.53 / 1.56-1.64, 2,1024 (192) 1.37 /
//     1.43-1.48 (the short plan's 256 blocks spread two a SM; 192 leave most SMs one). Call 4
//     (quiet GPU): 1,2048 1.54 / 1.63, 4,1536 1.31 / 1.24-1.27, 1,4096 (16 x 24) 1.40 / 1.41;
//     one tile under the wave gained (chain-bound: 1,20000,4,64, 114 long chunks, 2.40 / 2.27,
//     f16 2.43 / 2.25; 1,48000,4,64 2.02 / 1.79-1.86); 6,1024 gained (1.28 / 1.21) where
//     16,1024,16,128 lost (1.24 / 1.25), so T = 1024 stays short. Hence T >= 1536 and either
//     few tiles (fewTileGroup's) or at least two long blocks per SM. The packed forward's kernels
//     where they have two long blocks per SM and more tiles than SMs / 32 (session 33 call 2,
//     packed ms, short / long): bf16 8,2048,64,64 (16 tiles) 0.0883 / 0.0845, uneven lengths
//     0.0954 / 0.0896, 4,8192 0.1617 / 0.1532, 16,1024,16,128 (8 tiles) uneven 0.0567 / 0.0540,
//     f16 alike; but packs of few tiles, then in three passes, lost: 4,16384,4,64 (one tile)
//     0.0641 / 0.0658, 8,4096,8,64 (two) 0.0635 / 0.0657, 16,2048,16,32 (two) 0.0688 / 0.0806
//     (since v83 most such packs take one pass with segments: not measured over long chunks);
//     2,1024 (192 long blocks) lost in session 32.
//   - the fp32 late backward (single pass, per-chunk look-back, lateXY): chunks of 128 steps, one
//     block of 192 KB a SM, over SMs / 4 tiles or fewer with 64+ long chunks (T >= 8192). Session
//     29 call 4 (8 steps / 16 twice): 1,65601,20,64 (10 tiles) 2.67 / 2.31, 2.31, 1,16384,20,64
//     2.64 / 2.35, 2.38, 1,8192,20,64 2.63 / 2.41, 2.35, 1,65536,16,64 (8) 2.99 / 2.35, 2.34,
//     4,65536,8,32 (8) 3.04 / 2.39, 2.40, 1,65536,32,64 (16) 2.29 / 2.18, 2.18; further out it
//     gained little or lost: 1,65536,64,64 (32 tiles) 2.19 / 2.16, 2,8192,64,64 (64 x 128 chunks)
//     2.07 / 2.18 (call 3, a module of such kernels: 2,1024,64,64 2.11 / 2.26, 8,2048 2.03 / 2.08;
//     the 16-bit backward lost everywhere, bf16 1,65536,64,64 2.51 / 2.65). 32 tiles on shorter
//     chains, session 30 call 1 (short / long, two pairs): 1,65536,64,64 2.174, 2.176 / 2.158,
//     2.159; 1,32768 2.184, 2.191 / 2.161, 2.165; 1,16384 2.203, 2.203 / 2.181, 2.181; 1,8192
//     2.186, 2.176 / 2.180, 2.167; 2,8192,32,64 2.175, 2.176 / 2.158, 2.154: 1% every time, so
//     up to SMs / 4 tiles.
func longChunks(v Variant, dt DType, vec, tiles, T, sms int64) bool {
	switch TuneLong {
	case 1:
		return false
	case 2:
		return true
	}
	if sms <= 0 {
		return false
	}
	chunks8 := (T + ScanMaxWarps*longForwardSteps8 - 1) / (ScanMaxWarps * longForwardSteps8) // (over 8-channel lanes)
	switch {
	case v == Forward && dt.Size() == 2 && vec == 4:
		return tiles*32 <= sms && T >= 128*ScanMaxWarps*longForwardSteps
	case v == Forward && dt.Size() == 2 && vec == 8:
		return T >= 1536 && (tiles*32 <= sms || tiles*chunks8 >= 2*sms)
	case v == ForwardPacked && dt.Size() == 2 && vec == 8:
		return T >= 1536 && tiles*32 > sms && tiles*chunks8 >= 2*sms
	case v == Backward && dt == Float32 && vec == 4:
		return tiles*4 <= sms && T >= 64*ScanMaxWarps*longBackwardSteps
	}
	return false
}

// oneWaveBlocks is the blocks per SM up to which groupChunks counts a grid as one wave (the
// forward holds 3 blocks per SM, the backward 2; 4 per SM still gained, 8 did not).
const oneWaveBlocks = 4

// fewTileGroup is the carry group of a forward (and of one backward class, below) over few
// tiles and many chunks (tiles * 32 <= SMs, 64+ chunks), where the per-chunk look-back's chain
// of ~0.5 us hops sets the time (one tile of 2048 chunks: 12x the copy): 0 where the kernel has
// no carries by groups (single-channel lanes) or they were not measured to win (the backward
// but one class), and the plan then takes three passes (x read twice: 1.89x the copy on f32
// 1,262144,4,32). The grouped kernels over 4-channel lanes read a group's earlier aggregates
// spread over the block's warps (group_carry_wide), so a large group costs a block a few round
// trips. Measured on the H200 (ratio to the copy, same run, v33 call 2, the committed kernels;
// three passes / G = 16 / 32 / 64 / 128): f32 1,262144,4,32 (1 tile) 1.889 / 2.220 / 1.538 /
// 1.476 / 1.654; f32 2,262144,8,32 (4 tiles) 1.627 / 1.243 / 1.263 / 1.311 / 1.420; bf16
// 1,262144,4,32 (4-channel lanes, 1 tile) 2.667 / 3.864 / 2.494 / 2.193 / 2.443. Two tiles (f32
// 1,131072,8,32, two other forms of the kernel, calls 3 and 5): three passes 1.87, G = 32
// 1.71-1.74, 64 1.42-1.45, 96 1.49. Since v34 the shares come scaled and the a before the group
// is loaded before the poll, which moved the two-tile optimum (call 2, that form: G = 32 1.327,
// 64 1.397; 1 tile: 64 1.427, 32 1.527; 4 tiles: 16 1.199, 32 1.241): hence 64 for 1 tile, 32
// for 2, 16 above (a tile's chain of chunks/G hops against a group's G/8 round trips per
// block). Between them (session 27, calls 4-5; 64 / 40 / 48 / 56, ratio to the copy, same
// run): f32 1,262144,4,32 1.431 / 1.406 / 1.384 / 1.424, 1,524288,4,32 1.401 / 1.353 / 1.352 /
// 1.391, 1,131072,4,32 1.500 / 1.483 / 1.477 / 1.491 (48 again: 1.384, 1.351, 1.475; call 4:
// 1.389 and 1.355, 80 and 96 1.46-1.52), so 48 for one tile of fp32 lanes; the 16-bit forward
// over 4-channel lanes gained nowhere steadily (bf16 1,262144 2.17 / 2.25 / 2.11-2.16 / 2.20,
// 1,131072 2.07 / 2.22 / 2.16 / 2.16): it keeps 64. The 16-bit forward over 8-channel lanes
// has group_carry (one warp, two aggregates per round trip): bf16 2,262144,8,32 (2 tiles) three
// passes 1.923, G = 8 1.592, 16 1.602; bf16 1,131072,8,32 (1 tile) 2.50, G = 8 2.60, 16 1.89, 32
// 2.14 (v33 calls 1-3, 5).
//
// The backward (v37, session 16): its wide shares read 8 aggregates a round trip in fp32 (4 over
// 16-bit lanes), so an fp32 share of 31 chunks over 4 warps takes one. One tile of fp32 lanes
// (f32 1,262144,4,32: one pass in 4096 chunks of 64 steps, three in 8192 of 32), ratio to the
// copy, two calls: three passes 3.32 / 3.28, one pass G = 24 3.28, 32 3.10 / 3.10, 48 3.73, 64
// 3.90; so G = 32 for one tile from T >= 131072 (2048+ chunks of 64 steps: timed at 262144 only,
// 131072-262144 taken by extension; tests/test_plans.py runs 2049 chunks; shorter ones keep
// three passes). The bound is on T, not on the chunks of the layout at hand: plan() weighs three
// passes over 4-warp blocks against the 8-warp layout, and both must then agree on the passes.
// Not for two tiles (f32 1,131072,8,32: three passes 3.23, G = 24 3.27, 32 3.38), four
// (2,262144,8,32: 3.07 against 3.23+) or bf16 (1 tile: 6.21 against 6.64 at G = 32).
func fewTileGroup(v Variant, dt DType, vec, tiles, T int64) int64 {
	if v == Backward {
		if dt == Float32 && vec == 4 && tiles == 1 && T >= 2048*64 {
			return 32
		}
		return 0
	}
	switch {
	case vec == 4 && tiles == 1 && dt == Float32:
		return 48
	case vec == 4 && tiles == 1:
		return 64
	case vec == 4 && tiles == 2:
		return 32
	case vec == 4:
		return 16
	case dt.Size() == 2 && vec == 8 && tiles == 1:
		return 16
	case dt.Size() == 2 && vec == 8:
		return 8
	}
	return 0
}

// TuneForward16Bytes, when 8 or 16, replaces forwardPacketBytes' choice for the 16-bit plain
// forward (NANOSSM_TUNE_FWD16_BYTES, read by core/cuda): a benchmarking knob, not an API.
var TuneForward16Bytes int64

// forwardPacketBytes is the packet a plain forward asks for. 16 bytes, except for 16-bit types
// when 8-channel lanes would not fill one warp (B*R*C/8 < 32 lanes, e.g. (1,T,4,32): 16 lanes,
// half the warp idle): 4-channel lanes fill it. Measured on the H200 (ratio to the copy, same
// run): f16 1,262144,4,32 4.25 -> 3.20 with 8-byte packets; but with every lane busy they were
// slower everywhere (f16 8,2048,64,64 1.38 -> 1.60: twice the threads, each with the same fixed
// work per step), so only then.
func forwardPacketBytes(p Problem) int64 {
	if p.DType.Size() != 2 {
		return 16
	}
	if TuneForward16Bytes == 8 || TuneForward16Bytes == 16 {
		return TuneForward16Bytes
	}
	if p.B*p.R*p.C/8 < 32 {
		return 8
	}
	return 16
}

// vectorWidth is the packet width the layout allows, in elements: a packet of `bytes` bytes
// when the channel dim of every tensor is unit-stride, C and every other stride are multiples of
// it and every base pointer is aligned to it; else 1.
func vectorWidth(p Problem, bytes int64, ts ...Tensor) int64 {
	vec := bytes / p.DType.Size()
	if p.C%vec != 0 {
		return 1
	}
	for _, t := range ts {
		if t.Strides[3] != 1 || t.Data%uintptr(bytes) != 0 {
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
