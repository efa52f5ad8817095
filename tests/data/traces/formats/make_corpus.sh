#!/bin/sh
# Regenerates the real strace samples of this folder (strace 6.1, Debian 12).
# Outputs differ run to run (pids, times, addresses): after running it, regenerate the
# expected files with tests/test_trace_parse_corpus.py's --update helper and review.
set -u
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ST=strace

# 1. The wrapper's form: one file, -f, wall-clock times, durations, decorations.
$ST -f -tt -T -yy -o f_tt_T_yy.strace sh -c 'cat /nonexist; ls / >/dev/null & wait'

# 2. No options at all: no pid column, no time.
$ST -o plain.strace cat /nonexist

# 3. -ff sets: one file per thread, merged in time order.
rm -rf ff_tt ff_Y_ttt
mkdir -p ff_tt ff_Y_ttt
$ST -ff -tt -o ff_tt/trace sh -c 'cat /nonexist & ls / >/dev/null & wait'
$ST -ff -Y -ttt -o ff_Y_ttt/run sh -c 'cat /nonexist & wait'

# 4. -Y comm names, -n syscall numbers, -i instruction pointers, epoch times.
$ST -f -Y -n -i -ttt -o f_Y_n_i_ttt.strace sh -c 'cat /nonexist & wait'

# 5. Stderr captures: "[pid  N]" prefixes that appear with the second process,
#    "strace: Process N attached" cutting a line, the tracee's own output mixed in.
$ST -f -tt sh -c 'cat /nonexist & wait' 2> stderr_f_tt.strace
$ST -f -Y sh -c 'cat /nonexist; cat /etc/hostname & wait' 2> stderr_f_Y.strace >/dev/null

# 6. Timestamp forms.
$ST -r -o relative.strace cat /nonexist
$ST -r --relative-timestamps=s -o relative_s.strace true
$ST -t -o t_seconds.strace true
$ST --timestamps=unix,ns -o ts_unix_ns.strace true
$ST --timestamps=format:time,precision:ms -o ts_time_ms.strace true

# 7. -k stack frames, -X verbose, fault injection.
$ST -k -o stack_k.strace cat /nonexist
$ST -X verbose -o xverbose.strace cat /etc/hostname >/dev/null
$ST -f -o inject.strace -e inject=openat:error=ENOENT:when=3 \
    -e inject=read:delay_enter=1000:when=1 -e inject=getpid:retval=42 \
    sh -c 'cat /etc/hostname; echo $$' >/dev/null

# Small C programs keep the samples small (a Python start is thousands of lines).
cat > "$work/threads.c" <<'C'
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
static void *worker(void *arg) {
    char name[16];
    snprintf(name, sizeof name, "worker-%ld", (long)arg);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    if ((long)arg == 1) open("/nonexist-thread", O_RDONLY);
    usleep(20000);
    return NULL;
}
int main(void) {
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/comm", (long)syscall(SYS_gettid));
    int fd = open(path, O_WRONLY);
    write(fd, "renamed", 7);
    close(fd);
    syscall(500);
    return 0;
}
C
cat > "$work/superseded.c" <<'C'
#include <pthread.h>
#include <unistd.h>
static void *run(void *arg) {
    execl("/bin/true", "true", (char *)NULL);
    return arg;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    sleep(5);
    return 0;
}
C
cat > "$work/decorations.c" <<'C'
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t len = sizeof a;
    int srv = socket(AF_INET, SOCK_STREAM, 0);
    bind(srv, (struct sockaddr *)&a, sizeof a);
    listen(srv, 1);
    getsockname(srv, (struct sockaddr *)&a, &len);
    int cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    connect(cli, (struct sockaddr *)&a, sizeof a);
    int conn = accept(srv, NULL, NULL);
    char c;
    write(cli, "x", 1);
    read(conn, &c, 1);
    int sp[2], p[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    write(sp[0], "y", 1);
    pipe(p);
    write(p[1], "z", 1);
    const char *name = "/tmp/vd odd>name\001\351";
    int fd = open(name, O_CREAT | O_RDWR, 0600);
    unlink(name);
    write(fd, "gone", 4);
    int fd2 = dup(fd);
    close(fd);
    write(fd2, "still", 5);
    read(fd2 + 40, &c, 1);
    return 0;
}
C
cat > "$work/crash.c" <<'C'
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "abort") == 0) abort();
    return *(volatile int *)0;
}
C
for prog in threads superseded decorations crash; do
    gcc -O1 -pthread -o "$work/$prog" "$work/$prog.c"
done

# 8. Threads, thread names, an unknown syscall number, a superseding execve.
$ST -f -tt -T -yy -o threads.strace "$work/threads"
$ST -f -tt -o superseded.strace "$work/superseded"

# 9. Endings: killed by a signal, a core dump, a crash, execve chains.
$ST -f -tt -o killed.strace sh -c 'kill -9 $$'
( ulimit -c unlimited; cd "$work" && $ST -f -tt -o "$OLDPWD/core_dumped.strace" ./crash abort )
$ST -f -tt -o segv.strace "$work/crash"
$ST -f -tt -o exec_chain.strace sh -c 'exec env sh -c "exec true"'

# 10. -yy decorations of sockets, pipes, deleted files and odd file names.
$ST -f -yy -o decorations.strace "$work/decorations"

# 11. A 32-bit process: strace notes the personality change.
cat > "$work/x32.s" <<'ASM'
.globl _start
_start:
    movl $20, %eax
    int $0x80
    movl $1, %eax
    movl $3, %ebx
    int $0x80
ASM
if as --32 -o "$work/x32.o" "$work/x32.s" && ld -m elf_i386 -o "$work/x32" "$work/x32.o"; then
    $ST -f -o personality.strace sh -c "$work/x32; true"
fi

# 12. --seccomp-bpf with a class filter (what the wrapper uses for light tracing).
$ST -f --seccomp-bpf -e trace=%file -tt -o seccomp_file.strace sh -c 'cat /nonexist'

# 13. The personality note goes to strace's stderr in 6.1: capture it there.
if [ -x "$work/x32" ]; then
    $ST -f sh -c "$work/x32; true" 2> personality_stderr.strace
fi

# 14. Epoch seconds without a fraction.
$ST --timestamps=unix,s -o ts_unix_s.strace true
