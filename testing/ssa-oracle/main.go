// ssa-oracle computes what kube-apiserver's field manager makes of a sequence
// of writes to one Secret, with the real server-side apply library
// (sigs.k8s.io/structured-merge-diff v4, merge.Updater). The fake API
// server's differential test (testing/fake-apiserver/tests/ssa_differential.rs)
// runs the same sequences against the fake and compares.
//
// Around the library it reproduces the layers of kube-apiserver's
// k8s.io/apimachinery/pkg/util/managedfields/internal field manager that
// matter for a Secret written by a few managers:
//   - manager identifiers (buildManagerInfo / BuildManagerIdentifier):
//     {"manager":m,"operation":"Apply"} and
//     {"manager":m,"operation":"Update","apiVersion":"v1"};
//   - Update runs the library as "current-operation" and unions its set into
//     the manager's previous entry (managedFieldsUpdater);
//   - apiVersion, kind, metadata and the server-owned metadata fields are
//     removed from every set (stripMetaManager);
//   - an Update to an existing object without managed fields is not tracked,
//     and an Apply to it first gives every existing field to the Update
//     manager "before-first-apply" (skipNonAppliedManager);
//   - an Update that carries metadata.managedFields uses them instead of the
//     stored ones; `[]` and `[{}]` reset them to none (FieldManager.Update,
//     isResetManagedFields);
//   - Secret conversion: `stringData` is folded into `data` after the
//     library merged the applied configuration (v1 -> internal conversion),
//     `type` defaults to Opaque, empty maps are not stored.
//
// Build (Debian: golang-go, golang-k8s-sigs-structured-merge-diff-dev), in
// GOPATH mode with a GOPATH whose src/sigs.k8s.io/structured-merge-diff/v4 is
// a link to Debian's /usr/share/gocode/src/sigs.k8s.io/structured-merge-diff:
//
//	GO111MODULE=off GOPATH=<that>:/usr/share/gocode go build -o ssa-oracle .
//
// Input, one sequence per line: {"ops":[op,...]} where op is
//
//	{"op":"create","manager":"m","body":{<Secret fields>}}
//	{"op":"apply","manager":"m","force":false,"body":{<Secret fields>}}
//	{"op":"update","manager":"m","patch":{<JSON merge patch>}}
//	{"op":"managedFields","manager":"m","drop":["x"],"clear":false}
//
// `body` holds data, stringData, type, metadata.labels and
// metadata.annotations; `managedFields` is an Update (merge patch) that sends
// the stored entries without those of the managers in `drop` (`[{}]` when
// `clear`). Output, one line per sequence: {"steps":[step,...]} with, after
// each op, the stored object (data, type, labels, annotations; null while it
// does not exist), the managedFields entries (manager, operation, apiVersion,
// fieldsV1) and the conflicts of a refused apply (message and field as
// kube-apiserver's 409 causes give them).
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"sigs.k8s.io/structured-merge-diff/v4/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v4/merge"
	"sigs.k8s.io/structured-merge-diff/v4/typed"
)

// secretSchema is the Secret as kube-apiserver's OpenAPI models it, in the
// library's schema language: structs are maps with fields, map[string]string
// and map[string][]byte are granular maps of string scalars.
const secretSchema = `types:
- name: io.k8s.api.core.v1.Secret
  map:
    fields:
    - name: apiVersion
      type: {scalar: string}
    - name: kind
      type: {scalar: string}
    - name: metadata
      type: {namedType: io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta}
      default: {}
    - name: data
      type: {map: {elementType: {scalar: string}}}
    - name: immutable
      type: {scalar: boolean}
    - name: stringData
      type: {map: {elementType: {scalar: string}}}
    - name: type
      type: {scalar: string}
- name: io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta
  map:
    fields:
    - name: name
      type: {scalar: string}
    - name: namespace
      type: {scalar: string}
    - name: labels
      type: {map: {elementType: {scalar: string}}}
    - name: annotations
      type: {map: {elementType: {scalar: string}}}
`

