/* A rule plugin (Axiom's plugin contract): flags an agent's output that would drop a table
 * outside a migration. No imports, no libc: it can only compute. Build:
 *   clang-14 --target=wasm32 -nostdlib -O2 -Wl,--no-entry \
 *     -Wl,--export=axiom_alloc -Wl,--export=axiom_check -o sql_guard.wasm sql_guard.c */
typedef unsigned int u32;
typedef unsigned long long u64;

static unsigned char input[1 << 16];
static char verdict[256];

u32 axiom_alloc(u32 len) {
    return len <= sizeof input ? (u32)input : 0;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* Where `needle` (lower case) starts in `hay`, case-insensitively, or -1. */
static int find(const unsigned char *hay, u32 n, const char *needle) {
    u32 m = 0;
    while (needle[m]) m++;
    for (u32 i = 0; i + m <= n; i++) {
        u32 j = 0;
        while (j < m && lower(hay[i + j]) == needle[j]) j++;
        if (j == m) return (int)i;
    }
    return -1;
}

static u32 append(u32 at, const char *s) {
    while (*s && at < sizeof verdict - 1) verdict[at++] = *s++;
    return at;
}

u64 axiom_check(const unsigned char *p, u32 len) {
    int at = find(p, len, "drop table");
    if (at < 0 || find(p, len, "migration") >= 0) return 0;
    u32 n = append(0, "destructive SQL outside a migration: ");
    /* The statement as written, up to its end or 60 bytes. */
    for (u32 i = (u32)at; i < len && i < (u32)at + 60 && p[i] != ';' && p[i] != '\\' && p[i] != '"'; i++)
        if (n < sizeof verdict - 1) verdict[n++] = (char)p[i];
    return ((u64)(u32)verdict << 32) | n;
}
