// prompt_logits, compare_models, perplexity (quality.h).
#include "moeopt/model/quality.h"

#include <algorithm>
#include <cmath>

#include "moeopt/model/config.h"
#include "moeopt/ops/device_backend.h"
#include "moeopt/ops/scratch.h"
#include "moeopt/ops/sparsity.h"

namespace moeopt {

DType reference_kv_dtype(const Model& m) {
  return m.device() == Device::kCpu ? DType::kF32 : DType::kBF16;
}

Result<std::vector<float>> prompt_logits(Model& m, const ops::Context& ctx,
                                         const std::vector<int32_t>& prompt,
                                         std::optional<DType> kv) {
  const int32_t t = int32_t(prompt.size()), bs = 16, blocks = (t + bs - 1) / bs;
  if (t == 0) return make_error(ErrorCode::kInvalidArgument, "quality: empty prompt");
  const KvLayout kl = m.kv_layout();
  const bool on_device = m.device() != Device::kCpu;
  const DType kv_dtype = kv.value_or(reference_kv_dtype(m));
  if (!on_device && kv_dtype != DType::kF32 && kv_dtype != DType::kF8E4M3)
    return make_error(ErrorCode::kInvalidArgument, "quality: a KV cache is f32 or f8e4m3, not {}",
                      dtype_name(kv_dtype));
  if (on_device && kv_dtype != DType::kBF16 && kv_dtype != DType::kF8E4M3)
    return make_error(ErrorCode::kInvalidArgument,
                      "quality: a KV cache on the GPU is bf16 or f8e4m3, not {}", dtype_name(kv_dtype));
  if (on_device && !ctx.device_backend)
    return make_error(ErrorCode::kInvalidArgument,
                      "quality: the model is on the GPU; the context has no device backend");
  if (kv_dtype == DType::kF8E4M3 && kl.latent)
    return make_error(ErrorCode::kUnsupported, "quality: no FP8 KV cache for MLA's latent cache");
  // Where the cache and the logits live: host tensors for a CPU model; for a device model one
  // scratch arena of this call on ctx.device_backend, which also takes the forward pass's
  // temporaries (pools zeroed, as the engine's device cache is) and is freed on return.
  ops::Context c = ctx;
  std::unique_ptr<ops::ScratchArena> arena;
  if (on_device) {
    arena = std::make_unique<ops::ScratchArena>(ctx.device_backend);
    c.arena = arena.get();
  }
  std::vector<HostTensor> host;
  host.reserve(size_t(kl.num_layers) * 4 + 1);
  auto buffer = [&](DType dt, const Shape& s) -> Result<TensorView> {
    if (!on_device) return host.emplace_back(dt, s).view();
    MOEOPT_ASSIGN_OR_RETURN(TensorView v, arena->alloc(dt, s));
    MOEOPT_RETURN_IF_ERROR(ctx.device_backend->fill_zero(c, v.data, v.nbytes()));
    return v;
  };
  // The layout of engine/kv_cache.h: per layer K and V pools (MLA: the latent pool only),
  // plus the f32 scales of an FP8 cache.
  const Shape pool{blocks, bs, kl.num_kv_heads, kl.head_dim}, scales{blocks, bs, kl.num_kv_heads};
  std::vector<LayerKv> kvs;
  for (int64_t l = 0; l < kl.num_layers; ++l) {
    LayerKv lk;
    MOEOPT_ASSIGN_OR_RETURN(lk.k, buffer(kv_dtype, pool));
    if (!kl.latent) {
      MOEOPT_ASSIGN_OR_RETURN(lk.v, buffer(kv_dtype, pool));
    }
    if (kv_dtype == DType::kF8E4M3) {
      MOEOPT_ASSIGN_OR_RETURN(lk.k_scale, buffer(DType::kF32, scales));
      MOEOPT_ASSIGN_OR_RETURN(lk.v_scale, buffer(DType::kF32, scales));
    }
    kvs.push_back(lk);
  }
  ForwardBatch b;
  b.token_ids = prompt;
  for (int32_t i = 0; i < t; ++i) {
    b.positions.push_back(i);
    b.slot_mapping.push_back(i);
    b.logits_rows.push_back(i);
  }
  b.query_start_loc = {0, t};
  b.context_lens = {t};
  for (int32_t i = 0; i < blocks; ++i) b.block_table.push_back(i);
  b.max_blocks_per_seq = blocks;
  const int64_t vocab = m.config().vocab_size;
  MOEOPT_ASSIGN_OR_RETURN(TensorView logits, buffer(DType::kF32, {t, vocab}));
  MOEOPT_RETURN_IF_ERROR(m.forward(c, b, kvs, logits));
  std::vector<float> out(size_t(t) * size_t(vocab));
  if (!on_device) {
    std::copy_n(static_cast<const float*>(logits.data), out.size(), out.data());
  } else {
    // Waits for the forward pass (the copy is enqueued behind it on the same stream).
    MOEOPT_RETURN_IF_ERROR(ctx.device_backend->copy_to_host(c, out.data(), logits.data, out.size() * 4));
  }
  return out;
}

namespace {

std::vector<double> log_softmax(const float* x, int64_t v) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < v; ++i) mx = std::max(mx, double(x[i]));
  double s = 0;
  for (int64_t i = 0; i < v; ++i) s += std::exp(double(x[i]) - mx);
  std::vector<double> out(static_cast<size_t>(v));
  for (int64_t i = 0; i < v; ++i) out[size_t(i)] = double(x[i]) - mx - std::log(s);
  return out;
}

}  // namespace

