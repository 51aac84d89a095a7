// test_loader.c — the loader (ls_model_open) on Hugging Face checkpoint directories and PEFT
// adapters this test writes in C: a valid tiny checkpoint (also through links, as the Hugging
// Face hub cache lays it out), then hostile ones that must each fail quickly with a message
// naming the problem and without a sanitizer report: a FIFO or a link leading outside the
// directory in place of a file, files over the size limits, added tokens with ids far beyond
// the vocabulary, 0-D adapter tensors and ranks no integer holds. (The numerical checks of
// the loader are tests/oracle/test_hf.py.) The suite also runs this under ASan+UBSan.
#include "ls_loader.h"
#include "ls_test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[64];

// --- writing files -------------------------------------------------------------------------

static void path_of(char *out, size_t cap, const char *dir, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static void write_bytes(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    path_of(path, sizeof path, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static void write_text(const char *dir, const char *name, const char *s) { write_bytes(dir, name, s, strlen(s)); }

static void make_dir(const char *dir, const char *name, char *out, size_t cap) {
    path_of(out, cap, dir, name);
    mkdir(out, 0755);
}

// A safetensors file of F32 tensors: names[i] with shapes dims[i] (n_dims[i] of them, -1 ends
// the list), every value 0.01 * its index.
typedef struct st_spec { const char *name; int n_dims; int64_t shape[2]; } st_spec;

static void write_safetensors(const char *dir, const char *name, const st_spec *t, int n) {
    ls_buf h = {0}, data = {0};
    ls_buf_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        int64_t elems = 1;
        ls_buf_printf(&h, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", t[i].name);
        for (int d = 0; d < t[i].n_dims; d++) {
            ls_buf_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            elems *= t[i].shape[d];
        }
        ls_buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", data.len, data.len + (size_t)elems * 4);
        for (int64_t k = 0; k < elems; k++) {
            float v = 0.01f * (float)k;
            ls_buf_append(&data, &v, 4);
        }
    }
    ls_buf_printf(&h, "}");
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    ls_buf file = {0};
    ls_buf_append(&file, len, 8);
    ls_buf_append(&file, h.data, h.len);
    ls_buf_append(&file, data.data, data.len);
    write_bytes(dir, name, file.data, file.len);
    ls_buf_free(&h), ls_buf_free(&data), ls_buf_free(&file);
}

// --- a tiny checkpoint: hidden 4, one layer, 2 heads of 2 (1 KV head), vocabulary 4 ----------

#define VOCAB 4

static const char *CONFIG =
    "{\"model_type\":\"llama\",\"hidden_size\":4,\"num_hidden_layers\":1,\"intermediate_size\":4,"
    "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"max_position_embeddings\":64,"
    "\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":true,\"vocab_size\":4}";

static void write_tokenizer_json(const char *dir, const char *added) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3},\"merges\":[\"a b\"]},"
             "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
             "\"added_tokens\":%s}", added);
    write_text(dir, "tokenizer.json", json);
}

static const st_spec WEIGHTS[] = {
    {"model.embed_tokens.weight", 2, {VOCAB, 4}},
    {"model.norm.weight", 1, {4}},
    {"model.layers.0.input_layernorm.weight", 1, {4}},
    {"model.layers.0.self_attn.q_proj.weight", 2, {4, 4}},
    {"model.layers.0.self_attn.k_proj.weight", 2, {2, 4}},
    {"model.layers.0.self_attn.v_proj.weight", 2, {2, 4}},
    {"model.layers.0.self_attn.o_proj.weight", 2, {4, 4}},
    {"model.layers.0.post_attention_layernorm.weight", 1, {4}},
    {"model.layers.0.mlp.gate_proj.weight", 2, {4, 4}},
    {"model.layers.0.mlp.up_proj.weight", 2, {4, 4}},
    {"model.layers.0.mlp.down_proj.weight", 2, {4, 4}},
};

