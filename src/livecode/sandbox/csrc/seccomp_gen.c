/* The sandbox's seccomp filter generator: built by livecode.sandbox.cbuild (see seccomp.py for what it does). */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads rules on stdin, writes the BPF program on stdout. Unknown names without a number
   ("name=457") are an error. */
static int fail(const char *what, const char *detail, int rc) {
    fprintf(stderr, "seccomp generator: %s %s: %s\n", what, detail, strerror(rc < 0 ? -rc : rc));
    return 1;
}

int main(void) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return fail("seccomp_init", "", ENOMEM);
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
    if (rc == 0) rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2); /* binary tree */
    if (rc) return fail("seccomp_attr_set", "", rc);
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        char name[64];
        int err, used;
        if (sscanf(line, "%d %63s%n", &err, name, &used) != 2) return fail("bad rule", line, EINVAL);
        char *number = strchr(name, '=');
        if (number) *number++ = 0;
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR && number) nr = atoi(number);
        if (nr == __NR_SCMP_ERROR) return fail("unknown syscall", name, ENOENT);
        struct scmp_arg_cmp cmp[6];
        unsigned n = 0;
        char *p = line + used, op[16];
        unsigned arg;
        unsigned long long a, b;
        int k;
        while (sscanf(p, "%u %15s %llu %llu%n", &arg, op, &a, &b, &k) == 4) {
            if (n == 6) return fail("too many comparisons", line, E2BIG);
            enum scmp_compare c = !strcmp(op, "ne") ? SCMP_CMP_NE : !strcmp(op, "gt") ? SCMP_CMP_GT
                                : !strcmp(op, "masked_eq") ? SCMP_CMP_MASKED_EQ : 0;
            if (!c) return fail("bad operator", op, EINVAL);
            cmp[n++] = (struct scmp_arg_cmp){ arg, c, a, b };
            p += k;
        }
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(err), nr, n, cmp);
        if (rc) return fail("seccomp_rule_add", line, rc);
    }
    rc = seccomp_export_bpf(ctx, 1);
    if (rc) return fail("seccomp_export_bpf", "", rc);
    seccomp_release(ctx);
    return 0;
}
