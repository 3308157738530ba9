package hostagent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vessel-dev/vessel/internal/runtime"
)

// volumeFile is one file of a configMap/secret/downwardAPI/projected volume.
type volumeFile struct {
	path string
	data []byte
	mode os.FileMode
}

// volumePreparer makes a pod's volumes as host directories the runtime bind-mounts.
type volumePreparer struct {
	kube kubernetes.Interface
	objs Objects
	dirs layout
}

// prepare creates (or refreshes) every volume of the pod and returns name → host path.
// It is idempotent: mounts already in place are reused, files are rewritten.
func (vp *volumePreparer) prepare(ctx context.Context, sandbox string, pod *corev1.Pod, volumes []corev1.Volume, facts podFacts) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range volumes {
		dir := vp.dirs.volume(sandbox, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		var files []volumeFile
		var err error
		switch {
		case v.EmptyDir != nil:
			if v.EmptyDir.Medium == corev1.StorageMediumMemory {
				size := facts.Size.MemoryMiB << 20
				if v.EmptyDir.SizeLimit != nil && !v.EmptyDir.SizeLimit.IsZero() {
					size = v.EmptyDir.SizeLimit.Value()
				}
				err = ensureTmpfs(dir, size, 0o1777)
			} else {
				err = os.Chmod(dir, 0o1777)
			}
		case v.ConfigMap != nil:
			files, err = vp.configMapFiles(ctx, pod.Namespace, &corev1.ConfigMapProjection{LocalObjectReference: v.ConfigMap.LocalObjectReference, Items: v.ConfigMap.Items, Optional: v.ConfigMap.Optional}, mode(v.ConfigMap.DefaultMode))
		case v.Secret != nil:
			if err = ensureTmpfs(dir, 0, 0o755); err == nil {
				files, err = vp.secretFiles(ctx, pod.Namespace, &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Items: v.Secret.Items, Optional: v.Secret.Optional}, mode(v.Secret.DefaultMode))
			}
		case v.DownwardAPI != nil:
			files, err = downwardFiles(pod, facts, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode))
		case v.Projected != nil:
			if err = ensureTmpfs(dir, 0, 0o755); err == nil {
				files, err = vp.projectedFiles(ctx, pod, facts, v.Projected)
			}
		default:
			err = fmt.Errorf("%w: unsupported volume type", errConfig)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if err := writeVolumeFiles(dir, files); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		out[v.Name] = dir
	}
	return out, nil
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m) & 0o777
}

func itemMode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & 0o777
}

func (vp *volumePreparer) configMapFiles(ctx context.Context, ns string, p *corev1.ConfigMapProjection, def os.FileMode) ([]volumeFile, error) {
	cm, err := vp.objs.ConfigMap(ctx, ns, p.Name)
	if err != nil {
		if apierrors.IsNotFound(err) && p.Optional != nil && *p.Optional {
			return nil, nil
		}
		return nil, fmt.Errorf("configmap %q: %w", p.Name, wrapConfig(err))
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	maps.Copy(data, cm.BinaryData)
	return keyFiles(data, p.Items, def, p.Optional, "configmap "+p.Name)
}

func (vp *volumePreparer) secretFiles(ctx context.Context, ns string, p *corev1.SecretProjection, def os.FileMode) ([]volumeFile, error) {
	s, err := vp.objs.Secret(ctx, ns, p.Name)
	if err != nil {
		if apierrors.IsNotFound(err) && p.Optional != nil && *p.Optional {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %q: %w", p.Name, wrapConfig(err))
	}
	return keyFiles(s.Data, p.Items, def, p.Optional, "secret "+p.Name)
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def os.FileMode, optional *bool, what string) ([]volumeFile, error) {
	var out []volumeFile
	if len(items) == 0 {
		for _, k := range slices.Sorted(maps.Keys(data)) {
			out = append(out, volumeFile{path: k, data: data[k], mode: def})
		}
		return out, nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, fmt.Errorf("%w: %s has no key %q", errConfig, what, it.Key)
		}
		out = append(out, volumeFile{path: it.Path, data: d, mode: itemMode(it.Mode, def)})
	}
	return out, nil
}

func downwardFiles(pod *corev1.Pod, facts podFacts, items []corev1.DownwardAPIVolumeFile, def os.FileMode) ([]volumeFile, error) {
	var out []volumeFile
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, facts, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = resourceValue(pod, facts, "", it.ResourceFieldRef)
		default:
			err = fmt.Errorf("%w: downwardAPI item %s has no source", errConfig, it.Path)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, volumeFile{path: it.Path, data: []byte(v), mode: itemMode(it.Mode, def)})
	}
	return out, nil
}

