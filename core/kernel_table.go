package core

import "fmt"

// The one dispatch table of the scan kernels (kernels/scan.cu) and the names of the helper
// kernels; core/plan.go picks a row for each call.

// kernelKey is one row of the dispatch table: element type x variant x vector width x form (a
// kernel of its own for carries by groups or the backward's late copies, else plain), whether
// the call has no initial and no final state (nostate: the packed forward's and backward's lean
// kernels), and whether the kernel stages long chunks (long: longSteps steps per thread).
type kernelKey struct {
	dtype   DType
	variant Variant
	vec     int64
	form    kernelForm
	nostate bool
	long    bool
}

// kernelForm is a form of a scan kernel that has kernels of its own: how it finds its carry
// (grouped) or when it copies the backward's x and out (late).
type kernelForm int

const (
	formPlain   kernelForm = iota
	formGrouped            // carries by groups of chunks (groupChunks, fewTileGroup)
	formLate               // the backward's copies of x and out after the carry (lateXY)
)

// scanKernels is the one dispatch table of the scan kernels: (dtype, variant, width, form,
// nostate) -> kernel, nanossm_scan_<variant>_<dtype>_v<width> as NANOSSM_ALL in kernels/scan.cu
// defines them (the grouped and late forms: _grouped_ and _late_ after the variant). The width is
// 16-byte packets when the layout allows, else 1 channel.
// The plain forward also has 8-byte packets for 16-bit types (4 channels per lane,
// NANOSSM_FWD16_V4 in kernels/scan.cu; see forwardPacketBytes).
var scanKernels = func() map[kernelKey]string {
	variants := map[Variant]string{Forward: "fwd", ForwardPacked: "fwd_packed", Backward: "bwd", BackwardPacked: "bwd_packed"}
	dtypes := map[DType]string{Float32: "f32", Float16: "f16", BFloat16: "bf16"}
	t := map[kernelKey]string{}
	for v, vn := range variants {
		for d, dn := range dtypes {
			widths := []int64{1, 16 / d.Size()}
			if d.Size() == 2 && v == Forward {
				widths = append(widths, 8/d.Size())
			}
			for _, w := range widths {
				t[kernelKey{d, v, w, formPlain, false, false}] = fmt.Sprintf("nanossm_scan_%s_%s_v%d", vn, dn, w)
				if v.packed() {
					t[kernelKey{d, v, w, formPlain, true, false}] = fmt.Sprintf("nanossm_scan_%s_nostate_%s_v%d", vn, dn, w)
				}
			}
		}
	}
	// The fp32 forward with carries by groups has a kernel of its own: compiled into the plain
	// one, the grouped path cost the plans that do not group 1-3%. (The 16-bit forward over
	// 8-channel lanes has it in its plain kernel; see groupChunks.)
	t[kernelKey{Float32, Forward, 4, formGrouped, false, false}] = "nanossm_scan_fwd_grouped_f32_v4"
	// So have the 16-bit forward's 4-channel lanes: the few-tile plans (1,262144,4,32 takes them),
	// also over long chunks (longChunks).
	t[kernelKey{Float16, Forward, 4, formGrouped, false, false}] = "nanossm_scan_fwd_grouped_f16_v4"
	t[kernelKey{BFloat16, Forward, 4, formGrouped, false, false}] = "nanossm_scan_fwd_grouped_bf16_v4"
	t[kernelKey{Float16, Forward, 4, formGrouped, false, true}] = "nanossm_scan_fwd_grouped_long_f16_v4"
	t[kernelKey{BFloat16, Forward, 4, formGrouped, false, true}] = "nanossm_scan_fwd_grouped_long_bf16_v4"
	// The 16-bit forward over 8-channel lanes over long chunks: its plain kernel (group carry
	// in it) at longForwardSteps8.
	t[kernelKey{Float16, Forward, 8, formPlain, false, true}] = "nanossm_scan_fwd_long_f16_v8"
	t[kernelKey{BFloat16, Forward, 8, formPlain, false, true}] = "nanossm_scan_fwd_long_bf16_v8"
	// So has the packed forward's, with and without states (v82).
	for d, dn := range map[DType]string{Float16: "f16", BFloat16: "bf16"} {
		t[kernelKey{d, ForwardPacked, 8, formPlain, false, true}] = "nanossm_scan_fwd_packed_long_" + dn + "_v8"
		t[kernelKey{d, ForwardPacked, 8, formPlain, true, true}] = "nanossm_scan_fwd_packed_nostate_long_" + dn + "_v8"
	}
	// The plain backward over packets with carries by groups (v35; groupChunks).
	t[kernelKey{Float32, Backward, 4, formGrouped, false, false}] = "nanossm_scan_bwd_grouped_f32_v4"
	t[kernelKey{Float16, Backward, 8, formGrouped, false, false}] = "nanossm_scan_bwd_grouped_f16_v8"
	t[kernelKey{BFloat16, Backward, 8, formGrouped, false, false}] = "nanossm_scan_bwd_grouped_bf16_v8"
	// The plain backward over packets with its late copies of x and out (v73; lateXY), the fp32
	// one also over long chunks (longChunks).
	t[kernelKey{Float32, Backward, 4, formLate, false, false}] = "nanossm_scan_bwd_late_f32_v4"
	t[kernelKey{Float16, Backward, 8, formLate, false, false}] = "nanossm_scan_bwd_late_f16_v8"
	t[kernelKey{BFloat16, Backward, 8, formLate, false, false}] = "nanossm_scan_bwd_late_bf16_v8"
	t[kernelKey{Float32, Backward, 4, formLate, false, true}] = "nanossm_scan_bwd_late_long_f32_v4"
	return t
}()

// Helper kernels of the backward (kernels/scan.cu).
const (
	KernelDAReduce = "nanossm_dA_reduce"  // sums dA's partial sums when K > 1 tiles share a row
	KernelDAH0Term = "nanossm_dA_h0_term" // packed sequences with h0: dA[s-1] -= sum_c h0 * dh0
	KernelWSReset  = "nanossm_ws_reset"   // the look-back workspace's reset (Device.EarlyLaunch)
)

// prefixKernels is pass 2 of three by the floats per lane of a chunk aggregate (the packet width).
var prefixKernels = map[int64]string{1: "nanossm_chunk_prefix_v1", 4: "nanossm_chunk_prefix_v4", 8: "nanossm_chunk_prefix_v8"}

// ScanKernelNames lists every kernel of the table and the helpers (the CUDA backend resolves
// them at load).
func ScanKernelNames() []string {
	names := []string{KernelDAReduce, KernelDAH0Term, KernelWSReset}
	for _, n := range prefixKernels {
		names = append(names, n)
	}
	for _, n := range scanKernels {
		names = append(names, n)
	}
	return names
}
