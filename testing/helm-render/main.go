// helm-render renders a Helm chart offline, the way `helm template` does, for
// CI on machines where Helm itself cannot be installed.
//
// It implements the parts of Helm that charts/kubestash uses: Chart.yaml
// metadata, values.yaml deep-merged with -f files (a null in an override
// deletes the key, as in Helm), the .Release/.Chart/.Capabilities/.Template/
// .Files objects, sprig's function map (without env/expandenv) plus Helm's own
// functions (include, tpl, required, fail, toYaml, fromYaml, toJson, fromJson,
// lookup -> empty map), partials from _*.tpl files, "<no value>" scrubbing,
// and Helm's install order for the output stream. Values are normalised
// through JSON like Helm does, so numbers are float64 in templates.
//
// Build (Debian packages golang-go, golang-github-masterminds-sprig-dev,
// golang-gopkg-yaml.v3-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o helm-render .
//
// Usage:
//
//	helm-render [--name R] [--namespace N] [-f values.yaml]... [--include-crds]
//	            [--namespace-manifest] [--api-versions g/v]... CHART_DIR
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Helm's InstallOrder (pkg/releaseutil/kind_sorter.go).
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret",
	"SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
	"PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role",
	"RoleList", "RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod",
	"ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
	"IngressClass", "Ingress", "APIService",
}

type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

type files map[string][]byte

func (f files) Get(name string) string { return string(f[name]) }
func (f files) GetBytes(name string) []byte {
	return f[name]
}

func main() {
	var valueFiles, apis multiFlag
	name := flag.String("name", "kubestash", "release name")
	namespace := flag.String("namespace", "kubestash", "release namespace")
	includeCRDs := flag.Bool("include-crds", false, "emit the chart's crds/ first")
	nsManifest := flag.Bool("namespace-manifest", false, "emit a Namespace object for the release namespace")
	kubeVersion := flag.String("kube-version", "v1.32.0", "Capabilities.KubeVersion")
	flag.Var(&valueFiles, "f", "values file (repeatable; later files win)")
	flag.Var(&apis, "api-versions", "extra Capabilities.APIVersions (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helm-render [flags] CHART_DIR")
		os.Exit(2)
	}
	out, err := render(flag.Arg(0), *name, *namespace, *kubeVersion, valueFiles, apis, *includeCRDs, *nsManifest)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func readYAML(file string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	// Through JSON, as Helm (sigs.k8s.io/yaml) does: numbers become float64.
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("%s: top level must be a map: %w", file, err)
	}
	return m, nil
}

