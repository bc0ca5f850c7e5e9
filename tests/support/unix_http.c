/* unix_http SOCKET METHOD PATH [JSON]: one HTTP/1.0 request on a unix socket; prints the whole response.
   Static (the busybox-static test image has no client for unix sockets); tests/support/static_c.py builds it.
   The request goes out in one send, and a server that answered and closed before all of it was taken (a 403
   for the head alone) still has its answer read: EPIPE or ECONNRESET on the send is not the end. */
#include <errno.h>
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
    char request[16384];
    int n = snprintf(request, sizeof request,
                     "%s %s HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     argv[2], argv[3], strlen(body), body);
    if (n < 0 || (size_t)n >= sizeof request) {
        fprintf(stderr, "unix_http: request too long\n");
        return 2;
    }
    for (int sent = 0; sent < n;) {
        ssize_t w = send(fd, request + sent, (size_t)(n - sent), MSG_NOSIGNAL);
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            break; /* answered and closed already: read what it said */
        if (w < 0) {
            perror("unix_http: send");
            return 1;
        }
        sent += (int)w;
    }
    char buf[65536];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        fwrite(buf, 1, (size_t)got, stdout);
    return got < 0 && errno != ECONNRESET ? 1 : 0;
}
