// Package sdktest is the conformance suite for Cohort plugins. A plugin
// author runs it in-process, through the SDK's real gRPC shims:
//
//	func TestConformance(t *testing.T) {
//		sdktest.RunChannel(t, &myChannel{}, sdktest.ChannelCase{
//			Config:     []byte("api_key: test\n"),
//			BadConfigs: [][]byte{[]byte("api_key: ''\n")},
//		})
//	}
//
// and against the built binary, launched the way the daemon launches it:
//
//	sdktest.RunChannelBinary(t, sdktest.BuildPlugin(t, "example.com/me/myplugin"), c)
//
// Every check is a subtest. The suite calls Configure several times on the
// same instance (the bad configs first, then Config); the last successful
// call must win. LaunchChannel, LaunchSource, ConnectChannel and
// ConnectSource give the host's view of a plugin for tests of your own.
package sdktest
