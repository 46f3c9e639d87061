// `moeopt inspect <catalog-name | checkpoint-dir | config.json> [--json] [--gpu h100|h200] [--ctx N]
//                [--ep N [--redundant R] [--expert-load FILE]]`
//
// Reads a model's config.json, detects its architecture and prints what the model is and
// what it needs: layers, attention, experts, routing, exact parameter counts, weight and KV
// bytes, how much batch x context fits on 1/2/4/8 GPUs and a recommended layout. The work is
// done by the model library (config, tensor_specs, sizing); this file only formats.
// With --ep N: the expert placement over N GPUs (parallel/expert_placement.h), from the
// routing counts of a `serve` /metrics dump (--expert-load) or, without one, under uniform
// load: per MoE layer the imbalance (most loaded GPU / mean) of the contiguous placement and of
// the balanced one with R redundant slots per GPU, their mean and worst over the layers.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "moeopt/model/catalog.h"
#include "moeopt/model/config.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/sizing.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/core/file_io.h"
#include "moeopt/parallel/expert_placement.h"

namespace moeopt::cli {
namespace {

using json = nlohmann::json;

struct InspectArgs {
  std::string model;
  bool json = false;
  bool list = false;
  std::string gpu;   // empty: both kinds
  int64_t ctx = 0;   // 0: min(8192, max_position_embeddings)
  int64_t ep = 0;    // > 0: the expert placement over this many GPUs
  int64_t redundant = 0;
  std::string expert_load;  // a /metrics dump; empty: uniform load
};

// The --ep report: per-layer placements of the measured (or uniform) load.
Result<json> placement_report(const InspectArgs& a, const ModelConfig& c) {
  if (c.num_experts < a.ep)
    return make_error(ErrorCode::kInvalidArgument, "--ep {}: the model has {} routed experts", a.ep,
                      c.num_experts);
  parallel::ExpertLoad load{c.num_hidden_layers, c.num_experts, {}};
  if (a.expert_load.empty()) {
    load.tokens.assign(size_t(c.num_hidden_layers * c.num_experts), 1);
  } else {
    MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file(a.expert_load, size_t(64) << 20));
    auto parsed = parallel::parse_expert_load_metrics(text, c.num_hidden_layers, c.num_experts);
    if (!parsed.ok()) return make_error(parsed.status().code(), "{}: {}", a.expert_load, parsed.status().message());
    load = std::move(*parsed);
  }
  const parallel::PlacementOptions o{.gpus = a.ep, .redundant = a.redundant};
  json layers = json::array();
  double sum_b = 0, sum_p = 0, worst_b = 0, worst_p = 0;
  int64_t planned = 0, tokens = 0;
  for (int64_t l = 0; l < load.num_layers; ++l) {
    const auto first = load.tokens.begin() + std::ptrdiff_t(l * load.num_experts);
    const std::vector<int64_t> loads(first, first + std::ptrdiff_t(load.num_experts));
    int64_t t = 0;
    for (int64_t v : loads) t += v;
    if (t == 0) continue;  // a dense layer, or one no token reached
    MOEOPT_ASSIGN_OR_RETURN(parallel::LayerPlacement b, parallel::baseline_placement(loads, o));
    MOEOPT_ASSIGN_OR_RETURN(parallel::LayerPlacement p, parallel::balanced_placement(loads, o));
    int64_t replicas = 0;
    for (int32_t n : p.copies) replicas += n - 1;
    layers.push_back({{"layer", l}, {"tokens", t}, {"baseline_imbalance", b.imbalance},
                      {"balanced_imbalance", p.imbalance}, {"replicas", replicas}, {"gpu_experts", p.gpu_experts}});
    sum_b += b.imbalance;
    sum_p += p.imbalance;
    worst_b = std::max(worst_b, b.imbalance);
    worst_p = std::max(worst_p, p.imbalance);
    ++planned;
    tokens += t;
  }
  if (planned == 0) return make_error(ErrorCode::kInvalidArgument, "{}: no layer has routed tokens", a.expert_load);
  return json{{"gpus", a.ep},
              {"redundant_slots_per_gpu", a.redundant},
              {"slots_per_gpu", (c.num_experts + a.ep - 1) / a.ep + a.redundant},
              {"load", a.expert_load.empty() ? json("uniform") : json(a.expert_load)},
              {"layers_planned", planned},
              {"tokens", a.expert_load.empty() ? json(nullptr) : json(tokens)},
              {"baseline_imbalance_mean", sum_b / double(planned)},
              {"baseline_imbalance_worst", worst_b},
              {"balanced_imbalance_mean", sum_p / double(planned)},
              {"balanced_imbalance_worst", worst_p},
              {"layers", layers}};
}

void print_placement(const json& r) {
  std::printf("\nexpert placement over %lld GPUs (%lld expert slots each, %lld for replicas; load: %s)\n",
              (long long)r["gpus"].get<int64_t>(), (long long)r["slots_per_gpu"].get<int64_t>(),
              (long long)r["redundant_slots_per_gpu"].get<int64_t>(),
              r["load"].is_null() ? "uniform" : r["load"].get<std::string>().c_str());
  std::printf("  imbalance (most loaded GPU / mean) over %lld MoE layers: contiguous %.3f mean, %.3f worst; "
              "balanced %.3f mean, %.3f worst\n",
              (long long)r["layers_planned"].get<int64_t>(), r["baseline_imbalance_mean"].get<double>(),
              r["baseline_imbalance_worst"].get<double>(), r["balanced_imbalance_mean"].get<double>(),
              r["balanced_imbalance_worst"].get<double>());
  if (r["load"] == "uniform")
    std::printf("  (uniform load assumed: give --expert-load with a /metrics dump of `moeopt serve` to plan "
                "from measured routing)\n");
  std::printf("  planning only: expert parallelism does not run yet (one GPU per engine)\n");
}

// Parameter counts: "30.53B", "84.89M", or the exact number below a million.
std::string billions(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", double(n) / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", double(n) / 1e6);
  return std::to_string(n);
}
// Decimal units, as model cards and GPU memory sizes are quoted.
std::string gigabytes(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f} GB", double(n) / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f} MB", double(n) / 1e6);
  return fmt::format("{} bytes", n);
}
std::string kib(int64_t n) { return fmt::format("{:.1f} KiB", double(n) / 1024.0); }