const (
	apiVersion       = "v1"
	currentOperation = "current-operation"
	beforeFirstApply = "before-first-apply"
)

type op struct {
	Op       string         `json:"op"`
	Manager  string         `json:"manager"`
	Force    bool           `json:"force"`
	Body     map[string]any `json:"body"`
	Patch    map[string]any `json:"patch"`
	Drop     []string       `json:"drop"`
	Clear    bool           `json:"clear"`
	Sequence []op           `json:"ops"`
}

type entry struct {
	Manager    string          `json:"manager"`
	Operation  string          `json:"operation"`
	APIVersion string          `json:"apiVersion,omitempty"`
	FieldsV1   json.RawMessage `json:"fieldsV1,omitempty"`
}

type cause struct {
	Message string `json:"message"`
	Field   string `json:"field"`
}

type step struct {
	Object        map[string]any `json:"object"`
	ManagedFields []entry        `json:"managedFields"`
	Conflicts     []cause        `json:"conflicts"`
	Error         string         `json:"error,omitempty"`
}

type identity struct{}

func (identity) Convert(o *typed.TypedValue, _ fieldpath.APIVersion) (*typed.TypedValue, error) {
	return o, nil
}

func (identity) IsMissingVersionError(error) bool { return false }

// secret is the stored object and its managed fields.
type secret struct {
	parser  typed.ParseableType
	updater *merge.Updater
	live    map[string]any // nil while the object does not exist
	managed fieldpath.ManagedFields
}

// stripSet is stripMetaManager's set: never tracked.
var stripSet = fieldpath.NewSet(
	fieldpath.MakePathOrDie("apiVersion"),
	fieldpath.MakePathOrDie("kind"),
	fieldpath.MakePathOrDie("metadata"),
	fieldpath.MakePathOrDie("metadata", "name"),
	fieldpath.MakePathOrDie("metadata", "namespace"),
	fieldpath.MakePathOrDie("metadata", "creationTimestamp"),
	fieldpath.MakePathOrDie("metadata", "selfLink"),
	fieldpath.MakePathOrDie("metadata", "uid"),
	fieldpath.MakePathOrDie("metadata", "clusterName"),
	fieldpath.MakePathOrDie("metadata", "generation"),
	fieldpath.MakePathOrDie("metadata", "managedFields"),
	fieldpath.MakePathOrDie("metadata", "resourceVersion"),
)

func identifier(manager, operation string) string {
	e := entry{Manager: manager, Operation: operation}
	if operation == "Update" {
		e.APIVersion = apiVersion
	}
	b, _ := json.Marshal(e)
	return string(b)
}

func strip(m fieldpath.ManagedFields) fieldpath.ManagedFields {
	out := fieldpath.ManagedFields{}
	for k, v := range m {
		s := v.Set().Difference(stripSet)
		if !s.Empty() {
			out[k] = fieldpath.NewVersionedSet(s, v.APIVersion(), v.Applied())
		}
	}
	return out
}

func skeleton() map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "s", "namespace": "ns"},
	}
}

// typed parses two objects against the Secret schema.
func (s *secret) typed(a, b map[string]any) (*typed.TypedValue, *typed.TypedValue, error) {
	at, err := s.parser.FromUnstructured(deepCopy(a))
	if err != nil {
		return nil, nil, err
	}
	bt, err := s.parser.FromUnstructured(deepCopy(b))
	return at, bt, err
}

// update is FieldManager.Update below the identifier layer: the library's
// Update as "current-operation", merged into the manager's entry.
func (s *secret) update(live, next map[string]any, managed fieldpath.ManagedFields, manager string) (fieldpath.ManagedFields, error) {
	lt, nt, err := s.typed(live, next)
	if err != nil {
		return nil, err
	}
	_, out, err := s.updater.Update(lt, nt, apiVersion, managed.Copy(), currentOperation)
	if err != nil {
		return nil, err
	}
	out = strip(out)
	id := identifier(manager, "Update")
	if vs, ok := out[currentOperation]; ok {
		delete(out, currentOperation)
		set := vs.Set()
		if prev, ok := out[id]; ok {
			set = set.Union(prev.Set())
		}
		out[id] = fieldpath.NewVersionedSet(set, vs.APIVersion(), vs.Applied())
	}
	return out, nil
}

