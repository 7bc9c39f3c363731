/* The template ("zygote") of bench/bench_zygote.py: a CPython extension module, built at run time
   with gcc into a temporary directory, that a started /usr/bin/python3 -E -s imports inside its
   prepared read-only view. A prototype to measure what such a sandbox costs, not production code.

   _zygote.serve(ctl_fd, config_path) serves runs sent on ctl_fd (a SOCK_SEQPACKET socket):

     template (root, the view, a started interpreter)
       └─ clone(NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS): A, pid 1 of the run's pid namespace
            joins the run's cgroups, unshare(NEWCGROUP), hostname, lo up, tmpfs on /sandbox and
            /dev/shm, a fresh /proc with LiveCode's masks, rlimits, setsid, drops to the slot uid
            (bounding set, groups, gids, uids, inheritable and ambient caps), no_new_privs, the
            seccomp filter; then
            └─ fork: B, pid 2: the run's pipes on 0/1/2 and nothing else open, cwd /sandbox/work,
               main.py written, Python's state reset (argv, orig_argv, path[0], environ,
               __main__), the source compiled and run; the interpreter then ends as any does.
            A waits for B, writes B's status on the result pipe, exits (the pid namespace goes).

   In the template serve() never returns until ctl_fd is closed; in B it returns once the run's
   program has run (or raises its SystemExit). Each step's CPU (CLOCK_THREAD_CPUTIME_ID) goes to a
   stats pipe, closed before the program runs. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#define MAX_MSG (1 << 20)
#define MAX_FDS 16
#define MAX_MASKS 32
#define MAX_LIMITS 8
#define MAX_KIDS 256

/* Flags of a run (the header's `flags`). */
#define F_NET 1        /* a network namespace of its own (else the template's nursery one) */
#define F_PROC_SUBSET 2 /* /proc mounted subset=pid: no host-wide files, no masks needed */
#define F_NO_SECCOMP 4
#define F_USERNS 16   /* a user namespace of its own after the drop: uid/gid 1000 inside, as bwrap's --uid 1000 */
#define F_FAST_EXIT 8  /* after the program: threading._shutdown, atexit, flush, _exit (no interpreter teardown) */

struct header { /* what the host sends before the payload; native layout (struct "=") */
    uint32_t uid;
    uint32_t flags;
    uint32_t nprocs; /* cgroup.procs fds after the 5 fixed ones */
    uint32_t nlimits;
    uint64_t disk_bytes;
    uint64_t shm_bytes;
    int32_t lres[MAX_LIMITS];
    uint64_t lsoft[MAX_LIMITS];
    uint64_t lhard[MAX_LIMITS];
    uint32_t env_len, argv_len, src_len, pad;
} __attribute__((packed));

static char *msg; /* the last run's message: zeroed as soon as its child is made */
static char masks_file[MAX_MASKS][256], masks_dir[MAX_MASKS][256];
static char binds_src[MAX_MASKS][256], binds_dst[MAX_MASKS][256];
static int n_mask_file, n_mask_dir, n_binds;
static struct sock_filter *bpf;
static unsigned short bpf_len;

static int64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    dprintf(2, "zygote: %s: %s\n", what, strerror(errno));
    _exit(126);
}

static void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        c += w; n -= (size_t)w;
    }
}

static int load_config(const char *path) {
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    char line[512], a[256], b[256];
    while (fgets(line, sizeof line, f)) {
        int n = sscanf(line, "%255s %255s", a, b);
        if (n < 2) continue;
        if (!strcmp(a, "mask_file") && n_mask_file < MAX_MASKS) snprintf(masks_file[n_mask_file++], 256, "%s", b);
        else if (!strcmp(a, "mask_dir") && n_mask_dir < MAX_MASKS) snprintf(masks_dir[n_mask_dir++], 256, "%s", b);
        else if (!strcmp(a, "bind") && n_binds < MAX_MASKS) {
            char c[256];
            if (sscanf(line, "%*s %255s %255s", b, c) == 2) {
                snprintf(binds_src[n_binds], 256, "%s", b);
                snprintf(binds_dst[n_binds++], 256, "%s", c);
            }
        } else if (!strcmp(a, "seccomp")) {
            int fd = open(b, O_RDONLY | O_CLOEXEC);
            if (fd < 0) { fclose(f); return -1; }
            struct stat st;
            fstat(fd, &st);
            bpf = malloc((size_t)st.st_size);
            if (read(fd, bpf, (size_t)st.st_size) != st.st_size) { close(fd); fclose(f); return -1; }
            bpf_len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
            close(fd);
        }
    }
    fclose(f);
    return 0;
}

