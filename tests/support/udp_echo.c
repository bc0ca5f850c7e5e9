/* udp_echo PORT: answers every datagram with "echo:" + the datagram, from a socket bound on 0.0.0.0:PORT.
   Static (the busybox-static test image has no UDP server); tests/support/static_c.py builds it. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argc > 1 ? argv[1] : "53"))};
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udp_echo");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    char buf[65536 + 5];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        memcpy(buf, "echo:", 5);
        ssize_t n = recvfrom(fd, buf + 5, 65536, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0)
            sendto(fd, buf, (size_t)n + 5, 0, (struct sockaddr *)&peer, len);
    }
}
