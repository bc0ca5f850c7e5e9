/* A tiny static inotify watcher for tests (Debian's busybox-static has no inotifyd): watches each folder
 * named on the command line and prints one line per event, "<mask in hex> <name>", flushed at once. */
#include <stdio.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int fd = inotify_init1(0);
    if (fd < 0) { perror("inotify_init1"); return 1; }
    for (int i = 1; i < argc; i++)
        if (inotify_add_watch(fd, argv[i], IN_ALL_EVENTS) < 0) { perror(argv[i]); return 1; }
    printf("watching\n");
    fflush(stdout);
    static char buf[65536] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return 1;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            printf("%x %s\n", e->mask, e->len ? e->name : "");
            fflush(stdout);
            p += sizeof *e + e->len;
        }
    }
}
