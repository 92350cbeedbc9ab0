//go:build cuda

package main

// The CUDA flavour (libnanossm.so) links the CUDA backend; without the tag the build is the
// CPU-only flavour (libnanossm_cpu.so), which loads where no driver exists.
import _ "github.com/nanossm/nanossm/core/cuda"
