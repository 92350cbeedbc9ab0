package main

import "testing"

// The Go side of a small call's host time: descriptor conversion, validation, planning and the
// status, which every nanossm_scan and nanossm_scan_backward pays before it launches anything.
// Programs, not tests: nothing passes or fails on time (make bench-go runs them).

func benchWorkspaceSize(b *testing.B, raw []byte, backward bool) {
	if st := workspaceSizeCalls(raw, backward, -1, 1); st != 0 {
		b.Fatalf("status %d", st)
	}
	b.ReportAllocs()
	b.ResetTimer()
	workspaceSizeCalls(raw, backward, -1, b.N)
}

func BenchmarkWorkspaceSize(b *testing.B) { benchWorkspaceSize(b, good().bytes(), false) }

func BenchmarkBackwardWorkspaceSize(b *testing.B) { benchWorkspaceSize(b, goodBackward(), true) }
