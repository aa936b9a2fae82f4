/* Calls syscalls a seccomp profile decides on and prints one line per call: "NAME ok" or
 * "NAME errno=N". Built statically by tests/src/syscall_probe.rs for busybox images. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long result) {
    if (result < 0)
        printf("%s errno=%d\n", name, errno);
    else
        printf("%s ok\n", name);
}

int main(void) {
    /* keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create = 0): reads only. */
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    /* clone(CLONE_NEWUSER | SIGCHLD) like fork: the child exits at once. */
    long child = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (child == 0)
        _exit(0);
    if (child > 0)
        waitpid((pid_t)child, 0, 0);
    report("clone_newuser", child);
    pid_t plain = fork();
    if (plain == 0)
        _exit(0);
    if (plain > 0)
        waitpid(plain, 0, 0);
    report("fork", plain);
    return 0;
}
