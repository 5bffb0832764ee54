package main

// Offline checks of deployments/: the files parse, agree with each other and
// with the service (config contract, probe paths, port, metric names), since
// nothing there can be built or started by the test suite (no Docker).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/referrer-sync/referrer-sync/adapters/config"
	"github.com/referrer-sync/referrer-sync/adapters/consumer"
	"github.com/referrer-sync/referrer-sync/adapters/intercom/emulator"
	"github.com/referrer-sync/referrer-sync/app"
	"github.com/referrer-sync/referrer-sync/domain"
)

// deploymentsDir is deployments/ as seen from this package's directory,
// where go test runs.
var deploymentsDir = filepath.Join("..", "..", "deployments")

func deployPath(rel string) string { return filepath.Join(deploymentsDir, filepath.FromSlash(rel)) }

func readDeployFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(deployPath(rel))
	if err != nil {
		t.Fatalf("deployments/%s: %v", rel, err)
	}
	return b
}

// yamlDocs decodes every document of a (multi-document) YAML file.
func yamlDocs(b []byte) ([]map[string]any, error) {
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func loadDeployYAML(t *testing.T, rel string) map[string]any {
	t.Helper()
	docs, err := yamlDocs(readDeployFile(t, rel))
	if err != nil {
		t.Fatalf("deployments/%s: %v", rel, err)
	}
	if len(docs) != 1 {
		t.Fatalf("deployments/%s: %d YAML documents, want 1", rel, len(docs))
	}
	return docs[0]
}

// yAt walks maps (string keys) and lists (decimal indexes); nil when absent.
func yAt(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func yStr(v any, path ...string) string {
	s, _ := yAt(v, path...).(string)
	return s
}

func yList(v any, path ...string) []any {
	l, _ := yAt(v, path...).([]any)
	return l
}

func yStrs(v any, path ...string) []string {
	var out []string
	for _, x := range yList(v, path...) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func yNum(v any, path ...string) (int, bool) {
	switch x := yAt(v, path...).(type) {
	case int:
		return x, true
	case string:
		n, err := strconv.Atoi(x)
		return n, err == nil
	}
	return 0, false
}

func hostPortNum(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%q: port: %v", hostport, err)
	}
	return n
}

// argAfter returns the value after flag in an argument list ("--f v" or "--f=v").
func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// TestDeploymentFilesParse parses every YAML and JSON file under
// deployments/ (every document of multi-document files) and checks that the
// files the stack is made of are all there.
func TestDeploymentFilesParse(t *testing.T) {
	var found []string
	err := filepath.WalkDir(deploymentsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(deploymentsDir, p)
		found = append(found, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	parsed := 0
	for _, rel := range found {
		switch filepath.Ext(rel) {
		case ".yaml", ".yml":
			t.Run(rel, func(t *testing.T) {
				docs, err := yamlDocs(readDeployFile(t, rel))
				if err != nil {
					t.Fatalf("does not parse: %v", err)
				}
				if len(docs) == 0 {
					t.Fatal("no YAML document")
				}
			})
			parsed++
		case ".json":
			t.Run(rel, func(t *testing.T) {
				var v map[string]any
				if err := json.Unmarshal(readDeployFile(t, rel), &v); err != nil {
					t.Fatalf("does not parse: %v", err)
				}
			})
			parsed++
		}
	}
	for _, want := range []string{
		"Dockerfile", "compose.yaml", "compose.cluster.yaml",
		"compose/referrer-sync.yaml", "compose/referrer-sync.cluster.yaml",
		"prometheus/prometheus.yml", "prometheus/alerts.yml",
		"grafana/provisioning/datasources/prometheus.yml", "grafana/provisioning/dashboards/referrer-sync.yml",
		"grafana/dashboards/referrer-sync.json",
		"k8s/kustomization.yaml", "k8s/deployment.yaml", "k8s/configmap.yaml", "k8s/service.yaml",
		"k8s/pdb.yaml", "k8s/servicemonitor.yaml", "k8s/prometheusrule.yaml",
	} {
		if !slices.Contains(found, want) {
			t.Errorf("deployments/%s is missing", want)
		}
	}
	if slices.Contains(found, "README.md") {
		t.Error("deployments/README.md exists: the top-level README is the only document")
	}
	if parsed < 15 {
		t.Errorf("parsed %d YAML/JSON files, want at least 15", parsed)
	}
}

// composeFile merges compose files the way `docker compose -f a -f b` does
// for the keys these tests read: services and volumes merge by name, a
// service's mappings merge, its command is replaced and its volumes merge by
// target path.
func composeFile(t *testing.T, rels ...string) map[string]any {
	t.Helper()
	out := map[string]any{"services": map[string]any{}, "volumes": map[string]any{}}
	for _, rel := range rels {
		doc := loadDeployYAML(t, rel)
		for _, top := range []string{"services", "volumes"} {
			dst := out[top].(map[string]any)
			src, _ := doc[top].(map[string]any)
			for name, v := range src {
				old, ok := dst[name].(map[string]any)
				nv, _ := v.(map[string]any)
				if !ok || top == "volumes" {
					dst[name] = v
					continue
				}
				merged := map[string]any{}
				for k, x := range old {
					merged[k] = x
				}
				for k, x := range nv {
					switch k {
					case "volumes":
						merged[k] = mergeVolumes(yList(old, "volumes"), yList(nv, "volumes"))
					case "depends_on", "environment", "deploy":
						m := map[string]any{}
						if om, ok := old[k].(map[string]any); ok {
							for a, b := range om {
								m[a] = b
							}
						}
						if xm, ok := x.(map[string]any); ok {
							for a, b := range xm {
								m[a] = b
							}
						}
						merged[k] = m
					default:
						merged[k] = x
					}
				}
				dst[name] = merged
			}
		}
	}
	return out
}

func mergeVolumes(old, add []any) []any {
	target := func(v any) string {
		parts := strings.Split(fmt.Sprint(v), ":")
		if len(parts) >= 2 {
			return parts[1]
		}
		return parts[0]
	}
	out := slices.Clone(old)
	for _, a := range add {
		i := slices.IndexFunc(out, func(o any) bool { return target(o) == target(a) })
		if i >= 0 {
			out[i] = a
		} else {
			out = append(out, a)
		}
	}
	return out
}

// bindMounts maps a service's container paths to host paths relative to
// deployments/ (short syntax "./src:/target[:ro]"); named volumes are left out.
func bindMounts(svc any) map[string]string {
	m := map[string]string{}
	for _, v := range yStrs(svc, "volumes") {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && strings.HasPrefix(parts[0], ".") {
			m[parts[1]] = filepath.ToSlash(filepath.Clean(parts[0]))
		}
	}
	return m
}

func composeCommand(svc any) []string { return yStrs(svc, "command") }

// TestComposeStack checks compose.yaml and its cluster override: the
// services, their wiring to the mounted configuration (NATS host, emulator
// address and token, metrics port), Prometheus and Grafana provisioning.
func TestComposeStack(t *testing.T) {
	t.Setenv("NATS_URL", "")
	cases := []struct {
		name       string
		files      []string
		configFile string
		natsNodes  []string
		replicas   int
	}{
		{"single node", []string{"compose.yaml"}, "compose/referrer-sync.yaml", []string{"nats"}, 1},
		{"cluster", []string{"compose.yaml", "compose.cluster.yaml"}, "compose/referrer-sync.cluster.yaml", []string{"nats", "nats-2", "nats-3"}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := composeFile(t, tc.files...)
			services := c["services"].(map[string]any)
			for _, name := range append([]string{"referrer-sync", "intercom", "prometheus", "grafana"}, tc.natsNodes...) {
				if services[name] == nil {
					t.Fatalf("service %s is missing", name)
				}
			}
			// NATS: JetStream on, a volume for its store, monitoring port.
			for _, n := range tc.natsNodes {
				svc := services[n]
				args := composeCommand(svc)
				if !slices.Contains(args, "-js") && !slices.Contains(args, "--jetstream") {
					t.Errorf("%s: command %v does not enable JetStream (-js)", n, args)
				}
				if !strings.HasPrefix(yStr(svc, "image"), "nats:2.") {
					t.Errorf("%s: image %q, want nats:2.x", n, yStr(svc, "image"))
				}
				if v, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(yStr(svc, "image"), "nats:2."), "-")[0]); v < 11 {
					t.Errorf("%s: image %q, want nats 2.11 or later", n, yStr(svc, "image"))
				}
				sd := argAfter(args, "--store_dir")
				vols := yStrs(svc, "volumes")
				if sd == "" || !slices.ContainsFunc(vols, func(v string) bool { return strings.HasSuffix(v, ":"+sd) }) {
					t.Errorf("%s: store dir %q is not on a volume (%v)", n, sd, vols)
				}
				if argAfter(args, "--http_port") == "" {
					t.Errorf("%s: no monitoring port (--http_port)", n)
				}
				if len(tc.natsNodes) > 1 {
					routes := argAfter(args, "--routes")
					for _, other := range tc.natsNodes {
						if !strings.Contains(routes, "nats://"+other+":") {
							t.Errorf("%s: --routes %q does not list %s", n, routes, other)
						}
					}
					if argAfter(args, "--cluster_name") == "" || argAfter(args, "--cluster") == "" {
						t.Errorf("%s: not clustered (--cluster_name, --cluster)", n)
					}
				}
			}

			rs := services["referrer-sync"]
			if n, _ := yNum(rs, "deploy", "replicas"); n != 2 {
				t.Errorf("referrer-sync: deploy.replicas = %v, want 2", yAt(rs, "deploy", "replicas"))
			}
			args := composeCommand(rs)
			if len(args) == 0 || args[0] != "run" {
				t.Errorf("referrer-sync: command %v, want run --config FILE", args)
			}
			cfgTarget := argAfter(args, "--config")
			src, ok := bindMounts(rs)[cfgTarget]
			if !ok {
				t.Fatalf("referrer-sync: --config %q is not a mounted file (volumes %v)", cfgTarget, yStrs(rs, "volumes"))
			}
			if src != tc.configFile {
				t.Errorf("referrer-sync: config mounted from %s, want %s", src, tc.configFile)
			}
			if len(yList(rs, "ports")) > 0 {
				t.Error("referrer-sync: publishes host ports, which two replicas cannot share")
			}
			f, err := config.Parse(readDeployFile(t, src))
			if err != nil {
				t.Fatal(err)
			}
			raw := loadDeployYAML(t, src)

			// NATS URL points at the NATS service(s) on the client port.
			var hosts []string
			for _, u := range strings.Split(yStr(raw, "nats", "url"), ",") {
				pu, err := url.Parse(strings.TrimSpace(u))
				if err != nil || pu.Scheme != "nats" || pu.Port() != "4222" {
					t.Errorf("nats.url %q: want nats://HOST:4222", u)
					continue
				}
				hosts = append(hosts, pu.Hostname())
			}
			if !reflect.DeepEqual(hosts, tc.natsNodes) {
				t.Errorf("nats.url hosts %v, want the NATS services %v", hosts, tc.natsNodes)
			}
			if f.NATS.Replicas != tc.replicas || f.Ledger.Replicas != tc.replicas {
				t.Errorf("nats.replicas %d, ledger.replicas %d, want %d", f.NATS.Replicas, f.Ledger.Replicas, tc.replicas)
			}

			// The emulator: same image, listening where the config's base_url points, accepting the token the service gets.
			em := services["intercom"]
			eargs := composeCommand(em)
			if len(eargs) == 0 || eargs[0] != "intercom-emulator" {
				t.Errorf("intercom: command %v, want intercom-emulator ...", eargs)
			}
			if yStr(em, "image") != yStr(rs, "image") || yStr(em, "image") == "" {
				t.Errorf("intercom image %q, want the service's image %q", yStr(em, "image"), yStr(rs, "image"))
			}
			conn, ok := f.Connections["main"]
			if !ok {
				t.Fatal("no connection main")
			}
			bu, err := url.Parse(conn.BaseURL)
			if err != nil || bu.Hostname() != "intercom" {
				t.Errorf("connections.main.base_url %q, want http://intercom:PORT", conn.BaseURL)
			} else if listen := argAfter(eargs, "--listen"); listen == "" || strconv.Itoa(hostPortNum(t, listen)) != bu.Port() {
				t.Errorf("emulator --listen %q does not match base_url %q", listen, conn.BaseURL)
			}
			token := yStr(rs, "environment", conn.AccessTokenEnv)
			if token == "" {
				t.Errorf("referrer-sync: environment has no %s", conn.AccessTokenEnv)
			} else if got := argAfter(eargs, "--token"); got != token {
				t.Errorf("emulator --token %q, service %s %q: they must be the same", got, conn.AccessTokenEnv, token)
			}

			// Prometheus: mounted config and rules; scrapes the service by DNS on the listen port.
			listenPort := hostPortNum(t, f.HTTP.Listen)
			if host, _, _ := net.SplitHostPort(f.HTTP.Listen); host != "0.0.0.0" {
				t.Errorf("http.listen %q: a container must listen on 0.0.0.0", f.HTTP.Listen)
			}
			pm := bindMounts(services["prometheus"])
			promCfgPath := argAfter(composeCommand(services["prometheus"]), "--config.file")
			if pm[promCfgPath] != "prometheus/prometheus.yml" {
				t.Errorf("prometheus: --config.file %q is mounted from %q, want prometheus/prometheus.yml", promCfgPath, pm[promCfgPath])
			}
			prom := loadDeployYAML(t, "prometheus/prometheus.yml")
			for _, rf := range yStrs(prom, "rule_files") {
				// Relative paths are relative to the configuration file, in
				// the container as beside it in the repository.
				if rf != path.Clean(rf) || path.IsAbs(rf) || strings.HasPrefix(rf, "../") {
					t.Errorf("prometheus: rule file %q, want a path relative to prometheus.yml in its directory", rf)
				}
				if _, err := os.Stat(deployPath(path.Join("prometheus", rf))); err != nil {
					t.Errorf("prometheus: rule file %s is not beside prometheus.yml: %v", rf, err)
				}
				if in := path.Join(path.Dir(promCfgPath), rf); pm[in] != "prometheus/"+rf {
					t.Errorf("prometheus: rule file %s (%s in the container) is mounted from %q, want prometheus/%s", rf, in, pm[in], rf)
				}
			}
			if len(yStrs(prom, "rule_files")) == 0 {
				t.Error("prometheus.yml loads no rule files")
			}
			var scraped bool
			for _, sc := range yList(prom, "scrape_configs") {
				if yStr(sc, "job_name") != "referrer-sync" {
					continue
				}
				for _, dns := range yList(sc, "dns_sd_configs") {
					port, _ := yNum(dns, "port")
					if slices.Contains(yStrs(dns, "names"), "referrer-sync") && port == listenPort {
						scraped = true
					}
				}
				if p := yStr(sc, "metrics_path"); p != "" && p != "/metrics" {
					t.Errorf("prometheus: metrics_path %q", p)
				}
			}
			if !scraped {
				t.Errorf("prometheus.yml has no job referrer-sync discovering service referrer-sync by DNS on port %d", listenPort)
			}

			// Grafana: provisioning and dashboards mounted where the provider looks; datasource is the Prometheus service.
			gm := bindMounts(services["grafana"])
			if gm["/etc/grafana/provisioning"] != "grafana/provisioning" {
				t.Errorf("grafana: /etc/grafana/provisioning mounted from %q", gm["/etc/grafana/provisioning"])
			}
			provider := loadDeployYAML(t, "grafana/provisioning/dashboards/referrer-sync.yml")
			dpath := yStr(provider, "providers", "0", "options", "path")
			if gm[dpath] != "grafana/dashboards" {
				t.Errorf("grafana: dashboard provider path %q is mounted from %q, want grafana/dashboards", dpath, gm[dpath])
			}
			ds := loadDeployYAML(t, "grafana/provisioning/datasources/prometheus.yml")
			if u := yStr(ds, "datasources", "0", "url"); u != "http://prometheus:9090" || yStr(ds, "datasources", "0", "type") != "prometheus" {
				t.Errorf("grafana datasource %q, want the prometheus service at http://prometheus:9090", u)
			}

			// Every bind-mounted file exists.
			for name, svc := range services {
				for target, src := range bindMounts(svc) {
					if _, err := os.Stat(deployPath(src)); err != nil {
						t.Errorf("%s: mount %s -> %s: %v", name, src, target, err)
					}
				}
			}
			// Named volumes are declared.
			vols := c["volumes"].(map[string]any)
			for name, svc := range services {
				for _, v := range yStrs(svc, "volumes") {
					if src := strings.Split(v, ":")[0]; !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
						if _, ok := vols[src]; !ok {
							t.Errorf("%s: named volume %s is not declared", name, src)
						}
					}
				}
			}
		})
	}
}

