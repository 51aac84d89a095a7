// cmd_plan.c — `longseq plan`: the capacity planner. For a model (a GGUF file, or a named shape
// for models not at hand), a sequence length, a number of ranks, a device and a link, it
// prints the predicted memory per rank, prefill and decode time and bytes moved, from the cost
// model in worker/ls_capacity.h and the measured rates in deploy/capacity.json.
// Tests: tests/oracle/test_plan_cli.py.
#include "cli.h"
#include "ls_capacity.h"
#include "ls_server.h"

#include <jansson.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void help(void) {
    printf("usage: longseq plan --model F|SHAPE --tokens N --ranks P [options]\n"
           "Predicts memory per rank, prefill and decode time and bytes moved for one sequence of\n"
           "N tokens sharded over P ranks (docs/deploy.md has the formulas and the assumptions).\n"
           "  --model F|SHAPE      a GGUF file, or smollm2-135m, llama2-7b, llama2-13b, llama2-70b,\n"
           "                       codellama-34b, llama3-8b, llama3-70b (default: the default model)\n"
           "  --tokens N           sequence length (suffixes K = 1000, M = 1000000: 100K, 1M)\n"
           "  --ranks P            ranks (GPUs, or CPU processes)\n"
           "  --gpu cpu|h100|h200|a100   device of every rank (default cpu)\n"
           "  --link shm|nvlink|ib-ndr|tcp|FILE   between ranks (default shm on cpu, nvlink on GPUs);\n"
           "                       FILE: a JSON object {\"bandwidth\": B/s, \"latency\": s} such as\n"
           "                       tests/multihost/measure-link writes from bench_comm\n"
           "  --threads T          cpu: threads per rank (default 1)\n"
           "  --rates F            the rates file (default: deploy/capacity.json of this source tree)\n"
           "  --json               one JSON object\n" CLI_ATTN_HELP);
}

typedef struct plan_args {
    const char *model, *gpu, *link, *rates;
    int64_t tokens, ranks, threads;
    bool json;
    cli_attn_args attn;
} plan_args;

static bool parse_tokens(const char *s, int64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s) return false;
    if (*end == 'K' || *end == 'k') v *= 1e3, end++;
    else if (*end == 'M' || *end == 'm') v *= 1e6, end++;
    if (*end || !(v >= 1 && v <= 1e9)) return false;
    *out = (int64_t)v;
    return true;
}

// --link FILE: a link object of its own (a name with a '/' or ending in .json), checked.
static bool link_is_file(const char *link) {
    size_t n = strlen(link);
    return strchr(link, '/') || (n > 5 && !strcmp(link + n - 5, ".json"));
}

static ls_status load_link_file(const char *path, json_t **out) {
    json_error_t err;
    json_t *o = json_load_file(path, 0, &err);
    if (!o) return LS_ERR(LS_ERR_FORMAT, "--link %s:%d: %s", path, err.line, err.text);
    double bw = json_number_value(json_object_get(o, "bandwidth")), lat = json_number_value(json_object_get(o, "latency"));
    if (!json_is_object(o) || !(bw > 0) || !(lat >= 0)) {
        json_decref(o);
        return LS_ERR(LS_ERR_FORMAT, "--link %s: expected {\"bandwidth\": bytes/s > 0, \"latency\": seconds >= 0}", path);
    }
    *out = o;
    return LS_OK;
}

// The device's and link's rates from the data file (CPU rates are per thread).
static ls_status load_rates(const plan_args *a, ls_device_rates *d, ls_link_rates *l, char *src, size_t cap) {
    json_error_t err;
    json_t *own = NULL;
    if (link_is_file(a->link)) LS_CHECK(load_link_file(a->link, &own));
    json_t *root = json_load_file(a->rates, 0, &err);
    if (!root) {
        json_decref(own);
        return LS_ERR(LS_ERR_FORMAT, "%s:%d: %s", a->rates, err.line, err.text);
    }
    json_t *dev = json_object_get(json_object_get(root, "devices"), a->gpu);
    json_t *lnk = own ? own : json_object_get(json_object_get(root, "links"), a->link);
    ls_status rc = LS_OK;
    if (!dev) rc = LS_ERR(LS_ERR_NOT_FOUND, "%s has no device \"%s\"", a->rates, a->gpu);
    else if (!lnk) rc = LS_ERR(LS_ERR_NOT_FOUND, "%s has no link \"%s\"", a->rates, a->link);
    if (rc == LS_OK) {
        double per = !strcmp(a->gpu, "cpu") ? (double)a->threads : 1.0;
        *d = (ls_device_rates){.matmul_flops = per * json_number_value(json_object_get(dev, "matmul_flops")),
                               .attention_flops = per * json_number_value(json_object_get(dev, "attention_flops")),
                               .stream_bytes = per * json_number_value(json_object_get(dev, "stream_bytes")),
                               .memory_bytes = json_number_value(json_object_get(dev, "memory_bytes")),
                               .weight_bytes = json_number_value(json_object_get(dev, "weight_bytes")),
                               .kv_bytes = json_number_value(json_object_get(dev, "kv_bytes")),
                               .runtime_bytes = json_number_value(json_object_get(dev, "runtime_bytes")),
                               .ubatch = 512};
        *l = (ls_link_rates){.bandwidth = json_number_value(json_object_get(lnk, "bandwidth")),
                             .latency = json_number_value(json_object_get(lnk, "latency"))};
        const char *ds = json_string_value(json_object_get(dev, "source")), *ls = json_string_value(json_object_get(lnk, "source"));
        snprintf(src, cap, "%s; %s", ds ? ds : "?", ls ? ls : own ? a->link : "?");
    }
    json_decref(own);
    json_decref(root);
    return rc;
}

