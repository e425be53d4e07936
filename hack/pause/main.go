// The Pod sandbox's process (what registry.k8s.io/pause does): hold the Pod's namespaces open
// until the runtime stops it. Built statically by hack/tools.sh, because no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// PID 1 of the sandbox must reap orphans that end up in its PID namespace.
	signal.Ignore(syscall.SIGCHLD)
	<-stop
}