// kubeObjects reads every manifest the kustomization lists, by kind.
func kubeObjects(t *testing.T) map[string][]map[string]any {
	t.Helper()
	k := loadDeployYAML(t, "k8s/kustomization.yaml")
	res := yStrs(k, "resources")
	if len(res) == 0 {
		t.Fatal("k8s/kustomization.yaml lists no resources")
	}
	byKind := map[string][]map[string]any{}
	for _, r := range res {
		docs, err := yamlDocs(readDeployFile(t, "k8s/"+r))
		if err != nil {
			t.Fatalf("k8s/%s: %v", r, err)
		}
		for _, d := range docs {
			if yStr(d, "apiVersion") == "" || yStr(d, "kind") == "" || yStr(d, "metadata", "name") == "" {
				t.Errorf("k8s/%s: a document without apiVersion, kind or metadata.name", r)
			}
			byKind[yStr(d, "kind")] = append(byKind[yStr(d, "kind")], d)
		}
	}
	// Files in k8s/ that the kustomization forgets would never be applied.
	entries, err := os.ReadDir(deployPath("k8s"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if n := e.Name(); n != "kustomization.yaml" && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) && !slices.Contains(res, n) {
			t.Errorf("k8s/%s is not listed in kustomization.yaml", n)
		}
	}
	return byKind
}

