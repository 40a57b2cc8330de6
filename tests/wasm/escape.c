/* A WASI tool that tries to leave its workspace, then does its real job inside it. Each attempt
 * prints CONTAINED or ESCAPED; the work prints WROTE. Build:
 *   clang-14 --target=wasm32-unknown-wasi --sysroot=/usr -O2 -o escape.wasm escape.c */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void attempt(const char *name, int ok, int err) {
    if (ok) printf("ESCAPED %s\n", name);
    else printf("CONTAINED %s (%s)\n", name, strerror(err));
}

int main(int argc, char **argv) {
    FILE *f = fopen("/etc/passwd", "r");
    attempt("read-etc-passwd", f != NULL, errno);
    f = fopen("../outside/victim.txt", "a");
    attempt("write-outside", f != NULL, errno);
    f = fopen("/proc/self/root/etc/passwd", "r");
    attempt("proc-root", f != NULL, errno);
    int r = symlink("/etc/passwd", "link");
    f = fopen("link", "r");
    attempt("symlink-out", f != NULL, errno);
    (void)r;
    f = fopen(argc > 1 ? argv[1] : "report.txt", "w");
    if (f) {
        fputs("made by a wasm tool\n", f);
        fclose(f);
        printf("WROTE %s\n", argc > 1 ? argv[1] : "report.txt");
    } else {
        printf("COULD-NOT-WRITE (%s)\n", strerror(errno));
    }
    return 3;
}
