//go:build tools

// Package rie pins AWS's Lambda Runtime Interface Emulator, the emulator that
// `sam local invoke` runs inside its container. The local replica runs the
// function under it. It is never imported: localeks/parts/build.sh builds it
// into a per-version cache outside the checkout.
package rie

import _ "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