// doUpdate is an Update (PUT or non-apply PATCH). `incoming` is the
// managedFields list the client sent (nil: none).
func (s *secret) doUpdate(o op, incoming []fieldpath.ManagedFields) error {
	if s.live == nil {
		return fmt.Errorf("update of a missing object")
	}
	next := mergePatch(deepCopy(s.live), o.Patch).(map[string]any)
	store(next)
	managed := s.managed
	switch {
	case incoming == nil:
	case len(incoming[0]) == 0:
		managed = fieldpath.ManagedFields{} // isResetManagedFields: `[]` or `[{}]`
	default:
		managed = incoming[0]
	}
	if len(managed) == 0 {
		s.live, s.managed = next, managed // skipNonAppliedManager: an existing object without managed fields stays untracked
		return nil
	}
	out, err := s.update(s.live, next, managed, o.Manager)
	if err != nil {
		return err
	}
	s.live, s.managed = next, out
	return nil
}

func (s *secret) doCreate(o op) error {
	if s.live != nil {
		return fmt.Errorf("create of an existing object")
	}
	next := withSkeleton(o.Body)
	store(next)
	out, err := s.update(skeleton(), next, fieldpath.ManagedFields{}, o.Manager)
	if err != nil {
		return err
	}
	s.live, s.managed = next, out
	return nil
}

// withSkeleton is body with apiVersion, kind, name and namespace set.
func withSkeleton(body map[string]any) map[string]any {
	obj := deepCopy(body)
	for k, v := range skeleton() {
		if k != "metadata" {
			obj[k] = v
			continue
		}
		meta, _ := obj["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		for mk, mv := range v.(map[string]any) {
			meta[mk] = mv
		}
		obj[k] = meta
	}
	return obj
}

func (s *secret) doApply(o op) ([]cause, error) {
	live := s.live
	managed := s.managed
	if live == nil {
		live = skeleton()
	}
	if len(managed) == 0 && s.live != nil {
		m, err := s.update(skeleton(), live, managed, beforeFirstApply)
		if err != nil {
			return nil, err
		}
		managed = m
	}
	config := withSkeleton(o.Body)
	lt, ct, err := s.typed(live, config)
	if err != nil {
		return nil, err
	}
	merged, out, err := s.updater.Apply(lt, ct, apiVersion, managed.Copy(), identifier(o.Manager, "Apply"), o.Force)
	if err != nil {
		if cs, ok := err.(merge.Conflicts); ok {
			return causes(cs), nil
		}
		return nil, err
	}
	s.managed = strip(out)
	if merged != nil {
		obj := merged.AsValue().Unstructured().(map[string]any)
		store(obj)
		s.live = obj
	} else if s.live == nil {
		store(live)
		s.live = live
	}
	return nil, nil
}

// doManagedFields sends the stored entries without those of o.Drop's
// managers; an empty remainder is sent as `[]`, which resets them like `[{}]`.
func (s *secret) doManagedFields(o op) error {
	incoming := fieldpath.ManagedFields{}
	if !o.Clear {
		drop := map[string]bool{}
		for _, d := range o.Drop {
			drop[d] = true
		}
		for id, vs := range s.managed {
			var e entry
			_ = json.Unmarshal([]byte(id), &e)
			if !drop[e.Manager] {
				incoming[id] = vs
			}
		}
	}
	return s.doUpdate(op{Manager: o.Manager, Patch: map[string]any{}}, []fieldpath.ManagedFields{incoming})
}

