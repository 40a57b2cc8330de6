/* A WASI tool that never ends: `--wasm-timeout-ms` must stop it. */
#include <stdio.h>
int main(void) {
    puts("burning");
    fflush(stdout);
    volatile unsigned long n = 0;
    for (;;) n++;
}
