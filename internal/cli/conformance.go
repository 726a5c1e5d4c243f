package cli

import "github.com/spf13/cobra"

func newConformanceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "conformance", Hidden: true}
	return cmd
}
