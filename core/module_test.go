package core

import (
	"bytes"
	"os"
	"testing"
)

// Every kernel the dispatch table and the helpers name is in the committed module: its ELF
// string tables hold each entry point's name, NUL-terminated. (On a GPU the backend resolves them
// all when it loads the module; this catches a table row without its kernel on a machine with
// none.)
func TestModuleHasEveryKernel(t *testing.T) {
	module, err := os.ReadFile("../kernels/scan.fatbin")
	if err != nil {
		t.Fatal(err)
	}
	names := ScanKernelNames()
	if len(names) < 40 {
		t.Fatalf("%d kernel names", len(names))
	}
	for _, name := range names {
		if !bytes.Contains(module, []byte("\x00"+name+"\x00")) && !bytes.Contains(module, []byte("."+name+"\x00")) {
			t.Errorf("%s: not in kernels/scan.fatbin", name)
		}
	}
	if bytes.Contains(module, []byte("\x00nanossm_scan_fwd_packed_nostate_f32_v2\x00")) {
		t.Fatal("the search finds a name the module does not have")
	}
}
