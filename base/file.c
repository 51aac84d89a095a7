// file.c — read-only file mapping, whole-file reads (regular files only, opened without
// blocking, so a FIFO is refused instead of waited on), files of an untrusted directory kept
// inside it, monotonic time, environment tunables and the default locations
// ($LONGSEQ_HOME, $LONGSEQ_MODEL). Tests: tests/unit/test_base.c, tests/unit/test_loader.c.
#include "ls_base.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const uint8_t g_empty_file[1];

static const char *file_kind(mode_t m) {
    return S_ISFIFO(m) ? "a FIFO" : S_ISDIR(m) ? "a directory" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

// Opens path for reading. O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is
// refused by fstat instead, as is anything but a regular file, and the flag is then cleared.
static ls_status open_regular(const char *path, int *fd, struct stat *st) {
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0) return LS_ERR(LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    ls_status rc = LS_OK;
    if (fstat(*fd, st) != 0 || fcntl(*fd, F_SETFL, 0) != 0)
        rc = LS_ERR(LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    else if (!S_ISREG(st->st_mode))
        rc = LS_ERR(LS_ERR_IO, "%s is not a regular file (%s)", path, file_kind(st->st_mode));
    if (rc != LS_OK) {
        close(*fd);
        *fd = -1;
    }
    return rc;
}

ls_status ls_file_map(const char *path, ls_mapped_file *out) {
    *out = (ls_mapped_file){.fd = -1};
    int fd;
    struct stat st;
    LS_CHECK(open_regular(path, &fd, &st));
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

// A regular file's stream, refused by its length when over max_bytes (before reading).
static ls_status open_for_read(const char *path, size_t max_bytes, FILE **f) {
    int fd;
    struct stat st;
    LS_CHECK(open_regular(path, &fd, &st));
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return LS_ERR(LS_ERR_RANGE, "%s is larger than the limit of %zu bytes", path, max_bytes);
    }
    if (!(*f = fdopen(fd, "rb"))) {
        int e = errno;
        close(fd);
        return LS_ERR(LS_ERR_IO, "cannot read %s: %s", path, strerror(e));
    }
    return LS_OK;
}

ls_status ls_file_read_all(const char *path, size_t max_bytes, ls_buf *out) {
    bool is_stdin = !strcmp(path, "-");
    FILE *f = stdin;
    if (!is_stdin) LS_CHECK(open_for_read(path, max_bytes, &f));
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

// --- files of an untrusted directory -----------------------------------------------------------

static bool under(const char *real, const char *root) {
    size_t n = strlen(root);
    return !strncmp(real, root, n) && (real[n] == '/' || (n == 1 && real[0] == '/'));
}

// The Hugging Face hub cache keeps a snapshot's files in .../snapshots/REV as links to
// ../../blobs/HASH: for such a directory, a file directly in that blobs folder is inside.
static bool in_hub_blobs(const char *real, const char *root) {
    const char *rev = strrchr(root, '/');
    size_t n = rev ? (size_t)(rev - root) : 0, k = strlen("/snapshots");
    if (n < k || strncmp(root + n - k, "/snapshots", k)) return false;
    size_t repo = n - k; // root[0, repo) is the repository's folder
    return !strncmp(real, root, repo) && !strncmp(real + repo, "/blobs/", 7) && !strchr(real + repo + 7, '/');
}

ls_status ls_dir_file(const char *dir, const char *name, char *out, size_t cap, bool *found) {
    char root[PATH_MAX], path[PATH_MAX], real[PATH_MAX];
    if (found) *found = false;
    if (!realpath(dir, root)) return LS_ERR(LS_ERR_IO, "cannot open the directory %s: %s", dir, strerror(errno));
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return LS_ERR(LS_ERR_RANGE, "the path %s/%s is too long", dir, name);
    if (!realpath(path, real)) {
        if (errno == ENOENT && found) return LS_OK;
        return LS_ERR(errno == ENOENT ? LS_ERR_NOT_FOUND : LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    if (!under(real, root) && !in_hub_blobs(real, root))
        return LS_ERR(LS_ERR_FORMAT, "%s leads outside %s (to %s): files of a model directory stay inside it", path, dir,
                      real);
    struct stat st;
    if (stat(real, &st) != 0) return LS_ERR(LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return LS_ERR(LS_ERR_FORMAT, "%s is not a regular file (%s)", path, file_kind(st.st_mode));
    if (strlen(real) >= cap) return LS_ERR(LS_ERR_RANGE, "the path %s is too long", real);
    memcpy(out, real, strlen(real) + 1);
    if (found) *found = true;
    return LS_OK;
}
