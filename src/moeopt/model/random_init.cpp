#include "moeopt/model/random_init.h"

#include <cmath>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/core/hash.h"
#include "moeopt/core/json_limits.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/model/safetensors.h"
#include "moeopt/model/tensor_specs.h"
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

Result<RandomInitResult> write_random_checkpoint(const ModelConfig& config, const std::string& out_dir,
                                                 const RandomInitOptions& opt) {
  if (config.fp8)
    return make_error(ErrorCode::kUnsupported,
                      "{}: init-random writes {} checkpoints; FP8 pre-quantized configs are not "
                      "supported yet (use the BF16 model's config)", config.source, dtype_name(opt.dtype));
  if (!(opt.dtype == DType::kBF16 || opt.dtype == DType::kF16 || opt.dtype == DType::kF32))
    return make_error(ErrorCode::kInvalidArgument, "init-random: dtype must be bf16, f16 or f32");
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, expected_tensors(config));
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return make_error(ErrorCode::kIoError, "{}: cannot create: {}", out_dir, ec.message());

  auto pool = std::make_shared<ThreadPool>(opt.threads);
  RandomInitResult res;
  uint64_t total = 0;
  for (const TensorSpec& s : specs) total += uint64_t(s.numel()) * dtype_size(opt.dtype);
  auto written = std::make_shared<uint64_t>(0);

  std::vector<SafetensorsTensorSource> sources;
  for (const TensorSpec& s : specs) {
    SafetensorsTensorSource src;
    src.spec = {s.name, opt.dtype, s.shape};
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
