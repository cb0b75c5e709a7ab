package cfnresource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/cfn"
	sigsjson "sigs.k8s.io/json"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// memResponseURL is a ResponseURL in memory: it answers every PUT 200 and
// keeps its body.
type memResponseURL struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (m *memResponseURL) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.bodies = append(m.bodies, b)
	m.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

// propsResource does what its properties say, so that the fuzzer reaches
// every kind of answer: an ID (any string), a Reason and Data for SUCCESS,
// Fail for an error, Panic for a panic.
type propsResource struct{}

type props struct {
	ID     *string
	Reason string
	Data   map[string]string
	Fail   *string
	Panic  string
}

func (propsResource) decode(req Request) (props, error) {
	var p props
	if err := json.Unmarshal(req.ResourceProperties, &p); err != nil {
		return props{}, invoke.Invalid("ResourceProperties: %s", err.Error())
	}
	return p, nil
}

func (r propsResource) PhysicalID(req Request) (string, error) {
	p, err := r.decode(req)
	if err != nil || p.ID == nil {
		return "", errors.New("no ID")
	}
	return *p.ID, nil
}

func (r propsResource) Apply(_ context.Context, req Request, _ Plan) (string, map[string]string, error) {
	p, err := r.work(req)
	return p.Reason, p.Data, err
}

func (r propsResource) Delete(_ context.Context, req Request, _ Plan) (string, error) {
	p, err := r.work(req)
	return p.Reason, err
}

func (r propsResource) work(req Request) (props, error) {
	p, err := r.decode(req)
	switch {
	case err != nil:
		return props{}, err
	case p.Panic != "":
		panic(p.Panic)
	case p.Fail != nil:
		return props{}, errors.New(*p.Fail)
	}
	return p, nil
}

// FuzzServe: whatever the payload, Serve either refuses it with an
// *invoke.Error and sends nothing, or sends CloudFormation exactly one
// answer, the one it returns: valid JSON of at most 4,096 bytes, SUCCESS or
// FAILED (with a Reason), naming the request's stack, request and logical
// resource.
func FuzzServe(f *testing.F) {
	const env = `"ResponseURL":"https://cfn.s3.amazonaws.com/r?X-Amz-Signature=s","StackId":"arn:aws:cloudformation:us-east-1:1:stack/s/u","RequestId":"r","LogicalResourceId":"L"`
	for _, seed := range []string{
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"ID":"s/L/1","Reason":"installed","Data":{"A":"1"}}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"Fail":"no such chart"}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"Panic":"oops"}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"Fail":""}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"Reason":"` + strings.Repeat("\\u0000\\\"é", 2000) + `"}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"Data":{"A":"` + strings.Repeat("v", 5000) + `"}}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"ID":"` + strings.Repeat("i", 1500) + `","Fail":"` + strings.Repeat("x", 3000) + `"}}`,
		`{"RequestType":"Update",` + env + `,"PhysicalResourceId":"s/L/1","ResourceProperties":{"ID":"s/L/2"},"OldResourceProperties":{"ID":"s/L/1"}}`,
		`{"RequestType":"Update",` + env + `,"ResourceProperties":{"ID":"s/L/2"}}`,
		`{"RequestType":"Delete",` + env + `,"PhysicalResourceId":"s/L/1/create-failed","ResourceProperties":{"Fail":"gone"}}`,
		`{"RequestType":"Delete",` + env + `,"PhysicalResourceId":"s/L/1","ResourceProperties":{"Panic":"oops"}}`,
		// CloudFormation's longest ids: a logical id of 255 bytes, a physical one of 1,024.
		`{"RequestType":"Update","ResponseURL":"https://cfn.s3.amazonaws.com/r","StackId":"arn:aws:cloudformation:us-east-1:1:stack/s/u",` +
			`"RequestId":"r","LogicalResourceId":"` + strings.Repeat("L", 255) + `","PhysicalResourceId":"` + strings.Repeat("p", MaxPhysicalIDBytes) +
			`","ResourceProperties":{"Fail":"` + strings.Repeat("f", 5000) + `"}}`,
		// Ids CloudFormation never sends: too long, or escaped by JSON six
		// times over; and a PhysicalID longer than CloudFormation takes.
		`{"RequestType":"Create","ResponseURL":"https://cfn.s3.amazonaws.com/r","StackId":"s","RequestId":"r","LogicalResourceId":"` +
			strings.Repeat("L", 5000) + `","ResourceProperties":{}}`,
		`{"RequestType":"Create","ResponseURL":"https://cfn.s3.amazonaws.com/r","StackId":"s","RequestId":"` + strings.Repeat("\\u0001", 200) +
			`","LogicalResourceId":"L","ResourceProperties":{}}`,
		`{"RequestType":"Create",` + env + `,"ResourceProperties":{"ID":"` + strings.Repeat("i", 5000) + `"}}`,
		`{"RequestType":"Upsert",` + env + `}`,
		`{"RequestType":"Create","ResponseURL":"https://cfn.s3.amazonaws.com/r"}`,
		`{"RequestType":"Create","ResponseURL":"http://169.254.169.254/r",` + env[len(`"ResponseURL":"https://cfn.s3.amazonaws.com/r?X-Amz-Signature=s",`):] + `}`,
		`{"RequestType":7}`, `[]`, ``, `{"action":"status"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		mem := &memResponseURL{}
		s := NewServer(discard(), WithClient(&http.Client{Transport: mem}), testTiming())
		out, err := s.Serve(t.Context(), payload, propsResource{})
		if err != nil {
			var e *invoke.Error
			if !errors.As(err, &e) || e.Message == "" {
				t.Fatalf("error %v (%T) is not an *invoke.Error with a message", err, err)
			}
			if len(mem.bodies) != 0 || out != nil {
				t.Fatalf("refused (%v) but sent %d answers and returned %q", err, len(mem.bodies), out)
			}
			return
		}
		if len(mem.bodies) != 1 || !bytes.Equal(mem.bodies[0], out) {
			t.Fatalf("sent %d answers, want exactly the one returned (%q)", len(mem.bodies), out)
		}
		if len(out) > MaxResponseBytes {
			t.Fatalf("answer of %d bytes, more than CloudFormation's %d", len(out), MaxResponseBytes)
		}
		var resp cfn.Response
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil || dec.More() {
			t.Fatalf("answer %q is not one JSON response: %v", out, err)
		}
		switch {
		case resp.Status != cfn.StatusSuccess && resp.Status != cfn.StatusFailed:
			t.Fatalf("answer status %q", resp.Status)
		case resp.Status == cfn.StatusFailed && resp.Reason == "":
			t.Fatalf("FAILED without a Reason: %s", out)
		}
		var req struct {
			StackID           string `json:"StackId"`
			RequestID         string `json:"RequestId"`
			LogicalResourceID string `json:"LogicalResourceId"`
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(payload, &req); err != nil {
			t.Fatalf("answered a request that does not decode: %v", err)
		}
		if resp.StackID != req.StackID || resp.RequestID != req.RequestID || resp.LogicalResourceID != req.LogicalResourceID {
			t.Fatalf("answer %s does not name the request's stack, request and resource (%+v)", out, req)
		}
	})
}