std::string join_ints(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return "[" + s + "]";
}

void line(const char* label, const std::string& text) {
  std::printf("  \u2713 %-16s %s\n", label, text.c_str());
}

// True when `dir` holds safetensors weights (single file, shards or an index).
bool has_safetensors(const std::string& dir) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json")) return true;
  }
  return false;
}

// The checkpoint's weight format: "bf16", or "fp8 e4m3, 128x128 blocks, bf16 scales" (the
// scale dtype read from the checkpoint's weight_scale_inv tensors when it has weights).
struct WeightFormatInfo {
  std::string weights = "bf16";
  std::string scale_dtype;  // "" when not fp8 or unknown (config only)
  std::string text;
};

WeightFormatInfo weight_format(const ModelConfig& c, const std::vector<SafetensorsTensorInfo>* tensors) {
  WeightFormatInfo f;
  if (!c.fp8) {
    f.weights = c.torch_dtype == "float32" ? "f32" : c.torch_dtype == "float16" ? "f16" : "bf16";
    if (tensors)
      for (const auto& t : *tensors)
        if (t.name == "model.embed_tokens.weight") f.weights = dtype_name(t.dtype);
    f.text = f.weights;
    return f;
  }
  f.weights = "fp8_e4m3";
  if (tensors)
    for (const auto& t : *tensors)
      if (t.name.size() > 10 && t.name.compare(t.name.size() - 10, 10, "_scale_inv") == 0) {
        f.scale_dtype = dtype_name(t.dtype);
        break;
      }
  f.text = fmt::format("fp8 e4m3 W8A8, {}x{} blocks, {} scales (weight_scale_inv), activations {}",
                       c.fp8->block_n, c.fp8->block_k, f.scale_dtype.empty() ? "f32/bf16/f16" : f.scale_dtype,
                       c.fp8->activation_scheme);
  return f;
}