func oneOfKind(t *testing.T, objs map[string][]map[string]any, kind string) map[string]any {
	t.Helper()
	if len(objs[kind]) != 1 {
		t.Fatalf("k8s: %d objects of kind %s, want 1", len(objs[kind]), kind)
	}
	return objs[kind][0]
}

func labelsSelect(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

func deployContainer(t *testing.T, dep map[string]any) any {
	t.Helper()
	cs := yList(dep, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("Deployment has %d containers, want 1", len(cs))
	}
	return cs[0]
}

// TestKubeManifests checks the Kubernetes manifests: kinds, replicas,
// selectors that match, the token from a Secret reference (no secret in the
// repository), security context, resources and a grace period above the
// service's drain timeout.
func TestKubeManifests(t *testing.T) {
	objs := kubeObjects(t)
	for _, kind := range []string{"Deployment", "PodDisruptionBudget", "ConfigMap", "Service", "ServiceMonitor", "PrometheusRule"} {
		t.Run(kind, func(t *testing.T) {
			if len(objs[kind]) == 0 {
				t.Fatalf("no %s", kind)
			}
		})
	}
	if len(objs["Secret"]) > 0 {
		t.Error("a Secret manifest is in the repository; the token must be created with kubectl create secret")
	}
	dep := oneOfKind(t, objs, "Deployment")
	podLabels := yAt(dep, "spec", "template", "metadata", "labels")
	c := deployContainer(t, dep)
	pod := yAt(dep, "spec", "template", "spec")

	t.Run("deployment", func(t *testing.T) {
		if n, _ := yNum(dep, "spec", "replicas"); n != 3 {
			t.Errorf("replicas = %v, want 3", yAt(dep, "spec", "replicas"))
		}
		if !labelsSelect(yAt(dep, "spec", "selector", "matchLabels"), podLabels) {
			t.Error("selector does not match the pod template's labels")
		}
		if yStr(c, "image") == "" {
			t.Error("no image")
		}
		// What runs is the kustomization's tag or digest when it names the
		// image; either way it must identify one build: IfNotPresent (the
		// default for a tagged image) keeps whatever a node pulled first.
		name, tag, _ := strings.Cut(yStr(c, "image"), ":")
		digest := ""
		for _, im := range yList(loadDeployYAML(t, "k8s/kustomization.yaml"), "images") {
			if yStr(im, "name") == name {
				if nt := yStr(im, "newTag"); nt != "" {
					tag = nt
				}
				digest = yStr(im, "digest")
			}
		}
		if digest == "" && !regexp.MustCompile(`^v?\d+\.\d+\.\d+`).MatchString(tag) {
			t.Errorf("image %s runs tag %q: pin a release tag or a digest, not a moving tag", name, tag)
		}
		if p := yStr(c, "imagePullPolicy"); p != "" && p != "IfNotPresent" {
			t.Errorf("imagePullPolicy %q: with a pinned image, IfNotPresent", p)
		}
		args := yStrs(c, "args")
		if len(args) == 0 || args[0] != "run" || argAfter(args, "--config") == "" {
			t.Errorf("args %v, want run --config FILE", args)
		}
		env := map[string]any{}
		for _, e := range yList(c, "env") {
			env[yStr(e, "name")] = e
		}
		tok := env["INTERCOM_ACCESS_TOKEN"]
		if tok == nil || yStr(tok, "valueFrom", "secretKeyRef", "name") == "" || yStr(tok, "valueFrom", "secretKeyRef", "key") == "" {
			t.Error("INTERCOM_ACCESS_TOKEN must come from valueFrom.secretKeyRef")
		}
		if yAt(tok, "value") != nil {
			t.Error("INTERCOM_ACCESS_TOKEN has a literal value")
		}
		if u := yStr(env["NATS_URL"], "value"); !strings.HasPrefix(u, "nats://") {
			t.Errorf("NATS_URL = %q, want nats://...", u)
		}
		for _, p := range []string{"requests", "limits"} {
			for _, r := range []string{"cpu", "memory"} {
				if yAt(c, "resources", p, r) == nil {
					t.Errorf("resources.%s.%s is not set", p, r)
				}
			}
		}
		if yAt(c, "securityContext", "readOnlyRootFilesystem") != true {
			t.Error("securityContext.readOnlyRootFilesystem is not true")
		}
		if yAt(c, "securityContext", "allowPrivilegeEscalation") != false {
			t.Error("securityContext.allowPrivilegeEscalation is not false")
		}
		if yAt(c, "securityContext", "runAsNonRoot") != true && yAt(pod, "securityContext", "runAsNonRoot") != true {
			t.Error("runAsNonRoot is not true")
		}
		if !slices.Contains(yStrs(c, "securityContext", "capabilities", "drop"), "ALL") {
			t.Error("capabilities do not drop ALL")
		}
		if u, ok := yNum(pod, "securityContext", "runAsUser"); ok && u == 0 {
			t.Error("runAsUser is 0")
		}
		grace, ok := yNum(pod, "terminationGracePeriodSeconds")
		drain := consumer.Config{}.WithDefaults().DrainTimeout
		// close() gives HTTP shutdown another 5 s after the drain.
		if need := drain + 5*time.Second; !ok || time.Duration(grace)*time.Second <= need {
			t.Errorf("terminationGracePeriodSeconds = %v, want more than the drain timeout plus HTTP shutdown (%s)", yAt(pod, "terminationGracePeriodSeconds"), need)
		}
		mounted := false
		cfgPath := argAfter(args, "--config")
		for _, vm := range yList(c, "volumeMounts") {
			if strings.HasPrefix(cfgPath, yStr(vm, "mountPath")+"/") {
				for _, v := range yList(pod, "volumes") {
					if yStr(v, "name") == yStr(vm, "name") && yStr(v, "configMap", "name") == yStr(oneOfKind(t, objs, "ConfigMap"), "metadata", "name") {
						mounted = true
					}
				}
			}
		}
		if !mounted {
			t.Errorf("--config %s is not a file of the ConfigMap's volume", cfgPath)
		}
	})
	t.Run("pdb", func(t *testing.T) {
		pdb := oneOfKind(t, objs, "PodDisruptionBudget")
		if !labelsSelect(yAt(pdb, "spec", "selector", "matchLabels"), podLabels) {
			t.Error("selector does not match the Deployment's pods")
		}
		minAvail, okMin := yNum(pdb, "spec", "minAvailable")
		maxUnavail, okMax := yNum(pdb, "spec", "maxUnavailable")
		if enough := okMin && minAvail >= 2 || okMax && maxUnavail == 1; !enough {
			t.Errorf("minAvailable %v / maxUnavailable %v: want minAvailable >= 2 or maxUnavailable 1", yAt(pdb, "spec", "minAvailable"), yAt(pdb, "spec", "maxUnavailable"))
		}
	})
	t.Run("service and monitor", func(t *testing.T) {
		svc := oneOfKind(t, objs, "Service")
		if !labelsSelect(yAt(svc, "spec", "selector"), podLabels) {
			t.Error("Service selector does not match the Deployment's pods")
		}
		sm := oneOfKind(t, objs, "ServiceMonitor")
		if yStr(sm, "apiVersion") != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %q", yStr(sm, "apiVersion"))
		}
		if !labelsSelect(yAt(sm, "spec", "selector", "matchLabels"), yAt(svc, "metadata", "labels")) {
			t.Error("ServiceMonitor selector does not match the Service's labels")
		}
		if p := yStr(sm, "spec", "endpoints", "0", "path"); p != "/metrics" {
			t.Errorf("ServiceMonitor path %q, want /metrics", p)
		}
	})
}

