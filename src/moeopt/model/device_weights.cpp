// Device weight layout and upload (device_weights.h).
#include "moeopt/model/device_weights.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <vector>

#include "moeopt/model/random_init.h"
#include "moeopt/ops/device_backend.h"

namespace moeopt {
namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
constexpr size_t kElem = 2;  // bf16

// Where one tensor lives: byte offset in the allocation, its shape, and the element stride
// between its rows (== shape.back() unless the rows are padded, as w2's in a padded stack).
struct Slot {
  size_t offset = 0;
  std::vector<int64_t> shape;
  int64_t row_stride = 0;
  bool padded() const { return shape.size() == 2 && row_stride != shape[1]; }
};

struct ExpertStack {
  std::string prefix;  // "model.layers.<l>.mlp" (or ".block_sparse_moe")
  int64_t experts = 0, hidden = 0, inter = 0, inter_padded = 0;
  size_t w13 = 0, w2 = 0;  // byte offsets
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
    slot.shape = s.shape;
    slot.row_stride = row_stride;
    L.slots[s.name] = slot;
  };
  auto place_group = [&](const std::vector<const TensorSpec*>& group) {
    off = align_up(off);
    for (const TensorSpec* s : group) {
      place(*s, off, s->shape.empty() ? 1 : s->shape.back());
      off += size_t(s->numel()) * kElem;
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
      st.inter = g0->shape[0];
      st.hidden = g0->shape[1];
      st.inter_padded = (st.inter + 7) / 8 * 8;
      L.any_padding |= st.inter_padded != st.inter;
      off = align_up(off);
      st.w13 = off;
      off += size_t(st.experts * 2 * st.inter_padded * st.hidden) * kElem;
      off = align_up(off);
      st.w2 = off;
      off += size_t(st.experts * st.hidden * st.inter_padded) * kElem;
      int expected_e = 0;
      for (auto& [e, parts] : per) {
        if (e != expected_e++ || parts.size() != 3)
          return make_error(ErrorCode::kUnsupported, "device layout: {} experts are not 0..E-1 with "
                            "gate, up and down each", prefix);
        const size_t ee = size_t(e);
        place(*parts[ExpertPart::kGate], st.w13 + ee * 2 * st.inter_padded * st.hidden * kElem, st.hidden);
        place(*parts[ExpertPart::kUp], st.w13 + (ee * 2 + 1) * st.inter_padded * st.hidden * kElem,
              st.hidden);
        place(*parts[ExpertPart::kDown], st.w2 + ee * st.hidden * st.inter_padded * kElem, st.inter_padded);
      }
      L.stacks.push_back(st);
      continue;
    }
    std::vector<const TensorSpec*> group{&s};
    auto add = [&](const std::string& name) {
      auto it = by_name.find(name);
      if (it != by_name.end() && !L.slots.count(name)) group.push_back(it->second);
    };
    if (ends_with(s.name, ".self_attn.q_proj.weight") || ends_with(s.name, ".self_attn.q_proj.bias")) {
      add(replace_last(s.name, "q_proj", "k_proj"));
      add(replace_last(s.name, "q_proj", "v_proj"));
      if (group.size() != 3) group.resize(1);
    } else if (ends_with(s.name, ".gate_proj.weight")) {
      add(replace_last(s.name, "gate_proj", "up_proj"));
      if (group.size() != 2) group.resize(1);
    }
    place_group(group);
  }
  L.total = align_up(off);
  return L;
}

TensorView slot_view(char* base, const Slot& s) {
  TensorView v = TensorView::contiguous(base + s.offset, DType::kBF16, Shape::from(s.shape), Device::kCuda);
  if (s.padded()) v.strides[0] = s.row_stride;
  return v;
}

Status check_ctx(const DeviceWeightsOptions& o) {
  if (!o.ctx || !o.ctx->device_backend)
    return make_error(ErrorCode::kInvalidArgument, "device weights: no device backend in the context");
  return {};
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
    done += uint64_t(s.numel()) * kElem;
    if (o.progress) o.progress(done, L.total);
  }
  MOEOPT_RETURN_IF_ERROR(be->synchronize(*o.ctx));
  std::unordered_map<std::string, TensorView> views;
  for (const TensorSpec& s : L.specs) views[s.name] = slot_view(base, L.slots.at(s.name));
  WeightStore ws = WeightStore::from_views(L.specs, std::move(views), owner);
  for (const ExpertStack& st : L.stacks) {
    TensorView w13 = TensorView::contiguous(base + st.w13, DType::kBF16,
                                            {st.experts, 2 * st.inter_padded, st.hidden}, Device::kCuda);
    TensorView w2 = TensorView::contiguous(base + st.w2, DType::kBF16,
                                           {st.experts, st.hidden, st.inter_padded}, Device::kCuda);
    ws.add_stacked_experts(st.prefix, ops::ExpertWeights::stacked(w13, w2));
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
                                               block.size() * kElem);
}

}  // namespace

Result<uint64_t> device_weight_bytes(const ModelConfig& config) {
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, expected_tensors(config));
  MOEOPT_ASSIGN_OR_RETURN(Layout L, plan_layout(std::move(specs)));
  return uint64_t(L.total);
}

Result<WeightStore> upload_weights(const ModelConfig& config, const WeightStore& host,
                                   const DeviceWeightsOptions& o) {
  MOEOPT_RETURN_IF_ERROR(check_ctx(o));
  MOEOPT_ASSIGN_OR_RETURN(Layout L, plan_layout(host.specs()));
  std::vector<uint16_t> bounce;
  return build(L, o, [&](const TensorSpec& s, const Slot& slot, char* base) -> Status {
    MOEOPT_ASSIGN_OR_RETURN(TensorView src, host.get(s.name));
    if (!src.is_contiguous())
      return make_error(ErrorCode::kUnsupported, "device upload: checkpoint tensor is not contiguous");
    if (slot.padded())
      return copy_padded(o, slot, base, [&](int64_t i) { return load_as_f32(src.data, src.dtype, i); });
    if (src.dtype == DType::kBF16)
      return o.ctx->device_backend->copy_to_device(*o.ctx, base + slot.offset, src.data, src.nbytes());
    bounce.resize(size_t(src.numel()));
    for (int64_t i = 0; i < src.numel(); ++i) bounce[size_t(i)] = f32_to_bf16(load_as_f32(src.data, src.dtype, i));
    return o.ctx->device_backend->copy_to_device(*o.ctx, base + slot.offset, bounce.data(),
                                                 bounce.size() * kElem);
  });
}

Result<WeightStore> random_device_weights(const ModelConfig& config, uint64_t seed,
                                          const DeviceWeightsOptions& o) {
  MOEOPT_RETURN_IF_ERROR(check_ctx(o));
  MOEOPT_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, expected_tensors(config));
  MOEOPT_ASSIGN_OR_RETURN(Layout L, plan_layout(std::move(specs)));
  return build(L, o, [&](const TensorSpec& s, const Slot& slot, char* base) -> Status {
    const ops::RandomFill fill =
        random_fill_for(seed, s.name, init_rule_for(s), init_fan_in_for(s, config));
    if (slot.padded())
      return copy_padded(o, slot, base, [&](int64_t i) { return ops::random_fill_value(fill, uint64_t(i)); });
    return o.ctx->device_backend->random_fill(*o.ctx, slot_view(base, slot), fill);
  });
}

}  // namespace moeopt
