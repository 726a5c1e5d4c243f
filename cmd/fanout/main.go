// Command fanout is the fanout command-line tool: submit and watch
// batches, or run everything locally with `fanout dev` / `fanout demo`.
package main

import "github.com/fanoutdev/fanout/internal/cli"

func main() { cli.Main() }
