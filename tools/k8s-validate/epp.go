package main

// The endpoint picker's configuration file. Its Go types live in
// github.com/llm-d/llm-d-router (apix/config/v1alpha1, plugin parameter
// structs under pkg/epp/framework/plugins), but that module is not served by
// the Go module proxy this project builds from, so the shapes are restated
// here from llm-d-router v0.10.0 and decoded just as strictly. Keep them in
// step when the chart's EPP image tag moves.

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
)

var eppGroupVersion = schema.GroupVersion{Group: "llm-d.ai", Version: "v1alpha1"}

// EndpointPickerConfig mirrors apix/config/v1alpha1.EndpointPickerConfig.
type EndpointPickerConfig struct {
	metav1.TypeMeta    `json:",inline"`
	FeatureGates       []string                  `json:"featureGates,omitempty"`
	Plugins            []PluginSpec              `json:"plugins"`
	SchedulingProfiles []SchedulingProfile       `json:"schedulingProfiles"`
	DataLayer          *DataLayerConfig          `json:"dataLayer"`
	FlowControl        *FlowControlConfig        `json:"flowControl,omitempty"`
	RequestHandler     *RequestHandlerConfig     `json:"requestHandler,omitempty"`
	SaturationDetector *SaturationDetectorConfig `json:"saturationDetector,omitempty"`
	Parser             *ParserConfig             `json:"parser,omitempty"`
}

type PluginSpec struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Parameters json.RawMessage `json:"parameters"`
}

type SchedulingProfile struct {
	Name    string             `json:"name"`
	Plugins []SchedulingPlugin `json:"plugins"`
}

type SchedulingPlugin struct {
	PluginRef string   `json:"pluginRef"`
	Weight    *float64 `json:"weight"`
}

type SaturationDetectorConfig struct {
	PluginRef string `json:"pluginRef,omitempty"`
}

type DataLayerConfig struct {
	InjectDefaults              *bool             `json:"injectDefaults,omitempty"`
	Sources                     []DataLayerSource `json:"sources,omitempty"`
	Discovery                   *ParserConfig     `json:"discovery,omitempty"`
	CrossReplicaSyncerPluginRef string            `json:"crossReplicaSyncerPluginRef,omitempty"`
	CrossReplicaSyncInterval    *metav1.Duration  `json:"crossReplicaSyncInterval,omitempty"`
}

type DataLayerSource struct {
	PluginRef  string         `json:"pluginRef"`
	Extractors []ParserConfig `json:"extractors"`
}

type RequestHandlerConfig struct {
	Parsers []ParserConfig `json:"parsers,omitempty"`
}

// ParserConfig is upstream's {pluginRef} shape, shared here by the discovery,
// extractor and parser references that have exactly that one field.
type ParserConfig struct {
	PluginRef string `json:"pluginRef"`
}

type FlowControlConfig struct {
	MaxBytes                    *resource.Quantity        `json:"maxBytes,omitempty"`
	MaxRequests                 *resource.Quantity        `json:"maxRequests,omitempty"`
	DefaultRequestTTL           *metav1.Duration          `json:"defaultRequestTTL,omitempty"`
	DefaultPriorityBand         *PriorityBandConfig       `json:"defaultPriorityBand,omitempty"`
	DefaultNegativePriorityBand *PriorityBandConfig       `json:"defaultNegativePriorityBand,omitempty"`
	PriorityBands               []PriorityBandConfig      `json:"priorityBands,omitempty"`
	UsageLimitPolicyPluginRef   string                    `json:"usageLimitPolicyPluginRef,omitempty"`
	SaturationDetector          *SaturationDetectorConfig `json:"saturationDetector,omitempty"`
	EnableEviction              bool                      `json:"enableEviction,omitempty"`
}

type PriorityBandConfig struct {
	Priority          int                `json:"priority"`
	MaxBytes          *resource.Quantity `json:"maxBytes,omitempty"`
	MaxRequests       *resource.Quantity `json:"maxRequests,omitempty"`
	FairnessPolicyRef string             `json:"fairnessPolicyRef,omitempty"`
	OrderingPolicyRef string             `json:"orderingPolicyRef,omitempty"`
}

// DeepCopyObject satisfies runtime.Object; the config is never mutated.
func (c *EndpointPickerConfig) DeepCopyObject() runtime.Object {
	out := *c
	return &out
}

func addEndpointPickerConfig(s *runtime.Scheme) error {
	s.AddKnownTypes(eppGroupVersion, &EndpointPickerConfig{})
	return nil
}

