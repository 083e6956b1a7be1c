package main

import (
	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/healthcheckextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/k8sattributesprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/resourceprocessor"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

const (
	coreModule    = "go.opentelemetry.io/collector"
	contribModule = "github.com/open-telemetry/opentelemetry-collector-contrib"
	coreVersion   = " v" + collectorRelease
	// k8sattributesVersion differs from collectorRelease only because the Go
	// module proxy this project builds from does not serve
	// processor/k8sattributesprocessor at v0.161.0; v0.160.0 builds against
	// the v0.161.0 core. Set it back to collectorRelease when it resolves.
	k8sattributesVersion = " v0.160.0"
)

// components lists exactly what otel-collector.yaml uses, the `file` exporter
// that collector/trace-backend.yaml (the test stand-in for Tempo) needs, and the
// `k8sattributes` and `resource` processors of the Helm chart's collector agent
// (deploy/helm/candlelight). Anything else would only add build time on 2 cores.
func components() (otelcol.Factories, error) {
	var err error
	factories := otelcol.Factories{
		Telemetry:  otelconftelemetry.NewFactory(),
		Connectors: map[component.Type]connector.Factory{},
	}

	factories.Extensions, err = otelcol.MakeFactoryMap[extension.Factory](
		healthcheckextension.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, err
	}
	factories.ExtensionModules = map[component.Type]string{
		healthcheckextension.NewFactory().Type(): contribModule + "/extension/healthcheckextension" + coreVersion,
	}

	factories.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](
		otlpreceiver.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, err
	}
	factories.ReceiverModules = map[component.Type]string{
		otlpreceiver.NewFactory().Type(): coreModule + "/receiver/otlpreceiver" + coreVersion,
	}

	factories.Processors, err = otelcol.MakeFactoryMap[processor.Factory](
		memorylimiterprocessor.NewFactory(),
		batchprocessor.NewFactory(),
		k8sattributesprocessor.NewFactory(),
		resourceprocessor.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, err
	}
	factories.ProcessorModules = map[component.Type]string{
		memorylimiterprocessor.NewFactory().Type(): coreModule + "/processor/memorylimiterprocessor" + coreVersion,
		batchprocessor.NewFactory().Type():         coreModule + "/processor/batchprocessor" + coreVersion,
		k8sattributesprocessor.NewFactory().Type(): contribModule + "/processor/k8sattributesprocessor" + k8sattributesVersion,
		resourceprocessor.NewFactory().Type():      contribModule + "/processor/resourceprocessor" + coreVersion,
	}

	// In this release the core OTLP gRPC exporter is named `otlp_grpc`; `otlp`
	// is still accepted as a deprecated alias.
	factories.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](
		otlpexporter.NewFactory(),
		prometheusexporter.NewFactory(),
		fileexporter.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, err
	}
	factories.ExporterModules = map[component.Type]string{
		otlpexporter.NewFactory().Type():       coreModule + "/exporter/otlpexporter" + coreVersion,
		prometheusexporter.NewFactory().Type(): contribModule + "/exporter/prometheusexporter" + coreVersion,
		fileexporter.NewFactory().Type():       contribModule + "/exporter/fileexporter" + coreVersion,
	}

	return factories, nil
}