// An empty directory `name` under the root (whatever was there removed); its path in out.
static bool fresh_dir(const char *name, char *out, size_t cap) {
    char cmd[600];
    path_of(out, cap, g_root, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    if (system(cmd) != 0) return false;
    return mkdir(out, 0755) == 0;
}

// A fresh checkpoint directory `name` under the root; its path in out.
static void checkpoint(const char *name, char *out, size_t cap) {
    if (!fresh_dir(name, out, cap)) return;
    write_text(out, "config.json", CONFIG);
    write_tokenizer_json(out, "[]");
    write_safetensors(out, "model.safetensors", WEIGHTS, (int)(sizeof WEIGHTS / sizeof *WEIGHTS));
}

static void expect_ok(const char *what, const char *dir, const ls_load_opts *o) {
    ls_gguf_t *g = NULL;
    TEST_COND(ls_model_open(dir, o, &g) == LS_OK, "%s: %s", what, ls_err_msg());
    TEST_COND(!g || ls_gguf_find_tensor(g, "blk.0.attn_q.weight"), "%s: the tensors are there", what);
    ls_err_clear();
    ls_gguf_free(g);
}

static void expect_err(const char *dir, const ls_load_opts *o, ls_status code, const char *needle) {
    ls_gguf_t *g = NULL;
    TEST_ERR(ls_model_open(dir, o, &g), code, needle);
    TEST_COND(g == NULL, "no handle after an error (%s)", needle);
    ls_gguf_free(g);
}

// A file of `size` bytes that takes no space: only its length matters.
static void sparse(const char *dir, const char *name, off_t size) {
    char path[512];
    path_of(path, sizeof path, dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, size) != 0) perror("ftruncate");
    close(fd);
}

static void test_valid(void) {
    char d[256];
    checkpoint("valid", d, sizeof d);
    expect_ok("a tiny checkpoint", d, NULL);
    char sub[300], cmd[700]; // a link to a file inside the directory is fine
    make_dir(d, "weights", sub, sizeof sub);
    snprintf(cmd, sizeof cmd, "cd '%s' && mv model.safetensors weights/ && ln -s weights/model.safetensors .", d);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    expect_ok("model.safetensors linked to a file inside", d, NULL);
}

// The Hugging Face hub cache: snapshots/REV/* are links to ../../blobs/HASH.
static void test_hub_cache(void) {
    char d[256], cmd[1400];
    checkpoint("hub-src", d, sizeof d);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && mkdir -p models--tiny/blobs models--tiny/snapshots/abc123 && "
             "mv hub-src/config.json models--tiny/blobs/1111 && mv hub-src/tokenizer.json models--tiny/blobs/2222 && "
             "mv hub-src/model.safetensors models--tiny/blobs/3333 && cd models--tiny/snapshots/abc123 && "
             "ln -s ../../blobs/1111 config.json && ln -s ../../blobs/2222 tokenizer.json && "
             "ln -s ../../blobs/3333 model.safetensors", g_root);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    char snap[300];
    path_of(snap, sizeof snap, g_root, "models--tiny/snapshots/abc123");
    expect_ok("a hub cache snapshot (links into ../../blobs)", snap, NULL);
}

// --- files that are not what they claim --------------------------------------------------------

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL test_loader: the loader hangs on a FIFO\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(2);
    _exit(1);
}

static void test_fifo(void) {
    char d[256], path[300];
    checkpoint("fifo", d, sizeof d);
    path_of(path, sizeof path, d, "config.json");
    unlink(path);
    TEST_COND(mkfifo(path, 0644) == 0, "mkfifo");
    signal(SIGALRM, on_alarm);
    alarm(20);
    expect_err(d, NULL, LS_ERR_FORMAT, "config.json is not a regular file");
    checkpoint("fifo", d, sizeof d);
    path_of(path, sizeof path, d, "model.safetensors");
    unlink(path);
    TEST_COND(mkfifo(path, 0644) == 0, "mkfifo");
    expect_err(d, NULL, LS_ERR_FORMAT, "model.safetensors is not a regular file");
    alarm(0);
}

