package codepipeline

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// testResponse is a function's response to a job, as both functions make
// theirs: the Answer embedded, fields of its own.
type testResponse struct {
	Answer
	Extra string `json:"extra,omitempty"`
}

// answers plays CodePipeline: it records each answer's operation and body.
type answers struct {
	mu    sync.Mutex
	calls []string
}

func (a *answers) config(t *testing.T) *aws.Config {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.calls = append(a.calls, strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "CodePipeline_20150709.")+" "+string(b))
		a.mu.Unlock()
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	return &aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		HTTPClient: &http.Client{Transport: rewrite{srv.URL}}}
}

const jobEvent = `{"CodePipeline.job":{"id":"11111111-2222-3333-4444-555555555555","accountId":"123456789012","data":{
"actionConfiguration":{"configuration":{"FunctionName":"f","UserParameters":"{}"}},"inputArtifacts":[],"outputArtifacts":[],
"artifactCredentials":{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T"}}}}`

// TestServe: the engine both functions answer jobs with. A job's answer is
// sent with its id and becomes the response; a panic and a job that does
// not decode are answered as failures; an event naming no job is the
// invocation's error and answers nothing; the work's context leaves the
// answer its budget.
func TestServe(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	serve := func(t *testing.T, ctx context.Context, payload string, run func(context.Context, Job) *testResponse) (*answers, []byte, error) {
		a := &answers{}
		out, err := Serve(ctx, a.config(t), log, []byte(payload), run, func(r *testResponse) []any { return []any{"extra", r.Extra} })
		return a, out, err
	}
	t.Run("answered", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		invocation, _ := ctx.Deadline()
		ctxDeadline := func(*testing.T, context.Context) (time.Time, bool) { return invocation, true }
		var budget time.Duration
		a, out, err := serve(t, ctx, jobEvent, func(ctx context.Context, job Job) *testResponse {
			d, _ := ctx.Deadline()
			outer, _ := ctxDeadline(t, ctx)
			budget = outer.Sub(d)
			return &testResponse{Answer: Answer{Result: Success, OutputVariables: map[string]string{"k": "v"}}, Extra: job.ID}
		})
		if err != nil {
			t.Fatal(err)
		}
		var r testResponse
		if json.Unmarshal(out, &r) != nil || r.JobID != "11111111-2222-3333-4444-555555555555" || r.Extra != r.JobID || r.Result != Success {
			t.Errorf("response %s", out)
		}
		if len(a.calls) != 1 || !strings.HasPrefix(a.calls[0], "PutJobSuccessResult ") || !strings.Contains(a.calls[0], `"k":"v"`) {
			t.Errorf("answers %v", a.calls)
		}
		if budget != AnswerBudget {
			t.Errorf("the work ended %s before the invocation, want %s", budget, AnswerBudget)
		}
	})
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		a, out, err := serve(t, context.Background(), jobEvent, func(context.Context, Job) *testResponse { panic("boom") })
		if err != nil || !strings.Contains(string(out), `"code":"Internal"`) || len(a.calls) != 1 ||
			!strings.HasPrefix(a.calls[0], "PutJobFailureResult ") || !strings.Contains(a.calls[0], "panicked: boom") {
			t.Errorf("out %s, err %v, answers %v", out, err, a.calls)
		}
	})
	t.Run("does not decode", func(t *testing.T) {
		t.Parallel()
		bad := strings.Replace(jobEvent, `"data":{`, `"data":{"surprise":1,`, 1)
		ran := false
		a, _, err := serve(t, context.Background(), bad, func(context.Context, Job) *testResponse { ran = true; return &testResponse{} })
		if err != nil || ran || len(a.calls) != 1 || !strings.Contains(a.calls[0], `"jobId":"11111111-2222-3333-4444-555555555555"`) ||
			!strings.HasPrefix(a.calls[0], "PutJobFailureResult ") {
			t.Errorf("err %v, ran %v, answers %v", err, ran, a.calls)
		}
	})
	t.Run("no job", func(t *testing.T) {
		t.Parallel()
		a, _, err := serve(t, context.Background(), `{"CodePipeline.job":{}}`, func(context.Context, Job) *testResponse { return &testResponse{} })
		if err == nil || len(a.calls) != 0 {
			t.Errorf("err %v, answers %v; want an error and no answer", err, a.calls)
		}
	})
	t.Run("no AWS configuration", func(t *testing.T) {
		t.Parallel()
		_, err := Serve(context.Background(), nil, log, []byte(jobEvent), func(context.Context, Job) *testResponse { return &testResponse{} },
			func(*testResponse) []any { return nil })
		if err == nil || invoke.AsError(err).Code != invoke.Internal {
			t.Errorf("err %v", err)
		}
	})
}
