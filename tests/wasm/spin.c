/* A rule plugin that never returns: the sandbox's fuel limit must stop it. */
typedef unsigned int u32;
typedef unsigned long long u64;
static unsigned char input[4096];
u32 axiom_alloc(u32 len) { return len <= sizeof input ? (u32)input : 0; }
u64 axiom_check(const unsigned char *p, u32 len) {
    volatile u32 x = 0;
    for (;;) x += p[x % (len ? len : 1)];
    return 0;
}
