/* Makes the syscalls busybox cannot, for the seccomp tests: one line per argument, "name OK" or
 * "name E<errno>", each made in a child of its own. Built static (gcc -static) so that it runs in any container image.
 *
 *   io_uring_setup  keyctl  unshare_user  clone_newuser  clone_plain  clone3  mount
 *   vsock  vsock_high  inet  personality0  personality_query  personality_norandom
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long clone_flags(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid;
}

static long probe(const char *name) {
    char buf[512];
    memset(buf, 0, sizeof buf);
    if (!strcmp(name, "io_uring_setup"))
        return syscall(SYS_io_uring_setup, 1, buf);
    if (!strcmp(name, "keyctl")) /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING */
        return syscall(SYS_keyctl, 0, -3, 0);
    if (!strcmp(name, "unshare_user"))
        return unshare(CLONE_NEWUSER);
    if (!strcmp(name, "clone_newuser"))
        return clone_flags(CLONE_NEWUSER);
    if (!strcmp(name, "clone_plain"))
        return clone_flags(0);
    if (!strcmp(name, "clone3")) { /* struct clone_args, exit_signal = SIGCHLD */
        unsigned long long args[11] = {0};
        args[4] = SIGCHLD;
        long pid = syscall(SYS_clone3, args, sizeof args);
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            waitpid((pid_t)pid, NULL, 0);
        return pid;
    }
    if (!strcmp(name, "mount")) /* a bad fstype pointer: EFAULT from the kernel, EPERM from the filter */
        return syscall(SYS_mount, "none", "/tmp", (char *)1, 0, 0);
    if (!strcmp(name, "vsock"))
        return socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
    if (!strcmp(name, "vsock_high")) /* the kernel reads the family as an int: this is AF_VSOCK too */
        return syscall(SYS_socket, 0x100000028L, SOCK_STREAM, 0);
    if (!strcmp(name, "inet"))
        return socket(AF_INET, SOCK_STREAM, 0);
    if (!strcmp(name, "personality0"))
        return syscall(SYS_personality, 0UL);
    if (!strcmp(name, "personality_query"))
        return syscall(SYS_personality, 0xffffffffUL);
    if (!strcmp(name, "personality_norandom"))
        return syscall(SYS_personality, (unsigned long)ADDR_NO_RANDOMIZE);
    errno = EINVAL;
    return -2;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        pid_t child = fork(); /* each probe in its own process: unshare and personality change the caller */
        if (child > 0) {
            waitpid(child, NULL, 0);
            continue;
        }
        errno = 0;
        long r = probe(argv[i]);
        if (r == -2 && errno == EINVAL) {
            printf("%s unknown-probe\n", argv[i]);
            fflush(stdout);
            _exit(2);
        }
        if (r < 0)
            printf("%s E%d\n", argv[i], errno);
        else
            printf("%s OK\n", argv[i]);
        fflush(stdout);
        _exit(0);
    }
    return 0;
}
