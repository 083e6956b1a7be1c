package main

import (
	"fmt"
	"regexp"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
)

// object is one decoded manifest.
type object struct {
	gvk       schema.GroupVersionKind
	namespace string
	name      string
	obj       runtime.Object
}

func (o object) String() string {
	if o.namespace != "" {
		return fmt.Sprintf("%s %s/%s", o.gvk.Kind, o.namespace, o.name)
	}
	return fmt.Sprintf("%s %s", o.gvk.Kind, o.name)
}

// podTemplate is the pod a workload creates, for the cross-object checks.
type podTemplate struct {
	owner     object
	namespace string
	labels    map[string]string
	spec      *corev1.PodSpec
}

type validator struct {
	decoder *strictDecoder
	objects []object
	pods    []podTemplate
	// undecoded counts documents that failed to decode; cross-object checks
	// are skipped then, since every reference to them would fail too.
	undecoded int
}

func newValidator() *validator {
	return &validator{decoder: newStrictDecoder()}
}

// add decodes one document strictly and runs the checks that need only it.
func (v *validator) add(d document) error {
	obj, gvk, err := v.decoder.decode(d.data)
	if err != nil {
		v.undecoded++
		return err
	}
	acc, err := meta.Accessor(obj)
	if err != nil {
		return fmt.Errorf("%s has no object metadata: %w", gvk.Kind, err)
	}
	o := object{gvk: gvk, namespace: acc.GetNamespace(), name: acc.GetName(), obj: obj}
	for _, prev := range v.objects {
		if prev.gvk.GroupKind() == gvk.GroupKind() && prev.namespace == o.namespace && prev.name == o.name {
			return fmt.Errorf("%s is defined twice", o)
		}
	}
	v.objects = append(v.objects, o)

	var errs []error
	errs = append(errs, checkMetadata(o, acc)...)
	errs = append(errs, v.checkKind(o)...)
	return joinErrors(o, errs)
}

func checkMetadata(o object, acc metav1.Object) []error {
	var errs []error
	name := o.name
	switch {
	case name == "":
		errs = append(errs, fmt.Errorf("metadata.name is empty"))
	case o.gvk.Kind == "Service":
		for _, msg := range validation.IsDNS1035Label(name) {
			errs = append(errs, fmt.Errorf("metadata.name %q: %s", name, msg))
		}
	default:
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			errs = append(errs, fmt.Errorf("metadata.name %q: %s", name, msg))
		}
	}
	for _, e := range metav1validation.ValidateLabels(acc.GetLabels(), field.NewPath("metadata", "labels")) {
		errs = append(errs, e)
	}
	return errs
}

// checkKind runs the per-kind checks and records pod templates.
func (v *validator) checkKind(o object) []error {
	switch t := o.obj.(type) {
	case *corev1.ConfigMap:
		return v.checkEmbeddedDocuments(t)
	case *appsv1.Deployment:
		return v.addWorkload(o, t.Spec.Selector, t.Spec.Template)
	case *appsv1.DaemonSet:
		return v.addWorkload(o, t.Spec.Selector, t.Spec.Template)
	case *appsv1.StatefulSet:
		return v.addWorkload(o, t.Spec.Selector, t.Spec.Template)
	case *batchv1.Job:
		extra := []string{}
		if t.Spec.CompletionMode != nil && *t.Spec.CompletionMode == batchv1.IndexedCompletion {
			extra = append(extra, "JOB_COMPLETION_INDEX") // injected by the Job controller
		}
		v.pods = append(v.pods, podTemplate{owner: o, namespace: o.namespace, labels: t.Spec.Template.Labels, spec: &t.Spec.Template.Spec})
		return checkPodSpec(&t.Spec.Template.Spec, extra)
	}
	return nil
}

func (v *validator) addWorkload(o object, sel *metav1.LabelSelector, tpl corev1.PodTemplateSpec) []error {
	var errs []error
	selector, err := metav1.LabelSelectorAsSelector(sel)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("spec.selector: %w", err))
	case sel == nil || selector.Empty():
		errs = append(errs, fmt.Errorf("spec.selector is empty"))
	case !selector.Matches(labels.Set(tpl.Labels)):
		errs = append(errs, fmt.Errorf("spec.selector %s does not match the template's labels %v", selector, tpl.Labels))
	}
	v.pods = append(v.pods, podTemplate{owner: o, namespace: o.namespace, labels: tpl.Labels, spec: &tpl.Spec})
	return append(errs, checkPodSpec(&tpl.Spec, nil)...)
}

