// Device weight layout and upload (device_weights.h).
#include "moeopt/model/device_weights.h"

#include <algorithm>
#include <map>
#include <unordered_set>
#include <unordered_map>
#include <vector>

#include "moeopt/core/align.h"
#include "moeopt/model/random_init.h"
#include "moeopt/ops/device_backend.h"
#include "moeopt/ops/fp8.h"

namespace moeopt {
namespace {


// What a tensor becomes on the device: fp8 e4m3 weights stay one byte, their block scales
// are f32, everything else is bf16.
DType device_dtype(const TensorSpec& s) {
  if (s.fp8_quantized) return DType::kF8E4M3;
  if (s.role == TensorRole::kFp8Scale) return DType::kF32;
  return DType::kBF16;
}

// Where one tensor lives: byte offset in the allocation, its dtype and shape, and the element
// stride between its rows (== shape.back() unless the rows are padded, as w2's in a padded
// stack).
struct Slot {
  size_t offset = 0;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  int64_t row_stride = 0;
  bool padded() const { return shape.size() == 2 && row_stride != shape[1]; }
};

struct ExpertStack {
  std::string prefix;  // "model.layers.<l>.mlp" (or ".block_sparse_moe")
  int64_t experts = 0, hidden = 0, inter = 0, inter_padded = 0;
  bool fp8 = false;
  size_t w13 = 0, w2 = 0, w13_scale = 0, w2_scale = 0;  // byte offsets (scales: fp8 only)
};

struct Layout {
  std::vector<TensorSpec> specs;
  std::unordered_map<std::string, Slot> slots;
  std::vector<ExpertStack> stacks;
  size_t total = 0;
  bool any_padding = false;
};

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

std::string replace_last(std::string s, const std::string& from, const std::string& to) {
  size_t p = s.rfind(from);
  if (p != std::string::npos) s.replace(p, from.size(), to);
  return s;
}

enum class ExpertPart { kGate, kUp, kDown };
std::optional<ExpertPart> expert_part(const std::string& name) {
  if (ends_with(name, ".gate_proj.weight") || ends_with(name, ".w1.weight")) return ExpertPart::kGate;
  if (ends_with(name, ".up_proj.weight") || ends_with(name, ".w3.weight")) return ExpertPart::kUp;
  if (ends_with(name, ".down_proj.weight") || ends_with(name, ".w2.weight")) return ExpertPart::kDown;
  return std::nullopt;
}

Result<Layout> plan_layout(std::vector<TensorSpec> specs) {
  Layout L;
  L.specs = std::move(specs);
  std::unordered_map<std::string, const TensorSpec*> by_name;
  // Routed experts by block prefix: expert -> part -> spec.
  std::map<std::string, std::map<int, std::map<ExpertPart, const TensorSpec*>>> experts;
  for (const TensorSpec& s : L.specs) {
    by_name[s.name] = &s;
    if (s.role != TensorRole::kRoutedExpert) continue;
    auto part = expert_part(s.name);
    size_t at = s.name.find(".experts.");
    if (!part || at == std::string::npos || s.expert < 0)
      return make_error(ErrorCode::kUnsupported, "device layout: unexpected expert tensor '{}'", s.name);
    experts[s.name.substr(0, at)][s.expert][*part] = &s;
  }
  size_t off = 0;
  auto place = [&](const TensorSpec& s, size_t at, int64_t row_stride) {
    Slot slot;
    slot.offset = at;
    slot.dtype = device_dtype(s);
    slot.shape = s.shape;
    slot.row_stride = row_stride;
    L.slots[s.name] = slot;
  };
  auto place_group = [&](const std::vector<const TensorSpec*>& group) {
    off = align_up(off);
    for (const TensorSpec* s : group) {
      place(*s, off, s->shape.empty() ? 1 : s->shape.back());
      off += size_t(s->numel()) * dtype_size(device_dtype(*s));
    }
  };
  for (const TensorSpec& s : L.specs) {
    if (L.slots.count(s.name)) continue;
    if (s.role == TensorRole::kRoutedExpert) {
      const std::string prefix = s.name.substr(0, s.name.find(".experts."));
      auto& per = experts[prefix];
      ExpertStack st;
      st.prefix = prefix;
      st.experts = int64_t(per.size());
      const TensorSpec* g0 = per.begin()->second[ExpertPart::kGate];
      if (!g0 || g0->shape.size() != 2)
        return make_error(ErrorCode::kUnsupported, "device layout: {} has no expert 0 gate", prefix);
      st.fp8 = g0->fp8_quantized;
      st.inter = g0->shape[0];
      st.hidden = g0->shape[1];
      // 16-byte rows for the grouped GEMMs: 8 bf16 or 16 e4m3 elements.
      const int64_t mult = st.fp8 ? 16 : 8;
      st.inter_padded = (st.inter + mult - 1) / mult * mult;
      L.any_padding |= st.inter_padded != st.inter;
      const size_t elem = st.fp8 ? 1 : 2;
      const size_t ib = size_t(ops::fp8_blocks(st.inter)), hb = size_t(ops::fp8_blocks(st.hidden));
      const size_t E = size_t(st.experts), I = size_t(st.inter_padded), H = size_t(st.hidden);
      off = align_up(off);
      st.w13 = off;
      off += E * 2 * I * H * elem;
      off = align_up(off);
      st.w2 = off;
      off += E * H * I * elem;
      if (st.fp8) {
        off = align_up(off);
        st.w13_scale = off;
        off += E * 2 * ib * hb * 4;
        off = align_up(off);
        st.w2_scale = off;
        off += E * hb * ib * 4;
      }
      int expected_e = 0;
      for (auto& [e, parts] : per) {
        if (e != expected_e++ || parts.size() != 3)
          return make_error(ErrorCode::kUnsupported, "device layout: {} experts are not 0..E-1 with "
                            "gate, up and down each", prefix);
        const size_t ee = size_t(e);
        const TensorSpec* gate = parts[ExpertPart::kGate];
        const TensorSpec* up = parts[ExpertPart::kUp];
        const TensorSpec* down = parts[ExpertPart::kDown];
        for (const TensorSpec* t : {gate, up, down})
          if (t->fp8_quantized != st.fp8)
            return make_error(ErrorCode::kUnsupported, "device layout: {}: experts must all be "
                              "fp8 or none ('{}' differs)", prefix, t->name);
        place(*gate, st.w13 + ee * 2 * I * H * elem, st.hidden);
        place(*up, st.w13 + (ee * 2 + 1) * I * H * elem, st.hidden);
        place(*down, st.w2 + ee * H * I * elem, st.inter_padded);
        if (!st.fp8) continue;
        // Scales in the ops/moe.h stacked order: gate blocks, then up blocks, per expert.
        const size_t at[3] = {st.w13_scale + ee * 2 * ib * hb * 4,
                              st.w13_scale + (ee * 2 + 1) * ib * hb * 4, st.w2_scale + ee * hb * ib * 4};
        const TensorSpec* w[3] = {gate, up, down};
        for (int i = 0; i < 3; ++i) {
          auto sc = by_name.find(fp8_scale_name(w[i]->name));
          if (sc == by_name.end())
            return make_error(ErrorCode::kUnsupported, "device layout: fp8 weight '{}' has no block "
                              "scale", w[i]->name);
          place(*sc->second, at[i], sc->second->shape[1]);
        }
      }
      L.stacks.push_back(st);
      continue;
    }
    std::vector<const TensorSpec*> group{&s};
    auto add = [&](const std::string& name) {
      auto it = by_name.find(name);
      if (it != by_name.end() && !L.slots.count(name)) group.push_back(it->second);
    };
    // q | k | v and gate | up side by side, and so their fp8 block scales, so that the
    // decoder reads each group as one matrix (fuse_adjacent_weights).
    if (ends_with(s.name, ".self_attn.q_proj.weight") || ends_with(s.name, ".self_attn.q_proj.bias") ||
        ends_with(s.name, ".self_attn.q_proj.weight_scale_inv")) {
      add(replace_last(s.name, "q_proj", "k_proj"));
      add(replace_last(s.name, "q_proj", "v_proj"));
      if (group.size() != 3) group.resize(1);
    } else if (ends_with(s.name, ".gate_proj.weight") ||
               ends_with(s.name, ".gate_proj.weight_scale_inv")) {
      add(replace_last(s.name, "gate_proj", "up_proj"));
      if (group.size() != 2) group.resize(1);
    }
    place_group(group);
  }
  L.total = align_up(off);
  return L;
}

TensorView slot_view(char* base, const Slot& s) {
  TensorView v = TensorView::contiguous(base + s.offset, s.dtype, Shape::from(s.shape), Device::kCuda);
  if (s.padded()) v.strides[0] = s.row_stride;
  return v;
}

Status check_ctx(const DeviceWeightsOptions& o) {
  if (!o.ctx || !o.ctx->device_backend)
    return make_error(ErrorCode::kInvalidArgument, "device weights: no device backend in the context");
  return {};
}

// The specs as the device holds them: fp8 ones from the checkpoint (or its config) as they
// are, plus online quantisation when asked.
std::vector<TensorSpec> device_specs(std::vector<TensorSpec> specs, const DeviceWeightsOptions& o) {
  if (o.fp8) mark_fp8_quantized(specs);
  return specs;
}

// Device scratch for staging a weight before it is quantised (released with the owner).
struct Staging {
  std::shared_ptr<void> owner;
  char* data = nullptr;
};
Result<Staging> staging(const DeviceWeightsOptions& o, size_t bytes) {
  Staging st;
  if (bytes == 0) return st;
  ops::DeviceBackend* be = o.ctx->device_backend;
  MOEOPT_ASSIGN_OR_RETURN(void* mem, be->allocate(bytes));
  st.owner = std::shared_ptr<void>(mem, [be](void* p) { be->release(p); });
  st.data = static_cast<char*>(mem);
  return st;
}

// Quantises the staged weight `src` ([N, K] on the device) into its fp8 slot and its scale.
Status quantize_into(const Layout& L, const DeviceWeightsOptions& o, const TensorSpec& s,
                     const TensorView& src, char* base) {
  const Slot& q = L.slots.at(s.name);
  const Slot& scale = L.slots.at(fp8_scale_name(s.name));
  return ops::quantize_fp8_weight_blocks(*o.ctx, src, slot_view(base, q), slot_view(base, scale));
}

// Allocates the layout, runs `fill` per tensor, and wraps the result in a WeightStore.
Result<WeightStore> build(const Layout& L, const DeviceWeightsOptions& o,
                          const std::function<Status(const TensorSpec&, const Slot&, char* base)>& fill) {
  MOEOPT_RETURN_IF_ERROR(check_ctx(o));
  ops::DeviceBackend* be = o.ctx->device_backend;
  MOEOPT_ASSIGN_OR_RETURN(void* mem, be->allocate(L.total));
  std::shared_ptr<void> owner(mem, [be](void* p) { be->release(p); });
  char* base = static_cast<char*>(mem);
  if (L.any_padding) MOEOPT_RETURN_IF_ERROR(be->fill_zero(*o.ctx, base, L.total));
  uint64_t done = 0;
  for (const TensorSpec& s : L.specs) {
    const Slot& slot = L.slots.at(s.name);
    MOEOPT_RETURN_IF_ERROR(fill(s, slot, base).with_context(s.name));
    done += uint64_t(s.numel()) * dtype_size(slot.dtype);
    if (o.progress) o.progress(done, L.total);
  }
  MOEOPT_RETURN_IF_ERROR(be->synchronize(*o.ctx));
  std::unordered_map<std::string, TensorView> views;
  for (const TensorSpec& s : L.specs) views[s.name] = slot_view(base, L.slots.at(s.name));
  WeightStore ws = WeightStore::from_views(L.specs, std::move(views), owner);
  for (const ExpertStack& st : L.stacks) {
    const DType wt = st.fp8 ? DType::kF8E4M3 : DType::kBF16;
    TensorView w13 = TensorView::contiguous(base + st.w13, wt, {st.experts, 2 * st.inter_padded, st.hidden},
                                            Device::kCuda);
    TensorView w2 = TensorView::contiguous(base + st.w2, wt, {st.experts, st.hidden, st.inter_padded},
                                           Device::kCuda);
    if (!st.fp8) {
      ws.add_stacked_experts(st.prefix, ops::ExpertWeights::stacked(w13, w2));
      continue;
    }
    const int64_t ib = ops::fp8_blocks(st.inter), hb = ops::fp8_blocks(st.hidden);
    TensorView w13s = TensorView::contiguous(base + st.w13_scale, DType::kF32, {st.experts, 2 * ib, hb},
                                             Device::kCuda);
    TensorView w2s = TensorView::contiguous(base + st.w2_scale, DType::kF32, {st.experts, hb, ib},
                                            Device::kCuda);
    ws.add_stacked_experts(st.prefix, ops::ExpertWeights::stacked_fp8(w13, w13s, w2, w2s));
  }
  return ws;
}

// Writes `values(i)` (i < rows * cols) as bf16 into a padded [rows, row_stride] host block and
// copies it to the slot: used only where a tensor's rows are padded.
Status copy_padded(const DeviceWeightsOptions& o, const Slot& slot, char* base,
                   const std::function<float(int64_t)>& values) {
  const int64_t rows = slot.shape[0], cols = slot.shape[1];
  std::vector<uint16_t> block(size_t(rows * slot.row_stride), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) block[size_t(r * slot.row_stride + c)] = f32_to_bf16(values(r * cols + c));
  return o.ctx->device_backend->copy_to_device(*o.ctx, base + slot.offset, block.data(),
                                               block.size() * 2);
}

// The same for fp8 codes as the checkpoint stores them (bytes, rows padded with zero codes).
Status copy_padded_bytes(const DeviceWeightsOptions& o, const Slot& slot, char* base,
                         const uint8_t* src) {
  const int64_t rows = slot.shape[0], cols = slot.shape[1];
  std::vector<uint8_t> block(size_t(rows * slot.row_stride), 0);
  for (int64_t r = 0; r < rows; ++r)
    std::copy(src + r * cols, src + (r + 1) * cols, block.begin() + r * slot.row_stride);
  return o.ctx->device_backend->copy_to_device(*o.ctx, base + slot.offset, block.data(), block.size());
}

// Random weights: the specs of the config (with its checkpoint's fp8 scales when it is an
// fp8 config), as the device holds them.
Result<std::vector<TensorSpec>> random_specs(const ModelConfig& config, const DeviceWeightsOptions& o) {
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs,
                          config.fp8 ? checkpoint_tensors(config, false) : expected_tensors(config));
  return device_specs(std::move(specs), o);
}

}  // namespace