/* ---- A: pid 1 of the run ------------------------------------------------------------------- */

enum { S_START, S_CGROUP, S_UTS_NET, S_TMPFS, S_PROC, S_MASKS, S_CREDS, S_SECCOMP, S_FORK, NA };
enum { SB_START, SB_FDS, SB_RESET, SB_COMPILE, NB };

static int64_t a_cpu[NA], a_mono[NA];

static void mnt(const char *src, const char *dst, const char *type, unsigned long fl, const char *data) {
    if (mount(src, dst, type, fl, data) < 0) {
        dprintf(2, "zygote: mount %s on %s: %s\n", src ? src : "-", dst, strerror(errno));
        _exit(126);
    }
}

static void lo_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket for lo");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("SIOCSIFFLAGS");
    close(s);
}

static void mkdir_own(const char *p, uid_t uid) {
    if (mkdir(p, 0755) < 0 && errno != EEXIST) die(p);
    if (chown(p, uid, uid) < 0) die(p);
}

/* Everything in A up to (and excluding) the fork of B. fds: [stdin_r, stdout_w, stderr_w,
   result_w, stats_w, procs...]. */
static void set_up_run(const struct header *h, const int *fds, int nfds) {
    uid_t uid = h->uid;
    a_cpu[S_START] = cpu_ns(); a_mono[S_START] = mono_ns();
    for (int i = 5; i < nfds; i++) { /* join the run's cgroups (v1: one per controller) */
        if (write(fds[i], "0", 1) != 1) die("cgroup.procs");
        close(fds[i]);
    }
    if (unshare(CLONE_NEWCGROUP) < 0) die("unshare(NEWCGROUP)");
    a_cpu[S_CGROUP] = cpu_ns(); a_mono[S_CGROUP] = mono_ns();

    if (sethostname("sandbox", 7) < 0) die("sethostname");
    if (h->flags & F_NET) lo_up();
    a_cpu[S_UTS_NET] = cpu_ns(); a_mono[S_UTS_NET] = mono_ns();

    char opts[128];
    snprintf(opts, sizeof opts, "size=%llu,mode=0755,uid=%u,gid=%u", (unsigned long long)h->disk_bytes, uid, uid);
    mnt("tmpfs", "/sandbox", "tmpfs", MS_NOSUID | MS_NODEV, opts);
    mkdir_own("/sandbox/work", uid);
    mkdir_own("/sandbox/work/out", uid);
    mkdir_own("/sandbox/tmp", uid);
    snprintf(opts, sizeof opts, "size=%llu,mode=0755,uid=%u,gid=%u", (unsigned long long)h->shm_bytes, uid, uid);
    mnt("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts);
    a_cpu[S_TMPFS] = cpu_ns(); a_mono[S_TMPFS] = mono_ns();

    if (h->flags & F_PROC_SUBSET) {
        mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid");
        a_cpu[S_PROC] = cpu_ns(); a_mono[S_PROC] = mono_ns();
    } else {
        mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        a_cpu[S_PROC] = cpu_ns(); a_mono[S_PROC] = mono_ns();
        /* /dev/null and the synthesized files are on the template's read-only root: a plain bind
           of them is read-only already (one mount each, not bind + remount). */
        for (int i = 0; i < n_mask_file; i++) mnt("/dev/null", masks_file[i], NULL, MS_BIND, NULL);
        for (int i = 0; i < n_mask_dir; i++)
            mnt("tmpfs", masks_dir[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0755");
        for (int i = 0; i < n_binds; i++) mnt(binds_src[i], binds_dst[i], NULL, MS_BIND, NULL);
    }
    a_cpu[S_MASKS] = cpu_ns(); a_mono[S_MASKS] = mono_ns();

    for (uint32_t i = 0; i < h->nlimits && i < MAX_LIMITS; i++) {
        struct rlimit rl = {h->lsoft[i], h->lhard[i]};
        if (setrlimit(h->lres[i], &rl) < 0) die("setrlimit");
    }
    if (setsid() < 0) die("setsid");
    for (int c = 0; c <= CAP_LAST_CAP; c++)
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) die("PR_CAPBSET_DROP");
    gid_t g = uid;
    if (setgroups(1, &g) < 0) die("setgroups");
    if (setresgid(uid, uid, uid) < 0) die("setresgid");
    if (setresuid(uid, uid, uid) < 0) die("setresuid");
    if (h->flags & F_USERNS) {
        /* As the slot uid (no capability in the host's namespaces left): a user namespace of its
           own mapping 1000 to it. It starts with every capability and a full bounding set *in it*
           (it owns none of the run's other namespaces, made by root before), so both are dropped
           again below, as 1000. */
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* setresuid made /proc/self root's: our maps are ours to write */
        if (unshare(CLONE_NEWUSER) < 0) die("unshare(NEWUSER)");
        char map[64];
        int f = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
        if (f < 0 || write(f, "deny", 4) != 4) die("setgroups deny");
        close(f);
        int len = snprintf(map, sizeof map, "1000 %u 1\n", uid);
        f = open("/proc/self/uid_map", O_WRONLY | O_CLOEXEC);
        if (f < 0 || write(f, map, (size_t)len) != len) die("uid_map");
        close(f);
        f = open("/proc/self/gid_map", O_WRONLY | O_CLOEXEC);
        if (f < 0 || write(f, map, (size_t)len) != len) die("gid_map");
        close(f);
        for (int c = 0; c <= CAP_LAST_CAP; c++)
            if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) die("PR_CAPBSET_DROP in the userns");
        if (setresgid(1000, 1000, 1000) < 0) die("setresgid 1000");
        if (setresuid(1000, 1000, 1000) < 0) die("setresuid 1000");
    }
    struct __user_cap_header_struct ch = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct cd[2];
    memset(cd, 0, sizeof cd);
    if (syscall(SYS_capset, &ch, cd) < 0) die("capset");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* A: not readable by the program (setresuid did it too) */
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* after setresuid, which clears it: the template's death ends the run */
    a_cpu[S_CREDS] = cpu_ns(); a_mono[S_CREDS] = mono_ns();

    if (bpf && !(h->flags & F_NO_SECCOMP)) {
        struct sock_fprog prog = {bpf_len, bpf};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) die("seccomp");
    }
    a_cpu[S_SECCOMP] = cpu_ns(); a_mono[S_SECCOMP] = mono_ns();
}

