// ls_capacity.h — the capacity planner's cost model: for a model shape, an attention rule, n
// tokens and P ranks on a device and a link, the memory per rank (weights, KV share,
// activations), the prefill time (matmul and attention FLOPs at measured rates, plus the
// exchange the plan makes necessary), the decode time per token, and the bytes each rank
// receives per layer. Each layer's work follows its own rule (a model's window layers keep
// their window); the plan and its exchange are those of the sharded path (ls_plan_init_layers). The work and the traffic come from the real shard plan (ls_plan) and
// rule (ls_attn_ranges), so they are what the system would do; the rates come from a data file
// (deploy/capacity.json, each with its source). The formulas are written out in
// docs/deploy.md. Tests: tests/oracle/test_plan_cli.py (against measured runs).
#ifndef LS_CAPACITY_H
#define LS_CAPACITY_H

#include "ls_model.h"
#include "ls_plan.h"

// A model's shape: what the cost depends on.
typedef struct ls_model_shape {
    char name[128];
    int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train;
    double file_bytes;  // the weights as stored (GGUF); 0 for named shapes
    // Layers with the model's own sliding window (HF's sliding_window keys, the query included),
    // which keep it whatever the rule (ls_layer_rule); the others follow the rule. 0: none.
    int64_t sliding_window, n_window_layers;
} ls_model_shape;
// llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3-70b, codellama-34b, smollm2-135m.
ls_status ls_shape_named(const char *name, ls_model_shape *out);
void ls_shape_of_config(const ls_model_config *c, double file_bytes, ls_model_shape *out);
double ls_shape_params(const ls_model_shape *m); // all weights, embeddings and output included

typedef struct ls_device_rates {
    double matmul_flops;        // FLOP/s per rank
    double attention_flops;     // FLOP/s per rank (the attention kernel, QK^T and PV)
    double stream_bytes;        // bytes/s per rank at which decode reads weights and keys
    double memory_bytes;        // per rank, 0 = unknown
    double weight_bytes;        // per parameter; 0 = the file's bytes (CPU runs GGUF as stored)
    double kv_bytes;            // per K or V element (4: f32 on CPU, 2: bf16 on GPU)
    double runtime_bytes;       // fixed per rank (libraries, buffers)
    int64_t ubatch;             // prefill micro-batch
} ls_device_rates;

typedef struct ls_link_rates {
    double bandwidth;           // bytes/s per direction per rank
    double latency;             // seconds per message
} ls_link_rates;

typedef struct ls_capacity {
    double weights, kv, activations, runtime, total;  // bytes per rank (the largest shard)
    double prefill_s, prefill_matmul_s, prefill_attention_s, prefill_comm_s; // the busiest rank
    double decode_s;                                  // per token at context n
    double recv_per_layer_max, recv_per_layer_all;    // bytes received per layer: busiest rank, all ranks
    double matmul_flop, attention_flop;               // whole prefill, all ranks
    double visible_keys_mean;                         // keys per query (averaged over positions and heads)
    bool fits;                                        // total <= memory_bytes (or memory unknown)
} ls_capacity;

ls_status ls_capacity_predict(const ls_model_shape *m, const ls_attn_rule *rule, int64_t n, int P,
                              const ls_device_rates *d, const ls_link_rates *l, ls_capacity *out);

#endif // LS_CAPACITY_H
