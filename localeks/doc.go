// Package localeks is a local replica of Amazon EKS built from real parts, the
// default target of ./local.sh and of the end-to-end tests in ./e2e. It is its
// own Go module so that its dependencies never reach the function's go.mod.
//
// The chain it reproduces, all on loopback:
//
//	bootstrap (the function, unchanged)  <- lambdart: an emulated Lambda Runtime API
//	  |  AWS SDK over HTTPS_PROXY, trusting the shim's CA (SSL_CERT_FILE)
//	  +--> shim --> moto_server: eks DescribeCluster (answer rewritten to the
//	  |                          local apiserver's endpoint and CA)
//	  +--> kube-apiserver (TLS, RBAC), Bearer k8s-aws-v1.<presigned STS GetCallerIdentity>
//	         --> token webhook: aws-iam-authenticator server (EKSConfigMap, reads kube-system/aws-auth)
//	               --> replays the presigned URL through the shim --> moto_server STS
//
// The function runs with credentials from moto's AssumeRole of the execution
// role lambda-eks-exec (an assumed-role session, the kind Lambda injects),
// mapped in aws-auth to lambda:{{SessionName}} in group lambda-eks; the
// project's own permissions.yml grants that group its RBAC. So a request is
// authenticated and authorized exactly as on EKS, by the same programs.
//
// Packages: parts (build recipes for kube-apiserver, etcd and the
// authenticator), stack (PKI, processes, moto setup), shim (what moto lacks),
// lambdart (the Runtime API emulator), cmd/localeks (the CLI used by
// ./local.sh), e2e (the end-to-end tests).
//
// Every process gets AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1 and
// AWS_REGION, so that no AWS client can ever leave loopback.
package localeks
