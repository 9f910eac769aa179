// Command kustomize-build renders a kustomization directory to stdout exactly
// as `kustomize build DIR` does (same library, krusty, with its default
// options), so that the suite can check deploy/k8s offline without a kustomize
// or kubectl binary. Usage: kustomize-build DIR
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kustomize-build KUSTOMIZATION_DIR")
		os.Exit(2)
	}
	// The options of `kustomize build DIR` without flags: the library's
	// defaults, except the order, which the CLI leaves unspecified so that a
	// kustomization's sortOptions decide it and, without them, the legacy
	// order applies (namespaces and ConfigMaps first, ...).
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	k := krusty.MakeKustomizer(opts)
	resMap, err := k.Run(filesys.MakeFsOnDisk(), os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kustomize-build:", err)
		os.Exit(1)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kustomize-build:", err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintln(os.Stderr, "kustomize-build:", err)
		os.Exit(1)
	}
}