/* B (or A without a reaper): the run's fds on 0/1/2, nothing else open; cwd; main.py. */
static void program_fds(const int *fds, const char *src, size_t src_len) {
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0) die("dup2");
    if (chdir("/sandbox/work") < 0) die("chdir");
    int f = open("main.py", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f < 0) die("main.py");
    write_all(f, src, src_len);
    close(f);
    umask(022);
}

/* ---- B: Python's state for the run ------------------------------------------------------- */

static int set_str_list(const char *name, const char *const *pre, int npre, const char *args, size_t alen) {
    PyObject *l = PyList_New(0);
    if (!l) return -1;
    for (int i = 0; i < npre; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(pre[i]);
        if (!s || PyList_Append(l, s) < 0) { Py_XDECREF(s); Py_DECREF(l); return -1; }
        Py_DECREF(s);
    }
    for (size_t at = 0; at < alen;) {
        size_t n = strnlen(args + at, alen - at);
        PyObject *s = PyUnicode_DecodeFSDefaultAndSize(args + at, (Py_ssize_t)n);
        if (!s || PyList_Append(l, s) < 0) { Py_XDECREF(s); Py_DECREF(l); return -1; }
        Py_DECREF(s);
        at += n + 1;
    }
    int r = PySys_SetObject(name, l);
    Py_DECREF(l);
    return r;
}

