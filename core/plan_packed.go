package core

// The heuristics of packed plans (cu_seqlens): segments, and one pass or three over few tiles.

// MaxSegments bounds packedSegments (a lane of one warp holds each cut, and one more the end:
// segment_chunk in kernels/packed.cuh); TuneSegments, when in 1..MaxSegments, replaces its
// choice (NANOSSM_TUNE_SEGMENTS, read by core/cuda): a benchmarking knob, not an API.
const MaxSegments = 31

var TuneSegments int64

// packedChain is the most chunks per segment (on average: the host does not know the lengths)
// for which a pack of few tiles takes one pass with segments rather than three passes: its
// segments are independent chains. Measured on the H200 (session 33 call 4, bf16 packs of equal
// sequences, us, three passes / one): 16 x 2048 steps, 16 chunks a segment 68.7 / 36.5; 8 x 4096,
// 32 chunks 63.1 / 35.3; 4 x 16384, 128 chunks 63.6 / 62.0; 2 x 32768, 256 chunks 63.2 / 96.9.
// Half of the even point, for uneven lengths (the longest segment sets the time). The worst
// case: one sequence holding most of a one-tile pack runs as one chain: measured (session 34,
// bf16 65536 x 4 x 64, one sequence of 90% among 40) 152 us against 60 in three passes (v84's
// prefix pass), as packs over many tiles always have. A caller that knows its longest sequence
// says so (max_seqlen; host offsets give it), and the plan then weighs that sequence's chunks.
const packedChain = 64

// packedSegments is the segments a packed single pass cuts its one row of chunks into (n: the
// sequences, chunks: the row's). The chain of a packed call: one row of B*T steps per (r, c), so
// few tiles, each with a long chain of chunks, and a chunk's predecessor dispatched only `tiles`
// blocks before it, still loading when the chunk looks back (v28, v26 and v23 made the hops
// cheaper and did not help). Cut at sequence starts, V segments are V independent chains,
// dispatched level by level (kernels/packed.cuh segment_chunk), so V * tiles blocks apart:
// V = 256 / tiles, the spread of the plain forward's (8,2048,64,64) fp32 (256 tiles;
// 4,8192's 128 reads as well). At most one per sequence, and segments of 4+ chunks on average
// (each ends in a part chunk).
func packedSegments(n, tiles, chunks int64) int64 {
	if TuneSegments >= 1 && TuneSegments <= MaxSegments {
		return min(TuneSegments, max(n, 1))
	}
	return max(1, min((segmentSpread+tiles-1)/tiles, n, MaxSegments, chunks/4))
}

// segmentSpread is the blocks packedSegments puts between a chunk and its predecessor.
const segmentSpread = 256
