package main

import (
	"bufio"
	"strings"
	"testing"
)

// run validates a manifest stream and returns its problems.
func run(t *testing.T, stream string) []string {
	t.Helper()
	docs, err := splitDocuments(bufio.NewReader(strings.NewReader(stream)))
	if err != nil {
		t.Fatalf("split: %v", err)
	}
	v := newValidator()
	var problems []string
	for _, d := range docs {
		if err := v.add(d); err != nil {
			problems = append(problems, err.Error())
		}
	}
	return append(problems, v.crossChecks()...)
}

const deployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: web:1
          ports: [{name: http, containerPort: 3000}]
          env:
            - {name: A, value: a}
            - {name: B, value: "$(A)-b"}
          args: ["--b=$(B)", "--literal=$$(A)"]
          readinessProbe: {httpGet: {path: /health, port: http}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`

func TestValidStreamPasses(t *testing.T) {
	if p := run(t, deployment+"---\n# Source: only a comment\n"); len(p) != 0 {
		t.Fatalf("unexpected problems: %v", p)
	}
}

func TestRejects(t *testing.T) {
	cases := map[string]struct{ from, to, want string }{
		"unknown field":      {"  selector: {matchLabels", "  selectr: {matchLabels", `unknown field "spec.selectr"`},
		"case mismatch":      {"containers:", "Containers:", `unknown field "spec.template.spec.Containers"`},
		"duplicate field":    {"metadata: {name: web, namespace: ns}\nspec:\n  selector", "metadata: {name: web, namespace: ns, name: x}\nspec:\n  selector", "already set"},
		"wrong type":         {"containerPort: 3000", "containerPort: http", "cannot unmarshal"},
		"unknown kind":       {"kind: Deployment", "kind: Deploymnt", "unknown kind apps/v1 Deploymnt"},
		"undefined env ref":  {`"$(A)-b"`, `"$(C)-b"`, "refers to $(C)"},
		"env ref below":      {"- {name: A, value: a}\n            - {name: B, value: \"$(A)-b\"}", "- {name: B, value: \"$(A)-b\"}\n            - {name: A, value: a}", "refers to $(A)"},
		"undefined arg ref":  {"--b=$(B)", "--b=$(D)", "undefined $(D)"},
		"probe port":         {"port: http}}", "port: htp}}", `undeclared port "htp"`},
		"selector mismatch":  {"selector: {app: web}", "selector: {app: api}", "matches no pod template"},
		"service targetPort": {"targetPort: http", "targetPort: web", "no selected pod declares"},
		"bad service name":   {"kind: Service\nmetadata: {name: web", "kind: Service\nmetadata: {name: 1web", "metadata.name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(deployment, c.from) {
				t.Fatalf("test case does not apply: %q", c.from)
			}
			p := strings.Join(run(t, strings.Replace(deployment, c.from, c.to, 1)), "\n")
			if !strings.Contains(p, c.want) {
				t.Fatalf("want a problem containing %q, got:\n%s", c.want, p)
			}
		})
	}
}

func TestDuplicateObject(t *testing.T) {
	p := strings.Join(run(t, deployment+"---\n"+deployment), "\n")
	if !strings.Contains(p, "defined twice") {
		t.Fatalf("got %s", p)
	}
}

const eppConfigMap = `
apiVersion: v1
kind: ConfigMap
metadata: {name: epp, namespace: ns}
data:
  config.yaml: |
    apiVersion: llm-d.ai/v1alpha1
    kind: EndpointPickerConfig
    plugins:
      - type: queue-scorer
      - type: core-metrics-extractor
        parameters:
          defaultEngine: candlelight
          engineConfigs:
            - name: candlelight
              queuedRequestsSpec: candlelight_requests_waiting
    schedulingProfiles:
      - name: default
        plugins:
          - pluginRef: queue-scorer
            weight: 1
  other.yaml: "not: typed"
`

func TestEndpointPickerConfig(t *testing.T) {
	if p := run(t, eppConfigMap); len(p) != 0 {
		t.Fatalf("unexpected problems: %v", p)
	}
	for _, c := range []struct{ from, to, want string }{
		{"schedulingProfiles:", "schedulingProfile:", `unknown field "schedulingProfile"`},
		{"queuedRequestsSpec", "queuedRequests", `unknown field "engineConfigs[0].queuedRequests"`},
		{"- pluginRef: queue-scorer", "- pluginRef: queue-scorers", `undeclared plugin "queue-scorers"`},
		{"defaultEngine: candlelight", "defaultEngine: candlelite", `defaultEngine "candlelite"`},
		{"kind: EndpointPickerConfig", "kind: EndpointPickerConfg", "unknown kind llm-d.ai/v1alpha1 EndpointPickerConfg"},
	} {
		p := strings.Join(run(t, strings.Replace(eppConfigMap, c.from, c.to, 1)), "\n")
		if !strings.Contains(p, c.want) {
			t.Errorf("%s -> %s: want %q, got:\n%s", c.from, c.to, c.want, p)
		}
	}
}
