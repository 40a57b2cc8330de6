/* The smallest WASI tool (libc start-up, preopens, exit 0): the start-up benchmark's subject. */
int main(void) { return 0; }