// checkEmbeddedDocuments decodes ConfigMap values that are typed documents.
func (v *validator) checkEmbeddedDocuments(cm *corev1.ConfigMap) []error {
	var errs []error
	keys := make([]string, 0, len(cm.Data))
	for k := range cm.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		value := cm.Data[key]
		if !isTypedDocument(value) {
			continue
		}
		obj, _, err := v.decoder.decode([]byte(value))
		if err != nil {
			errs = append(errs, fmt.Errorf("data[%q]: %w", key, err))
			continue
		}
		if cfg, ok := obj.(*EndpointPickerConfig); ok {
			for _, e := range checkEndpointPickerConfig(cfg) {
				errs = append(errs, fmt.Errorf("data[%q]: %w", key, e))
			}
		}
	}
	return errs
}

var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// refs lists the $(NAME) references Kubernetes would expand in s ($$ escapes).
func refs(s string) []string {
	var out []string
	for _, m := range varRef.FindAllStringSubmatch(s, -1) {
		if m[1] != "" {
			out = append(out, m[1])
		}
	}
	return out
}

// checkPodSpec checks what the kubelet would trip over at run time: mounts of
// undeclared volumes, probes on undeclared named ports, and $(VAR) references
// Kubernetes would leave unexpanded (an env value may use only the variables
// above it; command and args any of the container's).
func checkPodSpec(spec *corev1.PodSpec, injected []string) []error {
	var errs []error
	volumes := map[string]bool{}
	for _, vol := range spec.Volumes {
		if volumes[vol.Name] {
			errs = append(errs, fmt.Errorf("volume %q declared twice", vol.Name))
		}
		volumes[vol.Name] = true
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				errs = append(errs, fmt.Errorf("container %q mounts undeclared volume %q", c.Name, m.Name))
			}
		}
		errs = append(errs, checkContainerRefs(c, injected)...)
	}
	return errs
}

func checkContainerRefs(c corev1.Container, injected []string) []error {
	var errs []error
	ports := map[string]bool{}
	for _, p := range c.Ports {
		if p.Name == "" {
			continue
		}
		if ports[p.Name] {
			errs = append(errs, fmt.Errorf("container %q declares port %q twice", c.Name, p.Name))
		}
		ports[p.Name] = true
	}
	for kind, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if probe == nil || probe.HTTPGet == nil {
			continue
		}
		if name := probe.HTTPGet.Port.StrVal; name != "" && !ports[name] {
			errs = append(errs, fmt.Errorf("container %q %s probe uses undeclared port %q", c.Name, kind, name))
		}
	}
	defined := map[string]bool{}
	for _, n := range injected {
		defined[n] = true
	}
	for _, e := range c.Env {
		for _, r := range refs(e.Value) {
			if !defined[r] {
				errs = append(errs, fmt.Errorf("container %q env %s refers to $(%s), not defined above it", c.Name, e.Name, r))
			}
		}
		defined[e.Name] = true
	}
	if len(c.EnvFrom) > 0 {
		return errs // names from ConfigMaps/Secrets are unknown here
	}
	for _, s := range append(append([]string{}, c.Command...), c.Args...) {
		for _, r := range refs(s) {
			if !defined[r] {
				errs = append(errs, fmt.Errorf("container %q argument %q refers to undefined $(%s)", c.Name, s, r))
			}
		}
	}
	return errs
}

func joinErrors(o object, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msg := o.String() + ":"
	for _, e := range errs {
		msg += "\n    " + e.Error()
	}
	return fmt.Errorf("%s", msg)
}

// crossChecks checks references between objects of the stream.
func (v *validator) crossChecks() []string {
	if v.undecoded > 0 {
		return []string{fmt.Sprintf("cross-object checks skipped: %d document(s) did not decode", v.undecoded)}
	}
	var out []string
	for _, o := range v.objects {
		for _, e := range v.crossCheck(o) {
			out = append(out, fmt.Sprintf("%s: %v", o, e))
		}
	}
	return out
}

