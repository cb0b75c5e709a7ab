package codepipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// Action is the metrics' action of a CodePipeline job, in every function.
const Action = "codepipeline"

// AnswerBudget is kept between a job's work and the invocation's end, for
// the answer to CodePipeline (retried; Send itself stops
// invoke.DeadlineMargin before the end).
const AnswerBudget = 4 * time.Second

// Response is a function's response to a job: the Answer it embeds (sent
// to CodePipeline) and fields of its own (the objects, the release).
type Response interface {
	answer() *Answer
}

func (a *Answer) answer() *Answer { return a }

// FailureCode is the code of a failure the job answered (invoke.Outcome):
// the invocation succeeds, its metrics count the failure.
func (a *Answer) FailureCode() invoke.Code { return a.Code }

// errNoAWS: answering a job needs the function's AWS configuration.
var errNoAWS = errors.New("no AWS configuration to answer CodePipeline with (the function's New gives it)")

// Serve serves one CodePipeline.job invocation, the same way in every
// function: run does the job under a context that ends AnswerBudget before
// the invocation's, and says what to answer (a panic in it is answered as
// an Internal failure, so that no pipeline hangs until the action's
// timeout); a job that does not decode is answered as failed with its
// leniently read id. The answer is always sent, with cfg's credentials (the
// function's own, never the artifact's), before the invocation returns;
// only an event without a job id, or an answer that could not be
// delivered, is the invocation's error (Lambda then retries it, and the
// job runs again). attrs says what the end-of-invocation log tells of the
// response.
func Serve[R any, P interface {
	*R
	Response
}](ctx context.Context, cfg *aws.Config, log *slog.Logger, payload []byte, run func(context.Context, Job) P, attrs func(P) []any) ([]byte, error) {
	start := time.Now()
	invoke.NoteAction(ctx, Action)
	none := func(P) []any { return nil }
	ev, err := Decode(payload)
	var resp P
	switch {
	case err != nil && JobID(payload) == "":
		return invoke.Finish(ctx, log, start, P(nil), err, none)
	case err != nil:
		resp = P(new(R))
		*resp.answer() = Failed(err)
		resp.answer().JobID = JobID(payload)
	default:
		work, cancel := context.WithCancel(ctx)
		if deadline, ok := ctx.Deadline(); ok {
			work, cancel = context.WithDeadline(ctx, deadline.Add(-AnswerBudget))
		}
		resp = runSafely(work, log, ev.Job, run)
		cancel()
		resp.answer().JobID = ev.Job.ID
	}
	if cfg == nil {
		err = errNoAWS
	} else {
		err = Send(ctx, *cfg, log, *resp.answer())
	}
	if err != nil {
		return invoke.Finish(ctx, log, start, P(nil), err, none)
	}
	return invoke.Finish(ctx, log, start, resp, nil, func(r P) []any {
		a := r.answer()
		return append([]any{"action", Action, "job", a.JobID, "result", a.Result}, attrs(r)...)
	})
}

// runSafely is run with a panic answered as the job's failure.
func runSafely[R any, P interface {
	*R
	Response
}](ctx context.Context, log *slog.Logger, job Job, run func(context.Context, Job) P) (resp P) {
	defer func() {
		if v := recover(); v != nil {
			log.ErrorContext(ctx, "codepipeline job panicked", "job", job.ID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp = P(new(R))
			*resp.answer() = Failed(&invoke.Error{Code: invoke.Internal, Message: fmt.Sprintf("the function panicked: %v; see its logs", v)})
		}
	}()
	if resp = run(ctx, job); resp == nil {
		resp = P(new(R))
		*resp.answer() = Failed(&invoke.Error{Code: invoke.Internal, Message: "the job gave no answer"})
	}
	return resp
}