static void test_links_outside(void) {
    char d[256], cmd[1200], out[300];
    make_dir(g_root, "outside", out, sizeof out);
    write_text(out, "config.json", CONFIG);
    write_text(out, "secret", "ABCDEFGHIJKLMNOP"); // read as a safetensors length: 5208208757389214273
    checkpoint("link-config", d, sizeof d);
    snprintf(cmd, sizeof cmd, "cd '%s' && rm config.json && ln -s ../outside/config.json config.json", d);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    expect_err(d, NULL, LS_ERR_FORMAT, "config.json leads outside");
    checkpoint("link-weights", d, sizeof d);
    snprintf(cmd, sizeof cmd, "cd '%s' && rm model.safetensors && ln -s '%s/secret' model.safetensors", d, out);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    ls_gguf_t *g = NULL;
    ls_status rc = ls_model_open(d, NULL, &g);
    TEST_COND(rc == LS_ERR_FORMAT && strstr(ls_err_msg(), "model.safetensors leads outside"), "got %s", ls_err_msg());
    TEST_COND(!strstr(ls_err_msg(), "5208208757389214273"), "the file's bytes are in the message: %s", ls_err_msg());
    ls_err_clear();
    checkpoint("link-tokenizer", d, sizeof d);
    snprintf(cmd, sizeof cmd, "cd '%s' && mv tokenizer.json ../outside/ && ln -s ../outside/tokenizer.json .", d);
    TEST_COND(system(cmd) == 0, "%s", cmd);
    expect_err(d, NULL, LS_ERR_FORMAT, "tokenizer.json leads outside");
}

// Over the size limits: refused by their length, before anything is read (and nothing leaks).
static void test_too_large(void) {
    char d[256];
    checkpoint("large-config", d, sizeof d);
    sparse(d, "config.json", ((off_t)16 << 20) + 1);
    expect_err(d, NULL, LS_ERR_RANGE, "is larger than the limit of 16777216 bytes");
    checkpoint("large-tokenizer", d, sizeof d);
    sparse(d, "tokenizer.json", ((off_t)256 << 20) + 1);
    expect_err(d, NULL, LS_ERR_RANGE, "is larger than the limit of 268435456 bytes");
}

// --- token ids far beyond the vocabulary ---------------------------------------------------------

// A SentencePiece tokenizer.model of four pieces (<unk> <s> </s> a), BPE, written as protobuf.
static void write_spm(const char *dir) {
    static const uint8_t pb[] = {
        0x0a, 0x09, 0x0a, 0x05, '<', 'u', 'n', 'k', '>', 0x18, 0x02,
        0x0a, 0x07, 0x0a, 0x03, '<', 's', '>', 0x18, 0x03,
        0x0a, 0x08, 0x0a, 0x04, '<', '/', 's', '>', 0x18, 0x03,
        0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x01,
        0x12, 0x02, 0x18, 0x02};
    write_bytes(dir, "tokenizer.model", pb, sizeof pb);
}

