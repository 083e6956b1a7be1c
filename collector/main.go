// Command candlelight-otelcol is the OpenTelemetry Collector distribution used
// by candlelight's observability stack.
//
// It is written by hand in the shape the OpenTelemetry Collector Builder
// (ocb) generates, so that it builds with nothing but `go build` from the Go
// module proxy: the project's machines cannot download prebuilt collector
// binaries. The component set lives in components.go.
package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/otelcol"
)

// collectorRelease is the one OpenTelemetry Collector release (core v0.x and
// contrib) that every component module in go.mod is pinned to.
const collectorRelease = "0.161.0"

func main() {
	info := component.BuildInfo{
		Command:     "candlelight-otelcol",
		Description: "OpenTelemetry Collector distribution for candlelight",
		Version:     collectorRelease,
	}

	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(),
					fileprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
				// Bare `${VAR:-default}` references resolve from the environment,
				// like in the upstream distributions.
				DefaultScheme: "env",
			},
		},
		ProviderModules: map[string]string{
			envprovider.NewFactory().Create(confmap.ProviderSettings{}).Scheme():  "go.opentelemetry.io/collector/confmap/provider/envprovider v1.67.0",
			fileprovider.NewFactory().Create(confmap.ProviderSettings{}).Scheme(): "go.opentelemetry.io/collector/confmap/provider/fileprovider v1.67.0",
			yamlprovider.NewFactory().Create(confmap.ProviderSettings{}).Scheme(): "go.opentelemetry.io/collector/confmap/provider/yamlprovider v1.67.0",
		},
	}

	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatal(err)
	}
}