void print_human(const ModelSource& src, const std::optional<CheckpointCheck>& ck, const ModelConfig& c,
                 const std::vector<TensorSpec>& tensors, const ParamCounts& p,
                 const std::vector<const GpuSpec*>& gpus, int64_t ctx,
                 const WeightFormatInfo& format) {
  std::printf("moeopt inspect: %s (%s)\n", src.name.c_str(), src.config_path.c_str());
  const std::string cls = c.architectures.empty() ? std::string(arch_hf_class(c.arch)) : c.architectures[0];
  line("architecture", fmt::format("{} ({}), {}", c.model_type, cls,
                                   c.is_moe() ? "Mixture-of-Experts" : "dense (not MoE)"));
  std::string layers = fmt::format("{} ({} MoE, {} dense", c.num_hidden_layers, c.num_moe_layers(),
                                   c.num_hidden_layers - c.num_moe_layers());
  if (arch_is_deepseek(c.arch))
    layers += fmt::format("; first_k_dense_replace {}, moe_layer_freq {}", c.first_k_dense_replace, c.moe_layer_freq);
  else if (c.arch == Arch::kQwen2Moe || c.arch == Arch::kQwen3Moe)
    layers += fmt::format("; decoder_sparse_step {}, mlp_only_layers {}", c.decoder_sparse_step,
                          join_ints(c.mlp_only_layers));
  line("layers", layers + ")");
  line("hidden size", fmt::format("{}, vocab {}, max positions {}{}", c.hidden_size, c.vocab_size,
                                  c.max_position_embeddings, c.tie_word_embeddings ? ", tied embeddings" : ""));
  if (c.attention_kind == AttentionKind::kMla) {
    line("attention", fmt::format("MLA, {} heads, q_lora_rank {}, kv_lora_rank {}, qk_nope {} + qk_rope {}, v {}",
                                  c.num_attention_heads,
                                  c.q_lora_rank ? std::to_string(*c.q_lora_rank) : std::string("none"),
                                  c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim));
  } else {
    std::string extras;
    if (c.qk_norm)
      extras += c.arch == Arch::kOlmoe ? ", q/k RMSNorm (whole projection)" : ", q/k RMSNorm (per head)";
    if (c.qkv_bias) extras += ", q/k/v bias";
    if (c.attention_bias) extras += ", q/k/v/o bias";
    if (c.sliding_window) extras += fmt::format(", sliding window {}", *c.sliding_window);
    line("attention", fmt::format("GQA, {} q heads / {} kv heads, head_dim {}{}", c.num_attention_heads,
                                  c.num_key_value_heads, c.head_dim, extras));
  }
  std::string rope = c.rope_theta == double(int64_t(c.rope_theta)) ? fmt::format("theta {}", int64_t(c.rope_theta))
                                                                   : fmt::format("theta {:g}", c.rope_theta);
  if (c.rope_scaling.type != RopeScalingType::kNone)
    rope += fmt::format(", {} scaling x{:g}", rope_scaling_type_name(c.rope_scaling.type), c.rope_scaling.factor);
  line("rope", rope);
  if (c.is_moe()) {
    line("routed experts", fmt::format("{} experts, {} wide, {} per token", c.num_experts, c.moe_intermediate_size,
                                       c.num_experts_per_tok));
    if (c.num_shared_experts > 0)
      line("shared experts", fmt::format("{} ({} wide in total{})", c.num_shared_experts,
                                         c.shared_expert_intermediate_size,
                                         c.shared_expert_gate ? ", sigmoid-gated" : ""));
    else
      line("shared experts", "none");
    std::string routing = fmt::format("{}, top-{}", scoring_func_name(c.scoring_func), c.num_experts_per_tok);
    if (c.topk_method != TopkMethod::kGreedy)
      routing += fmt::format(", {} ({} groups, best {})", topk_method_name(c.topk_method), c.n_group, c.topk_group);
    routing += c.norm_topk_prob ? ", top-k weights renormalised" : ", top-k weights not renormalised";
    if (c.e_score_correction_bias) routing += ", bias-corrected selection";
    if (c.routed_scaling_factor != 1.0) routing += fmt::format(", routed scaling x{:g}", c.routed_scaling_factor);
    line("routing", routing);
  }
  line("format", format.text +
                     (c.fp8 ? "; the fit table's FP8 column is this checkpoint as stored" : ""));
  if (ck)
    line("checkpoint", fmt::format("{} tensors in {} file(s), {}; names and shapes match config.json{}{}",
                                   ck->tensors, ck->files, gigabytes(ck->bytes),
                                   ck->has_fp8_scales ? ", FP8 block scales present" : "",
                                   ck->has_mtp ? ", MTP layers present" : ""));
  line("parameters", fmt::format("{} total, {} active per token (embedding {} and lm_head {} counted in both{})",
                                 billions(p.total), billions(p.active), billions(p.embedding), billions(p.lm_head),
                                 p.mtp > 0 ? fmt::format("; MTP module {} excluded", billions(p.mtp)) : ""));
  WeightBytes wb = weight_bytes(c, tensors);
  auto [bn, bk] = fp8_block(c);
  line("weights", fmt::format("{} BF16, {} FP8 ({}x{} block scales)", gigabytes(wb.bf16), gigabytes(wb.fp8), bn, bk));
  KvBytes kv = kv_bytes_per_token(c);
  line("KV cache", fmt::format("{}/token BF16, {}/token FP8{}", kib(kv.bf16), kib(kv.fp8),
                               c.attention_kind == AttentionKind::kMla ? " (compressed MLA latent)" : ""));

  if (ctx > c.max_position_embeddings)
    std::printf("\n  ! --ctx %lld is longer than max_position_embeddings (%lld)\n", (long long)ctx,
                (long long)c.max_position_embeddings);
  std::printf("\n  fit: how many sequences of %lld tokens fit, with BF16 weights+KV / FP8 weights / FP8 weights+KV\n"
              "  (%.0f%% of GPU memory usable, %lld GiB per GPU reserved for activations; - = does not fit)\n",
              (long long)ctx, kGpuMemoryFraction * 100, (long long)(kActivationReserveBytes >> 30));
  std::printf("  %-6s", "GPUs");
  for (const GpuSpec* g : gpus) std::printf("  %-28s", g->name.c_str());
  std::printf("\n");
  for (int n : {1, 2, 4, 8}) {
    std::printf("  %-6d", n);
    for (const GpuSpec* g : gpus) {
      std::string cell;
      for (Precision pr : {Precision::kBf16, Precision::kFp8Weights, Precision::kFp8WeightsFp8Kv}) {
        FitResult f = fit_on_gpus(c, tensors, *g, n, pr, ctx);
        if (!cell.empty()) cell += " / ";
        cell += f.fits ? std::to_string(f.max_batch) : "-";
      }
      std::printf("  %-28s", cell.c_str());
    }
    std::printf("\n");
  }
  for (const GpuSpec* g : gpus) {
    LayoutRecommendation r = recommend_layout(c, tensors, *g, ctx);
    std::printf("  %s recommended on %s: %s\n", r.fits ? "\u2713" : "\u2717", g->name.c_str(), r.summary.c_str());
    for (const auto& w : r.warnings) std::printf("    ! %s\n", w.c_str());
  }
  for (int tp : {2, 4, 8})
    for (const auto& w : fp8_tp_warnings(c, tp, true)) std::printf("  ! if experts are split by TP=%d: %s\n", tp, w.c_str());
}

