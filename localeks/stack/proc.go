package stack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerVar marks every process the stack starts, with the state directory as
// its value, so that a leftover found by port or pidfile is provably ours
// before it is stopped.
const ownerVar = "LOCALEKS_STACK"

// proc is a process the stack started, as recorded in its pidfile. The start
// time (in clock ticks since boot) guards against a recycled PID.
type proc struct {
	Name  string   `json:"name"`
	PID   int      `json:"pid"`
	Start uint64   `json:"start"`
	Args  []string `json:"args"`
}

// startProcess starts argv detached (own session, output to its log file) and
// records it in its pidfile.
func startProcess(p Paths, name string, argv, env []string) (proc, error) {
	logf, err := os.OpenFile(p.Log(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return proc{}, err
	}
	defer func() { _ = logf.Close() }()
	_, _ = fmt.Fprintf(logf, "---- %s localeks: starting %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // G204: the stack's own components
	cmd.Env = append(env, ownerVar+"="+p.Dir)
	cmd.Dir = p.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	// Reap it if it dies while this process lives (tests); the stack itself
	// outlives this process otherwise.
	go func() { _ = cmd.Wait() }()
	start, err := startTime(cmd.Process.Pid)
	if err != nil {
		_ = cmd.Process.Kill()
		return proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	pr := proc{Name: name, PID: cmd.Process.Pid, Start: start, Args: argv}
	b, err := json.Marshal(pr)
	if err != nil {
		return proc{}, err
	}
	if err := writeFile(p.PID(name), b, 0o600); err != nil {
		_ = cmd.Process.Kill()
		return proc{}, err
	}
	return pr, nil
}

// readProc reads a pidfile; ok is false when there is none.
func readProc(p Paths, name string) (proc, bool) {
	b, err := os.ReadFile(p.PID(name))
	if err != nil {
		return proc{}, false
	}
	var pr proc
	if err := json.Unmarshal(b, &pr); err != nil || pr.PID <= 0 {
		return proc{}, false
	}
	return pr, true
}

// alive reports whether the recorded process still runs (not a zombie, not a
// recycled PID).
func (pr proc) alive() bool {
	st, err := startTime(pr.PID)
	return err == nil && st == pr.Start && !zombie(pr.PID)
}

// stop ends the process: SIGTERM, after grace a second SIGTERM (the
// authenticator ignores the first), then SIGKILL.
func (pr proc) stop(grace time.Duration) error {
	if !pr.alive() {
		return nil
	}
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGTERM, grace}, {syscall.SIGTERM, 1500 * time.Millisecond}, {syscall.SIGKILL, 2 * time.Second}} {
		if err := syscall.Kill(pr.PID, step.sig); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return nil
			}
			return fmt.Errorf("signal %s (pid %d): %w", pr.Name, pr.PID, err)
		}
		deadline := time.Now().Add(step.wait)
		for time.Now().Before(deadline) {
			if !pr.alive() {
				return nil
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", pr.Name, pr.PID)
}

// startTime returns field 22 of /proc/PID/stat.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// ownedBy reports whether pid was started by the stack in dir.
func ownedBy(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	want := []byte(ownerVar + "=" + dir)
	for _, kv := range bytes.Split(b, []byte{0}) {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// listeners returns the PIDs of processes listening on a TCP port, on any
// address. It reads /proc, so it sees only what this user may see.
func listeners(port int) []int {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f) //nolint:gosec // G304: fixed /proc paths
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseUint(hexPort, 16, 32); err == nil && int(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		_ = fh.Close()
	}
	if len(inodes) == 0 {
		return nil
	}
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, fdDir := range procs {
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && inodes[link] {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(fdDir)))
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// processName returns a short description of pid for error messages.
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Sprintf("pid %d", pid)
	}
	return fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
}
