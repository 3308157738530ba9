package oci

import (
	goruntime "runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// deniedSyscalls fail with EPERM. The profile is a denylist: it blocks what
// lets a container reach past its namespaces and cgroup (kernel modules,
// kexec, mounts and namespace creation, clock and swap changes, keyrings,
// BPF, perf, ptrace and cross-process memory access, handle-based opens)
// and allows everything else. A denylist keeps new syscalls that glibc and
// language runtimes adopt working without a profile update, at the price of
// also allowing new dangerous ones; with CAP_SYS_ADMIN never granted
// (admission rejects it) most of those still fail on capability checks.
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
	"delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
	"get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
	"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind",
	"mount", "mount_setattr", "move_mount", "move_pages", "name_to_handle_at",
	"nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open",
	"pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
	"query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
	"set_mempolicy", "setns", "settimeofday", "stime", "swapoff", "swapon",
	"sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib",
	"userfaultfd", "ustat", "vm86", "vm86old",
}

// enosysSyscalls fail with ENOSYS so libcs fall back to an older call the
// profile can see into: clone3 passes its flags in memory, where a filter
// cannot check them, so namespace creation would slip through it.
var enosysSyscalls = []string{"clone3"}

const (
	errnoEPERM  = 1
	errnoENOSYS = 38
)

// cloneNewFlags are the CLONE_NEW* flags: NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
// NEWUSER, NEWPID, NEWNET and NEWTIME.
var cloneNewFlags = []uint64{0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080}

func defaultSeccomp() *specs.LinuxSeccomp {
	eperm, enosys := uint(errnoEPERM), uint(errnoENOSYS)
	sc := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: seccompArches(),
		Syscalls: []specs.LinuxSyscall{
			{Names: deniedSyscalls, Action: specs.ActErrno, ErrnoRet: &eperm},
			{Names: enosysSyscalls, Action: specs.ActErrno, ErrnoRet: &enosys},
		},
	}
	// clone(2) stays allowed for threads and fork but not for creating
	// namespaces. A filter can only test "arg & mask == value", so there is
	// one rule per flag, matching when that flag is set.
	for _, flag := range cloneNewFlags {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: flag, ValueTwo: flag, Op: specs.OpMaskedEqual}},
		})
	}
	return sc
}

// seccompArches lists the host's native ABI and its compat ABIs: a filter
// that left out the 32-bit ABI would let a container reach the denied
// syscalls through it.
func seccompArches() []specs.Arch {
	switch goruntime.GOARCH {
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	default:
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	}
}
