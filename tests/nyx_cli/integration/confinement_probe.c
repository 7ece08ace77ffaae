/* Tries the system calls a container's seccomp profile must refuse and prints one
 * "name=RESULT" line per check: "ok" when the call succeeded, else the errno's name.
 * Built statically by tests/nyx_core/integration/test_confinement.py and bind-mounted
 * into a busybox container. Raw syscall(2) everywhere: libc must not fall back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWUSER
#define CLONE_NEWUSER 0x10000000
#endif
#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif
#ifndef CLONE_NEWNS
#define CLONE_NEWNS 0x00020000
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static const char *result(long rc, int err) {
    static char buf[32];
    if (rc >= 0) return "ok";
    switch (err) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ENOENT: return "ENOENT";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    default:
        snprintf(buf, sizeof buf, "errno%d", err);
        return buf;
    }
}

static void report(const char *name, long rc, int err) {
    printf("%s=%s\n", name, result(rc, err));
    fflush(stdout);
}

/* A fork-like clone with extra flags; the child exits at once. */
static void try_clone(const char *name, unsigned long flags) {
    long rc = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (rc == 0) _exit(0);
    int err = errno;
    if (rc > 0) waitpid((pid_t)rc, NULL, 0);
    report(name, rc, err);
}

static void try_clone3(void) {
    uint64_t args[8];  /* struct clone_args, CLONE_ARGS_SIZE_VER0 = 64 bytes */
    memset(args, 0, sizeof args);
    args[4] = SIGCHLD; /* exit_signal */
    long rc = syscall(SYS_clone3, args, sizeof args);
    if (rc == 0) _exit(0);
    int err = errno;
    if (rc > 0) waitpid((pid_t)rc, NULL, 0);
    report("clone3", rc, err);
}

/* A macro, not a function: errno must be read after the call, not while evaluating the
 * arguments (their order is unspecified). Closes what the call opened. */
#define TRY(name, call)                                                                   \
    do {                                                                                  \
        errno = 0;                                                                        \
        long rc_ = (call);                                                                \
        int err_ = errno;                                                                 \
        if (rc_ >= 0 && (is_fd)) close((int)rc_);                                         \
        report(name, rc_, err_);                                                          \
    } while (0)
#define try_fd(name, call) do { int is_fd = 1; TRY(name, call); } while (0)
#define try_call(name, call) do { int is_fd = 0; TRY(name, call); } while (0)

int main(void) {
    unsigned char params[120]; /* struct io_uring_params */
    memset(params, 0, sizeof params);

    try_clone("fork", 0);
    try_clone("clone_newuser", CLONE_NEWUSER);
    try_clone("clone_newnet", CLONE_NEWNET);
    try_clone("clone_newns", CLONE_NEWNS);
    try_clone3();
    try_call("unshare_newuser", syscall(SYS_unshare, CLONE_NEWUSER));
    try_fd("io_uring_setup", syscall(SYS_io_uring_setup, 4, params));
    try_call("add_key", syscall(SYS_add_key, "user", "nyx", "x", 1, -2));
    try_call("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -2, 1));
    try_fd("bpf", syscall(SYS_bpf, 0, NULL, 0));
    try_fd("socket_alg", syscall(SYS_socket, AF_ALG, SOCK_SEQPACKET, 0));
    /* the kernel reads the family as an int: upper bits must not slip past the filter */
    try_fd("socket_alg_high_bits", syscall(SYS_socket, 0xffffffff00000000UL | AF_ALG,
                                           SOCK_SEQPACKET, 0));
    try_fd("socket_vsock", syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
    try_fd("socket_inet", syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    try_fd("socket_netlink", syscall(SYS_socket, AF_NETLINK, SOCK_RAW, 0));
    return 0;
}