Result<uint64_t> device_weight_bytes(const ModelConfig& config, bool fp8) {
  DeviceWeightsOptions o;
  o.fp8 = fp8;
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, random_specs(config, o));
  MOEOPT_ASSIGN_OR_RETURN(Layout L, plan_layout(std::move(specs)));
  return uint64_t(L.total);
}

Result<WeightStore> upload_weights(const ModelConfig& config, const WeightStore& host,
                                   const DeviceWeightsOptions& o) {
  MOEOPT_RETURN_IF_ERROR(check_ctx(o));
  MOEOPT_ASSIGN_OR_RETURN(Layout L, plan_layout(device_specs(host.specs(), o)));
  // Weights quantised here stage in their checkpoint dtype; their scales are written with them.
  std::unordered_set<std::string> online;
  size_t stage_bytes = 0;
  for (const TensorSpec& s : L.specs) {
    if (!s.fp8_quantized) continue;
    MOEOPT_ASSIGN_OR_RETURN(TensorView src, host.get(s.name));
    if (src.dtype == DType::kF8E4M3) continue;
    online.insert(fp8_scale_name(s.name));
    stage_bytes = std::max(stage_bytes, src.nbytes());
  }
  MOEOPT_ASSIGN_OR_RETURN(Staging stage, staging(o, stage_bytes));
  std::vector<uint16_t> bounce;
  return build(L, o, [&](const TensorSpec& s, const Slot& slot, char* base) -> Status {
    if (online.count(s.name)) return {};  // written by its weight's quantisation
    MOEOPT_ASSIGN_OR_RETURN(TensorView src, host.get(s.name));
    if (!src.is_contiguous())
      return make_error(ErrorCode::kUnsupported, "device upload: checkpoint tensor is not contiguous");
    ops::DeviceBackend* be = o.ctx->device_backend;
    if (slot.dtype == DType::kF8E4M3 && src.dtype != DType::kF8E4M3) {
      MOEOPT_RETURN_IF_ERROR(be->copy_to_device(*o.ctx, stage.data, src.data, src.nbytes()));
      const TensorView staged = TensorView::contiguous(stage.data, src.dtype, src.shape, Device::kCuda);
      return quantize_into(L, o, s, staged, base);
    }
    if (slot.dtype != DType::kBF16) {  // fp8 codes and f32 scales as the host store holds them
      if (src.dtype != slot.dtype)
        return make_error(ErrorCode::kInternal, "device upload: {} where {} was planned",
                          dtype_name(src.dtype), dtype_name(slot.dtype));
      if (slot.padded()) return copy_padded_bytes(o, slot, base, static_cast<const uint8_t*>(src.data));
      return be->copy_to_device(*o.ctx, base + slot.offset, src.data, src.nbytes());
    }
    if (slot.padded())
      return copy_padded(o, slot, base, [&](int64_t i) { return load_as_f32(src.data, src.dtype, i); });
    if (src.dtype == DType::kBF16)
      return be->copy_to_device(*o.ctx, base + slot.offset, src.data, src.nbytes());
    bounce.resize(size_t(src.numel()));
    for (int64_t i = 0; i < src.numel(); ++i) bounce[size_t(i)] = f32_to_bf16(load_as_f32(src.data, src.dtype, i));
    return be->copy_to_device(*o.ctx, base + slot.offset, bounce.data(), bounce.size() * 2);
  });
}