func (v *validator) crossCheck(o object) []error {
	switch t := o.obj.(type) {
	case *corev1.Service:
		return v.checkService(o, t)
	case *policyv1.PodDisruptionBudget:
		_, err := v.selected(o.namespace, t.Spec.Selector)
		return errList(err)
	case *monitoringv1.PodMonitor:
		return v.checkPodMonitor(o, t)
	case *inferencev1.InferencePool:
		return v.checkInferencePool(o, t)
	case *autoscalingv2.HorizontalPodAutoscaler:
		return v.checkHPA(o, t)
	case *rbacv1.RoleBinding:
		return errList(v.mustExist(o.namespace, t.RoleRef.Kind, t.RoleRef.Name))
	case *rbacv1.ClusterRoleBinding:
		return errList(v.mustExist("", t.RoleRef.Kind, t.RoleRef.Name))
	}
	return nil
}

func errList(err error) []error {
	if err == nil {
		return nil
	}
	return []error{err}
}

// selected returns the pod templates of the namespace a selector matches, and
// an error when it matches none: a selector that selects nothing is a typo.
func (v *validator) selected(namespace string, sel *metav1.LabelSelector) ([]podTemplate, error) {
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	if sel == nil || selector.Empty() {
		return nil, fmt.Errorf("selector is empty (it would select every pod)")
	}
	var out []podTemplate
	for _, p := range v.pods {
		if p.namespace == namespace && selector.Matches(labels.Set(p.labels)) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("selector %s matches no pod template in the input", selector)
	}
	return out, nil
}

func hasContainerPort(pods []podTemplate, name string, number int32) bool {
	for _, p := range pods {
		for _, c := range p.spec.Containers {
			for _, port := range c.Ports {
				if (name != "" && port.Name == name) || (name == "" && port.ContainerPort == number) {
					return true
				}
			}
		}
	}
	return false
}

func (v *validator) checkService(o object, s *corev1.Service) []error {
	if len(s.Spec.Selector) == 0 {
		return nil // a Service without selector is managed by hand
	}
	pods, err := v.selected(o.namespace, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, p := range s.Spec.Ports {
		tp := p.TargetPort
		name, number := tp.StrVal, tp.IntVal
		if name == "" && number == 0 {
			number = p.Port
		}
		if !hasContainerPort(pods, name, number) {
			errs = append(errs, fmt.Errorf("port %q targets %s, which no selected pod declares", p.Name, tp.String()))
		}
	}
	return errs
}

func (v *validator) checkPodMonitor(o object, pm *monitoringv1.PodMonitor) []error {
	pods, err := v.selected(o.namespace, &pm.Spec.Selector)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, ep := range pm.Spec.PodMetricsEndpoints {
		if ep.Port != nil && !hasContainerPort(pods, *ep.Port, 0) {
			errs = append(errs, fmt.Errorf("endpoint port %q is not declared by the selected pods", *ep.Port))
		}
	}
	return errs
}

func (v *validator) checkInferencePool(o object, pool *inferencev1.InferencePool) []error {
	matchLabels := map[string]string{}
	for k, val := range pool.Spec.Selector.MatchLabels {
		matchLabels[string(k)] = string(val)
	}
	pods, err := v.selected(o.namespace, &metav1.LabelSelector{MatchLabels: matchLabels})
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, p := range pool.Spec.TargetPorts {
		if !hasContainerPort(pods, "", int32(p.Number)) {
			errs = append(errs, fmt.Errorf("target port %d is not declared by the selected pods", p.Number))
		}
	}
	if ref := pool.Spec.EndpointPickerRef; ref != nil {
		kind := string(ref.Kind)
		if kind == "" {
			kind = "Service"
		}
		errs = append(errs, errList(v.mustExist(o.namespace, kind, string(ref.Name)))...)
	}
	return errs
}

// checkHPA requires the scale target in the input and no fixed replica count
// on it: `helm upgrade` would reset what the HPA chose.
func (v *validator) checkHPA(o object, hpa *autoscalingv2.HorizontalPodAutoscaler) []error {
	ref := hpa.Spec.ScaleTargetRef
	for _, t := range v.objects {
		if t.gvk.Kind != ref.Kind || t.namespace != o.namespace || t.name != ref.Name {
			continue
		}
		if d, ok := t.obj.(*appsv1.Deployment); ok && d.Spec.Replicas != nil {
			return []error{fmt.Errorf("its target %s also sets spec.replicas", t)}
		}
		return nil
	}
	return []error{fmt.Errorf("scale target %s %s is not in the input", ref.Kind, ref.Name)}
}

func (v *validator) mustExist(namespace, kind, name string) error {
	for _, t := range v.objects {
		if t.gvk.Kind == kind && t.name == name && (t.namespace == namespace || t.namespace == "") {
			return nil
		}
	}
	return fmt.Errorf("refers to %s %q, which is not in the input", kind, name)
}
