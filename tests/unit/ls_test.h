// ls_test.h — the two macros of our C unit tests (after Redis's testhelp.h): TEST_COND checks
// and counts, TEST_REPORT prints the tally and gives main's exit status. A failure prints the
// file, line and the condition (or message), and the test keeps going to report them all.
#ifndef LS_TEST_H
#define LS_TEST_H

#include <stdio.h>
#include <string.h>

static int ls_test_failed, ls_test_passed;

#define TEST_COND(cond, ...)                                                             \
    do {                                                                                 \
        if (cond) {                                                                      \
            ls_test_passed++;                                                            \
        } else {                                                                         \
            ls_test_failed++;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

// Expects `call` to fail with `code` and an error message containing `needle`; clears it.
#define TEST_ERR(call, code, needle)                                                     \
    do {                                                                                 \
        ls_status rc_ = (call);                                                          \
        TEST_COND(rc_ == (code) && strstr(ls_err_msg(), (needle)),                       \
                  "%s: got status %d (%s), message \"%s\"; wanted %d with \"%s\"", #call, \
                  (int)rc_, ls_status_name(rc_), ls_err_msg(), (int)(code), (needle));   \
        ls_err_clear();                                                                  \
    } while (0)

#define TEST_REPORT(name)                                                                \
    (printf("%s: %d passed, %d failed\n", (name), ls_test_passed, ls_test_failed),       \
     ls_test_failed ? 1 : 0)

#endif // LS_TEST_H
