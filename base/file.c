// file.c — read-only file mapping, whole-file reads, monotonic time, environment tunables and
// the default locations ($LONGSEQ_HOME, $LONGSEQ_MODEL). Tests: tests/unit/test_base.c.
#include "ls_base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const uint8_t g_empty_file[1];

ls_status ls_file_map(const char *path, ls_mapped_file *out) {
    *out = (ls_mapped_file){.fd = -1};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return LS_ERR(LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return LS_ERR(LS_ERR_IO, "%s is not a regular file", path);
    }
    if (st.st_size == 0) {
        *out = (ls_mapped_file){.data = g_empty_file, .size = 0, .fd = fd};
        return LS_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        return LS_ERR(LS_ERR_IO, "cannot mmap %s (%lld bytes): %s", path, (long long)st.st_size,
                      strerror(e));
    }
    *out = (ls_mapped_file){.data = p, .size = (size_t)st.st_size, .fd = fd};
    return LS_OK;
}

void ls_file_unmap(ls_mapped_file *f) {
    if (f->data && f->size) munmap((void *)f->data, f->size);
    if (f->fd >= 0) close(f->fd);
    *f = (ls_mapped_file){.fd = -1};
}

ls_status ls_file_read_all(const char *path, size_t max_bytes, ls_buf *out) {
    bool is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return LS_ERR(LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char chunk[1 << 16];
    size_t n;
    ls_status rc = LS_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (out->len + n > max_bytes) {
            rc = LS_ERR(LS_ERR_RANGE, "%s is larger than the limit of %zu bytes",
                        is_stdin ? "standard input" : path, max_bytes);
            break;
        }
        ls_buf_append(out, chunk, n);
    }
    if (rc == LS_OK && ferror(f)) rc = LS_ERR(LS_ERR_IO, "error reading %s", path);
    if (!out->data) ls_buf_append(out, "", 0); // always a valid, NUL-terminated buffer
    if (!is_stdin) fclose(f);
    return rc;
}

double ls_time_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int64_t ls_env_int(const char *env, int64_t dflt) {
    const char *e = getenv(env);
    if (!e || !*e) return dflt;
    char *end;
    long long v = strtoll(e, &end, 10);
    if (*end) {
        LS_WARN("ignoring %s=%s: not an integer", env, e);
        return dflt;
    }
    return v;
}

const char *ls_home_dir(void) {
    static char path[4096];
    if (path[0]) return path;
    const char *e = getenv("LONGSEQ_HOME");
    if (e && *e) {
        snprintf(path, sizeof path, "%s", e);
    } else {
        const char *home = getenv("HOME");
        snprintf(path, sizeof path, "%s/.cache/longseq", home && *home ? home : "/tmp");
    }
    return path;
}

const char *ls_default_model_path(void) {
    static char path[4200];
    const char *e = getenv("LONGSEQ_MODEL");
    if (e && *e) return e;
    if (!path[0])
        snprintf(path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", ls_home_dir());
    return path;
}

bool ls_is_dir(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