static ls_status model_shape(const char *model, ls_model_shape *m) {
    if (model && access(model, R_OK) != 0 && !strchr(model, '/') && !strstr(model, ".gguf")) return ls_shape_named(model, m);
    cli_model cm;
    LS_CHECK(cli_model_open(model, NULL, &cm));
    ls_model_config cfg;
    ls_status rc = ls_model_config_load(cm.gguf, &cfg);
    if (rc == LS_OK) {
        ls_shape_of_config(&cfg, (double)ls_model_weight_bytes(cm.gguf), m);
        ls_model_config_free(&cfg);
    }
    cli_model_close(&cm);
    return rc;
}

static void print_text(const plan_args *a, const ls_model_shape *m, const char *rule, const ls_capacity *c, const char *src) {
    const double MiB = 1 << 20, GiB = 1 << 30;
    printf("%s, %lld tokens over %lld rank%s (%s, %s), attention %s\n", m->name, (long long)a->tokens,
           (long long)a->ranks, a->ranks == 1 ? "" : "s", a->gpu, a->link, rule);
    printf("memory per rank    %.2f GiB: weights %.0f MiB, KV %.0f MiB, activations %.0f MiB, runtime %.0f MiB%s\n",
           c->total / GiB, c->weights / MiB, c->kv / MiB, c->activations / MiB, c->runtime / MiB,
           c->fits ? "" : "  — DOES NOT FIT");
    printf("prefill            %.3g s (busiest rank: matmul %.3g s, attention %.3g s, exchange %.3g s)\n", c->prefill_s,
           c->prefill_matmul_s, c->prefill_attention_s, c->prefill_comm_s);
    printf("decode             %.3g ms per token at this context\n", c->decode_s * 1e3);
    printf("moved per layer    %.1f MiB received by the busiest rank, %.1f MiB by all\n", c->recv_per_layer_max / MiB,
           c->recv_per_layer_all / MiB);
    printf("work               %.3g PFLOP matmul + %.3g PFLOP attention; %.0f keys per query\n", c->matmul_flop / 1e15,
           c->attention_flop / 1e15, c->visible_keys_mean);
    printf("rates from         %s\n", src);
}

int cmd_plan(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"tokens", required_argument, 0, 'n'},
                                         {"ranks", required_argument, 0, 'P'}, {"gpu", required_argument, 0, 'g'},
                                         {"link", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
                                         {"rates", required_argument, 0, 'r'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'}, CLI_ATTN_OPTIONS, {0, 0, 0, 0}};
    const char *rates = getenv("LONGSEQ_RATES");
    plan_args a = {.gpu = "cpu", .rates = rates && *rates ? rates : LS_SOURCE_DIR "/deploy/capacity.json", .ranks = 1,
                   .threads = 1, .attn = cli_attn_args_default()};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c >= CLI_ATTN_OPT) {
            if (cli_attn_option("plan", c, optarg, &a.attn)) return 2;
            continue;
        }
        switch (c) {
        case 'm': a.model = optarg; break;
        case 'n': if (!parse_tokens(optarg, &a.tokens)) return cli_usage_error("plan", "--tokens \"%s\" is not a length like 4096, 100K or 1M", optarg); break;
        case 'P': if (!cli_parse_int("plan", "--ranks", optarg, 1, LS_PLAN_MAX_RANKS, &a.ranks)) return 2; break;
        case 'g': a.gpu = optarg; break;
        case 'l': a.link = optarg; break;
        case 't': if (!cli_parse_int("plan", "--threads", optarg, 1, 1024, &a.threads)) return 2; break;
        case 'r': a.rates = optarg; break;
        case 'j': a.json = true; break;
        case 'h': help(); return 0;
        default: return cli_usage_error("plan", "unknown option");
        }
    }
    if (!a.tokens) return cli_usage_error("plan", "--tokens N is required");
    if (!a.link) a.link = !strcmp(a.gpu, "cpu") ? "shm" : "nvlink";
    ls_model_shape m;
    ls_device_rates d;
    ls_link_rates l;
    ls_attn_rule rule;
    ls_capacity cap;
    char src[1024], rule_name[64];
    if (model_shape(a.model, &m) != LS_OK || load_rates(&a, &d, &l, src, sizeof src) != LS_OK ||
        cli_attn_rule(&a.attn, a.tokens, &rule) != LS_OK ||
        ls_capacity_predict(&m, &rule, a.tokens, (int)a.ranks, &d, &l, &cap) != LS_OK)
        return cli_fail();
    ls_rule_describe(&rule, rule_name, sizeof rule_name);
    if (!a.json) {
        print_text(&a, &m, rule_name, &cap, src);
        return 0;
    }
    json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:b, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                          "model", m.name, "tokens", (json_int_t)a.tokens, "ranks", (json_int_t)a.ranks, "device", a.gpu,
                          "link", a.link, "attention", rule_name, "weights_bytes", cap.weights, "kv_bytes", cap.kv,
                          "activation_bytes", cap.activations, "runtime_bytes", cap.runtime, "total_bytes", cap.total,
                          "fits", cap.fits, "prefill_s", cap.prefill_s, "prefill_matmul_s", cap.prefill_matmul_s,
                          "prefill_attention_s", cap.prefill_attention_s, "prefill_comm_s", cap.prefill_comm_s,
                          "decode_s", cap.decode_s, "recv_per_layer_max", cap.recv_per_layer_max, "recv_per_layer_all",
                          cap.recv_per_layer_all, "matmul_flop", cap.matmul_flop, "attention_flop", cap.attention_flop,
                          "visible_keys_mean", cap.visible_keys_mean);
    json_dumpf(o, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(o);
    return 0;
}
