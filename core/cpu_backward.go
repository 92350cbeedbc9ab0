package core

import (
	"math"
	"runtime"
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
	fwdRev := a.Reverse
	var cu []int64
	if a.CuSeqlens.Present() {
		cu = seqlens(a.CuSeqlens)
	}
	unit := gs[3] == 1 && xs[3] == 1 && ys[3] == 1 && dxs[3] == 1
	A := func(b, r, t int64) float64 { return av(b*as[0] + t*as[1] + r*as[2]) }
	dAi := func(b, r, t int64) int64 { return b*das[0] + t*das[1] + r*das[2] }
	parallelSegments(p.B, p.R, p.C, func(b, r0, r1 int64, h, _ []float64) {
		row := func(r int64) []float64 { return h[(r-r0)*p.C : (r-r0+1)*p.C] }
		// one sequence [s, e) with state row k: dx runs against the forward's direction
		eachSequence(cu, p.T, b, func(s, e, k int64) {
			for r := r0; r < r1; r++ {
				loadState(row(r), gT, (k*p.R+r)*p.C)
			}
			for step := int64(0); step < e-s; step++ {
				t, prev := e-1-step, e-step // the backward of a forward scan starts at the end
				if fwdRev {
					t, prev = s+step, s+step-1
				}
				for r := r0; r < r1; r++ {
					hr, d := row(r), 1.0
					if step > 0 {
						ex := A(b, r, prev) - A(b, r, t)
						if fwdRev {
							ex = -ex
						}
						d = math.Exp(ex)
					}
					var gTr []F // the final state's gradient joins g at the first step
					if step == 0 && gT != nil {
						gTr = gT[(k*p.R+r)*p.C : (k*p.R+r+1)*p.C]
					}
					gb, xb, yb, db := b*gs[0]+t*gs[1]+r*gs[2], b*xs[0]+t*xs[1]+r*xs[2], b*ys[0]+t*ys[1]+r*ys[2], b*dxs[0]+t*dxs[1]+r*dxs[2]
					var sum float64
					if unit {
						sum = backwardStep(hr, g[gb:gb+p.C], x[xb:xb+p.C], y[yb:yb+p.C], dx[db:db+p.C], gTr, d)
					} else {
						for c := int64(0); c < p.C; c++ {
							gv := float64(g[gb+c*gs[3]])
							v := float64(hr[c]*d) + gv
							hr[c], dx[db+c*dxs[3]] = v, F(v)
							if gTr != nil {
								gv += float64(gTr[c])
							}
							sum += gv*float64(y[yb+c*ys[3]]) - float64(x[xb+c*xs[3]])*v
						}
					}
					if fwdRev {
						sum = -sum
					}
					dAset(dAi(b, r, t), sum)
				}
			}
			if fwdRev || (dh0 == nil && (h0 == nil || cu == nil)) {
				return
			}
			for r := r0; r < r1; r++ {
				// dh0 = exp(A[s] - A[s-1]) * dx[s]; an empty sequence passes its final state's gradient
				base := (k*p.R + r) * p.C
				scale, prevA := 0.0, 0.0
				if s > 0 {
					prevA = A(b, r, s-1)
				}
				if e > s {
					scale = math.Exp(A(b, r, s) - prevA)
				}
				cross := 0.0
				for c, hv := range row(r) {
					v := scale * hv
					if e == s && gT != nil {
						v = float64(gT[base+int64(c)])
					}
					if dh0 != nil {
						dh0[base+int64(c)] = F(v)
					}
					if h0 != nil {
						cross += float64(h0[base+int64(c)]) * v
					}
				}
				if cu != nil && h0 != nil && s > 0 && e > s { // A[s-1] also decays this h0
					dAset(dAi(b, r, s-1), dAget(dAi(b, r, s-1))-cross)
				}
			}
		})
	})
	runtime.KeepAlive(a)
	return nil
}

// backwardStep is one step of a row of unit-stride channels: h = d*h + g, dx = h, and the
// step's dA term sum_c (g'*y - x*h), g' = g + gT where the final state's gradient joins.
func backwardStep[F float](h []float64, g, x, y, dx, gT []F, d float64) float64 {
	h, x, y, dx = h[:len(g)], x[:len(g)], y[:len(g)], dx[:len(g)]
	sum := 0.0
	for c, gf := range g {
		gv := float64(gf)
		v := float64(h[c]*d) + gv
		h[c], dx[c] = v, F(v)
		if gT != nil {
			gv += float64(gT[c])
		}
		sum += gv*float64(y[c]) - float64(x[c])*v
	}
	return sum
}