static void test_huge_ids(void) {
    char d[256];
    checkpoint("embd-rows", d, sizeof d); // rows that hold no data: the vocabulary was padded up to them
    st_spec w[sizeof WEIGHTS / sizeof *WEIGHTS];
    memcpy(w, WEIGHTS, sizeof w);
    w[0].shape[0] = 1000000, w[0].shape[1] = 0;
    write_safetensors(d, "model.safetensors", w, (int)(sizeof w / sizeof *w));
    expect_err(d, NULL, LS_ERR_FORMAT, "model.embed_tokens.weight is [1000000, 0]: expected [1 to 16777216 tokens, hidden_size 4]");
    checkpoint("added-ok", d, sizeof d);
    write_tokenizer_json(d, "[{\"id\":3,\"content\":\"<|x|>\",\"special\":true}]");
    expect_ok("an added token inside the vocabulary", d, NULL);
    checkpoint("added-huge", d, sizeof d);
    write_tokenizer_json(d, "[{\"id\":16777215,\"content\":\"<|x|>\",\"special\":true}]");
    expect_err(d, NULL, LS_ERR_FORMAT, "added_tokens[0] \"<|x|>\" has the id 16777215, beyond the 4 rows of model.embed_tokens");
    checkpoint("spm-ok", d, sizeof d);
    write_spm(d);
    expect_ok("a SentencePiece tokenizer.model", d, NULL);
    write_text(d, "added_tokens.json", "{\"<huge>\": 16777215}");
    expect_err(d, NULL, LS_ERR_FORMAT, "\"<huge>\" has the id 16777215, beyond the 4 rows of model.embed_tokens");
}

// --- adapters ----------------------------------------------------------------------------------

static void adapter(const char *name, const char *config, const st_spec *extra, char *out, size_t cap) {
    if (!fresh_dir(name, out, cap)) return;
    write_text(out, "adapter_config.json", config);
    st_spec t[3] = {{"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", 2, {2, 4}},
                    {"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", 2, {2, 2}}};
    int n = 2;
    if (extra) t[n++] = *extra;
    write_safetensors(out, "adapter_model.safetensors", t, n);
}

static void test_adapters(void) {
    char d[256], a[256];
    checkpoint("base", d, sizeof d);
    ls_lora_spec spec = {.path = a, .scale = 1.0};
    ls_load_opts o = {.lora = &spec, .n_lora = 1};
    adapter("lora-ok", "{\"peft_type\":\"LORA\",\"r\":2,\"lora_alpha\":4}", NULL, a, sizeof a);
    expect_ok("a PEFT adapter", d, &o);
    st_spec scalar = {"base_model.model.model.norm.weight", 0, {0}};
    adapter("lora-0d", "{\"peft_type\":\"LORA\",\"r\":2,\"lora_alpha\":4}", &scalar, a, sizeof a);
    expect_err(d, &o, LS_ERR_FORMAT, "adapter tensor 'base_model.model.model.norm.weight' has 0 dimensions (1 or 2 expected)");
    adapter("lora-r", "{\"peft_type\":\"LORA\",\"r\":1e308,\"lora_alpha\":4}", NULL, a, sizeof a);
    expect_err(d, &o, LS_ERR_FORMAT, "\"r\" = 1e+308 is not a rank (an integer from 1 to 16777216)");
    adapter("lora-r-frac", "{\"peft_type\":\"LORA\",\"r\":2.5,\"lora_alpha\":4}", NULL, a, sizeof a);
    expect_err(d, &o, LS_ERR_FORMAT, "\"r\" = 2.5 is not a rank");
    adapter("lora-pattern", "{\"peft_type\":\"LORA\",\"r\":2,\"lora_alpha\":4,\"rank_pattern\":{\"v_proj\":1e300}}",
            NULL, a, sizeof a);
    expect_err(d, &o, LS_ERR_FORMAT, "rank_pattern \"v_proj\" = 1e+300 is not a rank (an integer from 1 to 16777216)");
    adapter("lora-pattern-ok", "{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":4,\"rank_pattern\":{\"v_proj\":2}}",
            NULL, a, sizeof a);
    expect_ok("an adapter with a rank pattern", d, &o);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/ls-loader-XXXXXX");
    if (!mkdtemp(g_root)) return 1;
    test_valid();
    test_hub_cache();
    test_links_outside();
    test_too_large();
    test_huge_ids();
    test_adapters();
    test_fifo(); // last: before the fix it hung, and the alarm ends the test
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd) != 0) return 1;
    return TEST_REPORT("test_loader");
}
