package core

import (
	"math"
	"runtime"

	"gonum.org/v1/gonum/blas/gonum"
)

// The CPU backend's backward (formulas in backward.go): one (b, r) row at a time, the state
// (dx) in float64 like the forward, every gradient written in the I/O dtype.

func (cpuBackend) BackwardWorkspaceSize(*BackwardArgs, Problem) (int64, error) { return 0, nil }

func (cpuBackend) Backward(a *BackwardArgs, p Problem) error {
	return byHostFloat("grad_out", p.DType, func() error { return backwardHost[float32](a, p) },
		func() error { return backwardHost[float64](a, p) })
}

// writeA returns a setter for A-shaped outputs whatever their dtype (float32 or float64).
func writeA(t Tensor) func(i int64, v float64) {
	if t.DType == Float64 {
		s := hostView[float64](t)
		return func(i int64, v float64) { s[i] = v }
	}
	s := hostView[float32](t)
	return func(i int64, v float64) { s[i] = float32(v) }
}

func backwardHost[F float](a *BackwardArgs, p Problem) error {
	g, x, y, dx := hostView[F](a.GradOut), hostView[F](a.X), hostView[F](a.Out), hostView[F](a.GradX)
	av, dAget, dAset := readA(a.A), readA(a.GradA), writeA(a.GradA)
	// state tensors share x's float type on the CPU
	gT, h0, dh0 := optionalView[F](a.GradFinalState), optionalView[F](a.InitialState), optionalView[F](a.GradInitialState)
	as, das := a.A.Strides, a.GradA.Strides
	gs, xs, ys, dxs := a.GradOut.Strides, a.X.Strides, a.Out.Strides, a.GradX.Strides
	n, fwdRev := int(p.C), a.Reverse
	var cu []int64
	if a.CuSeqlens.Present() {
		cu = seqlens(a.CuSeqlens)
	}
	blas := gonum.Implementation{}
	row := func(b, r int64, h []float64) {
		A := func(t int64) float64 { return av(b*as[0] + t*as[1] + r*as[2]) }
		dAi := func(t int64) int64 { return b*das[0] + t*das[1] + r*das[2] }
		// one sequence [s, e) with state row k: dx runs against the forward's direction
		run := func(s, e, k int64) {
			base := (k*p.R + r) * p.C
			loadState(h, gT, base)
			for step := int64(0); step < e-s; step++ {
				t, prev := e-1-step, e-step // the backward of a forward scan starts at the end
				if fwdRev {
					t, prev = s+step, s+step-1
				}
				if step > 0 {
					d := A(prev) - A(t)
					if fwdRev {
						d = -d
					}
					blas.Dscal(n, math.Exp(d), h, 1)
				}
				gb, xb, yb, db := b*gs[0]+t*gs[1]+r*gs[2], b*xs[0]+t*xs[1]+r*xs[2], b*ys[0]+t*ys[1]+r*ys[2], b*dxs[0]+t*dxs[1]+r*dxs[2]
				sum := 0.0
				for c := int64(0); c < p.C; c++ {
					gv := float64(g[gb+c*gs[3]])
					h[c] += gv
					dx[db+c*dxs[3]] = F(h[c])
					if step == 0 && gT != nil { // the final state's gradient joins g here
						gv += float64(gT[base+c])
					}
					sum += gv*float64(y[yb+c*ys[3]]) - float64(x[xb+c*xs[3]])*h[c]
				}
				if fwdRev {
					sum = -sum
				}
				dAset(dAi(t), sum)
			}
			if fwdRev || (dh0 == nil && (h0 == nil || cu == nil)) {
				return
			}
			// dh0 = exp(A[s] - A[s-1]) * dx[s]; an empty sequence passes its final state's gradient
			scale, prevA := 0.0, 0.0
			if s > 0 {
				prevA = A(s - 1)
			}
			if e > s {
				scale = math.Exp(A(s) - prevA)
			}
			cross := 0.0
			for c := int64(0); c < p.C; c++ {
				v := scale * h[c]
				if e == s && gT != nil {
					v = float64(gT[base+c])
				}
				if dh0 != nil {
					dh0[base+c] = F(v)
				}
				if h0 != nil {
					cross += float64(h0[base+c]) * v
				}
			}
			if cu != nil && h0 != nil && s > 0 && e > s { // A[s-1] also decays this h0
				dAset(dAi(s-1), dAget(dAi(s-1))-cross)
			}
		}
		eachSequence(cu, p.T, b, run)
	}
	parallelRows(p.B*p.R, n, func(i int64, h []float64) { row(i/p.R, i%p.R, h) })
	runtime.KeepAlive(a)
	return nil
}
