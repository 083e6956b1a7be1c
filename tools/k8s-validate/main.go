// Command k8s-validate checks a stream of Kubernetes manifests (such as
// `helm template` output) without a cluster.
//
// Every document is decoded strictly into its published Go type, chosen by
// apiVersion and kind: unknown or duplicate fields, wrong value types and
// unknown kinds fail. Custom resources use their projects' own API modules
// (Prometheus Operator, Gateway API, Gateway API Inference Extension). A
// ConfigMap value that is itself a typed document (apiVersion + kind, such as
// the endpoint picker's EndpointPickerConfig) is decoded strictly too.
// Cross-object checks then catch what only a running cluster would reveal:
// selectors that match no pod, named ports and volumes that do not exist,
// $(VAR) references to undefined variables, duplicate objects.
//
// Usage:
//
//	helm template ... | k8s-validate [-name LABEL] [-extract SELECTOR=KEY -extract-dir DIR] [FILE...]
//
// -extract writes data[KEY] of every ConfigMap whose labels match SELECTOR
// to DIR/<configmap name>.yaml, so that other tools can check embedded
// configs (scripts/check-chart.sh runs `otelcol validate` on the collectors').
//
// It prints one line per problem and exits 1 if there is any, 2 on a usage or
// I/O error.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	label := flag.String("name", "", "label for messages (default: the file name or stdin)")
	extract := flag.String("extract", "", "SELECTOR=KEY: write data[KEY] of the ConfigMaps matching the label selector")
	extractDir := flag.String("extract-dir", "", "directory for -extract")
	flag.Parse()
	var ex *extraction
	if *extract != "" {
		var err error
		if ex, err = parseExtraction(*extract, *extractDir); err != nil {
			fmt.Fprintf(os.Stderr, "k8s-validate: %v\n", err)
			os.Exit(2)
		}
	}

	inputs := flag.Args()
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	var problems []string
	objects := 0
	for _, path := range inputs {
		name := path
		if *label != "" {
			name = *label
		} else if path == "-" {
			name = "stdin"
		}
		n, found, err := validateInput(path, name, ex)
		if err != nil {
			fmt.Fprintf(os.Stderr, "k8s-validate: %v\n", err)
			os.Exit(2)
		}
		objects += n
		problems = append(problems, found...)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "k8s-validate: %d problem(s) in %d object(s)\n", len(problems), objects)
		os.Exit(1)
	}
	if objects == 0 {
		fmt.Fprintln(os.Stderr, "k8s-validate: no objects in the input")
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "k8s-validate: %d object(s) OK\n", objects)
}

// validateInput validates one file ("-" is stdin) and returns the number of
// objects and the problems found, each prefixed with name.
func validateInput(path, name string, ex *extraction) (int, []string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return 0, nil, err
		}
		defer f.Close()
		r = f
	}
	docs, err := splitDocuments(bufio.NewReader(r))
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", name, err)
	}
	v := newValidator()
	var problems []string
	for _, d := range docs {
		if err := v.add(d); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s: %v", name, d.where(), err))
		}
	}
	for _, p := range v.crossChecks() {
		problems = append(problems, fmt.Sprintf("%s: %s", name, p))
	}
	if ex != nil {
		if err := ex.write(v.objects); err != nil {
			return 0, nil, err
		}
	}
	return len(v.objects), problems, nil
}
