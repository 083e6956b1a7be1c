package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// document is one YAML document of the input stream.
type document struct {
	index  int    // 0-based position in the stream
	source string // helm's "# Source: chart/templates/x.yaml" comment, if any
	data   []byte
}

func (d document) where() string {
	if d.source != "" {
		return fmt.Sprintf("document %d (%s)", d.index, d.source)
	}
	return fmt.Sprintf("document %d", d.index)
}

var sourceComment = regexp.MustCompile(`(?m)^# Source: (.+)$`)

// splitDocuments splits a multi-document YAML stream, dropping documents that
// hold only comments or whitespace (helm emits those for disabled templates).
func splitDocuments(r *bufio.Reader) ([]document, error) {
	reader := utilyaml.NewYAMLReader(r)
	var docs []document
	for i := 0; ; i++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if isBlank(raw) {
			continue
		}
		d := document{index: i, data: raw}
		if m := sourceComment.FindSubmatch(raw); m != nil {
			d.source = string(m[1])
		}
		docs = append(docs, d)
	}
}

func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") && t != "---" {
			return false
		}
	}
	return true
}

// newScheme registers the API groups the chart may render. A kind outside
// them fails to decode, which is the point: an unknown kind is a typo or an
// API this tool does not know how to check.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		policyv1.AddToScheme, autoscalingv2.AddToScheme, rbacv1.AddToScheme,
		networkingv1.AddToScheme, schedulingv1.AddToScheme, storagev1.AddToScheme,
		monitoringv1.AddToScheme, inferencev1.AddToScheme, gatewayv1.AddToScheme,
		addEndpointPickerConfig,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("invariant: scheme registration cannot fail: %v", err))
		}
	}
	return s
}

// strictDecoder decodes YAML or JSON into the registered type of its
// apiVersion/kind and rejects unknown fields, duplicate fields and
// case-mismatched field names (apimachinery's strict mode).
type strictDecoder struct {
	scheme *runtime.Scheme
	codec  *kjson.Serializer
}

func newStrictDecoder() *strictDecoder {
	s := newScheme()
	return &strictDecoder{
		scheme: s,
		codec: kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s,
			kjson.SerializerOptions{Yaml: true, Strict: true}),
	}
}

func (d *strictDecoder) decode(data []byte) (runtime.Object, schema.GroupVersionKind, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		return nil, schema.GroupVersionKind{}, fmt.Errorf("not valid YAML: %w", err)
	}
	if meta.APIVersion == "" || meta.Kind == "" {
		return nil, schema.GroupVersionKind{}, errors.New("missing apiVersion or kind")
	}
	gvk := schema.FromAPIVersionAndKind(meta.APIVersion, meta.Kind)
	if !d.scheme.Recognizes(gvk) {
		return nil, gvk, fmt.Errorf("unknown kind %s %s (not in k8s-validate's scheme)", meta.APIVersion, meta.Kind)
	}
	obj, _, err := d.codec.Decode(data, nil, nil)
	if err != nil {
		return nil, gvk, fmt.Errorf("%s %s: %w", meta.APIVersion, meta.Kind, err)
	}
	return obj, gvk, nil
}

// isTypedDocument reports whether a ConfigMap value looks like a typed
// document (top-level apiVersion and kind), which is then decoded strictly.
func isTypedDocument(value string) bool {
	var meta map[string]any
	if err := yaml.Unmarshal([]byte(value), &meta); err != nil {
		return false
	}
	_, hasVersion := meta["apiVersion"]
	_, hasKind := meta["kind"]
	return hasVersion && hasKind
}
