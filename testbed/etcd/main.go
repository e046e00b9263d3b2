// Command etcd is the etcd server of go.etcd.io/etcd/server/v3, built here
// because Debian ships only etcd 3.4 and kube-apiserver 1.34+ expects 3.6.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
