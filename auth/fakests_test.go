package auth

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// fakeSTS is STS's query protocol on loopback, with the checks moto lacks:
// a role's maximum session duration and the sts:ExternalId condition of its
// trust policy. Its clock is the test's.
type fakeSTS struct {
	url string
	// callers maps an access key ID to the ARN of its principal.
	callers     map[string]string
	maxDuration time.Duration // the role's MaxSessionDuration
	externalID  string        // demanded by the trust policy when set
	now         func() time.Time

	mu       sync.Mutex
	deny     bool                 // refuse every AssumeRole
	assumes  int                  // AssumeRole requests, refused ones included
	refused  int                  // of those, refused for their DurationSeconds
	sessions map[string]time.Time // access key ID -> end of the session it signs for
}

const fakeNS = "https://sts.amazonaws.com/doc/2011-06-15/"

func newFakeSTS(tb testing.TB, maxDuration time.Duration, externalID string, now func() time.Time) *fakeSTS {
	tb.Helper()
	f := &fakeSTS{
		callers:     map[string]string{"ASIAEXAMPLEEXAMPLE01": "arn:aws:sts::111122223333:assumed-role/lambda-eks-exec/fn"},
		maxDuration: maxDuration,
		externalID:  externalID,
		now:         now,
		sessions:    map[string]time.Time{},
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	tb.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// config is an execution role's config that reaches the fake.
func (f *fakeSTS) config() aws.Config {
	cfg := testConfig("us-east-1", staticCreds)
	cfg.BaseEndpoint = aws.String(f.url)
	return cfg
}

func (f *fakeSTS) counts() (assumes, refused int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.assumes, f.refused
}

// denyAll makes every later AssumeRole AccessDenied.
func (f *fakeSTS) denyAll() {
	f.mu.Lock()
	f.deny = true
	f.mu.Unlock()
}

// sessionEnd returns the end of the session whose access key signed a
// token's presigned URL.
func (f *fakeSTS) sessionEnd(keyID string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end, ok := f.sessions[keyID]
	return end, ok
}

func (f *fakeSTS) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		f.fail(w, http.StatusBadRequest, "InvalidParameterValue", err.Error())
		return
	}
	key := accessKeyOf(r.Header.Get("Authorization"))
	f.mu.Lock()
	defer f.mu.Unlock()
	caller, ok := f.callers[key]
	if !ok {
		f.fail(w, http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		return
	}
	switch r.PostForm.Get("Action") {
	case "GetCallerIdentity":
		writeXML(w, "GetCallerIdentity", fmt.Sprintf("<Arn>%s</Arn><UserId>AROAEXAMPLE:fn</UserId><Account>111122223333</Account>", caller))
	case "AssumeRole":
		f.assumes++
		role := r.PostForm.Get("RoleArn")
		d := time.Hour // STS's default
		if s := r.PostForm.Get("DurationSeconds"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				f.fail(w, http.StatusBadRequest, "ValidationError", "DurationSeconds is not a number")
				return
			}
			d = time.Duration(n) * time.Second
		}
		if d > f.maxDuration {
			f.refused++
			f.fail(w, http.StatusBadRequest, "ValidationError",
				"The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
			return
		}
		if f.deny || f.externalID != "" && r.PostForm.Get("ExternalId") != f.externalID {
			f.fail(w, http.StatusForbidden, "AccessDenied", fmt.Sprintf(
				"User: %s is not authorized to perform: sts:AssumeRole on resource: %s", caller, role))
			return
		}
		n := len(f.sessions) + 1
		newKey := fmt.Sprintf("ASIASESSION%09d", n)
		end := f.now().Add(d).UTC().Truncate(time.Second)
		f.sessions[newKey] = end
		name := role[strings.LastIndex(role, "/")+1:]
		f.callers[newKey] = "arn:aws:sts::210987654321:assumed-role/" + name + "/" + r.PostForm.Get("RoleSessionName")
		writeXML(w, "AssumeRole", fmt.Sprintf(`<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>secret%d</SecretAccessKey>`+
			`<SessionToken>token%d</SessionToken><Expiration>%s</Expiration></Credentials>`+
			`<AssumedRoleUser><Arn>%s</Arn><AssumedRoleId>AROATARGET:%s</AssumedRoleId></AssumedRoleUser>`,
			newKey, n, n, end.Format(time.RFC3339), f.callers[newKey], r.PostForm.Get("RoleSessionName")))
	default:
		f.fail(w, http.StatusBadRequest, "InvalidAction", "unknown action")
	}
}

func (f *fakeSTS) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	var esc strings.Builder
	_ = xml.EscapeText(&esc, []byte(msg))
	_, _ = fmt.Fprintf(w, `<ErrorResponse xmlns="%s"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>fake</RequestId></ErrorResponse>`,
		fakeNS, code, esc.String())
}

func writeXML(w http.ResponseWriter, action, result string) {
	w.Header().Set("Content-Type", "text/xml")
	_, _ = fmt.Fprintf(w, `<%sResponse xmlns="%s"><%sResult>%s</%sResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></%sResponse>`,
		action, fakeNS, action, result, action, action)
}

// accessKeyOf reads the access key ID from a SigV4 Authorization header or
// a presigned URL's X-Amz-Credential.
func accessKeyOf(credential string) string {
	if _, c, ok := strings.Cut(credential, "Credential="); ok {
		credential = c
	}
	id, _, _ := strings.Cut(credential, "/")
	return id
}
