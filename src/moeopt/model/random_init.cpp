#include "moeopt/model/random_init.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/core/hash.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/tensor_specs.h"
#include "moeopt/ops/fp8.h"
#include "moeopt/ops/random_fill.h"

namespace moeopt {
namespace {

InitRule rule_for(const TensorSpec& s) {
  switch (s.role) {
    case TensorRole::kEmbedding: return InitRule::kEmbedding;
    case TensorRole::kLayerNorm:
    case TensorRole::kFinalNorm:
    case TensorRole::kAttentionNorm: return InitRule::kNorm;
    case TensorRole::kRouterBias: return InitRule::kSmallBias;
    case TensorRole::kAttention:
    case TensorRole::kRouter:
    case TensorRole::kRoutedExpert:
    case TensorRole::kSharedExpert:
    case TensorRole::kSharedExpertGate:
    case TensorRole::kDenseMlp:
    case TensorRole::kLmHead:
    case TensorRole::kMtp:
    case TensorRole::kFp8Scale: return InitRule::kLinear;
  }
  return InitRule::kLinear;
}

}  // namespace

// Which shipped tokenizer a family uses, when its vocabulary can hold it.
std::string tokenizer_family(const ModelConfig& c) {
  switch (c.arch) {
    case Arch::kQwen3Moe:
    case Arch::kQwen3: return "qwen3";
    case Arch::kDeepseekV3: return "deepseek_v3";
    case Arch::kQwen2Moe:
    case Arch::kMixtral:
    case Arch::kDeepseekV2:
    case Arch::kOlmoe:
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2: return "";
  }
  return "";
}

namespace {

// Number of token ids a tokenizer.json defines (model vocab + added tokens).
int64_t tokenizer_size(const std::string& json_text) {
  auto parsed = parse_json(json_text);  // nesting and size limits (core/json_limits.h)
  if (!parsed.ok()) return -1;
  nlohmann::json j = std::move(parsed).value();
  int64_t max_id = -1;
  if (j.contains("model") && j["model"].contains("vocab") && j["model"]["vocab"].is_object())
    for (auto& [k, v] : j["model"]["vocab"].items())
      if (v.is_number_integer()) max_id = std::max<int64_t>(max_id, v.get<int64_t>());
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (auto& t : j["added_tokens"])
      if (t.contains("id") && t["id"].is_number_integer()) max_id = std::max<int64_t>(max_id, t["id"].get<int64_t>());
  return max_id + 1;
}

}  // namespace

float random_init_value(uint64_t seed, const std::string& name, uint64_t index, InitRule rule,
                        int64_t fan_in) {
  return ops::random_fill_value(random_fill_for(seed, name, rule, fan_in), index);
}

ops::RandomFill random_fill_for(uint64_t seed, const std::string& name, InitRule rule,
                                int64_t fan_in) {
  return ops::RandomFill{ops::random_fill_key(seed, name), rule, fan_in};
}

InitRule init_rule_for(const TensorSpec& s) { return rule_for(s); }

int64_t init_fan_in_for(const TensorSpec& s, const ModelConfig& config) {
  // Biases ([out]) take the fan-in of their layer: the hidden size for every bias we have.
  return s.shape.size() >= 2 ? s.shape.back() : config.hidden_size;
}

Fp8Quantization hub_fp8_quantization(const ModelConfig& c) {
  Fp8Quantization q;
  q.block_n = q.block_k = ops::kFp8BlockSize;
  q.modules_to_not_convert.push_back("lm_head");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    q.modules_to_not_convert.push_back(p + ".input_layernorm");
    if (c.layer_is_moe(l)) q.modules_to_not_convert.push_back(p + ".mlp.gate");
    q.modules_to_not_convert.push_back(p + ".post_attention_layernorm");
  }
  return q;
}

