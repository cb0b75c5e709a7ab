#!/usr/bin/env python3
"""Checks that template.yml grants what the function uses and nothing more.

Runs the SAM transform offline (aws-sam-translator, as cfn-lint does) for a
few parameter sets and asserts on the resulting IAM: one role, logs only on
the function's own log group, eks:DescribeCluster on exactly the cluster's
ARN or sts:AssumeRole on exactly the target role, the VPC policy only with
subnets, s3:GetObject only on the ManifestBucket, sending failed events only
to the failure destination, and the access entry only where it can work;
both functions' EventInvokeConfig (retries, event age, destination, an
encrypted queue when the stack creates it) and their four alarms. Then checks the example examples/manifest-stack.yml (plain
CloudFormation): cfn-lint clean, and every Custom::KubernetesManifest has a
ServiceToken, a ServiceTimeout and only properties the function knows, with
an output read through Fn::GetAtt. Prints one line per case and
'N passed, N failed'; exits non-zero on a failure.
"""
import os
import subprocess
import sys

os.environ.setdefault("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402

TARGET = "arn:aws:iam::210987654321:role/eks-ops"
TOPIC = "arn:aws:sns:us-east-1:111122223333:ops-failures"
OTHER_QUEUE = "arn:aws:sqs:us-east-1:111122223333:ops-failures"


class NoManagedPolicies:
    def load(self):
        return {}


def resolve(value, params, conditions):
    """Evaluates the intrinsics the template's IAM uses, for one parameter set."""
    if isinstance(value, list):
        out = [resolve(v, params, conditions) for v in value]
        return [v for v in out if v is not NOVALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return {"AWS::NoValue": NOVALUE, "AWS::Partition": "aws", "AWS::Region": "us-east-1",
                    "AWS::AccountId": "111122223333", "AWS::StackName": "stack"}.get(arg, params.get(arg, arg))
        if fn == "Fn::If":
            return resolve(arg[1] if conditions[arg[0]] else arg[2], params, conditions)
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], params, conditions))
            names = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "111122223333",
                     "AWS::StackName": "stack", **params, **extra}
            for k, v in names.items():
                text = text.replace("${" + k + "}", str(v))
            return text
        if fn == "Fn::GetAtt":
            return "ATT:" + ".".join(arg)
        if fn == "Fn::Join":
            parts = resolve(arg[1], params, conditions)
            return arg[0].join(parts.split(",") if isinstance(parts, str) else parts)
        if fn == "Fn::Split":
            return resolve(arg[1], params, conditions).split(arg[0])
        if fn == "Fn::Select":
            return resolve(arg[1], params, conditions)[int(arg[0])]
    out = {k: resolve(v, params, conditions) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not NOVALUE}


NOVALUE = object()