int run_inspect(const InspectArgs& a) {
  const char* cmd = "inspect";
  if (a.list) {
    auto names = list_catalog(data_root());
    if (!names.ok()) return report_error(cmd, names.status());
    if (a.json) {
      std::printf("%s\n", json(*names).dump(2).c_str());
    } else {
      for (const auto& n : *names) std::printf("%s\n", n.c_str());
    }
    return 0;
  }
  if (a.model.empty())
    return report_error(cmd, Status(ErrorCode::kInvalidArgument,
                                    "missing model: give a catalog name, a checkpoint directory or a "
                                    "config.json (--list shows the catalog)"));
  auto src = resolve_model_source(a.model, data_root());
  if (!src.ok()) return report_error(cmd, src.status());
  auto cfg = load_model_config(src->config_path);
  if (!cfg.ok()) return report_error(cmd, cfg.status());
  auto tensors = expected_tensors(*cfg);
  if (!tensors.ok()) return report_error(cmd, tensors.status());
  ParamCounts params = count_params(*cfg, *tensors, mtp_tensors(*cfg));

  // A checkpoint directory with weights: count from the safetensors headers, after checking
  // every tensor against what config.json implies.
  std::optional<CheckpointCheck> ck;
  WeightFormatInfo format = weight_format(*cfg, nullptr);
  if (src->kind == ModelSourceKind::kCheckpointDir && has_safetensors(src->checkpoint_dir)) {
    auto opened = Checkpoint::open(src->checkpoint_dir);
    if (!opened.ok()) return report_error(cmd, opened.status());
    format = weight_format(*cfg, &opened->tensors());
    auto checked = check_checkpoint_tensors(*cfg, opened->tensors(), src->checkpoint_dir);
    if (!checked.ok()) return report_error(cmd, checked.status());
    ck = *checked;
    params = ck->params;
  }

  std::vector<const GpuSpec*> gpus;
  if (a.gpu.empty() || a.gpu == "h100") gpus.push_back(&gpu_h100());
  if (a.gpu.empty() || a.gpu == "h200") gpus.push_back(&gpu_h200());
  const int64_t ctx = a.ctx > 0 ? a.ctx : std::min<int64_t>(8192, cfg->max_position_embeddings);

  std::optional<json> placement;
  if (a.ep > 0) {
    auto r = placement_report(a, *cfg);
    if (!r.ok()) return report_error(cmd, r.status());
    placement = std::move(*r);
  } else if (a.redundant > 0 || !a.expert_load.empty()) {
    return report_error(cmd, Status(ErrorCode::kInvalidArgument, "--redundant and --expert-load need --ep N"));
  }

  if (a.json) {
    json j = model_report_json(*cfg, *tensors, params, gpus, ctx);
    if (placement) j["expert_placement"] = *placement;
    j["format"] = {{"weights", format.weights},
                   {"block", cfg->fp8 ? json{cfg->fp8->block_n, cfg->fp8->block_k} : json(nullptr)},
                   {"scale_dtype", format.scale_dtype.empty() ? json(nullptr) : json(format.scale_dtype)}};
    j["source"] = {{"name", src->name},
                   {"config", src->config_path},
                   {"kind", src->kind == ModelSourceKind::kCatalog         ? "catalog"
                            : src->kind == ModelSourceKind::kCheckpointDir ? "checkpoint"
                                                                           : "config"}};
    if (ck)
      j["checkpoint"] = {{"tensors", ck->tensors}, {"files", ck->files}, {"bytes", ck->bytes},
                         {"fp8_scales", ck->has_fp8_scales}, {"mtp", ck->has_mtp}, {"matches_config", true}};
    else
      j["checkpoint"] = nullptr;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_human(*src, ck, *cfg, *tensors, params, gpus, ctx, format);
    if (placement) print_placement(*placement);
  }
  return 0;
}

