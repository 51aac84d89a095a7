// cmd_tokenize.c — `longseq tokenize` (text -> ids or pieces, one line) and
// `longseq detokenize` (ids -> bytes). Tests: tests/oracle/test_tokenizer.py,
// tests/cli/errors.sh.
#include "cli.h"
#include "ls_chat.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT_BYTES ((size_t)1 << 30)

static void tokenize_help(void) {
    printf("usage: longseq tokenize [--model F] [--lora A]... [--pieces] [--raw] [--parse-special] [--stats]\n"
           "                        [--chat [--system TEXT] [--chat-template NAME]] [FILE|-]\n"
           "Prints the token ids of FILE (default: standard input) on one line, separated by spaces.\n"
           "  --model F        GGUF file or Hugging Face directory (default: $LONGSEQ_MODEL or the\n"
           "                   cached SmolLM2)\n"
           "  --lora A         an adapter whose LoRA+ embeddings grow the vocabulary (repeatable)\n"
           "  --pieces         print the vocabulary pieces instead of ids\n"
           "  --raw            do not add BOS/EOS even if the model asks for them\n"
           "  --parse-special  turn control-token text such as <|im_start|> into its id\n"
           "  --stats          print bytes, tokens and speed to standard error\n"
           "  --chat           treat the text as one user message in the model's chat template\n"
           "  --system TEXT    system message for --chat (default: the template's own, if any)\n"
           "  --chat-template NAME  " LS_CHAT_NAMES " instead of the model's template\n");
}

// Wraps `text` as a user turn (after an optional system turn) in the chat template; the
// result contains special tokens as text, so it is tokenized with parse_special.
static ls_status chat_prompt(const cli_model *m, const char *tmpl, const char *system, ls_buf *text) {
    ls_chat_t *chat;
    LS_CHECK(cli_chat_init(m->gguf, m->tok, tmpl, &chat));
    ls_chat_msg msgs[2] = {{"system", system}, {"user", text->data}};
    ls_buf out = {0};
    ls_status rc = ls_chat_apply(chat, system ? msgs : msgs + 1, system ? 2 : 1, true, &out);
    ls_chat_free(chat);
    ls_buf_free(text);
    *text = out;
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"pieces", no_argument, 0, 'p'},
        {"raw", no_argument, 0, 'r'},         {"parse-special", no_argument, 0, 's'},
        {"stats", no_argument, 0, 'S'},       {"help", no_argument, 0, 'h'},
        {"chat", no_argument, 0, 'c'},        {"system", required_argument, 0, 'y'},
        {"chat-template", required_argument, 0, 't'}, {"lora", required_argument, 0, 'L'},
        {0, 0, 0, 0}};
    const char *model = NULL, *system = NULL, *tmpl = NULL;
    ls_lora_spec lora[CLI_MAX_LORA];
    int n_lora = 0;
    bool pieces = false, raw = false, special = false, stats = false, chat = false;
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'L':
            if (n_lora == CLI_MAX_LORA) return cli_usage_error("tokenize", "at most %d --lora adapters", CLI_MAX_LORA);
            lora[n_lora++] = (ls_lora_spec){.path = optarg, .scale = 1.0};
            break;
        case 'p': pieces = true; break;
        case 'r': raw = true; break;
        case 's': special = true; break;
        case 'S': stats = true; break;
        case 'c': chat = true; break;
        case 'y': system = optarg; break;
        case 't': tmpl = optarg; break;
        case 'h': tokenize_help(); return 0;
        default: return cli_usage_error("tokenize", "unknown option");
        }
    }
    if (argc - optind > 1) return cli_usage_error("tokenize", "expected at most one input file");
    const char *path = optind < argc ? argv[optind] : "-";

    cli_model m;
    if (cli_model_open(model, &(ls_load_opts){.lora = lora, .n_lora = n_lora}, &m) != LS_OK) return cli_fail();
    ls_buf text = {0}, out = {0};
    ls_vec_i32 ids = {0};
    int status = 0;
    if (ls_file_read_all(path, MAX_TEXT_BYTES, &text) != LS_OK ||
        (chat && chat_prompt(&m, tmpl, system, &text) != LS_OK)) {
        status = cli_fail();
        goto done;
    }
    if (chat) special = true, raw = true; // the template writes its own special tokens
    double t0 = ls_time_ms();
    if (ls_tokenize(m.tok, text.data, text.len, !raw, special, &ids) != LS_OK) {
        status = cli_fail();
        goto done;
    }
    double ms = ls_time_ms() - t0;
    for (size_t i = 0; i < ids.len; i++) {
        if (i) ls_buf_putc(&out, ' ');
        if (!pieces) {
            ls_buf_printf(&out, "%d", ids.data[i]);
        } else {
            ls_str s = ls_tokenizer_text(m.tok, ids.data[i]);
            ls_buf_append(&out, s.ptr, s.len);
        }
    }
    ls_buf_putc(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    if (stats)
        fprintf(stderr, "tokenize: %zu bytes -> %zu tokens in %.1f ms (%.1f MB/s, %.2f bytes/token)\n",
                text.len, ids.len, ms, ms > 0 ? text.len / ms / 1e3 : 0.0,
                ids.len ? (double)text.len / (double)ids.len : 0.0);
done:
    ls_buf_free(&text);
    ls_buf_free(&out);
    ls_vec_i32_free(&ids);
    cli_model_close(&m);
    return status;
}