namespace {

// The 128x128 block scales of one fp8 weight, computed once from the init-random values by
// whichever of the weight and its scale tensor the writer reaches first.
struct Fp8Blocks {
  std::once_flag once;
  std::vector<float> scale;  // [ceil(N/128), ceil(K/128)]
};

float rounded_to(DType t, float v) {
  switch (t) {
    case DType::kBF16: return round_to_bf16(v);
    case DType::kF16: return f16_to_f32(f32_to_f16(v));
    case DType::kF32:
    case DType::kF8E4M3:
    case DType::kF64:
    case DType::kI8:
    case DType::kU8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kBool: return v;
  }
  return v;
}

void compute_fp8_blocks(Fp8Blocks& b, const ops::RandomFill& fill, DType dt, int64_t n, int64_t k,
                        ThreadPool& pool) {
  const int64_t nb = ops::fp8_blocks(n), kb = ops::fp8_blocks(k);
  b.scale.assign(size_t(nb * kb), 0.0f);
  pool.parallel_for(nb, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi) {
      std::vector<float> amax(size_t(kb), 0.0f);
      for (int64_t r = bi * ops::kFp8BlockSize; r < std::min(n, (bi + 1) * ops::kFp8BlockSize); ++r)
        for (int64_t c = 0; c < k; ++c) {
          const float v = rounded_to(dt, ops::random_fill_value(fill, uint64_t(r * k + c)));
          float& a = amax[size_t(c / ops::kFp8BlockSize)];
          a = std::fmax(a, std::fabs(v));
        }
      for (int64_t g = 0; g < kb; ++g) b.scale[size_t(bi * kb + g)] = ops::fp8_scale_from_amax(amax[size_t(g)]);
    }
  }, 1);
}

}  // namespace