static PyObject *run_program(const struct header *h, const char *env, const char *argv, const char *src,
                             int stats_fd, int64_t *b_cpu, int64_t *b_mono) {
    const char *path = "/sandbox/work/main.py";
    static const char *const orig[] = {"/usr/bin/python3", "-E", "-s", "main.py"};
    if (set_str_list("argv", orig + 3, 1, argv, h->argv_len) < 0) return NULL;
    if (set_str_list("orig_argv", orig, 4, argv, h->argv_len) < 0) return NULL;
    PyObject *syspath = PySys_GetObject("path"); /* borrowed */
    if (syspath && PyList_Check(syspath) && PyList_GET_SIZE(syspath) > 0) {
        PyObject *w = PyUnicode_FromString("/sandbox/work");
        if (!w || PyList_SetItem(syspath, 0, w) < 0) return NULL;
    }
    PyObject *pic = PySys_GetObject("path_importer_cache");
    if (pic && PyDict_Check(pic)) {
        if (PyDict_DelItemString(pic, "") < 0) PyErr_Clear();
        if (PyDict_DelItemString(pic, "/.zyg") < 0) PyErr_Clear();
    }
    PyObject *mods = PyImport_GetModuleDict(); /* borrowed */
    if (PyDict_DelItemString(mods, "_zygote") < 0) PyErr_Clear();
    /* os.environ: cleared and set through its own methods, so that C's environ follows. */
    PyObject *os = PyImport_ImportModule("os");
    if (!os) return NULL;
    PyObject *environ = PyObject_GetAttrString(os, "environ");
    Py_DECREF(os);
    if (!environ) return NULL;
    PyObject *r = PyObject_CallMethod(environ, "clear", NULL);
    if (!r) { Py_DECREF(environ); return NULL; }
    Py_DECREF(r);
    for (size_t at = 0; at < h->env_len;) {
        const char *kv = env + at;
        size_t n = strnlen(kv, h->env_len - at);
        const char *eq = memchr(kv, '=', n);
        if (eq) {
            PyObject *k = PyUnicode_DecodeFSDefaultAndSize(kv, eq - kv);
            PyObject *v = PyUnicode_DecodeFSDefaultAndSize(eq + 1, (Py_ssize_t)(n - (size_t)(eq - kv) - 1));
            if (!k || !v || PyObject_SetItem(environ, k, v) < 0) {
                Py_XDECREF(k); Py_XDECREF(v); Py_DECREF(environ); return NULL;
            }
            Py_DECREF(k); Py_DECREF(v);
        }
        at += n + 1;
    }
    Py_DECREF(environ);
    /* A fresh __main__, as a script run gets it (pythonrun.c: __file__, __cached__, __loader__). */
    PyObject *main = PyModule_New("__main__");
    if (!main) return NULL;
    PyObject *d = PyModule_GetDict(main);
    PyObject *builtins = PyImport_ImportModule("builtins");
    PyObject *fpath = PyUnicode_FromString(path);
    PyObject *ext = PyImport_ImportModule("_frozen_importlib_external");
    PyObject *loader = ext ? PyObject_CallMethod(ext, "SourceFileLoader", "sO", "__main__", fpath) : NULL;
    Py_XDECREF(ext);
    if (!builtins || !fpath || !loader || PyDict_SetItemString(d, "__builtins__", builtins) < 0 ||
        PyDict_SetItemString(d, "__file__", fpath) < 0 || PyDict_SetItemString(d, "__cached__", Py_None) < 0 ||
        PyDict_SetItemString(d, "__loader__", loader) < 0 || PyDict_SetItemString(mods, "__main__", main) < 0) {
        Py_XDECREF(builtins); Py_XDECREF(fpath); Py_XDECREF(loader); Py_DECREF(main);
        return NULL;
    }
    Py_DECREF(builtins); Py_DECREF(loader);
    b_cpu[SB_RESET] = cpu_ns(); b_mono[SB_RESET] = mono_ns();
    PyObject *code = Py_CompileStringObject(src, fpath, Py_file_input, NULL, -1);
    Py_DECREF(fpath);
    b_cpu[SB_COMPILE] = cpu_ns(); b_mono[SB_COMPILE] = mono_ns();
    /* The step figures, then the stats pipe is closed: the program gets 0, 1 and 2 only. */
    char rec[1 + 2 * 8 * NB];
    rec[0] = 'B';
    memcpy(rec + 1, b_cpu, 8 * NB);
    memcpy(rec + 1 + 8 * NB, b_mono, 8 * NB);
    write_all(stats_fd, rec, sizeof rec);
    close(stats_fd);
    if (!code) goto failed;
    PyObject *res = PyEval_EvalCode(code, d, d);
    Py_DECREF(code);
    int exit_code = 0;
    if (res) {
        Py_DECREF(res);
        if (!(h->flags & F_FAST_EXIT)) {
            Py_DECREF(main);
            Py_RETURN_NONE;
        }
    } else {
failed:
        if (PyErr_ExceptionMatches(PyExc_SystemExit) || !(h->flags & F_FAST_EXIT)) {
            Py_DECREF(main);
            if (PyErr_ExceptionMatches(PyExc_SystemExit)) return NULL; /* the interpreter ends as for a script */
            PyErr_Print(); /* the traceback from the program's own frame, as a script's */
            PyErr_SetObject(PyExc_SystemExit, PyLong_FromLong(1));
            return NULL;
        }
        PyErr_Print();
        exit_code = 1;
    }
    /* F_FAST_EXIT: what of Py_FinalizeEx a program can rely on (its non-daemon threads joined, its
       atexit functions, its buffered output), then _exit: no module teardown, no final GC, no
       __del__ of what is left, no freeing of the interpreter's memory. */
    PyObject *t = PyImport_GetModule(PyUnicode_FromString("threading"));
    if (t) { PyObject *r2 = PyObject_CallMethod(t, "_shutdown", NULL); Py_XDECREF(r2); Py_DECREF(t); PyErr_Clear(); }
    PyObject *ax = PyImport_ImportModule("atexit");
    if (ax) { PyObject *r2 = PyObject_CallMethod(ax, "_run_exitfuncs", NULL); Py_XDECREF(r2); Py_DECREF(ax); }
    PyErr_Clear();
    const char *names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]);
        if (f && f != Py_None) { PyObject *r2 = PyObject_CallMethod(f, "flush", NULL); Py_XDECREF(r2); }
        PyErr_Clear();
    }
    _exit(exit_code);
}