def conditions_for(params):
    p = lambda k: params.get(k, "")
    c = {
        "HasTargetRole": p("TargetRoleArn") != "",
        "NoTargetRole": p("TargetRoleArn") == "",
        "HasClusterRegion": p("ClusterRegion") != "",
        "ClusterInStackRegion": p("ClusterRegion") in ("", "us-east-1"),
        "HasVpc": p("SubnetIds") != "",
        "ScheduleOn": p("ScheduleEnabled") == "true",
        "HasScheduleInput": p("ScheduleInput") != "",
        "ScaleSchedulesOn": p("ScaleSchedulesEnabled") == "true",
        "HasManifestBucket": p("ManifestBucket") != "",
        "HelmOn": p("HelmFunction") == "true",
        "CreateFailureQueue": p("FailureDestinationArn") == "",
        "FailureToSns": p("FailureDestinationArn").split(":")[2:3] == ["sns"],
        "HasAlarmTopic": p("AlarmTopicArn") != "",
        "CodePipelineOn": p("CodePipelineAction") == "true",
    }
    c["UseAccessEntry"] = params.get("AccessMode", "access-entry") == "access-entry" and c["NoTargetRole"] and c["ClusterInStackRegion"]
    c["HelmEcr"] = c["HelmOn"] and p("HelmEcrRepositoryArns") != ""
    c["HelmDescribe"] = c["HelmOn"] and c["NoTargetRole"]
    c["HelmAssume"] = c["HelmOn"] and c["HasTargetRole"]
    c["UseHelmAccessEntry"] = c["HelmOn"] and c["UseAccessEntry"]
    c["LifecycleOn"] = p("LifecycleFunction") == "true"
    c["LifecycleDescribe"] = c["LifecycleOn"] and c["NoTargetRole"]
    c["LifecycleAssume"] = c["LifecycleOn"] and c["HasTargetRole"]
    c["UseLifecycleAccessEntry"] = c["LifecycleOn"] and c["UseAccessEntry"]
    c["LifecycleSpotOn"] = c["LifecycleOn"] and params.get("LifecycleSpotEvents", "true") == "true"
    c["LifecycleHealthOn"] = c["LifecycleOn"] and params.get("LifecycleHealthEvents", "true") == "true"
    asgs = [a for a in p("LifecycleAsgNames").split(",") if a]
    c["LifecycleAsgs"] = c["LifecycleOn"] and bool(asgs)
    c["LifecycleHooksOn"] = p("LifecycleHooks") == "true"
    for i in range(3):
        c[f"LifecycleAsg{i + 1}"] = c["LifecycleAsgs"] and len(asgs) > i
        c[f"LifecycleHook{i + 1}"] = c[f"LifecycleAsg{i + 1}"] and c["LifecycleHooksOn"]
    c["HasLifecycleDrainTimeout"] = params.get("LifecycleDrainTimeoutSeconds", "0") != "0"
    return c