Result<RandomInitResult> write_random_checkpoint(const ModelConfig& config_in, const std::string& out_dir,
                                                 const RandomInitOptions& opt) {
  if (!(opt.dtype == DType::kBF16 || opt.dtype == DType::kF16 || opt.dtype == DType::kF32))
    return make_error(ErrorCode::kInvalidArgument, "init-random: dtype must be bf16, f16 or f32");
  if (!(opt.fp8_scale_dtype == DType::kBF16 || opt.fp8_scale_dtype == DType::kF16 ||
        opt.fp8_scale_dtype == DType::kF32))
    return make_error(ErrorCode::kInvalidArgument, "init-random: the fp8 scale dtype must be bf16, f16 or f32");
  ModelConfig config = config_in;
  if (opt.fp8 && !config.fp8) config.fp8 = hub_fp8_quantization(config);
  if (config.fp8 && (config.fp8->block_n != ops::kFp8BlockSize || config.fp8->block_k != ops::kFp8BlockSize))
    return make_error(ErrorCode::kUnsupported,
                      "{}: field 'quantization_config.weight_block_size' is [{}, {}]: init-random "
                      "writes [128, 128] blocks only", config.source, config.fp8->block_n, config.fp8->block_k);
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, checkpoint_tensors(config, false));
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: cannot create: {}", out_dir, ec.message());

  auto pool = std::make_shared<ThreadPool>(opt.threads);
  RandomInitResult res;
  auto stored_dtype = [&](const TensorSpec& s) {
    return s.fp8_quantized ? DType::kF8E4M3
                           : s.role == TensorRole::kFp8Scale ? opt.fp8_scale_dtype : opt.dtype;
  };
  uint64_t total = 0;
  for (const TensorSpec& s : specs) total += uint64_t(s.numel()) * dtype_size(stored_dtype(s));
  auto written = std::make_shared<uint64_t>(0);
  // Block scales of each fp8 weight, shared by the weight's fill and its scale's fill.
  std::unordered_map<std::string, std::shared_ptr<Fp8Blocks>> blocks;
  std::unordered_map<std::string, const TensorSpec*> by_name;
  for (const TensorSpec& s : specs) {
    by_name[s.name] = &s;
    if (s.fp8_quantized) blocks[s.name] = std::make_shared<Fp8Blocks>();
  }

  std::vector<SafetensorsTensorSource> sources;
  for (const TensorSpec& s : specs) {
    SafetensorsTensorSource src;
    const DType stored = stored_dtype(s);
    src.spec = {s.name, stored, s.shape};
    if (s.fp8_quantized || s.role == TensorRole::kFp8Scale) {
      // The weight this is (or whose scale this is): its values and its blocks.
      const std::string wname =
          s.fp8_quantized ? s.name : s.name.substr(0, s.name.size() - std::string("_scale_inv").size());
      auto wit = by_name.find(wname);
      if (wit == by_name.end() || !blocks.count(wname))
        return make_error(ErrorCode::kInternal, "init-random: no fp8 weight for scale {}", s.name);
      const TensorSpec& ws = *wit->second;
      const ops::RandomFill fill = random_fill_for(opt.seed, ws.name, rule_for(ws), init_fan_in_for(ws, config));
      std::shared_ptr<Fp8Blocks> blk = blocks[wname];
      const int64_t n = ws.shape[0], k = ws.shape[1], kb = ops::fp8_blocks(k);
      const DType dt = opt.dtype;
      const bool is_weight = s.fp8_quantized;
      const uint64_t elem = dtype_size(stored), numel = uint64_t(s.numel());
      const std::string name = s.name;
      auto progress = opt.progress;
      src.fill = [=](uint64_t offset, std::span<uint8_t> out) -> Status {
        if (offset % elem != 0 || out.size() % elem != 0)
          return make_error(ErrorCode::kInternal, "init-random: unaligned chunk for {}", name);
        std::call_once(blk->once, [&] { compute_fp8_blocks(*blk, fill, dt, n, k, *pool); });
        const int64_t first = int64_t(offset / elem), cnt = int64_t(out.size() / elem);
        pool->parallel_for(cnt, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            const int64_t j = first + i;
            if (is_weight) {
              const float v = rounded_to(dt, ops::random_fill_value(fill, uint64_t(j)));
              const float sc = blk->scale[size_t((j / k / ops::kFp8BlockSize) * kb + (j % k) / ops::kFp8BlockSize)];
              out[size_t(i)] = f32_to_fp8e4m3(v / sc);
            } else {
              store_from_f32(out.data(), stored, i, blk->scale[size_t(j)]);
            }
          }
        }, 4096);
        *written += out.size();
        if (progress && uint64_t(first + cnt) == numel) progress(*written, total);
        return {};
      };
      sources.push_back(std::move(src));
      continue;
    }
    const ops::RandomFill fill = random_fill_for(opt.seed, s.name, rule_for(s), init_fan_in_for(s, config));
    const uint64_t elem = dtype_size(opt.dtype), numel = uint64_t(s.numel());
    const DType dt = opt.dtype;
    const std::string name = s.name;
    auto progress = opt.progress;
    src.fill = [=](uint64_t offset, std::span<uint8_t> out) -> Status {
      if (offset % elem != 0 || out.size() % elem != 0)
        return make_error(ErrorCode::kInternal, "init-random: unaligned chunk for {}", name);
      const int64_t first = int64_t(offset / elem), n = int64_t(out.size() / elem);
      pool->parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          store_from_f32(out.data(), dt, i, ops::random_fill_value(fill, uint64_t(first + i)));
      }, 4096);
      *written += out.size();
      if (progress && uint64_t(first + n) == numel) progress(*written, total);
      return {};
    };
    sources.push_back(std::move(src));
  }
  ShardedWriteOptions wo;
  wo.max_shard_bytes = opt.max_shard_bytes;
  MOEOPT_ASSIGN_OR_RETURN(ShardedWriteResult wr, write_sharded_safetensors(out_dir, std::move(sources), wo));
  res.total_bytes = wr.total_bytes;
  res.num_tensors = specs.size();
  res.num_shards = wr.files.size();

  nlohmann::json cj = model_config_to_json(config);
  cj["torch_dtype"] = opt.dtype == DType::kBF16 ? "bfloat16" : opt.dtype == DType::kF16 ? "float16" : "float32";
  MOEOPT_RETURN_IF_ERROR(write_file((std::filesystem::path(out_dir) / "config.json").string(), cj.dump(2) + "\n"));

  std::string fam = tokenizer_family(config);
  if (!fam.empty() && !opt.tokenizer_root.empty()) {
    auto dir = std::filesystem::path(opt.tokenizer_root) / fam;
    auto tok = read_file_or_gz((dir / "tokenizer.json").string());
    auto tok_cfg = read_file((dir / "tokenizer_config.json").string());
    if (tok.ok() && tok_cfg.ok() && tokenizer_size(*tok) <= config.vocab_size) {
      MOEOPT_RETURN_IF_ERROR(write_file((std::filesystem::path(out_dir) / "tokenizer.json").string(), *tok));
      MOEOPT_RETURN_IF_ERROR(
          write_file((std::filesystem::path(out_dir) / "tokenizer_config.json").string(), *tok_cfg));
      res.tokenizer = fam;
    }
  }
  return res;
}

}  // namespace moeopt
