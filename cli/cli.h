// cli.h — private to cli/: the subcommands of the longseq binary and the helpers they share.
// Each command parses its own options and returns a process exit status (0 ok, 1 error,
// 2 usage error). Tests: tests/oracle/*.py and tests/unit run the binary end to end.
#ifndef LS_CLI_H
#define LS_CLI_H

#include "ls_base.h"
#include "ls_gguf.h"
#include "ls_tokenizer.h"

int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);

// Prints the pending error (ls_err_report) and returns 1.
int cli_fail(void);
// Prints "longseq <cmd>: <message>" plus a hint to run --help, returns 2.
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// A model file opened for its metadata and tokenizer.
typedef struct cli_model {
    ls_gguf_t *gguf;
    ls_tokenizer_t *tok;
} cli_model;
ls_status cli_model_open(const char *path, cli_model *m); // path NULL: the default model
void cli_model_close(cli_model *m);

#endif // LS_CLI_H
