// ls_mapreduce.h — the pure parts of map-reduce summarization (docs/architecture.md ("Long
// documents")): cutting a document into chunks at paragraph, then sentence, then word
// boundaries (never inside a UTF-8 character), the plan of the combine levels, and the texts of
// the chunk and combine requests. No I/O: the coordinator runs the jobs (coordinator/strategy.c).
// Test: tests/unit/test_mapreduce.c.
#ifndef LS_MAPREDUCE_H
#define LS_MAPREDUCE_H

#include "ls_base.h"

#define LS_MR_MIN_BYTES 64 // the smallest chunk budget accepted (a few words)

typedef struct ls_span {
    size_t start, end; // text[start..end)
} ls_span;

// Cuts text[0..len) into chunks of at most max_bytes, each starting up to overlap_bytes before
// the previous one's end (at a sentence or word start where there is one), and every chunk
// starting past the previous one's start, so the cuts always progress. A cut is made at the
// last paragraph break in the second half of the budget, else the last sentence end, else the
// last line break, else the last whitespace, else the last UTF-8 character boundary. *spans is
// allocated (ls_free); an empty text gives no chunks. max_bytes >= LS_MR_MIN_BYTES and
// overlap_bytes <= max_bytes / 4, else LS_ERR_INVALID.
ls_status ls_mr_split(const char *text, size_t len, size_t max_bytes, size_t overlap_bytes, ls_span **spans,
                      size_t *n);

// The longest prefix of text[0..len) of at most max bytes that ends at a UTF-8 character
// boundary (a summary cut to fit a combine call).
size_t ls_mr_utf8_prefix(const char *text, size_t len, size_t max);

// One combine level: items of lens[0..n) bytes (each at most budget / 2; the caller cuts longer
// ones with ls_mr_utf8_prefix) packed in order into groups of at most `budget` bytes and, when
// max_items >= 2, at most max_items items (0: as many as fit; 1 is refused):
// group_end[g] is one past the last item of group g, *n_groups the count. Every group but the
// last holds two items or more, so for n >= 2 there are fewer groups than items and the levels
// end after at most log2(n) + 1 rounds. A group of one item needs no call (its summary goes up
// as it is).
ls_status ls_mr_group(const size_t *lens, size_t n, size_t budget, size_t max_items, size_t *group_end, size_t *n_groups);

// The request after chunk i (0-based) of n.
void ls_mr_chunk_request(size_t i, size_t n, ls_buf *out);
// The heading of one summary in a combine text: "Part 3 of 12" or "Parts 1-4 of 12" (first and
// last are 0-based chunk indices).
void ls_mr_part_heading(size_t first, size_t last, size_t n, ls_buf *out);
// The request after a combine text covering chunks first..last of n (the whole document when
// first == 0 and last == n - 1); `user`: the user's own request for the final call, or NULL.
void ls_mr_combine_request(size_t first, size_t last, size_t n, const char *user, ls_buf *out);

#endif // LS_MAPREDUCE_H
