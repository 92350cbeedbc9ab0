// The scan kernel template of kernels/scan.cu (which describes the algorithm): forward or
// backward, plain or packed, over one element type and packet width. Device code only.
#pragma once

#include "packed.cuh"
#include "scan_parts.cuh"
#include "scan_policy.cuh"

namespace nanossm {

// GROUPED: a plain forward's or backward's kernel with carries by groups (group_carry, or
// group_carry_wide for groups of 5+ chunks), a kernel of its own.
// STATES = false: a packed call with no initial and no final state (the host passes none; in the
// backward: no final state's gradient in, no initial state's gradient out).
// STEPS_: steps per thread of a long-chunk kernel (kernels/scan.cu), 0: the module's.
template <typename T, int VEC, bool BWD, bool PACKED, bool GROUPED = false, bool STATES = true, bool LATE = false,
          int STEPS_ = 0>
__device__ __forceinline__ void scan_kernel(const Params<T>& P) {
  constexpr int NW = BWD ? BWD_MAX_WARPS : MAX_WARPS;                 // most warps a block has
  constexpr int NS = STEPS_ > 0 ? STEPS_ : BWD ? BWD_STEPS : STEPS;  // steps per thread
  __shared__ float sh_agg[NW][WARP][VEC];
  __shared__ float sh_aend[NW][WARP];
  __shared__ int sh_reset[NW];  // the sub-chunk holds a sequence start

  const int lane = threadIdx.x, w = threadIdx.y, S = blockDim.y;
  const int64_t T_ = P.T, R = P.R, C = P.C, flags = P.flags;
  // The kernel's compile-time choices: kernels/scan_policy.cuh says why each.
  using Pol = ScanPolicy<T, VEC, BWD, PACKED, GROUPED, STATES>;
  constexpr bool kFwdPacked = Pol::kFwdPacked, kWide = Pol::kWide, kTable = Pol::kTable, kPreA = Pol::kPreA,
                 kSplitA = Pol::kSplitA, kBits = Pol::kBits, kResets = Pol::kResets, kUnrollFold = Pol::kUnrollFold,
                 kOneLooker = Pol::kOneLooker, kGrouped = Pol::kGrouped, kRefold = Pol::kRefold,
                 kStepPtr = Pol::kStepPtr;
  constexpr int kWideBatch = Pol::kWideBatch;
  static_assert(!GROUPED || !PACKED, "carries by groups: the plain forward and backward only");
  const bool reverse = flags & F_REVERSE, undecayed = !kFwdPacked && (flags & F_UNDECAYED);
  const bool agg_only = flags & F_AGG_ONLY, prefixed = flags & F_PREFIXED;
  const float* h0 = STATES ? P.h0 : nullptr;

  // (tile, chunk) chunk-major: blocks are dispatched in index order, so a block waits only on
  // running blocks (packed segments: level by level, segment_chunk below). Pass 3 of three waits
  // on nothing and runs the chunks last to first: it first reads what pass 1 read last (in L2).
  int64_t tile, chunk;
  divmod(blockIdx.x, P.n_tiles, chunk, tile);
  if (prefixed) {
    chunk = P.n_chunks - 1 - chunk;
    if (chunk == 0) return;  // pass 1 finished chunk 0
  }
  if (agg_only && chunk == P.n_chunks - 1 && chunk > 0) return;  // no one reads its aggregate

  const int64_t CV = C / VEC, rows = P.B * R;
  const LaneMap lm = map_lane(BWD, tile, lane, CV, rows, P.K);
  const int64_t row = lm.row, cv = lm.cv;
  const bool active = row < rows;
  int64_t b = 0, r = 0;
  if (active) divmod(row, R, b, r);
  const float* Ab = P.A + b * P.sA[0] + r * P.sA[2];
  const T* xb = P.x + b * P.sx[0] + r * P.sx[2] + cv * VEC * P.sx[3];
  T* ob = P.out + b * P.so[0] + r * P.so[2] + cv * VEC * P.so[3];
  // State rows are contiguous (rows, R, C): b's row precomputed so b, r and cv die here (but in
  // the LATE kernels, whose phase 3 needs them for x and out: row_at; no spill, 95-128
  // registers). The packed forward holds the offset in 32 bits (its fp32 kernel with states
  // spilled 40 bytes with 64; the host refuses R * C >= 2^31 there, core/validate.go).
  using StOff = std::conditional_t<kFwdPacked, int, int64_t>;
  const StOff st0 = static_cast<StOff>(r * C + cv * VEC);
  const int64_t st_b = b * R * C + st0;

  // the backward's x or out (base, strides st) of this thread's packet at step t
  auto row_at = [&](const T* base, const int64_t(&st)[4], int64_t t) {
    return base + b * st[0] + r * st[2] + cv * VEC * st[3] + t * st[1];
  };
  auto a_at = [&](int64_t tau) { return a_scan(Ab, P.sA[1], T_, reverse, tau); };
  // a just before step tau: before step 0, A[-1] := 0 when an initial state decays in, else a(0)
  // (decay 1). A predicated load, then a select, so the load issues long before its use.
  auto a_before_zero = [&](int64_t tau) { return !active || tau >= T_ || (tau == 0 && h0 && !undecayed); };
  auto a_before_load = [&](int64_t tau, bool skip) -> float {  // (skip: 0, nothing read)
    const int64_t s = tau > 0 ? tau - 1 : 0;
    return ldg_if(&Ab[(reverse ? T_ - 1 - s : s) * P.sA[1]], !a_before_zero(tau) && !skip);
  };
  auto a_before_use = [&](int64_t tau, float v) -> float {
    return a_before_zero(tau) ? 0.f : (reverse ? -v : v);
  };
  // Packed sequences in scan order: boundary i (0..N).
  const int64_t N = P.n_seqs;
  auto bound = [&](int64_t i) -> int64_t {
    const int64_t k = reverse ? N - i : i;
    const int64_t v = (flags & F_SEQ_I32) ? static_cast<int64_t>(__ldg(static_cast<const int*>(P.cu) + k))
                                          : static_cast<int64_t>(__ldg(static_cast<const long long*>(P.cu) + k));
    return reverse ? T_ - v : v;
  };
  // The block's first step and its steps' end; packed segments (segment_chunk) map `chunk` to its
  // look-back slot, seg_j: its place in the segment (the first has no carry in).
  const int64_t chunk_len = (int64_t)S * NS;
  int64_t t0 = chunk * chunk_len, seg_end = T_, seg_j = chunk;
  if constexpr (PACKED) {
    const int V = static_cast<int>((flags >> F_SEG_SHIFT) & 0xff);
    if (V > 1 && !segment_chunk(bound, N, T_, chunk_len, V, chunk, chunk, t0, seg_end, seg_j)) return;
  }
  const bool seg_later = seg_j > 0, seg_last = PACKED && t0 + chunk_len >= seg_end;  // (a carry in; no successor)

  // ---- phase 1: stage this thread's NS packets in shared memory (all copies in flight at once),
  // read its NS A values, fold a zero-carry aggregate. Row (w*NS + i), lane -> xs[i * WARP]. The
  // backward stages x and out in two more regions, a second group of copies (issue_steps, v40),
  // or in the LATE kernels' blocks that look back a third, issued after the carry (phase 3).
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t region = (int64_t)S * NS * WARP;
  Packet<T, VEC>* xs = reinterpret_cast<Packet<T, VEC>*>(smem) + (int64_t)w * NS * WARP + lane;
  Packet<T, VEC>* xos = xs + region;
  Packet<T, VEC>* yos = xs + 2 * region;
  const int64_t ts = t0 + (int64_t)w * NS;  // first step of this thread (scan order)
  // this thread's steps that exist (0..NS): a 32-bit bound, not a 64-bit test per step
  const int nst = ts < seg_end ? static_cast<int>(min(static_cast<int64_t>(NS), seg_end - ts)) : 0;
  // Pass 1 of three only publishes aggregates: no output, no states (chunk 0 runs in full).
  const bool writes = !(agg_only && chunk > 0);

  // LATE (v73: the *_late_* kernels, which the host takes over few tiles, core lateXY; v74: the
  // grouped backward kernels): a backward block that looks back issues its x and out copies after
  // its carry, so the looker's polls do not come back behind them (a long chain's hop: its second
  // poll 1.09 us p50 against 0.13 unloaded, session 25's trace), at the cost of the overlap of
  // their landing (v40). Not packed: those blocks learn in phase 1 whether they take a carry.
  static_assert(!LATE || (kTwoGroups<BWD, T, VEC> && !PACKED), "late copies: the backward over packets, not packed");
  const bool late_xy = LATE && seg_later && writes;  // (block-uniform)
  float* const hT = STATES ? P.hT : nullptr;
  const LaneStates<VEC, PACKED, StOff> ls{h0, hT, N, R, C, st0, reverse, undecayed, active};
  // an empty sequence's final state is its initial state (or 0)
  auto empty_state = [&](int64_t k) {
    if (hT && active && writes) ls.write_start(k);
  };
  // a before the thread's first step and before the block's (phase 2): the packed kernels load
  // them first, the others after the A table's decision, below.
  float a_prev_raw = 0.f, a_blk_raw = 0.f;
  if constexpr (PACKED) {
    a_prev_raw = a_before_load(ts, false);
    a_blk_raw = a_before_load(t0, false);
  }
  // Packed: this warp's steps that start (smask) or end (emask) a sequence, and its number (sh_seq).
  __shared__ int64_t sh_seq[NW][NS];
  uint32_t smask = 0, emask = 0;

  // The A table (v14-v18): when a warp's lanes cover at most AT_ROWS (b, r) rows (C / VEC >= 8)
  // and all are active, its A values are copied to shared memory with the x copies and each step's
  // decay is computed once per row (d_tab); else per-lane loads (fp32 8,2048,64,64 forward 1.17 ->
  // 1.11, backward 2.64 -> 2.31; with idle lanes slower, 1,262144,4,32 bf16 3.84 -> 4.31).
  constexpr int AT_ROWS = 4;
  // (kWide: both in one array, which group_carry_wide takes over after phase 1)
  __shared__ float a_tab_s[NW][AT_ROWS][NS + 1], d_tab_s[NW][AT_ROWS][NS];
  constexpr int kTabFloats = NW * AT_ROWS * (2 * NS + 1);
  __shared__ float tab_mem[kTabFloats];
  float(*a_tab)[AT_ROWS][NS + 1] = a_tab_s;
  float(*d_tab)[AT_ROWS][NS] = d_tab_s;
  if constexpr (kWide) {
    a_tab = reinterpret_cast<float(*)[AT_ROWS][NS + 1]>(tab_mem);
    d_tab = reinterpret_cast<float(*)[AT_ROWS][NS]>(tab_mem + NW * AT_ROWS * (NS + 1));
  }
  const int64_t row_lo = __shfl_sync(0xffffffffu, row, 0);
  const int q_row = active ? static_cast<int>(row - row_lo) : 0;  // lanes' rows differ by < 32
  const bool use_tab = kTable && __reduce_max_sync(0xffffffffu, static_cast<unsigned>(q_row)) < AT_ROWS &&
                       __all_sync(0xffffffffu, active);
  if (use_tab) issue_a_table<NS, AT_ROWS>(a_tab[w], q_row, Ab, P.sA[1], T_, reverse, ts);
  // (without the table: loaded with them)
  if constexpr (!PACKED) {
    a_prev_raw = a_before_load(ts, use_tab);
    a_blk_raw = a_before_load(t0, use_tab && !kWide);
  }
  float a_m2_raw = 0.f;
  if constexpr (kPreA) {
    const int64_t tau = t0 - chunk_len - 1;  // (chunk >= 2: tau >= 0)
    a_m2_raw = ldg_if(&Ab[(reverse ? T_ - 1 - tau : tau) * P.sA[1]], active && chunk >= 2);
  }
  float dec[NS];  // A at each step as loaded, then the step's decay
  {
    // Step pointers walked by increments (opaque(): not rematerialised per step).
    const int64_t t_first = reverse ? T_ - 1 - ts : ts, dir = reverse ? -1 : 1;
    const T* px = opaque(xb + t_first * P.sx[1]);
    const float* pa = opaque(Ab + t_first * P.sA[1]);
    const int64_t dx = dir * P.sx[1], da = dir * P.sA[1];
    const T* pxo = row_at(P.xo, P.sxo, t_first);
    const T* pyo = row_at(P.yo, P.syo, t_first);
    const bool stage_xy = BWD && writes;  // x and out feed phase 3 only (not pass 1 of three)
    Packet<T, VEC> held[NS], held_x[BWD ? NS : 1], held_y[BWD ? NS : 1];  // narrow packets only
    issue_steps<T, VEC, NS, BWD, kSplitA>(xs, xos, yos, held, held_x, held_y, px, pxo, pyo, P.sx, P.sxo, P.syo,
                                          dir, dx, active, nst, stage_xy && !late_xy, use_tab, pa, da, dec);
    // Packed: the warp's starts and ends (packed_walk), while the copies fly (v30: before them,
    // the copies waited for its round trips); empty sequences get their final state here.
    if constexpr (PACKED) packed_walk<NS>(bound, N, ts, T_, seg_end, empty_state, sh_seq[w], smask, emask);
    if constexpr (!kAsyncStage<T, VEC>) {
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        stage_land<T, VEC>(&xs[i * WARP], held[i]);
        if constexpr (BWD) {
          if (stage_xy) {
            stage_land<T, VEC>(&xos[i * WARP], held_x[i]);
            stage_land<T, VEC>(&yos[i * WARP], held_y[i]);
          }
        }
      }
    }
  }
  // each thread reads back only its own rows: no barrier (the two-group backward waits for g and
  // the table here, for x and out before phase 3)
  constexpr bool kStaged2 = kTwoGroups<BWD, T, VEC>;
  if constexpr (kStaged2) {
    staged_wait_g();
  } else {
    staged_wait();
  }
  // (the table's entries were copied by other lanes: the warp barrier orders them; racecheck, v17)
  if (use_tab) __syncwarp();
  const float a_prev = a_before_use(ts, use_tab ? a_tab[w][q_row][0] : a_prev_raw);
  // (the packed kernels' a before the block, here from their own load; ts - w * NS is t0, not
  // kept live across the copies: the packed fp32 forward spilled otherwise)
  float a_blk_packed = 0.f;
  if constexpr (PACKED) a_blk_packed = a_before_use(ts - w * NS, a_blk_raw);
  // Step i's decay from its raw A (a_last: a before the step, updated); past the end or on an idle
  // lane a stays: decay 1, input 0. (The table's decays follow the same rule.)
  auto step_decay = [&](int i, float raw, float& a_last) -> float {
    const float ai = (active && i < nst) ? (reverse ? -raw : raw) : a_last;
    const float d = expf(ai - a_last);
    a_last = ai;
    return d;
  };
  float h[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) h[v] = 0.f;
  bool reset = false;  // warp-uniform: a sequence starts in this thread's steps
  float a_last = a_prev;
  if (use_tab) {
    // (as step_decay gives them: every lane is active with the table)
    fill_decay_table<NS, AT_ROWS>(a_tab[w], d_tab[w], reverse, nst,
                                  [&](int q) { return a_before_use(ts, a_tab[w][q][0]); });
    __syncwarp();
#pragma unroll
    for (int i = 0; i < NS; ++i) dec[i] = d_tab[w][q_row][i];
    if (nst > 0) a_last = (reverse ? -1.f : 1.f) * a_tab[w][q_row][nst];
  } else {
#pragma unroll
    for (int i = 0; i < NS; ++i) dec[i] = step_decay(i, dec[i], a_last);
  }
  // The packed forward (v32, v46): warps with a start (phase 1) or a start or an end (phase 3)
  // take rolled loops (packed_steps_rolled) that hold the states; the others run the plain
  // unrolled loops (kBits, the backward's way, inline in every step, stalled the forward on
  // instruction fetch, v25). decay_at: a step's decay again (same bits), which a rolled loop
  // cannot index from dec[]; start_at: the state a sequence starting at step i restarts from.
  auto start_at = [&](int i, float d, float (&st)[VEC]) { ls.start(sh_seq[w][i], d, st); };
  auto decay_at = [&](int i, float& al) -> float {
    if (use_tab) return d_tab[w][q_row][i];
    const int64_t tau = ts + i;
    return step_decay(i, ldg_if(&Ab[(reverse ? T_ - 1 - tau : tau) * P.sA[1]], active && i < nst), al);
  };
  if (kFwdPacked && smask) {
    packed_steps_rolled<T, VEC>(xs, nst, smask, a_prev, decay_at, [&](int i, float d, float (&st)[VEC]) {
      reset = true;
      start_at(i, d, st);
    }, [](int, const float (&)[VEC]) {}, h);
  } else {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const Packet<T, VEC> p = xs[i * WARP];
      float xf[VEC];
      unpack(p, xf);
      if (kBits && (smask >> i & 1)) {
        reset = true;
        ls.start(sh_seq[w][i], dec[i], h);
#pragma unroll
        for (int v = 0; v < VEC; ++v) h[v] += xf[v];
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) h[v] = fmaf(dec[i], h[v], xf[v]);
      }
    }
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) sh_agg[w][lane][v] = h[v];
  sh_aend[w][lane] = a_last;
  // (bit 1: the sub-chunk's first step starts a sequence; when it is warp 0's, no warp of the
  // block takes a carry in: kOneLooker's test below)
  if (lane == 0) sh_reset[w] = static_cast<int>(reset) | (PACKED && (smask & 1)) << 1;
  __syncthreads();

  auto reset_at = [&](int s) { return kResets && sh_reset[s]; };
  auto fold_first = [&](int n, float& a_end, float (&st)[VEC]) {
    fold_subchunks<NW, VEC, false>(n, sh_agg, sh_aend, reset_at, a_end, st);
  };

  // ---- phase 2: the carry into the block: h0 for chunk 0 (0 for a packed segment's first),
  // else a look-back (kOneLooker: by whom), or in the grouped path by groups (block_group_carry).
  // No flag or fence: the workspace starts as 0xffffffff, a NaN arithmetic never produces (GPU
  // NaNs are 0x7fffffff), each word is written once, and a reader polls until none is the pattern.
  // (with the table, a before the block is warp 0's entry, after the barrier)
  const float a_blk = PACKED ? a_blk_packed : a_before_use(t0, use_tab && !kWide ? a_tab[0][q_row][0] : a_blk_raw);
  bool block_reset = false, need_carry = !(PACKED && (smask & 1));
  // (sh_reset read directly: through reset_at the lean packed fp32 forward spilled 40 bytes)
  for (int s = 0; kResets && s < S; ++s) {
    block_reset |= sh_reset[s];
    if (s < w && sh_reset[s]) need_carry = false;
  }
  float carry[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) carry[v] = (!PACKED && chunk == 0 && h0 && active) ? h0[st_b + v] : 0.f;
  if (P.n_chunks > 1) {
    grid_dependency_wait();  // the workspace reset (launched before this kernel) is complete
    const int64_t n = P.n_chunks * P.n_tiles;
    float* aggs = reinterpret_cast<float*>(P.ws);
    float* incl = aggs + align256(n * WARP * VEC * 4) / 4;
    const bool last = chunk == P.n_chunks - 1 || seg_last;
    const int64_t me = chunk * P.n_tiles + tile;
    float agg[VEC], a_end = a_blk;
#pragma unroll
    for (int v = 0; v < VEC; ++v) agg[v] = 0.f;
    const bool publisher = w == S - 1 && !last && !prefixed;  // (pass 3: all published)
    const bool carry_in = !(PACKED && (sh_reset[0] & 2));  // (block-uniform)
    const int64_t group = (flags >> F_GROUP_SHIFT) & 0xff;
    const bool grouped = kGrouped && group > 1;
    if (publisher) {
      // the block's aggregate, published first so successors can look past it while it looks
      // back (with a sequence start in the block, it is an inclusive prefix)
      fold_subchunks<NW, VEC, kUnrollFold>(S, sh_agg, sh_aend, reset_at, a_end, agg);
      if (block_reset) {
        publish<VEC>(&incl[(me * WARP + lane) * VEC], agg);
      } else if (seg_later || grouped) {  // (grouped: the group's later chunks fold chunk 0's)
        publish<VEC>(&aggs[(me * WARP + lane) * VEC], agg);
      }
    }
    if (!writes) return;  // pass 1 of three: the aggregate is out
    // (slot i's chunk starts at i * chunk_len + the shift of this block's chunk from its slot)
    auto a_end_of = [&](int64_t i) {
      return a_at((i + 1) * chunk_len - 1 + (PACKED ? ts - w * NS - chunk * chunk_len : 0));
    };
    if (grouped) {  // (block-uniform)
      if (chunk > 0) {
        auto a_start = [&] { return a_before_use(0, a_before_load(0, false)); };
        auto h0_at = [&](int v) { return h0 && active ? h0[st_b + v] : 0.f; };
        // (the narrow form's carry: through sh_carry_s, or in the wide kernels the dead tables)
        __shared__ float sh_carry_s[kWide ? 1 : WARP][VEC];
        block_group_carry<VEC, kWide, kTabFloats, kWideBatch>(aggs, incl, chunk, tile, P.n_tiles, group, a_blk,
                                                              a_end_of, a_start, h0_at, tab_mem, sh_carry_s, carry);
      }
    } else if (seg_later && active &&
               (kOneLooker ? w == S - 1 && carry_in : need_carry || (publisher && !block_reset))) {
      look_back<VEC, kPreA>(aggs, incl, chunk, tile, P.n_tiles, a_blk, a_end_of, carry, reverse ? -a_m2_raw : a_m2_raw);
    }
    if (publisher && !block_reset) {
      if constexpr (kRefold) {
        a_end = a_blk;
#pragma unroll
        for (int v = 0; v < VEC; ++v) agg[v] = 0.f;
        fold_first(S, a_end, agg);
      }
      const float d = expf(a_end - a_blk);
      float inc[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) inc[v] = fmaf(d, carry[v], agg[v]);
      publish<VEC>(&incl[(me * WARP + lane) * VEC], inc);
    }
    if constexpr (kOneLooker) {
      if (!grouped && seg_later && carry_in && S > 1) hand_carry<VEC>(w == S - 1, S, carry);  // (block-uniform)
    }
  }

  // ---- phase 3: fold the sub-chunks before this warp, replay the steps with the true carry
  if (late_xy) {  // (a third group of copies: issue_steps committed the second empty)
    const int64_t t_first = reverse ? T_ - 1 - ts : ts, dir = reverse ? -1 : 1;
    const T* pxo = row_at(P.xo, P.sxo, t_first);
    const T* pyo = row_at(P.yo, P.syo, t_first);
    issue_xy_async<T, VEC, NS>(xos, yos, pxo, pyo, P.sxo, P.syo, dir, active, nst);
    staged_commit();
  }
  if constexpr (kStaged2) staged_wait();  // x and out landed (before any exit: none left in flight)
  if ((PACKED ? nst == 0 : ts >= T_) || (!BWD && !active)) return;  // the backward keeps idle lanes for the dA sums
  {
    float ap = a_blk;
    fold_first(w, ap, carry);
  }
  // A final state's scale: exp(A[t] - A[t-1]) at its last step tau for dh0 (backward), else 1
  auto final_scale = [&](int64_t tau) -> float {
    if (kFwdPacked || !(flags & F_SCALE_HT)) return 1.f;
    const int64_t t = reverse ? T_ - 1 - tau : tau;
    const float prev = t > 0 ? Ab[(t - 1) * P.sA[1]] : 0.f;
    return active ? expf(Ab[t * P.sA[1]] - prev) : 0.f;
  };
  float dpart[NS];  // backward: this lane's share of dA at each step
  T* po = ob + (reverse ? T_ - 1 - ts : ts) * P.so[1];
  const int64_t dout = reverse ? -P.so[1] : P.so[1];
  // (an end matters only with a final state; the forward's idle lanes have left)
  if (kFwdPacked && (smask | (hT ? emask : 0u))) {
    packed_steps_rolled<T, VEC>(xs, nst, smask, a_prev, decay_at, start_at, [&](int i, const float (&c)[VEC]) {
      store_packet<T, VEC>(po, P.so[3], c);
      po += dout;
      if (hT && (emask >> i & 1)) {
        const int64_t k = ls.seq_row(sh_seq[w][i]);
        ls.write(k, ls.state_off(k), c, 1.f);
      }
    }, carry);
    return;
  }
  // The packed forward takes its decays again, so dec[] holds no register across phase 2 (v32:
  // the fp32 kernel with states spilled without it), its two sources in two loops (decay_at,
  // tested per step, spilled).
  if constexpr (kFwdPacked) {
    if (use_tab) {
#pragma unroll
      for (int i = 0; i < NS; ++i) dec[i] = d_tab[w][q_row][i];
    } else {
      float al = a_prev;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        const int64_t tau = ts + i;
        dec[i] = step_decay(i, ldg_if(&Ab[(reverse ? T_ - 1 - tau : tau) * P.sA[1]], active && i < nst), al);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    dpart[i] = 0.f;
    const int64_t tau = ts + i;
    if (i >= nst) break;  // warp-uniform
    // gin: this step's input as dA sees it (g, plus the final state's gradient where it joins)
    float gin[VEC];
    unpack(xs[i * WARP], gin);
    if (kBits && (smask >> i & 1)) {  // a sequence starts: its state restarts from its initial state
      float st[VEC];
      ls.start(sh_seq[w][i], dec[i], st);
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        carry[v] = st[v] + gin[v];
        if (undecayed) gin[v] += st[v];
      }
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) carry[v] = fmaf(dec[i], carry[v], gin[v]);
      if (BWD && !PACKED && undecayed && tau == 0 && h0 && active) {  // the carry held it already
#pragma unroll
        for (int v = 0; v < VEC; ++v) gin[v] += h0[st_b + v];
      }
    }
    if (active) store_packet<T, VEC>(kStepPtr ? po : ob + (reverse ? T_ - 1 - tau : tau) * P.so[1], P.so[3], carry);
    po += dout;
    // a packed sequence's last step writes its final state (the forward's: in its rolled loop)
    if (kBits && hT && (emask >> i & 1)) {
      const int64_t k = ls.seq_row(sh_seq[w][i]);
      ls.write(k, ls.state_off(k), carry, final_scale(tau));
    }
    if constexpr (BWD) {
      float px[VEC], py[VEC];
      unpack(xos[i * WARP], px);
      unpack(yos[i * WARP], py);
      float part = 0.f;
#pragma unroll
      for (int v = 0; v < VEC; ++v) part += gin[v] * py[v] - px[v] * carry[v];
      dpart[i] = active ? part : 0.f;
    }
  }
  // unpacked: the warp holding step T - 1 writes the final state (the carry after its last step)
  if (!PACKED && hT && ts + NS >= T_) ls.write(0, st_b, carry, final_scale(T_ - 1));
  if constexpr (BWD) {
    // the shares go through this warp's staged rows, free now (reduce_dA syncs the warp first),
    // or a small array where those rows are too small
    float* red;
    if constexpr (sizeof(Packet<T, VEC>) >= sizeof(float)) {
      red = reinterpret_cast<float*>(xs - lane);
    } else {
      __shared__ float sh_red[NW][NS * WARP];
      red = sh_red[w];
    }
    reduce_dA<NS>(P, dpart, red, tile, ts, seg_end, CV, rows);
  }
}
}  // namespace nanossm
