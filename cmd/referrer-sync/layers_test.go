package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/referrer-sync/referrer-sync"

type goPackage struct {
	ImportPath string
	Imports    []string
}

// domainForbidden are standard packages the domain must not use: it does
// no I/O and depends on no context.
var domainForbidden = []string{"context", "os", "os/exec", "net", "net/http", "log", "log/slog", "io/fs", "syscall", "database/sql", "math/rand", "math/rand/v2"}

// layerViolations checks the hexagon's dependency rule:
// domain ← ports ← app ← adapters ← cmd. Inner layers never import outer
// ones; domain, ports and app import nothing outside the standard library
// but their inner layers; the domain does no I/O.
func layerViolations(pkgs []goPackage) []string {
	layer := func(path string) string {
		rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
		top, _, _ := strings.Cut(rel, "/")
		return top
	}
	rank := map[string]int{"domain": 0, "ports": 1, "app": 2, "adapters": 3, "cmd": 4}
	var out []string
	for _, p := range pkgs {
		from := layer(p.ImportPath)
		fromRank, ok := rank[from]
		if !ok {
			out = append(out, fmt.Sprintf("%s is outside the layers domain, ports, app, adapters, cmd", p.ImportPath))
			continue
		}
		for _, imp := range p.Imports {
			internal := strings.HasPrefix(imp, module+"/")
			stdlib := !strings.Contains(strings.Split(imp, "/")[0], ".")
			switch {
			case internal:
				if to := layer(imp); rank[to] > fromRank || (to == "cmd" && from != "cmd") {
					out = append(out, fmt.Sprintf("%s (%s) imports %s (%s): inner layers must not import outer ones", p.ImportPath, from, imp, to))
				}
			case stdlib:
				if from == "domain" && slices.Contains(domainForbidden, imp) {
					out = append(out, fmt.Sprintf("%s imports %s: the domain does no I/O", p.ImportPath, imp))
				}
			default:
				if fromRank < rank["adapters"] {
					out = append(out, fmt.Sprintf("%s (%s) imports third-party %s: only adapters and cmd may", p.ImportPath, from, imp))
				}
			}
		}
	}
	return out
}

func TestLayerViolations(t *testing.T) {
	tests := []struct {
		name string
		pkg  goPackage
		want int
	}{
		{"domain stdlib", goPackage{module + "/domain", []string{"time", "encoding/json"}}, 0},
		{"domain does io", goPackage{module + "/domain", []string{"os"}}, 1},
		{"domain imports ports", goPackage{module + "/domain", []string{module + "/ports"}}, 1},
		{"ports imports domain", goPackage{module + "/ports", []string{module + "/domain", "context"}}, 0},
		{"ports imports third party", goPackage{module + "/ports", []string{"github.com/nats-io/nats.go"}}, 1},
		{"app imports adapter", goPackage{module + "/app", []string{module + "/adapters/ledger"}}, 1},
		{"app imports domain and ports", goPackage{module + "/app", []string{module + "/domain", module + "/ports", "log/slog"}}, 0},
		{"adapter imports app and nats", goPackage{module + "/adapters/consumer", []string{module + "/app", "github.com/nats-io/nats.go"}}, 0},
		{"adapter imports cmd", goPackage{module + "/adapters/consumer", []string{module + "/cmd/referrer-sync"}}, 1},
		{"stray package", goPackage{module + "/internal/x", nil}, 1},
		{"the command imports its own tooling package", goPackage{module + "/cmd/referrer-sync", []string{module + "/cmd/referrer-sync/bench"}}, 0},
		{"domain imports cmd", goPackage{module + "/domain", []string{module + "/cmd/referrer-sync/bench"}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := layerViolations([]goPackage{tt.pkg})
			if len(got) != tt.want {
				t.Errorf("got %d violations %q, want %d", len(got), got, tt.want)
			}
		})
	}
}

// TestDependencyRule applies the rule to the module's real packages.
func TestDependencyRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 8 {
		t.Fatalf("go list found %d packages; the rule would check nothing", len(pkgs))
	}
	for _, v := range layerViolations(pkgs) {
		t.Error(v)
	}
}
