package core

import "slices"

// The backward of the scan (SPEC.md, backward), for a forward without reverse:
//
//	dx[j]  = sum_{t>=j} exp(A[t] - A[j]) * g[t]          (a reverse scan of g = dL/dout)
//	dA[t]  = sum_c (g[t] * out[t] - x[t] * dx[t])        (negated when the forward ran in reverse)
//	dh0    = exp(A[s] - A[s-1]) * dx[s]                  (s: the sequence's first step, A[-1] := 0)
//
// dL/d(final state) joins g at the last step. With packed sequences and initial states, A[s-1]
// (the previous sequence's last step) also decays h0: dA[s-1] -= sum_c h0 * dh0.

var backwardRoles = roles{"grad_out", "grad_x", "grad_final_state", "grad_initial_state"}

// ValidateBackward checks a backward call and returns the problem of its reverse scan.
func ValidateBackward(a *BackwardArgs) (Problem, error) {
	s := a.ReverseScan()
	p, err := validate(&s, backwardRoles, true)
	if err != nil {
		return p, err
	}
	for _, t := range []struct {
		name string
		t    Tensor
	}{{"x", a.X}, {"out", a.Out}} {
		if err := checkTensor(t.name, t.t, "(B,T,R,C)"); err != nil {
			return p, err
		}
		if !slices.Equal(t.t.Shape, a.GradOut.Shape) || t.t.DType != p.DType {
			return p, Invalid(t.name, "expected %v %s like grad_out, got %v %s", p.DType,
				shapeString(a.GradOut.Shape), t.t.DType, shapeString(t.t.Shape))
		}
		if !disjoint(t.t, a.GradX) {
			return p, Invalid("grad_x", "overlaps %s", t.name)
		}
	}
	if err := checkTensor("grad_A", a.GradA, "(B,T,R)"); err != nil {
		return p, err
	}
	if !slices.Equal(a.GradA.Shape, a.A.Shape) || a.GradA.DType != p.ADType {
		return p, Invalid("grad_A", "expected %v %s like A, got %v %s", p.ADType, shapeString(a.A.Shape),
			a.GradA.DType, shapeString(a.GradA.Shape))
	}
	if overlapping(a.GradA) {
		return p, Invalid("grad_A", "strides %s make elements overlap", shapeString(a.GradA.Strides))
	}
	for _, o := range []struct {
		name string
		t    Tensor
	}{{"A", a.A}, {"x", a.X}, {"out", a.Out}, {"grad_out", a.GradOut}, {"grad_x", a.GradX},
		{"grad_final_state", a.GradFinalState}, {"grad_initial_state", a.GradInitialState}} {
		if o.t.Present() && !disjoint(a.GradA, o.t) {
			return p, Invalid("grad_A", "overlaps %s", o.name)
		}
	}
	if a.InitialState.Present() {
		if err := checkState("initial_state", a.InitialState, p); err != nil {
			return p, err
		}
		if a.Reverse {
			return p, Unsupported("initial_state: not defined for reverse scans")
		}
	}
	if a.CuSeqlens.Present() && a.InitialState.Present() && !a.GradInitialState.Present() {
		return p, Invalid("grad_initial_state", "required with packed sequences and an initial_state (dA depends on it)")
	}
	if a.GradInitialState.Present() && a.Reverse {
		return p, Unsupported("grad_initial_state: not defined for reverse scans (they take no initial state)")
	}
	return p, nil
}
