package main

/*
#include <stdlib.h>
#include <string.h>
#include "nanossm.h"
const char* nanossm_last_error(void);
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// abiBytes is the size of the raw argument block callABIBytes reads: the three tensor
// descriptors, then the options struct.
const abiBytes = 3*C.sizeof_nanossm_tensor + C.sizeof_nanossm_scan_options

// cBlock copies raw (cut or zero-padded to size bytes) into C memory, which the caller frees:
// no Go pointer reaches the library.
func cBlock(raw []byte, size int) unsafe.Pointer {
	block := C.calloc(1, C.size_t(size))
	if len(raw) > size {
		raw = raw[:size]
	}
	if len(raw) > 0 {
		C.memcpy(block, unsafe.Pointer(&raw[0]), C.size_t(len(raw)))
	}
	return block
}

// callABIBytes runs nanossm_scan_workspace_size and nanossm_scan on arguments whose bytes are
// given raw, as a foreign caller could lay them out (the fuzz test's entry): the block is copied
// into C memory, so no Go pointer reaches the library. withOptions false passes options = NULL.
// It returns both statuses and the last error message.
// (The message is kept per OS thread, as a C caller's thread stays its own; a goroutine can move
// to another thread between two cgo calls, and then read another thread's message, or none: the
// goroutine stays on its thread for the call and the read.)
func callABIBytes(raw []byte, withOptions bool, device int32) (wsStatus, status int32, msg string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	block := cBlock(raw, abiBytes)
	defer C.free(block)
	t := (*[3]C.nanossm_tensor)(block)
	var opts *C.nanossm_scan_options
	if withOptions {
		opts = (*C.nanossm_scan_options)(unsafe.Add(block, 3*C.sizeof_nanossm_tensor))
	}
	bytes := (*C.int64_t)(C.malloc(8))
	defer C.free(unsafe.Pointer(bytes))
	wsStatus = int32(nanossm_scan_workspace_size(&t[0], &t[1], &t[2], opts, C.int32_t(device), bytes))
	status = int32(nanossm_scan(&t[0], &t[1], &t[2], opts, C.int32_t(device), nil))
	return wsStatus, status, C.GoString(C.nanossm_last_error())
}

// backwardBytes is the size of the raw argument block of callBackwardABIBytes: six tensor
// descriptors (A, x, out, grad_out, grad_x, grad_A), then the backward options.
const backwardBytes = 6*C.sizeof_nanossm_tensor + C.sizeof_nanossm_backward_options

// callBackwardABIBytes is callABIBytes for nanossm_scan_backward(_workspace_size).
func callBackwardABIBytes(raw []byte, withOptions bool, device int32) (wsStatus, status int32, msg string) {
	runtime.LockOSThread() // (see callABIBytes)
	defer runtime.UnlockOSThread()
	block := cBlock(raw, backwardBytes)
	defer C.free(block)
	t := (*[6]C.nanossm_tensor)(block)
	var opts *C.nanossm_backward_options
	if withOptions {
		opts = (*C.nanossm_backward_options)(unsafe.Add(block, 6*C.sizeof_nanossm_tensor))
	}
	bytes := (*C.int64_t)(C.malloc(8))
	defer C.free(unsafe.Pointer(bytes))
	wsStatus = int32(nanossm_scan_backward_workspace_size(&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], opts, C.int32_t(device), bytes))
	status = int32(nanossm_scan_backward(&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], opts, C.int32_t(device), nil))
	return wsStatus, status, C.GoString(C.nanossm_last_error())
}

// workspaceSizeCalls calls nanossm_scan_workspace_size (backward false) or
// nanossm_scan_backward_workspace_size n times on one argument block: the host cost of the C
// ABI's conversion, validation and planning, for the benchmarks. It returns the last status.
func workspaceSizeCalls(raw []byte, backward bool, device int32, n int) int32 {
	size := abiBytes
	if backward {
		size = backwardBytes
	}
	block := cBlock(raw, size)
	defer C.free(block)
	bytes := (*C.int64_t)(C.malloc(8))
	defer C.free(unsafe.Pointer(bytes))
	var st C.int32_t
	if backward {
		t := (*[6]C.nanossm_tensor)(block)
		opts := (*C.nanossm_backward_options)(unsafe.Add(block, 6*C.sizeof_nanossm_tensor))
		for i := 0; i < n; i++ {
			st = nanossm_scan_backward_workspace_size(&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], opts, C.int32_t(device), bytes)
		}
		return int32(st)
	}
	t := (*[3]C.nanossm_tensor)(block)
	opts := (*C.nanossm_scan_options)(unsafe.Add(block, 3*C.sizeof_nanossm_tensor))
	for i := 0; i < n; i++ {
		st = nanossm_scan_workspace_size(&t[0], &t[1], &t[2], opts, C.int32_t(device), bytes)
	}
	return int32(st)
}
