package lifecycle

import (
	"errors"
	"testing"

	"github.com/lambda-eks/lambda-eks/internal/invoke"
)

// FuzzDecodeEvent: any payload decodes or is refused with an InvalidEvent
// error, never a panic; a decoded event names checked instances.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(terminateEvent(terminateDetail)))
	f.Add([]byte(`{"source":"aws.health","detail-type":"AWS Health Event","detail":{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":[{"entityValue":"i-01234567"}]}}`))
	f.Add([]byte(`{"source":"aws.ec2","detail-type":"EC2 Spot Instance Interruption Warning","detail":{"instance-id":"i-01234567"},"lambda-eks-continuation":{"attempt":2}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := DecodeEvent(raw)
		if err != nil {
			var e *invoke.Error
			if !errors.As(err, &e) || e.Code != invoke.InvalidEvent {
				t.Fatalf("error %v is not InvalidEvent", err)
			}
			return
		}
		for _, i := range ev.Instances {
			if !instanceIDRE.MatchString(i) {
				t.Fatalf("decoded instance %q is not an instance id", i)
			}
		}
		if (ev.Kind == Terminate || ev.Kind == Launch) != (ev.Hook != nil) {
			t.Fatalf("kind %s with hook %v", ev.Kind, ev.Hook)
		}
	})
}