// kubeConfig is the configuration document in the ConfigMap.
func kubeConfig(t *testing.T) []byte {
	t.Helper()
	cm := oneOfKind(t, kubeObjects(t), "ConfigMap")
	doc := yStr(cm, "data", "config.yaml")
	if doc == "" {
		t.Fatal("ConfigMap has no data config.yaml")
	}
	return []byte(doc)
}

// TestDeploymentConfigsValidate runs every configuration shipped in
// deployments/ through the service's own parser and validation.
func TestDeploymentConfigsValidate(t *testing.T) {
	t.Setenv("NATS_URL", "")
	cases := []struct {
		name     string
		doc      func(t *testing.T) []byte
		replicas int
		listen   string
	}{
		{"compose", func(t *testing.T) []byte { t.Helper(); return readDeployFile(t, "compose/referrer-sync.yaml") }, 1, "0.0.0.0:9464"},
		{"compose cluster", func(t *testing.T) []byte { t.Helper(); return readDeployFile(t, "compose/referrer-sync.cluster.yaml") }, 3, "0.0.0.0:9464"},
		{"k8s configmap", kubeConfig, 3, "0.0.0.0:9464"},
		{"example", func(t *testing.T) []byte { t.Helper(); return readDeployFile(t, "config.example.yaml") }, 1, "0.0.0.0:9464"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := config.Parse(tc.doc(t))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if err := f.Validate(); err != nil {
				t.Fatalf("validate:\n%v", err)
			}
			if w := f.Warnings(); len(w) > 0 {
				t.Errorf("warnings: %v", w)
			}
			if n := max(f.NATS.Replicas, 1); n != tc.replicas {
				t.Errorf("nats.replicas = %d, want %d", n, tc.replicas)
			}
			if n := max(f.Ledger.Replicas, 1); n != tc.replicas {
				t.Errorf("ledger.replicas = %d, want %d", n, tc.replicas)
			}
			if f.HTTP.Listen != tc.listen {
				t.Errorf("http.listen = %q, want %q", f.HTTP.Listen, tc.listen)
			}
			if len(f.Campaigns) == 0 {
				t.Error("no campaigns")
			}
		})
	}
}

// kubeProbes resolves the Deployment's probes, ports and the Service's.
type kubeProbes struct {
	liveness, readiness, startup string // paths
	probePorts                   []int
	containerPort                int
	servicePort, serviceTarget   int
	monitorPort                  int
	listenPort                   int
}

