package admission

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// patchOp is one RFC 6902 operation. Only "add" is used: it creates a
// missing member and replaces an existing one, which is what every
// mutation here wants.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// jsonPatch collects operations against one object.
type jsonPatch []patchOp

func (p *jsonPatch) add(path string, value any) {
	*p = append(*p, patchOp{Op: "add", Path: path, Value: value})
}

// setMapEntries sets entries in the string map at path, creating the map
// when the object has none (adding a member under a missing map fails).
func (p *jsonPatch) setMapEntries(path string, existing, entries map[string]string) {
	if len(entries) == 0 {
		return
	}
	if existing == nil {
		p.add(path, entries)
		return
	}
	keys := slices.Sorted(maps.Keys(entries)) // a stable patch is easier to read and test
	for _, k := range keys {
		p.add(path+"/"+escapePointer(k), entries[k])
	}
}

func (p jsonPatch) marshal() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("marshal json patch: %w", err)
	}
	return b, nil
}

// escapePointer escapes a JSON Pointer reference token (RFC 6901), as label
// and annotation keys contain "/".
func escapePointer(token string) string {
	return pointerEscaper.Replace(token)
}

// pointerEscaper is built once: building a Replacer costs more than using it.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")