// mergeValues merges src over dst like Helm's CoalesceTables for user values:
// maps merge recursively, everything else replaces, null deletes.
func mergeValues(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = mergeValues(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

func toYAML(v interface{}) string {
	// Normalise through JSON first (as sigs.k8s.io/yaml does), so structs and
	// typed maps come out the same way as in Helm.
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var n interface{}
	if err := json.Unmarshal(j, &n); err != nil {
		return ""
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return ""
	}
	enc.Close()
	return strings.TrimSuffix(buf.String(), "\n")
}

func fromYAML(s string) map[string]interface{} {
	var v interface{}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		m["Error"] = err.Error()
		return m
	}
	j, _ := json.Marshal(v)
	if err := json.Unmarshal(j, &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func render(chartDir, name, namespace, kubeVersion string, valueFiles, apis []string, includeCRDs, nsManifest bool) (string, error) {
	chartMeta, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	chartName, _ := chartMeta["name"].(string)
	if chartName == "" {
		return "", errors.New("Chart.yaml has no name")
	}
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range valueFiles {
		o, err := readYAML(f)
		if err != nil {
			return "", err
		}
		values = mergeValues(values, o)
	}

	// Chart object with Helm's capitalised field names.
	chartObj := map[string]interface{}{}
	for k, v := range chartMeta {
		chartObj[strings.ToUpper(k[:1])+k[1:]] = v
	}

	// .Files: every non-template file of the chart, by chart-relative path.
	fls := files{}
	err = filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(rel, "templates/") || rel == "values.yaml" || rel == "Chart.yaml" {
			return nil
		}
		b, err := os.ReadFile(p)
		fls[rel] = b
		return err
	})
	if err != nil {
		return "", err
	}

	major, minor := "1", "32"
	if parts := strings.Split(strings.TrimPrefix(kubeVersion, "v"), "."); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	baseAPIs := apiVersions{"v1", "apps/v1", "rbac.authorization.k8s.io/v1",
		"apiextensions.k8s.io/v1", "coordination.k8s.io/v1", "events.k8s.io/v1",
		"policy/v1", "networking.k8s.io/v1"}
	baseAPIs = append(baseAPIs, apis...)

	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": name, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": chartObj,
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{
				"Version": kubeVersion, "GitVersion": kubeVersion,
				"Major": major, "Minor": minor,
			},
			"APIVersions": baseAPIs,
		},
		"Files": fls,
	}

	// Collect templates.
	tmplDir := filepath.Join(chartDir, "templates")
	var names []string
	sources := map[string]string{}
	err = filepath.Walk(tmplDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		tname := path.Join(chartName, filepath.ToSlash(rel))
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		names = append(names, tname)
		sources[tname] = string(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)

	root := template.New("gotpl")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	includedNames := map[string]int{}
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["toJson"] = func(v interface{}) string {
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(b)
	}
	funcs["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["include"] = func(n string, data interface{}) (string, error) {
		if includedNames[n] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", n)
		}
		includedNames[n]++
		defer func() { includedNames[n]-- }()
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, n, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	root.Funcs(funcs).Option("missingkey=zero")
	for _, n := range names {
		if _, err := root.New(n).Parse(sources[n]); err != nil {
			return "", err
		}
	}

	type doc struct {
		source, body, kind string
	}
	var docs []doc
	for _, n := range names {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") {
			continue
		}
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{
			"Name": n, "BasePath": path.Join(chartName, "templates"),
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, n, data); err != nil {
			return "", err
		}
		if strings.HasSuffix(base, "NOTES.txt") {
			continue // rendered (so its errors show), not part of the manifests
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		// Split into documents as Helm does, drop empty ones.
		for _, part := range splitDocs(out) {
			if strings.TrimSpace(stripComments(part)) == "" {
				continue
			}
			var head struct {
				Kind string `yaml:"kind"`
			}
			if err := yaml.Unmarshal([]byte(part), &head); err != nil {
				return "", fmt.Errorf("%s renders invalid YAML: %w\n%s", n, err, part)
			}
			docs = append(docs, doc{source: n, body: part, kind: head.Kind})
		}
	}
	rank := func(kind string) int {
		for i, k := range installOrder {
			if k == kind {
				return i
			}
		}
		return len(installOrder)
	}
	sort.SliceStable(docs, func(i, j int) bool { return rank(docs[i].kind) < rank(docs[j].kind) })

	var b strings.Builder
	if nsManifest {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", namespace)
	}
	if includeCRDs {
		var crds []string
		for f := range fls {
			if strings.HasPrefix(f, "crds/") && (strings.HasSuffix(f, ".yaml") || strings.HasSuffix(f, ".yml")) {
				crds = append(crds, f)
			}
		}
		sort.Strings(crds)
		for _, f := range crds {
			for _, part := range splitDocs(string(fls[f])) {
				if strings.TrimSpace(stripComments(part)) == "" {
					continue
				}
				fmt.Fprintf(&b, "---\n# Source: %s/%s\n%s\n", chartName, f, strings.TrimSpace(part))
			}
		}
	}
	for _, d := range docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", d.source, strings.TrimSpace(d.body))
	}
	return b.String(), nil
}

func splitDocs(s string) []string {
	var parts []string
	var cur []string
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			parts = append(parts, strings.Join(cur, "\n"))
			cur = nil
			continue
		}
		cur = append(cur, line)
	}
	return append(parts, strings.Join(cur, "\n"))
}

func stripComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