// causes renders conflicts as kube-apiserver's 409 causes (internal/conflict.go).
func causes(cs merge.Conflicts) []cause {
	out := []cause{}
	for _, c := range cs {
		var e entry
		msg := fmt.Sprintf("conflict with %q", c.Manager)
		if json.Unmarshal([]byte(c.Manager), &e) == nil {
			msg = fmt.Sprintf("conflict with %q", e.Manager)
			if e.Operation == "Update" {
				msg += " using " + e.APIVersion
			}
		}
		out = append(out, cause{Message: msg, Field: c.Path.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field+out[i].Message < out[j].Field+out[j].Message })
	return out
}

// store does what the Secret's conversion and storage do to an object.
func store(obj map[string]any) {
	if sd, ok := obj["stringData"].(map[string]any); ok {
		data, _ := obj["data"].(map[string]any)
		if data == nil {
			data = map[string]any{}
		}
		for k, v := range sd {
			str, _ := v.(string)
			data[k] = base64.StdEncoding.EncodeToString([]byte(str))
		}
		obj["data"] = data
	}
	delete(obj, "stringData")
	if t, _ := obj["type"].(string); t == "" {
		obj["type"] = "Opaque"
	}
	dropEmpty(obj, "data")
	if meta, ok := obj["metadata"].(map[string]any); ok {
		dropEmpty(meta, "labels")
		dropEmpty(meta, "annotations")
	}
}

func dropEmpty(m map[string]any, k string) {
	if v, ok := m[k]; ok {
		if mm, ok := v.(map[string]any); !ok || len(mm) == 0 {
			delete(m, k)
		}
	}
}

// mergePatch is RFC 7386 JSON merge patch.
func mergePatch(target any, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = mergePatch(t[k], v)
		}
	}
	return t
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if out == nil {
		out = map[string]any{}
	}
	return out
}

func (s *secret) snapshot(cs []cause, err error) step {
	st := step{Conflicts: cs, ManagedFields: []entry{}}
	if cs == nil {
		st.Conflicts = []cause{}
	}
	if err != nil {
		st.Error = err.Error()
	}
	if s.live != nil {
		st.Object = map[string]any{}
		for _, k := range []string{"data", "type"} {
			if v, ok := s.live[k]; ok {
				st.Object[k] = v
			}
		}
		meta, _ := s.live["metadata"].(map[string]any)
		out := map[string]any{}
		for _, k := range []string{"labels", "annotations"} {
			if v, ok := meta[k]; ok {
				out[k] = v
			}
		}
		st.Object["metadata"] = out
	}
	for id, vs := range s.managed {
		var e entry
		_ = json.Unmarshal([]byte(id), &e)
		if e.Operation == "Apply" {
			e.APIVersion = string(vs.APIVersion())
		}
		e.FieldsV1, _ = vs.Set().ToJSON()
		st.ManagedFields = append(st.ManagedFields, e)
	}
	sort.Slice(st.ManagedFields, func(i, j int) bool {
		a, b := st.ManagedFields[i], st.ManagedFields[j]
		return a.Manager+a.Operation < b.Manager+b.Operation
	})
	return st
}

func run(parser typed.ParseableType, ops []op) []step {
	s := &secret{parser: parser, updater: &merge.Updater{Converter: identity{}}, managed: fieldpath.ManagedFields{}}
	steps := []step{}
	for _, o := range ops {
		var cs []cause
		var err error
		switch o.Op {
		case "apply":
			cs, err = s.doApply(o)
		case "create":
			err = s.doCreate(o)
		case "update":
			err = s.doUpdate(o, nil)
		case "managedFields":
			err = s.doManagedFields(o)
		default:
			err = fmt.Errorf("unknown op %q", o.Op)
		}
		steps = append(steps, s.snapshot(cs, err))
	}
	return steps
}

func main() {
	p, err := typed.NewParser(typed.YAMLObject(secretSchema))
	if err != nil {
		fmt.Fprintln(os.Stderr, "schema:", err)
		os.Exit(2)
	}
	parser := p.Type("io.k8s.api.core.v1.Secret")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		var seq op
		if err := json.Unmarshal(in.Bytes(), &seq); err != nil {
			fmt.Fprintln(os.Stderr, "input:", err)
			os.Exit(2)
		}
		if err := enc.Encode(map[string]any{"steps": run(parser, seq.Sequence)}); err != nil {
			fmt.Fprintln(os.Stderr, "output:", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "input:", err)
		os.Exit(2)
	}
}
