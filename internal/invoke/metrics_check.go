package invoke

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// emfUnits are the units CloudWatch accepts (MetricDatum's StandardUnit).
var emfUnits = map[string]bool{
	"Seconds": true, "Microseconds": true, "Milliseconds": true,
	"Bytes": true, "Kilobytes": true, "Megabytes": true, "Gigabytes": true, "Terabytes": true,
	"Bits": true, "Kilobits": true, "Megabits": true, "Gigabits": true, "Terabits": true,
	"Percent": true, "Count": true,
	"Bytes/Second": true, "Kilobytes/Second": true, "Megabytes/Second": true, "Gigabytes/Second": true, "Terabytes/Second": true,
	"Bits/Second": true, "Kilobits/Second": true, "Megabits/Second": true, "Gigabits/Second": true, "Terabits/Second": true,
	"Count/Second": true, "None": true,
}

// CheckEMF says why line is not a record CloudWatch turns into metrics, by
// the rules of the specification (see metrics.go): a JSON object whose
// _aws member has an integer Timestamp in milliseconds and a non-empty
// CloudWatchMetrics array of directives, each with a Namespace, at most 30
// dimension names per set, at most 100 metrics, units from CloudWatch's
// list, and every dimension (a string) and metric (a number, or at most 100
// numbers) present as a top-level member. The unit test of Finish's records
// and the end-to-end test of the replica's both use it.
func CheckEMF(line []byte) error {
	var rec map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	raw, ok := rec["_aws"]
	if !ok {
		return fmt.Errorf("no _aws member")
	}
	var meta struct {
		Timestamp         *json.Number `json:"Timestamp"`
		CloudWatchMetrics []struct {
			Namespace  *string     `json:"Namespace"`
			Dimensions [][]*string `json:"Dimensions"`
			Metrics    []struct {
				Name              *string `json:"Name"`
				Unit              *string `json:"Unit"`
				StorageResolution *int    `json:"StorageResolution"`
			} `json:"Metrics"`
		} `json:"CloudWatchMetrics"`
	}
	mdec := json.NewDecoder(bytes.NewReader(raw))
	mdec.UseNumber()
	if err := mdec.Decode(&meta); err != nil {
		return fmt.Errorf("_aws: %w", err)
	}
	if meta.Timestamp == nil {
		return fmt.Errorf("_aws.Timestamp missing")
	}
	ts, err := meta.Timestamp.Int64()
	if err != nil {
		return fmt.Errorf("_aws.Timestamp %s is not an integer", *meta.Timestamp)
	}
	// Milliseconds since the epoch: seconds would be in 1970, microseconds
	// far in the future.
	if t := time.UnixMilli(ts); t.Year() < 2000 || t.Year() > 2200 {
		return fmt.Errorf("_aws.Timestamp %d is not milliseconds since the epoch (%s)", ts, t.UTC())
	}
	if len(meta.CloudWatchMetrics) == 0 {
		return fmt.Errorf("_aws.CloudWatchMetrics is empty")
	}
	for i, d := range meta.CloudWatchMetrics {
		at := fmt.Sprintf("_aws.CloudWatchMetrics[%d]", i)
		if d.Namespace == nil || *d.Namespace == "" || len(*d.Namespace) > 1024 {
			return fmt.Errorf("%s: Namespace missing, empty or longer than 1024", at)
		}
		if d.Dimensions == nil {
			return fmt.Errorf("%s: Dimensions missing", at)
		}
		for j, set := range d.Dimensions {
			if len(set) > 30 {
				return fmt.Errorf("%s.Dimensions[%d]: %d dimensions, at most 30", at, j, len(set))
			}
			for _, name := range set {
				if name == nil || *name == "" || len(*name) > 255 {
					return fmt.Errorf("%s.Dimensions[%d]: a name missing, empty or longer than 255", at, j)
				}
				var v string
				if err := json.Unmarshal(rec[*name], &v); err != nil || rec[*name] == nil {
					return fmt.Errorf("%s: dimension %s is not a top-level string member", at, *name)
				}
				if v == "" || len(v) > 1024 {
					return fmt.Errorf("%s: dimension %s's value is empty or longer than 1024", at, *name)
				}
			}
		}
		if len(d.Metrics) == 0 || len(d.Metrics) > 100 {
			return fmt.Errorf("%s: %d metrics, want 1 to 100", at, len(d.Metrics))
		}
		for _, m := range d.Metrics {
			if m.Name == nil || *m.Name == "" || len(*m.Name) > 1024 {
				return fmt.Errorf("%s: a metric name missing, empty or longer than 1024", at)
			}
			if m.Unit != nil && !emfUnits[*m.Unit] {
				return fmt.Errorf("%s: metric %s: unit %q is not one of CloudWatch's", at, *m.Name, *m.Unit)
			}
			if m.StorageResolution != nil && *m.StorageResolution != 1 && *m.StorageResolution != 60 {
				return fmt.Errorf("%s: metric %s: StorageResolution %d, want 1 or 60", at, *m.Name, *m.StorageResolution)
			}
			if err := checkMetricValue(rec[*m.Name]); err != nil {
				return fmt.Errorf("%s: metric %s: %w", at, *m.Name, err)
			}
		}
	}
	return nil
}

// checkMetricValue: a number, or an array of at most 100 numbers.
func checkMetricValue(raw json.RawMessage) error {
	if raw == nil {
		return fmt.Errorf("no top-level member")
	}
	var n float64
	if err := json.Unmarshal(raw, &n); err == nil {
		return nil
	}
	var ns []float64
	if err := json.Unmarshal(raw, &ns); err != nil {
		return fmt.Errorf("value %s is neither a number nor an array of numbers", raw)
	}
	if len(ns) > 100 {
		return fmt.Errorf("%d values, at most 100", len(ns))
	}
	return nil
}
