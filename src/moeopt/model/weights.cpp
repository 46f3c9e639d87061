#include "moeopt/model/weights.h"

#include <cmath>
#include <unordered_set>

#include "moeopt/ops/fp8.h"
#include "moeopt/ops/sparsity.h"

namespace moeopt {

Result<WeightStore> WeightStore::open(const std::string& dir, const ModelConfig& config) {
  WeightStore ws;
  MOEOPT_ASSIGN_OR_RETURN(ws.ckpt_, Checkpoint::open(dir));
  MOEOPT_ASSIGN_OR_RETURN(ws.specs_, checkpoint_tensors(config, /*include_mtp=*/false));
  std::unordered_set<std::string> expected;
  for (const TensorSpec& s : ws.specs_) {
    expected.insert(s.name);
    const SafetensorsTensorInfo* info = ws.ckpt_.find(s.name);
    if (!info)
      return make_error(ErrorCode::kNotFound, "{}: checkpoint has no tensor '{}' that {} requires",
                        dir, s.name, arch_name(config.arch));
    if (info->shape != s.shape)
      return make_error(ErrorCode::kCorruptData, "{}: tensor '{}' has shape {}, config implies {}",
                        info->file, s.name, Shape::from(info->shape).str(),
                        Shape::from(s.shape).str());
    const bool scale = s.role == TensorRole::kFp8Scale;
    if (scale && !(info->dtype == DType::kF32 || info->dtype == DType::kBF16 ||
                   info->dtype == DType::kF16))
      return make_error(ErrorCode::kCorruptData,
                        "{}: tensor '{}' has dtype {}, expected f32, bf16 or f16 (an fp8 block scale)",
                        info->file, s.name, dtype_name(info->dtype));
    if (!scale && !dtype_is_float(info->dtype))
      return make_error(ErrorCode::kCorruptData, "{}: tensor '{}' has dtype {}, expected a float type",
                        info->file, s.name, dtype_name(info->dtype));
    if (s.fp8_quantized && info->dtype != DType::kF8E4M3)
      return make_error(ErrorCode::kCorruptData,
                        "{}: tensor '{}' has dtype {}, expected fp8_e4m3 (config.json's "
                        "quantization_config is fp8 and does not exclude it)",
                        info->file, s.name, dtype_name(info->dtype));
    if (!s.fp8_quantized && !scale && info->dtype == DType::kF8E4M3)
      return make_error(ErrorCode::kCorruptData,
                        "{}: tensor '{}' is fp8_e4m3 but the config gives it no block scale "
                        "(quantization_config missing, or the module is in modules_to_not_convert)",
                        info->file, s.name);
    if (!info->aligned)
      return make_error(ErrorCode::kUnsupported, "{}: tensor '{}' is not aligned to its element size",
                        info->file, s.name);
    MOEOPT_ASSIGN_OR_RETURN(TensorView v, ws.ckpt_.view(s.name));
    if (scale) {
      // Block scales as f32 (BF16 in Qwen's releases, F16 in some); finite, or the weight is
      // garbage.
      HostTensor f(DType::kF32, Shape::from(s.shape));
      for (int64_t i = 0; i < f.numel(); ++i) {
        const float x = load_as_f32(v.data, v.dtype, i);
        if (!std::isfinite(x))
          return make_error(ErrorCode::kCorruptData, "{}: tensor '{}' element {} is {} (block scales must be finite)",
                            info->file, s.name, i, x);
        f.ptr<float>()[i] = x;
      }
      if (v.dtype != DType::kF32) {
        v = f.view();
        ws.owned_->push_back(std::move(f));
      }
    }
    if (s.fp8_quantized) ++ws.fp8_weights_;
    ws.views_.emplace(s.name, v);
  }
  std::unordered_set<std::string> known_unused;
  for (const TensorSpec& s : mtp_tensors(config)) known_unused.insert(s.name);
  for (const SafetensorsTensorInfo& t : ws.ckpt_.tensors()) {
    if (expected.count(t.name) || known_unused.count(t.name)) continue;
    // transformers never stores these buffers, but some exporters do.
    if (t.name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    return make_error(ErrorCode::kCorruptData, "{}: unexpected tensor '{}' for a {} config", t.file,
                      t.name, arch_name(config.arch));
  }
  return ws;
}

WeightStore WeightStore::from_views(std::vector<TensorSpec> specs,
                                    std::unordered_map<std::string, TensorView> views,
                                    std::shared_ptr<void> owner) {
  WeightStore ws;
  ws.specs_ = std::move(specs);
  ws.views_ = std::move(views);
  ws.owner_ = std::move(owner);
  for (const TensorSpec& s : ws.specs_) ws.fp8_weights_ += s.fp8_quantized ? 1 : 0;
  return ws;
}

const ops::ExpertWeights* WeightStore::stacked_experts(const std::string& moe_prefix) const {
  auto it = stacked_.find(moe_prefix);
  return it == stacked_.end() ? nullptr : &it->second;
}

void WeightStore::add_stacked_experts(const std::string& moe_prefix, ops::ExpertWeights experts) {
  stacked_[moe_prefix] = std::move(experts);
}

std::optional<TensorView> WeightStore::fp8_scale(std::string_view weight_name) const {
  auto w = views_.find(std::string(weight_name));
  if (w == views_.end() || w->second.dtype != DType::kF8E4M3) return std::nullopt;
  auto it = views_.find(fp8_scale_name(std::string(weight_name)));
  if (it == views_.end()) return std::nullopt;
  return it->second;
}

Status WeightStore::quantize_fp8(const ops::Context& ctx) {
  std::vector<TensorSpec> added;
  for (TensorSpec& s : specs_) {
    if (!s.fp8_linear || s.fp8_quantized || s.shape.size() != 2) continue;
    auto it = views_.find(s.name);
    if (it == views_.end()) continue;
    const TensorView src = it->second;
    if (src.device != Device::kCpu)
      return make_error(ErrorCode::kUnsupported,
                        "WeightStore::quantize_fp8 quantises host stores: '{}' is on the GPU "
                        "(device stores quantise at upload, model/device_weights.h)", s.name);
    HostTensor q(DType::kF8E4M3, src.shape);
    HostTensor scale(DType::kF32, ops::fp8_scale_shape(src.shape[0], src.shape[1]));
    MOEOPT_RETURN_IF_ERROR(ops::quantize_fp8_weight_blocks(ctx, src, q, scale));
    it->second = q.view();
    const std::string sname = fp8_scale_name(s.name);
    views_[sname] = scale.view();
    added.push_back(fp8_scale_spec(s));
    s.fp8_quantized = true;
    ++fp8_weights_;
    owned_->push_back(std::move(q));
    owned_->push_back(std::move(scale));
  }
  specs_.insert(specs_.end(), added.begin(), added.end());
  return {};
}

Status WeightStore::dequantize_fp8(const ops::Context& ctx) {
  for (TensorSpec& s : specs_) {
    if (!s.fp8_quantized) continue;
    auto it = views_.find(s.name);
    auto sc = views_.find(fp8_scale_name(s.name));
    if (it == views_.end() || sc == views_.end() || it->second.dtype != DType::kF8E4M3) continue;
    HostTensor f(DType::kF32, it->second.shape);
    MOEOPT_RETURN_IF_ERROR(ops::dequantize_fp8_weight_blocks(ctx, it->second, sc->second, f));
    it->second = f.view();
    owned_->push_back(std::move(f));
    --fp8_weights_;
  }
  return {};
}

Status WeightStore::prune_experts_2_4(const ops::Context& ctx, const ExpertImportance* importance) {
  for (const TensorSpec& s : specs_) {
    if (!is_prunable_expert(s)) continue;
    auto it = views_.find(s.name);
    if (it == views_.end()) continue;
    const TensorView src = it->second;
    if (src.device != Device::kCpu)
      return make_error(ErrorCode::kUnsupported,
                        "WeightStore::prune_experts_2_4 prunes host stores: '{}' is on the GPU",
                        s.name);
    const float* imp = nullptr;
    if (importance) {
      auto found = importance->by_tensor.find(s.name);
      if (found != importance->by_tensor.end()) {
        if (int64_t(found->second.size()) != src.shape[1])
          return make_error(ErrorCode::kInvalidArgument,
                            "prune_experts_2_4: importance of '{}' has {} channels, the weight {}",
                            s.name, found->second.size(), src.shape[1]);
        imp = found->second.data();
      }
    }
    HostTensor pruned(src.dtype, src.shape);
    MOEOPT_RETURN_IF_ERROR(ops::prune_2_4(ctx, src, pruned, imp));
    it->second = pruned.view();
    owned_->push_back(std::move(pruned));
  }
  return {};
}

Result<TensorView> WeightStore::get(std::string_view name) const {
  auto it = views_.find(std::string(name));
  if (it == views_.end())
    return make_error(ErrorCode::kNotFound, "weight '{}' is not part of this model", name);
  return it->second;
}

}  // namespace moeopt