func resolveKubeProbes(t *testing.T) kubeProbes {
	t.Helper()
	objs := kubeObjects(t)
	dep := oneOfKind(t, objs, "Deployment")
	c := deployContainer(t, dep)
	named := map[string]int{}
	var kp kubeProbes
	for _, p := range yList(c, "ports") {
		n, _ := yNum(p, "containerPort")
		named[yStr(p, "name")] = n
		if yStr(p, "name") == "metrics" {
			kp.containerPort = n
		}
	}
	resolve := func(v any) int {
		switch x := v.(type) {
		case int:
			return x
		case string:
			if n, ok := named[x]; ok {
				return n
			}
			n, _ := strconv.Atoi(x)
			return n
		}
		return 0
	}
	for _, pr := range []struct {
		key  string
		path *string
	}{{"livenessProbe", &kp.liveness}, {"readinessProbe", &kp.readiness}, {"startupProbe", &kp.startup}} {
		if yAt(c, pr.key) == nil {
			continue
		}
		*pr.path = yStr(c, pr.key, "httpGet", "path")
		kp.probePorts = append(kp.probePorts, resolve(yAt(c, pr.key, "httpGet", "port")))
	}
	svc := oneOfKind(t, objs, "Service")
	sm := oneOfKind(t, objs, "ServiceMonitor")
	smPort := yStr(sm, "spec", "endpoints", "0", "port")
	for _, p := range yList(svc, "spec", "ports") {
		if yStr(p, "name") == "metrics" {
			kp.servicePort, _ = yNum(p, "port")
			kp.serviceTarget = resolve(yAt(p, "targetPort"))
		}
		if yStr(p, "name") == smPort {
			kp.monitorPort, _ = yNum(p, "port")
		}
	}
	f, err := config.Parse(kubeConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	kp.listenPort = hostPortNum(t, f.HTTP.Listen)
	return kp
}

// TestProbesMatchManifests: probe paths are /healthz and /readyz, and every
// port (probes, container, Service, ServiceMonitor) is http.listen's.
func TestProbesMatchManifests(t *testing.T) {
	kp := resolveKubeProbes(t)
	if kp.liveness != "/healthz" {
		t.Errorf("liveness path %q, want /healthz", kp.liveness)
	}
	if kp.readiness != "/readyz" {
		t.Errorf("readiness path %q, want /readyz", kp.readiness)
	}
	if kp.startup != "" && kp.startup != "/healthz" {
		t.Errorf("startup path %q, want /healthz", kp.startup)
	}
	if len(kp.probePorts) < 2 {
		t.Errorf("%d probes, want liveness and readiness", len(kp.probePorts))
	}
	ports := map[string]int{
		"container port metrics": kp.containerPort,
		"Service port metrics":   kp.servicePort,
		"Service targetPort":     kp.serviceTarget,
		"ServiceMonitor port":    kp.monitorPort,
	}
	for i, p := range kp.probePorts {
		ports[fmt.Sprintf("probe %d port", i)] = p
	}
	for what, p := range ports {
		if p != kp.listenPort {
			t.Errorf("%s = %d, want %d (the ConfigMap's http.listen)", what, p, kp.listenPort)
		}
	}
}

// TestProbesAnswerOnRunningInstance asks a running service the paths the
// Deployment probes and the ServiceMonitor scrapes: 200, not 404.
func TestProbesAnswerOnRunningInstance(t *testing.T) {
	kp := resolveKubeProbes(t)
	sm := oneOfKind(t, kubeObjects(t), "ServiceMonitor")
	h := newHarness(t, emulator.Config{}, "")
	paths := []string{kp.liveness, kp.readiness, yStr(sm, "spec", "endpoints", "0", "path")}
	if kp.startup != "" {
		paths = append(paths, kp.startup)
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			if p == "" {
				t.Fatal("empty path")
			}
			res, err := http.Get("http://" + h.in.addr() + p)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close() // read to the end
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %s", p, res.StatusCode, body)
			}
		})
	}
}

// alertRule is one rule of a Prometheus rule file.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name     string      `yaml:"name"`
		Interval string      `yaml:"interval"`
		Rules    []alertRule `yaml:"rules"`
	} `yaml:"groups"`
}

func loadAlertRules(t *testing.T) []alertRule {
	t.Helper()
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(readDeployFile(t, "prometheus/alerts.yml")))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var out []alertRule
	for _, g := range rf.Groups {
		if g.Name == "" {
			t.Error("alerts.yml: a group without a name")
		}
		if g.Interval != "" && !promDurationRE.MatchString(g.Interval) {
			t.Errorf("alerts.yml: group %s: interval %q is not a duration", g.Name, g.Interval)
		}
		for _, r := range g.Rules {
			if r.Record != "" {
				t.Errorf("alerts.yml: recording rule %s: keep recording rules out of the alert file", r.Record)
			}
		}
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatal("alerts.yml: no rules")
	}
	return out
}

// promDurationRE matches Prometheus durations such as 10m, 1h30m, 0s.
var promDurationRE = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

// TestAlertRulesShape checks every rule: alert, expr, for, severity,
// summary and a description; unique names; the topics the rules must cover;
// and that the Prometheus Operator copy says the same.
func TestAlertRulesShape(t *testing.T) {
	rules := loadAlertRules(t)
	seen := map[string]bool{}
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			if r.Alert == "" {
				t.Fatal("a rule without alert name")
			}
			if seen[r.Alert] {
				t.Errorf("duplicate alert %s", r.Alert)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Error("no expr")
			}
			if _, err := promqlMetricNames(r.Expr); err != nil {
				t.Errorf("expr: %v", err)
			}
			if !promDurationRE.MatchString(r.For) {
				t.Errorf("for %q is missing or not a duration", r.For)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("labels.severity %q, want critical, warning or info", r.Labels["severity"])
			}
			if strings.TrimSpace(r.Annotations["summary"]) == "" {
				t.Error("no annotations.summary")
			}
			if len(r.Annotations["description"]) < 80 {
				t.Error("annotations.description is missing or too short to say what to do")
			}
		})
	}
	// The topics the operations contract asks for, by the metric they watch.
	for _, want := range []struct{ topic, metric, also string }{
		{"dead-letter growth", "referrer_sync_dead_letters_total", "increase("},
		{"consumer backlog", "referrer_sync_consumer_pending_messages", ""},
		{"ack pending", "referrer_sync_consumer_ack_pending_messages", ""},
		{"CRM error rate", "referrer_sync_crm_requests_total", `"5..|error"`},
		{"rate limit", "referrer_sync_crm_rate_limit_remaining", ""},
		{"429s", "referrer_sync_crm_requests_total", `"429"`},
		{"not ready", "referrer_sync_ready", "== 0"},
		{"target down", "up", "== 0"},
		{"config reload failures", "referrer_sync_config_reloads_total", `result="failure"`},
	} {
		covered := slices.ContainsFunc(rules, func(r alertRule) bool {
			names, _ := promqlMetricNames(r.Expr)
			return slices.Contains(names, want.metric) && strings.Contains(r.Expr, want.also)
		})
		if !covered {
			t.Errorf("no alert on %s (%s %s)", want.topic, want.metric, want.also)
		}
	}
	t.Run("PrometheusRule", func(t *testing.T) {
		pr := oneOfKind(t, kubeObjects(t), "PrometheusRule")
		var plain map[string]any
		if err := yaml.Unmarshal(readDeployFile(t, "prometheus/alerts.yml"), &plain); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(yAt(pr, "spec", "groups"), plain["groups"]) {
			t.Error("k8s/prometheusrule.yaml spec.groups differs from prometheus/alerts.yml groups; copy alerts.yml's groups into it")
		}
	})
}