RunFn setup_inspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* sub = app.add_subcommand("inspect", "Describe a model: architecture, parameters, memory, GPU layout");
  sub->add_option("model", args->model, "catalog name (e.g. Qwen3-30B-A3B), checkpoint directory or config.json");
  sub->add_flag("--json", args->json, "print one JSON object");
  sub->add_flag("--list", args->list, "list the catalog's model names");
  sub->add_option("--gpu", args->gpu, "GPU kind for the fit table: h100 or h200 (default both)")
      ->check(CLI::IsMember({"h100", "h200"}));
  sub->add_option("--ctx", args->ctx, "context length per sequence for the fit table (default 8192)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  sub->add_option("--ep", args->ep, "expert placement over N GPUs (expert parallelism planning)")
      ->check(CLI::Range(int64_t(1), int64_t(1024)));
  sub->add_option("--redundant", args->redundant, "with --ep: extra expert slots per GPU for replicas of hot experts (default 0)")
      ->check(CLI::Range(int64_t(0), int64_t(1024)));
  sub->add_option("--expert-load", args->expert_load,
                  "with --ep: routing counts from a /metrics dump of `moeopt serve` (default: uniform load)");
  return [args] { return run_inspect(*args); };
}

MOEOPT_REGISTER_COMMAND(setup_inspect);

}  // namespace
}  // namespace moeopt::cli