def check(name, params, expect):
    template = yaml_parse(open(os.path.join(os.path.dirname(__file__), "..", "template.yml")).read())
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://bucket/key.zip"
    out = transform(template, params, NoManagedPolicies())
    conditions = conditions_for(params)
    resources = {k: v for k, v in out["Resources"].items() if conditions.get(v.get("Condition"), True) is not False}
    roles = [k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"]
    problems = []
    if roles != ["LambdaEksRole"]:
        problems.append(f"roles {roles}, want only LambdaEksRole")
    role = resolve(resources["LambdaEksRole"]["Properties"], params, conditions)
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    grants = sorted((a, s["Resource"]) for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    if grants != sorted(expect["grants"]):
        problems.append(f"grants {grants}, want {sorted(expect['grants'])}")
    managed = role.get("ManagedPolicyArns", [])
    if managed != expect["managed"]:
        problems.append(f"managed policies {managed}, want {expect['managed']}")
    has_entry = "LambdaEksAccessEntry" in resources and conditions["UseAccessEntry"]
    if has_entry != expect["access_entry"]:
        problems.append(f"access entry {has_entry}, want {expect['access_entry']}")
    print(("ok  " if not problems else "FAIL") + f" {name}" + "".join("\n     " + p for p in problems))
    return not problems


QUEUE = ("sqs:SendMessage", "ATT:FailureQueue.Arn")
LOGS = [("logs:CreateLogStream", "ATT:LambdaEksLogGroup.Arn"), ("logs:PutLogEvents", "ATT:LambdaEksLogGroup.Arn"), QUEUE]
DESCRIBE = ("eks:DescribeCluster", "arn:aws:eks:us-east-1:111122223333:cluster/demo")
VPC = ["arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]

cases = [
    ("default: access entry, describe only the cluster", {"ClusterName": "demo"},
     {"grants": LOGS + [DESCRIBE], "managed": [], "access_entry": True}),
    ("aws-auth mode: no access entry", {"ClusterName": "demo", "AccessMode": "aws-auth"},
     {"grants": LOGS + [DESCRIBE], "managed": [], "access_entry": False}),
    ("cluster in another region", {"ClusterName": "demo", "ClusterRegion": "eu-west-1"},
     {"grants": LOGS + [("eks:DescribeCluster", "arn:aws:eks:eu-west-1:111122223333:cluster/demo")], "managed": [], "access_entry": False}),
    ("cross-account: assume only the target role", {"ClusterName": "demo", "TargetRoleArn": TARGET},
     {"grants": LOGS + [("sts:AssumeRole", TARGET)], "managed": [], "access_entry": False}),
    ("private endpoint: VPC policy only with subnets", {"ClusterName": "demo", "SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"},
     {"grants": LOGS + [DESCRIBE], "managed": VPC, "access_entry": True}),
    ("manifests from S3: read only the ManifestBucket", {"ClusterName": "demo", "ManifestBucket": "manifests"},
     {"grants": LOGS + [DESCRIBE, ("s3:GetObject", "arn:aws:s3:::manifests/*")], "managed": [], "access_entry": True}),
    ("codepipeline action: answer jobs only (artifacts are read with the job's credentials)", {"ClusterName": "demo", "CodePipelineAction": "true"},
     {"grants": LOGS + [DESCRIBE, ("codepipeline:PutJobSuccessResult", "*"), ("codepipeline:PutJobFailureResult", "*")], "managed": [], "access_entry": True}),
    ("failed events to an existing SNS topic: publish to it only", {"ClusterName": "demo", "FailureDestinationArn": TOPIC},
     {"grants": [g for g in LOGS if g != QUEUE] + [DESCRIBE, ("sns:Publish", TOPIC)], "managed": [], "access_entry": True}),
    ("failed events to an existing SQS queue: send to it only", {"ClusterName": "demo", "FailureDestinationArn": OTHER_QUEUE},
     {"grants": [g for g in LOGS if g != QUEUE] + [DESCRIBE, ("sqs:SendMessage", OTHER_QUEUE)], "managed": [], "access_entry": True}),
]

# The properties handler/customresource_props.go accepts (knownProperties).
CUSTOM_PROPERTIES = {"Manifest", "ManifestS3", "Namespace", "Force", "Prune", "Wait", "Cluster", "Region",
                     "RoleArn", "ExternalId", "Outputs", "ServiceToken", "ServiceTimeout"}
OUTPUT_FIELDS = {"Kind", "Name", "Namespace", "ApiVersion", "JSONPath"}


def check_example(name, path):
    problems = []
    lint = subprocess.run(["cfn-lint", path], capture_output=True, text=True)
    if lint.returncode != 0:
        problems.append("cfn-lint: " + (lint.stdout + lint.stderr).strip().replace("\n", "\n     "))
    template = yaml_parse(open(path).read())
    if "Transform" in template:
        problems.append("a SAM template: check it through the transform instead")
    custom = {k: v for k, v in template["Resources"].items() if v["Type"] == "Custom::KubernetesManifest"}
    if not custom:
        problems.append("no Custom::KubernetesManifest")
    for logical, res in custom.items():
        props = res.get("Properties", {})
        for need in ("ServiceToken", "ServiceTimeout"):
            if need not in props:
                problems.append(f"{logical}: no {need}")
        if ("Manifest" in props) == ("ManifestS3" in props):
            problems.append(f"{logical}: want exactly one of Manifest and ManifestS3")
        unknown = set(props) - CUSTOM_PROPERTIES
        if unknown:
            problems.append(f"{logical}: properties the function refuses: {sorted(unknown)}")
        for out, spec in props.get("Outputs", {}).items():
            if set(spec) - OUTPUT_FIELDS or not {"Kind", "Name", "JSONPath"} <= set(spec):
                problems.append(f"{logical}: output {out} has fields {sorted(spec)}")
    getatts = [o["Value"]["Fn::GetAtt"] for o in template.get("Outputs", {}).values()
               if isinstance(o.get("Value"), dict) and "Fn::GetAtt" in o["Value"]]
    for att in getatts:
        logical, attr = att if isinstance(att, list) else att.split(".", 1)
        if logical not in custom or attr not in custom[logical]["Properties"].get("Outputs", {}):
            problems.append(f"output Fn::GetAtt {logical}.{attr} names no output of a Custom::KubernetesManifest")
    if not getatts:
        problems.append("no output read with Fn::GetAtt")
    print(("ok  " if not problems else "FAIL") + f" {name}" + "".join("\n     " + p for p in problems))
    return not problems


HELM_LOGS = [("logs:CreateLogStream", "ATT:LambdaEksHelmLogGroup.Arn"), ("logs:PutLogEvents", "ATT:LambdaEksHelmLogGroup.Arn"), QUEUE]
REPO = "arn:aws:ecr:us-east-1:111122223333:repository/charts/demo"


def check_helm(name, params, expect):
    """The Helm function (HelmFunction=true): a role of its own with only
    its log group, the cluster (or the target role) and ECR pulls of the
    listed repositories; the main role unchanged."""
    template = yaml_parse(open(os.path.join(os.path.dirname(__file__), "..", "template.yml")).read())
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://bucket/key.zip"
    out = transform(template, params, NoManagedPolicies())
    conditions = conditions_for(params)
    resources = {k: v for k, v in out["Resources"].items() if conditions.get(v.get("Condition"), True) is not False}
    problems = []
    roles = sorted(k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role")
    if roles != ["LambdaEksHelmRole", "LambdaEksRole"]:
        problems.append(f"roles {roles}, want LambdaEksHelmRole and LambdaEksRole")
    else:
        role = resolve(resources["LambdaEksHelmRole"]["Properties"], params, conditions)
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        grants = []
        for st in statements:
            actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
            res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            grants += [(a, r) for a in actions for r in res]
        if sorted(grants) != sorted(expect["grants"]):
            problems.append(f"helm grants {sorted(grants)}, want {sorted(expect['grants'])}")
    entry = "LambdaEksHelmAccessEntry" in resources and conditions["UseHelmAccessEntry"]
    if entry != expect["access_entry"]:
        problems.append(f"helm access entry {entry}, want {expect['access_entry']}")
    elif entry and resources["LambdaEksHelmAccessEntry"]["Properties"]["KubernetesGroups"] != ["lambda-eks-helm"]:
        problems.append("the helm access entry does not map the group lambda-eks-helm")
    print(("ok  " if not problems else "FAIL") + f" {name}" + "".join("\n     " + p for p in problems))
    return not problems


helm_cases = [
    ("helm function: its own role, describe only the cluster, no ECR", {"ClusterName": "demo", "HelmFunction": "true"},
     {"grants": HELM_LOGS + [DESCRIBE], "access_entry": True}),
    ("helm function: ECR pulls of the listed repositories only", {"ClusterName": "demo", "HelmFunction": "true", "HelmEcrRepositoryArns": REPO},
     {"grants": HELM_LOGS + [DESCRIBE, ("ecr:GetAuthorizationToken", "*"), ("ecr:BatchGetImage", REPO),
                             ("ecr:GetDownloadUrlForLayer", REPO), ("ecr:ListImages", REPO)], "access_entry": True}),
    ("helm function: cross-account assumes only the target role", {"ClusterName": "demo", "HelmFunction": "true", "TargetRoleArn": TARGET},
     {"grants": HELM_LOGS + [("sts:AssumeRole", TARGET)], "access_entry": False}),
    ("helm function: a codepipeline action answers jobs only (artifacts are read with the job's credentials)",
     {"ClusterName": "demo", "HelmFunction": "true", "CodePipelineAction": "true"},
     {"grants": HELM_LOGS + [DESCRIBE, ("codepipeline:PutJobSuccessResult", "*"), ("codepipeline:PutJobFailureResult", "*")], "access_entry": True}),
]

ALARMS = {"Errors": "AWS/Lambda", "Throttles": "AWS/Lambda", "DestinationDeliveryFailures": "AWS/Lambda",
          "Failures": "lambda-eks"}


def check_unattended(name, params, functions, destination, alarm_actions):
    """Both functions' EventInvokeConfig (retries, event age, on-failure
    destination) and their four alarms, after the SAM transform."""
    template = yaml_parse(open(os.path.join(os.path.dirname(__file__), "..", "template.yml")).read())
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://bucket/key.zip"
    out = transform(template, params, NoManagedPolicies())
    conditions = conditions_for(params)
    resources = {k: v for k, v in out["Resources"].items() if conditions.get(v.get("Condition"), True) is not False}
    params = {**{k: str(v["Default"]) for k, v in template["Parameters"].items() if "Default" in v}, **params}
    problems = []
    configs = {resolve(v["Properties"]["FunctionName"], params, conditions): resolve(v["Properties"], params, conditions)
               for v in resources.values() if v["Type"] == "AWS::Lambda::EventInvokeConfig"}
    if sorted(configs) != sorted(functions):
        problems.append(f"EventInvokeConfig for {sorted(configs)}, want {sorted(functions)}")
    for fn, (retries, age) in functions.items():
        c = configs.get(fn)
        if c is None:
            continue
        got = (c["MaximumRetryAttempts"], c["MaximumEventAgeInSeconds"], c["DestinationConfig"]["OnFailure"]["Destination"])
        if got != (retries, age, destination):
            problems.append(f"{fn}: retries, age, destination {got}, want {(retries, age, destination)}")
    queue = "FailureQueue" in resources
    if queue != (destination == "ATT:FailureQueue.Arn"):
        problems.append(f"failure queue created: {queue}")
    elif queue:
        q = resources["FailureQueue"]["Properties"]
        if q.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in q:
            problems.append("the failure queue is not encrypted")
    alarms = [resolve(v["Properties"], params, conditions) for v in resources.values() if v["Type"] == "AWS::CloudWatch::Alarm"]
    for fn in functions:
        for metric, ns in ALARMS.items():
            found = [a for a in alarms if a["MetricName"] == metric and a["Namespace"] == ns
                     and [d["Value"] for d in a["Dimensions"]] == [fn]]
            if len(found) != 1:
                problems.append(f"{fn}: {len(found)} alarms on {ns} {metric}, want 1")
            elif found[0].get("AlarmActions", []) != alarm_actions:
                problems.append(f"{fn}: alarm {metric} actions {found[0].get('AlarmActions')}, want {alarm_actions}")
    print(("ok  " if not problems else "FAIL") + f" {name}" + "".join("\n     " + p for p in problems))
    return not problems


MAIN_FN, HELM_FN, LC_FN = "LambdaEksFunction", "LambdaEksHelmFunction", "LambdaEksLifecycleFunction"
unattended_cases = [
    ("unattended: defaults, an encrypted queue, alarms without actions", {"ClusterName": "demo"},
     {MAIN_FN: ("2", "3600")}, "ATT:FailureQueue.Arn", []),
    ("unattended: helm too, an SNS destination and an alarm topic",
     {"ClusterName": "demo", "HelmFunction": "true", "FailureDestinationArn": TOPIC, "AlarmTopicArn": TOPIC,
      "RetryAttempts": "0", "MaxEventAgeSeconds": "600"},
     {MAIN_FN: ("0", "600"), HELM_FN: ("1", "3600")}, TOPIC, [TOPIC]),
    ("unattended: the lifecycle function, retried twice, events as old as a heartbeat timeout",
     {"ClusterName": "demo", "LifecycleFunction": "true", "LifecycleHeartbeatSeconds": "600"},
     {MAIN_FN: ("2", "3600"), LC_FN: (2, "600")}, "ATT:FailureQueue.Arn", []),
]

LC_LOGS = [("logs:CreateLogStream", "ATT:LambdaEksLifecycleLogGroup.Arn"), ("logs:PutLogEvents", "ATT:LambdaEksLifecycleLogGroup.Arn"), QUEUE]
LC_SELF = ("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:111122223333:function:stack-lambda-eks-lifecycle")
LC_READ = [("autoscaling:DescribeLifecycleHooks", "*"), ("ec2:DescribeInstances", "*"), LC_SELF]


def asg_arn(name):
    return "arn:aws:autoscaling:us-east-1:111122223333:autoScalingGroup:*:autoScalingGroupName/" + name


def check_lifecycle(name, params, expect):
    """The lifecycle function (LifecycleFunction=true): a role of its own
    that completes and heartbeats the actions of exactly the named groups,
    reads hooks and instances, invokes only itself; its rules, hooks and
    access entry; recursion allowed for its own continuations."""
    template = yaml_parse(open(os.path.join(os.path.dirname(__file__), "..", "template.yml")).read())
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://bucket/key.zip"
    out = transform(template, params, NoManagedPolicies())
    conditions = conditions_for(params)
    resources = {k: v for k, v in out["Resources"].items() if conditions.get(v.get("Condition"), True) is not False}
    problems = []
    roles = sorted(k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role")
    if roles != ["LambdaEksLifecycleRole", "LambdaEksRole"]:
        problems.append(f"roles {roles}, want LambdaEksLifecycleRole and LambdaEksRole")
    else:
        role = resolve(resources["LambdaEksLifecycleRole"]["Properties"], params, conditions)
        grants = []
        for st in (s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]):
            actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
            res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            grants += [(a, r) for a in actions for r in res]
        if sorted(grants) != sorted(expect["grants"]):
            problems.append(f"lifecycle grants {sorted(grants)}, want {sorted(expect['grants'])}")
    fn = resources.get("LambdaEksLifecycleFunction", {}).get("Properties", {})
    if fn.get("RecursiveLoop") != "Allow":
        problems.append("the lifecycle function does not allow its own continuations (RecursiveLoop)")
    entry = "LambdaEksLifecycleAccessEntry" in resources
    if entry != expect["access_entry"]:
        problems.append(f"lifecycle access entry {entry}, want {expect['access_entry']}")
    elif entry and resources["LambdaEksLifecycleAccessEntry"]["Properties"]["KubernetesGroups"] != ["lambda-eks-lifecycle"]:
        problems.append("the lifecycle access entry does not map the group lambda-eks-lifecycle")
    rules = {k: resolve(v["Properties"], params, conditions) for k, v in resources.items() if v["Type"] == "AWS::Events::Rule"}
    rules = {k: v for k, v in rules.items() if k.startswith("LambdaEksLifecycle")}
    if sorted(rules) != sorted(expect["rules"]):
        problems.append(f"rules {sorted(rules)}, want {sorted(expect['rules'])}")
    asg_rule = rules.get("LambdaEksLifecycleAsgRule")
    matched = asg_rule and asg_rule["EventPattern"]["detail"]["AutoScalingGroupName"]
    if isinstance(matched, str):  # a CommaDelimitedList, as this resolver reads a Ref
        matched = matched.split(",")
    if asg_rule and matched != expect["asgs"]:
        problems.append(f"the lifecycle rule matches groups {matched}, want {expect['asgs']}")
    perms = sum(1 for k, v in resources.items() if v["Type"] == "AWS::Lambda::Permission" and k.startswith("LambdaEksLifecycle"))
    if perms != len(expect["rules"]):
        problems.append(f"{perms} invoke permissions for {len(expect['rules'])} rules")
    hooks = sorted((resolve(v["Properties"]["AutoScalingGroupName"], params, conditions), v["Properties"]["LifecycleTransition"])
                   for v in resources.values() if v["Type"] == "AWS::AutoScaling::LifecycleHook")
    if hooks != sorted(expect["hooks"]):
        problems.append(f"hooks {hooks}, want {sorted(expect['hooks'])}")
    print(("ok  " if not problems else "FAIL") + f" {name}" + "".join("\n     " + p for p in problems))
    return not problems


TERM, LAUNCH = "autoscaling:EC2_INSTANCE_TERMINATING", "autoscaling:EC2_INSTANCE_LAUNCHING"
lifecycle_cases = [
    ("lifecycle function: two groups, their actions only, hooks made here",
     {"ClusterName": "demo", "LifecycleFunction": "true", "LifecycleAsgNames": "ng-a,ng-b", "LifecycleHooks": "true"},
     {"grants": LC_LOGS + LC_READ + [DESCRIBE] + [(a, asg_arn(g)) for g in ("ng-a", "ng-b")
                                                 for a in ("autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat")],
      "access_entry": True, "asgs": ["ng-a", "ng-b"],
      "rules": ["LambdaEksLifecycleAsgRule", "LambdaEksLifecycleSpotRule", "LambdaEksLifecycleHealthRule"],
      "hooks": [(g, t) for g in ("ng-a", "ng-b") for t in (TERM, LAUNCH)]}),
    ("lifecycle function: no group, no lifecycle-action permission, Spot only, cross-account",
     {"ClusterName": "demo", "LifecycleFunction": "true", "LifecycleHealthEvents": "false", "TargetRoleArn": TARGET},
     {"grants": LC_LOGS + LC_READ + [("sts:AssumeRole", TARGET)], "access_entry": False, "asgs": [],
      "rules": ["LambdaEksLifecycleSpotRule"], "hooks": []}),
    ("lifecycle function: three groups whose hooks exist already",
     {"ClusterName": "demo", "LifecycleFunction": "true", "LifecycleAsgNames": "a,b,c", "LifecycleSpotEvents": "false", "LifecycleHealthEvents": "false"},
     {"grants": LC_LOGS + LC_READ + [DESCRIBE] + [(a, asg_arn(g)) for g in "abc"
                                                 for a in ("autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat")],
      "access_entry": True, "asgs": ["a", "b", "c"], "rules": ["LambdaEksLifecycleAsgRule"], "hooks": []}),
]

results = [check(*c) for c in cases]
results += [check_lifecycle(*c) for c in lifecycle_cases]
results += [check_unattended(*c) for c in unattended_cases]
results += [check_helm(*c) for c in helm_cases]
results.append(check_example("example: Custom::KubernetesManifest stack",
                             os.path.join(os.path.dirname(__file__), "..", "examples", "manifest-stack.yml")))


def check_pipeline_example(name, path):
    """examples/pipeline-stack.yml: cfn-lint clean, a Lambda invoke action
    whose UserParameters (with the stack's parameters filled in) are the
    JSON the function decodes, naming the pipeline, and a pipeline role that
    may invoke the function and nothing else of Lambda."""
    import json
    problems = []
    lint = subprocess.run(["cfn-lint", path], capture_output=True, text=True)
    if lint.returncode != 0:
        problems.append("cfn-lint: " + (lint.stdout + lint.stderr).strip().replace("\n", "\n     "))
    template = yaml_parse(open(path).read())
    params = {k: str(v.get("Default", "x")) for k, v in template["Parameters"].items()}
    actions = [a for r in template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"
               for st in r["Properties"]["Stages"] for a in st["Actions"] if a["ActionTypeId"]["Provider"] == "Lambda"]
    if len(actions) != 1:
        problems.append(f"{len(actions)} Lambda invoke actions, want 1")
    for a in actions:
        up = resolve(a["Configuration"]["UserParameters"], params, {})
        try:
            decoded = json.loads(up)
        except ValueError as e:
            problems.append(f"UserParameters {up!r} is not JSON: {e}")
            continue
        known = {"pipeline", "action", "cluster", "region", "namespace", "artifact", "files", "directory", "prune", "wait"}
        if set(decoded) - known or not decoded.get("pipeline"):
            problems.append(f"UserParameters {decoded}: fields the function refuses, or no pipeline")
    grants = [(s["Action"], s["Resource"]) for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"
              for p in r["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]
              if "lambda:" in str(s["Action"])]
    if grants != [("lambda:InvokeFunction", {"Ref": "LambdaEksFunctionArn"})]:
        problems.append(f"lambda grants {grants}, want lambda:InvokeFunction on the function only")
    print(("ok  " if not problems else "FAIL") + f" {name}" + "".join("\n     " + p for p in problems))
    return not problems


results.append(check_pipeline_example("example: CodePipeline stack (S3 source -> lambda-eks)",
                                      os.path.join(os.path.dirname(__file__), "..", "examples", "pipeline-stack.yml")))
print(f"{results.count(True)} passed, {results.count(False)} failed")
sys.exit(0 if all(results) else 1)