// metricsExtractorParams mirrors the core-metrics-extractor plugin's
// parameters (pkg/epp/framework/plugins/datalayer/extractor/metrics).
type metricsExtractorParams struct {
	EngineLabelKey string         `json:"engineLabelKey"`
	DefaultEngine  string         `json:"defaultEngine"`
	EngineConfigs  []engineConfig `json:"engineConfigs"`
}

type engineConfig struct {
	Name                    string         `json:"name"`
	QueuedRequestsSpec      string         `json:"queuedRequestsSpec"`
	RunningRequestsSpec     string         `json:"runningRequestsSpec"`
	KVUsageSpec             string         `json:"kvUsageSpec"`
	LoRASpec                string         `json:"loraSpec"`
	CacheInfoSpec           string         `json:"cacheInfoSpec"`
	CacheBlockSizeLabelName string         `json:"cacheBlockSizeLabelName,omitempty"`
	CacheNumBlocksLabelName string         `json:"cacheNumBlocksLabelName,omitempty"`
	CacheBlockSizeSpec      string         `json:"cacheBlockSizeSpec,omitempty"`
	CacheNumBlocksSpec      string         `json:"cacheNumBlocksSpec,omitempty"`
	CustomMetrics           []customMetric `json:"customMetrics,omitempty"`
}

type customMetric struct {
	AttributeKey string `json:"attributeKey"`
	MetricSpec   string `json:"metricSpec"`
}

// metricsDataSourceParams mirrors the metrics-data-source plugin's parameters
// (pkg/epp/framework/plugins/datalayer/source/metrics).
type metricsDataSourceParams struct {
	Scheme             string `json:"scheme"`
	Path               string `json:"path"`
	Port               *int   `json:"port,omitempty"`
	InsecureSkipVerify bool   `json:"insecureSkipVerify"`
	CACertPath         string `json:"caCertPath"`
	ClientCertPath     string `json:"clientCertPath"`
	ClientKeyPath      string `json:"clientKeyPath"`
	Interval           string `json:"interval"`
}

// checkEndpointPickerConfig checks what the picker checks when it loads the
// file: known parameters of the plugins above, engine names, and scheduling
// profiles that name declared plugins (a plugin's name defaults to its type).
func checkEndpointPickerConfig(cfg *EndpointPickerConfig) []error {
	var errs []error
	declared := map[string]bool{}
	for _, p := range cfg.Plugins {
		if p.Type == "" {
			errs = append(errs, fmt.Errorf("plugin %q has no type", p.Name))
		}
		name := p.Name
		if name == "" {
			name = p.Type
		}
		if declared[name] {
			errs = append(errs, fmt.Errorf("plugin name %q declared twice", name))
		}
		declared[name] = true
		if err := checkPluginParameters(p); err != nil {
			errs = append(errs, fmt.Errorf("plugin %q parameters: %w", name, err))
		}
	}
	for _, prof := range cfg.SchedulingProfiles {
		for _, ref := range prof.Plugins {
			if !declared[ref.PluginRef] {
				errs = append(errs, fmt.Errorf("scheduling profile %q refers to undeclared plugin %q", prof.Name, ref.PluginRef))
			}
		}
	}
	return errs
}

func checkPluginParameters(p PluginSpec) error {
	if len(p.Parameters) == 0 {
		return nil
	}
	switch p.Type {
	case "core-metrics-extractor":
		var params metricsExtractorParams
		if err := strictJSON(p.Parameters, &params); err != nil {
			return err
		}
		return checkEngines(params)
	case "metrics-data-source":
		var params metricsDataSourceParams
		return strictJSON(p.Parameters, &params)
	}
	return nil
}

func checkEngines(params metricsExtractorParams) error {
	builtin := map[string]bool{"vllm": true, "sglang": true, "trtllm-serve": true, "triton-tensorrt-llm": true, "triton": true}
	known := map[string]bool{}
	for k := range builtin {
		known[k] = true
	}
	for _, e := range params.EngineConfigs {
		if e.Name == "" {
			return fmt.Errorf("an engine config has no name")
		}
		known[e.Name] = true
	}
	if params.DefaultEngine != "" && !known[params.DefaultEngine] {
		return fmt.Errorf("defaultEngine %q is not a built-in engine nor in engineConfigs", params.DefaultEngine)
	}
	return nil
}

// strictJSON decodes like apimachinery's strict mode: case-sensitive, and
// unknown or duplicate fields are errors.
func strictJSON(data []byte, into any) error {
	strict, err := kjson.UnmarshalStrict(data, into)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%v", strict)
	}
	return nil
}
