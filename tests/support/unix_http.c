/* unix_http SOCKET METHOD PATH [JSON]: one HTTP/1.0 request on a unix socket; prints the whole response.
   Static (the busybox-static test image has no client for unix sockets); tests/support/static_c.py builds it. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: unix_http SOCKET METHOD PATH [JSON]\n");
        return 2;
    }
    const char *body = argc > 4 ? argv[4] : "";
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("unix_http: connect");
        return 1;
    }
    char head[4096];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     argv[2], argv[3], strlen(body));
    if (n < 0 || (size_t)n >= sizeof head || write(fd, head, (size_t)n) != n ||
        write(fd, body, strlen(body)) != (ssize_t)strlen(body)) {
        perror("unix_http: write");
        return 1;
    }
    char buf[65536];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        fwrite(buf, 1, (size_t)got, stdout);
    return got < 0 ? 1 : 0;
}