// --- detokenize ---------------------------------------------------------------------------

static void detokenize_help(void) {
    printf("usage: longseq detokenize [--model F] [--lora A]... [--special] [FILE|-]\n"
           "Reads token ids separated by whitespace and writes the text they stand for.\n"
           "  --model F   GGUF file or Hugging Face directory (default: $LONGSEQ_MODEL or the\n"
           "              cached SmolLM2)\n"
           "  --lora A    an adapter whose LoRA+ embeddings grow the vocabulary (repeatable)\n"
           "  --special   also render control tokens such as <|im_end|>\n");
}

// Parses whitespace-separated ids; an entry that is not an integer is an error naming it.
static ls_status parse_ids(const char *s, size_t n, ls_vec_i32 *ids) {
    size_t i = 0, k = 0;
    while (i < n) {
        while (i < n && strchr(" \t\r\n", s[i])) i++;
        if (i == n) break;
        size_t j = i;
        while (j < n && !strchr(" \t\r\n", s[j])) j++;
        char word[32];
        size_t len = j - i < sizeof word - 1 ? j - i : sizeof word - 1;
        memcpy(word, s + i, len);
        word[len] = 0;
        char *end;
        errno = 0;
        long v = strtol(word, &end, 10);
        if (*end || errno || j - i >= sizeof word || v < INT32_MIN || v > INT32_MAX)
            return LS_ERR(LS_ERR_INVALID, "entry %zu (\"%s\") is not a token id", k, word);
        ls_vec_i32_push(ids, (int32_t)v);
        i = j;
        k++;
    }
    return LS_OK;
}

int cmd_detokenize(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"special", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {"lora", required_argument, 0, 'L'},
                                         {0, 0, 0, 0}};
    const char *model = NULL;
    ls_lora_spec lora[CLI_MAX_LORA];
    int n_lora = 0;
    bool special = false;
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 's': special = true; break;
        case 'L':
            if (n_lora == CLI_MAX_LORA) return cli_usage_error("detokenize", "at most %d --lora adapters", CLI_MAX_LORA);
            lora[n_lora++] = (ls_lora_spec){.path = optarg, .scale = 1.0};
            break;
        case 'h': detokenize_help(); return 0;
        default: return cli_usage_error("detokenize", "unknown option");
        }
    }
    if (argc - optind > 1) return cli_usage_error("detokenize", "expected at most one input file");
    cli_model m;
    if (cli_model_open(model, &(ls_load_opts){.lora = lora, .n_lora = n_lora}, &m) != LS_OK) return cli_fail();
    ls_buf in = {0}, out = {0};
    ls_vec_i32 ids = {0};
    int status = 0;
    if (ls_file_read_all(optind < argc ? argv[optind] : "-", MAX_TEXT_BYTES, &in) != LS_OK ||
        parse_ids(in.data, in.len, &ids) != LS_OK ||
        ls_detokenize(m.tok, ids.data, ids.len, special, &out) != LS_OK) {
        status = cli_fail();
    } else {
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
    }
    ls_buf_free(&in);
    ls_buf_free(&out);
    ls_vec_i32_free(&ids);
    cli_model_close(&m);
    return status;
}
