package cfnresource

import (
	"context"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// ServeLambda is Serve as a function's Lambda handler returns it: an answer
// that could not be delivered is an error Lambda reports with its code as
// errorType (and retries, for an asynchronous invocation).
func (s *Server) ServeLambda(ctx context.Context, payload []byte, r Resource) ([]byte, error) {
	out, err := s.Serve(ctx, payload, r)
	if err != nil {
		return nil, invoke.AsError(err).LambdaError()
	}
	return out, nil
}
