/* A rule plugin that takes memory without bound: the sandbox's memory limit must stop it. */
typedef unsigned int u32;
typedef unsigned long long u64;
static unsigned char input[4096];
u32 axiom_alloc(u32 len) { return len <= sizeof input ? (u32)input : 0; }
u64 axiom_check(const unsigned char *p, u32 len) {
    for (;;) {
        int page = __builtin_wasm_memory_grow(0, 16);
        if (page < 0) return 0; /* never reached under a trapping limit */
        ((volatile unsigned char *)0)[page * 65536] = p[0];
    }
}
