// map.c — two small open-addressing hash maps: string -> int64 (vocabularies, duplicate-key
// checks) and u64 -> u64 (BPE merge pairs). Linear probing, power-of-two tables kept at most
// half full. Tests: tests/unit/test_base.c.
#include "ls_base.h"

#include <string.h>

static uint64_t hash_bytes(const char *p, size_t n) { // FNV-1a, then a final mix
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_u64(uint64_t x) { // splitmix64 finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static size_t table_size(size_t expected) {
    size_t n = 16;
    while (n < expected * 2 + 2) n *= 2;
    return n;
}

// --- string map ---------------------------------------------------------------------------

typedef struct strmap_slot {
    uint64_t hash;
    size_t key_off; // into arena; SIZE_MAX = empty
    uint32_t key_len;
    int64_t value;
} strmap_slot;

struct ls_strmap {
    strmap_slot *slots;
    size_t n_slots, count;
    ls_buf arena;
};

ls_strmap *ls_strmap_init(size_t expected) {
    ls_strmap *m = ls_calloc(1, sizeof *m);
    m->n_slots = table_size(expected);
    m->slots = ls_malloc(m->n_slots * sizeof *m->slots);
    for (size_t i = 0; i < m->n_slots; i++) m->slots[i].key_off = SIZE_MAX;
    return m;
}

void ls_strmap_free(ls_strmap *m) {
    if (!m) return;
    ls_free(m->slots);
    ls_buf_free(&m->arena);
    ls_free(m);
}

static strmap_slot *strmap_find(const ls_strmap *m, const char *key, size_t len, uint64_t h) {
    size_t mask = m->n_slots - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        strmap_slot *s = &m->slots[i];
        if (s->key_off == SIZE_MAX) return s;
        if (s->hash == h && s->key_len == len && !memcmp(m->arena.data + s->key_off, key, len))
            return s;
    }
}

static void strmap_rehash(ls_strmap *m) {
    strmap_slot *old = m->slots;
    size_t n_old = m->n_slots;
    m->n_slots *= 2;
    m->slots = ls_malloc(m->n_slots * sizeof *m->slots);
    for (size_t i = 0; i < m->n_slots; i++) m->slots[i].key_off = SIZE_MAX;
    size_t mask = m->n_slots - 1;
    for (size_t i = 0; i < n_old; i++) {
        if (old[i].key_off == SIZE_MAX) continue;
        size_t j = old[i].hash & mask;
        while (m->slots[j].key_off != SIZE_MAX) j = (j + 1) & mask;
        m->slots[j] = old[i];
    }
    ls_free(old);
}

bool ls_strmap_put(ls_strmap *m, const char *key, size_t len, int64_t value) {
    LS_ASSERT(len <= UINT32_MAX);
    if ((m->count + 1) * 2 > m->n_slots) strmap_rehash(m);
    uint64_t h = hash_bytes(key, len);
    strmap_slot *s = strmap_find(m, key, len, h);
    if (s->key_off != SIZE_MAX) {
        s->value = value;
        return false;
    }
    s->hash = h;
    s->key_off = m->arena.len;
    s->key_len = (uint32_t)len;
    s->value = value;
    ls_buf_append(&m->arena, key, len);
    m->count++;
    return true;
}

bool ls_strmap_get(const ls_strmap *m, const char *key, size_t len, int64_t *value) {
    const strmap_slot *s = strmap_find(m, key, len, hash_bytes(key, len));
    if (s->key_off == SIZE_MAX) return false;
    if (value) *value = s->value;
    return true;
}

size_t ls_strmap_count(const ls_strmap *m) { return m->count; }

// --- u64 map ------------------------------------------------------------------------------

typedef struct u64_slot {
    uint64_t key, value;
} u64_slot;

struct ls_u64map {
    u64_slot *slots;
    size_t n_slots, count;
};

static void u64map_alloc(ls_u64map *m, size_t n) {
    m->n_slots = n;
    m->slots = ls_malloc(n * sizeof *m->slots);
    for (size_t i = 0; i < n; i++) m->slots[i].key = UINT64_MAX;
}

ls_u64map *ls_u64map_init(size_t expected) {
    ls_u64map *m = ls_calloc(1, sizeof *m);
    u64map_alloc(m, table_size(expected));
    return m;
}

void ls_u64map_free(ls_u64map *m) {
    if (!m) return;
    ls_free(m->slots);
    ls_free(m);
}

static u64_slot *u64map_find(const ls_u64map *m, uint64_t key) {
    size_t mask = m->n_slots - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask)
        if (m->slots[i].key == key || m->slots[i].key == UINT64_MAX) return &m->slots[i];
}

bool ls_u64map_put(ls_u64map *m, uint64_t key, uint64_t value) {
    LS_ASSERT(key != UINT64_MAX);
    if ((m->count + 1) * 2 > m->n_slots) {
        u64_slot *old = m->slots;
        size_t n_old = m->n_slots;
        u64map_alloc(m, n_old * 2);
        for (size_t i = 0; i < n_old; i++)
            if (old[i].key != UINT64_MAX) *u64map_find(m, old[i].key) = old[i];
        ls_free(old);
    }
    u64_slot *s = u64map_find(m, key);
    bool fresh = s->key == UINT64_MAX;
    s->key = key;
    s->value = value;
    m->count += fresh;
    return fresh;
}

bool ls_u64map_get(const ls_u64map *m, uint64_t key, uint64_t *value) {
    const u64_slot *s = u64map_find(m, key);
    if (s->key == UINT64_MAX) return false;
    if (value) *value = s->value;
    return true;
}
