// Package kernels embeds the compiled CUDA module (scan.fatbin, built from scan.cu by
// `make kernels`; committed so that a checkout builds without nvcc).
package kernels

import _ "embed"

// Fatbin holds sm_80 and sm_90 machine code and compute_90 PTX for every kernel in scan.cu.
//
//go:embed scan.fatbin
var Fatbin []byte
