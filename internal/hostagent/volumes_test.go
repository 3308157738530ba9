package hostagent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPrepareVolumes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for tmpfs mounts")
	}
	root := t.TempDir()
	vp := &volumePreparer{dirs: layout{root: root}, objs: fakeObjects{
		cms:     map[string]*corev1.ConfigMap{"cm": {Data: map[string]string{"a": "1", "b": "2"}}},
		secrets: map[string]*corev1.Secret{"s": {Data: map[string][]byte{"pw": []byte("x")}}},
	}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"k": "v"}}}
	vols := []corev1.Volume{
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"},
			Items: []corev1.KeyToPath{{Key: "b", Path: "sub/b.txt", Mode: ptr.To(int32(0o600))}}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: ptr.To(int32(0o400))}}},
		{Name: "gone", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope", Optional: ptr.To(true)}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
		}}}},
	}
	for range 2 { // idempotent
		got, err := vp.prepare(context.Background(), "sb", pod, vols, podFacts{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(vols) {
			t.Fatalf("volumes %v", got)
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, "pods/sb/volumes", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if read("cm/sub/b.txt") != "2" || read("sec/pw") != "x" || read("proj/a") != "1" || read("proj/ns") != "ns" {
		t.Error("file contents")
	}
	if st, _ := os.Stat(filepath.Join(root, "pods/sb/volumes/sec/pw")); st.Mode().Perm() != 0o400 {
		t.Errorf("secret mode %v", st.Mode())
	}
	ms, _ := mountsUnder(filepath.Join(root, "pods/sb"))
	if len(ms) != 4 { // mem, sec, gone (secret), proj: once each although prepared twice
		t.Errorf("mounts %v", ms)
	}
	if err := removePodDir(filepath.Join(root, "pods/sb")); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mountsUnder(filepath.Join(root, "pods/sb")); len(ms) != 0 {
		t.Errorf("mounts left %v", ms)
	}
	if _, err := vp.prepare(context.Background(), "sb2", pod, []corev1.Volume{{Name: "x", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}}}}}, podFacts{}); err == nil {
		t.Error("a missing configmap must fail")
	}
	removePodDir(filepath.Join(root, "pods/sb2"))
}

func TestContainerMounts(t *testing.T) {
	dir := t.TempDir()
	c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/data", SubPath: "x/y"}, {Name: "cfg", MountPath: "/cfg"}}}
	ms, err := containerMounts(c, map[string]string{"v": dir, "cfg": "/cfgdir"}, map[string]bool{"cfg": true})
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].HostPath != filepath.Join(dir, "x/y") || ms[0].ReadOnly || !ms[1].ReadOnly {
		t.Errorf("mounts %+v", ms)
	}
	if _, err := containerMounts(&corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/d", SubPath: "../etc"}}}, map[string]string{"v": dir}, nil); err == nil {
		t.Error("subPath escaping the volume must fail")
	}
}
