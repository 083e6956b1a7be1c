package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// extraction writes selected ConfigMap values to files.
type extraction struct {
	selector labels.Selector
	key      string
	dir      string
}

func parseExtraction(spec, dir string) (*extraction, error) {
	// The selector may contain '=' itself: the key follows the last one.
	i := strings.LastIndex(spec, "=")
	if i < 0 || i == len(spec)-1 || dir == "" {
		return nil, errors.New("-extract needs SELECTOR=KEY and -extract-dir")
	}
	sel, key := spec[:i], spec[i+1:]
	selector, err := labels.Parse(sel)
	if err != nil {
		return nil, fmt.Errorf("-extract selector: %w", err)
	}
	return &extraction{selector: selector, key: key, dir: dir}, nil
}

func (e *extraction) write(objects []object) error {
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return err
	}
	for _, o := range objects {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok || !e.selector.Matches(labels.Set(cm.Labels)) {
			continue
		}
		value, ok := cm.Data[e.key]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(e.dir, cm.Name+".yaml"), []byte(value), 0o644); err != nil {
			return err
		}
	}
	return nil
}