/* ---- the template's loop ------------------------------------------------------------------ */

static pid_t kids[MAX_KIDS];
static int kidfds[MAX_KIDS]; /* a pidfd per run's pid 1: readable when it exits, then reaped at once */
static int nkids;

static void reap(int block) {
    for (int i = 0; i < nkids;) {
        pid_t p = waitpid(kids[i], NULL, block ? 0 : WNOHANG);
        if (p == kids[i] || (p < 0 && errno == ECHILD)) {
            if (kidfds[i] >= 0) close(kidfds[i]);
            kids[i] = kids[--nkids];
            kidfds[i] = kidfds[nkids];
        } else i++;
    }
}

/* Wait for a message on ctl, reaping each run's pid 1 as soon as it exits (its zombie would
   otherwise stay, counted against the slot uid's processes, until the next message). */
static void wait_ctl(int ctl) {
    for (;;) {
        struct pollfd p[MAX_KIDS + 1];
        p[0].fd = ctl; p[0].events = POLLIN;
        for (int i = 0; i < nkids; i++) { p[i + 1].fd = kidfds[i]; p[i + 1].events = POLLIN; }
        int n = poll(p, (nfds_t)nkids + 1, -1);
        if (n < 0 && errno != EINTR) return;
        if (n > 0 && nkids && (p[0].revents == 0 || n > 1)) reap(0);
        if (p[0].revents) return;
    }
}