// promqlMetricNames extracts the metric names a PromQL expression selects.
// It is a scanner, not a parser (the Prometheus parser would pull the
// prometheus/prometheus module and upgrade shared dependencies): it skips
// string literals, label matchers {...}, ranges and subqueries [...], Grafana
// variables ($x, ${x}, $__rate_interval), numbers and durations, keywords,
// the label lists of by/without/on/ignoring/group_left/group_right, and
// function names (an identifier followed by "(") and aggregation operators.
func promqlMetricNames(expr string) ([]string, error) {
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"atan2": true, "inf": true, "nan": true, "start": true, "end": true}
	// Aggregation operators may be followed by by/without instead of "(".
	for _, agg := range []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio"} {
		keywords[agg] = true
	}
	labelLists := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	isStart := func(c byte) bool { return c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
	isIdent := func(c byte) bool { return isStart(c) || ('0' <= c && c <= '9') }
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d in %q", i, expr)
	}
	// skipGroup skips from an opening bracket to its match, over strings.
	skipGroup := func(i int) (int, error) {
		pairs := map[byte]byte{'(': ')', '{': '}', '[': ']'}
		var stack []byte
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; c {
			case '"', '\'', '`':
				k, err := skipString(j)
				if err != nil {
					return 0, err
				}
				j = k - 1
			case '(', '{', '[':
				stack = append(stack, pairs[c])
			case ')', '}', ']':
				if len(stack) == 0 || stack[len(stack)-1] != c {
					return 0, fmt.Errorf("unbalanced %q at %d in %q", c, j, expr)
				}
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %q at %d in %q", expr[i], i, expr)
	}
	var names []string
	depth := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{' || c == '[':
			j, err := skipGroup(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unbalanced %q at %d in %q", c, i, expr)
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ')' at %d in %q", i, expr)
			}
			i++
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := skipGroup(i)
				if err != nil {
					return nil, err
				}
				i = j
				continue
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case '0' <= c && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\t' || expr[k] == '\n') {
				k++
			}
			followedByParen := k < len(expr) && expr[k] == '('
			switch {
			case labelLists[word] && followedByParen:
				end, err := skipGroup(k)
				if err != nil {
					return nil, err
				}
				i = end
			case labelLists[word], keywords[word], followedByParen:
				i = j
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
				i = j
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced '(' in %q", expr)
	}
	return names, nil
}

// TestAlertMetricNameExtraction pins the scanner the metric checks rely on.
func TestAlertMetricNameExtraction(t *testing.T) {
	cases := []struct {
		expr    string
		want    []string
		wantErr bool
	}{
		{`sum by (reason) (increase(referrer_sync_dead_letters_total{reason!~"a|b"}[10m])) > 0`, []string{"referrer_sync_dead_letters_total"}, false},
		{`histogram_quantile(0.99, sum by (le, operation) (rate(x_seconds_bucket[$__rate_interval])))`, []string{"x_seconds_bucket"}, false},
		{`(sum(referrer_sync_ready) or vector(0)) == 0`, []string{"referrer_sync_ready"}, false},
		{`up{job="referrer-sync"} == 0`, []string{"up"}, false},
		{`a / on(instance) group_left(version) b offset 5m`, []string{"a", "b"}, false},
		{`sum(rate(m{campaign=~"$campaign"}[5m])) by (campaign)`, []string{"m"}, false},
		{`sum without (instance) (m) unless ignoring (x) n`, []string{"m", "n"}, false},
		{`m{l="}", k='{'} * 1e3 + 0.5 * bool_metric`, []string{"m", "bool_metric"}, false},
		{`max(deriv(p[15m:1m])) > 0 and max(p) > 100`, []string{"p"}, false},
		{`rate(m[${interval}]) * ${factor}`, []string{"m"}, false},
		{`m{a="b"`, nil, true},
		{`sum(m`, nil, true},
		{`m]`, nil, true},
		{`m{a="b}`, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.expr, func(t *testing.T) {
			got, err := promqlMetricNames(tc.expr)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// dashboardPanels flattens the dashboard's panels (rows may nest them).
func dashboardPanels(v any) []any {
	var out []any
	for _, p := range yList(v, "panels") {
		out = append(out, p)
		out = append(out, dashboardPanels(p)...)
	}
	return out
}

func loadDashboard(t *testing.T) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(readDeployFile(t, "grafana/dashboards/referrer-sync.json"), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*([^,]+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// dashboardExprs returns every PromQL expression of the dashboard: panel
// targets and query variables (label_values(SELECTOR, label) → SELECTOR).
func dashboardExprs(t *testing.T, d map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range dashboardPanels(d) {
		if yStr(p, "type") == "row" {
			continue
		}
		for _, tg := range yList(p, "targets") {
			out[fmt.Sprintf("panel %q target %s", yStr(p, "title"), yStr(tg, "refId"))] = yStr(tg, "expr")
		}
	}
	for _, v := range yList(d, "templating", "list") {
		if yStr(v, "type") != "query" {
			continue
		}
		q := yStr(v, "query", "query")
		if q == "" {
			q = yStr(v, "query")
		}
		if m := labelValuesRE.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		out[fmt.Sprintf("variable %q", yStr(v, "name"))] = q
	}
	return out
}

// TestDashboardShape: every panel has a datasource and targets with an
// expression, ids are unique, and the panels cover what operators need.
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if yStr(d, "uid") == "" || yStr(d, "title") == "" {
		t.Error("dashboard has no uid or title")
	}
	ids := map[float64]bool{}
	panels := 0
	for _, p := range dashboardPanels(d) {
		id, _ := yAt(p, "id").(float64)
		if ids[id] {
			t.Errorf("duplicate panel id %v", id)
		}
		ids[id] = true
		if yAt(p, "gridPos") == nil {
			t.Errorf("panel %q has no gridPos", yStr(p, "title"))
		}
		if yStr(p, "type") == "row" {
			continue
		}
		panels++
		if yStr(p, "datasource", "type") != "prometheus" {
			t.Errorf("panel %q: datasource %v, want a prometheus datasource", yStr(p, "title"), yAt(p, "datasource"))
		}
		if len(yList(p, "targets")) == 0 {
			t.Errorf("panel %q has no targets", yStr(p, "title"))
		}
		for _, tg := range yList(p, "targets") {
			if strings.TrimSpace(yStr(tg, "expr")) == "" {
				t.Errorf("panel %q: a target without expr", yStr(p, "title"))
			}
		}
	}
	if panels < 12 {
		t.Errorf("%d panels, want at least 12", panels)
	}
	var used []string
	for where, e := range dashboardExprs(t, d) {
		names, err := promqlMetricNames(e)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		}
		used = append(used, names...)
	}
	for _, want := range []string{
		"referrer_sync_events_total", "referrer_sync_dead_letters_total", "referrer_sync_event_processing_seconds_bucket",
		"referrer_sync_crm_requests_total", "referrer_sync_crm_request_duration_seconds_bucket",
		"referrer_sync_crm_rate_limit_remaining", "referrer_sync_consumer_pending_messages",
		"referrer_sync_in_flight_messages", "referrer_sync_ready", "referrer_sync_retries_total",
		"referrer_sync_duplicates_absorbed_total", "referrer_sync_config_generation",
		"referrer_sync_event_age_seconds_bucket", "referrer_sync_event_time_ahead_total",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// serviceSelectorRE matches a selector of one of the service's metrics,
// with its label matchers when it has any.
var serviceSelectorRE = regexp.MustCompile(`referrer_sync_[a-z0-9_]+(\{[^}]*\})?`)

// TestSelectorsNameTheJob: every selector of the service's metrics in the
// alert rules and the dashboard names the scrape job, so a dry run or another
// deployment scraped under a job of its own is neither a ready replica nor
// part of the backlog. The rules' job is the one compose's Prometheus and the
// Kubernetes ServiceMonitor (the Service's name) scrape under.
func TestSelectorsNameTheJob(t *testing.T) {
	const job = "referrer-sync"
	check := func(where, expr, matcher string) {
		sels := serviceSelectorRE.FindAllStringSubmatch(expr, -1)
		if len(sels) == 0 && !strings.Contains(expr, `up{job="`+job+`"}`) {
			t.Errorf("%s: selects no referrer_sync_ metric: %q", where, expr)
		}
		for _, m := range sels {
			if !slices.Contains(strings.Split(strings.Trim(m[1], "{}"), ","), matcher) {
				t.Errorf("%s: %s lacks %s", where, m[0], matcher)
			}
		}
	}
	for _, r := range loadAlertRules(t) {
		check("alert "+r.Alert, r.Expr, `job="`+job+`"`)
	}
	d := loadDashboard(t)
	for where, e := range dashboardExprs(t, d) {
		if where == `variable "job"` {
			continue
		}
		check("dashboard "+where, e, `job="$job"`)
	}
	var jobVar any
	for _, v := range yList(d, "templating", "list") {
		if yStr(v, "name") == "job" {
			jobVar = v
		}
	}
	if jobVar == nil || yStr(jobVar, "current", "value") != job || yAt(jobVar, "includeAll") == true {
		t.Errorf("dashboard variable job: %v, want one job, %s by default", jobVar, job)
	}

	prom := loadDeployYAML(t, "prometheus/prometheus.yml")
	if !slices.ContainsFunc(yList(prom, "scrape_configs"), func(sc any) bool { return yStr(sc, "job_name") == job }) {
		t.Errorf("prometheus.yml has no scrape job %s", job)
	}
	if svc := oneOfKind(t, kubeObjects(t), "Service"); yStr(svc, "metadata", "name") != job {
		t.Errorf("k8s Service %q: the ServiceMonitor's job is the Service's name, want %s", yStr(svc, "metadata", "name"), job)
	}
	if sm := oneOfKind(t, kubeObjects(t), "ServiceMonitor"); yStr(sm, "spec", "jobLabel") != "" {
		t.Errorf("ServiceMonitor jobLabel %q: the job would not be the Service's name", yStr(sm, "spec", "jobLabel"))
	}
}

// scrapeFamilies returns metric family names and types from /metrics.
func scrapeFamilies(t *testing.T, addr string) map[string]string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }() // a close error tells nothing
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	fams := map[string]string{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fams
}

// isExposed reports whether a series name belongs to a scraped family: the
// family itself, or a histogram's _bucket/_sum/_count, or a summary's
// _sum/_count.
func isExposed(fams map[string]string, name string) bool {
	if _, ok := fams[name]; ok {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			switch fams[base] {
			case "histogram":
				return true
			case "summary":
				return suf != "_bucket"
			}
		}
	}
	return false
}

// TestAlertAndDashboardMetricsExist drives a running service through every
// outcome kind (created, duplicate, dead letter, retry after CRM 5xx),
// scrapes /metrics and checks that every metric the alert rules and the
// dashboard use is exposed. `up` is Prometheus's own.
func TestAlertAndDashboardMetricsExist(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	ok := event("dep-1", "leads_update", "usr_1", "Ada", "ada@example.com")
	h.publish(ok, "")
	h.settled(1)
	h.publish(ok, "")          // the same event again: duplicate
	h.publish(`{not json`, "") // dead letter: malformed
	h.settled(3)
	if err := h.emu.SetFaults(emulator.Faults{ServerErrorRate: 1, Operations: []string{emulator.OpCreateContact}}); err != nil {
		t.Fatal(err)
	}
	h.publish(event("dep-2", "users_skip", "usr_2", "Grace", "grace@example.com"), "")
	deadline := time.Now().Add(30 * time.Second)
	// retries_total exists at 0 from start-up: wait for a counted retry.
	for v, _ := metricValue(opsScrape(t, h.in.addr()), "referrer_sync_retries_total", nil); v == 0; v, _ = metricValue(opsScrape(t, h.in.addr()), "referrer_sync_retries_total", nil) {
		if time.Now().After(deadline) {
			t.Fatal("no retry within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := h.emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	h.settled(4)
	fams := scrapeFamilies(t, h.in.addr())

	exprs := map[string]string{}
	for _, r := range loadAlertRules(t) {
		exprs["alert "+r.Alert] = r.Expr
	}
	for where, e := range dashboardExprs(t, loadDashboard(t)) {
		exprs["dashboard "+where] = e
	}
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, where := range keys {
		t.Run(where, func(t *testing.T) {
			names, err := promqlMetricNames(exprs[where])
			if err != nil {
				t.Fatal(err)
			}
			if len(names) == 0 {
				t.Fatalf("no metric in %q", exprs[where])
			}
			for _, n := range names {
				if n == "up" {
					continue
				}
				if !strings.HasPrefix(n, "referrer_sync_") {
					t.Errorf("%s is not a referrer-sync metric (nor up)", n)
					continue
				}
				if !isExposed(fams, n) {
					t.Errorf("%s is not exposed by the service (expr %q)", n, exprs[where])
				}
			}
		})
	}
}

// TestAlertedSeriesExistAtStartup: a service that has handled nothing yet
// already exposes, at 0, the series alerts_test.yml starts from (so the
// first increment is an increase() the rules see): every dead-letter
// reason, every retry cause of each configured campaign, refused tokens per
// connection and failed reloads.
func TestAlertedSeriesExistAtStartup(t *testing.T) {
	h := newHarness(t, emulator.Config{}, "")
	res, err := http.Get("http://" + h.in.addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	_ = res.Body.Close() // read to the end; a close error tells nothing
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	want := []string{`referrer_sync_config_reloads_total{result="failure"} 0`}
	for _, r := range app.DeadLetterReasons {
		want = append(want, fmt.Sprintf(`referrer_sync_dead_letters_total{reason=%q} 0`, r))
	}
	for name := range h.in.file.Connections {
		want = append(want, fmt.Sprintf(`referrer_sync_crm_unauthorized_total{connection=%q} 0`, name))
	}
	for id := range h.in.file.Campaigns {
		for _, c := range app.RetryCauses {
			want = append(want, fmt.Sprintf(`referrer_sync_retries_total{campaign=%q,cause=%q} 0`, id, c))
		}
	}
	if len(h.in.file.Campaigns) == 0 || len(h.in.file.Connections) == 0 {
		t.Fatal("the harness configures no campaign or connection")
	}
	for _, w := range want {
		if !slices.Contains(lines, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}

// TestDeadLetterAlertsSplitReasons: the two dead-letter alerts split the
// reasons between them, bad input (the domain's reasons, a warning) and
// delivery (the application's, paging), so a new reason cannot page as the
// wrong one.
func TestDeadLetterAlertsSplitReasons(t *testing.T) {
	domainReasons := []string{domain.ReasonTooLarge, domain.ReasonMalformed, domain.ReasonWrongType, domain.ReasonMissingID,
		domain.ReasonMissingCampaign, domain.ReasonMissingEmail, domain.ReasonInvalidEmail, domain.ReasonMapping}
	var delivery []string
	for _, r := range app.DeadLetterReasons {
		if !slices.Contains(domainReasons, r) {
			delivery = append(delivery, r)
		}
	}
	matcher := map[string]string{}
	for _, r := range loadAlertRules(t) {
		switch r.Alert {
		case "ReferrerSyncDeadLettersBadInput":
			matcher[r.Alert] = regexp.MustCompile(`reason!~"([^"]*)"`).FindStringSubmatch(r.Expr)[1]
		case "ReferrerSyncDeadLettersDelivery":
			matcher[r.Alert] = regexp.MustCompile(`reason=~"([^"]*)"`).FindStringSubmatch(r.Expr)[1]
		}
	}
	for alert, m := range matcher {
		got := strings.Split(m, "|")
		slices.Sort(got)
		want := slices.Sorted(slices.Values(delivery))
		if !slices.Equal(got, want) {
			t.Errorf("%s: reason matcher %q, want exactly the delivery reasons %v", alert, m, want)
		}
	}
	if len(matcher) != 2 {
		t.Errorf("found %d of the two dead-letter alerts", len(matcher))
	}
}

// dockerStage is one FROM ... stage of a Dockerfile.
type dockerStage struct {
	image, name string
	instrs      [][2]string // instruction (upper case), arguments
}

func parseDockerfile(src string) []dockerStage {
	var stages []dockerStage
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		logical = append(logical, cur.String())
	}
	for _, l := range logical {
		instr, args, _ := strings.Cut(l, " ")
		instr = strings.ToUpper(instr)
		args = strings.TrimSpace(args)
		if instr == "FROM" {
			var st dockerStage
			f := strings.Fields(args)
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				case st.image == "":
					st.image = f[i]
				}
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, [2]string{instr, args})
		}
	}
	return stages
}

func (s dockerStage) args(instr string) []string {
	var out []string
	for _, in := range s.instrs {
		if in[0] == instr {
			out = append(out, in[1])
		}
	}
	return out
}

// TestDockerfile checks the image build: a Go build stage of the module's Go
// version building ./cmd/referrer-sync statically with the version stamped
// in, and a final stage that runs as non-root, exposes the metrics port and
// starts the binary.
func TestDockerfile(t *testing.T) {
	_ = &version // -X main.version needs this variable
	stages := parseDockerfile(string(readDeployFile(t, "Dockerfile")))
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	t.Run("build stage", func(t *testing.T) {
		gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
		if m == nil {
			t.Fatal("go.mod has no go directive")
		}
		if want := "golang:" + string(m[1]); build.image != want && !strings.HasPrefix(build.image, want+"-") && !strings.HasPrefix(build.image, want+".") {
			t.Errorf("build stage FROM %s, want %s (go.mod's Go version)", build.image, want)
		}
		all := strings.Join(append(build.args("RUN"), build.args("ENV")...), "\n")
		goBuild := ""
		for _, r := range build.args("RUN") {
			if strings.Contains(r, "go build") {
				goBuild = r
			}
		}
		for _, want := range []string{"./cmd/referrer-sync", "-trimpath", "-s -w", "-X main.version=${VERSION}"} {
			if !strings.Contains(goBuild, want) {
				t.Errorf("go build command %q lacks %s", goBuild, want)
			}
		}
		if !strings.Contains(all, "CGO_ENABLED=0") {
			t.Error("CGO_ENABLED=0 is not set (the final image has no libc)")
		}
		if !slices.ContainsFunc(build.args("ARG"), func(a string) bool { return strings.HasPrefix(a, "VERSION") }) {
			t.Error("no ARG VERSION")
		}
	})

	t.Run("final stage", func(t *testing.T) {
		img := final.image
		if !strings.HasPrefix(img, "gcr.io/distroless/static") && img != "scratch" {
			t.Errorf("final stage FROM %s, want distroless static or scratch", img)
		}
		users := final.args("USER")
		switch {
		case len(users) > 0:
			u := strings.Split(users[len(users)-1], ":")[0]
			if u == "root" || u == "0" || u == "" {
				t.Errorf("final stage USER %q is root", users[len(users)-1])
			}
		case !strings.HasSuffix(img, ":nonroot"):
			t.Errorf("final stage has no USER and %s is not a :nonroot image", img)
		}
		copied := ""
		for _, c := range final.args("COPY") {
			if strings.Contains(c, "--from="+build.name) && build.name != "" {
				f := strings.Fields(c)
				copied = f[len(f)-1]
			}
		}
		if copied == "" {
			t.Fatalf("final stage does not COPY --from=%s", build.name)
		}
		eps := final.args("ENTRYPOINT")
		if len(eps) != 1 {
			t.Fatalf("%d ENTRYPOINTs, want 1", len(eps))
		}
		var ep []string
		if err := json.Unmarshal([]byte(eps[0]), &ep); err != nil || len(ep) == 0 || ep[0] != copied {
			t.Errorf("ENTRYPOINT %s, want the exec form starting the copied binary %s", eps[0], copied)
		}

		// The exposed port is the service's default listen port (the
		// README's configuration contract) and the one the deployments use.
		readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		lm := regexp.MustCompile(`(?m)^\s*listen:\s*(\S+)`).FindSubmatch(readme)
		if lm == nil {
			t.Fatal("README.md documents no default http.listen")
		}
		wantPort := hostPortNum(t, string(lm[1]))
		var exposedPorts []int
		for _, e := range final.args("EXPOSE") {
			for _, p := range strings.Fields(e) {
				n, err := strconv.Atoi(strings.Split(p, "/")[0])
				if err != nil {
					t.Errorf("EXPOSE %q", p)
				}
				exposedPorts = append(exposedPorts, n)
			}
		}
		if !slices.Contains(exposedPorts, wantPort) {
			t.Errorf("EXPOSE %v does not include the default listen port %d", exposedPorts, wantPort)
		}
		if kp := resolveKubeProbes(t); kp.containerPort != wantPort {
			t.Errorf("k8s containerPort %d, want %d", kp.containerPort, wantPort)
		}
	})
}