func (vp *volumePreparer) projectedFiles(ctx context.Context, pod *corev1.Pod, facts podFacts, p *corev1.ProjectedVolumeSource) ([]volumeFile, error) {
	def := mode(p.DefaultMode)
	var out []volumeFile
	for _, src := range p.Sources {
		var files []volumeFile
		var err error
		switch {
		case src.ConfigMap != nil:
			files, err = vp.configMapFiles(ctx, pod.Namespace, src.ConfigMap, def)
		case src.Secret != nil:
			files, err = vp.secretFiles(ctx, pod.Namespace, src.Secret, def)
		case src.DownwardAPI != nil:
			files, err = downwardFiles(pod, facts, src.DownwardAPI.Items, def)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = vp.token(ctx, pod, src.ServiceAccountToken)
			files = []volumeFile{{path: src.ServiceAccountToken.Path, data: []byte(tok), mode: def}}
		default:
			err = fmt.Errorf("%w: unsupported projected source", errConfig)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, files...)
	}
	return out, nil
}

// token asks the TokenRequest API for a token bound to the pod.
func (vp *volumePreparer) token(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	if p.ExpirationSeconds != nil {
		exp = *p.ExpirationSeconds
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		tr.Spec.Audiences = []string{p.Audience}
	}
	res, err := vp.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	return res.Status.Token, nil
}

// writeVolumeFiles writes files below dir, refusing paths that leave it.
func writeVolumeFiles(dir string, files []volumeFile) error {
	for _, f := range files {
		clean := filepath.Clean("/" + f.path)
		if clean == "/" || strings.Contains(f.path, "..") {
			return fmt.Errorf("%w: bad path %q", errConfig, f.path)
		}
		p := filepath.Join(dir, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(tmp, f.mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}

// ensureTmpfs mounts a tmpfs on dir unless one is there. size 0: the kernel default.
func ensureTmpfs(dir string, size int64, perm os.FileMode) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC && isMountPoint(dir) {
		return nil
	}
	opts := "mode=" + strconv.FormatUint(uint64(perm), 8)
	if size > 0 {
		opts += ",size=" + strconv.FormatInt(size, 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountPoint(dir string) bool {
	ms, err := mountsUnder(dir)
	return err == nil && slices.Contains(ms, dir)
}

// removePodDir unmounts everything below the pod's directory and deletes it. Idempotent.
func removePodDir(dir string) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return nil
}

// containerMounts turns volumeMounts into runtime mounts over prepared volume dirs.
func containerMounts(c *corev1.Container, vols map[string]string, readOnlyVolumes map[string]bool) ([]runtime.Mount, error) {
	var out []runtime.Mount
	for _, m := range c.VolumeMounts {
		dir, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("%w: volumeMount %s: no volume %q", errConfig, m.MountPath, m.Name)
		}
		host := dir
		if m.SubPath != "" {
			sub := filepath.Clean("/" + m.SubPath)
			if strings.Contains(m.SubPath, "..") {
				return nil, fmt.Errorf("%w: volumeMount %s: bad subPath %q", errConfig, m.MountPath, m.SubPath)
			}
			host = filepath.Join(dir, sub)
			if _, err := os.Lstat(host); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(host, 0o755); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, runtime.Mount{HostPath: host, ContainerPath: m.MountPath, ReadOnly: m.ReadOnly || readOnlyVolumes[m.Name]})
	}
	return out, nil
}