Result<ExpertImportance> expert_importance(const std::string& dir, const ops::Context& ctx,
                                           const std::vector<std::vector<int32_t>>& calibration) {
  MOEOPT_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(dir + "/config.json"));
  MOEOPT_ASSIGN_OR_RETURN(WeightStore store, WeightStore::open(dir, config));
  // The model reads the store's own buffers, so the statistics' keys (weight data) name the
  // store's tensors.
  MOEOPT_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, make_model(config, store));
  ops::ExpertInputStats stats;
  ops::Context calib = ctx;
  calib.expert_stats = &stats;
  for (const auto& p : calibration) MOEOPT_RETURN_IF_ERROR(prompt_logits(*model, calib, p).status());
  ExpertImportance out;
  for (const TensorSpec& s : store.specs()) {
    if (!is_prunable_expert(s)) continue;
    MOEOPT_ASSIGN_OR_RETURN(TensorView w, store.get(s.name));
    auto it = stats.sum_sq.find(w.data);
    if (it == stats.sum_sq.end()) continue;  // never routed to
    std::vector<float>& imp = out.by_tensor[s.name];
    for (double v : it->second) imp.push_back(float(std::sqrt(v)));
  }
  return out;
}

Result<QualityReport> compare_models(Model& reference, Model& test, const ops::Context& ctx,
                                     const std::vector<std::vector<int32_t>>& prompts,
                                     std::optional<DType> test_kv) {
  const int64_t v = reference.config().vocab_size;
  if (test.config().vocab_size != v)
    return make_error(ErrorCode::kInvalidArgument, "quality: the models' vocabularies differ");
  QualityReport r;
  int64_t same = 0;
  double nll_ref = 0, nll_test = 0;
  for (const auto& p : prompts) {
    MOEOPT_ASSIGN_OR_RETURN(std::vector<float> a, prompt_logits(reference, ctx, p, std::nullopt));
    MOEOPT_ASSIGN_OR_RETURN(std::vector<float> b, prompt_logits(test, ctx, p, test_kv));
    for (size_t row = 0; row < p.size(); ++row) {
      const float* ra = a.data() + row * size_t(v);
      const float* rb = b.data() + row * size_t(v);
      const std::vector<double> la = log_softmax(ra, v), lb = log_softmax(rb, v);
      if (row + 1 < p.size() && p[row + 1] >= 0 && p[row + 1] < v) {
        nll_ref -= la[size_t(p[row + 1])];
        nll_test -= lb[size_t(p[row + 1])];
        ++r.scored_tokens;
      }
      double kl = 0;
      for (int64_t i = 0; i < v; ++i) kl += std::exp(la[size_t(i)]) * (la[size_t(i)] - lb[size_t(i)]);
      r.mean_kl += kl;
      r.max_kl = std::max(r.max_kl, kl);
      same += std::max_element(ra, ra + v) - ra == std::max_element(rb, rb + v) - rb;
      ++r.positions;
    }
  }
  if (r.positions > 0) {
    r.mean_kl /= double(r.positions);
    r.top1_agreement = double(same) / double(r.positions);
  }
  if (r.scored_tokens > 0) {
    r.reference_perplexity = std::exp(nll_ref / double(r.scored_tokens));
    r.test_perplexity = std::exp(nll_test / double(r.scored_tokens));
  }
  return r;
}

std::vector<std::vector<int32_t>> token_windows(const std::vector<int32_t>& tokens, int window) {
  std::vector<std::vector<int32_t>> out;
  if (window < 2) return out;
  for (size_t s = 0; s < tokens.size(); s += size_t(window)) {
    const size_t e = std::min(tokens.size(), s + size_t(window));
    if (e - s >= 2) out.emplace_back(tokens.begin() + std::ptrdiff_t(s), tokens.begin() + std::ptrdiff_t(e));
  }
  return out;
}

Result<PerplexityReport> perplexity(Model& model, const ops::Context& ctx,
                                    const std::vector<int32_t>& tokens, int window) {
  if (window < 2) return make_error(ErrorCode::kInvalidArgument, "perplexity: the window must hold 2+ tokens");
  const int64_t v = model.config().vocab_size;
  PerplexityReport r;
  for (const auto& w : token_windows(tokens, window)) {
    for (int32_t id : w)
      if (id < 0 || id >= v)
        return make_error(ErrorCode::kInvalidArgument, "perplexity: token {} is outside the vocabulary of {}",
                          id, v);
    MOEOPT_ASSIGN_OR_RETURN(std::vector<float> logits, prompt_logits(model, ctx, w));
    for (size_t row = 0; row + 1 < w.size(); ++row) {
      r.nll_sum -= log_softmax(logits.data() + row * size_t(v), v)[size_t(w[row + 1])];
      ++r.scored_tokens;
    }
  }
  if (r.scored_tokens == 0) return make_error(ErrorCode::kInvalidArgument, "perplexity: fewer than 2 tokens");
  r.mean_nll = r.nll_sum / double(r.scored_tokens);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace moeopt
