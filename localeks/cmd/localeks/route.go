package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/lambda-eks/lambda-eks/localeks/stack"
)

// route is which function an event is for, and how to deliver it, as
// ./local.sh needs to know before it builds anything: `localeks route
// EVENT_FILE|-` prints FUNCTION MODE, e.g. "lambda-eks-helm cfn".
//
// An event is the Helm function's when its action starts with helm-, it
// is a CloudFormation request for a Custom::HelmRelease, or it is a
// CodePipeline.job whose UserParameters (a JSON object in a string) name a
// release (the Helm function's action has a "release", the main
// function's has none and refuses one); the lifecycle
// function's when EventBridge delivers it from Auto Scaling, EC2 or AWS
// Health (source aws.autoscaling, aws.ec2, aws.health); every other event,
// an unreadable one included (the function refuses it), is the main
// function's. A request with RequestType goes through cfn (CloudFormation
// played with a presigned ResponseURL), a CodePipeline.job through
// codepipeline (CodePipeline played), a lifecycle function's event through
// lifecycle (Auto Scaling and Lambda's queue played), the rest through
// invoke.
func route(event []byte) (function, mode string) {
	var ev map[string]json.RawMessage
	if json.Unmarshal(event, &ev) != nil {
		return mainFunction.name, "invoke"
	}
	str := func(key string) string {
		var v string
		_ = json.Unmarshal(ev[key], &v)
		return v
	}
	if job, ok := ev["CodePipeline.job"]; ok {
		if helmJob(job) {
			return helmFunction.name, "codepipeline"
		}
		return mainFunction.name, "codepipeline"
	}
	switch str("source") {
	case "aws.autoscaling", "aws.ec2", "aws.health":
		return lifecycleFunction.name, "lifecycle"
	}
	if _, ok := ev["RequestType"]; ok {
		if str("ResourceType") == "Custom::HelmRelease" {
			return helmFunction.name, "cfn"
		}
		return mainFunction.name, "cfn"
	}
	if strings.HasPrefix(str("action"), "helm-") {
		return helmFunction.name, "invoke"
	}
	return mainFunction.name, "invoke"
}

// helmJob reports a CodePipeline job whose UserParameters name a release.
func helmJob(job json.RawMessage) bool {
	var j struct {
		Data struct {
			ActionConfiguration struct {
				Configuration struct {
					UserParameters string `json:"UserParameters"`
				} `json:"configuration"`
			} `json:"actionConfiguration"`
		} `json:"data"`
	}
	var params map[string]json.RawMessage
	if json.Unmarshal(job, &j) != nil || json.Unmarshal([]byte(j.Data.ActionConfiguration.Configuration.UserParameters), &params) != nil {
		return false
	}
	_, ok := params["release"]
	return ok
}

func routeCommand(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: localeks route EVENT_FILE|-")
		return 2
	}
	event, err := readRaw(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "localeks route:", err)
		return 4
	}
	fn, mode := route(event)
	fmt.Println(fn, mode)
	return 0
}

// charts is the chart repository process UpHelm starts.
func charts(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("charts", flag.ContinueOnError)
	dir := fs.String("dir", "", "`directory` of index.yaml and the packaged charts")
	listen := fs.String("listen", "", "loopback `address`")
	cert := fs.String("cert", "", "serving certificate `file`")
	key := fs.String("key", "", "its key `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return stack.ServeCharts(ctx, *dir, *listen, *cert, *key)
}
