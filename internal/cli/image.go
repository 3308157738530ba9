package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"

	"github.com/vessel-dev/vessel/internal/registry"
)

// registryTarget is how the image subcommands reach the local registry: over HTTP at --registry
// when one is given, else by serving --registry-dir themselves for the duration of the command
// (safe while `vessel up` serves the same dir: every registry write is an atomic rename).
type registryTarget struct {
	addr string
	dir  string
}

func (t *registryTarget) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.addr, "registry", "", "address (host:port) of a running local registry, e.g. "+registry.DefaultAddr)
	cmd.Flags().StringVar(&t.dir, "registry-dir", defaultRegistryDir(),
		"the local registry's data dir, used when --registry is not given")
}

func (t *registryTarget) with(fn func(addr string) error) error {
	if t.addr != "" {
		return fn(t.addr)
	}
	return registry.WithLocal(t.dir, fn)
}

// display drops the ephemeral loopback address a --registry-dir run serves on: it means nothing
// once the command exits.
func (t *registryTarget) display(addr, ref string) string {
	if t.addr != "" {
		return ref
	}
	return strings.TrimPrefix(ref, addr+"/")
}

// defaultRegistryDir is <data dir>/registry, the dir `vessel up` serves.
func defaultRegistryDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/vessel/registry"
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "vessel", "registry")
}

// newImageCommand returns `vessel image` with import, ls and build-demo.
func newImageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage images in the local registry that Vessel hosts pull from when offline",
	}
	cmd.AddCommand(newImageImportCommand(), newImageLsCommand(), newImageBuildDemoCommand())
	return cmd
}

func newImageImportCommand() *cobra.Command {
	var target registryTarget
	var imageName string
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Push a docker save tar, an OCI layout directory or an OCI archive into the local registry",
		Long: `Push every image in FILE into the local registry. Names come from the archive (docker save
RepoTags, OCI ref-name annotations) with the registry host dropped: "nginx:1.25" is stored as
library/nginx:1.25 and pulled as <registry>/library/nginx:1.25. --name overrides the name of a
single-image archive.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tmp, err := os.MkdirTemp("", "vessel-import-*")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			arts, err := registry.ReadArchive(args[0], imageName, tmp)
			if err != nil {
				return err
			}
			return target.with(func(addr string) error {
				refs, err := registry.Push(cmd.Context(), addr, arts)
				for _, r := range refs {
					fmt.Fprintln(cmd.OutOrStdout(), target.display(addr, r))
				}
				return err
			})
		},
	}
	target.flags(cmd)
	cmd.Flags().StringVar(&imageName, "name", "", "repository:tag to store a single-image archive under")
	return cmd
}

func newImageLsCommand() *cobra.Command {
	var target registryTarget
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the repositories, tags and digests in the local registry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return target.with(func(addr string) error { return listRegistry(cmd, &target, addr) })
		},
	}
	target.flags(cmd)
	return cmd
}

func listRegistry(cmd *cobra.Command, target *registryTarget, addr string) error {
	ctx := cmd.Context()
	reg, err := name.NewRegistry(addr, name.Insecure)
	if err != nil {
		return err
	}
	repos, err := remote.Catalog(ctx, reg)
	if err != nil {
		return fmt.Errorf("list registry %s: %w", addr, err)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "IMAGE\tDIGEST")
	for _, repo := range repos {
		r := reg.Repo(repo)
		tags, err := remote.List(r, remote.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("list tags of %s: %w", r, err)
		}
		for _, tag := range tags {
			desc, err := remote.Head(r.Tag(tag), remote.WithContext(ctx))
			if err != nil {
				return fmt.Errorf("resolve %s:%s: %w", r, tag, err)
			}
			fmt.Fprintf(w, "%s\t%s\n", target.display(addr, r.Tag(tag).String()), desc.Digest)
		}
	}
	return w.Flush()
}

func newImageBuildDemoCommand() *cobra.Command {
	var target registryTarget
	var binary, tag string
	cmd := &cobra.Command{
		Use:   "build-demo",
		Short: "Build the demo HTTP server image and push it to the local registry as " + registry.DemoName,
		Long: `Build an image holding cmd/vessel-demo, a static HTTP server on port 8080 that answers with its
pod name. The binary is taken from --binary, or built with the Go toolchain (CGO_ENABLED=0,
linux/amd64; standard library only, so no network is needed) when the current directory is inside
a Vessel source checkout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin := binary
			if bin == "" {
				tmp, err := os.MkdirTemp("", "vessel-demo-*")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if bin, err = buildDemo(cmd.Context(), tmp); err != nil {
					return err
				}
			}
			b, err := os.ReadFile(bin)
			if err != nil {
				return fmt.Errorf("read demo binary: %w", err)
			}
			img, err := registry.DemoImage(b)
			if err != nil {
				return err
			}
			return target.with(func(addr string) error {
				refs, err := registry.Push(cmd.Context(), addr, []registry.Artifact{{Name: tag, Image: img}})
				for _, r := range refs {
					fmt.Fprintln(cmd.OutOrStdout(), target.display(addr, r))
				}
				return err
			})
		},
	}
	target.flags(cmd)
	cmd.Flags().StringVar(&binary, "binary", "", "a static linux/amd64 build of cmd/vessel-demo (default: build it with go)")
	cmd.Flags().StringVar(&tag, "name", registry.DemoName, "repository:tag to push the image as")
	return cmd
}

// buildDemo compiles cmd/vessel-demo from the source checkout containing the working directory.
func buildDemo(ctx context.Context, outDir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("build demo: no Go toolchain on PATH; pass --binary with a static build of cmd/vessel-demo")
	}
	src, err := findModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(outDir, "vessel-demo")
	build := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/vessel-demo")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build demo in %s: %w\n%s", src, err, msg)
	}
	return out, nil
}

func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/vessel-dev/vessel\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("build demo: not inside a Vessel source checkout; pass --binary with a static build of cmd/vessel-demo")
		}
		dir = parent
	}
}
