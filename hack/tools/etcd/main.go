// Command etcd is etcd's own server entry point (etcdmain), built from the published
// go.etcd.io/etcd/server/v3 module because the etcd root module carries replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
