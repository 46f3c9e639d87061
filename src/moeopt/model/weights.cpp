#include "moeopt/model/weights.h"

#include <unordered_set>

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
    bool scale = s.role == TensorRole::kFp8Scale;
    if (!scale && !dtype_is_float(info->dtype))
      return make_error(ErrorCode::kCorruptData, "{}: tensor '{}' has dtype {}, expected a float type",
                        info->file, s.name, dtype_name(info->dtype));
    if (!info->aligned)
      return make_error(ErrorCode::kUnsupported, "{}: tensor '{}' is not aligned to its element size",
                        info->file, s.name);
    MOEOPT_ASSIGN_OR_RETURN(TensorView v, ws.ckpt_.view(s.name));
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
  return ws;
}

const ops::ExpertWeights* WeightStore::stacked_experts(const std::string& moe_prefix) const {
  auto it = stacked_.find(moe_prefix);
  return it == stacked_.end() ? nullptr : &it->second;
}

void WeightStore::add_stacked_experts(const std::string& moe_prefix, ops::ExpertWeights experts) {
  stacked_[moe_prefix] = std::move(experts);
}

Result<TensorView> WeightStore::get(std::string_view name) const {
  auto it = views_.find(std::string(name));
  if (it == views_.end())
    return make_error(ErrorCode::kNotFound, "weight '{}' is not part of this model", name);
  return it->second;
}

}  // namespace moeopt
