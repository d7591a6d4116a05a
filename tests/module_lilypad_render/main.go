// Reference renderer: a module template rendered the way Lilypad's LoadModule renders it
// (pkg/module/utils.go): text/template with the `subst` helper, every input
// json.Marshal-ed, executed on a map[string]string. Used by tests/module_lilypad_diff.rs
// to compare detwasm's renderer with Go's, byte for byte, when `go` is installed.
//
// Usage: go run main.go TEMPLATE_FILE [KEY=VALUE ...]
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// subst as Lilypad defines it: printf over JSON-decoded string inputs.
func subst(format string, jsonEncodedInputs ...string) string {
	decoded := make([]interface{}, 0, len(jsonEncodedInputs))
	for _, input := range jsonEncodedInputs {
		var s string
		if err := json.Unmarshal([]byte(input), &s); err != nil {
			panic("subst: invalid input")
		}
		decoded = append(decoded, s)
	}
	return fmt.Sprintf(format, decoded...)
}

func main() {
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tmpl, err := template.New("t").Funcs(template.FuncMap{"subst": subst}).Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	inputs := map[string]string{}
	for _, kv := range os.Args[2:] {
		parts := strings.SplitN(kv, "=", 2)
		bs, err := json.Marshal(parts[1])
		if err != nil {
			panic(err)
		}
		inputs[parts[0]] = string(bs)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, inputs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out.Bytes())
}