Result<WeightStore> random_device_weights(const ModelConfig& config, uint64_t seed,
                                          const DeviceWeightsOptions& o) {
  MOEOPT_RETURN_IF_ERROR(check_ctx(o));
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, random_specs(config, o));
  MOEOPT_ASSIGN_OR_RETURN(Layout L, plan_layout(std::move(specs)));
  // fp8 weights: generated in bf16 (init-random's values), then quantised.
  size_t stage_bytes = 0;
  for (const TensorSpec& s : L.specs)
    if (s.fp8_quantized) stage_bytes = std::max(stage_bytes, size_t(s.numel()) * 2);
  MOEOPT_ASSIGN_OR_RETURN(Staging stage, staging(o, stage_bytes));
  return build(L, o, [&](const TensorSpec& s, const Slot& slot, char* base) -> Status {
    if (s.role == TensorRole::kFp8Scale) return {};  // written by its weight's quantisation
    const ops::RandomFill fill =
        random_fill_for(seed, s.name, init_rule_for(s), init_fan_in_for(s, config));
    if (slot.dtype == DType::kF8E4M3) {
      const TensorView staged =
          TensorView::contiguous(stage.data, DType::kBF16, Shape::from(s.shape), Device::kCuda);
      MOEOPT_RETURN_IF_ERROR(o.ctx->device_backend->random_fill(*o.ctx, staged, fill));
      return quantize_into(L, o, s, staged, base);
    }
    if (slot.padded())
      return copy_padded(o, slot, base, [&](int64_t i) { return ops::random_fill_value(fill, uint64_t(i)); });
    return o.ctx->device_backend->random_fill(*o.ctx, slot_view(base, slot), fill);
  });
}

}  // namespace moeopt