static PyObject *serve(PyObject *self, PyObject *args) {
    (void)self;
    int ctl;
    const char *config;
    if (!PyArg_ParseTuple(args, "is", &ctl, &config)) return NULL;
    if (load_config(config) < 0) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, config);
    msg = malloc(MAX_MSG);
    char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    for (;;) {
        reap(0);
        wait_ctl(ctl);
        struct iovec iov = {msg, MAX_MSG};
        struct msghdr mh = {0};
        mh.msg_iov = &iov; mh.msg_iovlen = 1;
        mh.msg_control = cbuf; mh.msg_controllen = sizeof cbuf;
        ssize_t n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* the host closed it: the template ends */
        if (n >= MAX_MSG) n = MAX_MSG - 1; /* (then refused below: shorter than its header says) */
        msg[n] = 0; /* the source, last in the message, is compiled as a C string */
        int fds[MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)nfds);
            }
        if (msg[0] == 'S') { /* the template's own CPU and its reaped children's, all runs ended */
            reap(1);
            struct rusage s, c;
            getrusage(RUSAGE_SELF, &s);
            getrusage(RUSAGE_CHILDREN, &c);
            int64_t out[2] = {
                (int64_t)(s.ru_utime.tv_sec + s.ru_stime.tv_sec) * 1000000 + s.ru_utime.tv_usec + s.ru_stime.tv_usec,
                (int64_t)(c.ru_utime.tv_sec + c.ru_stime.tv_sec) * 1000000 + c.ru_utime.tv_usec + c.ru_stime.tv_usec};
            send(ctl, out, sizeof out, MSG_NOSIGNAL);
            continue;
        }
        struct header h;
        if (msg[0] != 'R' || (size_t)n < 1 + sizeof h || nfds < 5) {
            for (int i = 0; i < nfds; i++) close(fds[i]);
            continue;
        }
        memcpy(&h, msg + 1, sizeof h);
        const char *env = msg + 1 + sizeof h, *argv = env + h.env_len, *src = argv + h.argv_len;
        if ((size_t)n != 1 + sizeof h + h.env_len + h.argv_len + h.src_len) {
            for (int i = 0; i < nfds; i++) close(fds[i]);
            continue;
        }
        int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | ((h.flags & F_NET) ? CLONE_NEWNET : 0);
        int64_t c0 = cpu_ns();
        PyOS_BeforeFork();
        pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)flags | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) {
            /* A. The template's ctl socket and anything else it holds, gone first. */
            close(ctl);
            set_up_run(&h, fds, nfds);
            pid_t b = fork();
            if (b < 0) die("fork");
            if (b == 0) {
                int64_t b_cpu[NB] = {0}, b_mono[NB] = {0};
                b_cpu[SB_START] = cpu_ns(); b_mono[SB_START] = mono_ns();
                PyOS_AfterFork_Child();
                int stats = fds[4];
                close(fds[3]); /* the result pipe is A's */
                prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
                program_fds(fds, src, h.src_len);
                /* 0, 1, 2 and the stats pipe only, until the step figures are written */
                if (stats != 3) { if (dup2(stats, 3) < 0) die("dup2 stats"); stats = 3; }
                syscall(SYS_close_range, 4U, ~0U, 0U);
                b_cpu[SB_FDS] = cpu_ns(); b_mono[SB_FDS] = mono_ns();
                PyObject *r = run_program(&h, env, argv, src, stats, b_cpu, b_mono);
                memset(msg, 0, MAX_MSG); /* the source is in the program's own objects now */
                return r;
            }
            a_cpu[S_FORK] = cpu_ns(); a_mono[S_FORK] = mono_ns();
            /* A: only the result pipe; signals as init's (none the program can send reach us). */
            int result = fds[3], stats = fds[4];
            for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
            char rec[1 + 2 * 8 * NA];
            rec[0] = 'A';
            memcpy(rec + 1, a_cpu, 8 * NA);
            memcpy(rec + 1 + 8 * NA, a_mono, 8 * NA);
            write_all(stats, rec, sizeof rec);
            for (int i = 0; i < nfds && i < 5; i++)
                if (fds[i] != result) close(fds[i]);
            memset(msg, 0, MAX_MSG);
            int status = 0;
            struct rusage ru;
            for (;;) {
                pid_t w = wait4(-1, &status, 0, &ru);
                if (w == b) break;
                if (w < 0 && errno != EINTR) { status = -1; break; }
            }
            struct timespec ts;
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
            int64_t out[4] = {status,
                              (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
                                  ru.ru_stime.tv_usec,
                              (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, ru.ru_minflt};
            write_all(result, out, sizeof out);
            _exit(0);
        }
        PyOS_AfterFork_Parent();
        int64_t c1 = cpu_ns();
        memset(msg, 0, (size_t)n + 1); /* no run's source stays in the template for the next ones */
        for (int i = 0; i < nfds; i++) close(fds[i]);
        if (pid > 0 && nkids < MAX_KIDS) {
            kids[nkids] = pid;
            kidfds[nkids++] = (int)syscall(SYS_pidfd_open, pid, 0);
        }
        int64_t out[2] = {pid, c1 - c0};
        send(ctl, out, sizeof out, MSG_NOSIGNAL);
    }
    reap(1);
    free(msg);
    msg = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"serve", serve, METH_VARARGS, "serve runs on a control socket"}, {0}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_zygote", NULL, -1, methods};
PyMODINIT_FUNC PyInit__zygote(void) { return PyModule_Create(&mod); }
